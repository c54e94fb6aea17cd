//! The one layout an image may have, checked field by field.
//!
//! There is exactly one valid place for every byte: the header, then zeros
//! up to [`HEADER_BLOCK`], the page runs back to back, the run table right
//! after them, zeros up to the next page boundary, the metadata up to the
//! end of the file. Checksums cover the header, the table, every run and the
//! metadata; everything else must be zero. So no byte of an image can change
//! without the image being refused.

use zerocopy::FromBytes;

use crate::error::ImageError;
use crate::format::{
    FORMAT_VERSION, HEADER_BLOCK, Header, MAGIC, MAX_SECTIONS, PAGE_SIZE, PageRunEntry, RKYV_LAYOUT, SectionEntry,
    SectionKind, page_align_up,
};

/// The three sections, where the header says they are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sections {
    pub(crate) metadata: SectionEntry,
    pub(crate) runs: SectionEntry,
    pub(crate) data: SectionEntry,
}

/// The header at the start of `bytes` (of a file of `file_length` bytes),
/// checked for what identifies it: magic, checksum, format and rkyv versions.
pub(crate) fn read_header(bytes: &[u8], file_length: u64) -> Result<Header, ImageError> {
    let header = Header::read_from_prefix(bytes).map(|(header, _)| header).map_err(|_| ImageError::Truncated {
        what: "the header",
        needed: std::mem::size_of::<Header>() as u64,
        available: file_length,
    })?;
    if header.magic != MAGIC {
        return Err(ImageError::NotAnImage { found: header.magic });
    }
    let computed = header.compute_checksum();
    if computed != header.header_checksum {
        return Err(ImageError::HeaderChecksum { stored: header.header_checksum, computed });
    }
    if header.format_version > FORMAT_VERSION {
        return Err(ImageError::NewerVersion { found: header.format_version, supported: FORMAT_VERSION });
    }
    if header.format_version < FORMAT_VERSION {
        return Err(ImageError::OlderVersion { found: header.format_version, supported: FORMAT_VERSION });
    }
    if header.rkyv_layout != RKYV_LAYOUT {
        return Err(ImageError::RkyvVersion { found: header.rkyv_layout, supported: RKYV_LAYOUT });
    }
    Ok(header)
}

/// Reads the header and checks what it says about itself: magic, checksum,
/// versions, length, flags and the section table.
pub(crate) fn check_header(bytes: &[u8]) -> Result<Header, ImageError> {
    let file_length = bytes.len() as u64;
    let header = read_header(bytes, file_length)?;
    if header.file_length > file_length {
        return Err(ImageError::Truncated {
            what: "the whole image",
            needed: header.file_length,
            available: file_length,
        });
    }
    if header.file_length < file_length {
        return Err(malformed(format!(
            "the header says the image is {} bytes but the file has {file_length}: bytes [{:#x}, {file_length:#x}) \
             were appended",
            header.file_length, header.file_length
        )));
    }
    if file_length < HEADER_BLOCK {
        return Err(ImageError::Truncated { what: "the header block", needed: HEADER_BLOCK, available: file_length });
    }
    if header.flags != 0 {
        return Err(malformed(format!("flags are {:#x}, but no flags are defined (must be 0)", header.flags)));
    }
    check_section_table(&header)?;
    check_zero(bytes, "the header block after the header", std::mem::size_of::<Header>() as u64, HEADER_BLOCK)?;
    Ok(header)
}

/// Exactly [`SectionKind::ALL`], in that order, reserved fields zero, the
/// unused slots all zero.
fn check_section_table(header: &Header) -> Result<(), ImageError> {
    let expected_count = SectionKind::ALL.len();
    if usize::try_from(header.section_count) != Ok(expected_count) {
        return Err(malformed(format!(
            "section count is {}, this format has exactly {expected_count} sections",
            header.section_count
        )));
    }
    for (slot, (entry, kind)) in header.sections.iter().zip(SectionKind::ALL).enumerate() {
        if entry.kind != kind as u32 {
            return Err(malformed(format!(
                "section slot {slot} has kind {}, but the {} section (kind {}) belongs there",
                entry.kind,
                kind.name(),
                kind as u32
            )));
        }
        if entry.reserved != 0 {
            return Err(malformed(format!(
                "the reserved field of section slot {slot} ({}) is {:#x}, must be 0",
                kind.name(),
                entry.reserved
            )));
        }
    }
    for slot in expected_count..MAX_SECTIONS {
        if header.sections[slot] != SectionEntry::default() {
            return Err(malformed(format!("unused section slot {slot} is not all zero")));
        }
    }
    Ok(())
}

