//! Who may trace the process: crp's own permission, and a tracer that is
//! already attached. Turns "Permission denied" and `PTRACE_SEIZE: EPERM`
//! into what they mean for this process.

use crp_ptrace::EngineError;
use crp_ptrace::procfs::{Fields, ProcError};
use nix::errno::Errno;

use crate::error::CrpError;

/// A /proc file of `pid` that could not be read or parsed, said plainly:
/// gone, not crp's to read, or malformed.
pub(super) fn proc_error(pid: i32, error: ProcError) -> CrpError {
    if error.is_not_found() {
        CrpError::NoProcess { pid, reason: error.to_string() }
    } else if error.is_permission_denied() {
        denied(pid, error.to_string())
    } else {
        CrpError::Proc(error)
    }
}

/// crp may not read or trace `pid`; `reason` is what was refused.
pub(super) fn denied(pid: i32, reason: String) -> CrpError {
    CrpError::NoPermission { pid, owner: owner_of(pid), crp_uid: nix::unistd::geteuid().as_raw(), reason }
}

/// Who owns `pid`, for the message (status is readable by everyone).
fn owner_of(pid: i32) -> String {
    let uids = Fields::status(pid).and_then(|status| status.decimals::<u32>("Uid"));
    match uids.as_deref() {
        Ok([_, effective, ..]) => format!("owned by uid {effective}"),
        Ok(_) => "its owner is not shown".to_owned(),
        Err(error) => format!("its owner is unknown: {error}"),
    }
}

/// `pid` is traced by `tracer` (a task id, as TracerPid gives it).
pub(super) fn already_traced(pid: i32, tracer: i32) -> CrpError {
    let path = format!("/proc/{tracer}/comm");
    let tracer_name = match std::fs::read_to_string(&path) {
        Ok(comm) => format!("`{}`", comm.strip_suffix('\n').unwrap_or(&comm)),
        Err(error) => format!("its name is unknown: cannot read {path}: {error}"),
    };
    CrpError::AlreadyTraced { pid, tracer, tracer_name }
}

/// What a failed `Frozen::seize` means. Between the preflight and the seize
/// another tracer may have attached: `EPERM` is then reported as that
/// tracer (from /proc/PID/status), otherwise as crp lacking permission.
/// The dump calls it on the seize's error:
/// `Frozen::seize(pid).map_err(|error| preflight::explain_seize_failure(pid, error))?`.
pub fn explain_seize_failure(pid: i32, error: EngineError) -> CrpError {
    let errno = match &error {
        EngineError::Ptrace { operation: "PTRACE_SEIZE", errno, .. } => *errno,
        _ => return error.into(),
    };
    if errno == Errno::ESRCH {
        return CrpError::NoProcess { pid, reason: format!("it exited before crp could freeze it ({error})") };
    }
    if errno != Errno::EPERM {
        return error.into();
    }
    // A process that has exited but is not yet reaped (a zombie) refuses a
    // seize with EPERM too: that is not a permission problem.
    if let Some(state) = exited(pid) {
        return CrpError::NoProcess { pid, reason: format!("it exited before crp could freeze it ({state})") };
    }
    let tracer = Fields::status(pid).and_then(|status| status.decimal::<i32>("TracerPid"));
    match tracer {
        Ok(tracer) if tracer != 0 && tracer != std::process::id().cast_signed() => already_traced(pid, tracer),
        Ok(_) => denied(pid, format!("{error}{}", yama_hint())),
        Err(proc) if proc.is_not_found() => CrpError::NoProcess { pid, reason: proc.to_string() },
        Err(_) => error.into(),
    }
}

/// How `pid` is gone, if it has exited: no /proc/PID any more, or a
/// zombie (state Z or X) whose /proc files are mostly unreadable.
pub(super) fn exited(pid: i32) -> Option<String> {
    match Fields::status(pid) {
        Err(error) if error.is_not_found() => Some(error.to_string()),
        Err(_) => None,
        Ok(status) => {
            let state = status.field("State").ok()?;
            (state.starts_with('Z') || state.starts_with('X')).then(|| format!("state {state}"))
        }
    }
}

