//! Everything an image must pass before anyone reads a byte of it: the
//! layout (see [`crate::layout`]), then every checksum.

use zerocopy::FromBytes;

use crate::error::ImageError;
use crate::format::{Header, PageRunEntry, SectionKind};
use crate::{layout, verify};

/// A checked image's header and page run table.
#[derive(Debug)]
pub(crate) struct Validated {
    pub(crate) header: Header,
    pub(crate) runs: Vec<PageRunEntry>,
}

/// Checks a whole image held in memory.
pub(crate) fn validate(bytes: &[u8]) -> Result<Validated, ImageError> {
    validate_with(bytes, Pages::Verified)
}

/// Whether the contents of the page runs are checked with the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pages {
    Verified,
    /// Left to [`crate::ImageReader::verify_run`], run by run (their
    /// checksums, their places and everything else are checked).
    Deferred,
}

pub(crate) fn validate_with(bytes: &[u8], pages: Pages) -> Result<Validated, ImageError> {
    let header = layout::check_header(bytes)?;
    let sections = layout::check_placement(bytes, &header)?;
    let runs_bytes = verify::section(bytes, &sections.runs, SectionKind::PageRuns)?;
    // Copied out rather than referenced: the table need not be aligned in
    // a buffer that is not a mapping. Its length is a whole number of
    // entries (checked with its place).
    let runs = runs_bytes
        .chunks_exact(std::mem::size_of::<PageRunEntry>())
        .map(PageRunEntry::read_from_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ImageError::MalformedHeader { reason: "page run table entry of the wrong size".into() })?;
    layout::check_runs(&sections.data, &runs)?;
    match pages {
        Pages::Verified => verify::page_data(bytes, &sections.data, &runs)?,
        Pages::Deferred => verify::run_checksums(&sections.data, &runs)?,
    }
    // Validated again by rkyv when accessed.
    verify::section(bytes, &sections.metadata, SectionKind::Metadata)?;
    Ok(Validated { header, runs })
}

/// Checks an image held in memory exactly as [`crate::ImageReader::open`]
/// checks a file: `Ok` only for an image this crp reads, every byte of it as
/// the writer wrote it.
pub fn validate_image(bytes: &[u8]) -> Result<(), ImageError> {
    validate(bytes).map(drop)
}
