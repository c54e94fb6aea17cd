//! `crp dump`: freeze, capture every category, write the image, then kill
//! the original (only once the image is durable) or let it run on.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crp_arch_x86::{CpuState, VdsoLayout, is_special_mapping};
use crp_compound::creds::Credentials;
use crp_compound::mm::MmFields;
use crp_compound::pagemap::PageMap;
use crp_compound::rlimits::Limit;
use crp_compound::signals::SignalState;
use crp_compound::task::TaskIdentity;
use crp_compound::timers::IntervalTimers;
use crp_compound::vma::{VmaRecord, capture_vma};
use crp_image::ImageWriter;
use crp_locks::LockState;
use crp_ptrace::procfs::{self, MapsEntry};
use crp_ptrace::{Frozen, Injector, TraceeExt};

use crate::error::CrpError;
use crate::model::{ProcessImage, kernel_release};
use crate::preflight::{self, Phase};

/// Size of the scratch mapping injected for syscall arguments at dump.
const SCRATCH_BYTES: usize = 16 << 10;
/// The `syscall` instruction.
const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];

#[derive(Debug, Clone)]
pub struct DumpPlan {
    pub pid: i32,
    pub output: PathBuf,
    pub leave_running: bool,
}

#[derive(Debug)]
pub struct DumpReport {
    pub vma_count: usize,
    pub page_bytes: u64,
    pub frozen_for: Duration,
}

pub fn dump(plan: &DumpPlan) -> Result<DumpReport, CrpError> {
    let pid = plan.pid;
    preflight::check(pid, Phase::BeforeFreeze)?;
    // An unwritable destination fails here, before the process is touched.
    let mut writer = ImageWriter::create(&plan.output)?;
    let stopped = procfs::stat_fields(pid).is_ok_and(|fields| fields.first().is_some_and(|state| state == "T"));
    let mut frozen = Frozen::seize(pid)?;
    let started = Instant::now();
    // The process may have changed between the checks and the freeze.
    preflight::check(pid, Phase::Frozen)?;
    let maps = procfs::read_smaps(pid).map_err(|error| CrpError::NoProcess { pid, reason: error.to_string() })?;
    let registers = *frozen.registers();
    let cpu = CpuState::capture(frozen.pid(), &registers)?;
    let vdso = VdsoLayout::from_maps(maps.iter().map(|entry| (entry.name.as_str(), entry.start, entry.end)));
    let captured = maps
        .iter()
        .filter(|entry| !is_special_mapping(&entry.name))
        .map(|entry| Ok((entry.populated_kb, capture_vma(entry)?)))
        .collect::<Result<Vec<(Option<u64>, VmaRecord)>, CrpError>>()?;

    let syscall_ip = find_syscall_instruction(pid, &registers, &maps)?;
    let mut injector = Injector::new(frozen.pid(), syscall_ip, registers);
    let injected = capture_by_injection(&mut injector);
    frozen.defer_signals(injector.take_deferred_signals());
    let Injected { mm, signals, locks, credentials, rlimits, timers } = injected?;
    let files = crp_compound::files::capture(pid)?;
    let task = TaskIdentity::capture(pid, stopped)?;

    let pagemap = PageMap::open(pid)?;
    let nix_pid = frozen.pid();
    for (populated_kb, vma) in &captured {
        for (vaddr, page_count) in pagemap.stored_runs(vma, *populated_kb)? {
            writer.add_page_run(vaddr, page_count, |address, buffer| {
                crp_ptrace::sys::read_memory(nix_pid, address, buffer).map_err(std::io::Error::from)
            })?;
        }
    }
    let vmas: Vec<VmaRecord> = captured.into_iter().map(|(_, vma)| vma).collect();
    let page_bytes = writer.runs().iter().map(|run| run.byte_len()).sum();
    let image = ProcessImage {
        pid,
        kernel_release: kernel_release(),
        dumped_at_unix_seconds: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs()),
        cpu,
        vdso,
        vmas,
        mm,
        files,
        signals,
        task,
        credentials,
        rlimits,
        timers,
        locks,
    };
    let vma_count = image.vmas.len();
    let metadata = crp_image::to_archive(&image)?;
    if plan.leave_running {
        // Every page is copied into the writer's buffers by now: the process
        // can run on while the image is finished and made durable.
        let frozen_for = started.elapsed();
        frozen.release()?;
        writer.finish(&metadata)?;
        return Ok(DumpReport { vma_count, page_bytes, frozen_for });
    }
    writer.finish(&metadata)?;
    let frozen_for = started.elapsed();
    frozen.kill()?;
    Ok(DumpReport { vma_count, page_bytes, frozen_for })
}

/// Runs the injected part of the capture inside a scratch mapping that is
/// always unmapped again.
/// What the dump reads by injected syscalls.
struct Injected {
    mm: MmFields,
    signals: SignalState,
    locks: LockState,
    credentials: Credentials,
    rlimits: Vec<Limit>,
    timers: IntervalTimers,
}

fn capture_by_injection(injector: &mut Injector) -> Result<Injected, CrpError> {
    let protection = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let scratch =
        injector.syscall("mmap", libc::SYS_mmap, [0, SCRATCH_BYTES as u64, protection, flags, u64::MAX, 0])?;
    injector.set_scratch(scratch, SCRATCH_BYTES);
    let captured = (|| -> Result<_, CrpError> {
        Ok(Injected {
            mm: MmFields::capture(injector)?,
            signals: SignalState::capture(injector)?,
            locks: LockState::capture(injector)?,
            credentials: Credentials::capture(injector)?,
            rlimits: crp_compound::rlimits::capture(injector)?,
            timers: IntervalTimers::capture(injector)?,
        })
    })();
    injector.syscall("munmap", libc::SYS_munmap, [scratch, SCRATCH_BYTES as u64, 0, 0, 0, 0])?;
    captured
}

/// An address holding `syscall` to inject through: right before RIP when
/// the process stopped in a syscall, else one inside the vDSO.
fn find_syscall_instruction(pid: i32, registers: &crp_ptrace::Registers, maps: &[MapsEntry]) -> Result<u64, CrpError> {
    let nix_pid = nix::unistd::Pid::from_raw(pid);
    let mut before_rip = [0u8; 2];
    if registers.rip >= 2
        && crp_ptrace::sys::read_memory(nix_pid, registers.rip - 2, &mut before_rip).is_ok()
        && before_rip == SYSCALL_INSN
    {
        return Ok(registers.rip - 2);
    }
    let vdso = maps.iter().find(|entry| entry.name == "[vdso]");
    if let Some(vdso) = vdso {
        let mut text = vec![0u8; usize::try_from(vdso.end - vdso.start).unwrap_or(0)];
        if crp_ptrace::sys::read_memory(nix_pid, vdso.start, &mut text).is_ok()
            && let Some(offset) = text.windows(2).position(|pair| pair == SYSCALL_INSN)
        {
            return Ok(vdso.start + offset as u64);
        }
    }
    Err(crp_ptrace::EngineError::NoSyscallInstruction { pid }.into())
}
