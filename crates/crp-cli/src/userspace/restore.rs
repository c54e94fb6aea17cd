//! Rebuilding the process from outside: every VMA, page and kind of state
//! set by injected syscalls, ptrace and process_vm_writev.

use crp_arch_x86::{VdsoLayout, resume_registers};
use crp_ptrace::{EngineError, Injector, TraceeExt};

use crate::backend::RestoreBackend;
use crate::error::CrpError;
use crate::plan::{self, Rebuild};
use crate::restore::bootstrap::{self, Gadget};

/// The userspace back end's restore side.
#[derive(Debug)]
pub struct Restore;

impl RestoreBackend for Restore {
    /// crp's own mappings go (all but the gadget and the vDSO), so that the
    /// image's can take their place.
    fn prepare(&self, injector: &mut Injector, gadget: Gadget, live_vdso: &VdsoLayout) -> Result<(), CrpError> {
        bootstrap::clear_address_space(injector, gadget, live_vdso)
    }

    fn rebuild(&self, rebuild: &mut Rebuild<'_>, gadget: Gadget) -> Result<(), CrpError> {
        plan::run(plan::BY_INJECTION, rebuild)?;
        plan::run(plan::FINISH, rebuild)?;
        let Rebuild { injector, pid, image, .. } = rebuild;
        // The gadget unmaps itself; the step stops at the syscall's exit,
        // before the next instruction would be fetched from the gone page.
        injector.syscall("munmap(gadget)", libc::SYS_munmap, [gadget.address, bootstrap::GADGET_BYTES, 0, 0, 0, 0])?;

        let leader = image.leader()?;
        let frozen = leader.cpu.registers.to_registers()?;
        leader.cpu.load(*pid, resume_registers(&frozen))?;
        crp_ptrace::sys::set_sigmask(*pid, leader.signals.blocked).map_err(|errno| EngineError::Ptrace {
            operation: "PTRACE_SETSIGMASK",
            pid: pid.as_raw(),
            errno,
        })?;
        Ok(())
    }
}
