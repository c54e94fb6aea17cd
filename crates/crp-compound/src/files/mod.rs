//! The descriptor table, as the kernel has it: open file descriptions
//! ([`OpenFile`]: what is open, its status flags and offset) and the
//! descriptors that refer to them ([`Descriptor`]: a number and its
//! close-on-exec flag). Descriptors made by dup() share one description, and
//! so one offset, after the restore too. Objects that several descriptions
//! share (the two ends of a pipe) are objects of their own in the table.
//!
//! Each kind of open file has its module: [`path`] (regular files,
//! directories, memory devices, O_PATH descriptors of anything with a path,
//! reopened by path), [`pipe`], [`fifo`], [`unlinked`] (deleted files and
//! memfds), [`event`] (eventfd, timerfd, signalfd), [`epoll`], [`inotify`],
//! [`unix_pair`] (socket pairs, found with [`unix_diag`]), [`socket`]
//! (other unix sockets, TCP and UDP). A terminal, or a pipe whose other end
//! is outside the process, on fd 0-2 is the outside world, re-attached to
//! the same standard stream of `crp restore`.

pub mod epoll;
pub mod event;
mod fifo;
mod in_flight;
pub mod inotify;
pub mod owner;
mod path;
pub mod pipe;
mod proc_fd;
pub mod socket;
pub mod tty;
mod unix_diag;
pub mod unix_pair;
pub mod unlinked;

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt, arg};

pub use crp_ptrace::{Handed, Streams};
pub use epoll::EpollRegistration;
pub use event::EventFile;
pub use inotify::InotifyWatch;
pub use owner::{FileOwner, OwnerId, OwnerKind};
pub use pipe::PipeBuffer;
pub use socket::SocketFile;
pub use tty::{PtyMaster, TerminalSettings, WindowSize, set_window_size, window_size};
pub use unix_pair::{PairEnd, Passed, SocketPair};
pub use unlinked::{Contents, Extent, FileObject};

use crate::error::{CompoundError, Unsupported};
use crate::valid::{Invalid, check_path};
use proc_fd::Entry;

/// Open flags a reopen must not pass: they would change the file, or
/// (O_ASYNC, which open(2) records without registering for signals) make
/// the later `F_SETFL` that registers it a no-op.
pub(crate) const REOPEN_EXCLUDED_FLAGS: i32 =
    libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY | libc::O_ASYNC;
/// The status flags `fcntl(F_SETFL)` sets.
pub(crate) const SETFL_FLAGS: i32 =
    libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME | libc::O_ASYNC;

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum FdTarget {
    /// A regular file or directory, reopened by path; a regular file held
    /// readable (not O_PATH, not write-only) with what identified its
    /// contents at the dump.
    File { path: String, identity: Option<FileIdentity> },
    /// A memory character device such as /dev/null, reopened by path.
    CharDevice { path: String },
    /// A terminal, or a pipe whose other end is outside the process, on a
    /// standard stream: re-attached to `crp restore`'s own stream of that
    /// number.
    Inherited { stream: u8 },
    /// An end of pipe `pipe` of [`FdTable::pipes`]; which end is the
    /// description's access mode.
    Pipe { pipe: u32 },
    /// End `end` (0 or 1) of socket pair `pair` of [`FdTable::socket_pairs`].
    UnixPair { pair: u32, end: u8 },
    /// An epoll instance and its registrations.
    Epoll { registrations: Vec<EpollRegistration> },
    /// An inotify instance and its watches, in ascending wd order.
    Inotify { watches: Vec<InotifyWatch> },
    /// An eventfd, timerfd or signalfd, with its state.
    Event(EventFile),
    /// A FIFO at `path` (deleted at the dump when `deleted`, made again with
    /// `mode`), whose buffer is pipe `pipe` of [`FdTable::pipes`].
    Fifo { path: String, mode: u32, deleted: bool, pipe: u32 },
    /// Object `object` of [`FdTable::objects`]: a deleted file or a memfd.
    Object { object: u32 },
    /// The process's own terminal on a descriptor other than 0-2 (`path`:
    /// /dev/tty, or its controlling terminal's name): the restored
    /// process's controlling terminal, /dev/tty ([`tty`]).
    OwnTerminal { path: String },
    /// The master of a pseudo-terminal pair the process opened, with the
    /// pair's settings.
    PtyMaster(PtyMaster),
    /// The slave of pair `number`, whose [`FdTarget::PtyMaster`] is in the table.
    PtySlave { number: u32 },
    /// A unix, TCP or UDP socket other than an end of a socket pair.
    Socket(Box<SocketFile>),
}

/// What identifies the contents of a regular file held open: its size and
/// mtime at the dump (a restore refuses the file when they changed, unless
/// told it is safe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FileIdentity {
    pub size: u64,
    pub mtime_ns: i64,
}

impl FileIdentity {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        Self { size: metadata.size(), mtime_ns: metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec() }
    }
}

/// One open file description.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OpenFile {
    /// Status flags as /proc/PID/fdinfo shows them, without O_CLOEXEC
    /// (which belongs to each descriptor).
    pub flags: i32,
    pub offset: u64,
    pub target: FdTarget,
    /// Its `F_SETOWN_EX` owner and `F_SETSIG` signal, when set.
    pub owner: Option<FileOwner>,
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

/// The descriptor table of a process, as one kind of state.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FdTable {
    pub files: Vec<OpenFile>,
    /// In ascending descriptor order.
    pub descriptors: Vec<Descriptor>,
    /// The pipes [`FdTarget::Pipe`] descriptions are ends of, and the
    /// buffers of the FIFOs of [`FdTarget::Fifo`] descriptions.
    pub pipes: Vec<PipeBuffer>,
    /// The unix socket pairs [`FdTarget::UnixPair`] descriptions are ends of.
    pub socket_pairs: Vec<SocketPair>,
    /// The deleted files and memfds [`FdTarget::Object`] descriptions are of.
    pub objects: Vec<FileObject>,
}

