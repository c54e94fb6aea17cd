//! Hostile but well-formed values: each mutation changes one decoded field
//! of a valid image into something a crafted or foreign image could hold.

use crp_arch_x86::SpecialMapping;
use crp_cli::model::ProcessImage;
use crp_compound::files::event::{TimerFd, Timespec};
use crp_compound::files::{EpollRegistration, EventFile, FdRecord, FdTarget, InotifyWatch};
use crp_compound::pending_signals::QueuedSignal;
use crp_compound::posix_timers::PosixTimer;
use crp_compound::rlimits::Limit;
use crp_compound::signals::SignalAction;
use crp_compound::vma::{Backing, MappedFile};
use crp_locks::{FileLock, LockKind, RseqRegistration};

use super::images::{Runs, reg};
use super::rng::Rng;

/// Number of distinct mutations [`mutate_value`] chooses from.
pub const MUTATIONS: u64 = 38;

/// A path or name that breaks assumptions: empty, with NUL bytes, relative,
/// very long, or not what it claims.
pub fn hostile_string(rng: &mut Rng) -> String {
    match rng.below(7) {
        0 => String::new(),
        1 => "/etc/\0passwd".into(),
        2 => "\0".into(),
        3 => "relative/path".into(),
        4 => "/".repeat(5000),
        5 => "x".repeat(70_000),
        _ => "/proc/self/mem".into(),
    }
}

fn any_index<T>(rng: &mut Rng, items: &[T]) -> Option<usize> {
    (!items.is_empty()).then(|| rng.index(items.len()))
}

