//! The order in which a restore re-establishes each kind of state, as
//! tables, and the rules that order must keep, each written once with its
//! reason and checked against the tables by a test.
//!
//! The userspace back end runs [`BY_INJECTION`] then [`FINISH`]; the kmod
//! back end runs [`BEFORE_MODULE`], its module does what the rest of
//! `BY_INJECTION` does itself, then crp runs [`FINISH`] from outside. Both then run [`RELEASE`], the registers and
//! blocked mask of every thread, after the last injected syscall (the
//! userspace back end's gadget unmapping itself), right before release.
//!
//! The credentials come last of what needs crp's privileges; after them
//! come only the kinds of [`AFTER_CREDENTIALS`], which a credential change
//! resets and which need no privilege.

use crp_arch_x86::VdsoLayout;
use crp_compound::vma::Memory;
use crp_ptrace::{Injector, Pages, Persist, Restore, Tracee};
use nix::unistd::Pid;

use crate::error::CrpError;
use crate::model::{ProcessImage, ThreadState};
use crate::restore::bootstrap::{self, Gadget};
use crate::restore::trust::OpenAs;

/// What the user asked of this restore beyond the image: the identity files
/// are opened as, and where the standard streams come from.
#[derive(Debug, Default)]
pub struct Choices {
    pub open_as: Option<OpenAs>,
    pub streams: crp_compound::files::Streams,
    /// crp restore waits for the process on a controlling terminal it can
    /// give it (see [`crp_compound::session::SessionState::placement`]).
    pub attach_terminal: bool,
}

/// What a step may use.
#[derive(Debug)]
pub struct Rebuild<'a> {
    /// The thread-group leader, through which process-wide state is set.
    pub injector: &'a mut Injector,
    pub pid: Pid,
    pub image: &'a ProcessImage,
    pub reader: &'a crp_image::ImageReader,
    /// The image's page contents, as the memory kind writes them.
    pub pages: &'a dyn Pages,
    pub choices: &'a Choices,
    /// crp's syscall gadget in the child, mapped by the bootstrap.
    pub gadget: Gadget,
    /// The other threads, in the image's order, once [`THREADS`] made them.
    pub threads: Vec<Injector>,
    /// The threads get their original ids (the process got its pid back).
    pub keep_thread_ids: bool,
}

/// One line of a plan: a kind of state and how it is re-established.
#[derive(Clone, Copy)]
pub struct Step {
    pub kind: &'static str,
    pub run: fn(&mut Rebuild<'_>) -> Result<(), CrpError>,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.kind)
    }
}

impl Rebuild<'_> {
    /// The restore context of the thread-group leader.
    fn context(&mut self) -> Restore<'_> {
        Restore { tracee: &mut *self.injector, streams: &self.choices.streams, pages: self.pages }
    }
}

/// A kind restored by its [`Persist`] impl, from the image field `field`.
macro_rules! persisted {
    ($kind:ty, $field:ident) => {
        Step {
            kind: <$kind as Persist>::KIND,
            run: |rebuild| {
                let image = rebuild.image;
                Ok(image.$field.restore(&mut rebuild.context())?)
            },
        }
    };
}

/// A kind Linux keeps per thread, restored by its [`Persist`] impl in
/// every thread, from the field `field` (a path:
/// `attributes.parent_death_signal`) of its [`crate::model::ThreadState`].
macro_rules! per_thread {
    ($kind:ty, $($field:ident).+) => {
        Step {
            kind: <$kind as Persist>::KIND,
            run: |rebuild| in_each_thread(rebuild, |state, context| Ok(state.$($field).+.restore(context)?)),
        }
    };
}

