//! The general registers and the XSAVE area of a stopped task.

use crp_ptrace::{Capture, Persist, Registers, Restore, Tracee};

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
    /// The registers the restored thread resumes with: the frozen ones with
    /// the syscall-restart fix-up ([`crate::resume_registers`]).
    pub fn resumed(&self) -> Result<Registers, ArchError> {
        Ok(crate::restart::resume_registers(&self.registers.to_registers()?))
    }

    /// Loads the XSAVE area (fitted to the thread's own size) and then
    /// `registers` into the stopped thread.
    pub fn load_into(&self, tracee: &mut dyn Tracee, registers: &Registers) -> Result<(), ArchError> {
        let live = tracee.xstate()?;
        let fitted = self.xsave.fitted_to(&live, crate::xsave::host_xsave_features())?;
        tracee.set_xstate(&fitted)?;
        Ok(tracee.load_registers(registers)?)
    }
}

impl Persist for CpuState {
    const KIND: &'static str = "registers and XSAVE area";
    type Error = ArchError;

    /// The registers seen at the freeze (the engine may have changed the
    /// live ones since), and the XSAVE area.
    fn capture(context: &mut Capture<'_>) -> Result<Self, ArchError> {
        let registers = context.tracee.frozen_registers()?;
        let area = context.tracee.xstate()?;
        Ok(Self {
            registers: RegisterFile::from_registers(&registers),
            xsave: XsaveArea::new(area, crate::xsave::host_xsave_features())?,
        })
    }

    /// Loads the XSAVE area, then the registers with the syscall-restart
    /// fix-up: the thread's next instruction is its own, so nothing may be
    /// injected into it afterwards.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), ArchError> {
        let resumed = self.resumed()?;
        self.load_into(context.tracee, &resumed)
    }
}

/// The kmod ABI: the registers of the module's task record, and the XSAVE
/// area it reports beside it.
impl CpuState {
    pub fn from_abi(state: &crp_kmod_abi::CrpTaskState, xstate: Vec<u8>) -> Result<Self, ArchError> {
        Ok(Self {
            registers: RegisterFile { values: state.regs.to_vec() },
            xsave: XsaveArea::new(xstate, crate::xsave::host_xsave_features())?,
        })
    }

    /// Fills the registers `CRP_IOC_RESTORE` loads: those the thread
    /// resumes with ([`CpuState::resumed`]). The XSAVE area is loaded by
    /// ptrace afterwards, with the registers again.
    pub fn write_abi(&self, state: &mut crp_kmod_abi::CrpTaskState) -> Result<(), ArchError> {
        let resumed = RegisterFile::from_registers(&self.resumed()?);
        let expected = crp_kmod_abi::CRP_USER_REGS;
        let values =
            resumed.values.get(..expected).ok_or(ArchError::RegisterCount { found: resumed.values.len(), expected })?;
        state.regs.copy_from_slice(values);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

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

    /// A thread frozen in `read(2)`, interrupted by the freeze.
    fn frozen_in_read() -> Registers {
        let mut registers = user_registers();
        registers.orig_rax = libc::SYS_read.cast_unsigned();
        registers.rax = (-512i64).cast_unsigned();
        registers.rip = 0x401002;
        registers.fs_base = 0x7f00_0000_1000;
        registers
    }

    /// An XSAVE area of `length` bytes with MXCSR `mxcsr` and a marker in
    /// xmm0.
    fn xsave_area(length: usize, mxcsr: u32) -> Vec<u8> {
        let mut area = vec![0; length];
        area[24..28].copy_from_slice(&mxcsr.to_le_bytes());
        area[160..168].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        area
    }

    #[test]
    fn a_thread_frozen_in_a_syscall_is_captured_as_frozen() {
        let mut process = FakeTracee::default();
        process.registers = frozen_in_read();
        process.xstate = xsave_area(FakeTracee::XSTATE_BYTES, 0x1f80);
        let proc = crp_ptrace::fake::snapshot();
        let cpu = CpuState::capture(&mut Capture { tracee: &mut process, proc: &proc, stopped_before_freeze: false })
            .unwrap();
        let registers = cpu.registers.to_registers().unwrap();
        // Still the -ERESTARTSYS the freeze left: the fix-up is the restore's.
        assert_eq!((registers.orig_rax, registers.rax), (libc::SYS_read.cast_unsigned(), (-512i64).cast_unsigned()));
        assert_eq!((registers.rip, registers.fs_base), (0x401002, 0x7f00_0000_1000));
        assert_eq!(cpu.xsave.bytes, process.xstate);
        assert_eq!(cpu.xsave.xcr0, crate::host_xsave_features());
        assert!(process.calls.is_empty(), "nothing is injected to read the CPU state");
    }

    #[test]
    fn a_restore_loads_the_fitted_xsave_area_then_the_fixed_up_registers() {
        let cpu = CpuState {
            registers: RegisterFile::from_registers(&frozen_in_read()),
            xsave: XsaveArea::new(xsave_area(FakeTracee::XSTATE_BYTES, 0x1f80), 0).unwrap(),
        };
        let mut process = FakeTracee::default();
        // The restored thread's own area is larger: the image's is fitted to it.
        process.xstate = xsave_area(1024, 0x1fa0);
        cpu.restore(&mut Restore::new(&mut process)).unwrap();
        assert_eq!(process.loads, ["xstate", "registers"]);
        let loaded = process.loaded_registers.unwrap();
        assert_eq!(loaded.rax, libc::SYS_read.cast_unsigned(), "the read is re-executed");
        assert_eq!(loaded.rip, 0x401000, "from its syscall instruction");
        assert_eq!(loaded.orig_rax, u64::MAX, "with no restart logic left to apply");
        assert_eq!(loaded.fs_base, 0x7f00_0000_1000);
        let area = process.loaded_xstate.unwrap();
        assert_eq!(area.len(), 1024);
        assert_eq!(area[24..28], 0x1f80u32.to_le_bytes(), "the image's MXCSR");
        assert_eq!(area[160..168], 0x1122_3344_5566_7788u64.to_le_bytes());
        assert!(process.calls.is_empty());
    }

    #[test]
    fn the_kmod_record_holds_the_fixed_up_registers_and_gives_them_back() {
        let mut frozen = frozen_in_read();
        frozen.orig_rax = libc::SYS_wait4.cast_unsigned();
        let cpu = CpuState {
            registers: RegisterFile::from_registers(&frozen),
            xsave: XsaveArea::new(xsave_area(FakeTracee::XSTATE_BYTES, 0x1f80), 0).unwrap(),
        };
        let mut state = crp_kmod_abi::CrpTaskState::default();
        cpu.write_abi(&mut state).unwrap();
        // r15 first: rax is the 11th, orig_rax the 16th, rip the 17th.
        assert_eq!(
            (state.regs[10], state.regs[15], state.regs[16]),
            (libc::SYS_wait4.cast_unsigned(), u64::MAX, 0x401000)
        );
        let back = CpuState::from_abi(&state, cpu.xsave.bytes.clone()).unwrap();
        assert_eq!(back.registers.to_registers().unwrap().rip, 0x401000);
        assert_eq!(back.xsave.bytes, cpu.xsave.bytes);
        assert!(CpuState::from_abi(&state, vec![0; 100]).is_err(), "a short XSAVE area is refused");
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
