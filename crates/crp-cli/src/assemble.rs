//! What both dump back ends share: the kinds of state they read the same
//! way (by injection while the process is parked: the module does not
//! report them), and the one place a [`ProcessImage`] is put together from
//! what each back end read its own way. A kind of the process's that both
//! back ends read by injection is one line of [`Injected`] and
//! [`capture_injected`]; a kind a back end reads its own way is one field
//! of [`BackEndKinds`]. A kind Linux keeps per thread is one line of
//! [`capture_thread`] (which reads every thread, the leader included), or
//! one field of [`ThreadKinds`] when a back end reads it its own way.

use crp_arch_x86::{CpuState, VdsoLayout};
use crp_compound::creds::Credentials;
use crp_compound::files::FdTable;
use crp_compound::mm::MmFields;
use crp_compound::pending_signals::{SharedPendingSignals, ThreadPendingSignals};
use crp_compound::posix_timers::PosixTimers;
use crp_compound::process_attrs::ProcessAttributes;
use crp_compound::rlimits::ResourceLimits;
use crp_compound::session::SessionState;
use crp_compound::signals::{SignalState, ThreadSignals};
use crp_compound::task::TaskIdentity;
use crp_compound::thread_attrs::ThreadAttributes;
use crp_compound::timers::IntervalTimers;
use crp_compound::vma::{FutureLocking, Memory};
use crp_locks::{FileLocks, LockState};
use crp_ptrace::{Capture, Persist};

use crate::error::CrpError;
use crate::model::{ProcessImage, ThreadState, kernel_release};

/// The kinds both back ends read by injected syscalls and ptrace, the
/// process parked, through their [`Persist`] impls.
pub(crate) struct Injected {
    pub attributes: ProcessAttributes,
    pub session: SessionState,
    pub future_locking: FutureLocking,
    pub pending_signals: SharedPendingSignals,
    pub posix_timers: PosixTimers,
    pub file_locks: FileLocks,
}

/// Reads every kind of [`Injected`]; they are independent of each other,
/// so their order is free. The context's scratch mapping is crp's own.
pub(crate) fn capture_injected(context: &mut Capture<'_>) -> Result<Injected, CrpError> {
    Ok(Injected {
        attributes: ProcessAttributes::capture(context)?,
        session: SessionState::capture(context)?,
        future_locking: FutureLocking::capture(context.tracee)?,
        pending_signals: SharedPendingSignals::capture(context)?,
        posix_timers: PosixTimers::capture(context)?,
        file_locks: FileLocks::capture(context)?,
    })
}

/// The kinds Linux keeps per thread that each back end reads its own way
/// (the userspace one by ptrace and injection, the kmod one from the
/// module's task record).
pub(crate) struct ThreadKinds {
    pub cpu: CpuState,
    pub signals: ThreadSignals,
    pub locks: LockState,
}

/// What Linux keeps for one parked thread (the leader or another): the
/// kinds its back end read in `own`, and those both back ends read by
/// injection, through their [`Persist`] impls (independent of each other:
/// their order is free).
pub(crate) fn capture_thread(context: &mut Capture<'_>, own: ThreadKinds) -> Result<ThreadState, CrpError> {
    let ThreadKinds { cpu, signals, locks } = own;
    Ok(ThreadState {
        tid: context.tracee.pid(),
        cpu,
        signals,
        locks,
        attributes: ThreadAttributes::capture(context)?,
        pending_signals: ThreadPendingSignals::capture(context)?,
    })
}

/// Refuses a thread whose credentials or personality differ from the
/// leader's: Linux keeps them per thread, the image once for the process
/// (every thread gets the process's at restore).
pub(crate) fn check_shared_with_leader(
    pid: i32,
    context: &mut Capture<'_>,
    credentials: &Credentials,
    task: &TaskIdentity,
) -> Result<(), CrpError> {
    let tid = context.tracee.pid();
    let own = Credentials::capture(context)?;
    let refusal = |what: &str, location: String| {
        Err(CrpError::unsupported(pid, crp_compound::Unsupported { what: what.to_owned(), location }))
    };
    if own != *credentials {
        return refusal(
            "a thread whose credentials differ from its leader's (set by a raw setuid-family syscall)",
            format!("thread {tid}"),
        );
    }
    let personality = TaskIdentity::from_proc(context.proc, false)?.personality;
    if personality != task.personality {
        return refusal(
            "a thread whose personality differs from its leader's",
            format!("thread {tid}: {personality:#x}, leader {:#x}", task.personality),
        );
    }
    Ok(())
}

/// The kinds each back end reads its own way (the userspace one by
/// injection and /proc, the kmod one from the module's task record).
pub(crate) struct BackEndKinds {
    pub vdso: VdsoLayout,
    pub memory: Memory,
    pub mm: MmFields,
    pub files: FdTable,
    pub signals: SignalState,
    pub task: TaskIdentity,
    pub credentials: Credentials,
    pub rlimits: ResourceLimits,
    pub timers: IntervalTimers,
}

/// The image of the process `pid`: its state from `own` and `injected`,
/// its threads' in `threads` (the leader first).
pub(crate) fn process_image(
    pid: i32,
    own: BackEndKinds,
    injected: Injected,
    threads: Vec<ThreadState>,
) -> ProcessImage {
    let BackEndKinds { vdso, memory, mm, files, signals, task, credentials, rlimits, timers } = own;
    let Memory { vmas, shared_memory, guard_regions } = memory;
    let Injected { attributes, session, future_locking, pending_signals, posix_timers, file_locks } = injected;
    ProcessImage {
        pid,
        kernel_release: kernel_release(),
        dumped_at_unix_seconds: 0,
        threads,
        vdso,
        vmas,
        shared_memory,
        future_locking,
        guard_regions,
        mm,
        files,
        signals,
        task,
        credentials,
        rlimits,
        timers,
        attributes,
        session,
        pending_signals,
        posix_timers,
        file_locks,
        chain: crate::incremental::ChainRecord::default(),
    }
}
