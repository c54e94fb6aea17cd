//! `crp inspect`: what an image holds, validated in place and decoded once. The
//! summary is one serde type: `--json` prints it (schema `crp-inspect/1`,
//! described by docs/inspect.schema.json), the text form is rendered from it
//! (see [`text`]).

pub mod chain;
mod event;
mod locks;
mod queued;
mod text;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crp_compound::creds::capability_names;
use crp_compound::files::FdTarget;
use crp_compound::signals::{SIG_IGN, flag_names, mask_names, signal_name};
use crp_image::ImageReader;
use serde::Serialize;

pub use self::text::render_text;
use crate::error::CrpError;
use crate::model::ProcessImage;

/// The `schema` field of `crp inspect --json`. A change that removes or
/// retypes a field bumps it; fields may be added within one schema.
pub const SCHEMA: &str = "crp-inspect/1";

/// A 64-bit value that is an address or a bit set: the number, and beside
/// it the same in hex for people.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Hex {
    pub value: u64,
    pub hex: HexString,
}

/// `0x...`, serialised as a string.
#[derive(Debug, Clone, Copy)]
pub struct HexString(pub u64);

impl Serialize for HexString {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:#x}", self.0))
    }
}

impl Hex {
    pub fn new(value: u64) -> Self {
        Self { value, hex: HexString(value) }
    }
}

/// A bit set with the names of its bits.
#[derive(Debug, Clone, Serialize)]
pub struct NamedSet {
    pub value: u64,
    pub hex: HexString,
    pub names: Vec<String>,
}

impl NamedSet {
    fn new(value: u64, names: Vec<String>) -> Self {
        Self { value, hex: HexString(value), names }
    }
}

#[derive(Debug, Serialize)]
pub struct SectionSummary {
    pub kind: &'static str,
    pub offset: u64,
    pub length: u64,
    /// xxh3, as a hex string (a hash, not a quantity).
    pub checksum: String,
}

#[derive(Debug, Serialize)]
pub struct ProcessSummary {
    pub pid: i32,
    pub comm: String,
    pub exe: String,
    pub cwd: String,
    pub umask: u32,
    pub personality: u64,
    /// Stopped by a signal when dumped: it comes back stopped.
    pub stopped: bool,
    /// The leader's (also in `threads`).
    pub cpu_affinity: Vec<u32>,
}

/// The scheduling attributes of one thread.
#[derive(Debug, Serialize)]
pub struct SchedulingSummary {
    /// SCHED_OTHER, SCHED_BATCH, SCHED_IDLE, SCHED_FIFO, SCHED_RR.
    pub policy: String,
    pub reset_on_fork: bool,
    pub nice: i32,
    /// The real-time priority (0 unless FIFO or RR).
    pub priority: u32,
    pub util_min: u32,
    pub util_max: u32,
}

/// An I/O priority as ioprio_get reports it.
#[derive(Debug, Serialize)]
pub struct IoPrioritySummary {
    pub value: u32,
    /// `none`, `realtime`, `best-effort` or `idle`.
    pub class: &'static str,
    pub level: u32,
    /// The kernel derived it from the scheduling attributes (the thread set
    /// none): it is left to follow them at restore.
    pub follows_scheduling: bool,
}

/// One speculation control (PR_GET_SPECULATION_CTRL).
#[derive(Debug, Serialize)]
pub struct SpeculationSummary {
    pub control: &'static str,
    pub value: u64,
}

/// What Linux keeps per thread beyond registers and signals.
#[derive(Debug, Serialize)]
pub struct ThreadSummary {
    pub tid: i32,
    pub comm: String,
    pub cpu_affinity: Vec<u32>,
    pub scheduling: SchedulingSummary,
    pub timer_slack_ns: u64,
    pub io_priority: IoPrioritySummary,
    /// `late`, `early` or `default` (PR_MCE_KILL_GET).
    pub machine_check_kill: &'static str,
    /// `enabled` or `sigsegv` (PR_GET_TSC).
    pub tsc: &'static str,
    pub speculation: Vec<SpeculationSummary>,
    /// cpuid faults (ARCH_SET_CPUID 0).
    pub cpuid_faulting: bool,
    /// 0 when none.
    pub parent_death_signal: u32,
    /// Where it was frozen (its instruction pointer).
    pub frozen_at: u64,
    /// The system call it was frozen in, if any.
    pub in_syscall: Option<SyscallSummary>,
}

/// The system call a thread was frozen in, and what it does once restored.
#[derive(Debug, Serialize)]
pub struct SyscallSummary {
    pub number: i64,
    /// `futex`, `read`..., or `syscall N`.
    pub name: String,
    /// `returned` (it had completed), `re-executed`, `resumes its sleep`
    /// (for the time left) or `returns EINTR`.
    pub on_restore: &'static str,
}

/// Attributes of the whole process no other section shows.
#[derive(Debug, Serialize)]
pub struct ProcessAttributesSummary {
    /// PR_GET_THP_DISABLE: 0, 1, or 3 (disabled except where advised).
    pub thp_disable: u64,
    pub membarrier_registrations: NamedSet,
    pub oom_score_adj: i32,
    pub child_subreaper: bool,
    /// PR_GET_MDWE flags.
    pub memory_deny_write_execute: u64,
    /// ARCH_GET_XCOMP_PERM: the XSAVE features it may use.
    pub xsave_permissions: u64,
    /// It asked for AMX tile data (ARCH_REQ_XCOMP_PERM), asked again at restore.
    pub amx_permitted: bool,
    /// /proc/PID/coredump_filter.
    pub coredump_filter: u32,
    /// The audit login uid (4294967295: none); null on a kernel without audit.
    pub login_uid: Option<u32>,
    /// Slots of its private futex hash it set (PR_FUTEX_HASH); 0: the kernel's choice.
    pub futex_hash_slots: u64,
}

#[derive(Debug, Serialize)]
pub struct DumpedAt {
    pub unix_seconds: u64,
    /// RFC 3339, UTC.
    pub utc: String,
    /// Seconds between the dump and this `crp inspect` (negative if the
    /// clock says the dump is in the future).
    pub age_seconds: i64,
}

