//! Descriptors in flight: the open files that queued messages of a socket
//! pair carry (SCM_RIGHTS). The dump's peek installed duplicates of them in
//! crp; each becomes a description of the table: the process's own when it
//! also holds that open file (`kcmp` across crp and the process), else a
//! description no descriptor refers to, captured through crp's duplicate as
//! any descriptor of the process is. Kinds that cannot be captured that way
//! are refused, naming them and the socket whose queue holds them.

use std::os::fd::{AsRawFd, OwnedFd};

use super::proc_fd::{self, Entry};
use super::unix_pair::{InFlight, Passed};
use super::{FdTable, FdTarget, Kind, OpenFile, Sockets, classify, fifo, owner, pipe, unlinked};
use crate::error::{CompoundError, Unsupported};

/// `kcmp(KCMP_FILE)` between descriptor `first` of `pid` and `second` of
/// `other`.
fn same_file(pid: i32, first: i32, other: i32, second: i32) -> Result<bool, CompoundError> {
    const KCMP_FILE: libc::c_int = 0;
    // SAFETY: kcmp only compares kernel objects of the given tasks; it reads
    // and writes no memory of crp's.
    let result = unsafe { libc::syscall(libc::SYS_kcmp, pid, other, KCMP_FILE, first, second) };
    if result < 0 {
        return Err(CompoundError::Ptrace { operation: "kcmp(KCMP_FILE)", pid, errno: nix::errno::Errno::last() });
    }
    Ok(result == 0)
}

/// What the process's descriptions and the sockets are, for the capture.
pub(super) struct Known<'a> {
    pub pid: i32,
    pub entries: &'a [Entry],
    /// The first entry of each description, and its index in the table.
    pub firsts: &'a [(usize, u32)],
    pub sockets: &'a Sockets,
}

/// Captures the descriptors in flight of `pending` (each with the index of
/// its pair in the table) into `table`, recording in each pair end which
/// descriptions its messages carry.
pub(super) fn capture_all(
    known: &Known<'_>,
    pending: Vec<(usize, InFlight)>,
    table: &mut FdTable,
    fifos: &mut unlinked::Gathered,
    objects: &mut unlinked::Gathered,
) -> Result<(), CompoundError> {
    let own = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    // The descriptions only in flight so far: a duplicate of each and its index.
    let mut captured: Vec<(OwnedFd, String, u32)> = Vec::new();
    for (pair, flight) in pending {
        let mut files = Vec::new();
        for fd in flight.fds {
            let raw = fd.as_raw_fd();
            let entry = proc_fd::entry(own, raw)?;
            let mut index = None;
            for (first, file) in known.firsts {
                let first = &known.entries[*first];
                if first.link == entry.link && same_file(known.pid, first.fd, own, raw)? {
                    index = Some(*file);
                    break;
                }
            }
            if index.is_none() {
                for (other, link, file) in &captured {
                    if *link == entry.link && same_file(own, other.as_raw_fd(), own, raw)? {
                        index = Some(*file);
                        break;
                    }
                }
            }
            let index = match index {
                Some(index) => index,
                None => {
                    let target = capture_one(known, own, &entry, table, fifos, objects)
                        .map_err(|error| in_flight_refusal(error, &flight.location))?;
                    let owner = owner::capture(own, raw)?;
                    let index = u32::try_from(table.files.len()).unwrap_or(u32::MAX);
                    table.files.push(OpenFile {
                        flags: entry.flags & !libc::O_CLOEXEC,
                        offset: entry.offset,
                        target,
                        owner,
                    });
                    captured.push((fd, entry.link.clone(), index));
                    index
                }
            };
            files.push(index);
        }
        if let Some(end) = table.socket_pairs.get_mut(pair).and_then(|pair| pair.ends.get_mut(flight.end)) {
            end.passed.push(Passed { message: flight.message, files });
        }
    }
    Ok(())
}

/// A refusal of a descriptor in flight names the socket whose queue holds it.
fn in_flight_refusal(error: CompoundError, location: &str) -> CompoundError {
    match error {
        CompoundError::Unsupported(refusal) => Unsupported {
            what: format!("{}, in flight (SCM_RIGHTS) in the queue of this socket", refusal.what),
            location: location.to_owned(),
        }
        .into(),
        other => other,
    }
}

