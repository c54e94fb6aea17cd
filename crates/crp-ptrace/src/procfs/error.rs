//! What can go wrong reading /proc: each error names the file, and the line
//! or field that did not parse.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {path} line {line} `{text}`: {reason}")]
    Line { path: PathBuf, line: usize, text: String, reason: String },
    #[error("{path} has no field {field}")]
    MissingField { path: PathBuf, field: String },
    #[error("cannot parse {path} field {field} `{value}`: {reason}")]
    Field { path: PathBuf, field: String, value: String, reason: String },
}

impl ProcError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Read { path, .. }
            | Self::Line { path, .. }
            | Self::MissingField { path, .. }
            | Self::Field { path, .. } => path,
        }
    }

    /// The file could not be read for lack of permission (EACCES/EPERM):
    /// the process exists but the reader may not inspect it.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::Read { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
    }

    /// The file is gone: the process (or the descriptor) no longer exists.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::Read { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ESRCH)
        )
    }
}

/// For callers that carry I/O errors: the kind of a read failure is kept
/// (permission, not found), a parse failure is `InvalidData`; the message
/// is the [`ProcError`]'s.
impl From<ProcError> for std::io::Error {
    fn from(error: ProcError) -> Self {
        let kind = match &error {
            ProcError::Read { source, .. } => source.kind(),
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, error)
    }
}
