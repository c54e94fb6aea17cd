//! Restore through the kernel module: the child (a fork of crp, with crp's
//! gadget and the vDSO block moved where the image had it) calls
//! `CRP_IOC_RESTORE` and comes back from it as the checkpointed process. crp then finishes, from
//! outside at the ioctl's exit stop, what the module cannot set with
//! exported kernel symbols (see README, "The kmod back end").

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use crp_compound::vma::{FileAccess, VmaRecord, open_mapped_file};
use crp_image::ImageReader;
use crp_kmod_abi::*;
use crp_ptrace::{EngineError, Injector, Registers, Tracee, TraceeExt, arg};

use super::device::Device;
use crate::backend::RestoreBackend;
use crate::error::CrpError;
use crate::model::ProcessImage;
use crate::plan::{self, Rebuild};

/// Size of the scratch mapping used after the ioctl.
const SCRATCH_BYTES: usize = 16 << 10;

/// The kmod back end's restore side: the device and the image file, which
/// the restore child inherits at the same numbers as in crp.
#[derive(Debug)]
pub struct Restore {
    device: Device,
    image: File,
}

impl Restore {
    pub fn open(image: &Path) -> Result<Self, CrpError> {
        let device = Device::open()?;
        let image =
            File::open(image).map_err(|source| CrpError::Io { action: format!("open {}", image.display()), source })?;
        Ok(Self { device, image })
    }
}

impl RestoreBackend for Restore {
    /// Rebuilds the process in the prepared child (its injector points at
    /// the gadget): [`plan::BEFORE_MODULE`] (crp's own mappings stay until
    /// the ioctl removes them with everything else; the vDSO moves over
    /// them if it must), the ioctl, then what crp finishes from outside.
    fn rebuild(&self, rebuild: &mut Rebuild<'_>) -> Result<(), CrpError> {
        plan::run(plan::BEFORE_MODULE, rebuild)?;
        let Rebuild { injector, pid, image, reader, gadget, .. } = rebuild;
        let (pid, image, reader, gadget) = (*pid, *image, *reader, *gadget);
        let file_fds = open_mapped_files(injector, &image.vmas)?;
        let records = Records::build(image, reader, &file_fds, self.image.as_raw_fd())?;
        let request_address = records.place(injector)?;

        // The ioctl's return is the restored process's rax, so success
        // shows in where the task stands afterwards, not in the result.
        let device = arg(self.device.raw_fd());
        injector.raw_syscall(libc::SYS_ioctl, [device, u64::from(CRP_IOC_RESTORE), request_address, 0, 0, 0])?;
        let after = nix::sys::ptrace::getregs(pid).map_err(|errno| EngineError::Ptrace {
            operation: "PTRACE_GETREGS",
            pid: pid.as_raw(),
            errno,
        })?;
        if after.rip == gadget.address + 2 {
            let errno =
                nix::errno::Errno::from_raw(i32::try_from(after.rax.cast_signed().wrapping_neg()).unwrap_or(libc::EIO));
            return Err(EngineError::Syscall {
                syscall: "ioctl(CRP_IOC_RESTORE)",
                args: Vec::new(),
                pid: pid.as_raw(),
                errno,
            }
            .into());
        }
        check_registers(&after, &image.leader()?.cpu.resumed()?)?;

        finish_from_outside(rebuild)
    }
}

/// Opens every distinct mapped file in the child; the module maps them by
/// descriptor. They are closed with the rest of crp's fds by the fd restore.
fn open_mapped_files<'image>(
    injector: &mut Injector,
    vmas: &'image [VmaRecord],
) -> Result<HashMap<FileAccess<'image>, i32>, CrpError> {
    let mut opened = HashMap::new();
    for access in vmas.iter().filter_map(VmaRecord::file_access) {
        if opened.contains_key(&access) {
            continue;
        }
        let fd = open_mapped_file(injector, access)?;
        opened.insert(access, i32::try_from(fd).unwrap_or(-1));
    }
    Ok(opened)
}

