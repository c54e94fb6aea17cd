//! `ProcessImage`: the metadata of one checkpointed process, composed of
//! each category's own state. It is the rkyv archive stored in the image.
//! What Linux keeps per thread (registers, XSAVE, fs/gs base, the blocked
//! mask and alternate stack, the robust list, rseq and clear_child_tid,
//! the name, affinity, scheduling, timer slack, I/O priority and
//! parent-death signal) is in [`ThreadState`], one per thread; the rest is
//! the process's.

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
use crp_compound::vma::{FutureLocking, GuardRegion, Memory, SharedMemory, VmaRecord};
use crp_locks::{FileLocks, LockState};

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProcessImage {
    pub pid: i32,
    /// `uname -r` of the dumping kernel, for the record.
    pub kernel_release: String,
    pub dumped_at_unix_seconds: u64,
    /// Every thread, the leader (tid == pid) first. One for now: crp
    /// refuses processes with more threads.
    pub threads: Vec<ThreadState>,
    pub vdso: VdsoLayout,
    /// Compound state.
    pub vmas: Vec<VmaRecord>,
    /// The shared memory objects `vmas` map (`Backing::Shared`).
    pub shared_memory: SharedMemory,
    /// mlockall(MCL_FUTURE): mappings made from now on are locked.
    pub future_locking: FutureLocking,
    /// Guard regions (MADV_GUARD_INSTALL), in address order.
    pub guard_regions: Vec<GuardRegion>,
    pub mm: MmFields,
    pub files: FdTable,
    pub signals: SignalState,
    pub task: TaskIdentity,
    pub credentials: Credentials,
    pub rlimits: ResourceLimits,
    pub timers: IntervalTimers,
    /// THP disable, membarrier registrations, oom_score_adj, subreaper, MDWE.
    pub attributes: ProcessAttributes,
    /// Session, process group, controlling terminal and its settings.
    pub session: SessionState,
    /// Signals queued for the whole process, in queue order.
    pub pending_signals: SharedPendingSignals,
    /// POSIX timers (timer_create), by id.
    pub posix_timers: PosixTimers,
    /// File locks (POSIX, OFD, flock, leases), taken again at restore.
    pub file_locks: FileLocks,
    /// Its parent image and inherited pages (incremental dumps), and the
    /// change tracking its dump left armed.
    pub chain: crate::incremental::ChainRecord,
}

/// What the kernel keeps for one thread.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ThreadState {
    pub tid: i32,
    /// Registers, XSAVE area, fs/gs base.
    pub cpu: CpuState,
    /// Blocked mask and alternate stack.
    pub signals: ThreadSignals,
    /// Robust list, rseq registration, clear_child_tid.
    pub locks: LockState,
    /// Name, CPU affinity, scheduling, timer slack, I/O priority,
    /// machine-check policy, TSC mode, speculation controls, parent-death
    /// signal.
    pub attributes: ThreadAttributes,
    /// Signals queued for this thread alone, in queue order.
    pub pending_signals: ThreadPendingSignals,
}

impl ProcessImage {
    /// The memory kind, put together from the three fields the image
    /// keeps it in.
    pub fn memory(&self) -> Memory {
        Memory {
            vmas: self.vmas.clone(),
            shared_memory: self.shared_memory.clone(),
            guard_regions: self.guard_regions.clone(),
        }
    }

    /// The thread-group leader's state (first, with tid == pid); an image
    /// without one is refused by `load_image`.
    pub fn leader(&self) -> Result<&ThreadState, crate::CrpError> {
        self.threads.first().filter(|thread| thread.tid == self.pid).ok_or_else(|| crate::CrpError::InvalidImage {
            reason: format!("threads: the first is not the leader (tid {})", self.pid),
        })
    }
}

/// The running kernel's release string.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map(|name| name.release().to_string_lossy().into_owned()).unwrap_or_default()
}
