//! Every archived type round-trips: arbitrary `ProcessImage`s (which nest
//! every category's records) go through a real image file and come back
//! equal, validated by bytecheck on the way.

use crp_arch_x86::{CpuState, RegisterFile, SpecialMapping, VdsoLayout, XsaveArea};
use crp_cli::model::{ArchivedProcessImage, ProcessImage, ThreadState};
use crp_compound::creds::{Credentials, IdsAndCapabilities};
use crp_compound::files::event::{TimerFd, Timespec};
use crp_compound::files::{EpollRegistration, EventFile, FdRecord, FdTarget, InotifyWatch};
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
use crp_image::{ImageReader, ImageWriter};
use crp_locks::{FileLock, FileLocks, LockKind};
use crp_locks::{LockState, RseqRegistration};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn cpu() -> impl Strategy<Value = CpuState> {
    (vec(any::<u64>(), 27), vec(any::<u8>(), 576..3000), any::<u64>()).prop_map(|(values, bytes, xcr0)| CpuState {
        registers: RegisterFile { values },
        xsave: XsaveArea::new(bytes, xcr0).unwrap(),
    })
}

fn vdso() -> impl Strategy<Value = VdsoLayout> {
    vec((".{0,12}", any::<u64>(), any::<u64>()), 0..4).prop_map(|mappings| VdsoLayout {
        mappings: mappings.into_iter().map(|(name, start, end)| SpecialMapping { name, start, end }).collect(),
    })
}

fn vma() -> impl Strategy<Value = VmaRecord> {
    let backing = prop_oneof![
        ".{0,10}".prop_map(|label| Backing::Anonymous { label }),
        (".{0,40}", any::<u64>(), any::<u64>(), any::<i64>())
            .prop_map(|(path, offset, size, mtime_ns)| Backing::File(MappedFile { path, offset, size, mtime_ns })),
        (any::<u32>(), any::<u64>()).prop_map(|(object, offset)| Backing::Shared { object, offset }),
        (any::<u32>(), any::<u64>()).prop_map(|(object, offset)| Backing::Descriptor { object, offset }),
    ];
    (any::<u64>(), any::<u64>(), any::<u32>(), any::<bool>(), any::<u32>(), backing).prop_map(
        |(start, end, protection, shared, flags, backing)| VmaRecord { start, end, protection, shared, flags, backing },
    )
}

fn shared_memory() -> impl Strategy<Value = SharedMemory> {
    let kind = prop_oneof![
        Just(SharedKind::Anonymous),
        ".{0,20}".prop_map(|name| SharedKind::Memfd { name }),
        (".{0,20}", vec(any::<u8>(), 0..8)).prop_map(|(name, data)| SharedKind::MemfdContents {
            name,
            contents: crp_compound::files::Contents {
                size: data.len() as u64,
                extents: vec![crp_compound::files::Extent { offset: 0, data }]
            },
        }),
        (any::<i32>(), any::<i32>(), any::<u32>(), any::<bool>(), any::<u32>(), any::<u32>())
            .prop_map(|(key, id, mode, removed, uid, gid)| SharedKind::SysV { key, id, mode, removed, uid, gid }),
        (".{0,20}", any::<u32>(), any::<u64>(), vec(any::<u8>(), 0..8)).prop_map(|(path, mode, offset, data)| {
            SharedKind::DeletedFile {
                path,
                mode,
                contents: crp_compound::files::Contents {
                    size: offset,
                    extents: vec![crp_compound::files::Extent { offset, data }],
                },
            }
        }),
    ];
    vec((kind, any::<u64>(), any::<u64>(), any::<u64>(), vec(any::<i32>(), 0..3)), 0..4).prop_map(|objects| {
        SharedMemory {
            objects: objects
                .into_iter()
                .map(|(kind, device, inode, size, outside)| SharedObject { kind, device, inode, size, outside })
                .collect(),
        }
    })
}