/// A descriptor of the process whose pipe has its other end outside the
/// dump: at the restore that end is closed unless the user hands one over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutsideEnd {
    pub fd: i32,
    /// The process holds the pipe's write end (else its read end).
    pub writes: bool,
    pub inode: u64,
    /// Bytes buffered for the process to read, restored before the end closes.
    pub buffered: usize,
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
            owner: None,
        });
        self.descriptors.push(Descriptor { fd: record.fd, cloexec: record.flags & libc::O_CLOEXEC != 0, file });
    }

    /// The description of `descriptor`, when its index is valid.
    pub fn file_of(&self, descriptor: &Descriptor) -> Option<&OpenFile> {
        usize::try_from(descriptor.file).ok().and_then(|index| self.files.get(index))
    }

    /// The pair of a [`FdTarget::UnixPair`] description, when its index is valid.
    pub fn socket_pair_of(&self, pair: u32) -> Option<&SocketPair> {
        usize::try_from(pair).ok().and_then(|index| self.socket_pairs.get(index))
    }

    /// The pipe of a [`FdTarget::Pipe`] description, when its index is valid.
    pub fn pipe_of(&self, pipe: u32) -> Option<&PipeBuffer> {
        usize::try_from(pipe).ok().and_then(|index| self.pipes.get(index))
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

    /// Whether the table holds a description of pipe `pipe` with access
    /// mode `mode` (or O_RDWR, which is both).
    fn has_pipe_end(&self, pipe: u32, mode: i32) -> bool {
        self.files.iter().any(|file| {
            matches!(file.target, FdTarget::Pipe { pipe: other } if other == pipe)
                && matches!(file.flags & libc::O_ACCMODE, access if access == mode || access == libc::O_RDWR)
        })
    }

    /// The descriptors whose pipe's other end is outside the process.
    pub fn outside_ends(&self) -> Vec<OutsideEnd> {
        self.descriptors
            .iter()
            .filter_map(|descriptor| {
                let file = self.file_of(descriptor)?;
                let FdTarget::Pipe { pipe } = file.target else { return None };
                let buffer = self.pipe_of(pipe)?;
                self.other_end_outside(pipe, file.flags).then_some(OutsideEnd {
                    fd: descriptor.fd,
                    writes: file.flags & libc::O_ACCMODE == libc::O_WRONLY,
                    inode: buffer.inode,
                    buffered: buffer.data.len(),
                })
            })
            .collect()
    }

    /// Whether the other end of pipe `pipe`, for a description of it with
    /// `flags`, is outside the process (no description of the table has it).
    pub fn other_end_outside(&self, pipe: u32, flags: i32) -> bool {
        let other = if flags & libc::O_ACCMODE == libc::O_WRONLY { libc::O_RDONLY } else { libc::O_WRONLY };
        !self.has_pipe_end(pipe, other)
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

    /// From /proc/PID/fd and fdinfo, and pipes reopened through /proc
    /// (nothing is injected).
    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        capture(context.tracee.pid())
    }

    /// Opened with the child's file-system credentials at that moment (the
    /// image owner's, for another user's image): before the credentials.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        Ok(restore(context.tracee, self, context.streams)?)
    }
}

/// What one description is, before the objects it shares are gathered.
enum Kind {
    Target(FdTarget),
    Pipe {
        inode: u64,
    },
    Socket {
        inode: u64,
    },
    /// Its registrations are read once the table is complete.
    Epoll,
    Fifo(fifo::Found),
    Object(unlinked::Found),
}

/// The inodes of the pipes with both a read and a write end among `entries`.
fn pipes_inside(entries: &[Entry]) -> Vec<u64> {
    let ends = |mode: i32| -> Vec<u64> {
        entries
            .iter()
            .filter(|entry| matches!(entry.access_mode(), access if access == mode || access == libc::O_RDWR))
            .filter_map(|entry| entry.bracketed_inode("pipe:"))
            .collect()
    };
    let writers = ends(libc::O_WRONLY);
    let mut inside: Vec<u64> = ends(libc::O_RDONLY).into_iter().filter(|inode| writers.contains(inode)).collect();
    inside.sort_unstable();
    inside.dedup();
    inside
}

/// What descriptor `entry` of `pid` refers to, or why crp cannot keep it.
fn classify(pid: i32, entry: &Entry, pipes_inside: &[u64]) -> Result<Kind, CompoundError> {
    let fd = entry.fd;
    let target = entry.link.as_str();
    let refuse = |what: &str| -> CompoundError {
        Unsupported { what: what.to_owned(), location: format!("fd {fd} -> {target}") }.into()
    };
    // An fd that does not fit in a u8 is simply not a standard stream.
    let standard_stream = u8::try_from(fd).ok().filter(|stream| *stream <= 2);
    if let Some(inode) = entry.bracketed_inode("pipe:") {
        return Ok(match standard_stream {
            Some(stream) if !pipes_inside.contains(&inode) => Kind::Target(FdTarget::Inherited { stream }),
            _ => Kind::Pipe { inode },
        });
    }
    if let Some(inode) = entry.bracketed_inode("socket:") {
        return Ok(Kind::Socket { inode });
    }
    if target == "anon_inode:[eventpoll]" {
        return Ok(Kind::Epoll);
    }
    if target == "anon_inode:inotify" {
        return Ok(Kind::Target(FdTarget::Inotify { watches: inotify::capture(pid, fd)? }));
    }
    if target.starts_with("anon_inode:") {
        return Ok(Kind::Target(FdTarget::Event(event::capture(pid, fd, target)?)));
    }
    if entry.flags & libc::O_PATH != 0 {
        // Whatever it names (a symlink with O_NOFOLLOW, a FIFO, a device),
        // an O_PATH descriptor is only a path: reopened with the same flags.
        if target.ends_with(" (deleted)") {
            let metadata = proc_fd::metadata(pid, fd)?;
            if metadata.is_dir() {
                return Ok(Kind::Object(unlinked::classify(pid, entry, &metadata)?));
            }
            return Err(refuse("an O_PATH descriptor of a deleted file"));
        }
        if !target.starts_with('/') {
            return Err(refuse("an O_PATH descriptor outside this mount namespace"));
        }
        return Ok(Kind::Target(FdTarget::File { path: target.to_owned(), identity: None }));
    }
    let metadata = proc_fd::metadata(pid, fd)?;
    let file_type = metadata.file_type();
    if file_type.is_fifo() {
        return match standard_stream {
            Some(stream) if !target.starts_with('/') => Ok(Kind::Target(FdTarget::Inherited { stream })),
            None if !target.starts_with('/') => Err(refuse("a FIFO outside this mount namespace")),
            _ => Ok(Kind::Fifo(fifo::classify(entry, &metadata))),
        };
    }
    if target.ends_with(" (deleted)") {
        return Ok(Kind::Object(unlinked::classify(pid, entry, &metadata)?));
    }
    if file_type.is_char_device() {
        let major = libc::major(metadata.rdev()) as u64;
        if path::TTY_MAJORS.contains(&major) {
            return match standard_stream {
                Some(stream) if !tty::is_own_pair(pid, entry, metadata.rdev())? => {
                    Ok(Kind::Target(FdTarget::Inherited { stream }))
                }
                _ => Ok(Kind::Target(tty::classify(pid, entry, metadata.rdev())?)),
            };
        }
        if major == path::MEM_DEVICE_MAJOR {
            return Ok(Kind::Target(FdTarget::CharDevice { path: target.to_owned() }));
        }
        return Err(refuse("a character device"));
    }
    if file_type.is_file() || file_type.is_dir() {
        if !target.starts_with('/') {
            return Err(refuse("a file outside this mount namespace"));
        }
        // A write-only descriptor (a log, an output file) reads nothing
        // of the file: what others write to it meanwhile changes nothing
        // for the process, so only readable ones are identified.
        let readable = entry.flags & libc::O_ACCMODE != libc::O_WRONLY;
        let identity = (file_type.is_file() && readable).then(|| FileIdentity::of(&metadata));
        return Ok(Kind::Target(FdTarget::File { path: target.to_owned(), identity }));
    }
    Err(refuse("this kind of descriptor"))
}

