//! inotify instances: every watch with its watch-descriptor number and its
//! mask (IN_ONESHOT, IN_EXCL_UNLINK included, as fdinfo shows them), read
//! from /proc/PID/fdinfo (`inotify wd:... ino:... sdev:... mask:...
//! f_handle:...`, fs/notify/fdinfo.c). fdinfo names the watched inode by a
//! file handle: crp opens it with `open_by_handle_at` (CAP_DAC_READ_SEARCH)
//! through a mount of its file system (found by device number in
//! /proc/PID/mountinfo) and reads the path back from /proc/self/fd; a
//! watched inode that has no path any more is refused.
//!
//! At the restore the instance is made by `inotify_init1` and each watch
//! added by path, in ascending watch-descriptor order, so that it gets its
//! own number again: the kernel hands out numbers cyclically upward
//! (`idr_alloc_cyclic`), so a number below the wanted one is removed and
//! the watch added again. Each removal queues an IN_IGNORED event, which
//! crp reads away before the process runs. The events queued at the dump
//! are lost.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};

use super::OpenFile;
use crate::error::{CompoundError, Unsupported};
use crate::valid::{Invalid, check_path};

/// One watch of an inotify instance.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct InotifyWatch {
    /// Its watch descriptor, as `inotify_add_watch` returned it.
    pub wd: i32,
    /// The mask as fdinfo shows it (events and IN_ONESHOT/IN_EXCL_UNLINK).
    pub mask: u32,
    /// The watched file or directory.
    pub path: String,
}

/// The most watch numbers the restore skips over (two injected syscalls
/// each) to give the watches their own numbers.
pub const MAX_SKIPPED_NUMBERS: u64 = 1 << 16;

/// One `inotify` line of fdinfo, its `key:value` words.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    wd: i32,
    ino: u64,
    sdev: u32,
    mask: u32,
    handle_type: i32,
    handle: Vec<u8>,
}