/// The request and the arrays it points to, laid out as bytes for the
/// child's memory. Built from the image alone (no device, no child), so
/// that what it computes from image values can be checked up front.
#[derive(Debug)]
pub struct Records {
    state: CrpTaskState,
    vmas: Vec<CrpRestoreVma>,
    runs: Vec<CrpPageRun>,
    image_fd: RawFd,
}

impl Records {
    pub fn build(
        image: &ProcessImage,
        reader: &ImageReader,
        file_fds: &HashMap<FileAccess<'_>, i32>,
        image_fd: RawFd,
    ) -> Result<Self, CrpError> {
        let mut state = CrpTaskState::default();
        let leader = image.leader()?;
        leader.cpu.write_abi(&mut state)?;
        image.signals.write_abi(&mut state);
        leader.signals.write_abi(&mut state);
        // The single steps over the ioctl and the injections after it force
        // SIGTRAP, which resets a blocked SIGTRAP's handler: the module
        // leaves it unblocked, the process's own mask comes last by ptrace.
        state.blocked &= crp_compound::pending_signals::ALL_BUT_SIGTRAP;
        state.personality = u32::try_from(image.task.personality).unwrap_or(0);
        leader.locks.write_abi(&mut state);
        state.mm = image.mm.to_abi().map_err(|invalid| CrpError::InvalidImage { reason: invalid.to_string() })?;
        let vmas = image
            .vmas
            .iter()
            .map(|vma| {
                let fd = vma.file_access().and_then(|access| file_fds.get(&access).copied()).unwrap_or(-1);
                vma.to_abi(fd)
            })
            .collect();
        let runs = reader
            .page_runs()
            .iter()
            .map(|run| CrpPageRun { address: run.vaddr, pages: run.page_count, file_offset: run.data_offset })
            .collect();
        Ok(Self { state, vmas, runs, image_fd })
    }

