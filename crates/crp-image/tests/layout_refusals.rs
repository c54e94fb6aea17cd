//! Images whose checksums are all correct (as a hostile or buggy writer
//! would make them) but whose layout is not the one the writer writes: each
//! is refused, naming the field or byte range.

mod common;

use common::{header_of, reference_image, rewrite_header};
use crp_image::format::{HEADER_BLOCK, Header, PAGE_SIZE, PageRunEntry, SectionEntry, checksum};
use crp_image::{ImageError, validate_image};
use zerocopy::{FromBytes, IntoBytes};

/// Slots of the section table, in the order the writer fills them.
const METADATA: usize = 0;
const RUNS: usize = 1;
const DATA: usize = 2;

fn refused(bytes: &[u8]) -> ImageError {
    validate_image(bytes).expect_err("a malformed image was accepted")
}

fn assert_mentions(error: &ImageError, words: &str) {
    assert!(error.to_string().contains(words), "{error:?}: {error}");
}

fn index(value: u64) -> usize {
    usize::try_from(value).unwrap()
}

fn section_end(entry: &SectionEntry) -> u64 {
    entry.offset + entry.length
}

#[test]
fn the_reference_image_is_valid() {
    let (_dir, bytes) = reference_image();
    validate_image(&bytes).unwrap();
    let header = header_of(&bytes);
    assert_eq!(header.sections[DATA].offset, HEADER_BLOCK);
}

#[test]
fn header_flags_are_refused() {
    let (_dir, mut bytes) = reference_image();
    rewrite_header(&mut bytes, |header| header.flags = 0x8000_0000);
    let error = refused(&bytes);
    assert!(matches!(error, ImageError::MalformedHeader { .. }), "{error:?}");
    assert_mentions(&error, "flags are 0x80000000");
}

#[test]
fn a_section_count_other_than_three_is_refused() {
    for count in [0, 2, 4, 5] {
        let (_dir, mut bytes) = reference_image();
        rewrite_header(&mut bytes, |header| header.section_count = count);
        assert_mentions(&refused(&bytes), &format!("section count is {count}"));
    }
}

#[test]
fn reordered_sections_are_refused() {
    let (_dir, mut bytes) = reference_image();
    rewrite_header(&mut bytes, |header| header.sections.swap(METADATA, RUNS));
    assert_mentions(&refused(&bytes), "section slot 0 has kind 2, but the metadata section (kind 1) belongs there");
}

#[test]
fn reserved_fields_are_refused() {
    for slot in [METADATA, RUNS, DATA] {
        let (_dir, mut bytes) = reference_image();
        rewrite_header(&mut bytes, |header| header.sections[slot].reserved = 1);
        assert_mentions(&refused(&bytes), &format!("reserved field of section slot {slot}"));
    }
}

#[test]
fn a_used_spare_slot_is_refused() {
    let (_dir, mut bytes) = reference_image();
    rewrite_header(&mut bytes, |header| header.sections[3].checksum = 1);
    assert_mentions(&refused(&bytes), "unused section slot 3 is not all zero");
}

#[test]
fn bytes_after_the_header_are_refused() {
    let header_length = std::mem::size_of::<Header>();
    for offset in [header_length, 1000, index(HEADER_BLOCK) - 1] {
        let (_dir, mut bytes) = reference_image();
        bytes[offset] = 0x5a;
        let error = refused(&bytes);
        match error {
            ImageError::NonZeroBytes { start, end, first_nonzero, .. } => {
                assert_eq!((start, end, first_nonzero), (header_length as u64, HEADER_BLOCK, offset as u64));
            }
            other => panic!("{other:?}"),
        }
        assert_mentions(&error, "the header block after the header");
    }
}

#[test]
fn bytes_in_the_gap_before_the_metadata_are_refused() {
    let (_dir, mut bytes) = reference_image();
    let header = header_of(&bytes);
    let gap = section_end(&header.sections[RUNS])..header.sections[METADATA].offset;
    assert!(!gap.is_empty(), "the reference image has a gap");
    for offset in [gap.start, gap.end - 1] {
        let mut changed = bytes.clone();
        changed[index(offset)] = 1;
        let error = refused(&changed);
        assert!(
            matches!(error, ImageError::NonZeroBytes { start, end, first_nonzero, .. }
                if start == gap.start && end == gap.end && first_nonzero == offset),
            "{error:?}"
        );
        assert_mentions(&error, "the gap between the page run table and the metadata");
    }
    bytes[index(gap.start)] = 0;
    validate_image(&bytes).unwrap();
}

#[test]
fn page_data_not_at_the_header_block_is_refused() {
    let (_dir, mut bytes) = reference_image();
    rewrite_header(&mut bytes, |header| {
        header.sections[DATA].offset += PAGE_SIZE;
        header.sections[DATA].length -= PAGE_SIZE;
    });
    let error = refused(&bytes);
    assert!(
        matches!(error, ImageError::MisplacedSection { kind: "page data", offset, expected: HEADER_BLOCK }
            if offset == HEADER_BLOCK + PAGE_SIZE),
        "{error:?}"
    );
}

/// Reads the run table, lets `change` edit it, and stores it back with
/// every checksum that depends on it recomputed.
fn rewrite_runs(bytes: &mut [u8], change: impl FnOnce(&mut Vec<PageRunEntry>)) {
    let header = header_of(bytes);
    let table = header.sections[RUNS];
    let range = index(table.offset)..index(section_end(&table));
    let mut runs: Vec<PageRunEntry> =
        bytes[range.clone()].chunks_exact(32).map(|chunk| PageRunEntry::read_from_bytes(chunk).unwrap()).collect();
    change(&mut runs);
    bytes[range].copy_from_slice(runs.as_bytes());
    let run_checksums: Vec<u8> = runs.iter().flat_map(|run| run.checksum.to_le_bytes()).collect();
    rewrite_header(bytes, |header| {
        header.sections[RUNS].checksum = checksum(runs.as_bytes());
        header.sections[DATA].checksum = checksum(&run_checksums);
    });
}

