//! One trait for every kind of persisted process state, in the shape of
//! Firecracker's `Persist`: a kind is captured from a [`Capture`] context
//! (the frozen process and what crp knew about it before the freeze) and
//! re-established into a [`Restore`] context (the process being rebuilt).
//! Each kind lives in its category crate; crp-cli's plans (`plan.rs`) run
//! the kinds in one ordered table per direction.

use crate::tracee::Tracee;

/// What a capture may use: the frozen (parked) process, which it reaches
/// only through [`Tracee`], and facts read before the freeze.
#[derive(Debug)]
pub struct Capture<'a> {
    pub tracee: &'a mut dyn Tracee,
    /// What /proc said about it, read once after the freeze.
    pub proc: &'a crate::procfs::Snapshot,
    /// The process was in a group stop (`State: T`) before crp froze it.
    pub stopped_before_freeze: bool,
}

/// What a restore may use: the process being rebuilt, and the descriptors
/// it inherits from crp for its standard streams.
#[derive(Debug)]
pub struct Restore<'a> {
    pub tracee: &'a mut dyn Tracee,
    pub streams: Streams,
}

impl<'a> Restore<'a> {
    /// A context with crp restore's own standard streams.
    pub fn new(tracee: &'a mut dyn Tracee) -> Self {
        Self { tracee, streams: Streams::default() }
    }
}

/// Where the restored process's standard streams come from: for each of
/// fds 0-2, the descriptor of crp's child that is handed over when the
/// image says "the outside world" (crp restore's own stream by default),
/// and whether the user chose it explicitly, in which case it replaces
/// whatever the image recorded for that fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streams {
    pub sources: [i32; 3],
    pub chosen: [bool; 3],
}

impl Default for Streams {
    /// crp restore's own stdin, stdout and stderr, for the fds the image
    /// recorded as a terminal or a pipe.
    fn default() -> Self {
        Self { sources: [0, 1, 2], chosen: [false; 3] }
    }
}

/// A kind of process state that is captured at dump and re-established at
/// restore.
pub trait Persist: Sized {
    /// The kind's name in messages and plans ("signal dispositions").
    const KIND: &'static str;
    type Error: std::error::Error + Send + Sync + 'static;

    fn capture(context: &mut Capture<'_>) -> Result<Self, Self::Error>;

    fn restore(&self, context: &mut Restore<'_>) -> Result<(), Self::Error>;
}

impl std::fmt::Debug for dyn Tracee + '_ {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Tracee").field("pid", &self.pid()).finish_non_exhaustive()
    }
}
