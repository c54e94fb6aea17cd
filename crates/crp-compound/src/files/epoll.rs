//! epoll instances: every registration (the target descriptor number, the
//! event mask with its EPOLLET/EPOLLONESHOT/EPOLLEXCLUSIVE/EPOLLWAKEUP
//! flags, the user data), read from /proc/PID/fdinfo (`tfd: ... events:
//! ... data: ...`, fs/eventpoll.c `ep_show_fdinfo`). Each registration's
//! target is identified as an open file description of the table with
//! `kcmp(KCMP_EPOLL_TFD)`, also when its number was closed or reused since.
//!
//! At the restore the instance is made by `epoll_create1`, and the
//! registrations are added once every descriptor is in place ([`register`]):
//! `epoll_ctl` registers a (file, number) pair, so a target whose number
//! now means another file or nothing is put at that number for the time of
//! the `epoll_ctl`, and the number given back what the table has there.
//! Readiness is the kernel's to recompute from the targets; what the kernel
//! cannot be told is how far an edge-triggered registration was consumed
//! (it reports the current readiness once) and a fired EPOLLONESHOT
//! registration (its mask shows only the flags): re-added, it is armed for
//! EPOLLERR and EPOLLHUP, which `epoll_ctl` always adds.

use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};

use super::{FdTable, FdTarget, OpenFile};
use crate::error::{CompoundError, Unsupported};
use crate::valid::Invalid;

/// One registration of an epoll instance.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EpollRegistration {
    /// The descriptor number it was registered under (`epoll_ctl`'s fd).
    pub fd: i32,
    /// The registered open file description, an index in [`FdTable::files`].
    pub file: u32,
    /// The event mask with its flags, as fdinfo shows it.
    pub events: u32,
    pub data: u64,
}

/// The flags of an event mask (fs/eventpoll.c `EP_PRIVATE_BITS`).
pub const FLAG_BITS: u32 =
    (libc::EPOLLWAKEUP | libc::EPOLLONESHOT | libc::EPOLLET | libc::EPOLLEXCLUSIVE).cast_unsigned();

/// One `tfd:` line of an epoll's fdinfo: `(tfd, events, data)`.
fn parse_line(line: &str) -> Option<(i32, u32, u64)> {
    let mut words = line.split_whitespace();
    let mut value = |name: &str| -> Option<&str> {
        (words.next()? == name).then_some(())?;
        words.next()
    };
    let fd = value("tfd:")?.parse().ok()?;
    let events = u32::from_str_radix(value("events:")?, 16).ok()?;
    let data = u64::from_str_radix(value("data:")?, 16).ok()?;
    Some((fd, events, data))
}

/// The registrations an epoll's fdinfo text lists, in its order.
fn parse(path: &str, text: &str) -> Result<Vec<(i32, u32, u64)>, CompoundError> {
    text.lines()
        .filter(|line| line.starts_with("tfd:"))
        .map(|line| {
            parse_line(line).ok_or_else(|| CompoundError::Malformed {
                path: path.into(),
                reason: format!("cannot read the registration {line:?}"),
            })
        })
        .collect()
}

/// `kcmp(KCMP_EPOLL_TFD)`: whether descriptor `fd` of `pid` is the file
/// registered in epoll `epoll` as the `nth` registration under number
/// `tfd`. `None` when `fd` is not open.
fn is_registered_file(pid: i32, fd: i32, epoll: i32, tfd: i32, nth: u32) -> Result<Option<bool>, CompoundError> {
    const KCMP_EPOLL_TFD: libc::c_int = 7;
    #[repr(C)]
    struct KcmpEpollSlot {
        efd: u32,
        tfd: u32,
        toff: u32,
    }
    let slot = KcmpEpollSlot { efd: epoll.cast_unsigned(), tfd: tfd.cast_unsigned(), toff: nth };
    // SAFETY: kcmp reads the slot through the pointer, which points to
    // `slot` and lives across the call; it writes no memory of crp's.
    let result = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, fd, &raw const slot) };
    if result < 0 {
        return match nix::errno::Errno::last() {
            nix::errno::Errno::EBADF => Ok(None),
            errno => Err(CompoundError::Ptrace { operation: "kcmp(KCMP_EPOLL_TFD)", pid, errno }),
        };
    }
    Ok(Some(result == 0))
}

