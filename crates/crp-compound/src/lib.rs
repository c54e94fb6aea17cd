//! Compound structures, deep-copied: the VMAs with their page contents
//! ([`vma`], [`pagemap`]), the mm fields ([`mm`]), the descriptor table
//! ([`files`]), signal dispositions ([`signals`]) and the task's identity
//! (comm, cwd, umask: [`task`]). Each module captures its state from a
//! stopped process and re-establishes it in the process being restored.

pub mod creds;
mod error;
pub mod files;
pub mod mm;
pub mod pagemap;
pub mod rlimits;
pub mod signals;
pub mod task;
pub mod timers;
pub mod valid;
pub mod vma;

pub use error::{CompoundError, Unsupported};
pub use valid::Invalid;