/// Yama's ptrace_scope, when it is what forbids the seize.
fn yama_hint() -> String {
    let path = "/proc/sys/kernel/yama/ptrace_scope";
    match std::fs::read_to_string(path).as_deref().map(str::trim) {
        Ok("3") => format!(" ({path} is 3: ptrace is disabled for everyone until reboot)"),
        Ok("2") => format!(" ({path} is 2: only CAP_SYS_PTRACE may attach)"),
        // No Yama, or a scope that lets root and CAP_SYS_PTRACE attach.
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};

    use nix::sys::ptrace;
    use nix::unistd::Pid;

    use super::*;

    /// A `sleep` that ends with the test.
    struct Sleeper(Child);

    impl Sleeper {
        fn spawn() -> Self {
            let mut command = Command::new("sleep");
            command.arg("30");
            // SAFETY: runs between fork and exec, one async-signal-safe syscall.
            unsafe {
                command.pre_exec(|| {
                    libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                    Ok(())
                });
            }
            Self(command.spawn().unwrap())
        }

        fn pid(&self) -> i32 {
            self.0.id().cast_signed()
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn seize_refused(pid: i32, errno: Errno) -> EngineError {
        EngineError::Ptrace { operation: "PTRACE_SEIZE", pid, errno }
    }

    fn own_thread_id() -> i32 {
        nix::unistd::gettid().as_raw()
    }

    #[test]
    fn a_seize_refused_because_of_another_tracer_names_it() {
        let sleeper = Sleeper::spawn();
        let pid = sleeper.pid();
        ptrace::seize(Pid::from_raw(pid), ptrace::Options::empty()).unwrap();
        let error = explain_seize_failure(pid, seize_refused(pid, Errno::EPERM));
        let tracer = own_thread_id();
        let comm = std::fs::read_to_string(format!("/proc/{tracer}/comm")).unwrap();
        let message = error.to_string();
        assert!(matches!(error, CrpError::AlreadyTraced { tracer: found, .. } if found == tracer), "{message}");
        assert!(message.contains(&format!("traced by pid {tracer} (`{}`)", comm.trim_end())), "{message}");
        assert_eq!(error.exit_code(), 1);
        // A seized, running tracee cannot be detached (PTRACE_DETACH needs a
        // stop); it is killed with the sleeper.
    }

    #[test]
    fn a_seize_refused_with_no_tracer_is_a_permission_problem() {
        let sleeper = Sleeper::spawn();
        let pid = sleeper.pid();
        let error = explain_seize_failure(pid, seize_refused(pid, Errno::EPERM));
        let message = error.to_string();
        assert!(matches!(error, CrpError::NoPermission { .. }), "{message}");
        assert!(message.contains("PTRACE_SEIZE") && message.contains("CAP_SYS_PTRACE"), "{message}");
        assert!(message.contains(&format!("owned by uid {}", nix::unistd::geteuid())), "{message}");
    }

    #[test]
    fn a_seize_refused_because_the_process_exited_says_so() {
        let mut command = Command::new("true");
        let mut child = command.spawn().unwrap();
        let pid = child.id().cast_signed();
        // Waits until it has exited without reaping it: it stays a zombie.
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(Pid::from_raw(pid)),
            nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
        )
        .unwrap();
        let error = explain_seize_failure(pid, seize_refused(pid, Errno::EPERM));
        let message = error.to_string();
        child.wait().unwrap();
        assert!(matches!(error, CrpError::NoProcess { .. }), "{message}");
        assert!(message.contains("exited before crp could freeze it (state Z"), "{message}");
    }

    #[test]
    fn other_seize_failures_keep_their_meaning() {
        let gone = i32::MAX - 11;
        assert!(matches!(explain_seize_failure(gone, seize_refused(gone, Errno::ESRCH)), CrpError::NoProcess { .. }));
        let error = explain_seize_failure(gone, seize_refused(gone, Errno::EIO));
        assert!(matches!(error, CrpError::Engine(EngineError::Ptrace { errno: Errno::EIO, .. })), "{error}");
    }

    #[test]
    fn unreadable_proc_files_say_why() {
        let gone = i32::MAX - 13;
        let missing = Fields::status(gone).unwrap_err();
        assert!(matches!(proc_error(gone, missing), CrpError::NoProcess { .. }));
        let path = std::path::PathBuf::from("/proc/1/smaps");
        let refused = ProcError::Read { path, source: std::io::Error::from_raw_os_error(libc::EACCES) };
        let message = proc_error(1, refused).to_string();
        assert!(message.starts_with("crp lacks permission to read and trace pid 1 (owned by uid 0"), "{message}");
        assert!(message.contains("cannot read /proc/1/smaps: Permission denied"), "{message}");
        let malformed = Fields::parse("/proc/1/status", "oops").unwrap_err();
        assert!(matches!(proc_error(1, malformed), CrpError::Proc(_)));
    }
}
