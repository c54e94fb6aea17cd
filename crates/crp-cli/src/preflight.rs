//! Everything a dump refuses, checked from /proc before the process is
//! touched, so that a refusal leaves it exactly as it was.

use crp_compound::{CompoundError, Unsupported};
use crp_ptrace::procfs;

use crate::error::CrpError;

fn unsupported(pid: i32, what: &str, location: String) -> CrpError {
    CrpError::Unsupported { pid, what: what.to_owned(), location }
}

fn lift(pid: i32) -> impl Fn(CompoundError) -> CrpError {
    move |error| match error {
        CompoundError::Unsupported(unsupported) => CrpError::unsupported(pid, unsupported),
        other => other.into(),
    }
}

/// When the checks run: before crp seizes the process, or again once it is
/// frozen (by then crp itself is its tracer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    BeforeFreeze,
    Frozen,
}

/// Task-level checks: it exists, is not traced by anyone else, has one
/// thread, no children and no seccomp filter.
pub fn check_task(pid: i32, phase: Phase) -> Result<(), CrpError> {
    let status_path = format!("/proc/{pid}/status");
    let field = |key: &str| -> Result<String, CrpError> {
        procfs::status_field(pid, key)
            .map_err(|error| CrpError::NoProcess { pid, reason: error.to_string() })?
            .ok_or_else(|| CrpError::NoProcess { pid, reason: format!("{status_path} has no {key} field") })
    };
    if pid == std::process::id() as i32 {
        return Err(unsupported(pid, "dumping crp itself", "own pid".into()));
    }
    let state = field("State")?;
    if state.starts_with('Z') || state.starts_with('X') {
        return Err(CrpError::NoProcess { pid, reason: format!("it has exited ({state})") });
    }
    if field("Tgid")? != pid.to_string() {
        return Err(unsupported(pid, "a thread that is not a thread-group leader", format!("Tgid {}", field("Tgid")?)));
    }
    if field("PPid")? == "0" || field("Kthread").is_ok_and(|kthread| kthread == "1") {
        return Err(unsupported(pid, "a kernel thread or the init process", format!("pid {pid}")));
    }
    let tracer = field("TracerPid")?;
    if tracer != "0" && (phase == Phase::BeforeFreeze || tracer != std::process::id().to_string()) {
        return Err(unsupported(pid, "a process already being traced", format!("TracerPid {tracer}")));
    }
    let threads = field("Threads")?;
    if threads != "1" {
        return Err(unsupported(pid, "a process with more than one thread", format!("{threads} threads")));
    }
    // A kernel without CONFIG_SECCOMP has no such field, and no filters.
    let seccomp = field("Seccomp").unwrap_or_else(|_| "0".to_owned());
    if seccomp != "0" {
        return Err(unsupported(pid, "a seccomp filter or strict mode", format!("Seccomp {seccomp}")));
    }
    let children_path = format!("/proc/{pid}/task/{pid}/children");
    let children = std::fs::read_to_string(&children_path)
        .map_err(|source| CrpError::Io { action: format!("read {children_path}"), source })?;
    if !children.trim().is_empty() {
        return Err(unsupported(pid, "a process with child processes", format!("children {}", children.trim())));
    }
    Ok(())
}

/// Memory, descriptor, lock and signal checks.
pub fn check_state(pid: i32) -> Result<(), CrpError> {
    let maps = procfs::read_smaps(pid).map_err(|error| CrpError::NoProcess { pid, reason: error.to_string() })?;
    for entry in &maps {
        if crp_arch_x86::is_special_mapping(&entry.name) {
            continue;
        }
        if let Some(refusal) = crp_compound::vma::unsupported_mapping(entry) {
            return Err(CrpError::unsupported(pid, refusal));
        }
    }
    crp_compound::files::preflight(pid).map_err(lift(pid))?;
    crp_compound::timers::preflight(pid).map_err(lift(pid))?;
    crp_locks::preflight(pid)?;
    if let Some(pending) = crp_compound::signals::pending_signals(pid).map_err(lift(pid))? {
        return Err(CrpError::unsupported(pid, Unsupported { what: "pending signals".into(), location: pending }));
    }
    Ok(())
}

/// All checks.
pub fn check(pid: i32, phase: Phase) -> Result<(), CrpError> {
    check_task(pid, phase)?;
    check_state(pid)
}
