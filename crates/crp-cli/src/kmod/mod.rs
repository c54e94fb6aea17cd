//! The kmod back end on the user-space side: the device, the dump through
//! it ([`Dump`]: the module's records translated by each kind's own
//! `from_abi`) and the restore driven through it ([`Restore`]).

pub mod capture;
pub mod device;
pub mod memory;
pub mod restore;

pub use capture::Dump;
pub use device::{DEVICE_PATH, Device, KmodError, TaskDump};
pub use restore::Restore;
