//! The descriptor table, as the kernel has it: open file descriptions
//! ([`OpenFile`]: what is open, its status flags and offset) and the
//! descriptors that refer to them ([`Descriptor`]: a number and its
//! close-on-exec flag). Descriptors made by dup() share one description, and
//! so one offset, after the restore too. Regular files, directories and
//! memory character devices are reopened by path at their flags and offset;
//! a terminal or a pipe on fd 0-2 is the outside world, re-attached to the
//! same standard stream of `crp restore`.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crp_ptrace::procfs::{Fields, ProcError};
use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt, arg};

use crate::error::{CompoundError, Unsupported};
use crate::valid::{Invalid, check_path};

/// Major number of the memory devices (/dev/null, zero, full, random, urandom).
const MEM_DEVICE_MAJOR: u64 = 1;
/// Terminal majors: /dev/tty*, /dev/tty and /dev/console, /dev/pts/*.
const TTY_MAJORS: &[u64] = &[4, 5, 136, 137, 138, 139, 140, 141, 142, 143];
/// Open flags that would change the file when reopening it.
const CREATION_FLAGS: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY;

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum FdTarget {
    /// A regular file or directory, reopened by path.
    File { path: String },
    /// A memory character device such as /dev/null, reopened by path.
    CharDevice { path: String },
    /// A terminal or pipe on a standard stream: re-attached to `crp
    /// restore`'s own stream of that number.
    Inherited { stream: u8 },
}

/// One open file description.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OpenFile {
    /// Status flags as /proc/PID/fdinfo shows them, without O_CLOEXEC
    /// (which belongs to each descriptor).
    pub flags: i32,
    pub offset: u64,
    pub target: FdTarget,
}

/// One descriptor: its number, its close-on-exec flag, and the index of its
/// open file description in [`FdTable::files`].
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Descriptor {
    pub fd: i32,
    pub cloexec: bool,
    pub file: u32,
}

/// A descriptor and its description in one, as fdinfo shows them (flags
/// with O_CLOEXEC): how tests and tools build or list a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdRecord {
    pub fd: i32,
    /// open(2) flags as /proc/PID/fdinfo shows them (O_CLOEXEC included).
    pub flags: i32,
    pub offset: u64,
    pub target: FdTarget,
}

/// The open descriptors of `pid`, in ascending order. An entry that cannot
/// be read or is not a number is an error: a descriptor left out would be
/// silently missing after the restore.
fn open_fds(pid: i32) -> Result<Vec<i32>, CompoundError> {
    let directory = format!("/proc/{pid}/fd");
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(&directory).map_err(CompoundError::io("list", &directory))? {
        let name = entry.map_err(CompoundError::io("list", &directory))?.file_name();
        let fd = name.to_str().and_then(|name| name.parse().ok()).ok_or_else(|| CompoundError::Malformed {
            path: directory.clone().into(),
            reason: format!("entry {name:?} is not a descriptor number"),
        })?;
        fds.push(fd);
    }
    fds.sort_unstable();
    Ok(fds)
}

