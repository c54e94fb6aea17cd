//! Freezing every thread of a process: each is seized and stopped like a
//! one-thread process ([`Frozen`]), and the list of threads is read again
//! until it holds no thread crp has not stopped, so that a thread created
//! while crp was seizing the others is caught too. Only then is anything
//! read: no thread runs on while another is being looked at.
//!
//! A thread that exits while crp seizes the others is left out (it is not
//! part of the process any more); the leader must stay.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::EngineError;
use crate::freeze::{Checkpoint, Frozen};
use crate::sys;

/// Rounds of re-reading the thread list before crp gives up on a process
/// that keeps making threads faster than crp stops them.
const MAX_ROUNDS: usize = 1000;

/// Every thread of a process, frozen; the leader first.
#[derive(Debug)]
pub struct FrozenProcess {
    leader: Frozen,
    /// The other threads, in the order the kernel lists them.
    threads: Vec<Frozen>,
}

impl FrozenProcess {
    /// Seizes and stops every thread of the process `pid` (its leader).
    pub fn seize(pid: i32) -> Result<Self, EngineError> {
        let leader = Frozen::seize(pid)?;
        let mut process = Self { leader, threads: Vec::new() };
        for _ in 0..MAX_ROUNDS {
            let listed = thread_ids(pid).map_err(EngineError::ptrace("reading /proc/PID/task", pid))?;
            let new: Vec<i32> = listed.into_iter().filter(|tid| !process.holds(*tid)).collect();
            if new.is_empty() {
                return Ok(process);
            }
            for tid in new {
                match Frozen::seize(tid) {
                    Ok(thread) => process.threads.push(thread),
                    // It exited meanwhile: not part of the process now.
                    Err(_) if !thread_exists(pid, tid) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Err(EngineError::UnexpectedStop {
            operation: "freezing every thread",
            pid,
            status: format!("the process still made new threads after {MAX_ROUNDS} rounds"),
        })
    }

    fn holds(&self, tid: i32) -> bool {
        self.leader.pid().as_raw() == tid || self.threads.iter().any(|thread| thread.pid().as_raw() == tid)
    }

    pub fn pid(&self) -> Pid {
        self.leader.pid()
    }

    pub fn leader(&mut self) -> &mut Frozen {
        &mut self.leader
    }

    /// The leader and the other threads apart, to use both at once.
    pub fn split(&mut self) -> (&mut Frozen, &mut [Frozen]) {
        (&mut self.leader, &mut self.threads)
    }

    /// Every thread, the leader first.
    pub fn every_thread(&mut self) -> impl Iterator<Item = &mut Frozen> {
        std::iter::once(&mut self.leader).chain(self.threads.iter_mut())
    }

    /// The threads other than the leader.
    pub fn threads(&self) -> &[Frozen] {
        &self.threads
    }

    /// Calls `checkpoint` at each named moment of the leader (a testing hook).
    pub fn set_checkpoint(&mut self, checkpoint: Checkpoint) {
        self.leader.set_checkpoint(checkpoint);
    }

    /// Lets every thread carry on exactly where it was, the leader last.
    pub fn release(self) -> Result<(), EngineError> {
        let Self { leader, threads } = self;
        // Every thread is released, whatever failed first.
        let mut released = Ok(());
        for thread in threads {
            let result = thread.release();
            released = released.and(result);
        }
        leader.release().and(released)
    }

    /// Kills the process (after the image is durable) and collects the
    /// tracer's copy of each thread's end, so that the leader's parent
    /// learns of its end at once.
    pub fn kill(self) -> Result<(), EngineError> {
        let Self { leader, threads } = self;
        let pid = leader.pid();
        let tids: Vec<Pid> = threads.iter().map(Frozen::pid).collect();
        // Not released by their drops: the process is about to die.
        for thread in threads {
            thread.forget();
        }
        kill(pid, Signal::SIGKILL).map_err(EngineError::ptrace("kill", pid.as_raw()))?;
        for tid in tids {
            let _ = sys::wait_for(tid);
        }
        leader.kill()
    }
}

/// The ids of the threads of `pid`, from /proc/PID/task.
pub fn thread_ids(pid: i32) -> Result<Vec<i32>, Errno> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|error| Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)))?;
    let mut tids: Vec<i32> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.parse().ok()))
        .collect();
    tids.sort_unstable_by_key(|tid| (*tid != pid, *tid));
    Ok(tids)
}

/// Whether `tid` is still a live thread of `pid`.
fn thread_exists(pid: i32, tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X'])))
}
