//! The two back ends behind one pair of traits: [`DumpBackend`] reads a
//! frozen process's state, [`RestoreBackend`] rebuilds it in the prepared
//! child. The command line's [`Backend`] is turned into one of them once,
//! at the top of `dump()` and `restore()`; nothing after that asks which
//! one runs. The userspace back end is in [`crate::userspace`], the kmod
//! back end in [`crate::kmod`]; they share the rules of each kind of state
//! (the category crates), not code of each other's.

use std::path::Path;

use crp_compound::CompoundError;
use crp_compound::vma::{Mapping, VmaRecord};
use crp_ptrace::{Frozen, FrozenProcess, procfs};
use nix::unistd::Pid;

use crate::error::CrpError;
use crate::model::ProcessImage;
use crate::plan::Rebuild;

/// How crp reads and rebuilds process state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// ptrace, /proc and injected syscalls: any kernel with
    /// CONFIG_CHECKPOINT_RESTORE, no module.
    #[default]
    Userspace,
    /// The crp kernel module (`/dev/crp`).
    Kmod,
}

/// The process's state, and for each of its VMAs the kB smaps says are
/// resident or swapped (None when unknown).
#[derive(Debug)]
pub struct Captured {
    pub state: ProcessImage,
    pub populated_kb: Vec<Option<u64>>,
}

/// Reads a frozen process.
pub trait DumpBackend: std::fmt::Debug {
    /// Every kind of state but the pages, from the frozen process (every
    /// thread of it) and what /proc said once it was frozen (its memory
    /// map included); `stopped` says it was in a group stop before the
    /// freeze.
    fn capture(&self, frozen: &mut FrozenProcess, proc: &procfs::Snapshot, stopped: bool)
    -> Result<Captured, CrpError>;

    /// Copies the frozen process's memory at `address` into `buffer`.
    fn read_memory(&self, pid: Pid, address: u64, buffer: &mut [u8]) -> std::io::Result<()>;
}

/// Rebuilds the process in the restore child.
pub trait RestoreBackend: std::fmt::Debug {
    /// Re-establishes every kind of state and the registers in the child
    /// (crp's gadget mapped, the injector pointing at it); on return the
    /// child is ready to be released.
    fn rebuild(&self, rebuild: &mut Rebuild<'_>) -> Result<(), CrpError>;
}

/// Size of the scratch mapping injected for syscall arguments at dump.
pub(crate) const SCRATCH_BYTES: usize = 16 << 10;

/// Parks the frozen process for injected syscalls (both back ends read
/// some kinds that way). Parked, the process survives crp's death at any
/// moment: it resumes where it was frozen (see crp_ptrace::Frozen).
pub(crate) fn park(frozen: &mut Frozen, maps: &[procfs::MapsEntry]) -> Result<(), CrpError> {
    let registers = *frozen.registers();
    let syscall_ip = find_syscall_instruction(frozen.pid(), &registers, maps)?;
    frozen.park(maps, syscall_ip, crp_arch_x86::resume_registers(&registers))?;
    tracing::info!(pid = frozen.pid().as_raw(), syscall_ip = format_args!("{syscall_ip:#x}"), "parked");
    Ok(())
}

/// An address holding `syscall` to inject through: right before RIP when
/// the process stopped in a syscall, else one inside the vDSO.
fn find_syscall_instruction(
    pid: Pid,
    registers: &crp_ptrace::Registers,
    maps: &[procfs::MapsEntry],
) -> Result<u64, CrpError> {
    if let Some(address) = crp_ptrace::syscall_before(pid, registers.rip) {
        return Ok(address);
    }
    match maps.iter().find(|entry| entry.name == "[vdso]") {
        Some(vdso) => Ok(crp_ptrace::syscall_in(pid, vdso.start, vdso.end)?),
        None => Err(crp_ptrace::EngineError::NoSyscallInstruction { pid: pid.as_raw() }.into()),
    }
}

/// The record of a mapping either back end read, refusing (exit code 3,
/// naming the process) what crp cannot restore.
pub(crate) fn vma_record(pid: i32, mapping: Mapping<'_>) -> Result<VmaRecord, CrpError> {
    mapping.record().map_err(|error| lift_unsupported(pid, error))
}

/// A category crate's error, a refusal of what crp cannot checkpoint named
/// as one of the process `pid` (exit code 3).
pub(crate) fn lift_unsupported(pid: i32, error: CompoundError) -> CrpError {
    match error {
        CompoundError::Unsupported(unsupported) => CrpError::unsupported(pid, unsupported),
        other => other.into(),
    }
}

impl Backend {
    /// The dump side of the chosen back end; a missing module fails here,
    /// before the process is touched.
    pub fn for_dump(self) -> Result<Box<dyn DumpBackend>, CrpError> {
        Ok(match self {
            Self::Userspace => Box::new(crate::userspace::Dump),
            Self::Kmod => Box::new(crate::kmod::Dump::open()?),
        })
    }

    /// The restore side of the chosen back end, for the image at `image`.
    /// What it holds open (the kmod back end's device and image file) the
    /// restore child inherits.
    pub fn for_restore(self, image: &Path) -> Result<Box<dyn RestoreBackend>, CrpError> {
        Ok(match self {
            Self::Userspace => Box::new(crate::userspace::Restore),
            Self::Kmod => Box::new(crate::kmod::Restore::open(image)?),
        })
    }
}