/// Every descriptor of `pid` crp cannot restore, each with why, touching
/// nothing; an error when the descriptors cannot be read.
pub fn preflight(pid: i32) -> Result<Vec<Unsupported>, CompoundError> {
    // The process still runs: a descriptor it closes meanwhile is skipped
    // (the capture, once it is frozen, reads them all again).
    let mut entries = Vec::new();
    for fd in proc_fd::open_fds(pid)? {
        match proc_fd::entry(pid, fd) {
            Ok(entry) => entries.push(entry),
            Err(CompoundError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(CompoundError::Proc(crp_ptrace::procfs::ProcError::Read { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(other) => return Err(other),
        }
    }
    let inside = pipes_inside(&entries);
    let sockets = Sockets::of(&entries)?;
    // Each descriptor as a description of its own: enough to find an
    // epoll's targets among them.
    let numbered = FdTable {
        descriptors: (0u32..)
            .zip(&entries)
            .map(|(file, entry)| Descriptor { fd: entry.fd, cloexec: false, file })
            .collect(),
        ..FdTable::default()
    };
    let mut blockers = Vec::new();
    for entry in &entries {
        match check_entry(pid, entry, &inside, &sockets, &numbered) {
            Ok(()) => {}
            Err(CompoundError::Unsupported(refusal)) => blockers.push(refusal),
            Err(other) => return Err(other),
        }
    }
    Ok(blockers)
}

/// Refuses descriptor `entry` when crp cannot restore it.
fn check_entry(
    pid: i32,
    entry: &Entry,
    inside: &[u64],
    sockets: &Sockets,
    numbered: &FdTable,
) -> Result<(), CompoundError> {
    match classify(pid, entry, inside)? {
        Kind::Epoll => drop(epoll::capture(pid, entry.fd, numbered)?),
        Kind::Socket { inode } if unix_pair::is_pair(inode, &sockets.diag, &sockets.inside) => {
            in_flight::check(pid, entry.fd, inode, sockets)?;
        }
        Kind::Socket { inode } => drop(socket::capture(pid, entry.fd, inode, &sockets.found(), socket::Depth::Check)?),
        Kind::Pipe { .. } | Kind::Fifo(_) => pipe::check_recreatable(pid, entry.fd, &entry.link)?,
        Kind::Object(found) => unlinked::check_capturable(pid, entry, found)?,
        Kind::Target(_) => {}
    }
    Ok(())
}

/// The unix sockets sock_diag knows (read only when the process holds a
/// socket), and the inodes of the sockets the process holds.
struct Sockets {
    diag: Vec<unix_diag::UnixSocket>,
    inside: Vec<u64>,
    descriptors: Vec<(i32, u64)>,
}

impl Sockets {
    fn of(entries: &[Entry]) -> Result<Self, CompoundError> {
        let descriptors: Vec<(i32, u64)> = entries
            .iter()
            .filter_map(|entry| entry.bracketed_inode("socket:").map(|inode| (entry.fd, inode)))
            .collect();
        let inside: Vec<u64> = descriptors.iter().map(|(_, inode)| *inode).collect();
        let diag = if inside.is_empty() { Vec::new() } else { unix_diag::unix_sockets()? };
        Ok(Self { diag, inside, descriptors })
    }

    fn found(&self) -> socket::Found<'_> {
        socket::Found { diag: &self.diag, inside: &self.inside, descriptors: &self.descriptors }
    }
}

/// Captures the descriptor table of a stopped process: descriptors that
/// share an open file description (dup, inherited across fork) share one
/// [`OpenFile`], as `kcmp(KCMP_FILE)` tells; the ends of one pipe share one
/// [`PipeBuffer`].
pub fn capture(pid: i32) -> Result<FdTable, CompoundError> {
    let entries = proc_fd::entries(pid)?;
    let inside = pipes_inside(&entries);
    let sockets = Sockets::of(&entries)?;
    let mut table = FdTable::default();
    // The first descriptor of each description so far, to compare only
    // likely pairs (same link text).
    let mut firsts: Vec<(usize, u32)> = Vec::new();
    let mut epolls: Vec<(u32, i32)> = Vec::new();
    let (mut fifos, mut objects) = (unlinked::Gathered::default(), unlinked::Gathered::default());
    let mut in_flight = Vec::new();
    for (position, entry) in entries.iter().enumerate() {
        let cloexec = entry.flags & libc::O_CLOEXEC != 0;
        let mut shared = None;
        for (first, file) in &firsts {
            let first = &entries[*first];
            if first.link == entry.link && proc_fd::same_description(pid, first.fd, entry.fd)? {
                shared = Some(*file);
                break;
            }
        }
        let file = match shared {
            Some(file) => file,
            None => {
                let target = match classify(pid, entry, &inside)? {
                    Kind::Target(target) => target,
                    Kind::Pipe { inode } => {
                        FdTarget::Pipe { pipe: pipe_index(pid, &entries, entry, inode, &mut table)? }
                    }
                    Kind::Socket { inode } if unix_pair::is_pair(inode, &sockets.diag, &sockets.inside) => {
                        socket_pair_end(pid, &entries, entry, inode, &sockets, &mut table, &mut in_flight)?
                    }
                    Kind::Socket { inode } => FdTarget::Socket(Box::new(socket::capture(
                        pid,
                        entry.fd,
                        inode,
                        &sockets.found(),
                        socket::Depth::Capture,
                    )?)),
                    Kind::Epoll => {
                        epolls.push((u32::try_from(table.files.len()).unwrap_or(u32::MAX), entry.fd));
                        FdTarget::Epoll { registrations: Vec::new() }
                    }
                    Kind::Fifo(found) => {
                        let pipe = fifo::pipe_index(pid, entry, &found, &mut table, &mut fifos)?;
                        FdTarget::Fifo { path: found.path, mode: found.mode, deleted: found.deleted, pipe }
                    }
                    Kind::Object(found) => FdTarget::Object {
                        object: unlinked::object_index(pid, entry, found, &mut table, &mut objects)?,
                    },
                };
                let file = u32::try_from(table.files.len()).unwrap_or(u32::MAX);
                // An O_PATH descriptor has no owner (fcntl refuses F_GETOWN_EX on it).
                let owner = if entry.flags & libc::O_PATH == 0 { owner::capture(pid, entry.fd)? } else { None };
                table.files.push(OpenFile {
                    flags: entry.flags & !libc::O_CLOEXEC,
                    offset: entry.offset,
                    target,
                    owner,
                });
                firsts.push((position, file));
                file
            }
        };
        table.descriptors.push(Descriptor { fd: entry.fd, cloexec, file });
    }
    let known = in_flight::Known { pid, entries: &entries, firsts: &firsts, sockets: &sockets };
    in_flight::capture_all(&known, in_flight, &mut table, &mut fifos, &mut objects)?;
    epoll::capture_all(pid, &mut table, &epolls)?;
    Ok(table)
}

/// The index of pipe `inode` in the table, capturing it through `entry`
/// the first time it is met. Only a pipe whose read end the process holds
/// keeps its bytes (see [`pipe`]), read through whichever end comes first.
fn pipe_index(
    pid: i32,
    entries: &[Entry],
    entry: &Entry,
    inode: u64,
    table: &mut FdTable,
) -> Result<u32, CompoundError> {
    if let Some(index) = table.pipes.iter().position(|pipe| pipe.inode == inode) {
        return Ok(u32::try_from(index).unwrap_or(u32::MAX));
    }
    let reads_here = entries.iter().any(|other| {
        other.bracketed_inode("pipe:") == Some(inode) && matches!(other.access_mode(), libc::O_RDONLY | libc::O_RDWR)
    });
    table.pipes.push(pipe::capture(pid, entry.fd, inode, reads_here)?);
    Ok(u32::try_from(table.pipes.len() - 1).unwrap_or(u32::MAX))
}

/// The end of a socket pair that socket `inode` (descriptor `entry`) is,
/// capturing the pair the first time one of its ends is met (and adding
/// the descriptors in flight in its queues to `in_flight`).
fn socket_pair_end(
    pid: i32,
    entries: &[Entry],
    entry: &Entry,
    inode: u64,
    sockets: &Sockets,
    table: &mut FdTable,
    in_flight: &mut Vec<(usize, unix_pair::InFlight)>,
) -> Result<FdTarget, CompoundError> {
    for (index, pair) in table.socket_pairs.iter().enumerate() {
        if let Some(end) = pair.ends.iter().position(|end| end.inode == inode) {
            let pair = u32::try_from(index).unwrap_or(u32::MAX);
            return Ok(FdTarget::UnixPair { pair, end: u8::try_from(end).unwrap_or(u8::MAX) });
        }
    }
    let vanished = |inode: u64| CompoundError::Malformed {
        path: "sock_diag".into(),
        reason: format!("socket:[{inode}] has no descriptor or record any more"),
    };
    let find = |inode: u64| sockets.diag.iter().find(|socket| socket.inode == inode);
    let socket = find(inode).ok_or_else(|| vanished(inode))?;
    let peer_inode = socket.peer.ok_or_else(|| vanished(inode))?;
    let peer = find(peer_inode).ok_or_else(|| vanished(peer_inode))?;
    let peer_fd = entries
        .iter()
        .find(|other| other.bracketed_inode("socket:") == Some(peer_inode))
        .map(|other| other.fd)
        .ok_or_else(|| vanished(peer_inode))?;
    let (pair, passed) = unix_pair::capture(pid, socket.kind, [(entry.fd, socket), (peer_fd, peer)])?;
    in_flight.extend(passed.into_iter().map(|flight| (table.socket_pairs.len(), flight)));
    table.socket_pairs.push(pair);
    Ok(FdTarget::UnixPair { pair: u32::try_from(table.socket_pairs.len() - 1).unwrap_or(u32::MAX), end: 0 })
}

/// `fs.nr_open`'s default: no descriptor number reaches it.
const NR_OPEN: i32 = 1 << 20;

/// Refuses a table the restore could not apply: descriptor numbers that
/// cannot exist or appear twice, descriptions or pipes nothing refers to or
/// that do not exist, streams other than 0-2, paths the kernel would
/// misread, offsets `lseek` refuses, pipes holding more than they can.
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
        let described =
            table.descriptors.iter().any(|descriptor| usize::try_from(descriptor.file).is_ok_and(|file| file == index));
        if !described && !in_flight(table)[index] {
            return Err(Invalid::new(field(), "is referred to by no descriptor and no queued message"));
        }
        if i64::try_from(file.offset).is_err() {
            return Err(Invalid::new(field(), format!("has offset {}, beyond what lseek takes", file.offset)));
        }
        if let Some(owner) = &file.owner {
            owner::check(&field, owner)?;
        }
        match &file.target {
            FdTarget::Inherited { stream } if *stream > 2 => {
                return Err(Invalid::new(field(), format!("inherits stream {stream}, not 0-2")));
            }
            FdTarget::Inherited { .. } => {}
            FdTarget::File { path, .. } | FdTarget::CharDevice { path } => check_path(field(), path)?,
            FdTarget::Event(event) => event::check(field, event)?,
            FdTarget::Pipe { pipe } => {
                if table.pipe_of(*pipe).is_none() {
                    return Err(Invalid::new(field(), format!("is an end of pipe {pipe}, of {}", table.pipes.len())));
                }
            }
            FdTarget::Fifo { path, pipe, .. } => {
                check_path(field(), path)?;
                if table.pipe_of(*pipe).is_none() {
                    return Err(Invalid::new(field(), format!("is FIFO buffer {pipe}, of {}", table.pipes.len())));
                }
            }
            FdTarget::Object { object } => {
                if usize::try_from(*object).ok().and_then(|object| table.objects.get(object)).is_none() {
                    return Err(Invalid::new(field(), format!("is of object {object}, of {}", table.objects.len())));
                }
            }
            FdTarget::Epoll { registrations } => epoll::check(table, index, registrations, &field)?,
            FdTarget::Socket(found) => socket::check(found, &field)?,
            FdTarget::Inotify { watches } => inotify::check(watches, &field)?,
            FdTarget::OwnTerminal { .. } | FdTarget::PtyMaster(_) | FdTarget::PtySlave { .. } => {
                tty::check(table, index, file, &field)?;
            }
            FdTarget::UnixPair { pair, end } => {
                if table.socket_pair_of(*pair).is_none() || *end > 1 {
                    return Err(Invalid::new(
                        field(),
                        format!("is end {end} of socket pair {pair}, of {}", table.socket_pairs.len()),
                    ));
                }
                let twice = table.files[..index].iter().any(|other| other.target == file.target);
                if twice {
                    return Err(Invalid::new(
                        field(),
                        format!("is a second description of end {end} of socket pair {pair}"),
                    ));
                }
            }
        }
    }
    for (index, pair) in table.socket_pairs.iter().enumerate() {
        let field = || format!("socket pair {index}");
        if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&pair.kind) {
            return Err(Invalid::new(field(), format!("has type {}, not a unix socket type", pair.kind)));
        }
        let referred = table.files.iter().any(|file| {
            matches!(file.target, FdTarget::UnixPair { pair, .. } if usize::try_from(pair).is_ok_and(|pair| pair == index))
        });
        if !referred {
            return Err(Invalid::new(field(), "is referred to by no open file"));
        }
        for end in &pair.ends {
            socket::options::check(&end.options, field)?;
        }
        for end in &pair.ends {
            check_passed(table, end, field)?;
        }
        if pair.kind != libc::SOCK_STREAM && pair.ends.iter().any(|end| end.queued.iter().any(Vec::is_empty)) {
            return Err(Invalid::new(field(), "holds an empty datagram"));
        }
    }
    for (index, buffer) in table.pipes.iter().enumerate() {
        let field = || format!("pipe {index}");
        let referred = table.files.iter().any(|file| {
            matches!(file.target, FdTarget::Pipe { pipe } | FdTarget::Fifo { pipe, .. }
                if usize::try_from(pipe).is_ok_and(|pipe| pipe == index))
        });
        if !referred {
            return Err(Invalid::new(field(), "is referred to by no open file"));
        }
        if !(4096..=1 << 31).contains(&buffer.size) || !buffer.size.is_power_of_two() {
            return Err(Invalid::new(field(), format!("has size {}, not a pipe size", buffer.size)));
        }
        if buffer.data.len() > buffer.size as usize {
            return Err(Invalid::new(
                field(),
                format!("holds {} bytes, more than its size {}", buffer.data.len(), buffer.size),
            ));
        }
    }
    for (index, object) in table.objects.iter().enumerate() {
        let field = format!("object {index}");
        let referred = table.files.iter().any(|file| {
            matches!(file.target, FdTarget::Object { object } if usize::try_from(object).is_ok_and(|object| object == index))
        });
        if !referred {
            return Err(Invalid::new(field, "is referred to by no open file"));
        }
        unlinked::check_object(&field, object)?;
    }
    Ok(())
}

