//! `ProcessImage`: the metadata of one checkpointed process, composed of
//! each category's own state. It is the rkyv archive stored in the image.

use crp_arch_x86::{CpuState, VdsoLayout};
use crp_compound::creds::Credentials;
use crp_compound::files::FdTable;
use crp_compound::mm::MmFields;
use crp_compound::rlimits::ResourceLimits;
use crp_compound::signals::SignalState;
use crp_compound::task::TaskIdentity;
use crp_compound::timers::IntervalTimers;
use crp_compound::vma::VmaRecord;
use crp_locks::LockState;

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProcessImage {
    pub pid: i32,
    /// `uname -r` of the dumping kernel, for the record.
    pub kernel_release: String,
    pub dumped_at_unix_seconds: u64,
    /// Arch-dependent state.
    pub cpu: CpuState,
    pub vdso: VdsoLayout,
    /// Compound state.
    pub vmas: Vec<VmaRecord>,
    pub mm: MmFields,
    pub files: FdTable,
    pub signals: SignalState,
    pub task: TaskIdentity,
    pub credentials: Credentials,
    pub rlimits: ResourceLimits,
    pub timers: IntervalTimers,
    /// Locks and registrations.
    pub locks: LockState,
}

/// The running kernel's release string.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map(|name| name.release().to_string_lossy().into_owned()).unwrap_or_default()
}
