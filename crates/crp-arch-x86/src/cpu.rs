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

/// `__USER_CS` and `__USER_DS` on x86_64: the selectors of every 64-bit
/// task in user mode.
const USER_CS: u64 = 0x33;
const USER_DS: u64 = 0x2b;
/// `TASK_SIZE_MAX` with 4-level paging: ptrace refuses a base at or above it.
const TASK_SIZE_MAX: u64 = 0x7fff_ffff_f000;

impl RegisterFile {
    /// The registers, after refusing values no 64-bit task stopped in user
    /// mode can have and that `PTRACE_SETREGS` (or the module) would refuse
    /// only once the restored child exists.
    pub fn check(&self) -> Result<Registers, ArchError> {
        let registers = self.to_registers()?;
        let malformed = |name, value, reason| Err(ArchError::MalformedRegister { name, value, reason });
        if registers.cs != USER_CS {
            return malformed("cs", registers.cs, "is not the 64-bit user code selector 0x33");
        }
        if registers.ss != USER_DS {
            return malformed("ss", registers.ss, "is not the user data selector 0x2b");
        }
        for (name, value) in [("ds", registers.ds), ("es", registers.es), ("fs", registers.fs), ("gs", registers.gs)] {
            if value > 0xffff || (value != 0 && value & 3 != 3) {
                return malformed(name, value, "is not a user segment selector");
            }
        }
        for (name, value) in [("fs_base", registers.fs_base), ("gs_base", registers.gs_base)] {
            if value >= TASK_SIZE_MAX {
                return malformed(name, value, "is not a user address");
            }
        }
        let rewinds = !matches!(
            crate::restart::plan_resume(&registers),
            crate::ResumeAction::AsIs | crate::ResumeAction::Interrupt
        );
        if rewinds && registers.rip < 2 {
            return malformed("rip", registers.rip, "cannot follow the syscall instruction it must re-execute");
        }
        Ok(registers)
    }

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

    fn user_registers() -> Registers {
        // SAFETY: plain integers.
        let mut registers: Registers = unsafe { std::mem::zeroed() };
        registers.cs = USER_CS;
        registers.ss = USER_DS;
        registers.rip = 0x401000;
        registers.orig_rax = u64::MAX;
        registers
    }

    #[test]
    fn registers_of_a_user_task_pass_the_check() {
        assert!(RegisterFile::from_registers(&user_registers()).check().is_ok());
    }

    #[test]
    fn impossible_registers_are_refused_by_name() {
        let refusal = |change: fn(&mut Registers)| {
            let mut registers = user_registers();
            change(&mut registers);
            RegisterFile::from_registers(&registers).check().unwrap_err().to_string()
        };
        assert!(refusal(|registers| registers.cs = 0x23).contains("register cs"));
        assert!(refusal(|registers| registers.ss = 0).contains("register ss"));
        assert!(refusal(|registers| registers.gs = 0x10).contains("register gs"));
        assert!(refusal(|registers| registers.fs_base = u64::MAX).contains("register fs_base"));
        let at_zero = refusal(|registers| {
            registers.rip = 1;
            registers.orig_rax = 0;
            registers.rax = (-512i64).cast_unsigned();
        });
        assert!(at_zero.contains("register rip"), "{at_zero}");
    }
}
