//! Reading an image: the file is mapped, and everything (header, sections,
//! every page run) is checked before the caller sees a byte of it.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::ImageError;
use crate::file_kind::open_regular;
use crate::format::{Header, PageRunEntry, SectionKind};
use crate::validate::{Pages, Validated, validate_with};
use crate::verify::slice;

/// A validated, mapped image.
#[derive(Debug)]
pub struct ImageReader {
    path: PathBuf,
    map: Mmap,
    header: Header,
    runs: Vec<PageRunEntry>,
    /// uid and gid of the file.
    owner: (u32, u32),
}

impl ImageReader {
    /// Opens and fully validates the image at `path`. Anything but a regular
    /// file (a FIFO, a directory, a device...) is refused at once.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        Self::open_with(path, Pages::Verified)
    }

    /// Opens and validates the image at `path` like [`ImageReader::open`],
    /// but for the contents of its page runs, which the caller checks run
    /// by run with [`ImageReader::verify_run`] before using one (a lazy
    /// restore: nothing is read up front). The header, the metadata, the
    /// run table and the runs' checksums are verified here all the same.
    pub fn open_deferring_pages(path: &Path) -> Result<Self, ImageError> {
        Self::open_with(path, Pages::Deferred)
    }

    fn open_with(path: &Path, pages: Pages) -> Result<Self, ImageError> {
        let io_error = |action| move |source| ImageError::Io { action, path: path.to_owned(), source };
        let file = open_regular(path)?;
        let metadata = file.metadata().map_err(io_error("stat image"))?;
        let file_length = metadata.len();
        let owner = (std::os::unix::fs::MetadataExt::uid(&metadata), std::os::unix::fs::MetadataExt::gid(&metadata));
        let header_length = std::mem::size_of::<Header>() as u64;
        if file_length < header_length {
            return Err(ImageError::Truncated { what: "the header", needed: header_length, available: file_length });
        }
        // Populated up front when every page is read by the checksum pass
        // anyway.
        let mut options = memmap2::MmapOptions::new();
        if pages == Pages::Verified {
            options.populate();
        }
        // SAFETY: the image is opened read-only and mapped privately; crp
        // does not modify image files while it reads them. A concurrent
        // truncation by someone else could fault, as with any mapped input.
        let map = unsafe { options.map(&file) }.map_err(io_error("map image"))?;
        // A restored child is forked from crp: it must not inherit the map.
        let _ = map.advise(memmap2::Advice::DontFork);
        let Validated { header, runs } = validate_with(&map, pages)?;
        Ok(Self { path: path.to_owned(), map, header, runs, owner })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The user and group owning the image file (of the descriptor read,
    /// so a file swapped in under the same name cannot lie about it).
    pub fn owner(&self) -> (u32, u32) {
        self.owner
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn file_length(&self) -> u64 {
        self.map.len() as u64
    }

    /// The raw metadata archive.
    pub fn metadata_bytes(&self) -> &[u8] {
        self.header
            .section(SectionKind::Metadata)
            .and_then(|entry| slice(&self.map, entry.offset, entry.length))
            .unwrap_or_default()
    }

    /// The metadata archive, validated by bytecheck and accessed in place.
    pub fn metadata<T>(&self) -> Result<&T, ImageError>
    where
        T: rkyv::Portable
            + for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::BoxedError>>,
    {
        rkyv::access::<T, rkyv::rancor::BoxedError>(self.metadata_bytes())
            .map_err(|error| ImageError::InvalidMetadata { reason: error.to_string() })
    }

    pub fn page_runs(&self) -> &[PageRunEntry] {
        &self.runs
    }

    /// The bytes of one page run (validated at open).
    ///
    /// # Panics
    ///
    /// If `run` is not one of [`ImageReader::page_runs`].
    pub fn run_data(&self, run: &PageRunEntry) -> &[u8] {
        slice(&self.map, run.data_offset, run.byte_len()).expect("a page run of this image")
    }

    /// Checks the contents of run `index` of [`ImageReader::page_runs`]
    /// against its checksum (already done for every run unless opened by
    /// [`ImageReader::open_deferring_pages`]).
    pub fn verify_run(&self, index: usize) -> Result<(), ImageError> {
        crate::verify::run(&self.map, &self.runs, index)
    }

    /// Total bytes of page data.
    pub fn page_bytes(&self) -> u64 {
        self.runs.iter().map(PageRunEntry::byte_len).sum()
    }
}