/// Applies mutation number `which` (mod [`MUTATIONS`]).
pub fn mutate_value(image: &mut ProcessImage, runs: &mut Runs, rng: &mut Rng, which: u64) {
    match which % MUTATIONS {
        0 => image.vdso.mappings.reverse(),
        1 => {
            if let Some(index) = any_index(rng, &image.vdso.mappings) {
                let mapping = &mut image.vdso.mappings[index];
                std::mem::swap(&mut mapping.start, &mut mapping.end);
            }
        }
        2 => {
            let start = rng.hostile_u64();
            let end = rng.hostile_u64();
            let name = rng.pick(&["[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "", "[heap]"]).into();
            let at = rng.index(image.vdso.mappings.len() + 1);
            image.vdso.mappings.insert(at, SpecialMapping { name, start, end });
        }
        3 => {
            if let Some(index) = any_index(rng, &image.vdso.mappings) {
                let copy = image.vdso.mappings[index].clone();
                image.vdso.mappings.insert(index, copy);
            }
        }
        4 => image.vdso.mappings.clear(),
        5 => {
            if let Some(index) = any_index(rng, &image.vmas) {
                let vma = &mut image.vmas[index];
                std::mem::swap(&mut vma.start, &mut vma.end);
            }
        }
        6 => {
            if let Some(index) = any_index(rng, &image.vmas) {
                image.vmas[index].start = rng.hostile_u64() & !0xfff;
                image.vmas[index].end = rng.hostile_u64() & !0xfff;
            }
        }
        7 => image.vmas.reverse(),
        8 => {
            if let Some(index) = any_index(rng, &image.vmas) {
                let mut copy = image.vmas[index].clone();
                // Wrapping: an earlier mutation may have left a hostile address.
                copy.start = copy.start.wrapping_add(0x1000);
                copy.end = copy.end.wrapping_add(0x1000);
                image.vmas.push(copy);
            }
        }
        9 => {
            let template = image.vmas[0].clone();
            let count = rng.below(3000);
            image.vmas.extend((0..count).map(|index| {
                let mut vma = template.clone();
                vma.start = 0x1000_0000 + index * 0x2000;
                vma.end = vma.start + 0x1000;
                vma
            }));
        }
        10 => {
            if let Some(index) = any_index(rng, &image.vmas) {
                let offset = rng.hostile_u64();
                image.vmas[index].backing = Backing::File(MappedFile {
                    path: if rng.chance(2) { "/usr/bin/true".into() } else { hostile_string(rng) },
                    offset,
                    size: rng.hostile_u64(),
                    mtime_ns: rng.next_u64().cast_signed(),
                });
            }
        }
        11 => {
            if let Some(index) = any_index(rng, &image.vmas) {
                image.vmas[index].protection = rng.next_u32();
                image.vmas[index].flags = rng.next_u32();
            }
        }
        12 => {
            if let Some(index) = any_index(rng, &image.vmas) {
                image.vmas[index].shared = true;
            }
        }
        13 => {
            if let Some(index) = any_index(rng, &image.signals.actions) {
                image.signals.actions[index].signal = rng.hostile_i32();
            }
        }
        14 => {
            let action = SignalAction {
                signal: rng.hostile_i32(),
                handler: rng.hostile_u64(),
                flags: rng.hostile_u64(),
                restorer: 0,
                mask: u64::MAX,
            };
            let count = rng.below(5000);
            image.signals.actions.extend(std::iter::repeat_n(action, usize::try_from(count).unwrap_or(0)));
        }
        15 => {
            let limit = Limit {
                resource: rng.pick(&[16, 17, u32::MAX, 7, 0]),
                soft: rng.hostile_u64(),
                hard: rng.hostile_u64(),
            };
            image.rlimits.push(limit);
        }
        16 => {
            if let Some(index) = any_index(rng, &image.files.descriptors) {
                if rng.chance(2) {
                    image.files.descriptors[index].fd = rng.hostile_i32();
                } else {
                    image.files.descriptors[index].file = rng.pick(&[u32::MAX, 1000, 0]);
                }
            }
        }
        17 => {
            let target = match rng.below(9) {
                0 => FdTarget::Inherited { stream: rng.pick(&[3, 255, 2]) },
                1 => {
                    let path = hostile_string(rng);
                    let identity = if rng.chance(2) {
                        let (size, mtime_ns) = (rng.hostile_u64(), rng.hostile_u64().cast_signed());
                        Some(crp_compound::files::FileIdentity { size, mtime_ns })
                    } else {
                        None
                    };
                    FdTarget::File { path, identity }
                }
                2 => {
                    // A pipe that may or may not exist, of any size, holding any amount.
                    if rng.chance(2) {
                        let size = rng.pick(&[0, 4096, 65536, 3000, u32::MAX]);
                        let data = vec![0x5a; rng.pick(&[0, 10, 70_000])];
                        image.files.pipes.push(crp_compound::files::PipeBuffer { inode: 1, size, data });
                    }
                    FdTarget::Pipe { pipe: rng.pick(&[0, 1, u32::MAX]) }
                }
                3 => FdTarget::Epoll {
                    registrations: vec![EpollRegistration {
                        fd: rng.hostile_i32(),
                        file: rng.pick(&[u32::MAX, 1000, 0]),
                        events: rng.hostile_i32().cast_unsigned(),
                        data: rng.hostile_u64(),
                    }],
                },
                4 => FdTarget::Inotify {
                    watches: vec![InotifyWatch {
                        wd: rng.hostile_i32(),
                        mask: rng.hostile_i32().cast_unsigned(),
                        path: hostile_string(rng),
                    }],
                },
                5 => FdTarget::Event(hostile_event(rng)),
                6 => {
                    let pipe = rng.pick(&[0, 1, u32::MAX]);
                    FdTarget::Fifo { path: hostile_string(rng), mode: 0o600, deleted: rng.chance(2), pipe }
                }
                7 => {
                    // A deleted file or memfd with extents in or out of order, inside or beyond its size.
                    if rng.chance(2) {
                        use crp_compound::files::{Contents, Extent, FileObject};
                        let offset = rng.pick(&[0, 4096, u64::MAX - 2]);
                        let data = vec![0x5a; rng.pick(&[0, 10, 70_000])];
                        let size = rng.pick(&[0, 4096, 1 << 20, u64::MAX]);
                        let contents = Contents { size, extents: vec![Extent { offset, data }] };
                        image.files.objects.push(if rng.chance(3) {
                            FileObject::DeletedDirectory {
                                path: hostile_string(rng),
                                inode: 1,
                                mode: rng.hostile_i32().cast_unsigned(),
                                uid: 0,
                                gid: 0,
                            }
                        } else if rng.chance(2) {
                            FileObject::Memfd {
                                name: hostile_string(rng),
                                inode: 1,
                                mode: 0o600,
                                uid: 0,
                                gid: 0,
                                seals: 0,
                                contents,
                            }
                        } else {
                            FileObject::Deleted {
                                path: hostile_string(rng),
                                inode: 1,
                                mode: 0o600,
                                uid: 0,
                                gid: 0,
                                contents,
                            }
                        });
                    }
                    FdTarget::Object { object: rng.pick(&[0, 1, u32::MAX]) }
                }
                _ => FdTarget::CharDevice { path: hostile_string(rng) },
            };
            let fd = if rng.chance(2) { rng.hostile_i32() } else { 7 };
            image.files.push_record(FdRecord { fd, flags: rng.hostile_i32(), offset: rng.hostile_u64(), target });
        }
        18 => {
            if let Some(index) = any_index(rng, &image.files.descriptors) {
                let copy = image.files.descriptors[index].clone();
                image.files.descriptors.push(copy);
            }
        }
        19 => image.mm.exe_path = hostile_string(rng),
        20 => image.task.cwd = hostile_string(rng),
        21 => image.threads[0].attributes.comm = hostile_string(rng),
        22 => {
            let length = rng.pick(&[0usize, 1, 3, 55, 56, 57, 64, 65, 1000]);
            image.mm.auxv = (0..length).map(|_| rng.hostile_u64()).collect();
        }
        23 => {
            let (index, value, mm) = (rng.index(11), rng.hostile_u64(), &mut image.mm);
            let field = match index {
                0 => &mut mm.start_code,
                1 => &mut mm.end_code,
                2 => &mut mm.start_data,
                3 => &mut mm.end_data,
                4 => &mut mm.start_brk,
                5 => &mut mm.brk,
                6 => &mut mm.start_stack,
                7 => &mut mm.arg_start,
                8 => &mut mm.arg_end,
                9 => &mut mm.env_start,
                _ => &mut mm.env_end,
            };
            *field = value;
        }
        24 => {
            let count = rng.pick(&[0usize, 1, 26, 28, 1000]);
            image.threads[0].cpu.registers.values.resize(count, 0);
        }
        25 => {
            let index =
                rng.pick(&[reg::RIP, reg::CS, reg::SS, reg::FS_BASE, reg::RSP, reg::EFLAGS, 22, 23, 24, 25, 26]);
            if let Some(value) = image.threads[0].cpu.registers.values.get_mut(index) {
                *value = rng.hostile_u64();
            }
        }
        26 => {
            // Frozen in a syscall that must be re-executed, at the lowest
            // addresses: the rewind steps back over the syscall instruction.
            let values = &mut image.threads[0].cpu.registers.values;
            values.resize(values.len().max(reg::COUNT), 0);
            values[reg::RIP] = rng.below(3);
            values[reg::ORIG_RAX] = rng.below(400);
            values[reg::RAX] = rng.pick(&[-512i64, -513, -514, -516]).cast_unsigned();
        }
        27 => {
            let length = rng.pick(&[0usize, 100, 511, 519, 575, 577, 1 << 20]);
            image.threads[0].cpu.xsave.bytes.resize(length, 0xff);
        }
        28 => {
            image.threads[0].cpu.xsave.xcr0 = rng.hostile_u64();
            let at = rng.pick(&[24usize, 512, 520, 540]);
            let value = rng.hostile_u64().to_le_bytes();
            if let Some(word) = image.threads[0].cpu.xsave.bytes.get_mut(at..at + 8) {
                word.copy_from_slice(&value);
            }
        }
        29 => {
            let count = rng.pick(&[0usize, 1, 4, 100]);
            image.timers.timers = (0..count).map(|_| std::array::from_fn(|_| rng.next_u8())).collect();
        }
        30 => match rng.below(4) {
            0 => image.credentials.ids.groups = vec![7; 70_000],
            1 => image.credentials.dumpable = rng.hostile_u64(),
            2 => image.credentials.ids.cap_ambient = rng.hostile_u64(),
            _ => image.credentials.ids.uids = [u32::MAX; 4],
        },
        31 => match rng.below(3) {
            0 => image.task.personality = rng.hostile_u64(),
            1 => image.threads[0].attributes.cpu_affinity = vec![u32::MAX, 0, 5000],
            _ => image.task.umask = u32::MAX,
        },
        32 => match rng.below(3) {
            0 => {
                image.threads[0].locks.rseq = Some(RseqRegistration {
                    address: rng.hostile_u64(),
                    length: u32::try_from(rng.hostile_u64() >> 32).unwrap_or(u32::MAX),
                    signature: 0,
                })
            }
            1 => image.threads[0].locks.robust_list_length = rng.hostile_u64(),
            _ => image.pid = rng.hostile_i32(),
        },
        33 => {
            let attributes = &mut image.threads[0].attributes;
            match rng.below(8) {
                0 => attributes.scheduling.policy = u32::try_from(rng.hostile_u64() >> 32).unwrap_or(u32::MAX),
                1 => attributes.scheduling.nice = rng.hostile_i32(),
                2 => attributes.scheduling.priority = 100,
                3 => attributes.io_priority = u32::try_from(rng.hostile_u64() >> 32).unwrap_or(u32::MAX),
                4 => attributes.parent_death_signal.0 = u32::try_from(rng.hostile_u64() >> 32).unwrap_or(u32::MAX),
                5 => attributes.tsc = 0,
                6 => image.attributes.membarrier_registrations = rng.hostile_u64(),
                _ => image.attributes.thp_disable = rng.hostile_u64(),
            }
        }
        34 => {
            let vaddr = rng.hostile_u64() & !0xfff;
            runs.push((vaddr, 1 + rng.below(2), 0x5a));
        }
        35 => {
            let mut siginfo = [0u8; 128];
            siginfo[..4].copy_from_slice(&rng.hostile_i32().to_le_bytes());
            siginfo[8..12].copy_from_slice(&rng.hostile_i32().to_le_bytes());
            let queued = QueuedSignal { siginfo };
            match rng.below(3) {
                0 => image.pending_signals.queue.push(queued),
                1 => image.threads[0].pending_signals.queue.push(queued),
                _ => image.pending_signals.queue.extend([queued, queued]),
            }
        }
        36 => {
            let timer = PosixTimer {
                id: rng.hostile_i32(),
                clock: rng.hostile_i32(),
                notify: rng.pick(&[0, 1, 2, 4, -1, i32::MAX]),
                signal: rng.hostile_i32(),
                value: rng.hostile_u64(),
                thread: rng.hostile_i32(),
                left_ns: rng.hostile_u64(),
                interval_ns: rng.hostile_u64(),
                overrun: rng.hostile_i32(),
            };
            let copies = 1 + rng.index(2);
            image.posix_timers.timers.extend(std::iter::repeat_n(timer, copies));
        }
        _ => {
            let kind = rng.pick(&[LockKind::Posix, LockKind::OpenFileDescription, LockKind::Flock, LockKind::Lease]);
            let end = rng.chance(2).then(|| rng.hostile_u64());
            image.file_locks.locks.push(FileLock {
                kind,
                write: rng.chance(2),
                start: rng.hostile_u64(),
                end,
                fd: rng.hostile_i32(),
                path: hostile_string(rng),
            });
        }
    }
}

/// An event descriptor with values a kernel may refuse.
fn hostile_event(rng: &mut Rng) -> EventFile {
    let mut time =
        || Timespec { seconds: rng.hostile_u64(), nanoseconds: rng.pick(&[0, 999_999_999, 1_000_000_000, u32::MAX]) };
    let (value, interval) = (time(), time());
    match rng.below(3) {
        0 => EventFile::EventFd { count: rng.hostile_u64(), semaphore: rng.chance(2) },
        1 => EventFile::TimerFd(TimerFd {
            clock: rng.pick(&[0, 1, 4, 7, 9, 10, -1]),
            settime_flags: rng.pick(&[0, 1, 3, 4, -1]),
            value,
            interval,
            ticks: rng.hostile_u64(),
        }),
        _ => EventFile::SignalFd { mask: rng.hostile_u64() },
    }
}
