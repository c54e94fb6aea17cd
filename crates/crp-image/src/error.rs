//! Everything that can be wrong with an image file, each variant naming what.

use std::path::PathBuf;

/// Why an image could not be written or why it is refused on read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is {kind}, not a regular file: a crp image is a regular file")]
    NotRegularFile { path: PathBuf, kind: &'static str },
    #[error("cannot write the image to {path}: the folder {folder} does not exist")]
    OutputFolderMissing { path: PathBuf, folder: PathBuf },
    #[error("cannot write the image to {path}: it is {kind}; give the path of a regular file (new or to replace)")]
    OutputNotRegularFile { path: PathBuf, kind: &'static str },
    #[error("image is truncated: {what} needs {needed} bytes but the file has {available}")]
    Truncated { what: &'static str, needed: u64, available: u64 },
    #[error("not a crp image (bad magic {found:02x?})")]
    NotAnImage { found: [u8; 8] },
    #[error("image format version {found} is newer than this crp reads (up to {supported}); upgrade crp")]
    NewerVersion { found: u32, supported: u32 },
    #[error("image format {found}; this crp reads {supported} only: re-dump the process with this crp")]
    OlderVersion { found: u32, supported: u32 },
    #[error("image metadata was written with rkyv layout {found:#x}, this crp reads {supported:#x}")]
    RkyvVersion { found: u32, supported: u32 },
    #[error(
        "image header checksum mismatch (stored {stored:#018x}, computed {computed:#018x}): the header is corrupted"
    )]
    HeaderChecksum { stored: u64, computed: u64 },
    #[error("image header is malformed: {reason}")]
    MalformedHeader { reason: String },
    #[error("{what} [{start:#x}, {end:#x}) must be zero, but byte {first_nonzero:#x} is not: the image is corrupted")]
    NonZeroBytes { what: &'static str, start: u64, end: u64, first_nonzero: u64 },
    #[error("{kind} section starts at {offset:#x}, but the layout puts it at {expected:#x}")]
    MisplacedSection { kind: &'static str, offset: u64, expected: u64 },
    #[error("{kind} section [{offset:#x}, +{length:#x}) lies outside the file ({file_length:#x} bytes)")]
    SectionOutOfBounds { kind: &'static str, offset: u64, length: u64, file_length: u64 },
    #[error("{kind} section checksum mismatch: the image is corrupted")]
    SectionChecksum { kind: &'static str },
    #[error("page run {index} (address {vaddr:#x}, {page_count} pages) is malformed: {reason}")]
    MalformedPageRun { index: usize, vaddr: u64, page_count: u64, reason: &'static str },
    #[error(
        "page run {index} data starts at {data_offset:#x}, not at {expected:#x}: runs tile the page data section in order, back to back"
    )]
    MisplacedPageRun { index: usize, data_offset: u64, expected: u64 },
    #[error("page run {index} (address {vaddr:#x}) checksum mismatch: the page data is corrupted")]
    PageRunChecksum { index: usize, vaddr: u64 },
    #[error("image metadata is invalid: {reason}")]
    InvalidMetadata { reason: String },
    #[error("cannot serialise image metadata: {reason}")]
    Serialize { reason: String },
    #[error("page source failed at {vaddr:#x}: {source}")]
    PageSource {
        vaddr: u64,
        #[source]
        source: std::io::Error,
    },
}
