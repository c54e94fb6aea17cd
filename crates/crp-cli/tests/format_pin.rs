//! Pins the image format. rkyv has no schema evolution: an archived type
//! that changes without a FORMAT_VERSION bump would make old images decode
//! as garbage (or be refused with a puzzling message). This test reads a
//! committed image of the current version; when it fails after a change of
//! any archived type, bump `crp_image::format::FORMAT_VERSION` and
//! regenerate the file with `CRP_REGENERATE_GOLDEN=1 cargo test --test format_pin`.

use std::path::PathBuf;

use crp_arch_x86::{CpuState, RegisterFile, SpecialMapping, VdsoLayout, XsaveArea};
use crp_cli::model::{ArchivedProcessImage, ProcessImage, ThreadState};
use crp_compound::creds::{Credentials, IdsAndCapabilities};
use crp_compound::files::event::{TimerFd, Timespec};
use crp_compound::files::{EventFile, FdRecord, FdTarget};
use crp_compound::mm::MmFields;
use crp_compound::pending_signals::{QueuedSignal, SharedPendingSignals, ThreadPendingSignals};
use crp_compound::posix_timers::{PosixTimer, PosixTimers};
use crp_compound::process_attrs::ProcessAttributes;
use crp_compound::rlimits::Limit;
use crp_compound::signals::{SignalAction, SignalState, ThreadSignals};
use crp_compound::task::TaskIdentity;
use crp_compound::thread_attrs::{ParentDeathSignal, Scheduling, ThreadAttributes};
use crp_compound::timers::IntervalTimers;
use crp_compound::vma::{Backing, MappedFile, SharedKind, SharedMemory, SharedObject, VmaRecord};
use crp_image::format::FORMAT_VERSION;
use crp_image::{ImageReader, ImageWriter};
use crp_locks::{FileLock, FileLocks, LockKind, LockState, RseqRegistration};