fn parse_line(line: &str) -> Option<Line> {
    let value = |name: &str| -> Option<&str> {
        line.split_whitespace().find_map(|word| word.strip_prefix(name)?.strip_prefix(':'))
    };
    let hex = |name: &str| -> Option<u64> { u64::from_str_radix(value(name)?, 16).ok() };
    let handle_text = value("f_handle")?;
    let handle = (0..handle_text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(handle_text.get(at..at + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let bytes = usize::try_from(hex("fhandle-bytes")?).ok()?;
    (bytes == handle.len()).then_some(())?;
    Some(Line {
        wd: i32::try_from(hex("wd")?).ok()?,
        ino: hex("ino")?,
        sdev: u32::try_from(hex("sdev")?).ok()?,
        mask: u32::try_from(hex("mask")?).ok()?,
        handle_type: i32::try_from(hex("fhandle-type")?).ok()?,
        handle,
    })
}

/// The watches an inotify's fdinfo text lists.
fn parse(path: &str, text: &str) -> Result<Vec<Line>, CompoundError> {
    text.lines()
        .filter(|line| line.starts_with("inotify "))
        .map(|line| {
            parse_line(line).ok_or_else(|| CompoundError::Malformed {
                path: path.into(),
                reason: format!("cannot read the watch {line:?} (a watch without a file handle is not kept)"),
            })
        })
        .collect()
}

/// A mountinfo field with its octal escapes (`\040`) decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped =
            bytes.get(at + 1..at + 4).and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match (bytes[at], escaped) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                at += 4;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A mount point of the file system with kernel device number `sdev` in
/// `mountinfo`, preferring a mount of its root.
fn mount_of(mountinfo: &str, sdev: u32) -> Option<String> {
    let wanted = format!("{}:{}", sdev >> 20, sdev & 0xf_ffff);
    let mut found = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(device), Some(root), Some(point)) = (fields.get(2), fields.get(3), fields.get(4)) else { continue };
        if *device == wanted {
            if *root == "/" {
                return Some(unescape(point));
            }
            found.get_or_insert_with(|| unescape(point));
        }
    }
    found
}

/// The path of the inode a watch's file handle names, checked to be that
/// inode; `None` when it has none any more.
fn path_of(mount: &str, line: &Line) -> Result<Option<String>, CompoundError> {
    let mount_fd = std::fs::OpenOptions::new()
        .read(true)
        // Not O_PATH: open_by_handle_at takes no O_PATH descriptor (EBADF).
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(mount)
        .map_err(CompoundError::io("open the mount", mount))?;
    // struct file_handle: handle_bytes, handle_type, then the handle.
    let mut handle = Vec::with_capacity(8 + line.handle.len());
    handle.extend_from_slice(&u32::try_from(line.handle.len()).unwrap_or(u32::MAX).to_ne_bytes());
    handle.extend_from_slice(&line.handle_type.to_ne_bytes());
    handle.extend_from_slice(&line.handle);
    // SAFETY: the handle buffer holds the struct file_handle the kernel
    // reads (its length in its first word) and lives across the call.
    let opened = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            handle.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if opened < 0 {
        return match nix::errno::Errno::last() {
            nix::errno::Errno::ESTALE | nix::errno::Errno::ENOENT => Ok(None),
            errno => Err(CompoundError::Io {
                action: "open by its file handle (open_by_handle_at) a watched inode of",
                path: mount.into(),
                source: errno.into(),
            }),
        };
    }
    // SAFETY: open_by_handle_at returned a new descriptor nothing else owns.
    let inode = unsafe { OwnedFd::from_raw_fd(i32::try_from(opened).unwrap_or(-1)) };
    let link = format!("/proc/self/fd/{}", inode.as_raw_fd());
    let path = std::fs::read_link(&link).map_err(CompoundError::io("read link", &link))?.to_string_lossy().into_owned();
    if !path.starts_with('/') || path.ends_with(" (deleted)") {
        return Ok(None);
    }
    let same = std::fs::symlink_metadata(&path).is_ok_and(|metadata| {
        metadata.ino() == line.ino
            && libc::major(metadata.dev()) == line.sdev >> 20
            && libc::minor(metadata.dev()) == line.sdev & 0xf_ffff
    });
    Ok(same.then_some(path))
}

/// The watches of inotify descriptor `fd` of `pid`, in ascending
/// watch-descriptor order, each by path.
pub(super) fn capture(pid: i32, fd: i32) -> Result<Vec<InotifyWatch>, CompoundError> {
    let location = || format!("fd {fd} -> anon_inode:inotify");
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).map_err(CompoundError::io("read", &path))?;
    let lines = parse(&path, &text)?;
    let mountinfo_path = format!("/proc/{pid}/mountinfo");
    let mountinfo = if lines.is_empty() {
        String::new()
    } else {
        std::fs::read_to_string(&mountinfo_path).map_err(CompoundError::io("read", &mountinfo_path))?
    };
    let mut watches = Vec::new();
    for line in &lines {
        let refuse = |what: String| -> CompoundError { Unsupported { what, location: location() }.into() };
        let Some(mount) = mount_of(&mountinfo, line.sdev) else {
            return Err(refuse(format!(
                "an inotify watch (wd {}) on device {}:{}, which no mount of the process shows",
                line.wd,
                line.sdev >> 20,
                line.sdev & 0xf_ffff
            )));
        };
        let Some(watched) = path_of(&mount, line)? else {
            return Err(refuse(format!(
                "an inotify watch (wd {}) of an inode (ino {}) that has no path any more",
                line.wd, line.ino
            )));
        };
        watches.push(InotifyWatch { wd: line.wd, mask: line.mask, path: watched });
    }
    watches.sort_by_key(|watch| watch.wd);
    if skipped_numbers(&watches) > MAX_SKIPPED_NUMBERS {
        return Err(Unsupported {
            what: format!(
                "an inotify instance whose watch numbers reach {}: giving them back skips more than \
                 {MAX_SKIPPED_NUMBERS} numbers",
                watches.last().map_or(0, |watch| watch.wd)
            ),
            location: location(),
        }
        .into());
    }
    Ok(watches)
}

/// How many numbers below the highest watch number no watch has.
fn skipped_numbers(watches: &[InotifyWatch]) -> u64 {
    let highest = watches.iter().map(|watch| u64::try_from(watch.wd).unwrap_or(0)).max().unwrap_or(0);
    highest.saturating_sub(watches.len() as u64)
}

