//! A valid image to start from: every field holds what a real dump of a
//! small static program would, so that `load_image` accepts it and each
//! mutation is the only thing wrong with it.

use std::path::Path;

use crp_arch_x86::{CpuState, RegisterFile, SpecialMapping, VdsoLayout, XsaveArea};
use crp_cli::model::{ProcessImage, ThreadState};
use crp_compound::creds::{Credentials, IdsAndCapabilities};
use crp_compound::files::{EventFile, FdRecord, FdTarget};
use crp_compound::mm::MmFields;
use crp_compound::process_attrs::ProcessAttributes;
use crp_compound::rlimits::Limit;
use crp_compound::signals::{SignalAction, SignalState, ThreadSignals};
use crp_compound::task::TaskIdentity;
use crp_compound::thread_attrs::{ParentDeathSignal, Scheduling, ThreadAttributes};
use crp_compound::timers::IntervalTimers;
use crp_compound::vma::{Backing, MappedFile, SharedMemory, VmaFlags, VmaRecord};
use crp_image::ImageWriter;
use crp_locks::{LockState, RseqRegistration};

/// Indices into the register file (kernel `user_regs_struct` order).
pub mod reg {
    pub const RAX: usize = 10;
    pub const ORIG_RAX: usize = 15;
    pub const RIP: usize = 16;
    pub const CS: usize = 17;
    pub const EFLAGS: usize = 18;
    pub const RSP: usize = 19;
    pub const SS: usize = 20;
    pub const FS_BASE: usize = 21;
    pub const COUNT: usize = 27;
}

pub const CODE: u64 = 0x40_0000;
pub const HEAP: u64 = 0x60_0000;
pub const STACK: u64 = 0x7ffd_0000_0000;
pub const VDSO: u64 = 0x7ffd_1000_0000;
pub const EXE: &str = "/usr/bin/true";

/// Page runs to store: `(address, pages, fill byte)`.
pub type Runs = Vec<(u64, u64, u8)>;

fn anonymous(start: u64, end: u64, label: &str, flags: VmaFlags) -> VmaRecord {
    VmaRecord {
        start,
        end,
        protection: (libc::PROT_READ | libc::PROT_WRITE).cast_unsigned(),
        shared: false,
        flags: flags.bits(),
        backing: Backing::Anonymous { label: label.into() },
    }
}

fn registers() -> RegisterFile {
    let mut values = vec![0u64; reg::COUNT];
    values[reg::RIP] = CODE + 0x10;
    values[reg::RSP] = STACK + 0x1_f000;
    values[reg::CS] = 0x33;
    values[reg::SS] = 0x2b;
    values[reg::EFLAGS] = 0x246;
    values[reg::FS_BASE] = HEAP + 0x800;
    values[reg::ORIG_RAX] = u64::MAX;
    RegisterFile { values }
}

