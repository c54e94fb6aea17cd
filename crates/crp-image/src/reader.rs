//! Reading an image: the file is mapped, and everything (header, sections,
//! every page run) is checked before the caller sees a byte of it.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use zerocopy::FromBytes;

use crate::error::ImageError;
use crate::format::{
    FORMAT_VERSION, HEADER_BLOCK, Header, MAGIC, MAX_SECTIONS, PAGE_SIZE, PageRunEntry, RKYV_LAYOUT, SectionEntry,
    SectionKind, checksum,
};

/// A validated, mapped image.
#[derive(Debug)]
pub struct ImageReader {
    path: PathBuf,
    map: Mmap,
    header: Header,
    runs: Vec<PageRunEntry>,
}

impl ImageReader {
    /// Opens and fully validates the image at `path`.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let io_error = |action| move |source| ImageError::Io { action, path: path.to_owned(), source };
        let file = File::open(path).map_err(io_error("open image"))?;
        let file_length = file.metadata().map_err(io_error("stat image"))?.len();
        let header_length = std::mem::size_of::<Header>() as u64;
        if file_length < header_length {
            return Err(ImageError::Truncated { what: "the header", needed: header_length, available: file_length });
        }
        // SAFETY: the image is opened read-only and mapped privately; crp
        // does not modify image files while it reads them. A concurrent
        // truncation by someone else could fault, as with any mapped input.
        // Populated up front: every page is read by the checksum pass anyway.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(io_error("map image"))?;
        // A restored child is forked from crp: it must not inherit the map.
        let _ = map.advise(memmap2::Advice::DontFork);
        Self::from_map(path.to_owned(), map)
    }

    fn from_map(path: PathBuf, map: Mmap) -> Result<Self, ImageError> {
        let bytes: &[u8] = &map;
        let file_length = bytes.len() as u64;
        let header = Header::read_from_prefix(bytes).map(|(header, _)| header).map_err(|_| ImageError::Truncated {
            what: "the header",
            needed: std::mem::size_of::<Header>() as u64,
            available: file_length,
        })?;
        check_header(&header, file_length)?;

        let runs_bytes = section_bytes(bytes, &header, SectionKind::PageRuns)?;
        let runs = <[PageRunEntry]>::ref_from_bytes(runs_bytes)
            .map_err(|_| ImageError::MalformedHeader {
                reason: format!(
                    "page run table length {} is not a multiple of {}",
                    runs_bytes.len(),
                    std::mem::size_of::<PageRunEntry>()
                ),
            })?
            .to_vec();
        let data = section_entry(&header, SectionKind::PageData)?;
        check_runs(bytes, data, &runs)?;
        // Metadata is validated again by rkyv when accessed; its checksum has
        // already been verified here.
        section_bytes(bytes, &header, SectionKind::Metadata)?;
        Ok(Self { path, map, header, runs })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn file_length(&self) -> u64 {
        self.map.len() as u64
    }

    /// The raw metadata archive.
    pub fn metadata_bytes(&self) -> &[u8] {
        let entry = self.header.section(SectionKind::Metadata).expect("validated at open");
        &self.map[range(entry)]
    }

    /// The metadata archive, validated by bytecheck and accessed in place.
    pub fn metadata<T>(&self) -> Result<&T, ImageError>
    where
        T: rkyv::Portable
            + for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>,
    {
        rkyv::access::<T, rkyv::rancor::Error>(self.metadata_bytes())
            .map_err(|error| ImageError::InvalidMetadata { reason: error.to_string() })
    }

    pub fn page_runs(&self) -> &[PageRunEntry] {
        &self.runs
    }

    /// The bytes of one page run (validated at open).
    pub fn run_data(&self, run: &PageRunEntry) -> &[u8] {
        &self.map[byte_range(run.data_offset, run.byte_len())]
    }

    /// Total bytes of page data.
    pub fn page_bytes(&self) -> u64 {
        self.runs.iter().map(PageRunEntry::byte_len).sum()
    }
}