/// A small image touching every archived type and enum variant.
fn reference_image() -> ProcessImage {
    ProcessImage {
        pid: 4242,
        kernel_release: "6.18.0-test".into(),
        dumped_at_unix_seconds: 1_800_000_000,
        threads: vec![ThreadState {
            tid: 4242,
            cpu: CpuState {
                registers: RegisterFile { values: (0..27).map(|index| index * 0x1111).collect() },
                xsave: XsaveArea::new((0..832u32).map(|index| (index % 251) as u8).collect(), 0xe7).unwrap(),
            },
            signals: ThreadSignals { blocked: 1 << 9, altstack_sp: 0, altstack_flags: 2, altstack_size: 0 },
            locks: LockState {
                robust_list_head: 0x7f00_0000_1000,
                robust_list_length: 24,
                rseq: Some(RseqRegistration { address: 0x7f00_0000_2000, length: 32, signature: 0x5305_3053 }),
                clear_child_tid: 0x7f00_0000_3000,
            },
            attributes: ThreadAttributes {
                comm: "true".into(),
                cpu_affinity: vec![0, 1],
                scheduling: Scheduling {
                    policy: 3,
                    reset_on_fork: true,
                    nice: 7,
                    priority: 0,
                    util_min: 0,
                    util_max: 1024,
                },
                timer_slack_ns: 123_456,
                io_priority: (2 << 13) | 6,
                machine_check_kill: 1,
                tsc: 1,
                speculation: vec![5, 0, 0],
                cpuid_faulting: true,
                parent_death_signal: ParentDeathSignal(28),
            },
            pending_signals: ThreadPendingSignals { queue: vec![QueuedSignal { siginfo: [12; 128] }] },
        }],
        vdso: VdsoLayout {
            mappings: vec![SpecialMapping { name: "[vdso]".into(), start: 0x7fff_0000_0000, end: 0x7fff_0000_2000 }],
        },
        vmas: vec![
            VmaRecord {
                start: 0x40_0000,
                end: 0x40_1000,
                protection: 5,
                shared: false,
                flags: 0,
                backing: Backing::File(MappedFile { path: "/bin/true".into(), offset: 0, size: 4096, mtime_ns: 7 }),
            },
            VmaRecord {
                start: 0x60_0000,
                end: 0x60_2000,
                protection: 3,
                shared: false,
                flags: 1,
                backing: Backing::Anonymous { label: "[heap]".into() },
            },
        ],
        shared_memory: SharedMemory {
            objects: vec![SharedObject {
                kind: SharedKind::Memfd { name: "pinned".into() },
                device: 1,
                inode: 42,
                size: 0x2000,
                outside: vec![7],
            }],
        },
        future_locking: crp_compound::vma::FutureLocking::default(),
        guard_regions: vec![crp_compound::vma::GuardRegion { start: 0x60_1000, end: 0x60_2000 }],
        mm: MmFields {
            start_code: 0x40_0000,
            end_code: 0x40_1000,
            start_data: 0x60_0000,
            end_data: 0x60_0100,
            start_brk: 0x60_1000,
            brk: 0x60_2000,
            start_stack: 0x7ffe_0000_0000,
            arg_start: 1,
            arg_end: 2,
            env_start: 3,
            env_end: 4,
            auxv: vec![6, 4096, 0, 0],
            exe_path: "/bin/true".into(),
        },
        files: {
            let mut table = crp_compound::files::FdTable::from(vec![
                FdRecord { fd: 0, flags: 0, offset: 0, target: FdTarget::Inherited { stream: 0 } },
                FdRecord {
                    fd: 3,
                    flags: 0o2,
                    offset: 10,
                    target: FdTarget::File { path: "/tmp/x".into(), identity: None },
                },
                FdRecord { fd: 4, flags: 0, offset: 0, target: FdTarget::CharDevice { path: "/dev/null".into() } },
                FdRecord { fd: 5, flags: 0o4000, offset: 0, target: FdTarget::Pipe { pipe: 0 } },
                FdRecord {
                    fd: 6,
                    flags: 0,
                    offset: 0,
                    target: FdTarget::Fifo { path: "/tmp/f".into(), mode: 0o600, deleted: false, pipe: 1 },
                },
                FdRecord { fd: 7, flags: 0o2, offset: 3, target: FdTarget::Object { object: 0 } },
                FdRecord { fd: 8, flags: 0o2, offset: 0, target: FdTarget::OwnTerminal { path: "/dev/tty".into() } },
                FdRecord {
                    fd: 9,
                    flags: 0o2,
                    offset: 0,
                    target: FdTarget::PtyMaster(crp_compound::files::PtyMaster {
                        number: 5,
                        settings: terminal_settings(),
                        packet: true,
                        locked: false,
                    }),
                },
                FdRecord { fd: 10, flags: 0o2, offset: 0, target: FdTarget::PtySlave { number: 5 } },
            ]);
            table.pipes.push(crp_compound::files::PipeBuffer { inode: 77, size: 65536, data: b"queued".to_vec() });
            table.push_record(FdRecord {
                fd: 16,
                flags: 0o2,
                offset: 0,
                target: FdTarget::UnixPair { pair: 0, end: 0 },
            });
            table.push_record(FdRecord {
                fd: 17,
                flags: 0o2,
                offset: 0,
                target: FdTarget::UnixPair { pair: 0, end: 1 },
            });
            // A description only in flight, carried by the pair's first message.
            let passed_file = u32::try_from(table.files.len()).unwrap();
            table.files.push(crp_compound::files::OpenFile {
                flags: 0,
                offset: 3,
                target: FdTarget::File { path: "/srv/passed".into(), identity: None },
                owner: None,
            });
            let end = |inode: u64, queued: Vec<Vec<u8>>, passed| crp_compound::files::PairEnd {
                inode,
                queued,
                shutdown: 0,
                pass_credentials: false,
                send_buffer: 212_992,
                receive_buffer: 212_992,
                options: vec![],
                name: Some(crp_compound::files::socket::Address::Unix(b"/run/l".to_vec())),
                passed,
            };
            table.socket_pairs.push(crp_compound::files::SocketPair {
                kind: libc::SOCK_DGRAM,
                ends: [
                    end(
                        80,
                        vec![b"one".to_vec()],
                        vec![crp_compound::files::Passed { message: 0, files: vec![passed_file] }],
                    ),
                    end(81, vec![], vec![]),
                ],
            });
            table.push_record(FdRecord {
                fd: 18,
                flags: 0o4002,
                offset: 0,
                target: FdTarget::Event(EventFile::TimerFd(TimerFd {
                    clock: 1,
                    settime_flags: 1,
                    value: Timespec { seconds: 30, nanoseconds: 5 },
                    interval: Timespec { seconds: 1, nanoseconds: 0 },
                    ticks: 2,
                })),
            });
            use crp_compound::files::socket::{Address, BoundFile, Datagram, Peer, SocketOption};
            let socket = |inode: u64, local: Address, peer: Peer| crp_compound::files::SocketFile {
                inode,
                family: local.family(),
                kind: libc::SOCK_DGRAM,
                protocol: if local.family() == libc::AF_UNIX { 0 } else { libc::IPPROTO_UDP },
                bound_file: local.path().map(|_| BoundFile { mode: 0o755, uid: 1, gid: 2, present: true }),
                local: Some(local),
                peer,
                backlog: None,
                lost_connections: 0,
                shutdown: 1,
                options: vec![SocketOption { level: 1, name: 2, value: vec![1, 0, 0, 0] }],
                queued: vec![Datagram { source: None, data: b"dgram".to_vec() }],
                connection: None,
                memberships: if inode == 92 {
                    vec![crp_compound::files::socket::multicast::Membership {
                        interface: "lo".into(),
                        group: [vec![0xff, 2], vec![0; 13], vec![1]].concat(),
                        include: true,
                        sources: vec![vec![2; 16]],
                    }]
                } else {
                    vec![]
                },
            };
            let v6 = Address::V6 { ip: [1; 16], port: 53, flowinfo: 3, scope_id: 4 };
            for (fd, target) in [
                (19, socket(90, Address::Unix(b"/run/s".to_vec()), Peer::Outside { inode: 5, name: None })),
                (20, socket(91, Address::V4 { ip: [127, 0, 0, 1], port: 80 }, Peer::Address(v6.clone()))),
                (21, socket(92, v6, Peer::None)),
            ] {
                table.push_record(FdRecord { fd, flags: 0o2, offset: 0, target: FdTarget::Socket(Box::new(target)) });
            }
            let mut connected = socket(
                93,
                Address::V4 { ip: [127, 0, 0, 1], port: 81 },
                Peer::Address(Address::V4 { ip: [127, 0, 0, 1], port: 82 }),
            );
            connected.connection = Some(crp_compound::files::socket::TcpConnection {
                send_seq: 1,
                receive_seq: 2,
                send_queue: b"out".to_vec(),
                unsent: 1,
                receive_queue: b"in".to_vec(),
                mss_clamp: 65_483,
                options: 7,
                send_wscale: 7,
                receive_wscale: 7,
                timestamp: 3,
                window: Some([1, 2, 3, 4, 5]),
                peer_outside: true,
            });
            table.push_record(FdRecord {
                fd: 22,
                flags: 0o2,
                offset: 0,
                target: FdTarget::Socket(Box::new(connected)),
            });
            table.pipes.push(crp_compound::files::PipeBuffer { inode: 78, size: 65536, data: b"fifo".to_vec() });
            table.objects.push(crp_compound::files::FileObject::Memfd {
                name: "m".into(),
                inode: 9,
                mode: 0o777,
                uid: 0,
                gid: 0,
                seals: 8,
                contents: crp_compound::files::Contents {
                    size: 8192,
                    extents: vec![crp_compound::files::Extent { offset: 4096, data: b"memfd".to_vec() }],
                },
            });
            table.files[1].owner = Some(crp_compound::files::FileOwner {
                kind: crp_compound::files::OwnerKind::Thread,
                id: crp_compound::files::OwnerId::Itself,
                signal: 35,
            });
            table.files[2].owner = Some(crp_compound::files::FileOwner {
                kind: crp_compound::files::OwnerKind::Group,
                id: crp_compound::files::OwnerId::Other(77),
                signal: 0,
            });
            table.files[3].owner = Some(crp_compound::files::FileOwner {
                kind: crp_compound::files::OwnerKind::Process,
                id: crp_compound::files::OwnerId::Nobody,
                signal: 10,
            });
            table
        },
        signals: SignalState {
            actions: vec![SignalAction { signal: 2, handler: 0x40_0100, flags: 0x0400_0000, restorer: 9, mask: 0 }],
        },
        task: TaskIdentity { cwd: "/".into(), umask: 0o22, personality: 0, stopped: false },
        credentials: Credentials {
            ids: IdsAndCapabilities {
                uids: [1000; 4],
                gids: [1000; 4],
                groups: vec![24, 27],
                cap_inheritable: 0,
                cap_permitted: 0,
                cap_effective: 0,
                cap_bounding: 0x1ff_ffff_ffff,
                cap_ambient: 0,
                no_new_privs: false,
            },
            keep_caps: false,
            dumpable: 1,
        },
        rlimits: vec![Limit { resource: 7, soft: 1024, hard: 4096 }].into(),
        timers: IntervalTimers { timers: vec![[0; 32], [1; 32], [0; 32]] },
        attributes: ProcessAttributes {
            thp_disable: 1,
            membarrier_registrations: 1 << 4,
            oom_score_adj: 400,
            child_subreaper: true,
            memory_deny_write_execute: 0,
            xsave_permissions: 0x6_02e7,
            coredump_filter: 0x7f,
            login_uid: Some(1000),
            futex_hash_slots: 16,
        },
        pending_signals: SharedPendingSignals { queue: vec![QueuedSignal { siginfo: [7; 128] }] },
        posix_timers: PosixTimers {
            timers: vec![PosixTimer {
                id: 3,
                clock: 1,
                notify: 4,
                signal: 35,
                value: 0x1234,
                thread: 4242,
                left_ns: 1_500_000_000,
                interval_ns: 250_000_000,
                overrun: 2,
            }],
        },
        file_locks: FileLocks {
            locks: [LockKind::Posix, LockKind::OpenFileDescription, LockKind::Flock, LockKind::Lease]
                .into_iter()
                .enumerate()
                .map(|(index, kind)| FileLock {
                    kind,
                    write: index % 2 == 0,
                    start: 0,
                    end: (index == 0).then_some(41),
                    fd: 3 + i32::try_from(index).unwrap(),
                    path: format!("/srv/lock{index}"),
                })
                .collect(),
        },
        session: crp_compound::session::SessionState {
            session: 4000,
            group: 4242,
            terminal_device: 0x8803,
            terminal_name: "/dev/pts/3".into(),
            foreground_group: 4242,
            terminal: Some(terminal_settings()),
        },
        chain: crp_cli::incremental::ChainRecord {
            parent: Some(crp_cli::incremental::ParentLink {
                header_checksum: 0x0123_4567_89ab_cdef,
                file_length: 0x10_2000,
                path: "/srv/images/job.0.crp".into(),
            }),
            inherited: vec![crp_cli::incremental::PageRange { vaddr: 0x5555_5555_8000, page_count: 3 }],
            tracking: Some(crp_cli::incremental::TrackingRecord { fd: 1023, inode: 557_961 }),
        },
    }
}