/// Refuses watches the restore could not add: numbers not positive or not
/// ascending, paths the kernel would misread, masks without events, more
/// numbers to skip than the restore skips.
pub(super) fn check(watches: &[InotifyWatch], field: &dyn Fn() -> String) -> Result<(), Invalid> {
    for (position, watch) in watches.iter().enumerate() {
        let what = || format!("{}, watch {position} (wd {})", field(), watch.wd);
        if watch.wd <= 0 || position > 0 && watches[position - 1].wd >= watch.wd {
            return Err(Invalid::new(what(), "is not a watch number above the one before"));
        }
        if watch.mask & libc::IN_ALL_EVENTS == 0 {
            return Err(Invalid::new(what(), format!("has mask {:#x}, without events", watch.mask)));
        }
        check_path(what(), &watch.path)?;
    }
    if skipped_numbers(watches) > MAX_SKIPPED_NUMBERS {
        return Err(Invalid::new(field(), format!("skips more than {MAX_SKIPPED_NUMBERS} watch numbers")));
    }
    Ok(())
}

/// Refuses a restore whose watched paths are gone, before anything is made.
pub(super) fn check_paths_exist(watches: &[InotifyWatch]) -> Result<(), CompoundError> {
    for watch in watches {
        std::fs::symlink_metadata(&watch.path).map_err(CompoundError::io("find the inotify-watched", &watch.path))?;
    }
    Ok(())
}

/// Reads away the events queued in the tracee's (non-blocking) inotify `fd`.
fn drain(tracee: &mut dyn Tracee, fd: u64) -> Result<(), EngineError> {
    const BUFFER: usize = 4096;
    let mut scratch = tracee.scratch();
    let buffer = scratch.reserve(BUFFER);
    scratch.commit(tracee)?;
    loop {
        match tracee.raw_syscall(libc::SYS_read, [fd, buffer, BUFFER as u64, 0, 0, 0])? {
            read if read > 0 => {}
            result if result == -i64::from(libc::EAGAIN) || result == 0 => return Ok(()),
            result => {
                return Err(EngineError::Syscall {
                    syscall: "read (inotify events of skipped watch numbers)",
                    args: vec![fd, buffer, BUFFER as u64],
                    pid: tracee.pid(),
                    errno: nix::errno::Errno::from_raw(i32::try_from(-result).unwrap_or(libc::EINVAL)),
                });
            }
        }
    }
}