/// Real, effective, saved and filesystem ids.
#[derive(Debug, Serialize)]
pub struct Ids {
    pub real: u32,
    pub effective: u32,
    pub saved: u32,
    pub fs: u32,
}

impl Ids {
    fn new([real, effective, saved, fs]: [u32; 4]) -> Self {
        Self { real, effective, saved, fs }
    }
}

#[derive(Debug, Serialize)]
pub struct Capabilities {
    pub effective: NamedSet,
    pub permitted: NamedSet,
    pub inheritable: NamedSet,
    pub bounding: NamedSet,
    pub ambient: NamedSet,
}

#[derive(Debug, Serialize)]
pub struct CredentialsSummary {
    pub uids: Ids,
    pub gids: Ids,
    pub groups: Vec<u32>,
    pub capabilities: Capabilities,
    pub keep_caps: bool,
    pub no_new_privs: bool,
    pub dumpable: u64,
}

/// A signal whose disposition is not the default.
#[derive(Debug, Serialize)]
pub struct HandlerSummary {
    pub signal: i32,
    pub name: String,
    /// `ignore` (SIG_IGN) or `handler` (a function at `handler`).
    pub disposition: &'static str,
    pub handler: Hex,
    pub flags: NamedSet,
    /// Signals blocked while the handler runs.
    pub mask: NamedSet,
    pub restorer: Hex,
}

#[derive(Debug, Serialize)]
pub struct AltStack {
    pub sp: Hex,
    pub size: u64,
    pub flags: i32,
}

#[derive(Debug, Serialize)]
pub struct SignalsSummary {
    pub blocked: NamedSet,
    pub handlers: Vec<HandlerSummary>,
    pub altstack: AltStack,
}

#[derive(Debug, Serialize)]
pub struct TimerSummary {
    pub name: &'static str,
    pub armed: bool,
    pub left_microseconds: u64,
    pub interval_microseconds: u64,
}

