//! Rebuilding the process from outside: every VMA, page and kind of state
//! set by injected syscalls, ptrace and process_vm_writev.

use crp_arch_x86::{VdsoLayout, resume_registers};
use crp_ptrace::{EngineError, Injector, Tracee, TraceeExt};
use nix::unistd::Pid;

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
        let Rebuild { injector, pid, image, threads, .. } = rebuild;
        // The gadget unmaps itself; the step stops at the syscall's exit,
        // before the next instruction would be fetched from the gone page.
        injector.syscall("munmap(gadget)", libc::SYS_munmap, [gadget.address, bootstrap::GADGET_BYTES, 0, 0, 0, 0])?;

        let tids = std::iter::once(*pid).chain(threads.iter().map(|thread| Pid::from_raw(thread.pid())));
        for (tid, state) in tids.zip(&image.threads) {
            load_thread(tid, state)?;
        }
        Ok(())
    }
}

/// Loads one thread's registers, XSAVE area and blocked mask: the last
/// thing before it runs.
fn load_thread(tid: Pid, state: &crate::model::ThreadState) -> Result<(), CrpError> {
    let frozen = state.cpu.registers.to_registers()?;
    state.cpu.load(tid, resume_registers(&frozen))?;
    crp_ptrace::sys::set_sigmask(tid, state.signals.blocked).map_err(|errno| EngineError::Ptrace {
        operation: "PTRACE_SETSIGMASK",
        pid: tid.as_raw(),
        errno,
    })?;
    Ok(())
}