fn mm() -> impl Strategy<Value = MmFields> {
    (vec(any::<u64>(), 11), vec(any::<u64>(), 0..60), ".{0,50}").prop_map(|(words, auxv, exe_path)| MmFields {
        start_code: words[0],
        end_code: words[1],
        start_data: words[2],
        end_data: words[3],
        start_brk: words[4],
        brk: words[5],
        start_stack: words[6],
        arg_start: words[7],
        arg_end: words[8],
        env_start: words[9],
        env_end: words[10],
        auxv,
        exe_path,
    })
}

fn fd() -> impl Strategy<Value = FdRecord> {
    let target =
        prop_oneof![
            ".{0,30}".prop_map(|path| FdTarget::File { path, identity: None }),
            ".{0,30}".prop_map(|path| FdTarget::CharDevice { path }),
            (0u8..3).prop_map(|stream| FdTarget::Inherited { stream }),
            any::<u32>().prop_map(|pipe| FdTarget::Pipe { pipe }),
            (any::<u32>(), any::<u8>()).prop_map(|(pair, end)| FdTarget::UnixPair { pair, end }),
            vec((any::<i32>(), any::<u32>(), any::<u32>(), any::<u64>()), 0..4).prop_map(|registrations| {
                let registrations = registrations
                    .into_iter()
                    .map(|(fd, file, events, data)| EpollRegistration { fd, file, events, data })
                    .collect();
                FdTarget::Epoll { registrations }
            }),
            vec((any::<i32>(), any::<u32>(), ".{0,30}"), 0..4).prop_map(|watches| FdTarget::Inotify {
                watches: watches.into_iter().map(|(wd, mask, path)| InotifyWatch { wd, mask, path }).collect()
            }),
            event().prop_map(FdTarget::Event),
            (".{0,30}", any::<u32>(), any::<bool>(), any::<u32>())
                .prop_map(|(path, mode, deleted, pipe)| FdTarget::Fifo { path, mode, deleted, pipe }),
            any::<u32>().prop_map(|object| FdTarget::Object { object }),
            ".{0,30}".prop_map(|path| FdTarget::OwnTerminal { path }),
            (any::<u32>(), terminal_settings(), any::<bool>(), any::<bool>()).prop_map(
                |(number, settings, packet, locked)| FdTarget::PtyMaster(crp_compound::files::PtyMaster {
                    number,
                    settings,
                    packet,
                    locked
                })
            ),
            any::<u32>().prop_map(|number| FdTarget::PtySlave { number }),
        ];
    (any::<i32>(), any::<i32>(), any::<u64>(), target).prop_map(|(fd, flags, offset, target)| FdRecord {
        fd,
        flags,
        offset,
        target,
    })
}

fn event() -> impl Strategy<Value = EventFile> {
    let time = (any::<u64>(), any::<u32>()).prop_map(|(seconds, nanoseconds)| Timespec { seconds, nanoseconds });
    let timer = (any::<i32>(), any::<i32>(), time.clone(), time, any::<u64>()).prop_map(
        |(clock, settime_flags, value, interval, ticks)| TimerFd { clock, settime_flags, value, interval, ticks },
    );
    prop_oneof![
        (any::<u64>(), any::<bool>()).prop_map(|(count, semaphore)| EventFile::EventFd { count, semaphore }),
        timer.prop_map(EventFile::TimerFd),
        any::<u64>().prop_map(|mask| EventFile::SignalFd { mask }),
    ]
}

fn signals() -> impl Strategy<Value = SignalState> {
    let action = (any::<i32>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>())
        .prop_map(|(signal, handler, flags, restorer, mask)| SignalAction { signal, handler, flags, restorer, mask });
    vec(action, 0..64).prop_map(|actions| SignalState { actions })
}

