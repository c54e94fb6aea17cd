//! The task's identity and context: comm, working directory, umask,
//! personality, CPU affinity, and whether it was stopped.

use crp_ptrace::procfs::{Fields, ProcError, Snapshot};
use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt};
use nix::sched::{CpuSet, sched_getaffinity};
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
    /// Reads it from what /proc said (nothing is injected). `stopped` is
    /// whether the process was in a group stop before crp froze it
    /// (afterwards /proc shows crp's own tracing stop).
    pub fn from_proc(proc: &Snapshot, stopped: bool) -> Result<Self, CompoundError> {
        let pid = proc.pid;
        Ok(Self {
            comm: parse_comm(pid, &proc.comm)?,
            cwd: proc.cwd.clone(),
            umask: parse_umask(&proc.status)?,
            personality: parse_personality(pid, &proc.personality)?,
            stopped,
            cpu_affinity: parse_cpu_mask(&proc.status)?,
        })
    }

    /// Sets the CPU affinity (an injected sched_setaffinity). CPUs crp may
    /// not use are dropped; when none is left the process may run anywhere
    /// crp may.
    fn restore_affinity(&self, tracee: &mut dyn Tracee) -> Result<(), CompoundError> {
        let allowed = sched_getaffinity(Pid::from_raw(0)).map_err(|errno| CompoundError::Ptrace {
            operation: "sched_getaffinity",
            pid: std::process::id().cast_signed(),
            errno,
        })?;
        // is_set fails only for a CPU beyond CpuSet::count(): one crp may not use.
        let may_use = |cpu: usize| allowed.is_set(cpu).unwrap_or(false);
        let wanted: Vec<usize> = self
            .cpu_affinity
            .iter()
            // A CPU number this machine cannot even represent is one it lacks.
            .filter_map(|cpu| usize::try_from(*cpu).ok())
            .filter(|cpu| may_use(*cpu))
            .collect();
        let cpus: Vec<usize> =
            if wanted.is_empty() { (0..CpuSet::count()).filter(|cpu| may_use(*cpu)).collect() } else { wanted };
        let mut mask = vec![0u8; CpuSet::count().div_ceil(8)];
        for cpu in cpus {
            mask[cpu / 8] |= 1 << (cpu % 8);
        }
        let mut scratch = tracee.scratch();
        let address = scratch.push(&mask);
        scratch.commit(tracee)?;
        tracee.syscall("sched_setaffinity", libc::SYS_sched_setaffinity, [0, mask.len() as u64, address, 0, 0, 0])?;
        Ok(())
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
    fn restore_into(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
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

impl Persist for TaskIdentity {
    const KIND: &'static str = "comm, cwd, umask, personality and CPU affinity";
    type Error = CompoundError;

    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        Self::from_proc(context.proc, context.stopped_before_freeze)
    }

    /// The cwd is entered with the file-system credentials the process has
    /// at that moment: before its own credentials are restored.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        self.restore_into(context.tracee)?;
        self.restore_affinity(context.tracee)
    }
}

/// The CPUs of the `Cpus_allowed` mask in /proc/PID/status: hexadecimal,
/// in comma-separated 32-bit groups, the lowest CPUs last.
fn parse_cpu_mask(status: &Fields) -> Result<Vec<u32>, ProcError> {
    let text = status.field("Cpus_allowed")?;
    let digits: Vec<u32> = text
        .chars()
        .filter(|character| *character != ',')
        .map(|character| {
            character.to_digit(16).ok_or_else(|| status.malformed("Cpus_allowed", text, "not hexadecimal"))
        })
        .collect::<Result<_, _>>()?;
    Ok((0u32..)
        .zip(digits.iter().rev())
        .flat_map(|(nibble, digit)| (0..4).filter(move |bit| digit & (1 << bit) != 0).map(move |bit| nibble * 4 + bit))
        .collect())
}

fn malformed(pid: i32, file: &str, text: &str, reason: &str) -> CompoundError {
    CompoundError::Malformed { path: format!("/proc/{pid}/{file}").into(), reason: format!("{reason}: {text:?}") }
}

/// /proc/PID/comm: the name and one newline (a name may itself end in one).
fn parse_comm(pid: i32, text: &str) -> Result<String, CompoundError> {
    text.strip_suffix('\n').map(str::to_owned).ok_or_else(|| malformed(pid, "comm", text, "no final newline"))
}

/// /proc/PID/personality: one hexadecimal number.
fn parse_personality(pid: i32, text: &str) -> Result<u64, CompoundError> {
    // The final newline is not part of the number.
    let value = text.strip_suffix('\n').unwrap_or(text);
    u64::from_str_radix(value, 16).map_err(|_| malformed(pid, "personality", text, "not a hexadecimal number"))
}