/// The registrations of epoll descriptor `fd` of `pid`, each target found
/// among the descriptions of `table` (complete, but for the epolls'
/// registrations): under its own number when that still means the
/// registered file, else under any descriptor that does.
pub(super) fn capture(pid: i32, fd: i32, table: &FdTable) -> Result<Vec<EpollRegistration>, CompoundError> {
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).map_err(CompoundError::io("read", &path))?;
    let mut registrations = Vec::new();
    let mut seen: Vec<i32> = Vec::new();
    for (tfd, events, data) in parse(&path, &text)? {
        // kcmp counts the registrations under one number in fdinfo's order.
        let nth = u32::try_from(seen.iter().filter(|other| **other == tfd).count()).unwrap_or(u32::MAX);
        seen.push(tfd);
        let own = table.descriptors.iter().find(|descriptor| descriptor.fd == tfd);
        let mut found = None;
        for descriptor in own.into_iter().chain(table.descriptors.iter()) {
            if is_registered_file(pid, descriptor.fd, fd, tfd, nth)? == Some(true) {
                found = Some(descriptor.file);
                break;
            }
        }
        let Some(file) = found else {
            return Err(Unsupported {
                what: format!(
                    "an epoll registration of descriptor {tfd} whose file no descriptor of the process holds any \
                     more"
                ),
                location: format!("fd {fd} -> anon_inode:[eventpoll]"),
            }
            .into());
        };
        registrations.push(EpollRegistration { fd: tfd, file, events, data });
    }
    Ok(registrations)
}

/// Fills in the registrations of every epoll of `table`, which has them
/// empty: `epolls` are their descriptions with one descriptor number each.
pub(super) fn capture_all(pid: i32, table: &mut FdTable, epolls: &[(u32, i32)]) -> Result<(), CompoundError> {
    for (file, fd) in epolls {
        let found = capture(pid, *fd, table)?;
        if let Some(OpenFile { target: FdTarget::Epoll { registrations }, .. }) = table.files.get_mut(*file as usize) {
            *registrations = found;
        }
    }
    Ok(())
}

/// Refuses registrations the restore could not make: numbers that cannot
/// be descriptors, targets that do not exist or are the epoll itself, one
/// (file, number) pair twice.
pub(super) fn check(
    table: &FdTable,
    index: usize,
    registrations: &[EpollRegistration],
    field: &dyn Fn() -> String,
) -> Result<(), Invalid> {
    for (position, registration) in registrations.iter().enumerate() {
        let what = || format!("{}, registration {position} (fd {})", field(), registration.fd);
        if !(0..super::NR_OPEN).contains(&registration.fd) {
            return Err(Invalid::new(what(), "is not a descriptor number"));
        }
        if registration.file as usize >= table.files.len() {
            return Err(Invalid::new(
                what(),
                format!("registers open file {}, of {}", registration.file, table.files.len()),
            ));
        }
        if registration.file as usize == index {
            return Err(Invalid::new(what(), "registers the epoll itself"));
        }
        if registrations[..position].iter().any(|other| (other.fd, other.file) == (registration.fd, registration.file))
        {
            return Err(Invalid::new(what(), "appears twice"));
        }
    }
    Ok(())
}

/// The highest descriptor number the registrations of `table` use.
pub(super) fn highest_number(table: &FdTable) -> Option<i32> {
    table
        .files
        .iter()
        .filter_map(|file| match &file.target {
            FdTarget::Epoll { registrations } => registrations.iter().map(|registration| registration.fd).max(),
            _ => None,
        })
        .max()
}

/// Makes an empty epoll instance with the status flags of `file`, at a
/// descriptor from `above` up.
pub(super) fn make(tracee: &mut dyn Tracee, file: &OpenFile, above: u64) -> Result<u64, EngineError> {
    let made = tracee.syscall("epoll_create1", libc::SYS_epoll_create1, [arg(libc::EPOLL_CLOEXEC), 0, 0, 0, 0, 0])?;
    let fd = super::move_above(tracee, made, above)?;
    super::set_status_flags(tracee, fd, file.flags)?;
    Ok(fd)
}

