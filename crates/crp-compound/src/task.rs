//! The task's identity and context: comm, working directory, umask,
//! personality, CPU affinity, and whether it was stopped.

use crp_ptrace::{EngineError, Tracee, TraceeExt};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

use crate::error::CompoundError;
use crate::valid::{Invalid, check_path};

/// Longest comm accepted: `TASK_COMM_LEN` is 16 today (15 bytes and a NUL);
/// some room is left for kernels that widen it.
const MAX_COMM_BYTES: usize = 63;

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TaskIdentity {
    pub comm: String,
    pub cwd: String,
    pub umask: u32,
    pub personality: u64,
    /// Stopped by a signal (SIGSTOP, SIGTSTP...) when it was dumped: it
    /// comes back stopped.
    pub stopped: bool,
    /// CPUs the task may run on.
    pub cpu_affinity: Vec<u32>,
}

impl TaskIdentity {
    /// `stopped` is whether the process was in a group stop before crp
    /// froze it (afterwards /proc shows crp's own tracing stop).
    pub fn capture(pid: i32, stopped: bool) -> Result<Self, CompoundError> {
        let read = |name: &str| {
            let path = format!("/proc/{pid}/{name}");
            std::fs::read_to_string(&path).map_err(CompoundError::io("read", path))
        };
        let malformed = |what: &str, value: &str| CompoundError::Malformed {
            path: format!("/proc/{pid}/{what}").into(),
            reason: format!("unexpected value {value:?}"),
        };
        let cwd_link = format!("/proc/{pid}/cwd");
        let cwd = std::fs::read_link(&cwd_link)
            .map_err(CompoundError::io("read link", &cwd_link))?
            .to_string_lossy()
            .into_owned();
        let umask_text = crp_ptrace::procfs::status_field(pid, "Umask")
            .map_err(CompoundError::io("read", format!("/proc/{pid}/status")))?
            .unwrap_or_default();
        let personality_text = read("personality")?;
        Ok(Self {
            comm: read("comm")?.trim_end_matches('\n').to_owned(),
            cwd,
            umask: u32::from_str_radix(&umask_text, 8).map_err(|_| malformed("status", &umask_text))?,
            personality: u64::from_str_radix(personality_text.trim(), 16)
                .map_err(|_| malformed("personality", &personality_text))?,
            stopped,
            cpu_affinity: cpu_affinity(pid)?,
        })
    }

    /// Sets the CPU affinity of `pid` (from outside: crp's own permission
    /// suffices). CPUs this machine lacks are dropped; when none is left the
    /// process may run anywhere crp may.
    pub fn restore_affinity(&self, pid: i32) -> Result<(), CompoundError> {
        let pid = Pid::from_raw(pid);
        let ptrace_error = |operation| move |errno| CompoundError::Ptrace { operation, pid: pid.as_raw(), errno };
        let allowed = sched_getaffinity(Pid::from_raw(0)).map_err(ptrace_error("sched_getaffinity"))?;
        let mut wanted = CpuSet::new();
        let mut any = false;
        for cpu in &self.cpu_affinity {
            let index = usize::try_from(*cpu).unwrap_or(usize::MAX);
            if allowed.is_set(index).unwrap_or(false) {
                any |= wanted.set(index).is_ok();
            }
        }
        sched_setaffinity(pid, if any { &wanted } else { &allowed }).map_err(ptrace_error("sched_setaffinity"))
    }

    /// Refuses what the restore would set wrongly or not at all: a comm
    /// longer than the kernel keeps or with a NUL inside, a cwd the kernel
    /// would misread, a personality wider than the syscall's `unsigned int`.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.comm.len() > MAX_COMM_BYTES || self.comm.contains('\0') {
            return Err(Invalid::new("comm", format!("{:.40?} is not a task name", self.comm)));
        }
        check_path("cwd", &self.cwd)?;
        if u32::try_from(self.personality).is_err() {
            return Err(Invalid::new("personality", format!("{:#x} does not fit in 32 bits", self.personality)));
        }
        Ok(())
    }

    /// Sets comm, cwd, umask and personality in the process being restored.
    pub fn restore(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        let mut scratch = tracee.scratch();
        let comm = scratch.push_c_string(self.comm.as_bytes());
        let cwd = scratch.push_c_string(self.cwd.as_bytes());
        scratch.commit(tracee)?;
        tracee.syscall("prctl(PR_SET_NAME)", libc::SYS_prctl, [libc::PR_SET_NAME as u64, comm, 0, 0, 0, 0])?;
        tracee.syscall("chdir", libc::SYS_chdir, [cwd, 0, 0, 0, 0, 0])?;
        tracee.syscall("umask", libc::SYS_umask, [u64::from(self.umask), 0, 0, 0, 0, 0])?;
        tracee.syscall("personality", libc::SYS_personality, [self.personality, 0, 0, 0, 0, 0])?;
        Ok(())
    }
}

/// The CPUs `pid` may run on.
fn cpu_affinity(pid: i32) -> Result<Vec<u32>, CompoundError> {
    let set = sched_getaffinity(Pid::from_raw(pid)).map_err(|errno| CompoundError::Ptrace {
        operation: "sched_getaffinity",
        pid,
        errno,
    })?;
    Ok((0..CpuSet::count())
        .filter(|cpu| set.is_set(*cpu).unwrap_or(false))
        .filter_map(|cpu| u32::try_from(cpu).ok())
        .collect())
}
