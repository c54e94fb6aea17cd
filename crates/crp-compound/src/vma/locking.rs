//! `mlockall(MCL_FUTURE)`: the lock the kernel puts on every mapping made
//! from then on (`mm->def_flags`), which no /proc file shows. The dump sees
//! it on a probe: the scratch mapping it injects is locked (smaps `lo`, and
//! `lf` with MCL_ONFAULT) exactly when the process asked for it. Locks of
//! existing mappings are VMA flags ([`super::VmaFlags::LOCKED`]).

use crp_ptrace::{EngineError, Tracee, TraceeExt};

use crate::error::CompoundError;

/// `MCL_FUTURE` and `MCL_ONFAULT`.
const MCL_FUTURE: u64 = 2;
const MCL_ONFAULT: u64 = 4;

/// Whether new mappings of the process are locked (mlockall MCL_FUTURE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FutureLocking {
    pub future: bool,
    /// MCL_ONFAULT with it: pages locked as they are faulted in.
    pub on_fault: bool,
}

impl FutureLocking {
    /// Reads it from the flags of the mapping at `probe` (one the dump
    /// injected while the process was parked), from /proc/PID/smaps.
    pub fn from_probe(pid: i32, probe: u64) -> Result<Self, CompoundError> {
        let maps = crp_ptrace::procfs::smaps(pid)?;
        let Some(entry) = maps.iter().find(|entry| entry.start <= probe && probe < entry.end) else {
            return Ok(Self::default());
        };
        Ok(Self { future: entry.has_flag("lo"), on_fault: entry.has_flag("lf") })
    }

    /// `mlockall(MCL_FUTURE [| MCL_ONFAULT])` in the process being
    /// restored, once its memory is in place: mappings made later are
    /// locked. MCL_CURRENT is not needed: each locked VMA is locked again
    /// by itself.
    pub fn restore(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        if !self.future {
            return Ok(());
        }
        let flags = MCL_FUTURE | if self.on_fault { MCL_ONFAULT } else { 0 };
        tracee.syscall("mlockall", libc::SYS_mlockall, [flags, 0, 0, 0, 0, 0]).map(drop)
    }

    pub fn describe(&self) -> &'static str {
        match (self.future, self.on_fault) {
            (false, _) => "none",
            (true, false) => "mlockall(MCL_FUTURE)",
            (true, true) => "mlockall(MCL_FUTURE|MCL_ONFAULT)",
        }
    }
}

/// The flags word of the probe's arguments, for tests.
#[cfg(test)]
fn flags_of(locking: FutureLocking) -> u64 {
    MCL_FUTURE | if locking.on_fault { MCL_ONFAULT } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_of_an_unlocked_process_says_none() {
        // SAFETY: a fresh private mapping of this test process, unmapped below.
        let probe = unsafe {
            libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        let found = FutureLocking::from_probe(std::process::id().cast_signed(), probe as u64).unwrap();
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(probe, 4096) };
        assert_eq!(found, FutureLocking::default());
        assert_eq!(found.describe(), "none");
        assert_eq!(flags_of(FutureLocking { future: true, on_fault: true }), 6);
    }
}
