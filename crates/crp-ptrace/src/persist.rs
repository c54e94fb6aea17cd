//! One trait for every kind of persisted process state, in the shape of
//! Firecracker's `Persist`: a kind is captured from a [`Capture`] context
//! (the frozen process and what crp knew about it before the freeze) and
//! re-established into a [`Restore`] context (the process being rebuilt).
//! Each kind lives in its category crate; crp-cli's plans (`plan.rs`) run
//! the kinds in one ordered table per direction.

use crate::error::EngineError;
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

/// What a restore may use: the process being rebuilt, the descriptors it
/// inherits from crp for the streams and descriptors the user chose, and
/// the image's page contents.
#[derive(Debug)]
pub struct Restore<'a> {
    pub tracee: &'a mut dyn Tracee,
    pub streams: &'a Streams,
    pub pages: &'a dyn Pages,
}

/// No stream chosen: the image's terminals and pipes on fds 0-2 become crp
/// restore's own.
const AS_DUMPED: &Streams = &Streams { chosen: Vec::new() };

impl<'a> Restore<'a> {
    /// A context with crp restore's own standard streams and no pages.
    pub fn new(tracee: &'a mut dyn Tracee) -> Self {
        Self { tracee, streams: AS_DUMPED, pages: &NoPages }
    }
}

/// The page contents a restore writes into the memory it mapped: the
/// image's page runs, kept apart from the metadata (they are streamed at
/// dump and written straight from the mapped image file at restore).
pub trait Pages {
    /// Every run, `(address of its first page, page count)`, in address
    /// order.
    fn runs(&self) -> Vec<(u64, u64)>;

    /// Writes into `tracee` the runs whose first address `wanted` accepts.
    fn write(&self, tracee: &mut dyn Tracee, wanted: &dyn Fn(u64) -> bool) -> Result<(), EngineError>;
}

/// No page contents (a restore of what needs none, and tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPages;

impl Pages for NoPages {
    fn runs(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }

    fn write(&self, _tracee: &mut dyn Tracee, _wanted: &dyn Fn(u64) -> bool) -> Result<(), EngineError> {
        Ok(())
    }
}

impl std::fmt::Debug for dyn Pages + '_ {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Pages").field("runs", &self.runs().len()).finish()
    }
}

/// Descriptors the user chose for the restored process (`--stdout FILE`,
/// `--fd 5=inherit`): each replaces whatever the image recorded for its
/// number. A standard stream the image recorded as the outside world (a
/// terminal, or a pipe whose other end was outside the process) and that
/// the user did not choose becomes crp restore's own stream of that number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Streams {
    pub chosen: Vec<Handed>,
}

/// The restored process's descriptor `fd` becomes crp's child's descriptor
/// `source` (inherited from `crp restore`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handed {
    pub fd: i32,
    pub source: i32,
}

impl Streams {
    /// The child's descriptor the user chose for `fd`, if any.
    pub fn chosen_for(&self, fd: i32) -> Option<i32> {
        self.chosen.iter().find(|handed| handed.fd == fd).map(|handed| handed.source)
    }

    /// Where the standard stream `stream` the image recorded as the outside
    /// world comes from: the user's choice, or crp restore's own.
    pub fn source_of_stream(&self, stream: u8) -> i32 {
        self.chosen_for(i32::from(stream)).unwrap_or(i32::from(stream))
    }

    /// Every descriptor of crp's child the restore may hand over.
    pub fn sources(&self) -> Vec<i32> {
        let mut sources: Vec<i32> = (0..3).chain(self.chosen.iter().map(|handed| handed.source)).collect();
        sources.sort_unstable();
        sources.dedup();
        sources
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
