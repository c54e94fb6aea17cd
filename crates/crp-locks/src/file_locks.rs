//! File locks the process holds: POSIX record locks (every range, read and
//! write), open file description locks (OFD), flock locks and leases, as
//! /proc/PID/fdinfo lists them under the descriptor they belong to. None
//! is copied: each is taken again at restore, without waiting, through
//! the same descriptor once the descriptor table is back, so the restored
//! process holds it and another process trying to take it is refused.
//!
//! Between the dump and the restore nobody holds them (the dumped process
//! is gone): a lock someone else took meanwhile makes the restore fail,
//! naming the file and the range, before the process runs.
//!
//! A POSIX lock is listed under every descriptor of the open file
//! description it was taken through; an OFD lock, a flock and a lease
//! under every descriptor of their description: each is kept once
//! (descriptions compared with `kcmp`). Mandatory locks, leases being
//! broken and NFS delegations are refused.

use crp_ptrace::procfs::{DescriptorLocks, ProcError};
use crp_ptrace::{Capture, Persist, Restore, Tracee, TraceeExt, arg};

use crate::LockError;

/// fcntl commands and lock types.
const F_SETLK: u64 = 6;
const F_OFD_SETLK: u64 = 37;
const F_SETLEASE: u64 = 1024;
const F_RDLCK: i16 = 0;
const F_WRLCK: i16 = 1;
/// flock operations.
const LOCK_SH: u64 = 1;
const LOCK_EX: u64 = 2;
const LOCK_NB: u64 = 4;
/// `struct flock` on x86-64: type, whence, start, len, pid.
const FLOCK_SIZE: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum LockKind {
    /// fcntl F_SETLK: owned by the process.
    Posix,
    /// fcntl F_OFD_SETLK: owned by the open file description.
    OpenFileDescription,
    /// flock(2): owned by the open file description.
    Flock,
    /// fcntl F_SETLEASE.
    Lease,
}

/// One lock, taken again through descriptor `fd`.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FileLock {
    pub kind: LockKind,
    pub write: bool,
    /// First byte; 0 for flock and leases.
    pub start: u64,
    /// Last byte (inclusive); None to the end of the file (and beyond).
    pub end: Option<u64>,
    pub fd: i32,
    /// Where the descriptor pointed at the dump, for messages.
    pub path: String,
}

/// Every lock the process held, in the order of its descriptors.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FileLocks {
    pub locks: Vec<FileLock>,
}

impl LockKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Posix => "POSIX",
            Self::OpenFileDescription => "OFD",
            Self::Flock => "flock",
            Self::Lease => "lease",
        }
    }
}

impl FileLock {
    /// "POSIX write lock", "flock read lock", "read lease".
    pub fn describe(&self) -> String {
        let mode = if self.write { "write" } else { "read" };
        match self.kind {
            LockKind::Lease => format!("{mode} lease"),
            kind => format!("{} {mode} lock", kind.name()),
        }
    }

    /// "bytes 10-14", "bytes 100 to the end", "the whole file".
    pub fn range(&self) -> String {
        match (self.kind, self.end) {
            (LockKind::Flock | LockKind::Lease, _) => "the whole file".to_owned(),
            (_, None) if self.start == 0 => "bytes 0 to the end (the whole file)".to_owned(),
            (_, None) => format!("bytes {} to the end", self.start),
            (_, Some(end)) => format!("bytes {}-{end}", self.start),
        }
    }
}

/// One `lock:` line of fdinfo, parsed: kind, write, device:inode, start,
/// end. The line is `ID: KIND CLASS TYPE PID MAJ:MIN:INO START END`.
fn parse_line(line: &str) -> Result<(LockKind, bool, &str, u64, Option<u64>), String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_, kind, class, mode, _pid, inode, start, end] = fields[..] else {
        return Err(format!("unexpected lock line {line:?}"));
    };
    let kind = match (kind, class) {
        ("POSIX", "ADVISORY") => LockKind::Posix,
        ("OFDLCK", "ADVISORY") => LockKind::OpenFileDescription,
        ("FLOCK", "ADVISORY") => LockKind::Flock,
        ("LEASE", "ACTIVE") => LockKind::Lease,
        ("LEASE", state) => return Err(format!("a lease being broken ({state})")),
        (kind, "MANDATORY") => return Err(format!("a mandatory {kind} lock")),
        (kind, class) => return Err(format!("a {kind} {class} lock")),
    };
    let write = match mode {
        "READ" => false,
        "WRITE" => true,
        other => return Err(format!("a {} lock of type {other}", kind.name())),
    };
    let start = start.parse().map_err(|_| format!("bad start {start:?} in {line:?}"))?;
    let end = match end {
        "EOF" => None,
        end => Some(end.parse().map_err(|_| format!("bad end {end:?} in {line:?}"))?),
    };
    Ok((kind, write, inode, start, end))
}

