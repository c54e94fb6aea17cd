//! `mlockall(MCL_FUTURE)`: the lock the kernel puts on every mapping made
//! from then on (`mm->def_flags`), which no /proc file shows. The dump sees
//! it on a probe page it maps by injection and unmaps again: the process's
//! locked memory (`VmLck`) grows by the page exactly when new mappings are
//! locked, and the page is populated at once unless MCL_ONFAULT was asked
//! for. (smaps would show the probe's `lo`/`lf` flags too, but reading it
//! walks every page of the process.) Locks of existing mappings are VMA
//! flags ([`super::VmaFlags::LOCKED`]).

use crp_ptrace::{EngineError, Tracee, TraceeExt};

use crate::error::CompoundError;

const PAGE: u64 = 4096;

/// `VmLck` of /proc/PID/status: the kB in locked mappings.
fn locked_kb(pid: i32) -> Result<u64, CompoundError> {
    let status = crp_ptrace::procfs::Fields::status(pid)?;
    let value = status.field("VmLck")?;
    let kb = value.trim().trim_end_matches("kB").trim();
    kb.parse().map_err(|_| {
        CompoundError::from(crp_ptrace::procfs::ProcError::Field {
            path: format!("/proc/{pid}/status").into(),
            field: "VmLck".to_owned(),
            value: value.to_owned(),
            reason: "not a size in kB".to_owned(),
        })
    })
}

/// Whether the page at `address` is present (bit 63 of its pagemap entry).
fn is_populated(pid: i32, address: u64) -> Result<bool, CompoundError> {
    use std::os::unix::fs::FileExt;
    let path = format!("/proc/{pid}/pagemap");
    let file = std::fs::File::open(&path).map_err(CompoundError::io("open", &path))?;
    let mut entry = [0u8; 8];
    file.read_exact_at(&mut entry, address / PAGE * 8).map_err(CompoundError::io("read", &path))?;
    Ok(u64::from_le_bytes(entry) >> 63 == 1)
}

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
    /// Reads it from a probe page mapped in `tracee` (parked) and unmapped
    /// again.
    pub fn capture(tracee: &mut dyn Tracee) -> Result<Self, CompoundError> {
        let pid = tracee.pid();
        let before = locked_kb(pid)?;
        let (read_only, private_anonymous) = (libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
        let args = [0, PAGE, crp_ptrace::arg(read_only), crp_ptrace::arg(private_anonymous), u64::MAX, 0];
        let probe = tracee.syscall("mmap(crp's probe page)", libc::SYS_mmap, args)?;
        let seen = locked_kb(pid).and_then(|after| Ok((after, is_populated(pid, probe)?)));
        tracee.syscall("munmap(crp's probe page)", libc::SYS_munmap, [probe, PAGE, 0, 0, 0, 0])?;
        let (after, populated) = seen?;
        let future = after >= before + PAGE / 1024;
        Ok(Self { future, on_fault: future && !populated })
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
    fn locked_memory_and_presence_are_read_from_proc() {
        let pid = std::process::id().cast_signed();
        // This test process locks nothing.
        assert_eq!(locked_kb(pid).unwrap(), 0);
        let page = vec![1u8; 8192];
        let address = (page.as_ptr() as u64).next_multiple_of(PAGE);
        assert!(is_populated(pid, address).unwrap());
        let describe = |future, on_fault| FutureLocking { future, on_fault }.describe();
        assert_eq!(describe(false, false), "none");
        assert_eq!(describe(true, true), "mlockall(MCL_FUTURE|MCL_ONFAULT)");
        assert_eq!(flags_of(FutureLocking { future: true, on_fault: true }), 6);
    }
}
