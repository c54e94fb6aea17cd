//! The userspace back end: ptrace, /proc and injected syscalls, on any
//! kernel with CONFIG_CHECKPOINT_RESTORE and no module.

mod dump;
mod restore;

pub use dump::Dump;
pub use restore::Restore;
