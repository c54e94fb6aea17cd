//! The parent an incremental dump names: read by its header and metadata
//! only (their checksums checked; its pages are the restore's to check),
//! before the process is touched.

use std::path::{Path, PathBuf};

use super::{IncrementalError, ParentLink, TrackingRecord};
use crate::error::CrpError;
use crate::model::ArchivedProcessImage;

/// The parent image of an incremental dump.
#[derive(Debug, Clone)]
pub struct Parent {
    pub path: PathBuf,
    pub link: ParentLink,
    /// The tracking its dump left armed.
    pub tracking: Option<TrackingRecord>,
}

impl Parent {
    /// Reads the image at `path`, which must be of process `pid`.
    pub fn open(path: &Path, pid: i32) -> Result<Self, CrpError> {
        let unreadable = |source| IncrementalError::ParentUnreadable { path: path.to_owned(), source };
        let identity = crp_image::read_identity(path).map_err(unreadable)?;
        let archived = identity.metadata::<ArchivedProcessImage>().map_err(unreadable)?;
        let found = archived.pid.to_native();
        if found != pid {
            return Err(IncrementalError::ParentOfAnother { path: path.to_owned(), pid, found }.into());
        }
        let tracking = archived
            .chain
            .tracking
            .as_ref()
            .map(|tracking| TrackingRecord { fd: tracking.fd.to_native(), inode: tracking.inode.to_native() });
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let link = ParentLink {
            header_checksum: identity.header.header_checksum,
            file_length: identity.header.file_length,
            path: absolute.to_string_lossy().into_owned(),
        };
        Ok(Self { path: path.to_owned(), link, tracking })
    }

    /// Checks that `pid` still holds the very tracking the parent's dump
    /// armed: then what PAGEMAP_SCAN reports written is what changed since
    /// the parent.
    pub fn check_tracking(&self, pid: i32) -> Result<(), CrpError> {
        let found = crp_compound::tracking::find(pid)?;
        let armed = self
            .tracking
            .filter(|armed| found.iter().any(|tracking| tracking.fd == armed.fd && tracking.inode == armed.inode));
        if armed.is_some() {
            return Ok(());
        }
        let found = match (found.as_slice(), self.tracking) {
            (_, None) => " (it was not dumped with --track-changes)".to_owned(),
            ([], Some(_)) => " (the process holds no tracking: it was disarmed or closed)".to_owned(),
            (found, Some(armed)) => format!(
                " (it armed fd {} inode {}; the process holds {}: a later dump re-armed it)",
                armed.fd,
                armed.inode,
                found.iter().map(|t| format!("fd {} inode {}", t.fd, t.inode)).collect::<Vec<_>>().join(", ")
            ),
        };
        Err(IncrementalError::NotTracked { pid, path: self.path.clone(), found }.into())
    }
}