fn thread_signals() -> impl Strategy<Value = ThreadSignals> {
    (any::<u64>(), any::<u64>(), any::<i32>(), any::<u64>()).prop_map(
        |(blocked, altstack_sp, altstack_flags, altstack_size)| ThreadSignals {
            blocked,
            altstack_sp,
            altstack_flags,
            altstack_size,
        },
    )
}

fn queued_signals() -> impl Strategy<Value = Vec<QueuedSignal>> {
    let siginfo = vec(any::<u8>(), 128).prop_map(|bytes| {
        let mut siginfo = [0u8; 128];
        siginfo.copy_from_slice(&bytes);
        QueuedSignal { siginfo }
    });
    vec(siginfo, 0..4)
}

fn thread() -> impl Strategy<Value = ThreadState> {
    (any::<i32>(), cpu(), thread_signals(), locks(), thread_attributes(), queued_signals()).prop_map(
        |(tid, cpu, signals, locks, attributes, queue)| ThreadState {
            tid,
            cpu,
            signals,
            locks,
            attributes,
            pending_signals: ThreadPendingSignals { queue },
        },
    )
}

fn scheduling() -> impl Strategy<Value = Scheduling> {
    (any::<u32>(), any::<bool>(), any::<i32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(policy, reset_on_fork, nice, priority, util_min, util_max)| Scheduling {
            policy,
            reset_on_fork,
            nice,
            priority,
            util_min,
            util_max,
        },
    )
}

fn thread_attributes() -> impl Strategy<Value = ThreadAttributes> {
    (
        (".{0,15}", vec(any::<u32>(), 0..8), scheduling()),
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), vec(any::<u64>(), 0..4), any::<u32>()),
        any::<bool>(),
    )
        .prop_map(
            |(
                (comm, cpu_affinity, scheduling),
                (timer_slack_ns, io_priority, machine_check_kill, tsc, speculation, signal),
                cpuid_faulting,
            )| ThreadAttributes {
                comm,
                cpu_affinity,
                scheduling,
                timer_slack_ns,
                io_priority,
                machine_check_kill,
                tsc,
                speculation,
                cpuid_faulting,
                parent_death_signal: ParentDeathSignal(signal),
            },
        )
}

fn process_attributes() -> impl Strategy<Value = ProcessAttributes> {
    (
        (any::<u64>(), any::<u64>(), any::<i32>(), any::<bool>(), any::<u64>()),
        (any::<u64>(), any::<u32>(), proptest::option::of(any::<u32>()), any::<u64>()),
    )
        .prop_map(
            |(
                (thp_disable, membarrier_registrations, oom_score_adj, child_subreaper, memory_deny_write_execute),
                (xsave_permissions, coredump_filter, login_uid, futex_hash_slots),
            )| ProcessAttributes {
                thp_disable,
                membarrier_registrations,
                oom_score_adj,
                child_subreaper,
                memory_deny_write_execute,
                xsave_permissions,
                coredump_filter,
                login_uid,
                futex_hash_slots,
            },
        )
}

fn task() -> impl Strategy<Value = TaskIdentity> {
    (".{0,40}", any::<u32>(), any::<u64>(), any::<bool>()).prop_map(|(cwd, umask, personality, stopped)| TaskIdentity {
        cwd,
        umask,
        personality,
        stopped,
    })
}

fn locks() -> impl Strategy<Value = LockState> {
    let rseq = proptest::option::of(
        (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(address, length, signature)| RseqRegistration {
            address,
            length,
            signature,
        }),
    );
    (any::<u64>(), any::<u64>(), rseq, any::<u64>()).prop_map(
        |(robust_list_head, robust_list_length, rseq, clear_child_tid)| LockState {
            robust_list_head,
            robust_list_length,
            rseq,
            clear_child_tid,
        },
    )
}

