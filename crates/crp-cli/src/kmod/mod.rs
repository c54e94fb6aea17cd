//! The kmod back end on the user-space side: the device, translation of its
//! records into the image model, and the restore driven through it.

pub mod capture;
pub mod device;
pub mod restore;

pub use device::{DEVICE_PATH, Device, KmodError, TaskDump};