fn xsave() -> XsaveArea {
    let mut bytes = vec![0u8; 576];
    bytes[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
    bytes[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    bytes[512..520].copy_from_slice(&0b11u64.to_le_bytes());
    XsaveArea::new(bytes, 0b11).expect("576 bytes is a whole area")
}

/// The vDSO block of this kernel (its shape), placed at [`VDSO`].
fn vdso() -> VdsoLayout {
    let host = crp_cli::restore::validate::host_vdso().unwrap_or_default();
    let base = host.block().map_or(0, |(start, _)| start);
    let mappings = host
        .mappings
        .iter()
        .map(|mapping| SpecialMapping {
            name: mapping.name.clone(),
            start: VDSO + (mapping.start - base),
            end: VDSO + (mapping.end - base),
        })
        .collect();
    VdsoLayout { mappings }
}

fn signals() -> SignalState {
    let actions = (1..=64)
        .filter(|signal| *signal != libc::SIGKILL && *signal != libc::SIGSTOP)
        .map(|signal| {
            let handled = signal == libc::SIGINT;
            SignalAction {
                signal,
                handler: if handled { CODE + 0x100 } else { 0 },
                flags: if handled { 0x0400_0000 } else { 0 },
                restorer: if handled { CODE + 0x200 } else { 0 },
                mask: 0,
            }
        })
        .collect();
    SignalState { actions }
}

/// A small static program's image, with one stored heap page when
/// `with_pages`.
pub fn valid_image(with_pages: bool) -> (ProcessImage, Runs) {
    let exe = MappedFile::identify(EXE, 0).expect("the base image maps /usr/bin/true");
    let vdso = vdso();
    let vdso_start = vdso.block().map_or(0, |(start, _)| start);
    let image = ProcessImage {
        pid: 4242,
        kernel_release: crp_cli::model::kernel_release(),
        dumped_at_unix_seconds: 1_800_000_000,
        threads: vec![ThreadState {
            tid: 4242,
            cpu: CpuState { registers: registers(), xsave: xsave() },
            signals: ThreadSignals {
                blocked: 1 << 9,
                altstack_sp: 0,
                altstack_flags: libc::SS_DISABLE,
                altstack_size: 0,
            },
            locks: LockState {
                robust_list_head: STACK + 0x1_e000,
                robust_list_length: 24,
                rseq: Some(RseqRegistration { address: STACK + 0x1_e100, length: 32, signature: 0x5305_3053 }),
                clear_child_tid: STACK + 0x1_e200,
            },
            attributes: ThreadAttributes {
                comm: "true".into(),
                cpu_affinity: vec![0],
                scheduling: Scheduling { util_max: 1024, ..Scheduling::default() },
                timer_slack_ns: 50_000,
                io_priority: (2 << 13) | 4,
                machine_check_kill: 2,
                tsc: 1,
                speculation: vec![0, 0, 0],
                cpuid_faulting: false,
                parent_death_signal: ParentDeathSignal(0),
            },
            pending_signals: Default::default(),
        }],
        vdso,
        vmas: vec![
            VmaRecord {
                start: CODE,
                end: CODE + 0x1000,
                protection: (libc::PROT_READ | libc::PROT_EXEC).cast_unsigned(),
                shared: false,
                flags: 0,
                backing: Backing::File(exe),
            },
            anonymous(HEAP, HEAP + 0x2000, "[heap]", VmaFlags::empty()),
            anonymous(STACK, STACK + 0x2_0000, "[stack]", VmaFlags::GROWS_DOWN),
        ],
        shared_memory: SharedMemory::default(),
        future_locking: crp_compound::vma::FutureLocking::default(),
        guard_regions: Vec::new(),
        mm: MmFields {
            start_code: CODE,
            end_code: CODE + 0x1000,
            start_data: HEAP,
            end_data: HEAP + 0x100,
            start_brk: HEAP + 0x1000,
            brk: HEAP + 0x2000,
            start_stack: STACK + 0x1_f800,
            arg_start: STACK + 0x1_f900,
            arg_end: STACK + 0x1_f910,
            env_start: STACK + 0x1_fa00,
            env_end: STACK + 0x1_fb00,
            auxv: vec![33, vdso_start, 6, 4096, 0, 0],
            exe_path: EXE.into(),
        },
        files: vec![
            FdRecord { fd: 0, flags: 0o2, offset: 0, target: FdTarget::Inherited { stream: 0 } },
            FdRecord { fd: 1, flags: 0o2, offset: 0, target: FdTarget::Inherited { stream: 1 } },
            FdRecord { fd: 2, flags: 0o2, offset: 0, target: FdTarget::Inherited { stream: 2 } },
            FdRecord {
                fd: 3,
                flags: 0o2_000_000,
                offset: 10,
                target: FdTarget::File { path: "/etc/passwd".into(), identity: None },
            },
            FdRecord { fd: 5, flags: 0o2, offset: 0, target: FdTarget::CharDevice { path: "/dev/null".into() } },
            FdRecord {
                fd: 6,
                flags: 0o4002,
                offset: 0,
                target: FdTarget::Event(EventFile::EventFd { count: 5, semaphore: true }),
            },
        ]
        .into(),
        signals: signals(),
        task: TaskIdentity { cwd: "/".into(), umask: 0o22, personality: 0, stopped: false },
        credentials: Credentials {
            ids: IdsAndCapabilities { groups: vec![0], ..IdsAndCapabilities::default() },
            keep_caps: false,
            dumpable: 1,
        },
        rlimits: vec![Limit { resource: 7, soft: 1024, hard: 4096 }, Limit { resource: 4, soft: 0, hard: 0 }].into(),
        timers: IntervalTimers { timers: vec![[0; 32]; 3] },
        attributes: ProcessAttributes {
            membarrier_registrations: 1 << 4,
            coredump_filter: 0x33,
            login_uid: Some(crp_compound::process_attrs::LOGIN_UID_UNSET),
            ..ProcessAttributes::default()
        },
        session: crp_compound::session::SessionState::default(),
        pending_signals: Default::default(),
        posix_timers: Default::default(),
        file_locks: Default::default(),
        chain: Default::default(),
    };
    let runs = if with_pages { vec![(HEAP, 1, 0xa5)] } else { Vec::new() };
    (image, runs)
}

/// Writes `image` with its page runs as a real image file (correct
/// checksums throughout).
pub fn write_image(path: &Path, image: &ProcessImage, runs: &Runs) -> Result<(), crp_image::ImageError> {
    let archive = crp_image::to_archive(image)?;
    write_archive(path, &archive, runs)
}

/// Writes an arbitrary metadata archive with page runs.
pub fn write_archive(path: &Path, archive: &[u8], runs: &Runs) -> Result<(), crp_image::ImageError> {
    let _ = std::fs::remove_file(path);
    let mut writer = ImageWriter::create(path)?;
    for &(vaddr, pages, fill) in runs {
        writer.add_page_run(vaddr, pages, |_, buffer| {
            buffer.fill(fill);
            Ok(())
        })?;
    }
    writer.finish(archive)?;
    Ok(())
}
