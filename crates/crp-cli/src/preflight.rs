//! Everything a dump refuses, checked from /proc before the process is
//! touched, so that a refusal leaves it exactly as it was. Every value read
//! must be there and parse; a /proc file that cannot be read says whether
//! the process is gone ([`CrpError::NoProcess`]) or crp may not look at it
//! ([`CrpError::NoPermission`]).

mod access;

use crp_compound::{CompoundError, Unsupported};
use crp_ptrace::procfs::{self, Fields, Stat};

pub use self::access::explain_seize_failure;
use crate::error::CrpError;

/// `PF_KTHREAD` in the flags of /proc/PID/stat (field 9).
const PF_KTHREAD: u64 = 0x0020_0000;
/// Field 9 of /proc/PID/stat: the task's flags.
const STAT_FLAGS: usize = 9;

fn blocker(what: &str, location: String) -> Unsupported {
    Unsupported { what: what.to_owned(), location }
}

/// Adds the refusal of `result` to `blockers`; any other error is returned.
fn collect<E: Into<CrpError>>(
    result: Result<(), E>,
    blockers: &mut Vec<Unsupported>,
    pid: i32,
) -> Result<(), CrpError> {
    match result.map_err(Into::into) {
        Ok(()) => Ok(()),
        Err(CrpError::Unsupported { refusal, .. }) => {
            blockers.push(refusal);
            Ok(())
        }
        Err(CrpError::Compound(CompoundError::Unsupported(refusal))) => {
            blockers.push(refusal);
            Ok(())
        }
        Err(other) => Err(relabel(pid, other)),
    }
}

/// A proc or permission error of a category crate, said as crp says it.
fn relabel(pid: i32, error: CrpError) -> CrpError {
    match error {
        CrpError::Compound(error) => lift(pid)(error),
        other => other,
    }
}