/// Which descriptions of the table a queued message carries.
fn in_flight(table: &FdTable) -> Vec<bool> {
    let mut carried = vec![false; table.files.len()];
    for passed in table.socket_pairs.iter().flat_map(|pair| &pair.ends).flat_map(|end| &end.passed) {
        for file in &passed.files {
            if let Some(slot) = usize::try_from(*file).ok().and_then(|file| carried.get_mut(file)) {
                *slot = true;
            }
        }
    }
    carried
}

/// Refuses descriptors in flight the restore could not send: a message
/// that is not in the queue or named twice, none or too many descriptors,
/// descriptions that do not exist.
fn check_passed(table: &FdTable, end: &PairEnd, field: impl Fn() -> String) -> Result<(), Invalid> {
    for (index, passed) in end.passed.iter().enumerate() {
        if usize::try_from(passed.message).map_or(true, |message| message >= end.queued.len()) {
            return Err(Invalid::new(
                field(),
                format!("passes descriptors with message {}, of {}", passed.message, end.queued.len()),
            ));
        }
        if end.passed[..index].iter().any(|other| other.message == passed.message) {
            return Err(Invalid::new(field(), format!("passes descriptors with message {} twice", passed.message)));
        }
        if passed.files.is_empty() || passed.files.len() > unix_pair::MOST_PASSED {
            return Err(Invalid::new(field(), format!("passes {} descriptors in one message", passed.files.len())));
        }
        if let Some(file) =
            passed.files.iter().find(|file| usize::try_from(**file).map_or(true, |file| file >= table.files.len()))
        {
            return Err(Invalid::new(field(), format!("passes open file {file}, of {}", table.files.len())));
        }
    }
    Ok(())
}