/// Makes an inotify instance with the watches `watches` (ascending, as
/// [`check`] requires), each with its own number, and the status flags of
/// `file`, at a descriptor from `above` up.
pub(super) fn make(
    tracee: &mut dyn Tracee,
    watches: &[InotifyWatch],
    file: &OpenFile,
    above: u64,
) -> Result<u64, EngineError> {
    let flags = arg(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
    let made = tracee.syscall("inotify_init1", libc::SYS_inotify_init1, [flags, 0, 0, 0, 0, 0])?;
    let fd = super::move_above(tracee, made, above)?;
    let mut skipped = 0u64;
    for watch in watches {
        let mut scratch = tracee.scratch();
        let path = scratch.push_c_string(watch.path.as_bytes());
        scratch.commit(tracee)?;
        // The path names the inode itself: never follow it. MASK_ADD and
        // MASK_CREATE are how a watch was added, not what it is.
        let mask = (watch.mask | libc::IN_DONT_FOLLOW) & !(libc::IN_MASK_ADD | libc::IN_MASK_CREATE);
        loop {
            let wd = tracee.syscall(
                "inotify_add_watch",
                libc::SYS_inotify_add_watch,
                [fd, path, u64::from(mask), 0, 0, 0],
            )?;
            if wd == arg(watch.wd) {
                break;
            }
            let below = i64::try_from(wd).is_ok_and(|wd| wd < i64::from(watch.wd));
            let taken = watches.iter().any(|other| arg(other.wd) == wd);
            if !below || taken || skipped >= MAX_SKIPPED_NUMBERS {
                return Err(EngineError::Syscall {
                    syscall: "inotify_add_watch (the watch cannot get its own number again)",
                    args: vec![fd, path, u64::from(mask), arg(watch.wd), wd],
                    pid: tracee.pid(),
                    errno: nix::errno::Errno::ERANGE,
                });
            }
            tracee.syscall("inotify_rm_watch", libc::SYS_inotify_rm_watch, [fd, wd, 0, 0, 0, 0])?;
            skipped += 1;
            if skipped.is_multiple_of(512) {
                drain(tracee, fd)?; // below the queue's limit (max_queued_events)
            }
        }
    }
    if skipped > 0 {
        drain(tracee, fd)?;
    }
    // Always: the drain above made it non-blocking. O_ASYNC comes with the owners.
    let status = arg(file.flags & super::SETFL_FLAGS & !libc::O_ASYNC);
    tracee.syscall("fcntl(F_SETFL)", libc::SYS_fcntl, [fd, arg(libc::F_SETFL), status, 0, 0, 0])?;
    Ok(fd)
}

/// An inotify mask as words: `CREATE|DELETE|ONESHOT`.
pub fn describe_mask(mask: u32) -> String {
    const NAMES: &[(u32, &str)] = &[
        (libc::IN_ACCESS, "ACCESS"),
        (libc::IN_MODIFY, "MODIFY"),
        (libc::IN_ATTRIB, "ATTRIB"),
        (libc::IN_CLOSE_WRITE, "CLOSE_WRITE"),
        (libc::IN_CLOSE_NOWRITE, "CLOSE_NOWRITE"),
        (libc::IN_OPEN, "OPEN"),
        (libc::IN_MOVED_FROM, "MOVED_FROM"),
        (libc::IN_MOVED_TO, "MOVED_TO"),
        (libc::IN_CREATE, "CREATE"),
        (libc::IN_DELETE, "DELETE"),
        (libc::IN_DELETE_SELF, "DELETE_SELF"),
        (libc::IN_MOVE_SELF, "MOVE_SELF"),
        (libc::IN_ONLYDIR, "ONLYDIR"),
        (libc::IN_DONT_FOLLOW, "DONT_FOLLOW"),
        (libc::IN_EXCL_UNLINK, "EXCL_UNLINK"),
        (libc::IN_MASK_CREATE, "MASK_CREATE"),
        (libc::IN_MASK_ADD, "MASK_ADD"),
        (libc::IN_ONESHOT, "ONESHOT"),
    ];
    let mut words: Vec<String> = Vec::new();
    let mut left = mask;
    for (bit, name) in NAMES {
        if mask & bit != 0 {
            words.push((*name).to_owned());
            left &= !bit;
        }
    }
    if left != 0 {
        words.push(format!("{left:#x}"));
    }
    if words.is_empty() { "none".to_owned() } else { words.join("|") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{FdTable, FdTarget, check_table};
    use crp_ptrace::Persist;
    use crp_ptrace::fake::FakeTracee;

    #[test]
    fn fdinfo_lines_give_number_mask_and_handle() {
        let text = "pos:\t0\nflags:\t04000\nmnt_id:\t17\nino:\t1038\n\
            inotify wd:2 ino:a3a12a sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:2aa1a300a5903836\n\
            inotify wd:1 ino:3c4a7 sdev:fe00001 mask:84000100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000\n";
        let lines = parse("/proc/1/fdinfo/8", text).unwrap();
        assert_eq!(
            lines[0],
            Line {
                wd: 2,
                ino: 0xa3_a12a,
                sdev: 0xfe0_0000,
                mask: 2,
                handle_type: 1,
                handle: vec![0x2a, 0xa1, 0xa3, 0, 0xa5, 0x90, 0x38, 0x36]
            }
        );
        assert_eq!(lines[1].mask, 0x8400_0100);
        assert_eq!(describe_mask(0x8400_0100), "CREATE|EXCL_UNLINK|ONESHOT");
        let error = parse("/proc/1/fdinfo/8", "inotify wd:1 ino:1 sdev:1 mask:2 ignored_mask:0\n").unwrap_err();
        assert!(error.to_string().contains("without a file handle"), "{error}");
        let mountinfo =
            "22 1 0:21 /sub /mnt/bind rw - tmpfs tmpfs rw\n23 1 0:21 / /mnt/my\\040disk rw - tmpfs tmpfs rw\n";
        assert_eq!(mount_of(mountinfo, 21).as_deref(), Some("/mnt/my disk"));
        assert_eq!(mount_of("22 1 0:21 /sub /mnt/bind rw\n", 21).as_deref(), Some("/mnt/bind"));
        assert_eq!(mount_of(mountinfo, 22), None);
    }

    #[test]
    fn own_watches_are_found_by_path() {
        let _own = crate::files::tests::OWN_DESCRIPTORS.lock();
        let directory = std::env::temp_dir().join(format!("crp-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let file = directory.join("watched");
        std::fs::write(&file, b"x").unwrap();
        // SAFETY: inotify_init1 returns a new descriptor nothing else owns.
        let inotify = unsafe { OwnedFd::from_raw_fd(libc::inotify_init1(libc::IN_CLOEXEC)) };
        let add = |path: &std::path::Path, mask: u32| {
            let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: the path is NUL-terminated and lives across the call.
            unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), path.as_ptr(), mask) }
        };
        assert_eq!(add(&directory, libc::IN_CREATE | libc::IN_ONESHOT), 1);
        assert_eq!(add(&file, libc::IN_MODIFY), 2);
        let watches = capture(std::process::id() as i32, inotify.as_raw_fd()).unwrap();
        let path = |path: &std::path::Path| std::fs::canonicalize(path).unwrap().to_string_lossy().into_owned();
        assert_eq!(
            watches,
            [
                InotifyWatch { wd: 1, mask: libc::IN_CREATE | libc::IN_ONESHOT, path: path(&directory) },
                InotifyWatch { wd: 2, mask: libc::IN_MODIFY, path: path(&file) },
            ]
        );
        // A watched file deleted since (but kept by an open descriptor,
        // else its watch goes with it) has no path.
        let _open = std::fs::File::open(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        let error = capture(std::process::id() as i32, inotify.as_raw_fd()).unwrap_err();
        assert!(error.to_string().contains("no path any more"), "{error}");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn watches_get_their_own_numbers_again() {
        let table = FdTable::from(vec![super::super::FdRecord {
            fd: 5,
            flags: libc::O_RDONLY,
            offset: 0,
            target: FdTarget::Inotify {
                watches: vec![
                    InotifyWatch { wd: 1, mask: libc::IN_CREATE, path: "/srv".into() },
                    InotifyWatch { wd: 4, mask: libc::IN_MODIFY | libc::IN_ONESHOT, path: "/srv/log".into() },
                ],
            },
        }]);
        check_table(&table).unwrap();
        // The kernel's numbers go up from 1; the queue empties at once.
        let mut next_wd = 0;
        let paths = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = paths.clone();
        let mut restored = FakeTracee::answering(move |call, memory| match call.number {
            libc::SYS_inotify_init1 => 3,
            libc::SYS_inotify_add_watch => {
                seen.borrow_mut().push(memory.read(call.args[1], 9));
                next_wd += 1;
                next_wd
            }
            libc::SYS_read => -i64::from(libc::EAGAIN),
            libc::SYS_fcntl if call.args[1] == libc::F_DUPFD_CLOEXEC as u64 => 9,
            _ => 0,
        });
        table.restore(&mut crp_ptrace::Restore::new(&mut restored)).unwrap();
        let removed: Vec<u64> = restored.calls_of(libc::SYS_inotify_rm_watch).iter().map(|call| call.args[1]).collect();
        assert_eq!(removed, [2, 3], "numbers 2 and 3 skipped");
        let adds = restored.calls_of(libc::SYS_inotify_add_watch);
        assert_eq!(adds.len(), 4);
        assert_eq!(paths.borrow()[3], b"/srv/log\0");
        assert_eq!(paths.borrow()[0][..5], *b"/srv\0");
        assert_eq!(adds[3].args[2], u64::from(libc::IN_MODIFY | libc::IN_ONESHOT | libc::IN_DONT_FOLLOW));
        assert_eq!(restored.calls_of(libc::SYS_read).len(), 1, "the IN_IGNORED events read away");
        let setfl = restored.calls.iter().find(|call| call.args[1] == libc::F_SETFL as u64).unwrap();
        assert_eq!((setfl.args[0], setfl.args[2]), (9, 0), "blocking again, as it was");
        let mut unordered = table.clone();
        if let FdTarget::Inotify { watches } = &mut unordered.files[0].target {
            watches.swap(0, 1);
        }
        assert!(check_table(&unordered).unwrap_err().to_string().contains("above the one before"));
        let mut far = table;
        if let FdTarget::Inotify { watches } = &mut far.files[0].target {
            watches[1].wd = i32::MAX;
        }
        assert!(check_table(&far).unwrap_err().to_string().contains("skips more than"));
    }
}
