//! The crp image: one file holding a checkpointed process.
//!
//! Layout (all integers little-endian, see [`format`]):
//!
//! ```text
//! [header block, 4 KiB: magic, versions, section table, header checksum]
//! [page data: page-aligned runs of 4 KiB pages, each run checksummed]
//! [page run table: one PageRunEntry per run]
//! [zeros up to the next page boundary]
//! [metadata: one rkyv archive, validated on read]
//! ```
//!
//! That layout is the only one accepted: every byte of an image is either
//! covered by a checksum or required to be zero (see `layout`).
//!
//! This crate knows nothing about processes: it stores opaque metadata bytes
//! and page runs keyed by the virtual address they came from. The category
//! crates define what the metadata holds.

mod buffer;
mod error;
mod file_kind;
pub mod format;
mod identity;
mod layout;
mod pipeline;
mod reader;
mod runs;
mod staging;
mod validate;
mod verify;
mod writer;

pub use error::ImageError;
pub use format::{PAGE_SIZE, PageRunEntry, SectionKind};
pub use identity::{Identity, read_identity};
pub use reader::ImageReader;
pub use validate::validate_image;
pub use writer::{Durability, ImageWriter};

/// Serialises a value into an rkyv archive suitable for [`ImageWriter::finish`].
pub fn to_archive<T>(value: &T) -> Result<rkyv::util::AlignedVec, ImageError>
where
    T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
{
    rkyv::to_bytes::<rkyv::rancor::Error>(value).map_err(|error| ImageError::Serialize { reason: error.to_string() })
}
