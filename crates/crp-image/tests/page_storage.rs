//! How pages are stored: zero pages left out where the caller says they
//! read as zero anyway, and images left in the page cache (`--no-sync`)
//! that read back like durable ones.

use crp_image::{Durability, ImageReader, ImageWriter, PAGE_SIZE};
use proptest::prelude::*;

const BASE: u64 = 0x7f00_0000_0000;
const PAGE: usize = 4096;

/// A page of `byte`s, except that a nonzero page has one byte elsewhere
/// (the last) that differs, so a check of only the first bytes would miss it.
fn page(byte: u8, last: u8) -> Vec<u8> {
    let mut page = vec![byte; PAGE];
    page[PAGE - 1] = last;
    page
}

/// Writes `pages` at [`BASE`] with zeros left out and returns the image and
/// how many pages were left out.
fn write_without_zeros(directory: &std::path::Path, pages: &[Vec<u8>], durability: Durability) -> (ImageReader, u64) {
    let path = directory.join("zeros.crp");
    let mut writer = ImageWriter::create_with(&path, durability).unwrap();
    let omitted = writer
        .add_page_run_without_zeros(BASE, pages.len() as u64, |address, buffer| {
            let first = usize::try_from((address - BASE) / PAGE_SIZE).unwrap();
            for (index, chunk) in buffer.chunks_mut(PAGE).enumerate() {
                chunk.copy_from_slice(&pages[first + index]);
            }
            Ok(())
        })
        .unwrap();
    writer.finish(b"metadata").unwrap();
    (ImageReader::open(&path).unwrap(), omitted)
}

/// What the image says lives at each page of `count` from [`BASE`]: the
/// stored bytes, or zeros where no run covers the page.
fn read_back(reader: &ImageReader, count: usize) -> Vec<Vec<u8>> {
    let mut pages = vec![vec![0u8; PAGE]; count];
    for run in reader.page_runs() {
        let first = usize::try_from((run.vaddr - BASE) / PAGE_SIZE).unwrap();
        for (index, chunk) in reader.run_data(run).chunks(PAGE).enumerate() {
            pages[first + index] = chunk.to_vec();
        }
    }
    pages
}

#[test]
fn zero_pages_are_left_out_and_the_rest_is_stored_in_runs() {
    let directory = tempfile::tempdir().unwrap();
    // data, zero, zero, data whose only nonzero byte is its last, zero, data
    let pages = vec![page(1, 1), page(0, 0), page(0, 0), page(0, 9), page(0, 0), page(3, 3)];
    let (reader, omitted) = write_without_zeros(directory.path(), &pages, Durability::Durable);
    assert_eq!(omitted, 3);
    let runs: Vec<(u64, u64)> = reader.page_runs().iter().map(|run| (run.vaddr, run.page_count)).collect();
    assert_eq!(runs, [(BASE, 1), (BASE + 3 * PAGE_SIZE, 1), (BASE + 5 * PAGE_SIZE, 1)]);
    assert_eq!(reader.page_bytes(), 3 * PAGE_SIZE);
    assert_eq!(read_back(&reader, pages.len()), pages);
}

#[test]
fn all_zero_pages_store_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let pages = vec![page(0, 0); 5];
    let (reader, omitted) = write_without_zeros(directory.path(), &pages, Durability::Durable);
    assert_eq!(omitted, 5);
    assert!(reader.page_runs().is_empty());
    assert_eq!(reader.metadata_bytes(), b"metadata");
}

#[test]
fn zero_pages_are_stored_by_add_page_run() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("stored.crp");
    let mut writer = ImageWriter::create(&path).unwrap();
    writer
        .add_page_run(BASE, 2, |_, buffer| {
            buffer.fill(0);
            Ok(())
        })
        .unwrap();
    writer.finish(&[]).unwrap();
    let reader = ImageReader::open(&path).unwrap();
    assert_eq!(reader.page_runs().len(), 1);
    assert_eq!(reader.page_bytes(), 2 * PAGE_SIZE);
}

#[test]
fn an_image_left_in_the_page_cache_reads_back() {
    let directory = tempfile::tempdir().unwrap();
    let pages = vec![page(7, 7), page(0, 0), page(8, 8)];
    let (reader, _) = write_without_zeros(directory.path(), &pages, Durability::PageCache);
    assert_eq!(read_back(&reader, pages.len()), pages);
    let names: Vec<_> = std::fs::read_dir(directory.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(names, ["zeros.crp"], "published under its name, nothing else left");
}

#[test]
fn an_image_for_the_page_cache_has_the_runs_of_a_durable_one() {
    // The page cache is filled in pieces of 256 KiB (64 pages), a durable
    // image in pieces of 8 MiB (2048): runs that cross the small pieces, zero
    // pages on their edges, and a run cut at 8 MiB come out the same.
    let pages: Vec<Vec<u8>> = (0..2200usize)
        .map(|index| match index {
            63 | 64 | 1000..=1100 | 2047 => page(0, 0),
            _ => page(u8::try_from(index % 250).unwrap() + 1, u8::try_from(index % 7).unwrap()),
        })
        .collect();
    let runs = |durability| {
        let directory = tempfile::tempdir().unwrap();
        let (reader, omitted) = write_without_zeros(directory.path(), &pages, durability);
        assert_eq!(read_back(&reader, pages.len()), pages);
        (reader.page_runs().to_vec(), omitted)
    };
    let (durable, omitted) = runs(Durability::Durable);
    assert_eq!(omitted, 2 + 101 + 1);
    let starts: Vec<u64> = durable.iter().map(|run| (run.vaddr - BASE) / PAGE_SIZE).collect();
    assert_eq!(starts, [0, 65, 1101, 2048]);
    assert_eq!(runs(Durability::PageCache), (durable, omitted));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any mix of zero and data pages, across the writer's 8 MiB pieces,
    /// reads back the same with zeros where nothing is stored.
    #[test]
    fn any_mix_of_zero_pages_reads_back(
        kinds in proptest::collection::vec(0u8..4, 1..40),
        across_pieces in any::<bool>(),
    ) {
        let directory = tempfile::tempdir().unwrap();
        // 2048 pages make one piece: a long prefix pushes the mix across
        // the boundary between two pieces.
        let prefix = if across_pieces { 2040 } else { 0 };
        let pages: Vec<Vec<u8>> = std::iter::repeat_n(0u8, prefix)
            .chain(kinds.iter().copied())
            .enumerate()
            .map(|(index, kind)| match kind {
                0 => page(0, 0),
                1 => page(0, u8::try_from(index % 255).unwrap() + 1),
                _ => page(kind, u8::try_from(index % 251).unwrap()),
            })
            .collect();
        let (reader, omitted) = write_without_zeros(directory.path(), &pages, Durability::PageCache);
        let zeros = pages.iter().filter(|page| page.iter().all(|&byte| byte == 0)).count() as u64;
        prop_assert_eq!(omitted, zeros);
        prop_assert_eq!(reader.page_bytes(), (pages.len() as u64 - zeros) * PAGE_SIZE);
        prop_assert!(read_back(&reader, pages.len()) == pages);
    }
}
