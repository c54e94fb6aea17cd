//! The general registers and the XSAVE area of a stopped task.

use crp_ptrace::Registers;
use nix::sys::ptrace;
use nix::unistd::Pid;

use crate::error::ArchError;
use crate::xsave::XsaveArea;

/// `user_regs_struct` as a flat array, in the kernel's field order, so it
/// archives without depending on libc's struct.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RegisterFile {
    pub values: Vec<u64>,
}

macro_rules! register_fields {
    ($($field:ident),* $(,)?) => {
        const REGISTER_NAMES: &[&str] = &[$(stringify!($field)),*];

        impl RegisterFile {
            pub fn from_registers(registers: &Registers) -> Self {
                Self { values: vec![$(registers.$field),*] }
            }

            pub fn to_registers(&self) -> Result<Registers, ArchError> {
                if self.values.len() != REGISTER_NAMES.len() {
                    return Err(ArchError::RegisterCount {
                        found: self.values.len(),
                        expected: REGISTER_NAMES.len(),
                    });
                }
                // SAFETY: user_regs_struct is plain integers; all-zero is valid.
                let mut registers: Registers = unsafe { std::mem::zeroed() };
                let mut values = self.values.iter().copied();
                $(registers.$field = values.next().unwrap_or(0);)*
                Ok(registers)
            }
        }
    };
}

register_fields!(
    r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss,
    fs_base, gs_base, ds, es, fs, gs,
);

impl RegisterFile {
    /// `(name, value)` pairs for display.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REGISTER_NAMES.iter().copied().zip(self.values.iter().copied())
    }
}

/// Everything arch-specific about the CPU side of one task.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CpuState {
    /// As frozen: an interrupted syscall still shows its -ERESTART* code.
    pub registers: RegisterFile,
    pub xsave: XsaveArea,
}

impl CpuState {
    /// Captures the state of a stopped tracee. `registers` are the ones seen
    /// at the freeze (the engine may have changed the live ones since).
    pub fn capture(pid: Pid, registers: &Registers) -> Result<Self, ArchError> {
        let area = crp_ptrace::sys::get_xstate(pid).map_err(|errno| ArchError::Ptrace {
            operation: "PTRACE_GETREGSET(NT_X86_XSTATE)",
            pid: pid.as_raw(),
            errno,
        })?;
        Ok(Self {
            registers: RegisterFile::from_registers(registers),
            xsave: XsaveArea::new(area, crate::xsave::host_xsave_features())?,
        })
    }

    /// Loads the XSAVE area and then `registers` into the stopped task.
    pub fn load(&self, pid: Pid, registers: Registers) -> Result<(), ArchError> {
        let ptrace_error = |operation| move |errno| ArchError::Ptrace { operation, pid: pid.as_raw(), errno };
        let live = crp_ptrace::sys::get_xstate(pid).map_err(ptrace_error("PTRACE_GETREGSET(NT_X86_XSTATE)"))?;
        let fitted = self.xsave.fitted_to(&live, crate::xsave::host_xsave_features())?;
        crp_ptrace::sys::set_xstate(pid, &fitted).map_err(ptrace_error("PTRACE_SETREGSET(NT_X86_XSTATE)"))?;
        ptrace::setregs(pid, registers).map_err(ptrace_error("PTRACE_SETREGS"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_file_round_trips() {
        // SAFETY: plain integers.
        let mut registers: Registers = unsafe { std::mem::zeroed() };
        registers.rip = 0x401000;
        registers.fs_base = 0x7f00_1234_5000;
        registers.gs = 7;
        let file = RegisterFile::from_registers(&registers);
        assert_eq!(file.values.len(), 27);
        let back = file.to_registers().unwrap();
        assert_eq!(back.rip, 0x401000);
        assert_eq!(back.fs_base, 0x7f00_1234_5000);
        assert_eq!(back.gs, 7);
        assert!(RegisterFile { values: vec![1, 2] }.to_registers().is_err());
    }
}
