//! Failures of compound-state capture and re-establishment.

use std::path::PathBuf;

pub use crp_ptrace::Unsupported;

#[derive(Debug, thiserror::Error)]
pub enum CompoundError {
    #[error(transparent)]
    Engine(#[from] crp_ptrace::EngineError),
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// A /proc file that cannot be read, or a line or field in it that is
    /// missing or does not parse.
    #[error(transparent)]
    Proc(#[from] crp_ptrace::procfs::ProcError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{operation} on pid {pid}: {errno}")]
    Ptrace { operation: &'static str, pid: i32, errno: nix::errno::Errno },
    #[error(
        "file {path} changed since the dump ({what}); crp restore --allow-changed-files accepts it where that is safe"
    )]
    FileChanged { path: String, what: String },
    /// A mapped file shrank below the end of a mapping of it: no flag
    /// accepts it.
    #[error(
        "file {path} changed since the dump ({what}), below the end of a mapping of it: the restored process \
         would get SIGBUS there, so even --allow-changed-files does not accept it"
    )]
    FileShrunk { path: String, what: String },
    /// A socket's address is not free on this host.
    #[error("cannot bind {socket} to {address} again: {reason}")]
    AddressTaken { socket: String, address: String, reason: String },
    /// This kernel cannot make what the image holds.
    #[error("{what}: {reason}")]
    Incompatible { what: String, reason: String },
    #[error("POSIX timer {id} cannot be created with its id: {reason}")]
    TimerId { id: i32, reason: String },
}

impl CompoundError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { action, path, source }
    }
}