/// What descriptor `fd` of `pid` refers to, or why crp cannot keep it.
fn classify(pid: i32, fd: i32) -> Result<FdTarget, CompoundError> {
    let link = format!("/proc/{pid}/fd/{fd}");
    let refuse = |what: &str, target: &str| -> CompoundError {
        Unsupported { what: what.to_owned(), location: format!("fd {fd} -> {target}") }.into()
    };
    let target =
        std::fs::read_link(&link).map_err(CompoundError::io("read link", &link))?.to_string_lossy().into_owned();
    if target.starts_with("socket:") {
        return Err(refuse("a socket", &target));
    }
    if target.starts_with("anon_inode:") {
        return Err(refuse("an anonymous-inode descriptor (eventfd, epoll, timerfd, signalfd...)", &target));
    }
    if target.ends_with(" (deleted)") {
        return Err(refuse("a descriptor of a deleted file", &target));
    }
    let metadata = std::fs::metadata(&link).map_err(CompoundError::io("stat", &link))?;
    let file_type = metadata.file_type();
    // An fd that does not fit in a u8 is simply not a standard stream.
    let standard_stream = u8::try_from(fd).ok().filter(|stream| *stream <= 2);
    if file_type.is_fifo() {
        return match standard_stream {
            Some(stream) => Ok(FdTarget::Inherited { stream }),
            None => Err(refuse("a pipe or FIFO on a descriptor other than 0-2", &target)),
        };
    }
    if file_type.is_char_device() {
        let major = libc::major(metadata.rdev()) as u64;
        if TTY_MAJORS.contains(&major) {
            return match standard_stream {
                Some(stream) => Ok(FdTarget::Inherited { stream }),
                None => Err(refuse("a terminal on a descriptor other than 0-2", &target)),
            };
        }
        if major == MEM_DEVICE_MAJOR {
            return Ok(FdTarget::CharDevice { path: target });
        }
        return Err(refuse("a character device", &target));
    }
    if file_type.is_file() || file_type.is_dir() {
        if !target.starts_with('/') {
            return Err(refuse("a file outside this mount namespace", &target));
        }
        return Ok(FdTarget::File { path: target });
    }
    Err(refuse("this kind of descriptor", &target))
}

/// Checks every descriptor of `pid` is one crp can restore, touching nothing.
pub fn preflight(pid: i32) -> Result<(), CompoundError> {
    for fd in open_fds(pid)? {
        classify(pid, fd)?;
    }
    Ok(())
}

fn fdinfo(pid: i32, fd: i32) -> Result<(i32, u64), CompoundError> {
    Ok(parse_fdinfo(&Fields::read(format!("/proc/{pid}/fdinfo/{fd}"))?)?)
}

/// `(flags, offset)` of a /proc/PID/fdinfo/FD text.
fn parse_fdinfo(fdinfo: &Fields) -> Result<(i32, u64), ProcError> {
    let offset = fdinfo.decimal("pos")?;
    let flags_text = fdinfo.field("flags")?;
    let flags =
        i32::try_from(fdinfo.octal("flags")?).map_err(|_| fdinfo.malformed("flags", flags_text, "out of range"))?;
    Ok((flags, offset))
}

/// The descriptor table of a process, as one kind of state.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FdTable {
    pub files: Vec<OpenFile>,
    /// In ascending descriptor order.
    pub descriptors: Vec<Descriptor>,
}

impl FdTable {
    /// How many descriptors.
    pub fn len(&self) -> usize {
        self.descriptors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.descriptors.is_empty()
    }

    /// Adds a descriptor with a description of its own.
    pub fn push_record(&mut self, record: FdRecord) {
        let file = u32::try_from(self.files.len()).unwrap_or(u32::MAX);
        self.files.push(OpenFile {
            flags: record.flags & !libc::O_CLOEXEC,
            offset: record.offset,
            target: record.target,
        });
        self.descriptors.push(Descriptor { fd: record.fd, cloexec: record.flags & libc::O_CLOEXEC != 0, file });
    }

    /// The description of `descriptor`, when its index is valid.
    pub fn file_of(&self, descriptor: &Descriptor) -> Option<&OpenFile> {
        usize::try_from(descriptor.file).ok().and_then(|index| self.files.get(index))
    }

    /// Each descriptor with its description, flattened (skipping any with
    /// an invalid index, which [`check_table`] refuses).
    pub fn records(&self) -> impl Iterator<Item = FdRecord> + '_ {
        self.descriptors.iter().filter_map(|descriptor| {
            let file = self.file_of(descriptor)?;
            let cloexec = if descriptor.cloexec { libc::O_CLOEXEC } else { 0 };
            Some(FdRecord {
                fd: descriptor.fd,
                flags: file.flags | cloexec,
                offset: file.offset,
                target: file.target.clone(),
            })
        })
    }

    /// The lowest other descriptor sharing `descriptor`'s description.
    pub fn shared_with(&self, descriptor: &Descriptor) -> Option<i32> {
        self.descriptors
            .iter()
            .find(|other| other.file == descriptor.file && other.fd < descriptor.fd)
            .map(|other| other.fd)
    }
}