/// How a passed epoll is refused (it cannot be captured from crp's side).
const EPOLL_IN_FLIGHT: &str = "an epoll instance";

/// `crp dump --check`: refuses, named as the dump names them, the
/// descriptors in flight in the queue of pair end `fd` (socket `inode`)
/// that the dump would refuse. Only the first message is seen (a peek that
/// changes nothing: the process runs); those behind it are the dump's to
/// see, once the process is frozen (logged).
pub(super) fn check(pid: i32, fd: i32, inode: u64, sockets: &Sockets) -> Result<(), CompoundError> {
    let (passed, unseen) = super::unix_pair::first_in_flight(pid, fd)?;
    let location = format!("fd {fd} -> socket:[{inode}]");
    let own = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    for passed in &passed {
        let entry = proc_fd::entry(own, passed.as_raw_fd())?;
        check_one(own, &entry, sockets).map_err(|error| in_flight_refusal(error, &location))?;
    }
    if unseen > 0 {
        tracing::info!(
            pid,
            fd,
            unseen,
            "descriptors in flight behind the first message: the dump checks them once the process is frozen"
        );
    }
    Ok(())
}

/// What [`capture_one`] would refuse of crp's duplicate `entry`, touching nothing.
fn check_one(own: i32, entry: &Entry, sockets: &Sockets) -> Result<(), CompoundError> {
    let refuse =
        |what: String| -> CompoundError { Unsupported { what, location: format!("{} passed", entry.link) }.into() };
    match classify(own, entry, &[])? {
        Kind::Target(_) => {}
        Kind::Pipe { .. } | Kind::Fifo(_) => pipe::check_recreatable(own, entry.fd, &entry.link)?,
        Kind::Socket { inode } => {
            if let Some(what) = super::socket::in_flight_refusal(own, entry.fd, inode, &sockets.found()) {
                return Err(refuse(what));
            }
            drop(super::socket::capture(own, entry.fd, inode, &sockets.found(), super::socket::Depth::Check)?);
        }
        Kind::Epoll => return Err(refuse(EPOLL_IN_FLIGHT.to_owned())),
        Kind::Object(found) => unlinked::check_capturable(own, entry, found)?,
    }
    Ok(())
}

/// The description of crp's duplicate `entry` of a descriptor in flight.
fn capture_one(
    known: &Known<'_>,
    own: i32,
    entry: &Entry,
    table: &mut FdTable,
    fifos: &mut unlinked::Gathered,
    objects: &mut unlinked::Gathered,
) -> Result<FdTarget, CompoundError> {
    let refuse =
        |what: String| -> CompoundError { Unsupported { what, location: format!("{} passed", entry.link) }.into() };
    Ok(match classify(own, entry, &[])? {
        Kind::Target(target) => target,
        Kind::Pipe { inode } => {
            let reads = matches!(entry.access_mode(), libc::O_RDONLY | libc::O_RDWR);
            match table.pipes.iter().position(|pipe| pipe.inode == inode) {
                Some(index) => {
                    // Captured through a write end: its bytes are kept now.
                    if reads && table.pipes[index].data.is_empty() {
                        table.pipes[index] = pipe::capture(own, entry.fd, inode, true)?;
                    }
                    FdTarget::Pipe { pipe: u32::try_from(index).unwrap_or(u32::MAX) }
                }
                None => {
                    table.pipes.push(pipe::capture(own, entry.fd, inode, reads)?);
                    FdTarget::Pipe { pipe: u32::try_from(table.pipes.len() - 1).unwrap_or(u32::MAX) }
                }
            }
        }
        Kind::Socket { inode } => {
            if let Some(what) = super::socket::in_flight_refusal(own, entry.fd, inode, &known.sockets.found()) {
                return Err(refuse(what));
            }
            FdTarget::Socket(Box::new(super::socket::capture(
                own,
                entry.fd,
                inode,
                &known.sockets.found(),
                super::socket::Depth::Capture,
            )?))
        }
        Kind::Epoll => return Err(refuse(EPOLL_IN_FLIGHT.to_owned())),
        Kind::Fifo(found) => {
            let pipe = fifo::pipe_index(own, entry, &found, table, fifos)?;
            FdTarget::Fifo { path: found.path, mode: found.mode, deleted: found.deleted, pipe }
        }
        Kind::Object(found) => FdTarget::Object { object: unlinked::object_index(own, entry, found, table, objects)? },
    })
}
