//! An x86-64 `rt_sigframe` built by hand: the frame `rt_sigreturn` reads to
//! put a task back into a context (every general register, flags, the
//! XSAVE area with its vector registers, the blocked mask). crp parks a
//! process it injects syscalls into on such a frame (see `freeze.rs`): if
//! crp dies, the process runs `rt_sigreturn` and is exactly where it was.
//!
//! Written by hand because no crate builds kernel signal frames; the layout
//! is the kernel's ABI (`struct rt_sigframe`, `struct ucontext`,
//! `struct sigcontext` and `struct _fpx_sw_bytes` of arch/x86 uapi).

use crate::Registers;
use crate::error::EngineError;

/// `sizeof(struct rt_sigframe)`: pretcode (8), ucontext (304), siginfo (128).
const FRAME_BYTES: u64 = 440;
const UCONTEXT: usize = 8;
const UC_STACK: usize = UCONTEXT + 16;
const UC_MCONTEXT: usize = UCONTEXT + 40;
const UC_SIGMASK: usize = UCONTEXT + 296;
/// `struct sigcontext` offsets of the fields after the 18 registers.
const SC_SEGMENTS: usize = UC_MCONTEXT + 144;
const SC_FPSTATE: usize = UC_MCONTEXT + 184;
/// UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS.
const UC_FLAGS: u64 = 0x7;
/// An `ss_flags` mode that is none of 0, SS_ONSTACK, SS_DISABLE: the
/// kernel's `restore_altstack` then leaves the alternate stack as it is
/// (it ignores that error), so the frame need not know the altstack.
const ALTSTACK_LEAVE_AS_IS: u32 = 4;
/// The legacy FXSAVE region and the XSAVE header.
const XSAVE_MINIMUM: usize = 576;
/// Offset of `struct _fpx_sw_bytes` in the FXSAVE region.
const FX_SW_BYTES: usize = 464;
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
const XSTATE_BV: usize = 512;
const FPSSE: u64 = 0x3;

/// A frame placed at a tracee address: `bytes` go to `[start, start + len)`;
/// the task that runs `rt_sigreturn` must have `rsp == frame + 8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedFrame {
    pub start: u64,
    pub bytes: Vec<u8>,
    /// What `rsp` must be when `rt_sigreturn` runs.
    pub stack_pointer: u64,
}

/// Builds a frame that resumes `registers` with blocked mask `mask` and the
/// XSAVE area `xsave` (as `PTRACE_GETREGSET(NT_X86_XSTATE)` returns it,
/// standard format), placed entirely below `top`. `component_end` gives,
/// for an XSAVE feature number, the end offset of its component in the
/// standard format (CPUID leaf 0xD).
pub fn build(
    registers: &Registers,
    mask: u64,
    xsave: &[u8],
    top: u64,
    component_end: impl Fn(u32) -> Option<usize>,
) -> Result<PlacedFrame, EngineError> {
    let malformed = |reason: String| EngineError::SignalFrame { reason };
    if xsave.len() < XSAVE_MINIMUM {
        return Err(malformed(format!("XSAVE area of {} bytes is too short", xsave.len())));
    }
    let live = u64::from_le_bytes(xsave[XSTATE_BV..XSTATE_BV + 8].try_into().expect("8 bytes")) | FPSSE;
    let xstate_size = (2..64)
        .filter(|feature| live & (1 << feature) != 0)
        .map(|feature| component_end(feature).ok_or_else(|| malformed(format!("XSAVE feature {feature} unknown"))))
        .try_fold(XSAVE_MINIMUM, |size, end| end.map(|end| size.max(end)))?;
    if xstate_size > xsave.len() {
        return Err(malformed(format!("XSAVE components end at {xstate_size}, the area has {}", xsave.len())));
    }
    // The FPU area must be 64-byte aligned for XRSTOR; magic2 follows it.
    let fp_bytes = xstate_size as u64 + 4;
    let fpstate = top.checked_sub(fp_bytes).ok_or_else(|| malformed("no room below the stack".into()))? & !63;
    let frame = fpstate.checked_sub(FRAME_BYTES).ok_or_else(|| malformed("no room below the stack".into()))? & !15;
    let mut bytes = vec![0u8; usize::try_from(fpstate + fp_bytes - frame).expect("a few KiB")];

    let mut put = |offset: usize, value: &[u8]| bytes[offset..offset + value.len()].copy_from_slice(value);
    put(UCONTEXT, &UC_FLAGS.to_le_bytes());
    put(UC_STACK + 8, &ALTSTACK_LEAVE_AS_IS.to_le_bytes());
    let general = [
        registers.r8,
        registers.r9,
        registers.r10,
        registers.r11,
        registers.r12,
        registers.r13,
        registers.r14,
        registers.r15,
        registers.rdi,
        registers.rsi,
        registers.rbp,
        registers.rbx,
        registers.rdx,
        registers.rax,
        registers.rcx,
        registers.rsp,
        registers.rip,
        registers.eflags,
    ];
    for (index, value) in general.iter().enumerate() {
        put(UC_MCONTEXT + index * 8, &value.to_le_bytes());
    }
    // cs, gs, fs, ss as 16-bit selectors (gs and fs are not restored).
    let selector = |value: u64| u16::try_from(value).unwrap_or(0).to_le_bytes();
    put(SC_SEGMENTS, &selector(registers.cs));
    put(SC_SEGMENTS + 6, &selector(registers.ss));
    put(SC_FPSTATE, &fpstate.to_le_bytes());
    put(UC_SIGMASK, &mask.to_le_bytes());

    let fp = usize::try_from(fpstate - frame).expect("a few KiB");
    put(fp, &xsave[..xstate_size]);
    let mut software = [0u8; 48];
    software[0..4].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
    software[4..8].copy_from_slice(&u32::try_from(fp_bytes).expect("a few KiB").to_le_bytes());
    software[8..16].copy_from_slice(&live.to_le_bytes());
    software[16..20].copy_from_slice(&u32::try_from(xstate_size).expect("a few KiB").to_le_bytes());
    put(fp + FX_SW_BYTES, &software);
    put(fp + XSTATE_BV, &live.to_le_bytes());
    put(fp + xstate_size, &FP_XSTATE_MAGIC2.to_le_bytes());
    Ok(PlacedFrame { start: frame, bytes, stack_pointer: frame + 8 })
}

