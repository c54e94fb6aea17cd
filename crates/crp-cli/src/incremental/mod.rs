//! Incremental dumps: `crp dump --track-changes --leave-running` leaves
//! crp's change tracking armed in the process ([`tracking`]); the next
//! `crp dump --parent PREV.crp` stores only the pages written since PREV
//! and names PREV for the rest ([`pages`]); the restore follows the chain
//! of parents, checking each one's identity (`restore::chain`).
//!
//! What an image says about its place in a chain is one [`ChainRecord`] in
//! its metadata.

pub mod pages;
pub mod parent;
pub mod tracking;

use std::path::PathBuf;

/// What `crp dump` was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// --track-changes: leave change tracking armed in the process.
    pub track_changes: bool,
    /// --parent: store only what changed since this image.
    pub parent: Option<PathBuf>,
}

impl Options {
    /// Whether the dump arms tracking (an incremental dump re-arms it).
    pub fn arms_tracking(&self) -> bool {
        self.track_changes || self.parent.is_some()
    }
}

/// An image's place in a chain of incremental dumps.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ChainRecord {
    /// The image whose pages this one's `inherited` ranges hold.
    pub parent: Option<ParentLink>,
    /// Page ranges (address order) whose contents are the parent's at the
    /// same addresses (zero where the parent's chain holds no page).
    pub inherited: Vec<PageRange>,
    /// The change tracking this dump left armed in the process.
    pub tracking: Option<TrackingRecord>,
}

/// Which image a parent is.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ParentLink {
    /// The parent's header checksum: it covers every section's checksum,
    /// so no byte of the parent can change without it changing.
    pub header_checksum: u64,
    pub file_length: u64,
    /// Where it was (absolute), a hint the restore looks at first.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PageRange {
    pub vaddr: u64,
    pub page_count: u64,
}

/// crp's tracking descriptor as this dump left it in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TrackingRecord {
    pub fd: i32,
    /// The userfaultfd's inode number: a new one at every arming.
    pub inode: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IncrementalError {
    #[error("--track-changes and --parent need --leave-running: without it the process is killed after the dump")]
    NeedsLeaveRunning,
    #[error("--track-changes and --parent work with the userspace back end only")]
    NeedsUserspace,
    #[error("parent image {path}: {source}")]
    ParentUnreadable {
        path: PathBuf,
        #[source]
        source: crp_image::ImageError,
    },
    #[error("parent image {path} is of pid {found}, not of pid {pid}")]
    ParentOfAnother { path: PathBuf, pid: i32, found: i32 },
    #[error(
        "pid {pid} has no change tracking armed by the dump of {path}{found}: dump it in full with --track-changes \
         first (crp stores only written pages where its own tracking saw every write since the parent)"
    )]
    NotTracked { pid: i32, path: PathBuf, found: String },
    #[error("parent image {path} is missing: {source} (the image {child} needs it)")]
    ParentMissing {
        path: PathBuf,
        child: PathBuf,
        #[source]
        source: crp_image::ImageError,
    },
    #[error(
        "parent image {path} is not the one {child} was dumped against: its header checksum is {found:#018x}, the \
         chain expects {expected:#018x} (it was changed or replaced)"
    )]
    ParentChanged { path: PathBuf, child: PathBuf, found: u64, expected: u64 },
    #[error("the chain of parent images of {child} is longer than {max} links (a loop?)")]
    ChainTooLong { child: PathBuf, max: usize },
    #[error("image {child}: inherited pages {vaddr:#x} (+{page_count} pages) {problem}")]
    BadInherited { child: PathBuf, vaddr: u64, page_count: u64, problem: &'static str },
    #[error("an incremental image (one with a parent) is restored by the userspace back end only")]
    KmodRestore,
    #[error("pid {pid} has no change tracking of crp's to disarm")]
    NothingToUntrack { pid: i32 },
}

impl IncrementalError {
    /// The documented exit code (README, "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::ParentUnreadable { .. }
            | Self::ParentMissing { .. }
            | Self::ParentChanged { .. }
            | Self::ChainTooLong { .. }
            | Self::BadInherited { .. }
            | Self::ParentOfAnother { .. } => 4,
            Self::NotTracked { .. } | Self::KmodRestore => 3,
            Self::NeedsLeaveRunning | Self::NeedsUserspace => 2,
            Self::NothingToUntrack { .. } => 1,
        }
    }
}