impl From<Vec<FdRecord>> for FdTable {
    /// Each record with a description of its own.
    fn from(records: Vec<FdRecord>) -> Self {
        let mut table = Self::default();
        for record in records {
            table.push_record(record);
        }
        table
    }
}

impl Persist for FdTable {
    const KIND: &'static str = "descriptors";
    type Error = CompoundError;

    /// From /proc/PID/fd and fdinfo (nothing is injected).
    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        capture(context.tracee.pid())
    }

    /// Opened with the child's file-system credentials at that moment (the
    /// image owner's, for another user's image): before the credentials.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        Ok(restore(context.tracee, self, &context.streams)?)
    }
}

/// Captures the descriptor table of a stopped process: descriptors that
/// share an open file description (dup, inherited across fork) share one
/// [`OpenFile`], as `kcmp(KCMP_FILE)` tells.
pub fn capture(pid: i32) -> Result<FdTable, CompoundError> {
    let mut table = FdTable::default();
    // The link text of each description so far, to compare only likely pairs.
    let mut seen: Vec<(String, i32, u32)> = Vec::new();
    for fd in open_fds(pid)? {
        let target = classify(pid, fd)?;
        let (flags, offset) = fdinfo(pid, fd)?;
        let link = link_text(pid, fd)?;
        let cloexec = flags & libc::O_CLOEXEC != 0;
        let mut shared = None;
        for (text, first_fd, file) in &seen {
            if *text == link && same_description(pid, *first_fd, fd)? {
                shared = Some(*file);
                break;
            }
        }
        let file = match shared {
            Some(file) => file,
            None => {
                let file = u32::try_from(table.files.len()).unwrap_or(u32::MAX);
                table.files.push(OpenFile { flags: flags & !libc::O_CLOEXEC, offset, target });
                seen.push((link, fd, file));
                file
            }
        };
        table.descriptors.push(Descriptor { fd, cloexec, file });
    }
    Ok(table)
}

fn link_text(pid: i32, fd: i32) -> Result<String, CompoundError> {
    let link = format!("/proc/{pid}/fd/{fd}");
    Ok(std::fs::read_link(&link).map_err(CompoundError::io("read link", &link))?.to_string_lossy().into_owned())
}

/// `kcmp(KCMP_FILE)`: whether two descriptors of `pid` are one open file
/// description.
fn same_description(pid: i32, first: i32, second: i32) -> Result<bool, CompoundError> {
    const KCMP_FILE: libc::c_int = 0;
    // SAFETY: kcmp only compares kernel objects of the given tasks; it reads
    // and writes no memory of crp's.
    let result = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, first, second) };
    if result < 0 {
        return Err(CompoundError::Ptrace { operation: "kcmp(KCMP_FILE)", pid, errno: nix::errno::Errno::last() });
    }
    Ok(result == 0)
}

/// `fs.nr_open`'s default: no descriptor number reaches it.
const NR_OPEN: i32 = 1 << 20;