fn lift(pid: i32) -> impl Fn(CompoundError) -> CrpError {
    move |error| match error {
        CompoundError::Unsupported(unsupported) => CrpError::unsupported(pid, unsupported),
        CompoundError::Proc(error) => access::proc_error(pid, error),
        CompoundError::Io { action, path, source } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            access::denied(pid, format!("cannot {action} {}: {source}", path.display()))
        }
        // A process that exits during the checks takes its /proc files with it.
        CompoundError::Io { action, path, source } => match access::exited(pid) {
            Some(how) => CrpError::NoProcess {
                pid,
                reason: format!("it exited during crp's checks (cannot {action} {}: {source}; {how})", path.display()),
            },
            None => CompoundError::Io { action, path, source }.into(),
        },
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

/// What the task-level checks found.
struct TaskBlockers {
    blockers: Vec<Unsupported>,
    /// The pid is not a process of its own to look into (crp itself, a
    /// thread that does not lead its group): its state is not checked.
    not_a_process: bool,
}

/// Task-level checks: it exists, crp may read it, it is not traced by
/// anyone else (errors), and what blocks a dump of it: children, and in
/// any of its threads a seccomp filter, shadow stacks, syscall user
/// dispatch or a signal no restore could queue.
fn task_blockers(pid: i32, phase: Phase) -> Result<TaskBlockers, CrpError> {
    let mut blockers = Vec::new();
    let not_a_process = |refusal| Ok(TaskBlockers { blockers: vec![refusal], not_a_process: true });
    if pid == std::process::id().cast_signed() {
        return not_a_process(blocker("dumping crp itself", "own pid".into()));
    }
    let status = Fields::status(pid).map_err(|error| access::proc_error(pid, error))?;
    let state = status.field("State")?;
    if state.starts_with('Z') || state.starts_with('X') {
        // A leader that called pthread_exit stays a zombie while the other
        // threads run on: the process is alive, its leader's state gone.
        if status.decimal::<u32>("Threads")? > 1 {
            return not_a_process(blocker(
                "a process whose leader thread has exited (its other threads run on)",
                format!("State {state}"),
            ));
        }
        return Err(CrpError::NoProcess { pid, reason: format!("it has exited ({state})") });
    }
    let tgid: i32 = status.decimal("Tgid")?;
    if tgid != pid {
        return not_a_process(blocker("a thread that is not a thread-group leader", format!("Tgid {tgid}")));
    }
    let flags: u64 = Stat::read(pid).map_err(|error| access::proc_error(pid, error))?.number(STAT_FLAGS)?;
    if flags & PF_KTHREAD != 0 {
        let what = format!("a kernel thread ({})", status.field("Name")?);
        return Err(CrpError::NotUserProcess { pid, what, kind: "kernel threads" });
    }
    let parent: i32 = status.decimal("PPid")?;
    if parent == 0 {
        let what = "the init process of its PID namespace (it has no parent)".to_owned();
        return Err(CrpError::NotUserProcess { pid, what, kind: "an init process" });
    }
    // A vfork child before its exec (or any clone(CLONE_VM) without
    // CLONE_THREAD) runs in its parent's memory, which the parent gets back
    // only when the child execs or exits. (A kcmp crp may not make says
    // nothing.)
    if crp_ptrace::sys::same_address_space(pid, parent) == Ok(true) {
        blockers.push(blocker(
            "a process sharing its parent's address space (a vfork child that has not called exec yet)",
            format!("parent {parent}"),
        ));
    }
    let tracer: i32 = status.decimal("TracerPid")?;
    if tracer != 0 && (phase == Phase::BeforeFreeze || tracer != std::process::id().cast_signed()) {
        return Err(access::already_traced(pid, tracer));
    }
    for tid in crp_ptrace::thread_ids(pid).map_err(|errno| CrpError::NoProcess { pid, reason: errno.to_string() })? {
        let thread_status = if tid == pid {
            status.clone()
        } else {
            match Fields::status_of_thread(pid, tid) {
                Ok(thread_status) => thread_status,
                // It exited since it was listed.
                Err(_) if !std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists() => continue,
                Err(error) => return Err(access::proc_error(pid, error)),
            }
        };
        thread_blockers(pid, tid, &thread_status, phase, &mut blockers)?;
    }
    // A deleted working directory has no path the restore could chdir to.
    if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd"))
        && cwd.to_string_lossy().ends_with(" (deleted)")
    {
        blockers.push(blocker(
            "a deleted current working directory (the restore has no path to return to)",
            format!("cwd {}", cwd.display()),
        ));
    }
    let children_path = format!("/proc/{pid}/task/{pid}/children");
    let children = std::fs::read_to_string(&children_path)
        .map_err(|source| access::proc_error(pid, procfs::ProcError::Read { path: children_path.into(), source }))?;
    if !children.trim().is_empty() {
        blockers.push(blocker("a process with child processes", format!("children {}", children.trim())));
    }
    Ok(TaskBlockers { blockers, not_a_process: false })
}

/// What blocks a dump in one thread (`tid`, the leader's pid included),
/// from its own /proc status: a seccomp filter, shadow stacks, syscall
/// user dispatch, and pending signals no restore could queue again.
fn thread_blockers(
    pid: i32,
    tid: i32,
    status: &Fields,
    phase: Phase,
    blockers: &mut Vec<Unsupported>,
) -> Result<(), CrpError> {
    let whose = |what: String| if tid == pid { what } else { format!("thread {tid}: {what}") };
    // A kernel without CONFIG_SECCOMP has no Seccomp line, and no filters.
    if status.optional("Seccomp").is_some() {
        let seccomp: u32 = status.decimal("Seccomp")?;
        if seccomp != 0 {
            blockers.push(blocker("a seccomp filter or strict mode", whose(format!("Seccomp {seccomp}"))));
        }
    }
    // User shadow stacks (CET): crp's parking frame carries no shadow-stack
    // token, so rt_sigreturn would fail. Kernels without the feature have
    // no such line.
    if let Some(features) = status.optional("x86_Thread_features")
        && features.split_whitespace().any(|feature| feature == "shstk")
    {
        blockers.push(blocker(
            "a process using user shadow stacks (CET)",
            whose(format!("x86_Thread_features {features}")),
        ));
    }
    // Readable only once crp traces the process; a kernel without the
    // feature (EINVAL, EIO) has it off.
    if phase == Phase::Frozen
        && let Ok(mode) = crp_ptrace::sys::syscall_user_dispatch_mode(nix::unistd::Pid::from_raw(tid))
        && mode != 0
    {
        blockers.push(blocker(
            "syscall user dispatch (PR_SET_SYSCALL_USER_DISPATCH)",
            whose(format!("mode {mode}, seen at the freeze")),
        ));
    }
    if let Some(pending) = crp_compound::pending_signals::unqueueable_in(status).map_err(lift(pid))? {
        let what = "a pending SIGKILL (the process is dying), SIGSTOP (a stop under way: dump it once stopped) or \
                    SIGTRAP (the restore's single steps would take it)";
        blockers.push(Unsupported { what: what.into(), location: whose(pending) });
    }
    Ok(())
}

/// What blocks a dump in the process's namespaces, memory, descriptors,
/// timers, locks and signals: every namespace, mapping and descriptor crp
/// refuses, and the first refusal of each other kind.
fn state_blockers(pid: i32, maps: &[procfs::MapsEntry], policies: Policies) -> Result<Vec<Unsupported>, CrpError> {
    let mut blockers = crp_compound::namespaces::preflight(pid).map_err(lift(pid))?;
    blockers.extend(crp_compound::defaults::preflight(pid).map_err(lift(pid))?);
    if policies == Policies::Now {
        blockers.extend(crp_compound::defaults::memory_policies(pid).map_err(lift(pid))?);
    }
    // Write protection registered by anyone but crp's change tracking.
    if let Some(entry) = maps.iter().find(|entry| entry.has_flag("uw"))
        && crp_compound::tracking::find(pid).map_err(lift(pid))?.is_empty()
    {
        blockers.push(Unsupported {
            what: "a range registered with a userfaultfd for write protection that is not crp's change tracking (its \
                   faults are handled by a descriptor crp does not restore)"
                .into(),
            location: format!("[{:#x}, {:#x}) {}", entry.start, entry.end, entry.name),
        });
    }
    for entry in maps {
        if crp_arch_x86::is_special_mapping(&entry.name) {
            continue;
        }
        // PR_SET_VMA_ANON_NAME: the name is not restored yet.
        if entry.name.starts_with("[anon:") || entry.name.starts_with("[anon_shmem:") {
            let location = format!("[{:#x}, {:#x}) {}", entry.start, entry.end, entry.name);
            blockers.push(Unsupported { what: "a named anonymous mapping (PR_SET_VMA_ANON_NAME)".into(), location });
            continue;
        }
        if let Some(refusal) = crp_compound::vma::Mapping::from_maps(entry).refusal() {
            blockers.push(refusal);
        }
    }
    blockers.extend(crp_compound::vma::shared::preflight(pid, maps).map_err(lift(pid))?);
    blockers.extend(crp_compound::files::preflight(pid).map_err(lift(pid))?);
    collect(crp_compound::posix_timers::preflight(pid), &mut blockers, pid)?;
    let locks = crp_locks::preflight(pid).map_err(|error| match error {
        crp_locks::LockError::Proc(error) => access::proc_error(pid, error),
        crp_locks::LockError::Unsupported(unsupported) => CrpError::unsupported(pid, unsupported),
        other => other.into(),
    });
    collect(locks, &mut blockers, pid)?;
    Ok(blockers)
}

/// When the mappings' NUMA memory policies are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policies {
    /// With the other checks.
    Now,
    /// Once the process is released ([`check_released`]): reading them
    /// walks every page, too long for a freeze of milliseconds. They were
    /// checked before the freeze as well.
    AfterRelease,
}

