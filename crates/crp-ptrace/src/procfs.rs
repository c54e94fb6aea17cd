//! Parsers for the /proc files several categories read: smaps (maps with
//! VmFlags and page counts), `key: value` files (status, fdinfo) and stat.
//! They take the file's path and text, so they can be tested on fixed
//! samples, and have thin readers for a live pid.
//!
//! Written by hand rather than with the `procfs` crate so that every value
//! crp relies on fails closed: a line or field that is missing or does not
//! parse is an error naming the file and the line or field ([`ProcError`]),
//! never a default. The few fields a kernel may lack for a good reason are
//! asked for with [`Fields::optional`], each caller saying why.

mod error;
mod fields;
mod smaps;
mod snapshot;
mod stat;

pub use error::ProcError;
pub use fields::Fields;
pub use smaps::{MapsEntry, MapsFormat, is_special_mapping, maps, parse_smaps, smaps};
pub use snapshot::{DescriptorLocks, Snapshot, Texts};
pub use stat::Stat;

/// Reads a /proc file whole, naming it on failure.
pub(crate) fn read_text(path: &std::path::Path) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read { path: path.to_owned(), source })
}