/// Refuses, from /proc/PID/fdinfo, the locks crp cannot take again:
/// mandatory locks, leases being broken, delegations, lines it cannot read.
pub fn preflight(pid: i32) -> Result<(), LockError> {
    let directory = format!("/proc/{pid}/fdinfo");
    let io_error = |source| LockError::Io { path: directory.clone(), source };
    for entry in std::fs::read_dir(&directory).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let path = entry.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // Closed since the listing (before the freeze the process still
            // runs): a closed descriptor holds no lock.
            Err(source) if source.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ProcError::Read { path, source }.into()),
        };
        for line in text.lines().filter_map(|line| line.strip_prefix("lock:")).map(str::trim) {
            if let Err(what) = parse_line(line) {
                let fd = entry.file_name().to_string_lossy().into_owned();
                let location = format!("fd {fd}: {line}");
                return Err(crp_ptrace::Unsupported { what: format!("file locks: {what}"), location }.into());
            }
        }
    }
    Ok(())
}

impl FileLocks {
    fn capture_from(tracee: &dyn Tracee, listed: &[DescriptorLocks]) -> Result<Self, LockError> {
        // (lock, its inode) of each lock kept so far.
        let mut kept: Vec<(FileLock, String)> = Vec::new();
        for descriptor in listed {
            let fd = i32::try_from(descriptor.fd).map_err(|_| unsupported(descriptor, "a descriptor number"))?;
            for line in &descriptor.lines {
                let (kind, write, inode, start, end) =
                    parse_line(line).map_err(|what| unsupported(descriptor, &format!("file locks: {what}")))?;
                let lock = FileLock { kind, write, start, end, fd, path: descriptor.path.clone() };
                let mut seen = false;
                for (earlier, earlier_inode) in &kept {
                    let alike = earlier.kind == lock.kind
                        && earlier_inode == inode
                        && (earlier.write, earlier.start, earlier.end) == (write, start, end);
                    // A POSIX lock is the process's: one per inode and range.
                    // The others are their description's.
                    if alike
                        && (kind == LockKind::Posix
                            || tracee.same_description(descriptor.fd, u64::try_from(earlier.fd).unwrap_or(0))?)
                    {
                        seen = true;
                        break;
                    }
                }
                if !seen {
                    kept.push((lock, inode.to_owned()));
                }
            }
        }
        Ok(Self { locks: kept.into_iter().map(|(lock, _)| lock).collect() })
    }

    /// Refuses locks no kernel holds: a negative descriptor, a range that
    /// ends before it starts or at an offset beyond i64, a flock or lease
    /// with a range.
    pub fn check(&self) -> Result<(), String> {
        for (index, lock) in self.locks.iter().enumerate() {
            let field = format!("file lock {index} ({} on fd {})", lock.describe(), lock.fd);
            if lock.fd < 0 {
                return Err(format!("{field} is on a negative descriptor"));
            }
            // OFFSET_MAX is "to the end" (None): a last byte is below it.
            let offset_limit = i64::MAX.cast_unsigned();
            if lock.start >= offset_limit || lock.end.is_some_and(|end| end < lock.start || end >= offset_limit) {
                return Err(format!("{field} has the range {}", lock.range()));
            }
            if matches!(lock.kind, LockKind::Flock | LockKind::Lease) && (lock.start, lock.end) != (0, None) {
                return Err(format!("{field} has a byte range, which flocks and leases have not"));
            }
        }
        Ok(())
    }

