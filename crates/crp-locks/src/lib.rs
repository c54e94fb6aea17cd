//! Locks and lock-like registrations. None is copied as memory: the robust
//! futex list, the rseq area and clear_child_tid are registrations the
//! kernel holds for the task, re-made at restore (the futexes themselves are
//! plain memory and come back with the pages). File locks are taken again
//! at restore ([`file_locks`]).

mod file_locks;

use crp_ptrace::procfs::ProcError;
use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt};

/// `RSEQ_FLAG_UNREGISTER`.
const RSEQ_FLAG_UNREGISTER: u64 = 1;
/// `PR_GET_TID_ADDRESS`.
const PR_GET_TID_ADDRESS: u64 = 40;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{operation} on pid {pid}: {errno}")]
    Ptrace { operation: &'static str, pid: i32, errno: nix::errno::Errno },
    #[error(transparent)]
    Unsupported(#[from] crp_ptrace::Unsupported),
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("cannot take the {lock} on {path} (fd {fd}), {range}, again: {errno}{why}")]
    NotTakenAgain { lock: String, path: String, range: String, fd: i32, errno: nix::errno::Errno, why: &'static str },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A task's rseq registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RseqRegistration {
    pub address: u64,
    pub length: u32,
    pub signature: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LockState {
    pub robust_list_head: u64,
    pub robust_list_length: u64,
    pub rseq: Option<RseqRegistration>,
    pub clear_child_tid: u64,
}

pub use file_locks::{FileLock, FileLocks, LockKind, preflight};

fn rseq_of(tracee: &dyn Tracee) -> Result<Option<RseqRegistration>, LockError> {
    let configuration = tracee.rseq_configuration()?;
    Ok((configuration.rseq_abi_pointer != 0).then_some(RseqRegistration {
        address: configuration.rseq_abi_pointer,
        length: configuration.rseq_abi_size,
        signature: configuration.signature,
    }))
}

impl LockState {
    fn capture_from(tracee: &mut dyn Tracee) -> Result<Self, LockError> {
        let rseq = rseq_of(tracee)?;
        let mut scratch = tracee.scratch();
        let head_address = scratch.reserve(8);
        let length_address = scratch.reserve(8);
        let tid_address = scratch.reserve(8);
        scratch.commit(tracee)?;
        tracee.syscall("get_robust_list", libc::SYS_get_robust_list, [0, head_address, length_address, 0, 0, 0])?;
        tracee.syscall("prctl(PR_GET_TID_ADDRESS)", libc::SYS_prctl, [PR_GET_TID_ADDRESS, tid_address, 0, 0, 0, 0])?;
        let read_word = |tracee: &dyn Tracee, address| -> Result<u64, EngineError> {
            let mut word = [0u8; 8];
            tracee.read_memory(address, &mut word)?;
            Ok(u64::from_le_bytes(word))
        };
        Ok(Self {
            robust_list_head: read_word(tracee, head_address)?,
            robust_list_length: read_word(tracee, length_address)?,
            rseq,
            clear_child_tid: read_word(tracee, tid_address)?,
        })
    }

    /// Drops the rseq registration the restore child inherited from crp; it
    /// points into crp's TLS, which is about to be unmapped.
    pub fn unregister_inherited_rseq(tracee: &mut dyn Tracee) -> Result<(), LockError> {
        if let Some(inherited) = rseq_of(tracee)? {
            let args = [
                inherited.address,
                u64::from(inherited.length),
                RSEQ_FLAG_UNREGISTER,
                u64::from(inherited.signature),
                0,
                0,
            ];
            tracee.syscall("rseq(RSEQ_FLAG_UNREGISTER)", libc::SYS_rseq, args)?;
        }
        Ok(())
    }

    /// Re-registers robust list, clear_child_tid and rseq; the memory they
    /// point to must already be in place.
    fn restore_into(&self, tracee: &mut dyn Tracee) -> Result<(), LockError> {
        tracee.syscall(
            "set_robust_list",
            libc::SYS_set_robust_list,
            [self.robust_list_head, self.robust_list_length, 0, 0, 0, 0],
        )?;
        tracee.syscall("set_tid_address", libc::SYS_set_tid_address, [self.clear_child_tid, 0, 0, 0, 0, 0])?;
        self.register_rseq(tracee)
    }

    /// Registers the process's rseq area again (its memory must be in place).
    pub fn register_rseq(&self, tracee: &mut dyn Tracee) -> Result<(), LockError> {
        if let Some(rseq) = self.rseq {
            let args = [rseq.address, u64::from(rseq.length), 0, u64::from(rseq.signature), 0, 0];
            tracee.syscall("rseq", libc::SYS_rseq, args)?;
        }
        Ok(())
    }
}

impl Persist for LockState {
    const KIND: &'static str = "robust list, rseq and clear_child_tid";
    type Error = LockError;

    fn capture(context: &mut Capture<'_>) -> Result<Self, LockError> {
        Self::capture_from(context.tracee)
    }

    /// The memory these registrations point into must be in place.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), LockError> {
        self.restore_into(context.tracee)
    }
}

/// The kmod ABI: the robust list, rseq and clear_child_tid in the module's
/// task record.
impl LockState {
    pub fn from_abi(state: &crp_kmod_abi::CrpTaskState) -> Self {
        Self {
            robust_list_head: state.robust_list_head,
            robust_list_length: state.robust_list_length,
            rseq: (state.rseq_address != 0).then_some(RseqRegistration {
                address: state.rseq_address,
                length: state.rseq_length,
                signature: state.rseq_signature,
            }),
            clear_child_tid: state.clear_child_tid,
        }
    }

    /// Fills what `CRP_IOC_RESTORE` sets (rseq is registered from outside
    /// afterwards: see [`LockState::register_rseq`]).
    pub fn write_abi(&self, state: &mut crp_kmod_abi::CrpTaskState) {
        state.robust_list_head = self.robust_list_head;
        state.robust_list_length = self.robust_list_length;
        state.clear_child_tid = self.clear_child_tid;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_read_by_ptrace_and_injected_calls() {
        let mut process = FakeTracee::answering(|call, memory| {
            if call.number == libc::SYS_get_robust_list {
                memory.write(call.args[1], &0x7f00_0010u64.to_le_bytes());
                memory.write(call.args[2], &24u64.to_le_bytes());
            }
            if call.number == libc::SYS_prctl {
                memory.write(call.args[1], &0x7f00_0020u64.to_le_bytes());
            }
            0
        });
        process.rseq = crp_ptrace::sys::RseqConfiguration {
            rseq_abi_pointer: 0x7f00_1000,
            rseq_abi_size: 32,
            signature: 0x5305_3053,
            ..Default::default()
        };
        let proc = crp_ptrace::fake::snapshot();
        let state =
            LockState::capture(&mut Capture { tracee: &mut process, proc: &proc, stopped_before_freeze: false })
                .unwrap();
        assert_eq!((state.robust_list_head, state.robust_list_length), (0x7f00_0010, 24));
        assert_eq!(state.clear_child_tid, 0x7f00_0020);
        assert_eq!(state.rseq, Some(RseqRegistration { address: 0x7f00_1000, length: 32, signature: 0x5305_3053 }));
    }
    use crp_ptrace::fake::FakeTracee;

    #[test]
    fn robust_list_clear_child_tid_and_rseq_are_registered_again() {
        let state = LockState {
            robust_list_head: 0x7f00_0010,
            robust_list_length: 24,
            rseq: Some(RseqRegistration { address: 0x7f00_1000, length: 32, signature: 0x5305_3053 }),
            clear_child_tid: 0x7f00_0020,
        };
        let mut restored = FakeTracee::default();
        state.restore(&mut Restore::new(&mut restored)).unwrap();
        assert_eq!(restored.calls_of(libc::SYS_set_robust_list)[0].args[..2], [0x7f00_0010, 24]);
        assert_eq!(restored.calls_of(libc::SYS_set_tid_address)[0].args[0], 0x7f00_0020);
        let rseq = restored.calls_of(libc::SYS_rseq)[0];
        assert_eq!((rseq.args[0], rseq.args[1], rseq.args[3]), (0x7f00_1000, 32, 0x5305_3053));
    }
}
