//! The process's context: working directory, umask, personality, and
//! whether it was stopped. The thread's name and CPU affinity are per
//! thread: [`crate::thread_attrs`].

use crp_ptrace::procfs::{Fields, ProcError, Snapshot};
use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt};

use crate::error::CompoundError;
use crate::valid::{Invalid, check_path};

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TaskIdentity {
    pub cwd: String,
    pub umask: u32,
    pub personality: u64,
    /// Stopped by a signal (SIGSTOP, SIGTSTP...) when it was dumped: it
    /// comes back stopped.
    pub stopped: bool,
}

impl TaskIdentity {
    /// Reads it from what /proc said (nothing is injected). `stopped` is
    /// whether the process was in a group stop before crp froze it
    /// (afterwards /proc shows crp's own tracing stop).
    pub fn from_proc(proc: &Snapshot, stopped: bool) -> Result<Self, CompoundError> {
        let pid = proc.pid;
        Ok(Self {
            cwd: proc.cwd.clone(),
            umask: parse_umask(&proc.status)?,
            personality: parse_personality(pid, &proc.personality)?,
            stopped,
        })
    }

    /// Refuses what the restore would set wrongly or not at all: a cwd the
    /// kernel would misread, a personality wider than the syscall's
    /// `unsigned int`.
    pub fn check(&self) -> Result<(), Invalid> {
        check_path("cwd", &self.cwd)?;
        if u32::try_from(self.personality).is_err() {
            return Err(Invalid::new("personality", format!("{:#x} does not fit in 32 bits", self.personality)));
        }
        Ok(())
    }

    /// Sets cwd, umask and personality in the process being restored.
    fn restore_into(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        let mut scratch = tracee.scratch();
        let cwd = scratch.push_c_string(self.cwd.as_bytes());
        scratch.commit(tracee)?;
        tracee.syscall("chdir", libc::SYS_chdir, [cwd, 0, 0, 0, 0, 0])?;
        tracee.syscall("umask", libc::SYS_umask, [u64::from(self.umask), 0, 0, 0, 0, 0])?;
        tracee.syscall("personality", libc::SYS_personality, [self.personality, 0, 0, 0, 0, 0])?;
        Ok(())
    }
}

impl Persist for TaskIdentity {
    const KIND: &'static str = "cwd, umask and personality";
    type Error = CompoundError;

    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        Self::from_proc(context.proc, context.stopped_before_freeze)
    }

    /// The cwd is entered with the file-system credentials the process has
    /// at that moment: before its own credentials are restored.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        Ok(self.restore_into(context.tracee)?)
    }
}

fn malformed(pid: i32, file: &str, text: &str, reason: &str) -> CompoundError {
    CompoundError::Malformed { path: format!("/proc/{pid}/{file}").into(), reason: format!("{reason}: {text:?}") }
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
        assert_eq!(identity.cwd, "/srv");
        assert_eq!((identity.umask, identity.personality, identity.stopped), (0o022, 0, true));
        assert!(process.calls.is_empty(), "nothing injected");
    }

    #[test]
    fn cwd_umask_and_personality_are_set_by_injected_calls() {
        let identity = TaskIdentity { cwd: "/srv".into(), umask: 0o027, personality: 0x0040_0000, stopped: false };
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
        assert_eq!(numbers, [libc::SYS_chdir, libc::SYS_umask, libc::SYS_personality]);
        assert_eq!(seen.borrow().as_slice(), [b"/srv\0".to_vec()]);
        assert_eq!(restored.calls_of(libc::SYS_umask)[0].args[0], 0o027);
    }

    #[test]
    fn identity_files_parse() {
        assert_eq!(parse_personality(3, "00400000\n").unwrap(), 0x40_0000);
        assert_eq!(parse_umask(&Fields::parse("/proc/3/status", "Umask:\t0027\n").unwrap()).unwrap(), 0o27);
    }

    #[test]
    fn malformed_identity_files_are_refused_and_named() {
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
        let identity = TaskIdentity::from_proc(&Snapshot::read(pid, Vec::new()).unwrap(), false).unwrap();
        assert!(identity.cwd.starts_with('/'));
    }
}
