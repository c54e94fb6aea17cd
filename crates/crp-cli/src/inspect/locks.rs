//! The inspect summary of the file locks an image holds, and its text
//! section: each is taken again at restore through its descriptor.

use std::fmt::Write;

use crp_locks::LockKind;
use serde::Serialize;

use crate::model::ProcessImage;

#[derive(Debug, Serialize)]
pub struct FileLockSummary {
    pub fd: i32,
    pub path: String,
    /// `posix`, `ofd`, `flock` or `lease`.
    pub kind: &'static str,
    /// `read` or `write`.
    pub mode: &'static str,
    pub start: u64,
    /// The last byte locked; null to the end of the file.
    pub end: Option<u64>,
    /// "POSIX write lock, bytes 10-14".
    pub description: String,
}

pub fn file_locks(image: &ProcessImage) -> Vec<FileLockSummary> {
    image
        .file_locks
        .locks
        .iter()
        .map(|lock| FileLockSummary {
            fd: lock.fd,
            path: lock.path.clone(),
            kind: match lock.kind {
                LockKind::Posix => "posix",
                LockKind::OpenFileDescription => "ofd",
                LockKind::Flock => "flock",
                LockKind::Lease => "lease",
            },
            mode: if lock.write { "write" } else { "read" },
            start: lock.start,
            end: lock.end,
            description: format!("{}, {}", lock.describe(), lock.range()),
        })
        .collect()
}

pub fn render(out: &mut String, locks: &[FileLockSummary]) {
    if locks.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nfile locks ({}; taken again at restore, held by nobody in between)", locks.len());
    for lock in locks {
        let _ = writeln!(out, "  fd {:<3} {} on {}", lock.fd, lock.description, lock.path);
    }
}
