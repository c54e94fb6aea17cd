//! `crp dump`: freeze, capture every category, write the image, then kill
//! the original (only once the image is durable) or let it run on.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crp_arch_x86::{CpuState, VdsoLayout, is_special_mapping, resume_registers};
use crp_compound::creds::Credentials;
use crp_compound::mm::MmFields;
use crp_compound::pagemap::PageMap;
use crp_compound::rlimits::ResourceLimits;
use crp_compound::signals::SignalState;
use crp_compound::task::TaskIdentity;
use crp_compound::timers::IntervalTimers;
use crp_compound::vma::{VmaRecord, capture_vma};
use crp_image::ImageWriter;
use crp_locks::LockState;
use crp_ptrace::procfs::{self, MapsEntry};
use crp_ptrace::{Capture, Frozen, Persist, TraceeExt};

use crate::error::CrpError;
use crate::kmod::Device;
use crate::kmod::capture;
use crate::model::{ProcessImage, kernel_release};
use crate::preflight::{self, Phase};
use crate::{cancel, faults};

/// Size of the scratch mapping injected for syscall arguments at dump.
const SCRATCH_BYTES: usize = 16 << 10;
/// The `syscall` instruction.
const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];

#[derive(Debug, Clone)]
pub struct DumpPlan {
    pub pid: i32,
    pub output: PathBuf,
    pub leave_running: bool,
    pub backend: Backend,
}

/// How crp reads and rebuilds process state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// ptrace, /proc and injected syscalls: any kernel with
    /// CONFIG_CHECKPOINT_RESTORE, no module.
    #[default]
    Userspace,
    /// The crp kernel module (`/dev/crp`).
    Kmod,
}

#[derive(Debug)]
pub struct DumpReport {
    pub vma_count: usize,
    pub page_bytes: u64,
    pub frozen_for: Duration,
}

pub fn dump(plan: &DumpPlan) -> Result<DumpReport, CrpError> {
    let pid = plan.pid;
    tracing::info!(pid, output = %plan.output.display(), backend = ?plan.backend, "dump: checking the process");
    preflight::check(pid, Phase::BeforeFreeze)?;
    tracing::info!(pid, "preflight passed: nothing crp refuses");
    // A missing module fails here, before the process is touched.
    let device = match plan.backend {
        Backend::Userspace => None,
        Backend::Kmod => Some(Device::open()?),
    };
    // An unwritable destination fails here too.
    let mut writer = ImageWriter::create(&plan.output)?;
    tracing::debug!(output = %plan.output.display(), "image file staged");
    cancel::check("dump")?;
    let stopped = procfs::Stat::read(pid)?.field(3)? == "T";
    let mut frozen = Frozen::seize(pid).map_err(|error| preflight::explain_seize_failure(pid, error))?;
    frozen.set_checkpoint(faults::reached);
    faults::reached("frozen", 0);
    tracing::info!(pid, was_stopped = stopped, "frozen");
    let started = Instant::now();
    // The process may have changed between the checks and the freeze.
    preflight::check(pid, Phase::Frozen)?;
    tracing::debug!(pid, "preflight passed again, frozen");
    cancel::check("dump")?;
    // What /proc says, once, now that the process cannot change.
    let proc = procfs::Snapshot::read(pid)?;
    let captured = match &device {
        None => capture_with_ptrace(&mut frozen, &proc, stopped)?,
        Some(device) => capture_with_kmod(device, &proc, stopped)?,
    };
    let Captured { state: mut image, populated_kb } = captured;
    faults::reached("captured", 0);
    tracing::info!(pid, vmas = image.vmas.len(), files = image.files.len(), rlimits = image.rlimits.len(), "captured");
    cancel::check("dump")?;

    let pagemap = PageMap::open(pid)?;
    let nix_pid = frozen.pid();
    for (vma, populated_kb) in image.vmas.iter().zip(populated_kb) {
        for (vaddr, page_count) in pagemap.stored_runs(vma, populated_kb)? {
            let added = writer.add_page_run(vaddr, page_count, |address, buffer| {
                if cancel::requested().is_some() {
                    return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "dump cancelled"));
                }
                match &device {
                    None => crp_ptrace::sys::read_memory(nix_pid, address, buffer).map_err(std::io::Error::from),
                    Some(device) => device.read_memory(address, buffer),
                }
            });
            cancel::check("dump")?;
            added?;
        }
    }
    faults::reached("pages", 0);
    tracing::info!(
        bytes = writer.runs().iter().map(|run| run.byte_len()).sum::<u64>(),
        runs = writer.runs().len(),
        "pages written"
    );
    image.dumped_at_unix_seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let page_bytes = writer.runs().iter().map(|run| run.byte_len()).sum();
    let vma_count = image.vmas.len();
    let metadata = crp_image::to_archive(&image)?;
    if plan.leave_running {
        // Every page is copied into the writer's buffers by now: the process
        // can run on while the image is finished and made durable.
        let frozen_for = started.elapsed();
        frozen.release()?;
        tracing::info!(pid, "released (--leave-running)");
        let path = writer.finish(&metadata)?;
        tracing::info!(path = %path.display(), metadata_bytes = metadata.len(), "image finished");
        faults::reached("written", 0);
        if let Err(cancelled) = cancel::check("dump") {
            let _ = std::fs::remove_file(path);
            return Err(cancelled);
        }
        return Ok(DumpReport { vma_count, page_bytes, frozen_for });
    }
    let path = writer.finish(&metadata)?;
    tracing::info!(path = %path.display(), metadata_bytes = metadata.len(), "image finished");
    faults::reached("written", 0);
    if let Err(cancelled) = cancel::check("dump") {
        // Not killed yet: the dump is undone, the process released (by
        // dropping `frozen`).
        let _ = std::fs::remove_file(path);
        return Err(cancelled);
    }
    let frozen_for = started.elapsed();
    frozen.kill()?;
    tracing::info!(pid, "killed: the image holds it now");
    Ok(DumpReport { vma_count, page_bytes, frozen_for })
}

