//! Byte-level mutations of whole image files and of metadata archives, and
//! `reseal`, which recomputes every checksum so that a mutation reaches the
//! code behind the checksum layer instead of stopping at it.

use crp_image::format::{HEADER_BLOCK, Header, PageRunEntry, SectionKind, checksum};
use zerocopy::{FromBytes, IntoBytes};

use super::rng::Rng;

fn slice(bytes: &[u8], offset: u64, length: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(length).ok()?)?;
    bytes.get(start..end)
}

fn section_range(header: &Header, kind: SectionKind) -> Option<(u64, u64)> {
    header.section(kind).map(|entry| (entry.offset, entry.length))
}

/// Recomputes the checksums of every page run, the page data, the run
/// table, the metadata and the header, wherever the (possibly mutated)
/// header says they are. What cannot be located is left as it is.
pub fn reseal(bytes: &mut [u8]) {
    let Ok((mut header, _)) = Header::read_from_prefix(bytes) else { return };
    if let Some((offset, length)) = section_range(&header, SectionKind::PageRuns)
        && let Some(table) = slice(bytes, offset, length)
        && let Ok(runs) = <[PageRunEntry]>::ref_from_bytes(table)
    {
        let mut runs = runs.to_vec();
        for run in &mut runs {
            if let Some(data) = slice(bytes, run.data_offset, run.page_count.saturating_mul(4096)) {
                run.checksum = checksum(data);
            }
        }
        let data_checksum = checksum(&runs.iter().flat_map(|run| run.checksum.to_le_bytes()).collect::<Vec<u8>>());
        let table = runs.as_bytes();
        let table_checksum = checksum(table);
        if let Ok(start) = usize::try_from(offset) {
            bytes[start..start + table.len()].copy_from_slice(table);
        }
        for entry in header.sections.iter_mut() {
            if entry.kind == SectionKind::PageData as u32 {
                entry.checksum = data_checksum;
            }
            if entry.kind == SectionKind::PageRuns as u32 {
                entry.checksum = table_checksum;
            }
        }
    }
    if let Some((offset, length)) = section_range(&header, SectionKind::Metadata)
        && let Some(metadata) = slice(bytes, offset, length)
    {
        let metadata_checksum = checksum(metadata);
        for entry in header.sections.iter_mut().filter(|entry| entry.kind == SectionKind::Metadata as u32) {
            entry.checksum = metadata_checksum;
        }
    }
    header.header_checksum = header.compute_checksum();
    let header_bytes = header.as_bytes();
    bytes[..header_bytes.len()].copy_from_slice(header_bytes);
}

/// Sets the header's file length to the actual one (after a truncation or
/// extension), so the mutation is not refused for that alone.
pub fn fix_file_length(bytes: &mut [u8]) {
    if let Ok((mut header, _)) = Header::read_from_prefix(bytes) {
        header.file_length = bytes.len() as u64;
        let header_bytes = header.as_bytes().to_vec();
        bytes[..header_bytes.len()].copy_from_slice(&header_bytes);
    }
}

/// One random change: flips, overwrites with hostile integers, inserts,
/// deletes, truncates or extends.
pub fn mutate_bytes(bytes: &mut Vec<u8>, rng: &mut Rng, protect_prefix: usize) {
    let editable = |bytes: &Vec<u8>| bytes.len().saturating_sub(protect_prefix);
    match rng.below(7) {
        0 | 1 => {
            for _ in 0..1 + rng.below(4) {
                if editable(bytes) > 0 {
                    let at = protect_prefix + rng.index(editable(bytes));
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            // A little-endian integer overwritten in place: lengths, offsets
            // and addresses are 4 or 8 bytes.
            let width = if rng.chance(2) { 8 } else { 4 };
            if editable(bytes) > width {
                let at = protect_prefix + rng.index(editable(bytes) - width);
                let value = rng.hostile_u64().to_le_bytes();
                bytes[at..at + width].copy_from_slice(&value[..width]);
            }
        }
        3 => {
            let at = protect_prefix + rng.index(editable(bytes) + 1);
            let count = 1 + rng.index(16);
            let fill = rng.next_u8();
            bytes.splice(at.min(bytes.len())..at.min(bytes.len()), std::iter::repeat_n(fill, count));
        }
        4 => {
            if editable(bytes) > 0 {
                let at = protect_prefix + rng.index(editable(bytes));
                let end = (at + 1 + rng.index(32)).min(bytes.len());
                bytes.drain(at..end);
            }
        }
        5 => {
            let keep = protect_prefix + rng.index(editable(bytes) + 1);
            bytes.truncate(keep);
        }
        _ => {
            let extra = rng.index(8192);
            bytes.resize(bytes.len() + extra, 0);
        }
    }
}

/// Mutates a header field or a run table entry specifically (they guard
/// everything else).
pub fn mutate_structure(bytes: &mut [u8], rng: &mut Rng) {
    let Ok((mut header, _)) = Header::read_from_prefix(bytes) else { return };
    match rng.below(4) {
        0 => {
            let index = rng.index(header.sections.len());
            let entry = &mut header.sections[index];
            match rng.below(3) {
                0 => entry.offset = rng.hostile_u64(),
                1 => entry.length = rng.hostile_u64(),
                _ => entry.kind = rng.next_u32() % 5,
            }
        }
        1 => header.section_count = u32::try_from(rng.hostile_u64() >> 32).unwrap_or(u32::MAX),
        2 => header.file_length = rng.hostile_u64(),
        _ => {
            if let Some((offset, length)) = section_range(&header, SectionKind::PageRuns)
                && let (Ok(start), Ok(length)) = (usize::try_from(offset), usize::try_from(length))
                && length >= 32
                && start.checked_add(length).is_some_and(|end| end <= bytes.len())
            {
                let entry = start + 32 * rng.index(length / 32);
                let field = 8 * rng.index(3);
                let value = rng.hostile_u64().to_le_bytes();
                bytes[entry + field..entry + field + 8].copy_from_slice(&value);
            }
            return;
        }
    }
    let header_bytes = header.as_bytes().to_vec();
    bytes[..header_bytes.len()].copy_from_slice(&header_bytes);
}

/// Where the metadata archive sits in an image file, if it can be found.
pub fn metadata_range(bytes: &[u8]) -> Option<std::ops::Range<usize>> {
    let (header, _) = Header::read_from_prefix(bytes).ok()?;
    let (offset, length) = section_range(&header, SectionKind::Metadata)?;
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(length).ok()?)?;
    (end <= bytes.len() && offset >= HEADER_BLOCK).then_some(start..end)
}