/// Everything that blocks a dump of `pid`, each named (`crp dump --check`);
/// an error only when the process cannot be examined at all. Its memory
/// map is read here.
pub fn blockers(pid: i32, phase: Phase) -> Result<Vec<Unsupported>, CrpError> {
    blockers_with(pid, phase, None, Policies::Now)
}

/// [`blockers`], with the memory map `maps` already read (the frozen
/// process's, which the capture reads too).
fn blockers_with(
    pid: i32,
    phase: Phase,
    maps: Option<&[procfs::MapsEntry]>,
    policies: Policies,
) -> Result<Vec<Unsupported>, CrpError> {
    let TaskBlockers { mut blockers, not_a_process } = task_blockers(pid, phase)?;
    if !not_a_process {
        let read;
        let maps = match maps {
            Some(maps) => maps,
            None => {
                read = procfs::smaps(pid).map_err(|error| access::proc_error(pid, error))?;
                &read
            }
        };
        blockers.extend(state_blockers(pid, maps, policies)?);
    }
    Ok(blockers)
}

/// All checks: the first blocker refuses the dump, saying how many more
/// there are.
pub fn check(pid: i32, phase: Phase) -> Result<(), CrpError> {
    refuse_first(pid, blockers(pid, phase)?)
}

/// [`check`], the NUMA policies (whose /proc file walks every page) now
/// or only after the release, as `policies` says.
pub fn check_with(pid: i32, phase: Phase, policies: Policies) -> Result<(), CrpError> {
    refuse_first(pid, blockers_with(pid, phase, None, policies)?)
}

/// All checks again once the process is frozen, on its memory map `maps`
/// (the NUMA policies now or after the release, as `policies` says).
pub fn check_frozen(pid: i32, maps: &[procfs::MapsEntry], policies: Policies) -> Result<(), CrpError> {
    refuse_first(pid, blockers_with(pid, Phase::Frozen, Some(maps), policies)?)
}

/// The checks [`Policies::AfterRelease`] left for after the release.
pub fn check_released(pid: i32) -> Result<(), CrpError> {
    refuse_first(pid, crp_compound::defaults::memory_policies(pid).map_err(lift(pid))?)
}

fn refuse_first(pid: i32, blockers: Vec<Unsupported>) -> Result<(), CrpError> {
    let mut blockers = blockers.into_iter();
    match blockers.next() {
        None => Ok(()),
        Some(refusal) => Err(CrpError::Unsupported { pid, refusal, others: blockers.len() }),
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    use nix::unistd::Pid;

    use super::*;

    /// A process that has exited (a zombie: its /proc/PID/ns links are
    /// gone) while its state is checked is said to have exited.
    #[test]
    fn a_process_that_exits_during_the_checks_is_said_to_be_gone() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id().cast_signed();
        waitid(Id::Pid(Pid::from_raw(pid)), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).unwrap();
        let error = state_blockers(pid, &[], Policies::Now).unwrap_err();
        let message = error.to_string();
        child.wait().unwrap();
        assert!(matches!(error, CrpError::NoProcess { .. }), "{message}");
        assert!(message.contains("it exited during crp's checks") && message.contains("state Z"), "{message}");
    }
}