    /// Takes every lock again, without waiting.
    fn restore_into(&self, tracee: &mut dyn Tracee) -> Result<(), LockError> {
        for lock in &self.locks {
            let fd = arg(lock.fd);
            let result = match lock.kind {
                LockKind::Posix | LockKind::OpenFileDescription => {
                    let mut record = [0u8; FLOCK_SIZE];
                    let kind = if lock.write { F_WRLCK } else { F_RDLCK };
                    record[0..2].copy_from_slice(&kind.to_le_bytes());
                    record[8..16].copy_from_slice(&lock.start.to_le_bytes());
                    let length = lock.end.map_or(0, |end| end - lock.start + 1);
                    record[16..24].copy_from_slice(&length.to_le_bytes());
                    let mut scratch = tracee.scratch();
                    let address = scratch.push(&record);
                    scratch.commit(tracee)?;
                    let command = if lock.kind == LockKind::Posix { F_SETLK } else { F_OFD_SETLK };
                    tracee.raw_syscall(libc::SYS_fcntl, [fd, command, address, 0, 0, 0])?
                }
                LockKind::Flock => {
                    let operation = if lock.write { LOCK_EX } else { LOCK_SH } | LOCK_NB;
                    tracee.raw_syscall(libc::SYS_flock, [fd, operation, 0, 0, 0, 0])?
                }
                LockKind::Lease => {
                    let kind = u64::from((if lock.write { F_WRLCK } else { F_RDLCK }).cast_unsigned());
                    tracee.raw_syscall(libc::SYS_fcntl, [fd, F_SETLEASE, kind, 0, 0, 0])?
                }
            };
            if (-4095..0).contains(&result) {
                let errno = nix::errno::Errno::from_raw(i32::try_from(-result).unwrap_or(libc::EINVAL));
                let why = match errno {
                    nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES => {
                        "; another process holds a conflicting lock (nothing holds the process's locks between the \
                         dump and the restore, so another process may take them)"
                    }
                    _ => "",
                };
                return Err(LockError::NotTakenAgain {
                    lock: lock.describe(),
                    path: lock.path.clone(),
                    range: lock.range(),
                    fd: lock.fd,
                    errno,
                    why,
                });
            }
        }
        Ok(())
    }
}

fn unsupported(descriptor: &DescriptorLocks, what: &str) -> LockError {
    let location = format!("fd {} ({})", descriptor.fd, descriptor.path);
    crp_ptrace::Unsupported { what: what.to_owned(), location }.into()
}

impl Persist for FileLocks {
    const KIND: &'static str = "file locks";
    type Error = LockError;

    /// The fdinfo lock lines of the /proc snapshot; descriptions compared
    /// by kcmp.
    fn capture(context: &mut Capture<'_>) -> Result<Self, LockError> {
        Self::capture_from(context.tracee, &context.proc.descriptor_locks)
    }

    /// Through the restored descriptors: they must be in place.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), LockError> {
        self.restore_into(context.tracee)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

    fn listed(fd: u64, path: &str, lines: &[&str]) -> DescriptorLocks {
        DescriptorLocks { fd, path: path.into(), lines: lines.iter().map(|line| (*line).to_owned()).collect() }
    }

    fn example() -> (FakeTracee, Vec<DescriptorLocks>) {
        let mut process = FakeTracee::default();
        process.shared_descriptions = vec![(4, 8)];
        let descriptors = vec![
            listed(
                3,
                "/srv/a",
                &["1: POSIX  ADVISORY  WRITE 42 fe:00:10 10 14", "2: POSIX  ADVISORY  READ 42 fe:00:10 100 EOF"],
            ),
            listed(4, "/srv/b", &["1: FLOCK  ADVISORY  READ 42 fe:00:11 0 EOF"]),
            listed(5, "/srv/c", &["1: OFDLCK ADVISORY  WRITE -1 fe:00:12 0 0"]),
            listed(6, "/srv/d", &["1: LEASE  ACTIVE    READ 42 fe:00:13 0 EOF"]),
            // A dup of fd 3 lists its POSIX locks again; a dup of fd 4 its flock.
            listed(
                7,
                "/srv/a",
                &["1: POSIX  ADVISORY  WRITE 42 fe:00:10 10 14", "2: POSIX  ADVISORY  READ 42 fe:00:10 100 EOF"],
            ),
            listed(8, "/srv/b", &["1: FLOCK  ADVISORY  READ 42 fe:00:11 0 EOF"]),
            // Another description of /srv/b holding its own shared flock.
            listed(9, "/srv/b", &["1: FLOCK  ADVISORY  READ 42 fe:00:11 0 EOF"]),
        ];
        (process, descriptors)
    }

