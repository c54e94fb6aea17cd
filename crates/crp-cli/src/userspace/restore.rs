//! Rebuilding the process from outside: every VMA, page and kind of state
//! set by injected syscalls, ptrace and process_vm_writev.

use crp_ptrace::TraceeExt;

use crate::backend::RestoreBackend;
use crate::error::CrpError;
use crate::plan::{self, Rebuild};
use crate::restore::bootstrap;

/// The userspace back end's restore side.
#[derive(Debug)]
pub struct Restore;

impl RestoreBackend for Restore {
    fn rebuild(&self, rebuild: &mut Rebuild<'_>) -> Result<(), CrpError> {
        plan::run(plan::BY_INJECTION, rebuild)?;
        plan::run(plan::FINISH, rebuild)?;
        // The last injected syscall, before [`plan::RELEASE`] loads the
        // registers the threads run with: the gadget unmaps itself, and the
        // step stops at the syscall's exit, before the next instruction
        // would be fetched from the gone page.
        let bytes = bootstrap::GADGET_BYTES;
        let address = rebuild.gadget.address;
        rebuild.injector.syscall("munmap(gadget)", libc::SYS_munmap, [address, bytes, 0, 0, 0, 0])?;
        plan::run(plan::RELEASE, rebuild)
    }
}