/// The process's state, and for each of its VMAs the kB smaps says are
/// resident or swapped (None when unknown).
struct Captured {
    state: ProcessImage,
    populated_kb: Vec<Option<u64>>,
}

/// The userspace back end: /proc, ptrace and injected syscalls.
fn capture_with_ptrace(frozen: &mut Frozen, proc: &procfs::Snapshot, stopped: bool) -> Result<Captured, CrpError> {
    let pid = frozen.pid().as_raw();
    let maps = procfs::smaps(pid)?;
    let registers = *frozen.registers();
    let cpu = CpuState::capture(frozen.pid(), &registers)?;
    let vdso = VdsoLayout::from_maps(maps.iter().map(|entry| (entry.name.as_str(), entry.start, entry.end)));
    let (populated_kb, vmas) = maps
        .iter()
        .filter(|entry| !is_special_mapping(&entry.name))
        .map(|entry| Ok((entry.populated_kb, capture_vma(entry)?)))
        .collect::<Result<(Vec<Option<u64>>, Vec<VmaRecord>), CrpError>>()?;

    let syscall_ip = find_syscall_instruction(pid, &registers, &maps)?;
    // Parked, the process survives crp's death at any moment: it resumes
    // where it was frozen (see crp_ptrace::Frozen).
    frozen.park(&maps, syscall_ip, resume_registers(&registers))?;
    tracing::info!(pid, syscall_ip = format_args!("{syscall_ip:#x}"), "parked");
    let Injected { mm, signals, locks, credentials, rlimits, timers, task } =
        capture_by_injection(frozen, proc, stopped)?;
    frozen.unpark()?;
    tracing::debug!(pid, "unparked");
    let state = ProcessImage {
        pid,
        kernel_release: kernel_release(),
        dumped_at_unix_seconds: 0,
        cpu,
        vdso,
        vmas,
        mm,
        files: crp_compound::files::capture(pid)?.into(),
        signals,
        task,
        credentials,
        rlimits,
        timers,
        locks,
    };
    Ok(Captured { state, populated_kb })
}

