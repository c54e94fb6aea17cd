//! The `crp` command as a library: argument plans, and the dump, restore,
//! inspect and check operations that the binary and the tests drive.

mod assemble;
pub mod backend;
pub mod cancel;
pub mod check;
mod copy_on_write;
pub mod dump;
pub mod error;
pub mod faults;
pub mod incremental;
pub mod inspect;
pub mod kmod;
pub mod logging;
pub mod model;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod restore;
mod socket_hold;
pub mod userspace;

pub use error::CrpError;
