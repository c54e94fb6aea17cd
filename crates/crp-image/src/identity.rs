//! Who an image is, read without its pages: the header (checked against
//! its checksum, version and length) and the metadata (checked against
//! its section checksum). An incremental dump names its parent by the
//! parent's header checksum, which covers the checksums of every section
//! and so the whole image; reading that much costs two small reads, not
//! the parent's pages (the restore checks those).

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::ImageError;
use crate::file_kind::open_regular;
use crate::format::{HEADER_BLOCK, Header, SectionKind, checksum};

/// An image's header and metadata archive, both checked.
#[derive(Debug)]
pub struct Identity {
    pub header: Header,
    pub metadata: rkyv::util::AlignedVec,
}

impl Identity {
    /// The metadata archive, validated by bytecheck and accessed in place.
    pub fn metadata<T>(&self) -> Result<&T, ImageError>
    where
        T: rkyv::Portable
            + for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::BoxedError>>,
    {
        rkyv::access::<T, rkyv::rancor::BoxedError>(&self.metadata)
            .map_err(|error| ImageError::InvalidMetadata { reason: error.to_string() })
    }
}

/// Reads and checks the header and metadata of the image at `path`.
pub fn read_identity(path: &Path) -> Result<Identity, ImageError> {
    let io_error = |action| move |source| ImageError::Io { action, path: path.to_owned(), source };
    let file = open_regular(path)?;
    let file_length = file.metadata().map_err(io_error("stat image"))?.len();
    let mut block = vec![0u8; usize::try_from(HEADER_BLOCK).unwrap_or(4096)];
    if file_length < HEADER_BLOCK {
        return Err(ImageError::Truncated { what: "the header block", needed: HEADER_BLOCK, available: file_length });
    }
    file.read_exact_at(&mut block, 0).map_err(io_error("read image header"))?;
    let header = crate::layout::read_header(&block, file_length)?;
    if header.file_length != file_length {
        return Err(ImageError::Truncated {
            what: "the whole image",
            needed: header.file_length,
            available: file_length,
        });
    }
    let section = header
        .section(SectionKind::Metadata)
        .copied()
        .ok_or_else(|| ImageError::MalformedHeader { reason: "no metadata section".to_owned() })?;
    let within = section.offset.checked_add(section.length).is_some_and(|end| end <= file_length);
    let length = usize::try_from(section.length).ok().filter(|_| within).ok_or(ImageError::SectionOutOfBounds {
        kind: SectionKind::Metadata.name(),
        offset: section.offset,
        length: section.length,
        file_length,
    })?;
    let mut metadata = rkyv::util::AlignedVec::with_capacity(length);
    metadata.resize(length, 0);
    file.read_exact_at(&mut metadata, section.offset).map_err(io_error("read image metadata"))?;
    if checksum(&metadata) != section.checksum {
        return Err(ImageError::SectionChecksum { kind: SectionKind::Metadata.name() });
    }
    Ok(Identity { header, metadata })
}