/// The kmod back end: the task's state from the kernel's own structures
/// through `/dev/crp`; what lives outside the task (fd table, cwd, comm,
/// affinity, ids, which VMAs have pages) from /proc. Nothing is injected.
fn capture_with_kmod(device: &Device, proc: &procfs::Snapshot, stopped: bool) -> Result<Captured, CrpError> {
    let pid = proc.pid;
    let dump = device.dump_task(pid)?;
    tracing::info!(pid, "task record read from /dev/crp");
    device.attach(pid)?;
    let vmas = capture::vma_records(pid, &dump)?;
    let mut task = TaskIdentity::from_proc(proc, stopped)?;
    task.personality = u64::from(dump.state.personality);
    let state = ProcessImage {
        pid,
        kernel_release: kernel_release(),
        dumped_at_unix_seconds: 0,
        cpu: capture::cpu_state(&dump)?,
        vdso: capture::vdso_layout(&dump),
        vmas,
        mm: capture::mm_fields(proc, &dump)?,
        files: crp_compound::files::capture(pid)?.into(),
        signals: capture::signal_state(&dump),
        task,
        credentials: capture::credentials(proc, &dump)?,
        rlimits: capture::rlimits(&dump).into(),
        timers: capture::interval_timers(&dump),
        locks: capture::lock_state(&dump),
    };
    // Which VMAs hold any page at all is in smaps (no exported walk gives
    // it); matching by range, a VMA smaps does not show is walked in full.
    let maps = procfs::smaps(pid)?;
    let populated_kb = state
        .vmas
        .iter()
        .map(|vma| {
            maps.iter()
                .find(|entry| entry.start == vma.start && entry.end == vma.end)
                .and_then(|entry| entry.populated_kb)
        })
        .collect();
    Ok(Captured { populated_kb, state })
}

/// What the dump reads by injected syscalls.
struct Injected {
    mm: MmFields,
    signals: SignalState,
    locks: LockState,
    credentials: Credentials,
    rlimits: ResourceLimits,
    task: TaskIdentity,
    timers: IntervalTimers,
}

/// Each kind read by injection, through its [`Persist`] impl; they are
/// independent of each other, so their order is free.
fn capture_by_injection(frozen: &mut Frozen, proc: &procfs::Snapshot, stopped: bool) -> Result<Injected, CrpError> {
    frozen.with_temporary_scratch(SCRATCH_BYTES, |tracee| {
        let context = &mut Capture { tracee, proc, stopped_before_freeze: stopped };
        Ok(Injected {
            mm: MmFields::capture(context)?,
            signals: SignalState::capture(context)?,
            locks: LockState::capture(context)?,
            credentials: Credentials::capture(context)?,
            rlimits: ResourceLimits::capture(context)?,
            timers: IntervalTimers::capture(context)?,
            task: TaskIdentity::capture(context)?,
        })
    })
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
    match maps.iter().find(|entry| entry.name == "[vdso]") {
        Some(vdso) => syscall_in(pid, vdso.start, vdso.end),
        None => Err(crp_ptrace::EngineError::NoSyscallInstruction { pid }.into()),
    }
}

/// The address of a `syscall` instruction in `[start, end)` of `pid` (its vDSO).
pub(crate) fn syscall_in(pid: i32, start: u64, end: u64) -> Result<u64, CrpError> {
    let nix_pid = nix::unistd::Pid::from_raw(pid);
    let mut text = vec![0u8; usize::try_from(end - start).unwrap_or(0)];
    if crp_ptrace::sys::read_memory(nix_pid, start, &mut text).is_ok()
        && let Some(offset) = text.windows(2).position(|pair| pair == SYSCALL_INSN)
    {
        return Ok(start + offset as u64);
    }
    Err(crp_ptrace::EngineError::NoSyscallInstruction { pid }.into())
}