#[test]
fn runs_out_of_order_in_the_data_are_refused() {
    // Each run's data where the other's is, checksums following: every
    // checksum matches, the pages would land at each other's address.
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_image(dir.path(), &[(0x10000, 1, 3), (0x30000, 1, 4)], &common::sample());
    let mut bytes = std::fs::read(path).unwrap();
    let pristine = bytes.clone();
    let (first_page, second_page) =
        (bytes_at(&pristine, HEADER_BLOCK, 1), bytes_at(&pristine, HEADER_BLOCK + PAGE_SIZE, 1));
    bytes[index(HEADER_BLOCK)..index(HEADER_BLOCK + PAGE_SIZE)].copy_from_slice(&second_page);
    bytes[index(HEADER_BLOCK + PAGE_SIZE)..index(HEADER_BLOCK + 2 * PAGE_SIZE)].copy_from_slice(&first_page);
    rewrite_runs(&mut bytes, |runs| {
        let (first, second) = (runs[0].data_offset, runs[1].data_offset);
        runs[0].data_offset = second;
        runs[1].data_offset = first;
    });
    let error = refused(&bytes);
    assert!(
        matches!(error, ImageError::MisplacedPageRun { index: 0, expected: HEADER_BLOCK, .. }),
        "{error:?}: {error}"
    );
    assert_mentions(&error, "runs tile the page data section in order");
}

fn bytes_at(bytes: &[u8], offset: u64, pages: u64) -> Vec<u8> {
    bytes[index(offset)..index(offset + pages * PAGE_SIZE)].to_vec()
}

#[test]
fn a_gap_between_runs_is_refused() {
    let (_dir, mut bytes) = reference_image();
    let pristine = bytes.clone();
    rewrite_runs(&mut bytes, |runs| {
        // The first run shrinks to one page: a page of the section belongs to no run.
        runs[0].page_count = 1;
        runs[0].checksum = checksum(&bytes_at(&pristine, HEADER_BLOCK, 1));
    });
    let error = refused(&bytes);
    assert!(matches!(error, ImageError::MisplacedPageRun { index: 1, .. }), "{error:?}: {error}");
}

/// Inserts `count` zero bytes at `offset` and moves every section at or
/// after it, as a writer with a different layout would.
fn insert_zeros(bytes: &mut Vec<u8>, offset: u64, count: u64, grow_data: bool) {
    bytes.splice(index(offset)..index(offset), std::iter::repeat_n(0, index(count)));
    rewrite_header(bytes, |header| {
        header.file_length += count;
        for slot in [METADATA, RUNS] {
            if header.sections[slot].offset >= offset {
                header.sections[slot].offset += count;
            }
        }
        if grow_data {
            header.sections[DATA].length += count;
        }
    });
}

#[test]
fn a_data_section_longer_than_its_runs_is_refused() {
    let (_dir, mut bytes) = reference_image();
    let data_end = section_end(&header_of(&bytes).sections[DATA]);
    insert_zeros(&mut bytes, data_end, PAGE_SIZE, true);
    let error = refused(&bytes);
    assert_mentions(&error, "is longer than its runs");
}

#[test]
fn a_run_table_away_from_the_data_is_refused() {
    let (_dir, mut bytes) = reference_image();
    let data_end = section_end(&header_of(&bytes).sections[DATA]);
    insert_zeros(&mut bytes, data_end, PAGE_SIZE, false);
    let error = refused(&bytes);
    assert!(matches!(error, ImageError::MisplacedSection { kind: "page run table", .. }), "{error:?}: {error}");
}

#[test]
fn metadata_after_a_longer_gap_is_refused() {
    let (_dir, mut bytes) = reference_image();
    let metadata_offset = header_of(&bytes).sections[METADATA].offset;
    insert_zeros(&mut bytes, metadata_offset, PAGE_SIZE, false);
    let error = refused(&bytes);
    assert!(
        matches!(error, ImageError::MisplacedSection { kind: "metadata", offset, expected }
            if offset == metadata_offset + PAGE_SIZE && expected == metadata_offset),
        "{error:?}: {error}"
    );
}

#[test]
fn bytes_after_the_metadata_are_refused() {
    let (_dir, mut bytes) = reference_image();
    let length = bytes.len() as u64;
    // The header claims them, the metadata section does not.
    bytes.extend_from_slice(&[0; 16]);
    rewrite_header(&mut bytes, |header| header.file_length += 16);
    let error = refused(&bytes);
    assert_mentions(&error, &format!("bytes [{length:#x}, {:#x}) after the metadata section", length + 16));
    // Not claimed by the header either.
    let (_dir, mut bytes) = reference_image();
    bytes.push(0);
    assert_mentions(&refused(&bytes), "were appended");
}

#[test]
fn an_image_shorter_than_the_header_block_is_refused() {
    let (_dir, bytes) = reference_image();
    let mut short = bytes[..std::mem::size_of::<Header>()].to_vec();
    short.resize(200, 0);
    rewrite_header(&mut short, |header| header.file_length = 200);
    let error = refused(&short);
    assert!(matches!(error, ImageError::Truncated { what: "the header block", .. }), "{error:?}: {error}");
}