/// Settings of a terminal in canonical mode with echo.
fn terminal_settings() -> crp_compound::files::TerminalSettings {
    crp_compound::files::TerminalSettings {
        input_flags: 0o2400,
        output_flags: 0o5,
        control_flags: 0o277,
        local_flags: 0o105073,
        line_discipline: 0,
        control_characters: (0..19).collect(),
        input_speed: 38400,
        output_speed: 38400,
        window: crp_compound::files::WindowSize { rows: 24, columns: 80, x_pixels: 0, y_pixels: 0 },
    }
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/v{FORMAT_VERSION}.crp"))
}

#[test]
fn current_format_reads_its_committed_image() {
    let path = golden_path();
    if std::env::var_os("CRP_REGENERATE_GOLDEN").is_some() {
        let _ = std::fs::remove_file(&path);
        let mut writer = ImageWriter::create(&path).unwrap();
        writer
            .add_page_run(0x60_0000, 1, |_, buffer| {
                buffer.fill(0xa5);
                Ok(())
            })
            .unwrap();
        writer.finish(&crp_image::to_archive(&reference_image()).unwrap()).unwrap();
    }
    let reader = ImageReader::open(&path).unwrap_or_else(|error| {
        panic!("{}: {error}; after bumping FORMAT_VERSION, regenerate it (see this file's header)", path.display())
    });
    let archived = reader.metadata::<ArchivedProcessImage>().expect("the archived types changed: bump FORMAT_VERSION");
    let image: ProcessImage = rkyv::deserialize::<ProcessImage, rkyv::rancor::Error>(archived).unwrap();
    assert_eq!(image, reference_image(), "the archived types changed: bump FORMAT_VERSION");
    assert_eq!(reader.run_data(&reader.page_runs()[0]), &[0xa5; 4096][..]);
}

#[test]
fn images_of_previous_formats_are_refused_naming_both_versions() {
    for previous in 1..FORMAT_VERSION {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/v{previous}.crp"));
        let error = crp_image::ImageReader::open(&path).expect_err("an older image must be refused").to_string();
        assert_eq!(
            error,
            format!("image format {previous}; this crp reads {FORMAT_VERSION} only: re-dump the process with this crp")
        );
    }
}