    #[test]
    fn each_lock_is_kept_once_per_owner() {
        let (process, descriptors) = example();
        let locks = FileLocks::capture_from(&process, &descriptors).unwrap();
        let summary: Vec<(i32, String, String)> =
            locks.locks.iter().map(|lock| (lock.fd, lock.describe(), lock.range())).collect();
        assert_eq!(
            summary,
            [
                (3, "POSIX write lock".into(), "bytes 10-14".into()),
                (3, "POSIX read lock".into(), "bytes 100 to the end".into()),
                (4, "flock read lock".into(), "the whole file".into()),
                (5, "OFD write lock".into(), "bytes 0-0".into()),
                (6, "read lease".into(), "the whole file".into()),
                (9, "flock read lock".into(), "the whole file".into()),
            ]
        );
        locks.check().unwrap();
    }

    #[test]
    fn locks_are_taken_again_without_waiting_through_their_descriptors() {
        let (process, descriptors) = example();
        let locks = FileLocks::capture_from(&process, &descriptors).unwrap();
        let records = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = records.clone();
        let mut restored = FakeTracee::answering(move |call, memory| {
            if call.number == libc::SYS_fcntl && call.args[1] != F_SETLEASE {
                seen.borrow_mut().push(memory.read(call.args[2], FLOCK_SIZE));
            }
            0
        });
        locks.restore(&mut Restore::new(&mut restored)).unwrap();
        let fcntls: Vec<[u64; 2]> =
            restored.calls_of(libc::SYS_fcntl).iter().map(|call| [call.args[0], call.args[1]]).collect();
        assert_eq!(fcntls, [[3, F_SETLK], [3, F_SETLK], [5, F_OFD_SETLK], [6, F_SETLEASE]]);
        let flocks: Vec<[u64; 2]> =
            restored.calls_of(libc::SYS_flock).iter().map(|call| [call.args[0], call.args[1]]).collect();
        assert_eq!(flocks, [[4, LOCK_SH | LOCK_NB], [9, LOCK_SH | LOCK_NB]]);
        let records = records.borrow();
        let word = |record: &Vec<u8>, at: usize| u64::from_le_bytes(record[at..at + 8].try_into().unwrap());
        assert_eq!((records[0][0], word(&records[0], 8), word(&records[0], 16)), (1, 10, 5), "write, 10, length 5");
        assert_eq!((records[1][0], word(&records[1], 8), word(&records[1], 16)), (0, 100, 0), "read, 100, to EOF");
    }

    #[test]
    fn a_lock_someone_else_holds_fails_naming_file_and_range() {
        let (process, descriptors) = example();
        let locks = FileLocks::capture_from(&process, &descriptors).unwrap();
        let mut restored = FakeTracee::answering(|call, _| if call.number == libc::SYS_fcntl { -11 } else { 0 });
        let error = locks.restore(&mut Restore::new(&mut restored)).unwrap_err().to_string();
        assert!(error.contains("POSIX write lock on /srv/a (fd 3), bytes 10-14"), "{error}");
        assert!(error.contains("EAGAIN"), "{error}");
    }

    #[test]
    fn locks_crp_cannot_take_again_are_refused() {
        for line in [
            "1: POSIX  MANDATORY WRITE 42 fe:00:10 0 EOF",
            "1: LEASE  BREAKING  READ 42 fe:00:13 0 EOF",
            "1: DELEG  ACTIVE    READ 42 fe:00:13 0 EOF",
            "1: POSIX  ADVISORY  UNLCK 42 fe:00:10 0 EOF",
            "1: POSIX  ADVISORY  WRITE 42 fe:00:10 x EOF",
            "garbage",
        ] {
            assert!(parse_line(line).is_err(), "{line}");
        }
        let bad = FileLocks {
            locks: vec![FileLock {
                kind: LockKind::Posix,
                write: true,
                start: 10,
                end: Some(5),
                fd: 3,
                path: "/srv/a".into(),
            }],
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn a_held_flock_passes_preflight_and_is_listed() {
        let path = std::env::temp_dir().join(format!("crp-locks-test-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file.lock().unwrap();
        preflight(std::process::id().cast_signed()).unwrap();
    }
}
