//! Compound structures, deep-copied: the VMAs with their page contents
//! ([`vma`], [`pagemap`]), the mm fields ([`mm`]), the descriptor table
//! ([`files`]), signal dispositions ([`signals`]), the task's context
//! (cwd, umask: [`task`]), per-thread attributes (comm, affinity,
//! scheduling...: [`thread_attrs`]) and process attributes (THP disable,
//! membarrier, oom_score_adj...: [`process_attrs`]); [`namespaces`] refuses
//! a process outside crp's own, [`defaults`] one whose attributes crp does
//! not restore hold other values than their defaults. Each module captures its state from a
//! stopped process and re-establishes it in the process being restored.

pub mod audit;
pub mod creds;
pub mod defaults;
mod error;
pub mod files;
pub mod mm;
pub mod namespaces;
pub mod pagemap;
pub mod pending_signals;
pub mod posix_timers;
pub mod process_attrs;
pub mod rlimits;
pub mod session;
pub mod signals;
pub mod task;
pub mod thread_attrs;
pub mod timers;
pub mod tracking;
pub mod valid;
pub mod vma;

pub use error::{CompoundError, Unsupported};
pub use valid::Invalid;