fn credentials() -> impl Strategy<Value = Credentials> {
    (
        any::<[u32; 4]>(),
        any::<[u32; 4]>(),
        vec(any::<u32>(), 0..8),
        any::<[u64; 5]>(),
        any::<bool>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(uids, gids, groups, caps, keep_caps, dumpable, no_new_privs)| Credentials {
            ids: IdsAndCapabilities {
                uids,
                gids,
                groups,
                cap_inheritable: caps[0],
                cap_permitted: caps[1],
                cap_effective: caps[2],
                cap_bounding: caps[3],
                cap_ambient: caps[4],
                no_new_privs,
            },
            keep_caps,
            dumpable,
        })
}

fn terminal_settings() -> impl Strategy<Value = crp_compound::files::TerminalSettings> {
    (any::<[u32; 4]>(), any::<u8>(), vec(any::<u8>(), 0..20), any::<[u32; 2]>(), any::<[u16; 4]>()).prop_map(
        |(flags, line_discipline, control_characters, speeds, window)| crp_compound::files::TerminalSettings {
            input_flags: flags[0],
            output_flags: flags[1],
            control_flags: flags[2],
            local_flags: flags[3],
            line_discipline,
            control_characters,
            input_speed: speeds[0],
            output_speed: speeds[1],
            window: crp_compound::files::WindowSize {
                rows: window[0],
                columns: window[1],
                x_pixels: window[2],
                y_pixels: window[3],
            },
        },
    )
}

fn session() -> impl Strategy<Value = crp_compound::session::SessionState> {
    (any::<[i32; 3]>(), any::<u64>(), ".{0,20}", proptest::option::of(terminal_settings())).prop_map(
        |(ids, terminal_device, terminal_name, terminal)| crp_compound::session::SessionState {
            session: ids[0],
            group: ids[1],
            terminal_device,
            terminal_name,
            foreground_group: ids[2],
            terminal,
        },
    )
}

fn rlimits() -> impl Strategy<Value = Vec<Limit>> {
    vec(
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(resource, soft, hard)| Limit { resource, soft, hard }),
        0..16,
    )
}

fn timers() -> impl Strategy<Value = IntervalTimers> {
    vec(any::<[u8; 32]>(), 0..4).prop_map(|timers| IntervalTimers { timers })
}

fn posix_timers() -> impl Strategy<Value = PosixTimers> {
    let timer =
        (
            (any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>()),
            (any::<u64>(), any::<i32>(), any::<u64>(), any::<u64>(), any::<i32>()),
        )
            .prop_map(|((id, clock, notify, signal), (value, thread, left_ns, interval_ns, overrun))| {
                PosixTimer { id, clock, notify, signal, value, thread, left_ns, interval_ns, overrun }
            });
    vec(timer, 0..4).prop_map(|timers| PosixTimers { timers })
}

fn file_locks() -> impl Strategy<Value = FileLocks> {
    let kind = prop_oneof![
        Just(LockKind::Posix),
        Just(LockKind::OpenFileDescription),
        Just(LockKind::Flock),
        Just(LockKind::Lease)
    ];
    let lock = (kind, any::<bool>(), any::<u64>(), any::<Option<u64>>(), any::<i32>(), ".{0,20}")
        .prop_map(|(kind, write, start, end, fd, path)| FileLock { kind, write, start, end, fd, path });
    vec(lock, 0..4).prop_map(|locks| FileLocks { locks })
}

