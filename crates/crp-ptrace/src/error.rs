//! Engine failures, each naming the operation and the process.

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{operation} on pid {pid}: {errno}")]
    Ptrace { operation: &'static str, pid: i32, errno: Errno },
    #[error("pid {pid} stopped unexpectedly during {operation}: {status}")]
    UnexpectedStop { operation: &'static str, pid: i32, status: String },
    #[error("injected {syscall} in pid {pid} failed: {errno}")]
    Syscall { syscall: &'static str, pid: i32, errno: Errno },
    #[error("{operation} of {length:#x} bytes at {address:#x} in pid {pid}: {errno}")]
    Memory { operation: &'static str, pid: i32, address: u64, length: usize, errno: Errno },
    #[error("scratch area of pid {pid} is full: {needed} bytes needed, {available} left")]
    ScratchFull { pid: i32, needed: usize, available: usize },
    #[error("no syscall instruction found to inject through in pid {pid}")]
    NoSyscallInstruction { pid: i32 },
    #[error("pid {pid} is not parked: crp injects syscalls only into a parked process")]
    NotParked { pid: i32 },
    #[error("cannot build the signal frame that keeps the process safe: {reason}")]
    SignalFrame { reason: String },
    #[error("cannot create the restore child: {reason}")]
    Spawn { reason: String },
}

impl EngineError {
    pub(crate) fn ptrace(operation: &'static str, pid: i32) -> impl FnOnce(Errno) -> Self {
        move |errno| Self::Ptrace { operation, pid, errno }
    }
}
