//! The checksum pass: every section and every page run against the
//! checksum stored for it. Run checksums are verified on all CPUs: this is
//! the one pass over all page data a restore makes before creating anything.

use crate::error::ImageError;
use crate::format::{PageRunEntry, SectionEntry, SectionKind, checksum};

/// Below this much page data one thread checks it faster than several
/// would start.
const PARALLEL_BYTES: u64 = 4 << 20;

/// The bytes of a section whose place [`crate::layout`] has checked,
/// verified against its checksum.
pub(crate) fn section<'a>(bytes: &'a [u8], entry: &SectionEntry, kind: SectionKind) -> Result<&'a [u8], ImageError> {
    let section = slice(bytes, entry.offset, entry.length).ok_or(ImageError::SectionOutOfBounds {
        kind: kind.name(),
        offset: entry.offset,
        length: entry.length,
        file_length: bytes.len() as u64,
    })?;
    if checksum(section) != entry.checksum {
        return Err(ImageError::SectionChecksum { kind: kind.name() });
    }
    Ok(section)
}

/// Checks the page data: its section checksum (over the run checksums),
/// then every run's contents. The runs' places have been checked.
pub(crate) fn page_data(bytes: &[u8], data: &SectionEntry, runs: &[PageRunEntry]) -> Result<(), ImageError> {
    run_checksums(data, runs)?;
    let first_bad =
        if data.length < PARALLEL_BYTES { first_bad_run(bytes, runs, 0) } else { first_bad_run_parallel(bytes, runs) };
    match first_bad {
        Some(index) => Err(ImageError::PageRunChecksum { index, vaddr: runs[index].vaddr }),
        None => Ok(()),
    }
}

/// Checks the page data section's checksum, which covers the runs'
/// checksums (not their contents: see [`run`]).
pub(crate) fn run_checksums(data: &SectionEntry, runs: &[PageRunEntry]) -> Result<(), ImageError> {
    let run_checksums: Vec<u8> = runs.iter().flat_map(|run| run.checksum.to_le_bytes()).collect();
    if checksum(&run_checksums) != data.checksum {
        return Err(ImageError::SectionChecksum { kind: SectionKind::PageData.name() });
    }
    Ok(())
}

/// Checks the contents of run `index` (placed where [`crate::layout`]
/// checked) against its checksum.
pub(crate) fn run(bytes: &[u8], runs: &[PageRunEntry], index: usize) -> Result<(), ImageError> {
    match first_bad_run(bytes, runs.get(index..=index).unwrap_or_default(), index) {
        Some(index) => Err(ImageError::PageRunChecksum { index, vaddr: runs[index].vaddr }),
        None => Ok(()),
    }
}

/// Index of the first run (counting from `first_index`) whose contents do
/// not match its checksum.
fn first_bad_run(bytes: &[u8], runs: &[PageRunEntry], first_index: usize) -> Option<usize> {
    runs.iter()
        .position(|run| slice(bytes, run.data_offset, run.byte_len()).is_none_or(|data| checksum(data) != run.checksum))
        .map(|index| first_index + index)
}

fn first_bad_run_parallel(bytes: &[u8], runs: &[PageRunEntry]) -> Option<usize> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 8);
    let per_worker = runs.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .chunks(per_worker)
            .enumerate()
            .map(|(part, slice)| {
                (part * per_worker, scope.spawn(move || first_bad_run(bytes, slice, part * per_worker)))
            })
            .collect();
        // A worker that could not finish verified nothing: its first run
        // counts as bad.
        handles.into_iter().filter_map(|(first, handle)| handle.join().unwrap_or(Some(first))).min()
    })
}

/// `bytes[offset..offset + length]`, if it exists.
pub(crate) fn slice(bytes: &[u8], offset: u64, length: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(length).ok()?)?;
    bytes.get(start..end)
}