/// Adds every registration of every epoll of `table`, whose descriptions
/// are at the temporaries `placed` and whose descriptors are all in place
/// (`final_file` tells which description each number ends with: `None`
/// for a number the user chose, which is no description of the table).
pub(super) fn register(
    tracee: &mut dyn Tracee,
    table: &FdTable,
    placed: &[Option<u64>],
    final_file: &dyn Fn(i32) -> Option<u32>,
    above: u64,
) -> Result<(), EngineError> {
    for (index, file) in table.files.iter().enumerate() {
        let FdTarget::Epoll { registrations } = &file.target else { continue };
        // An epoll every descriptor of which the user replaced is not made.
        let Some(epoll) = placed.get(index).copied().flatten() else { continue };
        for registration in registrations {
            // A target every descriptor of which the user replaced is not
            // in the process: nothing to register.
            let Some(target) = placed.get(registration.file as usize).copied().flatten() else { continue };
            let number = arg(registration.fd);
            let in_place = final_file(registration.fd) == Some(registration.file);
            // What the number holds now, moved away for the time of the
            // registration (EBADF: nothing).
            let saved = if in_place {
                None
            } else {
                match tracee.raw_syscall(libc::SYS_fcntl, [number, arg(libc::F_GETFD), 0, 0, 0, 0])? {
                    result if result == -i64::from(libc::EBADF) => None,
                    result if result < 0 => {
                        return Err(EngineError::Syscall {
                            syscall: "fcntl(F_GETFD)",
                            args: vec![number, arg(libc::F_GETFD)],
                            pid: tracee.pid(),
                            errno: nix::errno::Errno::from_raw(i32::try_from(-result).unwrap_or(libc::EINVAL)),
                        });
                    }
                    fd_flags => {
                        let fd_flags = fd_flags.cast_unsigned();
                        let copy = tracee.syscall(
                            "fcntl(F_DUPFD_CLOEXEC)",
                            libc::SYS_fcntl,
                            [number, arg(libc::F_DUPFD_CLOEXEC), above, 0, 0, 0],
                        )?;
                        Some((copy, fd_flags))
                    }
                }
            };
            if !in_place {
                tracee.syscall("dup3", libc::SYS_dup3, [target, number, 0, 0, 0, 0])?;
            }
            let mut event = [0u8; 12];
            event[..4].copy_from_slice(&registration.events.to_ne_bytes());
            event[4..].copy_from_slice(&registration.data.to_ne_bytes());
            let mut scratch = tracee.scratch();
            let event_address = scratch.push(&event);
            scratch.commit(tracee)?;
            let add = [epoll, arg(libc::EPOLL_CTL_ADD), number, event_address, 0, 0];
            tracee.syscall("epoll_ctl(EPOLL_CTL_ADD)", libc::SYS_epoll_ctl, add)?;
            if !in_place {
                match saved {
                    Some((copy, fd_flags)) => {
                        let cloexec = if fd_flags & arg(libc::FD_CLOEXEC) != 0 { arg(libc::O_CLOEXEC) } else { 0 };
                        tracee.syscall("dup3", libc::SYS_dup3, [copy, number, cloexec, 0, 0, 0])?;
                        tracee.syscall("close", libc::SYS_close, [copy, 0, 0, 0, 0, 0])?;
                    }
                    None => {
                        tracee.syscall("close", libc::SYS_close, [number, 0, 0, 0, 0, 0])?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// An event mask as words: `IN|ET|ONESHOT`.
pub fn describe_events(events: u32) -> String {
    const NAMES: &[(i32, &str)] = &[
        (libc::EPOLLIN, "IN"),
        (libc::EPOLLPRI, "PRI"),
        (libc::EPOLLOUT, "OUT"),
        (libc::EPOLLERR, "ERR"),
        (libc::EPOLLHUP, "HUP"),
        (libc::EPOLLRDNORM, "RDNORM"),
        (libc::EPOLLRDBAND, "RDBAND"),
        (libc::EPOLLWRNORM, "WRNORM"),
        (libc::EPOLLWRBAND, "WRBAND"),
        (libc::EPOLLMSG, "MSG"),
        (libc::EPOLLRDHUP, "RDHUP"),
        (libc::EPOLLEXCLUSIVE, "EXCLUSIVE"),
        (libc::EPOLLWAKEUP, "WAKEUP"),
        (libc::EPOLLONESHOT, "ONESHOT"),
        (libc::EPOLLET, "ET"),
    ];
    let mut words: Vec<String> = Vec::new();
    let mut left = events;
    for (bit, name) in NAMES {
        let bit = bit.cast_unsigned();
        if events & bit != 0 {
            words.push((*name).to_owned());
            left &= !bit;
        }
    }
    if left != 0 {
        words.push(format!("{left:#x}"));
    }
    if words.is_empty() { "none".to_owned() } else { words.join("|") }
}

/// A fired EPOLLONESHOT registration: only flags are left of its mask.
pub fn is_disarmed(events: u32) -> bool {
    events & libc::EPOLLONESHOT.cast_unsigned() != 0 && events & !FLAG_BITS == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{Descriptor, check_table};
    use crp_ptrace::Persist;
    use crp_ptrace::fake::FakeTracee;
    use std::os::fd::AsRawFd;

    #[test]
    fn fdinfo_lines_give_number_mask_and_data() {
        let text = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\n\
            tfd:        3 events: 40000000 data:             1122  pos:0 ino:ad6a6 sdev:f\n\
            tfd:        5 events: 80000019 data: ffffffffffffffff  pos:0 ino:ad6a7 sdev:f\n";
        let parsed = parse("/proc/1/fdinfo/7", text).unwrap();
        assert_eq!(parsed, [(3, 0x4000_0000, 0x1122), (5, 0x8000_0019, u64::MAX)]);
        assert!(is_disarmed(0x4000_0000));
        assert!(!is_disarmed(0x4000_0019));
        assert_eq!(describe_events(0x8000_0019), "IN|ERR|HUP|ET");
        let error = parse("/proc/1/fdinfo/7", "tfd: x events: 1 data: 0\n").unwrap_err();
        assert!(error.to_string().contains("cannot read the registration"), "{error}");
    }

    fn epoll_ctl(epoll: i32, fd: i32, events: u32, data: u64) {
        let mut event = libc::epoll_event { events, u64: data };
        // SAFETY: the event lives across the call; epoll_ctl only reads it.
        assert_eq!(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &raw mut event) }, 0);
    }

    #[test]
    fn registrations_are_found_under_their_number_or_another() {
        let _own = crate::files::tests::OWN_DESCRIPTORS.lock();
        use std::os::fd::{FromRawFd, OwnedFd};
        let pid = std::process::id() as i32;
        // SAFETY: epoll_create1 returns a new descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(libc::epoll_create1(libc::EPOLL_CLOEXEC)) };
        let (reader, writer) = std::io::pipe().unwrap();
        let (other, _other_writer) = std::io::pipe().unwrap();
        epoll_ctl(epoll.as_raw_fd(), reader.as_raw_fd(), libc::EPOLLIN.cast_unsigned(), 7);
        // The same file, registered under a number closed since.
        let copy = reader.try_clone().unwrap();
        let closed = copy.as_raw_fd();
        epoll_ctl(epoll.as_raw_fd(), closed, (libc::EPOLLOUT | libc::EPOLLET).cast_unsigned(), 9);
        drop(copy);
        let table = FdTable {
            files: vec![
                OpenFile { flags: 2, offset: 0, target: FdTarget::Epoll { registrations: vec![] }, owner: None },
                OpenFile {
                    flags: 0,
                    offset: 0,
                    target: FdTarget::File { path: "/x".into(), identity: None },
                    owner: None,
                },
                OpenFile {
                    flags: 0,
                    offset: 0,
                    target: FdTarget::File { path: "/y".into(), identity: None },
                    owner: None,
                },
            ],
            descriptors: vec![
                Descriptor { fd: epoll.as_raw_fd(), cloexec: true, file: 0 },
                Descriptor { fd: other.as_raw_fd(), cloexec: false, file: 2 },
                Descriptor { fd: reader.as_raw_fd(), cloexec: false, file: 1 },
            ],
            pipes: vec![],
            socket_pairs: vec![],
            objects: vec![],
        };
        let mut found = capture(pid, epoll.as_raw_fd(), &table).unwrap();
        found.sort_by_key(|registration| registration.data);
        assert_eq!(
            found,
            [
                EpollRegistration { fd: reader.as_raw_fd(), file: 1, events: 0x19, data: 7 },
                EpollRegistration { fd: closed, file: 1, events: 0x8000_001c, data: 9 },
            ]
        );
        // A target nobody in the table holds is refused.
        let without = FdTable { descriptors: table.descriptors[..2].to_vec(), ..table };
        let error = capture(pid, epoll.as_raw_fd(), &without).unwrap_err();
        assert!(error.to_string().contains("no descriptor of the process holds"), "{error}");
        drop(writer);
    }

    #[test]
    fn registrations_are_added_once_every_descriptor_is_in_place() {
        // epoll at fd 3 registers fd 7 (in place) and fd 9 (closed since).
        let table = FdTable {
            files: vec![
                OpenFile {
                    flags: libc::O_RDWR,
                    offset: 0,
                    target: FdTarget::Epoll {
                        registrations: vec![
                            EpollRegistration { fd: 7, file: 1, events: 0x19, data: 0xabc },
                            EpollRegistration { fd: 9, file: 1, events: 0x4000_0000, data: 1 },
                        ],
                    },
                    owner: None,
                },
                OpenFile {
                    flags: 0,
                    offset: 0,
                    target: FdTarget::File { path: "/srv/x".into(), identity: None },
                    owner: None,
                },
            ],
            descriptors: vec![
                Descriptor { fd: 3, cloexec: false, file: 0 },
                Descriptor { fd: 7, cloexec: false, file: 1 },
            ],
            pipes: vec![],
            socket_pairs: vec![],
            objects: vec![],
        };
        check_table(&table).unwrap();
        // Temporaries from 10 up (9 is a registration's number).
        let mut next = 9;
        let mut restored = FakeTracee::answering(move |call, _| match call.number {
            libc::SYS_fcntl if call.args[1] == libc::F_GETFD as u64 => -i64::from(libc::EBADF),
            libc::SYS_fcntl if call.args[1] == libc::F_DUPFD_CLOEXEC as u64 => {
                next += 1;
                next
            }
            libc::SYS_epoll_create1 | libc::SYS_openat => 4,
            _ => 0,
        });
        table.restore(&mut crp_ptrace::Restore::new(&mut restored)).unwrap();
        let adds = restored.calls_of(libc::SYS_epoll_ctl);
        assert_eq!(adds.len(), 2);
        let (epoll, file) = (10, 11);
        assert_eq!((adds[0].args[0], adds[0].args[2]), (epoll, 7));
        // The scratch holds the last event written: the fired ONESHOT one.
        let event = restored.memory.read(adds[1].args[3], 12);
        assert_eq!(event[..4], 0x4000_0000u32.to_ne_bytes());
        assert_eq!(event[4..], 1u64.to_ne_bytes());
        // fd 9 is the file for the time of its registration, then closed.
        let position = |wanted: &crp_ptrace::fake::Call| restored.calls.iter().position(|call| call == wanted).unwrap();
        let dup = restored.calls.iter().find(|call| call.number == libc::SYS_dup3 && call.args[1] == 9).unwrap();
        assert_eq!(dup.args[0], file);
        let close = restored.calls.iter().rfind(|call| call.number == libc::SYS_close && call.args[0] == 9).unwrap();
        assert!(position(dup) < position(adds[1]) && position(adds[1]) < position(close));
        let last = restored.calls.last().unwrap();
        assert_eq!((last.number, last.args[0]), (libc::SYS_close_range, 10), "temporaries above fd 9");
        let mut itself = table.clone();
        if let FdTarget::Epoll { registrations } = &mut itself.files[0].target {
            registrations[0].file = 0;
        }
        assert!(check_table(&itself).unwrap_err().to_string().contains("registers the epoll itself"));
    }
}