/// Runs `restore` in every thread with that thread's state: the leader
/// (through which process-wide state is set) first, then the others in
/// the image's order.
fn in_each_thread(
    rebuild: &mut Rebuild<'_>,
    mut restore: impl FnMut(&ThreadState, &mut Restore<'_>) -> Result<(), CrpError>,
) -> Result<(), CrpError> {
    let (image, choices, pages) = (rebuild.image, rebuild.choices, rebuild.pages);
    let streams = &choices.streams;
    restore(image.leader()?, &mut rebuild.context())?;
    let states = image.threads.get(1..).unwrap_or_default();
    for (thread, state) in rebuild.threads.iter_mut().zip(states) {
        restore(state, &mut Restore { tracee: thread, streams, pages })?;
    }
    Ok(())
}

/// A kind of the process's that Linux keeps in every thread (credentials,
/// personality): the image's one value is restored by its [`Persist`]
/// impl in each thread, from the image field `field`.
macro_rules! in_every_thread {
    ($kind:ty, $field:ident) => {
        Step {
            kind: <$kind as Persist>::KIND,
            run: |rebuild| {
                let image = rebuild.image;
                in_each_thread(rebuild, |_, context| Ok(image.$field.restore(context)?))
            },
        }
    };
}

/// Every mapping of crp's own in the child but the gadget and the vDSO
/// block ([`bootstrap::clear_address_space`]), unmapped.
const CRP_MAPPINGS: &str = "crp's own mappings";
const VDSO: &str = <VdsoLayout as Persist>::KIND;
/// The VMAs, their pages and guard regions ([`Memory::restore`]), but for
/// the mappings of descriptor objects.
const MEMORY: &str = Memory::KIND;
/// The threads other than the leader.
const THREADS: &str = "threads";
/// Mappings of the memfds and deleted files descriptors hold
/// ([`Memory::restore_descriptor_mappings`]).
const DESCRIPTOR_MAPPINGS: &str = Memory::DESCRIPTOR_MAPPINGS;
/// mlockall(MCL_FUTURE).
const FUTURE_LOCKING: &str = "locking of future mappings";

/// What the userspace back end rebuilds by injection before [`FINISH`].
pub const BY_INJECTION: &[Step] = &[
    Step { kind: CRP_MAPPINGS, run: |rebuild| bootstrap::clear_address_space(rebuild.injector, rebuild.gadget) },
    persisted!(VdsoLayout, vdso),
    Step {
        kind: MEMORY,
        run: |rebuild| {
            let image = rebuild.image;
            image.memory().restore(&mut rebuild.context())?;
            let page_bytes = rebuild.reader.page_bytes();
            tracing::info!(vmas = image.vmas.len(), page_bytes, "memory mapped and filled");
            Ok(())
        },
    },
    persisted!(crp_compound::mm::MmFields, mm),
    persisted!(crp_compound::signals::SignalState, signals),
    Step {
        kind: THREADS,
        run: |rebuild| {
            let keep_ids = rebuild.keep_thread_ids;
            let states = rebuild.image.threads.get(1..).unwrap_or_default();
            rebuild.threads = crate::restore::threads::create(rebuild.injector, states, keep_ids)?;
            Ok(())
        },
    },
    per_thread!(crp_compound::signals::ThreadSignals, signals),
    per_thread!(crp_locks::LockState, locks),
];

/// What the kmod back end's child does by injection before its module
/// replaces the rest of its address space with the image's.
pub const BEFORE_MODULE: &[Step] = &[persisted!(VdsoLayout, vdso)];

/// What both back ends set from outside once memory and mm are in place.
pub const FINISH: &[Step] = &[
    Step { kind: SESSION, run: place_in_session },
    in_every_thread!(crp_compound::task::TaskIdentity, task),
    per_thread!(crp_compound::thread_attrs::ThreadAttributes, attributes),
    persisted!(crp_compound::process_attrs::ProcessAttributes, attributes),
    persisted!(crp_compound::files::FdTable, files),
    Step {
        kind: DESCRIPTOR_MAPPINGS,
        run: |rebuild| {
            let image = rebuild.image;
            Ok(image.memory().restore_descriptor_mappings(&mut rebuild.context(), &image.files)?)
        },
    },
    Step { kind: FUTURE_LOCKING, run: |rebuild| Ok(rebuild.image.future_locking.restore(&mut *rebuild.injector)?) },
    persisted!(crp_locks::FileLocks, file_locks),
    persisted!(crp_compound::rlimits::ResourceLimits, rlimits),
    persisted!(crp_compound::timers::IntervalTimers, timers),
    persisted!(crp_compound::pending_signals::SharedPendingSignals, pending_signals),
    Step {
        kind: THREAD_PENDING_SIGNALS,
        run: |rebuild| {
            // Each thread queues its own: only the target thread may queue
            // a signal with a user-sent code (rt_tgsigqueueinfo).
            let pid = rebuild.pid.as_raw();
            in_each_thread(rebuild, |state, context| Ok(state.pending_signals.queue_in(context.tracee, pid)?))
        },
    },
    Step { kind: POSIX_TIMERS, run: restore_posix_timers },
    in_every_thread!(crp_compound::creds::Credentials, credentials),
    // Replaces the death signal that tied the child to crp until now.
    per_thread!(crp_compound::thread_attrs::ParentDeathSignal, attributes.parent_death_signal),
    Step {
        kind: DESCRIPTOR_OWNERS,
        run: |rebuild| {
            let Rebuild { injector, image, choices, .. } = rebuild;
            Ok(crp_compound::files::owner::restore(&mut **injector, &image.files, &choices.streams)?)
        },
    },
];

/// What both back ends do last, once nothing is injected any more (the
/// userspace back end unmaps its gadget first: that is the last injected
/// syscall).
pub const RELEASE: &[Step] = &[Step {
    kind: REGISTERS,
    run: |rebuild| {
        in_each_thread(rebuild, |state, context| {
            state.cpu.restore(context)?;
            Ok(state.signals.restore_blocked(context.tracee)?)
        })
    },
}];

/// Each thread's registers (with the syscall-restart fix-up) and XSAVE
/// area ([`crp_arch_x86::CpuState`]), then its own blocked mask
/// ([`crp_compound::signals::ThreadSignals::restore_blocked`]): the
/// re-queued pending signals and the kmod module's single steps needed
/// masks of their own until then.
const REGISTERS: &str = "registers and blocked mask";

const SESSION: &str = crp_compound::session::SessionState::KIND;

/// The POSIX timers, a timer that signals one thread (SIGEV_THREAD_ID)
/// signalling that thread as restored: its id may be new (the process got
/// a new pid).
fn restore_posix_timers(rebuild: &mut Rebuild<'_>) -> Result<(), CrpError> {
    let image = rebuild.image;
    let live = std::iter::once(rebuild.pid.as_raw()).chain(rebuild.threads.iter().map(Tracee::pid));
    let ids: Vec<(i32, i32)> = image.threads.iter().map(|thread| thread.tid).zip(live).collect();
    let mut timers = image.posix_timers.clone();
    for timer in &mut timers.timers {
        if let Some((_, now)) = ids.iter().find(|(then, _)| *then == timer.thread) {
            timer.thread = *now;
        }
    }
    Ok(timers.restore(&mut rebuild.context())?)
}

/// Places the process in a session and process group (it is in crp's
/// until now), saying so on stderr when that is not what was decided.
fn place_in_session(rebuild: &mut Rebuild<'_>) -> Result<(), CrpError> {
    let session = &rebuild.image.session;
    let decided = session.placement(rebuild.image.pid, rebuild.pid.as_raw(), rebuild.choices.attach_terminal);
    let placed = crp_compound::session::SessionState::place(&mut *rebuild.injector, decided)?;
    if placed != decided {
        eprintln!(
            "crp: warning: the process could not be placed {} (a process group with its id exists); it is {}",
            decided.describe(),
            placed.describe()
        );
    }
    tracing::debug!(placement = placed.describe(), "session and process group");
    Ok(())
}

/// The O_ASYNC flags and owners of descriptions (`files::owner`), set
/// apart from the descriptors they belong to, after the credentials.
const DESCRIPTOR_OWNERS: &str = "descriptor owners";

const THREAD_PENDING_SIGNALS: &str = <crp_compound::pending_signals::ThreadPendingSignals as Persist>::KIND;
const THREAD_ATTRIBUTES: &str = <crp_compound::thread_attrs::ThreadAttributes as Persist>::KIND;
const PROCESS_ATTRIBUTES: &str = <crp_compound::process_attrs::ProcessAttributes as Persist>::KIND;
const FILE_LOCKS: &str = <crp_locks::FileLocks as Persist>::KIND;
const POSIX_TIMERS: &str = <crp_compound::posix_timers::PosixTimers as Persist>::KIND;
const PARENT_DEATH_SIGNAL: &str = <crp_compound::thread_attrs::ParentDeathSignal as Persist>::KIND;

/// `(earlier, later, why)`: `earlier` must run before `later`.
pub const ORDER: &[(&str, &str, &str)] = &[
    (
        CRP_MAPPINGS,
        VDSO,
        "crp's own mappings are cleared around the vDSO block where it is now: moved first, it would be unmapped \
         with them",
    ),
    (
        CRP_MAPPINGS,
        MEMORY,
        "clearing unmaps everything but the gadget and the vDSO block: the image's mappings would go with crp's",
    ),
    (
        VDSO,
        MEMORY,
        "the image's mappings are made at fixed addresses, where the child's vDSO block may lie until it moves",
    ),
    (THREADS, <crp_compound::signals::ThreadSignals as Persist>::KIND, "each thread sets its own alternate stack"),
    (THREADS, <crp_locks::LockState as Persist>::KIND, "each thread registers its own robust list and rseq area"),
    (THREADS, THREAD_ATTRIBUTES, "each thread sets its own name, affinity and scheduling"),
    (THREADS, THREAD_PENDING_SIGNALS, "a thread's own signals are queued to it"),
    (
        THREADS,
        <crp_compound::task::TaskIdentity as Persist>::KIND,
        "the personality is each thread's own: it is set in every thread",
    ),
    (
        THREADS,
        <crp_compound::creds::Credentials as Persist>::KIND,
        "clone3 with set_tid needs crp's CAP_SYS_ADMIN, and each thread's credentials are its own",
    ),
    (THREADS, PARENT_DEATH_SIGNAL, "each thread's parent-death signal is its own"),
    (
        SESSION,
        <crp_compound::files::FdTable as Persist>::KIND,
        "/dev/tty is the controlling terminal of the session the process ends up in, and a terminal opened \
         before setsid would stay tied to crp restore's session",
    ),
    (MEMORY, <crp_compound::mm::MmFields as Persist>::KIND, "PR_SET_MM_MAP checks its addresses against the mappings"),
    (MEMORY, <crp_locks::LockState as Persist>::KIND, "rseq and the robust list point into the process's memory"),
    (
        <crp_compound::files::FdTable as Persist>::KIND,
        <crp_compound::creds::Credentials as Persist>::KIND,
        "files are opened with crp's credentials (or the image owner's file-system ids), not the process's",
    ),
    (
        <crp_compound::task::TaskIdentity as Persist>::KIND,
        <crp_compound::creds::Credentials as Persist>::KIND,
        "the cwd is entered with crp's privileges",
    ),
    (
        THREAD_ATTRIBUTES,
        <crp_compound::creds::Credentials as Persist>::KIND,
        "a lower nice value, a real-time policy or I/O class need crp's CAP_SYS_NICE",
    ),
    (MEMORY, PROCESS_ATTRIBUTES, "PR_SET_MDWE refuses executable mappings made after it"),
    (
        <crp_compound::files::FdTable as Persist>::KIND,
        DESCRIPTOR_MAPPINGS,
        "a memfd's or deleted file's mappings are mapped from its restored descriptor",
    ),
    (MEMORY, DESCRIPTOR_MAPPINGS, "the page runs of the other mappings are written by the memory step alone"),
    (
        DESCRIPTOR_MAPPINGS,
        FUTURE_LOCKING,
        "after mlockall(MCL_FUTURE) every mapping made is locked: the process's own last",
    ),
    (
        <crp_compound::pending_signals::SharedPendingSignals as Persist>::KIND,
        POSIX_TIMERS,
        "a timer that fires during the restore queues its signal after those pending at the dump",
    ),
    (POSIX_TIMERS, <crp_compound::creds::Credentials as Persist>::KIND, "an _ALARM clock needs crp's CAP_WAKE_ALARM"),
    (
        <crp_compound::files::FdTable as Persist>::KIND,
        FILE_LOCKS,
        "locks are taken through the restored descriptors, and closing any descriptor of a file drops the process's \
         POSIX locks on it",
    ),
    (FILE_LOCKS, <crp_compound::creds::Credentials as Persist>::KIND, "a lease on another user's file needs CAP_LEASE"),
    (
        <crp_compound::signals::SignalState as Persist>::KIND,
        <crp_compound::pending_signals::SharedPendingSignals as Persist>::KIND,
        "setting a disposition to SIG_IGN discards the signal's pending instances",
    ),
    (
        <crp_compound::signals::SignalState as Persist>::KIND,
        <crp_compound::pending_signals::ThreadPendingSignals as Persist>::KIND,
        "setting a disposition to SIG_IGN discards the signal's pending instances",
    ),
    (
        PROCESS_ATTRIBUTES,
        <crp_compound::creds::Credentials as Persist>::KIND,
        "the process writes its own loginuid with crp's CAP_AUDIT_CONTROL",
    ),
    (
        <crp_compound::rlimits::ResourceLimits as Persist>::KIND,
        <crp_compound::creds::Credentials as Persist>::KIND,
        "raising a hard limit needs crp's privileges",
    ),
    (
        <crp_compound::creds::Credentials as Persist>::KIND,
        PARENT_DEATH_SIGNAL,
        "the kernel clears the parent-death signal when the effective or file-system ids change (commit_creds)",
    ),
    (<crp_compound::files::FdTable as Persist>::KIND, DESCRIPTOR_OWNERS, "an owner is set on a descriptor in place"),
    (
        <crp_compound::creds::Credentials as Persist>::KIND,
        DESCRIPTOR_OWNERS,
        "F_SETOWN records the caller's credentials, which decide whether SIGIO may be sent to the owner",
    ),
];

/// The kind that comes after every other, and why.
pub const FINAL: (&str, &str) = (REGISTERS, "the next instruction the thread runs is its own");

/// The kind that must be last of everything that needs crp's privileges:
/// from then on the process is its own user and crp's privileges are gone
/// from it.
pub const LAST: &str = <crp_compound::creds::Credentials as Persist>::KIND;

/// The only kinds that may follow [`LAST`], each with why: a credential
/// change resets them, and setting them needs no privilege. (Dumpable and
/// no_new_privs, reset or made final the same way, are the credentials'
/// own last acts.)
pub const AFTER_CREDENTIALS: &[(&str, &str)] = &[
    (
        PARENT_DEATH_SIGNAL,
        "commit_creds clears it when the ids change, and PR_SET_PDEATHSIG is allowed to any process for itself",
    ),
    (DESCRIPTOR_OWNERS, "sigio_perm checks the credentials F_SETOWN recorded, and F_SETOWN needs no privilege"),
    (
        REGISTERS,
        "crp loads them from outside with ptrace (its own hold on the child), not the process with its privileges",
    ),
];

/// Checks a sequence of kinds against [`ORDER`], [`FINAL`], [`LAST`] and
/// [`AFTER_CREDENTIALS`].
pub fn check_order(kinds: &[&str]) -> Result<(), String> {
    let position = |kind: &str| kinds.iter().position(|candidate| *candidate == kind);
    let (last_of_all, why) = FINAL;
    if let Some(kind) = position(last_of_all).and_then(|last| kinds.get(last + 1)) {
        return Err(format!("{kind} must come before {last_of_all}: {why}"));
    }
    for (earlier, later, why) in ORDER {
        if let (Some(first), Some(second)) = (position(earlier), position(later))
            && first > second
        {
            return Err(format!("{earlier} must come before {later}: {why}"));
        }
    }
    let after = position(LAST).map_or(&[][..], |last| &kinds[last + 1..]);
    match after.iter().find(|kind| !AFTER_CREDENTIALS.iter().any(|(allowed, _)| allowed == *kind)) {
        Some(kind) => Err(format!("{LAST} must come after {kind}: only what a credential change resets may follow")),
        None => Ok(()),
    }
}

/// Runs `steps` in order.
pub fn run(steps: &[Step], rebuild: &mut Rebuild<'_>) -> Result<(), CrpError> {
    for step in steps {
        (step.run)(rebuild)?;
        tracing::debug!(kind = step.kind, "restored");
    }
    if steps.iter().any(|step| step.kind == LAST) {
        tracing::info!("state restored, credentials last of what needs crp's privileges");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(steps: &[&[Step]]) -> Vec<&'static str> {
        steps.iter().flat_map(|steps| steps.iter().map(|step| step.kind)).collect()
    }

    #[test]
    fn both_back_ends_plans_keep_every_order_rule() {
        check_order(&kinds(&[BY_INJECTION, FINISH, RELEASE])).unwrap();
        check_order(&kinds(&[BEFORE_MODULE, FINISH, RELEASE])).unwrap();
    }

    #[test]
    fn the_vdso_moves_after_crp_s_mappings_go_and_before_the_image_s_come() {
        let mut swapped = kinds(&[BY_INJECTION, FINISH]);
        swapped.swap(0, 1);
        assert!(check_order(&swapped).unwrap_err().contains("unmapped with them"));
        let mut late = kinds(&[BY_INJECTION, FINISH]);
        late.swap(1, 2);
        let refusal = check_order(&late).unwrap_err();
        assert!(refusal.starts_with("vDSO placement must come before memory"), "{refusal}");
    }

    #[test]
    fn the_registers_come_after_every_other_kind() {
        let all = kinds(&[BY_INJECTION, FINISH, RELEASE]);
        assert_eq!(all.last(), Some(&REGISTERS));
        for earlier in 0..all.len() - 1 {
            let mut moved = all.clone();
            let registers = moved.pop().unwrap();
            moved.insert(earlier, registers);
            let refusal = check_order(&moved).unwrap_err();
            assert!(refusal.ends_with("the next instruction the thread runs is its own"), "{refusal}");
        }
    }

    #[test]
    fn a_plan_that_moves_credentials_before_descriptors_is_refused() {
        let mut moved = kinds(&[BY_INJECTION, FINISH]);
        let credentials = moved.iter().position(|kind| *kind == LAST).unwrap();
        let kind = moved.remove(credentials);
        let descriptors =
            moved.iter().position(|kind| *kind == <crp_compound::files::FdTable as Persist>::KIND).unwrap();
        moved.insert(descriptors, kind);
        let refusal = check_order(&moved).unwrap_err();
        assert!(refusal.contains("descriptors must come before credentials"), "{refusal}");
    }

    #[test]
    fn a_plan_that_sets_mm_fields_before_memory_is_refused() {
        let mut swapped = kinds(&[BY_INJECTION, FINISH]);
        swapped.swap(2, 3);
        assert!(check_order(&swapped).unwrap_err().contains("PR_SET_MM_MAP"));
    }

    #[test]
    fn the_parent_death_signal_comes_after_the_credentials_and_nothing_else_does() {
        let mut moved = kinds(&[BY_INJECTION, FINISH]);
        let signal = moved.iter().position(|kind| *kind == PARENT_DEATH_SIGNAL).unwrap();
        let credentials = moved.iter().position(|kind| *kind == LAST).unwrap();
        assert!(signal > credentials, "{moved:?}");
        moved.swap(signal, credentials);
        let refusal = check_order(&moved).unwrap_err();
        assert!(refusal.contains("commit_creds"), "{refusal}");

        let mut late = kinds(&[BY_INJECTION, FINISH]);
        let attributes = late.iter().position(|kind| *kind == PROCESS_ATTRIBUTES).unwrap();
        let kind = late.remove(attributes);
        late.push(kind);
        let refusal = check_order(&late).unwrap_err();
        assert!(refusal.contains("must come before credentials") || refusal.contains("only what"), "{refusal}");

        let mut timers_last = kinds(&[FINISH]);
        let timers =
            timers_last.iter().position(|kind| *kind == <crp_compound::timers::IntervalTimers as Persist>::KIND);
        let kind = timers_last.remove(timers.unwrap());
        timers_last.push(kind);
        let refusal = check_order(&timers_last).unwrap_err();
        assert!(refusal.contains("only what a credential change resets may follow"), "{refusal}");
    }

    #[test]
    fn thread_attributes_are_set_with_crp_s_privileges() {
        let mut moved = kinds(&[FINISH]);
        let attributes = moved.iter().position(|kind| *kind == THREAD_ATTRIBUTES).unwrap();
        let kind = moved.remove(attributes);
        let credentials = moved.iter().position(|kind| *kind == LAST).unwrap();
        moved.insert(credentials + 1, kind);
        assert!(check_order(&moved).unwrap_err().contains("CAP_SYS_NICE"));
    }

    #[test]
    fn threads_are_made_before_any_kind_set_in_each_of_them() {
        let mut moved = kinds(&[BY_INJECTION, FINISH]);
        let threads = moved.iter().position(|kind| *kind == THREADS).unwrap();
        let kind = moved.remove(threads);
        let credentials = moved.iter().position(|kind| *kind == LAST).unwrap();
        moved.insert(credentials + 1, kind);
        let refusal = check_order(&moved).unwrap_err();
        assert!(refusal.starts_with("threads must come before"), "{refusal}");
    }

    #[test]
    fn every_kind_appears_once() {
        let all = kinds(&[BY_INJECTION, FINISH, RELEASE]);
        for kind in &all {
            assert_eq!(all.iter().filter(|other| *other == kind).count(), 1, "{kind}");
        }
    }
}