/// Refuses a table the restore could not apply: descriptor numbers that
/// cannot exist or appear twice, descriptions no descriptor refers to or
/// that do not exist, streams other than 0-2, paths the kernel would
/// misread, offsets `lseek` refuses.
pub fn check_table(table: &FdTable) -> Result<(), Invalid> {
    for (index, descriptor) in table.descriptors.iter().enumerate() {
        let field = || format!("descriptor {index} (fd {})", descriptor.fd);
        if !(0..NR_OPEN).contains(&descriptor.fd) {
            return Err(Invalid::new(field(), format!("is not a descriptor number (0..{NR_OPEN})")));
        }
        if table.descriptors[..index].iter().any(|other| other.fd == descriptor.fd) {
            return Err(Invalid::new(field(), "appears twice"));
        }
        if table.file_of(descriptor).is_none() {
            return Err(Invalid::new(
                field(),
                format!("refers to open file {}, of {}", descriptor.file, table.files.len()),
            ));
        }
    }
    for (index, file) in table.files.iter().enumerate() {
        let field = || format!("open file {index}");
        if !table.descriptors.iter().any(|descriptor| usize::try_from(descriptor.file).is_ok_and(|file| file == index))
        {
            return Err(Invalid::new(field(), "is referred to by no descriptor"));
        }
        if i64::try_from(file.offset).is_err() {
            return Err(Invalid::new(field(), format!("has offset {}, beyond what lseek takes", file.offset)));
        }
        match &file.target {
            FdTarget::Inherited { stream } if *stream > 2 => {
                return Err(Invalid::new(field(), format!("inherits stream {stream}, not 0-2")));
            }
            FdTarget::Inherited { .. } => {}
            FdTarget::File { path } | FdTarget::CharDevice { path } => check_path(field(), path)?,
        }
    }
    Ok(())
}

/// Refuses a restore whose files are gone, before anything is created.
pub fn check_files_exist(table: &FdTable) -> Result<(), CompoundError> {
    for file in &table.files {
        if let FdTarget::File { path } | FdTarget::CharDevice { path } = &file.target {
            std::fs::metadata(path).map_err(CompoundError::io("find file of fd", path))?;
        }
    }
    Ok(())
}

fn no_args() -> [u64; 6] {
    [0; 6]
}

fn call(tracee: &mut dyn Tracee, name: &'static str, number: i64, first: &[u64]) -> Result<u64, EngineError> {
    let mut args = no_args();
    args[..first.len()].copy_from_slice(first);
    tracee.syscall(name, number, args)
}

pub use crp_ptrace::Streams;

/// Replaces the descriptor table the child inherited from crp with the
/// checkpointed one. The stream sources are parked above every target fd
/// first, so they can be handed to the streams that inherit them; each open
/// file description is opened once, at its first descriptor, and dup'ed to
/// the others. The table must have passed [`check_table`].
pub fn restore(tracee: &mut dyn Tracee, table: &FdTable, streams: &Streams) -> Result<(), EngineError> {
    // Above every target fd, stream source and 2; an empty table needs none of its own.
    let highest = table.descriptors.iter().map(|descriptor| descriptor.fd).chain(streams.sources).max().unwrap_or(2);
    let park_at = arg(highest.max(2).saturating_add(1));
    let mut parked: [Option<u64>; 3] = [None; 3];
    for (source, slot) in streams.sources.iter().zip(parked.iter_mut()) {
        // A stream crp restore itself lacks is simply not handed over; a
        // descriptor that needs it fails below, naming it.
        *slot = call(tracee, "fcntl(F_DUPFD)", libc::SYS_fcntl, &[arg(*source), arg(libc::F_DUPFD), park_at]).ok();
    }
    // Close everything else crp's child still holds.
    let mut keep: Vec<u64> = parked.iter().flatten().copied().collect();
    keep.sort_unstable();
    let mut next = 0u64;
    for kept in keep.iter().copied().chain([u64::from(u32::MAX) + 1]) {
        if kept > next {
            call(tracee, "close_range", libc::SYS_close_range, &[next, kept - 1, 0])?;
        }
        next = kept + 1;
    }
    let chosen = |fd: i32| usize::try_from(fd).ok().and_then(|fd| streams.chosen.get(fd)).copied().unwrap_or(false);
    // Where each description was first put.
    let mut opened: Vec<Option<u64>> = vec![None; table.files.len()];
    for descriptor in &table.descriptors {
        let fd = arg(descriptor.fd);
        let cloexec = if descriptor.cloexec { arg(libc::O_CLOEXEC) } else { 0 };
        // A stream the user chose replaces what the image recorded for it.
        if chosen(descriptor.fd) {
            let stream = u8::try_from(descriptor.fd).unwrap_or(u8::MAX);
            let source = hand_over(tracee, &parked, stream, fd)?;
            call(tracee, "dup3", libc::SYS_dup3, &[source, fd, cloexec])?;
            continue;
        }
        let index = usize::try_from(descriptor.file).unwrap_or(usize::MAX);
        let (Some(file), Some(first)) = (table.files.get(index), opened.get_mut(index)) else {
            continue; // refused by check_table
        };
        if let Some(first) = *first {
            call(tracee, "dup3", libc::SYS_dup3, &[first, fd, cloexec])?;
            continue;
        }
        *first = Some(fd);
        match &file.target {
            FdTarget::Inherited { stream } => {
                let source = hand_over(tracee, &parked, *stream, fd)?;
                call(tracee, "dup3", libc::SYS_dup3, &[source, fd, cloexec])?;
            }
            FdTarget::File { path } | FdTarget::CharDevice { path } => {
                let mut scratch = tracee.scratch();
                let path_address = scratch.push_c_string(path.as_bytes());
                scratch.commit(tracee)?;
                let flags = arg(file.flags & !CREATION_FLAGS) | cloexec;
                let opened = call(tracee, "openat", libc::SYS_openat, &[arg(libc::AT_FDCWD), path_address, flags])?;
                if opened != fd {
                    call(tracee, "dup3", libc::SYS_dup3, &[opened, fd, cloexec])?;
                    call(tracee, "close", libc::SYS_close, &[opened])?;
                }
                if matches!(file.target, FdTarget::File { .. }) && file.offset != 0 {
                    call(tracee, "lseek", libc::SYS_lseek, &[fd, file.offset, libc::SEEK_SET as u64])?;
                }
            }
        }
    }
    // A chosen stream the process had closed is given to it all the same.
    for stream in 0u8..3 {
        let fd = i32::from(stream);
        if chosen(fd) && !table.descriptors.iter().any(|descriptor| descriptor.fd == fd) {
            let source = hand_over(tracee, &parked, stream, arg(fd))?;
            call(tracee, "dup3", libc::SYS_dup3, &[source, arg(fd), 0])?;
        }
    }
    for parked_fd in parked.iter().flatten() {
        call(tracee, "close", libc::SYS_close, &[*parked_fd])?;
    }
    Ok(())
}

