//! The userspace engine: everything crp does to another process goes through
//! here. It seizes and freezes a process ([`Frozen`]), runs syscalls inside a
//! stopped tracee ([`Injector`], behind the [`Tracee`] trait the category
//! crates use), moves memory in and out, and creates the child a restore
//! turns into the checkpointed process ([`spawn_stopped_child`]).

mod child;
mod error;
pub mod fake;
mod freeze;
mod group;
mod inject;
mod persist;
pub mod procfs;
pub mod sigframe;
pub mod sys;
mod syscall_site;
mod tracee;
pub mod userfault;

pub use child::{ChildGuard, spawn_stopped_child};
pub use error::{EngineError, Unsupported};
pub use freeze::{Checkpoint, Frozen};
pub use group::{FrozenProcess, thread_ids};
pub use inject::Injector;
pub use nix::libc::user_regs_struct as Registers;
pub use persist::{Capture, Handed, NoPages, Pages, Persist, Restore, Streams};
pub use syscall_site::{SYSCALL_INSTRUCTION, syscall_before, syscall_in};
pub use tracee::{ScratchWriter, Tracee, TraceeExt, arg};

/// The end of the user half of the address space (`TASK_SIZE` with 4-level
/// page tables).
pub const USER_SPACE_END: u64 = 0x7fff_ffff_f000;