/// Refuses a restore whose files are gone, before anything is created.
pub fn check_files_exist(table: &FdTable) -> Result<(), CompoundError> {
    for file in &table.files {
        match &file.target {
            // An O_PATH|O_NOFOLLOW descriptor names the symlink itself.
            FdTarget::File { path, .. } if file.flags & libc::O_NOFOLLOW != 0 => {
                std::fs::symlink_metadata(path).map_err(CompoundError::io("find file of fd", path))?;
            }
            FdTarget::File { path, .. } | FdTarget::CharDevice { path } => {
                std::fs::metadata(path).map_err(CompoundError::io("find file of fd", path))?;
            }
            FdTarget::Fifo { path, .. } => fifo::check_host(path)?,
            FdTarget::Inotify { watches } => inotify::check_paths_exist(watches)?,
            FdTarget::PtyMaster(_) => {
                std::fs::metadata("/dev/ptmx")
                    .map_err(CompoundError::io("find the pseudo-terminal multiplexer", "/dev/ptmx"))?;
            }
            FdTarget::Inherited { .. }
            | FdTarget::Pipe { .. }
            | FdTarget::Object { .. }
            | FdTarget::UnixPair { .. }
            | FdTarget::Epoll { .. }
            | FdTarget::Event(_)
            | FdTarget::OwnTerminal { .. }
            | FdTarget::PtySlave { .. } => {}
            FdTarget::Socket(found) => {
                let fd = table
                    .descriptors
                    .iter()
                    .find(|descriptor| table.file_of(descriptor).is_some_and(|other| std::ptr::eq(other, file)))
                    .map_or(-1, |descriptor| descriptor.fd);
                socket::check_host(table, fd, found)?;
            }
        }
    }
    for object in &table.objects {
        unlinked::check_host(object)?;
    }
    Ok(())
}

