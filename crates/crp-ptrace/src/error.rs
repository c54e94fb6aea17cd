//! Engine failures, each naming the operation and the process.

use nix::errno::Errno;

/// State crp cannot checkpoint yet: what it is and where. Every category
/// crate refuses with this one type, so crp reports every refusal alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} ({location}) is not supported yet")]
pub struct Unsupported {
    pub what: String,
    pub location: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{operation} on pid {pid}: {errno}")]
    Ptrace { operation: &'static str, pid: i32, errno: Errno },
    #[error("pid {pid} stopped unexpectedly during {operation}: {status}")]
    UnexpectedStop { operation: &'static str, pid: i32, status: String },
    #[error("injected {syscall} with ({}) in pid {pid} failed: {errno}", Arguments(args))]
    Syscall { syscall: &'static str, args: Vec<u64>, pid: i32, errno: Errno },
    #[error("{operation} of {length:#x} bytes at {address:#x} in pid {pid}: {errno}")]
    Memory { operation: &'static str, pid: i32, address: u64, length: usize, errno: Errno },
    #[error("scratch area of pid {pid} is full: {needed} bytes needed, {available} left")]
    ScratchFull { pid: i32, needed: usize, available: usize },
    #[error("cannot {operation} descriptor {fd} of pid {pid}: {errno}")]
    Descriptor { operation: &'static str, pid: i32, fd: u64, errno: Errno },
    #[error("no syscall instruction found to inject through in pid {pid}")]
    NoSyscallInstruction { pid: i32 },
    #[error("pid {pid} is not parked: crp injects syscalls only into a parked process")]
    NotParked { pid: i32 },
    #[error("cannot build the signal frame that keeps the process safe: {reason}")]
    SignalFrame { reason: String },
    #[error("cannot write {path}: {source}")]
    ProcFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the restore child: {reason}")]
    Spawn { reason: String },
    #[error(transparent)]
    Proc(#[from] crate::procfs::ProcError),
}

impl EngineError {
    pub(crate) fn ptrace(operation: &'static str, pid: i32) -> impl FnOnce(Errno) -> Self {
        move |errno| Self::Ptrace { operation, pid, errno }
    }
}

/// Syscall arguments as crp passed them: small values in decimal, addresses
/// and flags in hex.
struct Arguments<'a>(&'a [u64]);

impl std::fmt::Display for Arguments<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, value) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str(", ")?;
            }
            match value.cast_signed() {
                small @ -4096..=4096 => write!(formatter, "{small}")?,
                _ => write!(formatter, "{value:#x}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_injected_syscall_names_its_arguments() {
        let error = EngineError::Syscall {
            syscall: "mmap",
            args: vec![0x7f00_0000_0000, 0x1000, 3, 0x22, u64::MAX, 0],
            pid: 42,
            errno: Errno::EEXIST,
        };
        assert_eq!(
            error.to_string(),
            "injected mmap with (0x7f0000000000, 4096, 3, 34, -1, 0) in pid 42 failed: EEXIST: File exists"
        );
    }
}