/// Checks that the sections sit exactly where the writer puts them, with
/// zeros in the gap before the metadata. `header` has passed [`check_header`].
pub(crate) fn check_placement(bytes: &[u8], header: &Header) -> Result<Sections, ImageError> {
    let file_length = bytes.len() as u64;
    let [metadata, runs, data, _] = header.sections;
    let data_end = end_within(&data, SectionKind::PageData, file_length)?;
    if data.offset != HEADER_BLOCK {
        return Err(misplaced(SectionKind::PageData, &data, HEADER_BLOCK));
    }
    if data.length % PAGE_SIZE != 0 {
        return Err(malformed(format!("page data section length {:#x} is not a whole number of pages", data.length)));
    }
    let runs_end = end_within(&runs, SectionKind::PageRuns, file_length)?;
    if runs.offset != data_end {
        return Err(misplaced(SectionKind::PageRuns, &runs, data_end));
    }
    let entry_size = std::mem::size_of::<PageRunEntry>() as u64;
    if runs.length % entry_size != 0 {
        return Err(malformed(format!("page run table length {} is not a multiple of {entry_size}", runs.length)));
    }
    let metadata_end = end_within(&metadata, SectionKind::Metadata, file_length)?;
    // The archive is read in place and must be aligned: it starts at the
    // page boundary after the run table.
    let metadata_offset = page_align_up(runs_end);
    if metadata.offset != metadata_offset {
        return Err(misplaced(SectionKind::Metadata, &metadata, metadata_offset));
    }
    if metadata_end != file_length {
        return Err(malformed(format!(
            "bytes [{metadata_end:#x}, {file_length:#x}) after the metadata section belong to no section"
        )));
    }
    check_zero(bytes, "the gap between the page run table and the metadata", runs_end, metadata_offset)?;
    Ok(Sections { metadata, runs, data })
}

/// Checks that the runs tile the page data section: in order, each starting
/// where the previous one ends, together exactly as long as the section, at
/// increasing, non-overlapping, page-aligned addresses.
pub(crate) fn check_runs(data: &SectionEntry, runs: &[PageRunEntry]) -> Result<(), ImageError> {
    let data_end = data.offset.saturating_add(data.length);
    let mut cursor = data.offset;
    let mut previous_vaddr_end = 0u64;
    for (index, run) in runs.iter().enumerate() {
        let malformed =
            |reason| ImageError::MalformedPageRun { index, vaddr: run.vaddr, page_count: run.page_count, reason };
        if run.page_count == 0 {
            return Err(malformed("empty run"));
        }
        if run.vaddr % PAGE_SIZE != 0 {
            return Err(malformed("address not page-aligned"));
        }
        if run.data_offset != cursor {
            return Err(ImageError::MisplacedPageRun { index, data_offset: run.data_offset, expected: cursor });
        }
        let length = run.page_count.checked_mul(PAGE_SIZE);
        let run_end = length.and_then(|length| cursor.checked_add(length)).filter(|&end| end <= data_end);
        let Some(run_end) = run_end else {
            return Err(malformed("outside the page data section"));
        };
        let Some(vaddr_end) = length.and_then(|length| run.vaddr.checked_add(length)) else {
            return Err(malformed("address range wraps around"));
        };
        if run.vaddr < previous_vaddr_end {
            return Err(malformed("overlaps or precedes the previous run"));
        }
        previous_vaddr_end = vaddr_end;
        cursor = run_end;
    }
    if cursor != data_end {
        return Err(malformed(format!(
            "page data section [{:#x}, {data_end:#x}) is longer than its runs, which end at {cursor:#x}",
            data.offset
        )));
    }
    Ok(())
}

/// Refuses any non-zero byte in `[start, end)` of the file.
fn check_zero(bytes: &[u8], what: &'static str, start: u64, end: u64) -> Result<(), ImageError> {
    let range =
        usize::try_from(start).ok().zip(usize::try_from(end).ok()).and_then(|(start, end)| bytes.get(start..end));
    let Some(range) = range else {
        return Err(ImageError::Truncated { what, needed: end, available: bytes.len() as u64 });
    };
    match range.iter().position(|&byte| byte != 0) {
        None => Ok(()),
        Some(index) => Err(ImageError::NonZeroBytes { what, start, end, first_nonzero: start + index as u64 }),
    }
}

/// Where `entry` ends, if it lies within the file.
fn end_within(entry: &SectionEntry, kind: SectionKind, file_length: u64) -> Result<u64, ImageError> {
    match entry.offset.checked_add(entry.length) {
        Some(end) if end <= file_length => Ok(end),
        _ => Err(ImageError::SectionOutOfBounds {
            kind: kind.name(),
            offset: entry.offset,
            length: entry.length,
            file_length,
        }),
    }
}

fn misplaced(kind: SectionKind, entry: &SectionEntry, expected: u64) -> ImageError {
    ImageError::MisplacedSection { kind: kind.name(), offset: entry.offset, expected }
}

fn malformed(reason: String) -> ImageError {
    ImageError::MalformedHeader { reason }
}