/// An injected syscall with its first arguments (the rest zero).
pub(super) fn call(
    tracee: &mut dyn Tracee,
    name: &'static str,
    number: i64,
    first: &[u64],
) -> Result<u64, EngineError> {
    let mut args = [0; 6];
    args[..first.len()].copy_from_slice(first);
    tracee.syscall(name, number, args)
}

/// Whether crp's own effective set has capability `capability`.
pub(super) fn has_capability(capability: u32) -> bool {
    crate::creds::own_status().is_ok_and(|own| own.cap_effective & (1 << capability) != 0)
}

/// Moves the tracee's descriptor `fd` to the lowest free number from
/// `above` up (where nothing the table places can be), closing `fd`.
pub(crate) fn move_above(tracee: &mut dyn Tracee, fd: u64, above: u64) -> Result<u64, EngineError> {
    let moved = call(tracee, "fcntl(F_DUPFD_CLOEXEC)", libc::SYS_fcntl, &[fd, arg(libc::F_DUPFD_CLOEXEC), above])?;
    call(tracee, "close", libc::SYS_close, &[fd])?;
    Ok(moved)
}

/// Sets the status flags of `flags` that `F_SETFL` sets, when there are
/// any, but O_ASYNC: its signals name the descriptor it was set through
/// (`si_fd`), so [`owner::restore`] sets it once the descriptors are in place.
pub(crate) fn set_status_flags(tracee: &mut dyn Tracee, fd: u64, flags: i32) -> Result<(), EngineError> {
    let settable = flags & SETFL_FLAGS & !libc::O_ASYNC;
    if settable != 0 {
        call(tracee, "fcntl(F_SETFL)", libc::SYS_fcntl, &[fd, arg(libc::F_SETFL), arg(settable)])?;
    }
    Ok(())
}