fn process_image() -> impl Strategy<Value = ProcessImage> {
    (
        (any::<i32>(), ".{0,20}", any::<u64>()),
        vec(thread(), 0..3),
        vdso(),
        (vec(vma(), 0..20), shared_memory()),
        mm(),
        vec(fd(), 0..10),
        signals(),
        task(),
        (
            credentials(),
            rlimits(),
            timers(),
            process_attributes(),
            session(),
            queued_signals(),
            posix_timers(),
            file_locks(),
        ),
    )
        .prop_map(
            |(
                (pid, kernel_release, dumped_at_unix_seconds),
                threads,
                vdso,
                (vmas, shared_memory),
                mm,
                files,
                signals,
                task,
                (credentials, rlimits, timers, attributes, session, pending, posix_timers, file_locks),
            )| {
                ProcessImage {
                    pid,
                    kernel_release,
                    dumped_at_unix_seconds,
                    threads,
                    vdso,
                    vmas,
                    shared_memory,
                    future_locking: crp_compound::vma::FutureLocking { future: pid % 2 == 0, on_fault: pid % 3 == 0 },
                    guard_regions: vec![crp_compound::vma::GuardRegion { start: dumped_at_unix_seconds, end: 1 }],
                    mm,
                    files: files.into(),
                    signals,
                    task,
                    credentials,
                    rlimits: rlimits.into(),
                    timers,
                    attributes,
                    session,
                    pending_signals: SharedPendingSignals { queue: pending },
                    posix_timers,
                    file_locks,
                    chain: Default::default(),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn process_image_round_trips_through_an_image_file(image in process_image()) {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("model.crp");
        let writer = ImageWriter::create(&path).unwrap();
        writer.finish(&crp_image::to_archive(&image).unwrap()).unwrap();
        let reader = ImageReader::open(&path).unwrap();
        let archived = reader.metadata::<ArchivedProcessImage>().unwrap();
        let back: ProcessImage = rkyv::deserialize::<ProcessImage, rkyv::rancor::Error>(archived).unwrap();
        prop_assert_eq!(back, image);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Metadata with valid checksums but hostile contents (what a crafted
    /// image holds) is refused by validation, never a panic.
    #[test]
    fn hostile_metadata_is_refused(bytes in vec(any::<u8>(), 0..2048)) {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("hostile.crp");
        ImageWriter::create(&path).unwrap().finish(&bytes).unwrap();
        let reader = ImageReader::open(&path).unwrap();
        prop_assert!(reader.metadata::<ArchivedProcessImage>().is_err());
    }

    /// Flipping any byte of a real archive, in an image whose checksums
    /// are right, gives an image crp's own loading and inspecting either
    /// refuse cleanly or accept; neither panics. (The seeded fuzz test,
    /// `image_fuzz.rs`, goes further, through every pre-child step.)
    #[test]
    fn flipped_archive_bytes_are_refused_or_loaded_by_crp_never_panic(
        image in process_image(),
        position in any::<usize>(),
        mask in 1u8..,
    ) {
        let mut archive = crp_image::to_archive(&image).unwrap().to_vec();
        let index = position % archive.len();
        archive[index] ^= mask;
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("flipped.crp");
        ImageWriter::create(&path).unwrap().finish(&archive).unwrap();
        let reader = ImageReader::open(&path).unwrap();
        if let Ok(summary) = crp_cli::inspect::summarize(&reader) {
            prop_assert!(!crp_cli::inspect::render_text(&summary).is_empty());
        }
        if let Err(error) = crp_cli::restore::validate::load_image(&reader) {
            prop_assert_eq!(error.exit_code(), 4, "{}", error);
        }
    }
}

/// A crafted image whose VMAs overlap is refused by `crp restore` before
/// anything is created.
#[test]
fn overlapping_vmas_are_refused_by_restore() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut image = process_image().new_tree(&mut runner).unwrap().current();
    let anonymous = |start, end| VmaRecord {
        start,
        end,
        protection: 3,
        shared: false,
        flags: 0,
        backing: Backing::Anonymous { label: String::new() },
    };
    image.vmas = vec![anonymous(0x40_0000, 0x50_0000), anonymous(0x48_0000, 0x60_0000)];
    image.threads[0].cpu.registers.values = vec![0; 27];
    image.pid = i32::MAX - 3;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("overlap.crp");
    ImageWriter::create(&path).unwrap().finish(&crp_image::to_archive(&image).unwrap()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_crp")).arg("restore").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("overlaps"), "{stderr}");
}