/// The general registers, serialised as an object keyed by name (in
/// user_regs_struct order).
#[derive(Debug, Clone)]
pub struct RegisterValues(pub Vec<(&'static str, u64)>);

impl Serialize for RegisterValues {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A limit's value: a number, or `"unlimited"` (RLIM_INFINITY).
#[derive(Debug, Clone, Copy)]
pub struct LimitValue(pub u64);

impl Serialize for LimitValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            u64::MAX => serializer.serialize_str("unlimited"),
            value => serializer.serialize_u64(value),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LimitSummary {
    pub name: &'static str,
    pub resource: u32,
    pub soft: LimitValue,
    pub hard: LimitValue,
}

#[derive(Debug, Serialize)]
pub struct XsaveSummary {
    pub features: Hex,
    pub bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct VmaSummary {
    pub start: Hex,
    pub end: Hex,
    pub permissions: String,
    pub backing: String,
    pub pages_stored: u64,
    /// "no", "yes" (mlock) or "on fault" (MLOCK_ONFAULT): locked again.
    pub locked: &'static str,
}

/// One shared memory object (anonymous shared memory, or a memfd only
/// mappings hold) and what of it the image has.
#[derive(Debug, Serialize)]
pub struct SharedMemorySummary {
    /// Its index, as VMAs name it (`shared memory #N@OFFSET`).
    pub object: u32,
    /// `MAP_SHARED|MAP_ANONYMOUS` or `memfd:NAME`.
    pub kind: String,
    pub inode: u64,
    pub size: u64,
    /// VMAs that map it.
    pub mappings: usize,
    /// Pages stored, each once whatever the number of mappings.
    pub pages_stored: u64,
    /// Bytes of contents stored in the metadata instead (a deleted file no
    /// descriptor holds); 0 otherwise.
    pub contents_bytes: u64,
    /// What the restore does with it, in words.
    pub restored_as: String,
    /// Processes outside the dump that mapped or held it: restored with
    /// its contents, but no longer shared with them.
    pub shared_outside_with: Vec<i32>,
}

#[derive(Debug, Serialize)]
pub struct GuardSummary {
    pub start: Hex,
    pub end: Hex,
}

#[derive(Debug, Serialize)]
pub struct SpecialMapping {
    pub name: String,
    pub start: Hex,
    pub end: Hex,
}

#[derive(Debug, Serialize)]
pub struct FdSummary {
    pub fd: i32,
    /// "file", "character device", "standard stream", "pipe", "eventfd",
    /// "timerfd", "signalfd".
    pub kind: &'static str,
    pub target: String,
    /// open(2) flags.
    pub flags: i32,
    pub flags_octal: String,
    pub offset: u64,
    /// The lowest other descriptor sharing this open file description.
    pub shares_description_with: Option<i32>,
    /// For an end of a pipe: the pipe.
    pub pipe: Option<PipeSummary>,
    /// For an epoll instance: its registrations.
    pub epoll: Option<Vec<EpollSummary>>,
    /// For an inotify instance: its watches (queued events are not kept).
    pub inotify: Option<Vec<WatchSummary>>,
    /// For an end of a unix socket pair: the pair.
    pub socket_pair: Option<SocketPairSummary>,
    /// For any other socket: what it is bound and connected to, its
    /// options and queue.
    pub socket: Option<SocketSummary>,
    /// For an eventfd, timerfd or signalfd: its state (`eventfd`,
    /// `timerfd`, `signalfd`, each null unless it is that kind).
    #[serde(flatten)]
    pub event: event::EventSummaries,
    /// For a FIFO: its path, mode and saved buffer.
    pub fifo: Option<FifoSummary>,
    /// For a deleted file or memfd: the object.
    pub file_object: Option<FileObjectSummary>,
    /// Who its SIGIO and SIGURG go to (F_SETOWN_EX, F_SETSIG), when set.
    pub owner: Option<OwnerSummary>,
    /// For a pseudo-terminal master or slave the process opened: the pair.
    pub pty: Option<PtySummary>,
}

#[derive(Debug, Serialize)]
pub struct OwnerSummary {
    /// "thread", "process" or "process group".
    pub kind: &'static str,
    /// The dumped process itself (or the group it leads): the restored
    /// process, whatever its PID.
    pub itself: bool,
    /// Another thread, process or group, by id; null for itself or nobody.
    pub id: Option<i32>,
    /// The F_SETSIG signal; 0 is SIGIO.
    pub signal: i32,
    /// What `crp inspect` prints.
    pub description: String,
}

/// A pseudo-terminal pair the process opened, seen from one of its ends.
#[derive(Debug, Serialize)]
pub struct PtySummary {
    /// `master` or `slave`.
    pub end: &'static str,
    /// The slave is /dev/pts/`number` (made again with it when it is free).
    pub number: u32,
    pub packet_mode: bool,
    pub locked: bool,
    pub terminal: Option<TerminalSummary>,
}

/// A terminal's modes and window size.
#[derive(Debug, Serialize)]
pub struct TerminalSummary {
    pub echo: bool,
    pub canonical: bool,
    pub rows: u16,
    pub columns: u16,
    pub input_flags: Hex,
    pub output_flags: Hex,
    pub control_flags: Hex,
    pub local_flags: Hex,
}

impl TerminalSummary {
    fn of(settings: &crp_compound::files::TerminalSettings) -> Self {
        Self {
            echo: settings.echoes(),
            canonical: settings.canonical(),
            rows: settings.window.rows,
            columns: settings.window.columns,
            input_flags: Hex::new(settings.input_flags.into()),
            output_flags: Hex::new(settings.output_flags.into()),
            control_flags: Hex::new(settings.control_flags.into()),
            local_flags: Hex::new(settings.local_flags.into()),
        }
    }
}

/// The process's session, process group and terminal at the dump (the
/// restore places it anew: see the README).
#[derive(Debug, Serialize)]
pub struct SessionSummary {
    pub session: i32,
    pub process_group: i32,
    /// It led its session / its process group.
    pub led_session: bool,
    pub led_group: bool,
    /// Its controlling terminal's name, null without one.
    pub controlling_terminal: Option<String>,
    /// That terminal's foreground process group (-1 without one), and
    /// whether the process's group was it.
    pub foreground_group: i32,
    pub in_foreground: bool,
    /// The settings of the terminal it ran on, when a descriptor of it was open.
    pub terminal: Option<TerminalSummary>,
}

fn session_summary(image: &ProcessImage) -> SessionSummary {
    let session = &image.session;
    SessionSummary {
        session: session.session,
        process_group: session.group,
        led_session: session.session == image.pid,
        led_group: session.group == image.pid,
        controlling_terminal: session.had_controlling_terminal().then(|| session.terminal_name.clone()),
        foreground_group: session.foreground_group,
        in_foreground: session.had_controlling_terminal() && session.foreground_group == session.group,
        terminal: session.terminal.as_ref().map(TerminalSummary::of),
    }
}

fn pty_summary(table: &crp_compound::files::FdTable, target: &FdTarget) -> Option<PtySummary> {
    let master_of = |number: u32| {
        table.files.iter().find_map(|file| match &file.target {
            FdTarget::PtyMaster(master) if master.number == number => Some(master),
            _ => None,
        })
    };
    let (end, number) = match target {
        FdTarget::PtyMaster(master) => ("master", master.number),
        FdTarget::PtySlave { number } => ("slave", *number),
        _ => return None,
    };
    let master = master_of(number);
    Some(PtySummary {
        end,
        number,
        packet_mode: master.is_some_and(|master| master.packet),
        locked: master.is_some_and(|master| master.locked),
        terminal: master.map(|master| TerminalSummary::of(&master.settings)),
    })
}

#[derive(Debug, Serialize)]
pub struct FifoSummary {
    pub path: String,
    pub mode: String,
    /// Its path was deleted at the dump: made again at the restore.
    pub deleted: bool,
    pub size: u32,
    /// Bytes saved, written back unless a process outside holds the FIFO.
    pub buffered_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct FileObjectSummary {
    /// "deleted file", "deleted name of a linked file", "memfd", "deleted directory".
    pub kind: &'static str,
    /// The deleted path, or the memfd's name.
    pub name: String,
    pub inode: u64,
    /// Octal, or null for a file reopened by handle.
    pub mode: Option<String>,
    pub size: Option<u64>,
    /// Whether its contents are in the image (else it is reopened by handle).
    pub contents_stored: bool,
    pub stored_bytes: u64,
    pub extents: usize,
    /// F_GET_SEALS of a memfd, else null.
    pub seals: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct SocketPairSummary {
    /// "stream", "datagram" or "seqpacket".
    pub kind: &'static str,
    /// This end's inode, and the descriptor of the other end.
    pub inode: u64,
    pub peer_fd: Option<i32>,
    /// Messages and bytes waiting for this end to read.
    pub queued_messages: usize,
    pub queued_bytes: usize,
    /// "read", "write", "both" or null.
    pub shut_down: Option<&'static str>,
    pub pass_credentials: bool,
    /// The name this end had at the dump (an end accepted from a listening
    /// socket bears the listener's), not given back; null if none.
    pub lost_name: Option<String>,
    /// Its other options kept (those that differ from a fresh socket's).
    pub options: Vec<SocketOptionSummary>,
    /// The messages waiting for this end that carry descriptors (SCM_RIGHTS).
    pub in_flight: Vec<InFlightSummary>,
}

/// One queued message's descriptors in flight.
#[derive(Debug, Serialize)]
pub struct InFlightSummary {
    /// Its index among the messages waiting (0: the next one read).
    pub message: u32,
    /// Per descriptor passed: the process's descriptor on the same open
    /// file, or null when the file is only in flight.
    pub fds: Vec<Option<i32>>,
}

/// One multicast group a UDP socket joined.
#[derive(Debug, Serialize)]
pub struct MembershipSummary {
    pub interface: String,
    pub group: String,
    /// "include" (only `sources` are received) or "exclude" (all but them).
    pub mode: &'static str,
    pub sources: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SocketSummary {
    /// "unix stream", "unix datagram", "unix seqpacket", "TCP", "TCP6",
    /// "UDP", "UDP6".
    pub kind: String,
    pub inode: u64,
    /// `/path`, `@abstract`, `127.0.0.1:80`, `[::1]:53`, or null.
    pub local: Option<String>,
    /// For a unix socket bound to a path: whether the path still led to
    /// it at the dump (else it is removed again after the restore binds).
    pub path_present: Option<bool>,
    /// The address it is connected to again at the restore, or null.
    pub peer: Option<String>,
    /// The inode of a unix stream peer outside the process, which needs
    /// `crp restore --fd N=...`; else null.
    pub peer_outside: Option<u64>,
    pub listening_backlog: Option<u32>,
    /// Connections that waited in the backlog at the dump: not kept.
    pub lost_connections: u32,
    /// "read", "write", "both" or null.
    pub shut_down: Option<&'static str>,
    pub options: Vec<SocketOptionSummary>,
    pub queued_datagrams: usize,
    pub queued_bytes: usize,
    /// For an established TCP connection (restored with TCP_REPAIR).
    pub connection: Option<ConnectionSummary>,
    /// The multicast groups it joined, joined again at the restore.
    pub memberships: Vec<MembershipSummary>,
}

#[derive(Debug, Serialize)]
pub struct ConnectionSummary {
    /// Bytes in its send queue, and how many of them were never sent.
    pub send_queue_bytes: usize,
    pub unsent_bytes: u32,
    /// Bytes received that the process had not read.
    pub receive_queue_bytes: usize,
    pub mss: u32,
    /// The peer was outside the process (`crp dump --tcp-established`).
    pub peer_outside: bool,
}

#[derive(Debug, Serialize)]
pub struct SocketOptionSummary {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Serialize)]
pub struct EpollSummary {
    /// The descriptor number it is registered under.
    pub target_fd: i32,
    /// The lowest descriptor of the registered file, when it is not `target_fd`.
    pub target_now_at: Option<i32>,
    pub events: u32,
    /// `IN|ET|ONESHOT`...
    pub events_names: String,
    pub data: Hex,
}

#[derive(Debug, Serialize)]
pub struct WatchSummary {
    pub wd: i32,
    pub path: String,
    pub mask: u32,
    /// `CREATE|DELETE|ONESHOT`...
    pub mask_names: String,
}

#[derive(Debug, Serialize)]
pub struct PipeSummary {
    pub inode: u64,
    /// "read" or "write" (or "read and write").
    pub end: &'static str,
    pub size: u32,
    /// Bytes waiting in it, restored with it.
    pub buffered_bytes: usize,
    /// Whether its other end was outside the process.
    pub other_end_outside: bool,
}

/// The JSON form of `crp inspect --json` (schema [`SCHEMA`]).
#[derive(Debug, Serialize)]
pub struct ImageSummary {
    pub schema: &'static str,
    pub path: String,
    pub format_version: u32,
    pub rkyv_layout: Hex,
    pub sections: Vec<SectionSummary>,
    pub file_bytes: u64,
    pub page_bytes: u64,
    pub metadata_bytes: u64,
    pub page_runs: usize,
    pub kernel_release: String,
    pub dumped_at: DumpedAt,
    pub process: ProcessSummary,
    pub process_attributes: ProcessAttributesSummary,
    pub threads: Vec<ThreadSummary>,
    pub credentials: CredentialsSummary,
    pub signals: SignalsSummary,
    /// Every pending signal, the process-wide queue first, in queue order.
    pub pending_signals: Vec<queued::PendingSignalSummary>,
    pub timers: Vec<TimerSummary>,
    /// POSIX timers (timer_create), by id.
    pub posix_timers: Vec<queued::PosixTimerSummary>,
    pub rlimits: Vec<LimitSummary>,
    pub xsave: XsaveSummary,
    /// Keyed by register name, in the order the kernel's user_regs_struct
    /// has them.
    pub registers: RegisterValues,
    pub vmas: Vec<VmaSummary>,
    pub shared_memory: Vec<SharedMemorySummary>,
    /// "none", "mlockall(MCL_FUTURE)" or "mlockall(MCL_FUTURE|MCL_ONFAULT)".
    pub future_locking: &'static str,
    /// Guard regions (MADV_GUARD_INSTALL), installed again at restore.
    pub guard_regions: Vec<GuardSummary>,
    pub vdso: Vec<SpecialMapping>,
    pub files: Vec<FdSummary>,
    pub session: SessionSummary,
    /// File locks the process held, taken again at restore.
    pub file_locks: Vec<locks::FileLockSummary>,
    /// Its place in a chain of incremental dumps (`null` for an image with
    /// no parent that left no tracking armed).
    pub chain: Option<chain::ChainSummary>,
}

pub fn summarize(reader: &ImageReader) -> Result<ImageSummary, CrpError> {
    let archived = reader.metadata::<crate::model::ArchivedProcessImage>()?;
    // The summary reads a handful of fields; deserialising the metadata
    // (kilobytes) keeps this code on plain types. Pages are never copied.
    let image: ProcessImage = rkyv::deserialize::<ProcessImage, rkyv::rancor::Error>(archived)
        .map_err(|error| CrpError::InvalidImage { reason: error.to_string() })?;
    let leader = image.leader()?;
    Ok(ImageSummary {
        schema: SCHEMA,
        path: reader.path().display().to_string(),
        format_version: reader.header().format_version,
        rkyv_layout: Hex::new(u64::from(reader.header().rkyv_layout)),
        // Listed: the sections this image has (the header says which).
        sections: crp_image::SectionKind::ALL
            .iter()
            .filter_map(|kind| {
                reader.header().section(*kind).map(|entry| SectionSummary {
                    kind: kind.name(),
                    offset: entry.offset,
                    length: entry.length,
                    checksum: format!("{:#018x}", entry.checksum),
                })
            })
            .collect(),
        file_bytes: reader.file_length(),
        page_bytes: reader.page_bytes(),
        metadata_bytes: reader.metadata_bytes().len() as u64,
        page_runs: reader.page_runs().len(),
        kernel_release: image.kernel_release.clone(),
        dumped_at: dumped_at(image.dumped_at_unix_seconds, SystemTime::now()),
        process: ProcessSummary {
            pid: image.pid,
            comm: leader.attributes.comm.clone(),
            exe: image.mm.exe_path.clone(),
            cwd: image.task.cwd.clone(),
            umask: image.task.umask,
            personality: image.task.personality,
            stopped: image.task.stopped,
            cpu_affinity: leader.attributes.cpu_affinity.clone(),
        },
        process_attributes: process_attributes(&image.attributes),
        threads: image.threads.iter().map(thread).collect(),
        credentials: credentials(&image),
        signals: signals(&image, &leader.signals),
        pending_signals: queued::pending_signals(&image),
        posix_timers: queued::posix_timers(&image),
        file_locks: locks::file_locks(&image),
        timers: image
            .timers
            .entries()
            .map(|(name, left, interval)| TimerSummary {
                name,
                armed: left != 0,
                left_microseconds: left,
                interval_microseconds: interval,
            })
            .collect(),
        rlimits: image
            .rlimits
            .iter()
            .map(|limit| LimitSummary {
                name: limit.name(),
                resource: limit.resource,
                soft: LimitValue(limit.soft),
                hard: LimitValue(limit.hard),
            })
            .collect(),
        xsave: XsaveSummary {
            features: Hex::new(leader.cpu.xsave.enabled_features()),
            bytes: leader.cpu.xsave.bytes.len(),
        },
        registers: RegisterValues(leader.cpu.registers.named().collect()),
        vmas: vmas(&image, reader),
        shared_memory: shared_memory(&image, reader),
        future_locking: image.future_locking.describe(),
        guard_regions: image
            .guard_regions
            .iter()
            .map(|guard| GuardSummary { start: Hex::new(guard.start), end: Hex::new(guard.end) })
            .collect(),
        vdso: image
            .vdso
            .mappings
            .iter()
            .map(|mapping| SpecialMapping {
                name: mapping.name.clone(),
                start: Hex::new(mapping.start),
                end: Hex::new(mapping.end),
            })
            .collect(),
        files: image
            .files
            .descriptors
            .iter()
            .zip(image.files.records())
            .map(|(descriptor, record)| fd_summary(&image.files, descriptor, record))
            .collect(),
        session: session_summary(&image),
        chain: chain::summarize(reader, &image.chain),
    })
}

fn fd_summary(
    table: &crp_compound::files::FdTable,
    descriptor: &crp_compound::files::Descriptor,
    record: crp_compound::files::FdRecord,
) -> FdSummary {
    let mut pipe = None;
    let mut socket_pair = None;
    let mut socket = None;
    let (mut epoll, mut inotify) = (None, None);
    let mut events = event::EventSummaries::default();
    let mut fifo = None;
    let mut file_object = None;
    let pty = pty_summary(table, &record.target);
    let (kind, target) = match &record.target {
        FdTarget::File { path, .. } if record.flags & libc::O_PATH != 0 => ("O_PATH", path.clone()),
        FdTarget::File { path, .. } => ("file", path.clone()),
        FdTarget::CharDevice { path } => ("character device", path.clone()),
        FdTarget::Inherited { stream } => ("standard stream", format!("standard stream {stream} of crp restore")),
        FdTarget::Pipe { pipe: index } => {
            let buffer = table.pipe_of(*index);
            let inode = buffer.map_or(0, |buffer| buffer.inode);
            pipe = buffer.map(|buffer| PipeSummary {
                inode: buffer.inode,
                end: match record.flags & libc::O_ACCMODE {
                    libc::O_RDONLY => "read",
                    libc::O_WRONLY => "write",
                    _ => "read and write",
                },
                size: buffer.size,
                buffered_bytes: buffer.data.len(),
                other_end_outside: table.other_end_outside(*index, record.flags),
            });
            ("pipe", format!("pipe:[{inode}]"))
        }
        FdTarget::UnixPair { pair, end } => {
            let ends = table.socket_pair_of(*pair).map(|found| (found, &found.ends[usize::from(*end).min(1)]));
            socket_pair = ends.map(|(found, this)| SocketPairSummary {
                kind: match found.kind {
                    libc::SOCK_STREAM => "stream",
                    libc::SOCK_DGRAM => "datagram",
                    _ => "seqpacket",
                },
                inode: this.inode,
                peer_fd: peer_descriptor(table, *pair, *end),
                queued_messages: this.queued.len(),
                queued_bytes: this.queued.iter().map(Vec::len).sum(),
                shut_down: match this.shutdown & 3 {
                    0 => None,
                    1 => Some("read"),
                    2 => Some("write"),
                    _ => Some("both"),
                },
                pass_credentials: this.pass_credentials,
                lost_name: this.name.as_ref().map(ToString::to_string),
                options: option_summaries(&this.options),
                in_flight: this
                    .passed
                    .iter()
                    .map(|passed| InFlightSummary {
                        message: passed.message,
                        fds: passed
                            .files
                            .iter()
                            .map(|file| table.descriptors.iter().find(|held| held.file == *file).map(|held| held.fd))
                            .collect(),
                    })
                    .collect(),
            });
            ("unix socket pair", format!("socket:[{}]", ends.map_or(0, |(_, this)| this.inode)))
        }
        FdTarget::Socket(found) => {
            socket = Some(socket_summary(found));
            ("socket", format!("socket:[{}]", found.inode))
        }
        FdTarget::Epoll { registrations } => {
            epoll = Some(registrations.iter().map(|registration| epoll_summary(table, registration)).collect());
            ("epoll", "anon_inode:[eventpoll]".to_owned())
        }
        FdTarget::Inotify { watches } => {
            inotify = Some(
                watches
                    .iter()
                    .map(|watch| WatchSummary {
                        wd: watch.wd,
                        path: watch.path.clone(),
                        mask: watch.mask,
                        mask_names: crp_compound::files::inotify::describe_mask(watch.mask),
                    })
                    .collect(),
            );
            ("inotify", "anon_inode:inotify".to_owned())
        }
        FdTarget::Event(event) => {
            events = event::EventSummaries::of(event);
            (event.kind(), event.link())
        }
        FdTarget::Fifo { path, mode, deleted, pipe } => {
            let buffer = table.pipe_of(*pipe);
            fifo = Some(FifoSummary {
                path: path.clone(),
                mode: format!("{mode:#o}"),
                deleted: *deleted,
                size: buffer.map_or(0, |buffer| buffer.size),
                buffered_bytes: buffer.map_or(0, |buffer| buffer.data.len()),
            });
            ("fifo", path.clone())
        }
        FdTarget::Object { object } => {
            let object = table.objects.get(*object as usize);
            file_object = object.map(object_summary);
            match object {
                Some(crp_compound::files::FileObject::Memfd { name, .. }) => ("memfd", format!("/memfd:{name}")),
                Some(crp_compound::files::FileObject::DeletedDirectory { path, .. }) => {
                    ("deleted directory", format!("{path} (deleted)"))
                }
                Some(
                    crp_compound::files::FileObject::Deleted { path, .. }
                    | crp_compound::files::FileObject::Linked { path, .. },
                ) => ("deleted file", format!("{path} (deleted)")),
                None => ("deleted file", String::new()),
            }
        }
        FdTarget::OwnTerminal { path } => ("own terminal", path.clone()),
        FdTarget::PtyMaster(master) => ("pseudo-terminal master", format!("/dev/ptmx (/dev/pts/{})", master.number)),
        FdTarget::PtySlave { number } => ("pseudo-terminal slave", format!("/dev/pts/{number}")),
    };
    FdSummary {
        shares_description_with: table.shared_with(descriptor),
        fd: record.fd,
        kind,
        target,
        flags: record.flags,
        flags_octal: format!("{:#o}", record.flags),
        offset: record.offset,
        pipe,
        socket_pair,
        socket,
        epoll,
        inotify,
        event: events,
        fifo,
        file_object,
        pty,
        owner: table.file_of(descriptor).and_then(|file| file.owner).map(|owner| owner_summary(&owner)),
    }
}

fn owner_summary(owner: &crp_compound::files::FileOwner) -> OwnerSummary {
    use crp_compound::files::{OwnerId, OwnerKind};
    OwnerSummary {
        kind: match owner.kind {
            OwnerKind::Thread => "thread",
            OwnerKind::Process => "process",
            OwnerKind::Group => "process group",
        },
        itself: owner.id == OwnerId::Itself,
        id: match owner.id {
            OwnerId::Other(id) => Some(id),
            OwnerId::Nobody | OwnerId::Itself => None,
        },
        signal: owner.signal,
        description: owner.describe(),
    }
}

fn option_summaries(kept: &[crp_compound::files::socket::SocketOption]) -> Vec<SocketOptionSummary> {
    use crp_compound::files::socket::options;
    kept.iter()
        .map(|option| SocketOptionSummary {
            name: options::label(option.level, option.name),
            value: options::shown_value(option),
        })
        .collect()
}

fn membership_summary(membership: &crp_compound::files::socket::multicast::Membership) -> MembershipSummary {
    let address = |bytes: &[u8]| match <[u8; 4]>::try_from(bytes) {
        Ok(v4) => std::net::Ipv4Addr::from(v4).to_string(),
        Err(_) => <[u8; 16]>::try_from(bytes)
            .map_or_else(|_| format!("{bytes:02x?}"), |v6| std::net::Ipv6Addr::from(v6).to_string()),
    };
    MembershipSummary {
        interface: membership.interface.clone(),
        group: address(&membership.group),
        mode: if membership.include { "include" } else { "exclude" },
        sources: membership.sources.iter().map(|source| address(source)).collect(),
    }
}

fn socket_summary(socket: &crp_compound::files::SocketFile) -> SocketSummary {
    use crp_compound::files::socket::Peer;
    SocketSummary {
        kind: socket.kind_name(),
        inode: socket.inode,
        local: socket.local.as_ref().map(ToString::to_string),
        path_present: socket.bound_file.as_ref().map(|file| file.present),
        peer: match &socket.peer {
            Peer::Address(peer) => Some(peer.to_string()),
            Peer::Outside { name: Some(name), .. } => Some(name.to_string()),
            _ => None,
        },
        peer_outside: match socket.peer {
            Peer::Outside { inode, .. } => Some(inode),
            _ => None,
        },
        listening_backlog: socket.backlog,
        lost_connections: socket.lost_connections,
        shut_down: match socket.shutdown & 3 {
            0 => None,
            1 => Some("read"),
            2 => Some("write"),
            _ => Some("both"),
        },
        options: option_summaries(&socket.options),
        queued_datagrams: socket.queued.len(),
        queued_bytes: socket.queued.iter().map(|datagram| datagram.data.len()).sum(),
        connection: socket.connection.as_ref().map(|connection| ConnectionSummary {
            send_queue_bytes: connection.send_queue.len(),
            unsent_bytes: connection.unsent,
            receive_queue_bytes: connection.receive_queue.len(),
            mss: connection.mss_clamp,
            peer_outside: connection.peer_outside,
        }),
        memberships: socket.memberships.iter().map(membership_summary).collect(),
    }
}

fn object_summary(object: &crp_compound::files::FileObject) -> FileObjectSummary {
    use crp_compound::files::FileObject;
    let stored = |kind, name: &str, mode: u32, contents: &crp_compound::files::Contents, seals| FileObjectSummary {
        kind,
        name: name.to_owned(),
        inode: object.inode(),
        mode: Some(format!("{mode:#o}")),
        size: Some(contents.size),
        contents_stored: true,
        stored_bytes: contents.stored_bytes(),
        extents: contents.extents.len(),
        seals,
    };
    match object {
        FileObject::Deleted { path, mode, contents, .. } => stored("deleted file", path, *mode, contents, None),
        FileObject::Memfd { name, mode, contents, seals, .. } => stored("memfd", name, *mode, contents, Some(*seals)),
        FileObject::DeletedDirectory { path, mode, .. } => FileObjectSummary {
            kind: "deleted directory",
            name: path.clone(),
            inode: object.inode(),
            mode: Some(format!("{mode:#o}")),
            size: None,
            contents_stored: false,
            stored_bytes: 0,
            extents: 0,
            seals: None,
        },
        FileObject::Linked { path, .. } => FileObjectSummary {
            kind: "deleted name of a linked file",
            name: path.clone(),
            inode: object.inode(),
            mode: None,
            size: None,
            contents_stored: false,
            stored_bytes: 0,
            extents: 0,
            seals: None,
        },
    }
}

fn epoll_summary(
    table: &crp_compound::files::FdTable,
    registration: &crp_compound::files::EpollRegistration,
) -> EpollSummary {
    let holds = |fd: i32| {
        table.descriptors.iter().any(|descriptor| descriptor.fd == fd && descriptor.file == registration.file)
    };
    let now_at = table
        .descriptors
        .iter()
        .find(|descriptor| descriptor.file == registration.file)
        .map(|descriptor| descriptor.fd);
    EpollSummary {
        target_fd: registration.fd,
        target_now_at: if holds(registration.fd) { None } else { now_at },
        events: registration.events,
        events_names: crp_compound::files::epoll::describe_events(registration.events),
        data: Hex::new(registration.data),
    }
}

/// The lowest descriptor of the other end of socket pair `pair`.
fn peer_descriptor(table: &crp_compound::files::FdTable, pair: u32, end: u8) -> Option<i32> {
    table.descriptors.iter().find_map(|descriptor| {
        let file = table.file_of(descriptor)?;
        (file.target == FdTarget::UnixPair { pair, end: 1 - end.min(1) }).then_some(descriptor.fd)
    })
}

/// The dump time as a date, and its age at `now`.
pub fn dumped_at(unix_seconds: u64, now: SystemTime) -> DumpedAt {
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(unix_seconds)).unwrap_or(UNIX_EPOCH);
    let now_seconds = now.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let age_seconds =
        i64::try_from(now_seconds).unwrap_or(i64::MAX).saturating_sub(i64::try_from(unix_seconds).unwrap_or(i64::MAX));
    // humantime formats years 1970..=9999 only; later is clamped to its
    // maximum rather than panicking on a hostile value.
    let utc = if unix_seconds <= 253_402_300_799 {
        humantime::format_rfc3339_seconds(at).to_string()
    } else {
        "9999-12-31T23:59:59Z (or later)".to_owned()
    };
    DumpedAt { unix_seconds, utc, age_seconds }
}

/// "42 s ago", "3 min ago", "5 h ago", "12 d ago", "in the future".
pub fn describe_age(age_seconds: i64) -> String {
    match age_seconds {
        ..0 => format!("{} s in the future (clock skew?)", age_seconds.unsigned_abs()),
        0..60 => format!("{age_seconds} s ago"),
        60..3600 => format!("{} min ago", age_seconds / 60),
        3600..86_400 => format!("{} h ago", age_seconds / 3600),
        _ => format!("{} d ago", age_seconds / 86_400),
    }
}

fn process_attributes(attributes: &crp_compound::process_attrs::ProcessAttributes) -> ProcessAttributesSummary {
    let names = attributes.membarrier_names().into_iter().map(str::to_owned).collect();
    ProcessAttributesSummary {
        thp_disable: attributes.thp_disable,
        membarrier_registrations: NamedSet::new(attributes.membarrier_registrations, names),
        oom_score_adj: attributes.oom_score_adj,
        child_subreaper: attributes.child_subreaper,
        memory_deny_write_execute: attributes.memory_deny_write_execute,
        xsave_permissions: attributes.xsave_permissions,
        amx_permitted: attributes.amx_permitted(),
        coredump_filter: attributes.coredump_filter,
        login_uid: attributes.login_uid,
        futex_hash_slots: attributes.futex_hash_slots,
    }
}

fn thread(thread: &crate::model::ThreadState) -> ThreadSummary {
    let attributes = &thread.attributes;
    let scheduling = &attributes.scheduling;
    ThreadSummary {
        tid: thread.tid,
        comm: attributes.comm.clone(),
        cpu_affinity: attributes.cpu_affinity.clone(),
        scheduling: SchedulingSummary {
            policy: scheduling.policy_name(),
            reset_on_fork: scheduling.reset_on_fork,
            nice: scheduling.nice,
            priority: scheduling.priority,
            util_min: scheduling.util_min,
            util_max: scheduling.util_max,
        },
        timer_slack_ns: attributes.timer_slack_ns,
        io_priority: IoPrioritySummary {
            value: attributes.io_priority,
            class: match attributes.io_priority >> 13 {
                0 => "none",
                1 => "realtime",
                2 => "best-effort",
                _ => "idle",
            },
            level: attributes.io_priority & 0x1fff,
            follows_scheduling: attributes.io_priority_follows_scheduling(),
        },
        machine_check_kill: match attributes.machine_check_kill {
            0 => "late",
            1 => "early",
            _ => "default",
        },
        tsc: if attributes.tsc == crp_compound::thread_attrs::TSC_ENABLE { "enabled" } else { "sigsegv" },
        cpuid_faulting: attributes.cpuid_faulting,
        speculation: attributes
            .speculation_controls()
            .map(|(control, value)| SpeculationSummary { control, value })
            .collect(),
        parent_death_signal: attributes.parent_death_signal.0,
        frozen_at: thread.cpu.registers.to_registers().map_or(0, |registers| registers.rip),
        in_syscall: thread.cpu.registers.to_registers().ok().and_then(|registers| syscall_summary(&registers)),
    }
}

/// The system call `registers` were frozen in, if any.
fn syscall_summary(registers: &crp_ptrace::Registers) -> Option<SyscallSummary> {
    let number = registers.orig_rax.cast_signed();
    if number < 0 {
        return None;
    }
    let on_restore = match crp_arch_x86::plan_resume(registers) {
        // epoll_wait and the like end with EINTR when frozen: they are
        // never restarted.
        crp_arch_x86::ResumeAction::AsIs if registers.rax.cast_signed() == -i64::from(libc::EINTR) => "returns EINTR",
        crp_arch_x86::ResumeAction::AsIs => "returned",
        crp_arch_x86::ResumeAction::Rewind => "re-executed",
        crp_arch_x86::ResumeAction::RewindSleep { .. } => "resumes its sleep",
        crp_arch_x86::ResumeAction::Interrupt => "returns EINTR",
    };
    Some(SyscallSummary { number, name: crp_arch_x86::syscall_name(number), on_restore })
}

fn credentials(image: &ProcessImage) -> CredentialsSummary {
    let ids = &image.credentials.ids;
    let set = |value: u64| NamedSet::new(value, capability_names(value));
    CredentialsSummary {
        uids: Ids::new(ids.uids),
        gids: Ids::new(ids.gids),
        groups: ids.groups.clone(),
        capabilities: Capabilities {
            effective: set(ids.cap_effective),
            permitted: set(ids.cap_permitted),
            inheritable: set(ids.cap_inheritable),
            bounding: set(ids.cap_bounding),
            ambient: set(ids.cap_ambient),
        },
        keep_caps: image.credentials.keep_caps,
        no_new_privs: ids.no_new_privs,
        dumpable: image.credentials.dumpable,
    }
}

fn signals(image: &ProcessImage, thread: &crp_compound::signals::ThreadSignals) -> SignalsSummary {
    let signals = &image.signals;
    SignalsSummary {
        blocked: NamedSet::new(thread.blocked, mask_names(thread.blocked)),
        handlers: signals
            .actions
            .iter()
            .filter(|action| action.handler != crp_compound::signals::SIG_DFL)
            .map(|action| HandlerSummary {
                signal: action.signal,
                name: signal_name(action.signal),
                disposition: if action.handler == SIG_IGN { "ignore" } else { "handler" },
                handler: Hex::new(action.handler),
                flags: NamedSet::new(action.flags, flag_names(action.flags)),
                mask: NamedSet::new(action.mask, mask_names(action.mask)),
                restorer: Hex::new(action.restorer),
            })
            .collect(),
        altstack: AltStack {
            sp: Hex::new(thread.altstack_sp),
            size: thread.altstack_size,
            flags: thread.altstack_flags,
        },
    }
}

use crp_compound::vma::VmaFlags;

fn vmas(image: &ProcessImage, reader: &ImageReader) -> Vec<VmaSummary> {
    let runs = reader.page_runs();
    image
        .vmas
        .iter()
        .map(|vma| VmaSummary {
            start: Hex::new(vma.start),
            end: Hex::new(vma.end),
            permissions: vma.protection_string(),
            backing: vma.describe_backing(),
            pages_stored: runs
                .iter()
                .filter(|run| run.vaddr >= vma.start && run.vaddr < vma.end)
                .map(|run| run.page_count)
                .sum(),
            locked: match (vma.flags().contains(VmaFlags::LOCKED), vma.flags().contains(VmaFlags::LOCK_ON_FAULT)) {
                (false, _) => "no",
                (true, false) => "yes",
                (true, true) => "on fault",
            },
        })
        .collect()
}

fn restored_as(kind: &crp_compound::vma::SharedKind) -> String {
    use crp_compound::vma::SharedKind;
    match kind {
        SharedKind::Anonymous => "made again as anonymous shared memory".to_owned(),
        SharedKind::Memfd { name } | SharedKind::MemfdContents { name, .. } => {
            format!("made again with memfd_create({name:?})")
        }
        SharedKind::DeletedFile { path, .. } => format!("made again unlinked (O_TMPFILE) beside {path}"),
        SharedKind::SysV { removed: true, .. } => "made again (a new id) and removed once attached".to_owned(),
        SharedKind::SysV { key, .. } => format!(
            "attached to the segment of key {key:#x} if it still exists with this size and mode (its contents \
             kept), else made again with a new id"
        ),
    }
}

fn shared_memory(image: &ProcessImage, reader: &ImageReader) -> Vec<SharedMemorySummary> {
    let runs = reader.page_runs();
    (0u32..)
        .zip(&image.shared_memory.objects)
        .map(|(index, object)| {
            let mappings: Vec<_> = image
                .vmas
                .iter()
                .filter(
                    |vma| matches!(vma.backing, crp_compound::vma::Backing::Shared { object, .. } if object == index),
                )
                .collect();
            SharedMemorySummary {
                object: index,
                kind: object.describe(),
                inode: object.inode,
                size: object.size,
                mappings: mappings.len(),
                pages_stored: runs
                    .iter()
                    .filter(|run| mappings.iter().any(|vma| run.vaddr >= vma.start && run.vaddr < vma.end))
                    .map(|run| run.page_count)
                    .sum(),
                contents_bytes: match &object.kind {
                    crp_compound::vma::SharedKind::DeletedFile { contents, .. }
                    | crp_compound::vma::SharedKind::MemfdContents { contents, .. } => contents.stored_bytes(),
                    _ => 0,
                },
                restored_as: restored_as(&object.kind),
                shared_outside_with: object.outside.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_time_is_a_utc_date_and_an_age() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 3 * 3600 + 5);
        let at = dumped_at(1_700_000_000, now);
        assert_eq!(at.utc, "2023-11-14T22:13:20Z");
        assert_eq!(at.age_seconds, 3 * 3600 + 5);
        assert_eq!(describe_age(at.age_seconds), "3 h ago");
        assert_eq!(describe_age(59), "59 s ago");
        assert_eq!(describe_age(61), "1 min ago");
        assert_eq!(describe_age(3 * 86_400), "3 d ago");
        assert!(describe_age(-5).contains("future"));
    }

    #[test]
    fn a_hostile_dump_time_does_not_panic() {
        let at = dumped_at(u64::MAX, SystemTime::now());
        assert!(at.utc.starts_with("9999"), "{}", at.utc);
        assert!(at.age_seconds < 0);
    }

    #[test]
    fn unlimited_is_a_word_and_limits_are_numbers() {
        assert_eq!(serde_json::to_string(&LimitValue(u64::MAX)).unwrap(), "\"unlimited\"");
        assert_eq!(serde_json::to_string(&LimitValue(1024)).unwrap(), "1024");
        assert_eq!(serde_json::to_string(&Hex::new(255)).unwrap(), r#"{"value":255,"hex":"0xff"}"#);
    }
}