/// Replaces the descriptor table the child inherited from crp with the
/// checkpointed one. The descriptors that may be handed over are parked
/// above every target fd first and everything else is closed; each open
/// file description is then made once, at a temporary descriptor above the
/// targets (pipes both ends at once), and dup'ed to each of its descriptors;
/// the temporaries go last. The table must have passed [`check_table`].
pub fn restore(tracee: &mut dyn Tracee, table: &FdTable, streams: &Streams) -> Result<(), EngineError> {
    let sources = streams.sources();
    // Above every target fd and stream source; an empty table needs none of its own.
    let highest = table
        .descriptors
        .iter()
        .map(|descriptor| descriptor.fd)
        .chain(sources.iter().copied())
        .chain(epoll::highest_number(table))
        .max();
    let above = arg(highest.unwrap_or(2).max(2).saturating_add(1));
    let mut parked: Vec<(i32, u64)> = Vec::new();
    for source in sources {
        // A stream crp restore itself lacks is simply not handed over; a
        // descriptor that needs it fails below, naming it.
        if let Ok(at) = call(tracee, "fcntl(F_DUPFD)", libc::SYS_fcntl, &[arg(source), arg(libc::F_DUPFD), above]) {
            parked.push((source, at));
        }
    }
    // Close everything else crp's child still holds.
    let mut keep: Vec<u64> = parked.iter().map(|(_, at)| *at).collect();
    keep.sort_unstable();
    let mut next = 0u64;
    for kept in keep.iter().copied().chain([u64::from(u32::MAX) + 1]) {
        if kept > next {
            call(tracee, "close_range", libc::SYS_close_range, &[next, kept - 1, 0])?;
        }
        next = kept + 1;
    }
    let parked_source = |tracee: &dyn Tracee, source: i32, fd: i32| {
        parked.iter().find(|(parked, _)| *parked == source).map(|(_, at)| *at).ok_or(EngineError::Syscall {
            syscall: "dup3 (crp restore has no such descriptor to hand over)",
            args: vec![arg(source), arg(fd)],
            pid: tracee.pid(),
            errno: nix::errno::Errno::EBADF,
        })
    };
    // Each description, made where nothing placed below can clobber it.
    let mut made_pipes: Vec<Option<pipe::MadePipe>> = (0..table.pipes.len()).map(|_| None).collect();
    let mut made_pairs: Vec<Option<[u64; 2]>> = vec![None; table.socket_pairs.len()];
    let mut placed: Vec<Option<u64>> = vec![None; table.files.len()];
    let (mut made_fifos, mut made_objects) = (fifo::Made::new(table), unlinked::Made::new(table));
    let mut made_ptys = tty::Made::default();
    let mut made_sockets = Vec::new();
    let carried = in_flight(table);
    for (index, file) in table.files.iter().enumerate() {
        let wanted = carried[index]
            || table.descriptors.iter().any(|descriptor| {
                usize::try_from(descriptor.file).is_ok_and(|file| file == index)
                    && streams.chosen_for(descriptor.fd).is_none()
            });
        if !wanted {
            continue; // every descriptor of it was replaced by the user's choice
        }
        placed[index] = Some(match &file.target {
            FdTarget::Inherited { stream } => {
                let fd = table.descriptors.iter().find(|descriptor| descriptor.file as usize == index);
                parked_source(tracee, streams.source_of_stream(*stream), fd.map_or(-1, |descriptor| descriptor.fd))?
            }
            FdTarget::File { path, .. } | FdTarget::CharDevice { path } => path::open(tracee, path, file, above)?,
            FdTarget::Pipe { pipe } => {
                let pipe_index = *pipe as usize;
                let (Some(buffer), Some(slot)) = (table.pipes.get(pipe_index), made_pipes.get_mut(pipe_index)) else {
                    continue; // refused by check_table
                };
                if slot.is_none() {
                    *slot = Some(pipe::make(tracee, buffer, above)?);
                }
                let Some(made) = slot.as_mut() else { continue };
                pipe::end_for(tracee, made, file.flags, above)?
            }
            FdTarget::UnixPair { pair, end } => {
                let pair_index = *pair as usize;
                let (Some(socket_pair), Some(slot)) =
                    (table.socket_pairs.get(pair_index), made_pairs.get_mut(pair_index))
                else {
                    continue; // refused by check_table
                };
                if slot.is_none() {
                    *slot = Some(unix_pair::make(tracee, socket_pair, above)?);
                }
                let Some(fd) = slot.and_then(|ends| ends.get(usize::from(*end)).copied()) else { continue };
                set_status_flags(tracee, fd, file.flags)?;
                fd
            }
            FdTarget::Epoll { .. } => epoll::make(tracee, file, above)?,
            FdTarget::Socket(found) => socket::make(tracee, found, file.flags, above, &mut made_sockets)?,
            FdTarget::Inotify { watches } => inotify::make(tracee, watches, file, above)?,
            FdTarget::Event(event) => event::make(tracee, event, file.flags, above)?,
            FdTarget::Fifo { path, mode, pipe, .. } => {
                let fifo = (path.as_str(), *mode, *pipe);
                let Some(at) = fifo::description(tracee, table, fifo, file, &mut made_fifos, above)? else { continue };
                at
            }
            FdTarget::Object { object } => {
                let Some(at) = unlinked::description(tracee, table, *object, file, &mut made_objects, above)? else {
                    continue;
                };
                at
            }
            FdTarget::OwnTerminal { .. } => tty::own_terminal(tracee, file, above)?,
            FdTarget::PtyMaster(PtyMaster { number, .. }) | FdTarget::PtySlave { number } => {
                let Some(at) = tty::description(tracee, table, *number, file, &mut made_ptys, above)? else {
                    continue;
                };
                at
            }
        });
    }
    tty::finish(tracee, &made_ptys)?;
    // The messages carrying descriptors, once every description is made.
    for (pair, made) in table.socket_pairs.iter().zip(&made_pairs) {
        if let Some(fds) = made.filter(|_| unix_pair::has_passed(pair)) {
            unix_pair::send_passed(tracee, pair, fds, &placed)?;
        }
    }
    for descriptor in &table.descriptors {
        let fd = arg(descriptor.fd);
        let cloexec = if descriptor.cloexec { arg(libc::O_CLOEXEC) } else { 0 };
        let from = match streams.chosen_for(descriptor.fd) {
            // A descriptor the user chose replaces what the image recorded.
            Some(source) => parked_source(tracee, source, descriptor.fd)?,
            None => match placed.get(descriptor.file as usize).copied().flatten() {
                Some(at) => at,
                None => continue, // refused by check_table
            },
        };
        call(tracee, "dup3", libc::SYS_dup3, &[from, fd, cloexec])?;
    }
    // A descriptor the user chose that the process had closed is given to it all the same.
    for handed in &streams.chosen {
        if !table.descriptors.iter().any(|descriptor| descriptor.fd == handed.fd) {
            let from = parked_source(tracee, handed.source, handed.fd)?;
            call(tracee, "dup3", libc::SYS_dup3, &[from, arg(handed.fd), 0])?;
        }
    }
    // Registrations once every description and descriptor is in place.
    let final_file = |fd: i32| {
        let descriptor = table.descriptors.iter().find(|descriptor| descriptor.fd == fd)?;
        streams.chosen_for(fd).is_none().then_some(descriptor.file)
    };
    epoll::register(tracee, table, &placed, &final_file, above)?;
    socket::finish(tracee, &made_sockets)?;
    // Every temporary and parked descriptor is at `above` or higher.
    call(tracee, "close_range", libc::SYS_close_range, &[above, u64::from(u32::MAX), 0])?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

    /// Held by the tests that open, close or list crp's own descriptors:
    /// a listing fails on a descriptor closed in between.
    pub(crate) static OWN_DESCRIPTORS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn descriptors_sharing_a_description_are_opened_once_and_dup_ed() {
        let table = FdTable {
            files: vec![OpenFile {
                flags: 0o2,
                offset: 5,
                target: FdTarget::File { path: "/srv/log".into(), identity: None },
                owner: None,
            }],
            descriptors: vec![
                Descriptor { fd: 3, cloexec: false, file: 0 },
                Descriptor { fd: 7, cloexec: true, file: 0 },
            ],
            pipes: vec![],
            socket_pairs: vec![],
            objects: vec![],
        };
        check_table(&table).unwrap();
        // openat gives 3, moved to 9 (F_DUPFD_CLOEXEC from 8).
        let mut restored = FakeTracee::answering(|call, _| match call.number {
            libc::SYS_openat => 3,
            libc::SYS_fcntl => 9,
            _ => 0,
        });
        table.restore(&mut Restore::new(&mut restored)).unwrap();
        assert_eq!(restored.calls_of(libc::SYS_openat).len(), 1, "one open for one description");
        assert_eq!(restored.calls_of(libc::SYS_lseek).len(), 1, "one offset for one description");
        let dups: Vec<[u64; 3]> =
            restored.calls_of(libc::SYS_dup3).iter().map(|call| [call.args[0], call.args[1], call.args[2]]).collect();
        assert_eq!(dups, [[9, 3, 0], [9, 7, libc::O_CLOEXEC as u64]]);
        let last = restored.calls.last().unwrap();
        assert_eq!((last.number, last.args[0]), (libc::SYS_close_range, 8), "temporaries closed last");
        let unshared = FdTable { descriptors: vec![], ..table };
        assert!(check_table(&unshared).unwrap_err().to_string().contains("referred to by no descriptor"));
    }

    #[test]
    fn streams_are_handed_over_and_files_reopened_at_their_offset() {
        let table = FdTable::from(vec![
            FdRecord { fd: 1, flags: 0o1, offset: 0, target: FdTarget::Inherited { stream: 1 } },
            FdRecord {
                fd: 3,
                flags: 0o2,
                offset: 77,
                target: FdTarget::File { path: "/srv/data".into(), identity: None },
            },
        ]);
        // fcntl(F_DUPFD) parks 0, 1, 2 and the chosen 9 at 10, 11, 12, 13;
        // openat gives 4, moved to 14.
        let mut next = 9;
        let mut restored = FakeTracee::answering(move |call, _| match call.number {
            libc::SYS_fcntl => {
                next += 1;
                next
            }
            libc::SYS_openat => 4,
            _ => 0,
        });
        let streams = Streams { chosen: vec![Handed { fd: 1, source: 9 }] };
        let mut context = Restore::new(&mut restored);
        context.streams = &streams;
        table.restore(&mut context).unwrap();
        let parked: Vec<u64> = restored
            .calls_of(libc::SYS_fcntl)
            .iter()
            .filter(|call| call.args[1] == libc::F_DUPFD as u64)
            .map(|call| call.args[0])
            .collect();
        assert_eq!(parked, [0, 1, 2, 9]);
        let dups: Vec<[u64; 2]> =
            restored.calls_of(libc::SYS_dup3).iter().map(|call| [call.args[0], call.args[1]]).collect();
        assert_eq!(dups, [[13, 1], [14, 3]], "the chosen fd 9 becomes stdout, the file moves to fd 3");
        let seek = restored.calls_of(libc::SYS_lseek)[0];
        assert_eq!((seek.args[0], seek.args[1]), (4, 77));
    }

    #[test]
    fn both_ends_of_a_pipe_are_one_pipe_and_a_lone_end_is_outside() {
        let table = FdTable {
            files: vec![
                OpenFile { flags: libc::O_RDONLY, offset: 0, target: FdTarget::Pipe { pipe: 0 }, owner: None },
                OpenFile { flags: libc::O_WRONLY, offset: 0, target: FdTarget::Pipe { pipe: 0 }, owner: None },
                OpenFile { flags: libc::O_WRONLY, offset: 0, target: FdTarget::Pipe { pipe: 1 }, owner: None },
            ],
            descriptors: vec![
                Descriptor { fd: 3, cloexec: false, file: 0 },
                Descriptor { fd: 4, cloexec: false, file: 1 },
                Descriptor { fd: 251, cloexec: false, file: 2 },
            ],
            pipes: vec![
                PipeBuffer { inode: 10, size: pipe::DEFAULT_PIPE_SIZE, data: vec![] },
                PipeBuffer { inode: 11, size: pipe::DEFAULT_PIPE_SIZE, data: vec![] },
            ],
            socket_pairs: vec![],
            objects: vec![],
        };
        check_table(&table).unwrap();
        assert_eq!(table.outside_ends(), [OutsideEnd { fd: 251, writes: true, inode: 11, buffered: 0 }]);
        let mut restored = FakeTracee::default();
        table.restore(&mut Restore::new(&mut restored)).unwrap();
        assert_eq!(restored.calls_of(libc::SYS_pipe2).len(), 2, "one pipe each");
        let mut full = table.clone();
        full.pipes[0].data = vec![0; 70_000];
        assert!(check_table(&full).unwrap_err().to_string().contains("more than its size"));
        let mut orphan = table;
        orphan.pipes.push(PipeBuffer { inode: 12, size: 4096, data: vec![] });
        assert!(check_table(&orphan).unwrap_err().to_string().contains("pipe 2 is referred to by no open file"));
    }

    #[test]
    fn descriptors_in_flight_must_name_a_queued_message_and_a_description() {
        let end = |inode: u64, queued: Vec<Vec<u8>>, passed: Vec<Passed>| PairEnd {
            inode,
            queued,
            shutdown: 0,
            pass_credentials: false,
            send_buffer: 212_992,
            receive_buffer: 212_992,
            options: vec![],
            name: None,
            passed,
        };
        let pair_end = |end: u8| OpenFile {
            flags: libc::O_RDWR,
            offset: 0,
            target: FdTarget::UnixPair { pair: 0, end },
            owner: None,
        };
        let in_flight = OpenFile {
            flags: 0,
            offset: 4,
            target: FdTarget::File { path: "/srv/a".into(), identity: None },
            owner: None,
        };
        let table = FdTable {
            files: vec![pair_end(0), pair_end(1), in_flight],
            descriptors: vec![
                Descriptor { fd: 3, cloexec: false, file: 0 },
                Descriptor { fd: 4, cloexec: false, file: 1 },
            ],
            pipes: vec![],
            socket_pairs: vec![SocketPair {
                kind: libc::SOCK_STREAM,
                ends: [
                    end(1, vec![], vec![]),
                    end(2, vec![b"x".to_vec()], vec![Passed { message: 0, files: vec![2] }]),
                ],
            }],
            objects: vec![],
        };
        check_table(&table).unwrap();
        let refused = |change: &dyn Fn(&mut FdTable)| {
            let mut changed = table.clone();
            change(&mut changed);
            check_table(&changed).unwrap_err().to_string()
        };
        assert!(
            refused(&|table| table.socket_pairs[0].ends[1].passed[0].files = vec![2, 7]).contains("passes open file 7")
        );
        assert!(
            refused(&|table| table.socket_pairs[0].ends[1].passed[0].message = 3)
                .contains("passes descriptors with message 3")
        );
        assert!(
            refused(&|table| {
                table.descriptors.push(Descriptor { fd: 5, cloexec: false, file: 2 });
                table.socket_pairs[0].ends[1].passed[0].files.clear();
            })
            .contains("passes 0 descriptors")
        );
        assert!(
            refused(&|table| table.socket_pairs[0].ends[1].passed.clear())
                .contains("referred to by no descriptor and no queued message")
        );
    }

    #[test]
    fn own_descriptors_classify_and_capture() {
        let _own = OWN_DESCRIPTORS.lock();
        use std::os::fd::AsRawFd;
        let pid = std::process::id() as i32;
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        // Only this test's own descriptors: other tests open and close theirs meanwhile.
        let fds = [file.as_raw_fd(), null.as_raw_fd(), socket.as_raw_fd(), reader.as_raw_fd(), writer.as_raw_fd()];
        let entries: Vec<Entry> = fds.iter().map(|fd| proc_fd::entry(pid, *fd).unwrap()).collect();
        let inside = pipes_inside(&entries);
        let kind = |fd: i32| classify(pid, entries.iter().find(|entry| entry.fd == fd).unwrap(), &inside);
        assert!(matches!(kind(file.as_raw_fd()).unwrap(), Kind::Target(FdTarget::File { .. })));
        assert!(matches!(kind(null.as_raw_fd()).unwrap(), Kind::Target(FdTarget::CharDevice { .. })));
        assert!(matches!(kind(socket.as_raw_fd()).unwrap(), Kind::Socket { .. }));
        assert!(matches!(kind(reader.as_raw_fd()).unwrap(), Kind::Pipe { .. }));
        assert!(matches!(kind(writer.as_raw_fd()).unwrap(), Kind::Pipe { .. }));
    }
}