fn check_header(header: &Header, file_length: u64) -> Result<(), ImageError> {
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
    if header.file_length != file_length {
        return Err(ImageError::Truncated {
            what: "the whole image",
            needed: header.file_length,
            available: file_length,
        });
    }
    if header.section_count as usize > MAX_SECTIONS {
        return Err(ImageError::MalformedHeader {
            reason: format!("{} sections, at most {MAX_SECTIONS} allowed", header.section_count),
        });
    }
    for kind in SectionKind::ALL {
        let entry = section_entry(header, kind)?;
        let end = entry.offset.checked_add(entry.length);
        if end.is_none_or(|end| end > file_length) || entry.offset < HEADER_BLOCK {
            return Err(ImageError::SectionOutOfBounds {
                kind: kind.name(),
                offset: entry.offset,
                length: entry.length,
                file_length,
            });
        }
    }
    let metadata = section_entry(header, SectionKind::Metadata)?;
    if metadata.offset % 16 != 0 {
        return Err(ImageError::MalformedHeader {
            reason: format!("metadata offset {:#x} is not 16-byte aligned", metadata.offset),
        });
    }
    Ok(())
}

fn section_entry(header: &Header, kind: SectionKind) -> Result<&SectionEntry, ImageError> {
    header.section(kind).ok_or_else(|| ImageError::MalformedHeader { reason: format!("no {} section", kind.name()) })
}

/// The byte range `[offset, offset + length)` of the mapped file.
fn byte_range(offset: u64, length: u64) -> std::ops::Range<usize> {
    // Callers checked the range against the mapped length, which fits in usize.
    let index = |value: u64| usize::try_from(value).expect("range checked against the mapping");
    index(offset)..index(offset + length)
}

fn range(entry: &SectionEntry) -> std::ops::Range<usize> {
    byte_range(entry.offset, entry.length)
}

/// Returns a checksummed section's bytes (page data is checked run by run).
fn section_bytes<'a>(bytes: &'a [u8], header: &Header, kind: SectionKind) -> Result<&'a [u8], ImageError> {
    let entry = section_entry(header, kind)?;
    let section = &bytes[range(entry)];
    if checksum(section) != entry.checksum {
        return Err(ImageError::SectionChecksum { kind: kind.name() });
    }
    Ok(section)
}

fn check_runs(bytes: &[u8], data: &SectionEntry, runs: &[PageRunEntry]) -> Result<(), ImageError> {
    let run_checksums: Vec<u8> = runs.iter().flat_map(|run| run.checksum.to_le_bytes()).collect();
    if checksum(&run_checksums) != data.checksum {
        return Err(ImageError::SectionChecksum { kind: SectionKind::PageData.name() });
    }
    let data_end = data.offset + data.length;
    let mut previous_end = 0u64;
    for (index, run) in runs.iter().enumerate() {
        let malformed =
            |reason| ImageError::MalformedPageRun { index, vaddr: run.vaddr, page_count: run.page_count, reason };
        if run.page_count == 0 {
            return Err(malformed("empty run"));
        }
        if run.vaddr % PAGE_SIZE != 0 || run.data_offset % PAGE_SIZE != 0 {
            return Err(malformed("not page-aligned"));
        }
        let vaddr_end = run.vaddr.checked_add(run.page_count.saturating_mul(PAGE_SIZE));
        let data_run_end = run.data_offset.checked_add(run.page_count.saturating_mul(PAGE_SIZE));
        match (vaddr_end, data_run_end) {
            (Some(_), Some(end)) if run.data_offset >= data.offset && end <= data_end => {}
            _ => return Err(malformed("outside the page data section")),
        }
        if run.vaddr < previous_end {
            return Err(malformed("overlaps or precedes the previous run"));
        }
        previous_end = run.vaddr_end();
    }
    verify_run_checksums(bytes, runs)
}

/// Checks every run's contents against its checksum, on all CPUs: this is
/// the one pass over all page data a restore makes before creating anything.
fn verify_run_checksums(bytes: &[u8], runs: &[PageRunEntry]) -> Result<(), ImageError> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 8);
    let per_worker = runs.len().div_ceil(workers).max(1);
    let first_bad = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .chunks(per_worker)
            .enumerate()
            .map(|(part, slice)| {
                scope.spawn(move || {
                    slice
                        .iter()
                        .position(|run| checksum(&bytes[byte_range(run.data_offset, run.byte_len())]) != run.checksum)
                        .map(|index| part * per_worker + index)
                })
            })
            .collect();
        handles.into_iter().filter_map(|handle| handle.join().ok().flatten()).min()
    });
    match first_bad {
        Some(index) => Err(ImageError::PageRunChecksum { index, vaddr: runs[index].vaddr }),
        None => Ok(()),
    }
}
