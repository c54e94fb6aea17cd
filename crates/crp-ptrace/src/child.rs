//! The child a restore turns into the checkpointed process. Until it is
//! released, dropping the guard kills and reaps it: a failed restore leaves
//! nothing behind.

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::Checkpoint;
use crate::error::EngineError;
use crate::sys;

#[derive(Debug)]
pub struct ChildGuard {
    pid: Pid,
    armed: bool,
}

/// Creates a traced child stopped by SIGSTOP, with PID `pid` when given
/// (fails with `Errno::EEXIST` when that PID is taken). `checkpoint` is
/// called as "cloned" right after the child exists (a testing hook).
pub fn spawn_stopped_child(pid: Option<i32>, checkpoint: Option<Checkpoint>) -> Result<ChildGuard, EngineError> {
    let child = sys::fork_traced_stopped(pid).map_err(|errno| EngineError::Spawn {
        reason: match (pid, errno) {
            (Some(wanted), Errno::EEXIST) => format!("pid {wanted} is in use (EEXIST)"),
            (_, errno) => format!("clone3: {errno}"),
        },
    })?;
    let guard = ChildGuard { pid: child, armed: true };
    if let Some(checkpoint) = checkpoint {
        checkpoint("cloned", 0);
    }
    let raw = child.as_raw();
    match sys::wait_for(child).map_err(EngineError::ptrace("waitpid", raw))? {
        WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
        other => {
            return Err(EngineError::UnexpectedStop {
                operation: "starting the restore child",
                pid: raw,
                status: format!("{other:?}"),
            });
        }
    }
    // If crp dies, the half-built child dies with it.
    ptrace::setoptions(child, ptrace::Options::PTRACE_O_EXITKILL)
        .map_err(EngineError::ptrace("PTRACE_SETOPTIONS", raw))?;
    Ok(guard)
}

impl ChildGuard {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The child is complete: it survives the guard.
    pub fn disarm(mut self) -> Pid {
        self.armed = false;
        self.pid
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.armed {
            // Its other threads, traced by crp too, are reaped first: a
            // leader is not reported while threads of its group remain.
            let threads = crate::thread_ids(self.pid.as_raw()).unwrap_or_default();
            let _ = kill(self.pid, Signal::SIGKILL);
            for tid in threads.into_iter().filter(|tid| *tid != self.pid.as_raw()) {
                let _ = sys::wait_for(Pid::from_raw(tid));
            }
            let _ = sys::wait_for(self.pid);
        }
    }
}