/// The `Umask` field of a /proc/PID/status text.
fn parse_umask(status: &Fields) -> Result<u32, ProcError> {
    let text = status.field("Umask")?;
    let umask = status.octal("Umask")?;
    u32::try_from(umask)
        .ok()
        .filter(|umask| *umask <= 0o777)
        .ok_or_else(|| status.malformed("Umask", text, "out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

    #[test]
    fn identity_is_read_from_the_proc_snapshot() {
        let mut process = FakeTracee::default();
        let proc = crp_ptrace::fake::snapshot();
        let identity =
            TaskIdentity::capture(&mut Capture { tracee: &mut process, proc: &proc, stopped_before_freeze: true })
                .unwrap();
        assert_eq!((identity.comm.as_str(), identity.cwd.as_str()), ("fake", "/srv"));
        assert_eq!((identity.umask, identity.personality, identity.stopped), (0o022, 0, true));
        assert_eq!(identity.cpu_affinity, [0, 1]);
        assert!(process.calls.is_empty(), "nothing injected");
    }

    #[test]
    fn a_cpu_mask_with_groups_gives_every_cpu_it_names() {
        let status = Fields::parse("/proc/1/status", "Cpus_allowed:\t80000000,00000005\n").unwrap();
        assert_eq!(parse_cpu_mask(&status).unwrap(), [0, 2, 63]);
        let bad = Fields::parse("/proc/1/status", "Cpus_allowed:\tzz\n").unwrap();
        assert!(parse_cpu_mask(&bad).unwrap_err().to_string().contains("Cpus_allowed"));
    }
    #[test]
    fn name_cwd_umask_personality_and_affinity_are_set_by_injected_calls() {
        let identity = TaskIdentity {
            comm: "worker".into(),
            cwd: "/srv".into(),
            umask: 0o027,
            personality: 0x0040_0000,
            stopped: false,
            cpu_affinity: vec![0],
        };
        // The scratch area is reused from call to call: read what a call
        // points to when it is made.
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let record = std::rc::Rc::clone(&seen);
        let mut restored = FakeTracee::answering(move |call, memory| {
            if call.number == libc::SYS_chdir {
                record.borrow_mut().push(memory.read(call.args[0], 5));
            }
            0
        });
        identity.restore(&mut Restore::new(&mut restored)).unwrap();
        let numbers: Vec<i64> = restored.calls.iter().map(|call| call.number).collect();
        assert_eq!(
            numbers,
            [libc::SYS_prctl, libc::SYS_chdir, libc::SYS_umask, libc::SYS_personality, libc::SYS_sched_setaffinity]
        );
        assert_eq!(seen.borrow().as_slice(), [b"/srv\0".to_vec()]);
        assert_eq!(restored.calls_of(libc::SYS_umask)[0].args[0], 0o027);
        let affinity = restored.calls_of(libc::SYS_sched_setaffinity)[0];
        assert_eq!(restored.memory.read(affinity.args[2], 1)[0] & 1, 1, "CPU 0 kept");
    }

    #[test]
    fn identity_files_parse() {
        assert_eq!(parse_comm(3, "my prog\n").unwrap(), "my prog");
        assert_eq!(parse_comm(3, "odd\n\n").unwrap(), "odd\n", "only the file's newline is dropped");
        assert_eq!(parse_personality(3, "00400000\n").unwrap(), 0x40_0000);
        assert_eq!(parse_umask(&Fields::parse("/proc/3/status", "Umask:\t0027\n").unwrap()).unwrap(), 0o27);
    }

    #[test]
    fn malformed_identity_files_are_refused_and_named() {
        assert_eq!(parse_comm(3, "x").unwrap_err().to_string(), "/proc/3/comm is malformed: no final newline: \"x\"");
        let error = parse_personality(3, "zz\n").unwrap_err().to_string();
        assert_eq!(error, "/proc/3/personality is malformed: not a hexadecimal number: \"zz\\n\"");
        let umask = |text: &str| parse_umask(&Fields::parse("/proc/3/status", text).unwrap()).unwrap_err().to_string();
        assert_eq!(umask("Name:\tx\n"), "/proc/3/status has no field Umask");
        assert_eq!(umask("Umask:\t0028\n"), "cannot parse /proc/3/status field Umask `0028`: not an octal number");
        assert_eq!(umask("Umask:\t01777\n"), "cannot parse /proc/3/status field Umask `01777`: out of range");
    }

    #[test]
    fn own_identity_is_captured() {
        let pid = std::process::id().cast_signed();
        let identity = TaskIdentity::from_proc(&Snapshot::read(pid).unwrap(), false).unwrap();
        assert!(!identity.comm.is_empty() && identity.cwd.starts_with('/'));
        assert!(!identity.cpu_affinity.is_empty());
    }
}