    /// Maps an area in the child, writes the records there and returns
    /// the request's address. The module unmaps the area with the rest.
    fn place(&self, injector: &mut Injector) -> Result<u64, CrpError> {
        let mut bytes = Vec::new();
        let request_offset = 0usize;
        bytes.resize(std::mem::size_of::<CrpRestoreRequest>(), 0);
        let state_offset = append(&mut bytes, record_bytes(std::slice::from_ref(&self.state)));
        let vmas_offset = append(&mut bytes, record_bytes(&self.vmas));
        let runs_offset = append(&mut bytes, record_bytes(&self.runs));
        let length = bytes.len().next_multiple_of(4096) as u64;
        let protection = arg(libc::PROT_READ | libc::PROT_WRITE);
        let flags = arg(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
        let base =
            injector.syscall("mmap(restore records)", libc::SYS_mmap, [0, length, protection, flags, u64::MAX, 0])?;
        let request = CrpRestoreRequest {
            abi_version: CRP_ABI_VERSION,
            image_fd: self.image_fd,
            task: base + state_offset as u64,
            vmas: base + vmas_offset as u64,
            vma_count: u32::try_from(self.vmas.len()).unwrap_or(u32::MAX),
            run_count: u32::try_from(self.runs.len()).unwrap_or(u32::MAX),
            runs: base + runs_offset as u64,
        };
        bytes[request_offset..request_offset + std::mem::size_of::<CrpRestoreRequest>()]
            .copy_from_slice(record_bytes(std::slice::from_ref(&request)));
        injector.write_memory(base, &bytes)?;
        Ok(base + request_offset as u64)
    }
}

/// Appends at an 8-byte boundary; returns where `data` starts.
fn append(bytes: &mut Vec<u8>, data: &[u8]) -> usize {
    bytes.resize(bytes.len().next_multiple_of(8), 0);
    let offset = bytes.len();
    bytes.extend_from_slice(data);
    offset
}

/// The bytes of ABI records.
fn record_bytes<T: Copy>(records: &[T]) -> &[u8] {
    // SAFETY: every ABI record is repr(C), made only of integers with no
    // padding (abi.rs pins their sizes), so all its bytes are initialised;
    // the slice covers exactly the records' memory.
    unsafe { std::slice::from_raw_parts(records.as_ptr().cast::<u8>(), std::mem::size_of_val(records)) }
}

/// The module must have left every register as the image asks, fs base
/// included; gs base is crp's to set.
fn check_registers(after: &Registers, resumed: &Registers) -> Result<(), CrpError> {
    let mut expected = *resumed;
    expected.gs_base = after.gs_base;
    // The syscall exit path reports these as the kernel keeps them.
    expected.orig_rax = after.orig_rax;
    expected.eflags = (after.eflags & !USER_EFLAGS) | (resumed.eflags & USER_EFLAGS);
    expected.ds = after.ds;
    expected.es = after.es;
    expected.fs = after.fs;
    expected.gs = after.gs;
    // sys_ioctl returns an int: rax comes back as its low half, sign-extended.
    expected.rax = low_half_sign_extended(resumed.rax);
    let after_file = crp_arch_x86::RegisterFile::from_registers(after);
    let expected_file = crp_arch_x86::RegisterFile::from_registers(&expected);
    let differing: Vec<String> = after_file
        .named()
        .zip(expected_file.named())
        .filter(|((_, got), (_, wanted))| got != wanted)
        .map(|((name, got), (_, wanted))| format!("{name} {got:#x} instead of {wanted:#x}"))
        .collect();
    if !differing.is_empty() {
        return Err(CrpError::Kmod(super::KmodError::Registers { differing: differing.join(", ") }));
    }
    Ok(())
}

/// What an int return value makes of `value` in a 64-bit register.
fn low_half_sign_extended(value: u64) -> u64 {
    let low = value & 0xffff_ffff;
    if low & 0x8000_0000 != 0 { low | 0xffff_ffff_0000_0000 } else { low }
}

/// The EFLAGS bits the module loads.
const USER_EFLAGS: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x1_0000 | 0x4_0000;

/// What crp sets from outside, with syscalls injected through the
/// restored vDSO's `syscall` instruction and a temporary scratch mapping:
/// the executable link, rseq, then the [`plan::FINISH`] steps (credentials
/// last), then [`plan::RELEASE`] by ptrace: the registers again (the
/// syscalls above used them; the module left them as the image asks but
/// for the full rax and gs base), the XSAVE area and the process's own
/// blocked mask (the module left SIGTRAP unblocked, and re-queueing pending
/// signals blocked every other signal).
fn finish_from_outside(rebuild: &mut Rebuild<'_>) -> Result<(), CrpError> {
    let (pid, image) = (rebuild.pid, rebuild.image);
    let (vdso_start, vdso_end) = image
        .vdso
        .mappings
        .iter()
        .find(|mapping| mapping.name == "[vdso]")
        .map(|mapping| (mapping.start, mapping.end))
        .ok_or_else(|| CrpError::InvalidImage { reason: "the image has no [vdso] to run syscalls through".into() })?;
    rebuild.injector.set_syscall_ip(crp_ptrace::syscall_in(pid, vdso_start, vdso_end)?);
    let Rebuild { injector, reader, pages, choices, gadget, .. } = rebuild;
    let (reader, pages, choices, gadget) = (*reader, *pages, *choices, *gadget);
    injector.with_temporary_scratch(SCRATCH_BYTES, |injector| {
        image.mm.restore_exe_link(injector)?;
        image.leader()?.locks.register_rseq(injector)?;
        let (threads, keep_thread_ids) = (Vec::new(), false);
        let mut rebuild = Rebuild { injector, pid, image, reader, pages, choices, gadget, threads, keep_thread_ids };
        plan::run(plan::FINISH, &mut rebuild)
    })?;
    plan::run(plan::RELEASE, rebuild)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_int_return_keeps_the_low_half_sign_extended() {
        assert_eq!(low_half_sign_extended(0x1234_5678_0000_0005), 5);
        assert_eq!(low_half_sign_extended(0x1_ffff_fe00), 0xffff_ffff_ffff_fe00);
        assert_eq!(low_half_sign_extended(u64::MAX), u64::MAX);
    }
}