/// The end offset of XSAVE component `feature` in the standard format, from
/// CPUID leaf 0xD of this CPU (the tracee runs on the same machine).
pub fn host_component_end(feature: u32) -> Option<usize> {
    // CPUID exists on every x86-64 CPU; leaf 0xD only reports.
    let leaf = std::arch::x86_64::__cpuid_count(0xd, feature);
    (leaf.eax != 0).then(|| leaf.ebx as usize + leaf.eax as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registers() -> Registers {
        // SAFETY: user_regs_struct is plain integers; all zero is valid.
        let mut registers: Registers = unsafe { std::mem::zeroed() };
        registers.rax = 0x1111;
        registers.rip = 0x40_1000;
        registers.rsp = 0x7ffe_0000;
        registers.cs = 0x33;
        registers.ss = 0x2b;
        registers
    }

    fn xsave(bv: u64, length: usize) -> Vec<u8> {
        let mut area = vec![0xa5u8; length.max(XSTATE_BV + 8)];
        area[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
        area.truncate(length);
        area
    }

    #[test]
    fn frame_holds_registers_mask_and_fpu_where_the_kernel_reads_them() {
        let top = 0x7ffd_f000;
        let frame =
            build(&registers(), 0xdead, &xsave(0x7, 1024), top, |feature| (feature == 2).then_some(832)).unwrap();
        assert!(frame.start + frame.bytes.len() as u64 <= top);
        assert_eq!(frame.stack_pointer, frame.start + 8);
        let word = |offset: usize| u64::from_le_bytes(frame.bytes[offset..offset + 8].try_into().unwrap());
        assert_eq!(word(UC_MCONTEXT + 13 * 8), 0x1111, "rax");
        assert_eq!(word(UC_MCONTEXT + 16 * 8), 0x40_1000, "rip");
        assert_eq!(word(UC_SIGMASK), 0xdead);
        let fpstate = word(SC_FPSTATE);
        assert_eq!(fpstate % 64, 0);
        let fp = usize::try_from(fpstate - frame.start).unwrap();
        let half = |offset: usize| u32::from_le_bytes(frame.bytes[offset..offset + 4].try_into().unwrap());
        assert_eq!(half(fp + FX_SW_BYTES), FP_XSTATE_MAGIC1);
        assert_eq!(half(fp + FX_SW_BYTES + 16), 832, "xstate_size covers AVX");
        assert_eq!(half(fp + 832), FP_XSTATE_MAGIC2);
    }

    #[test]
    fn refuses_areas_that_cannot_hold_their_components() {
        assert!(build(&registers(), 0, &xsave(0x3, 100), 0x10000, |_| None).is_err());
        assert!(build(&registers(), 0, &xsave(0x7, 600), 0x10000, |_| Some(832)).is_err());
        assert!(build(&registers(), 0, &xsave(0x3, 600), 0x100, |_| None).is_err());
    }
}