/// The parked descriptor of crp restore's standard stream `stream`.
fn hand_over(tracee: &dyn Tracee, parked: &[Option<u64>; 3], stream: u8, fd: u64) -> Result<u64, EngineError> {
    parked.get(usize::from(stream)).copied().flatten().ok_or(EngineError::Syscall {
        syscall: "dup3 (crp restore has no such standard stream to hand over)",
        args: vec![u64::from(stream), fd],
        pid: tracee.pid(),
        errno: nix::errno::Errno::EBADF,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

    #[test]
    fn descriptors_sharing_a_description_are_opened_once_and_dup_ed() {
        let table = FdTable {
            files: vec![OpenFile { flags: 0o2, offset: 5, target: FdTarget::File { path: "/srv/log".into() } }],
            descriptors: vec![
                Descriptor { fd: 3, cloexec: false, file: 0 },
                Descriptor { fd: 7, cloexec: true, file: 0 },
            ],
        };
        check_table(&table).unwrap();
        let mut restored = FakeTracee::answering(|call, _| if call.number == libc::SYS_openat { 3 } else { 9 });
        table.restore(&mut Restore::new(&mut restored)).unwrap();
        assert_eq!(restored.calls_of(libc::SYS_openat).len(), 1, "one open for one description");
        assert_eq!(restored.calls_of(libc::SYS_lseek).len(), 1, "one offset for one description");
        let dup = restored.calls_of(libc::SYS_dup3)[0];
        assert_eq!(dup.args[..3], [3, 7, libc::O_CLOEXEC as u64]);
        let unshared = FdTable { descriptors: vec![], ..table };
        assert!(check_table(&unshared).unwrap_err().to_string().contains("referred to by no descriptor"));
    }

    #[test]
    fn streams_are_handed_over_and_files_reopened_at_their_offset() {
        let table = FdTable::from(vec![
            FdRecord { fd: 1, flags: 0o1, offset: 0, target: FdTarget::Inherited { stream: 1 } },
            FdRecord { fd: 3, flags: 0o2, offset: 77, target: FdTarget::File { path: "/srv/data".into() } },
        ]);
        // fcntl(F_DUPFD) parks each source at 4, 5, 6; openat gives 7.
        let mut next = 3;
        let mut restored = FakeTracee::answering(move |call, _| match call.number {
            libc::SYS_fcntl | libc::SYS_openat => {
                next += 1;
                next
            }
            _ => 0,
        });
        let mut context = Restore::new(&mut restored);
        context.streams = Streams { sources: [0, 9, 2], chosen: [false, true, false] };
        table.restore(&mut context).unwrap();
        let parked: Vec<u64> = restored.calls_of(libc::SYS_fcntl).iter().map(|call| call.args[0]).collect();
        assert_eq!(parked, [0, 9, 2], "the chosen stdout comes from fd 9");
        let dups: Vec<[u64; 2]> =
            restored.calls_of(libc::SYS_dup3).iter().map(|call| [call.args[0], call.args[1]]).collect();
        assert_eq!(dups, [[5, 1], [7, 3]], "parked stdout to fd 1, the file moves to fd 3");
        let seek = restored.calls_of(libc::SYS_lseek)[0];
        assert_eq!((seek.args[0], seek.args[1]), (3, 77));
    }

    fn fdinfo_text(text: &str) -> Result<(i32, u64), ProcError> {
        parse_fdinfo(&Fields::parse("/proc/4/fdinfo/3", text).unwrap())
    }

    #[test]
    fn fdinfo_gives_flags_and_offset() {
        let text = "pos:\t4096\nflags:\t02100002\nmnt_id:\t21\nino:\t1234\n";
        assert_eq!(fdinfo_text(text).unwrap(), (0o2100002, 4096));
    }

    #[test]
    fn malformed_fdinfo_is_refused_and_named() {
        assert_eq!(fdinfo_text("flags:\t02\n").unwrap_err().to_string(), "/proc/4/fdinfo/3 has no field pos");
        assert_eq!(
            fdinfo_text("pos:\tx\nflags:\t02\n").unwrap_err().to_string(),
            "cannot parse /proc/4/fdinfo/3 field pos `x`: not a decimal number"
        );
        assert_eq!(
            fdinfo_text("pos:\t0\nflags:\t9\n").unwrap_err().to_string(),
            "cannot parse /proc/4/fdinfo/3 field flags `9`: not an octal number"
        );
        assert!(fdinfo_text("pos:\t0\nflags:\t777777777777\n").unwrap_err().to_string().contains("out of range"));
        assert!(fdinfo_text("pos:\t0\n").is_err());
    }

    #[test]
    fn own_descriptors_list_and_capture() {
        let pid = std::process::id() as i32;
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        use std::os::fd::AsRawFd;
        assert!(open_fds(pid).unwrap().contains(&file.as_raw_fd()));
        let (flags, offset) = fdinfo(pid, file.as_raw_fd()).unwrap();
        assert_eq!((flags & libc::O_ACCMODE, offset), (libc::O_RDONLY, 0));
    }

    #[test]
    fn own_descriptors_classify() {
        let pid = std::process::id() as i32;
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        assert!(matches!(classify(pid, fd).unwrap(), FdTarget::File { .. }));
        let null = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(classify(pid, null.as_raw_fd()).unwrap(), FdTarget::CharDevice { path: "/dev/null".into() });
        let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let error = classify(pid, socket.as_raw_fd()).unwrap_err();
        assert!(error.to_string().contains("socket"), "{error}");
        let (reader, _writer) = std::io::pipe().unwrap();
        let error = classify(pid, reader.as_raw_fd()).unwrap_err();
        assert!(error.to_string().contains("pipe"), "{error}");
    }
}
