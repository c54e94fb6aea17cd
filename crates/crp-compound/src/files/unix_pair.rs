//! Unix socket pairs whose both ends are in the process (socketpair(2): the
//! wake-up channel of asyncio and many event loops): their type, each end's
//! queued messages (read at the dump with `MSG_PEEK`, left in place), its
//! shutdown state, SO_PASSCRED and buffer sizes. At the restore an injected
//! socketpair makes the pair again; crp then sets each end's options and
//! sends each end's queue from the other end, through duplicates of the
//! new ends (`pidfd_getfd`). Descriptors in flight (SCM_RIGHTS) are kept:
//! the peek installs duplicates of them in crp, whose open files become
//! descriptions of the table that no descriptor may refer to
//! ([`PairEnd::passed`]); the restore sends their messages again with them,
//! once every description is made. Credentials in a queue (SCM_CREDENTIALS,
//! SCM_SECURITY) cannot be sent again as they were: refused.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};
use nix::errno::Errno;

use super::unix_diag::UnixSocket;
use crate::error::{CompoundError, Unsupported};

const RCV_SHUTDOWN: u8 = 1;
const SEND_SHUTDOWN: u8 = 2;
/// The largest message crp reads back from a queue.
const LARGEST_MESSAGE: usize = 4 << 20;
/// The size of an int socket option.
const INT_LENGTH: libc::socklen_t = 4;

/// One end of a pair.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PairEnd {
    /// The socket's inode at the dump (`socket:[INODE]`).
    pub inode: u64,
    /// What waits for this end to read, oldest first: one entry per
    /// datagram or packet; a stream's bytes in one or more pieces.
    pub queued: Vec<Vec<u8>>,
    /// RCV_SHUTDOWN (1) and SEND_SHUTDOWN (2), as the kernel keeps them.
    pub shutdown: u8,
    pub pass_credentials: bool,
    /// SO_SNDBUF and SO_RCVBUF as getsockopt reports them (twice what was set).
    pub send_buffer: u32,
    pub receive_buffer: u32,
    /// The other options that differ from a fresh socket's (SO_RCVTIMEO,
    /// SO_PASSSEC, SO_PEEK_OFF...).
    pub options: Vec<super::socket::SocketOption>,
    /// The name this end had: an end accepted from a listening socket
    /// bears the listener's. Not given back: the pair is made again with
    /// socketpair(2), whose ends have none (the dump warns).
    pub name: Option<super::socket::Address>,
    /// The messages of `queued` that carry descriptors (SCM_RIGHTS), in
    /// queue order.
    pub passed: Vec<Passed>,
}

/// The descriptors one queued message carries.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Passed {
    /// Its index in [`PairEnd::queued`].
    pub message: u32,
    /// The open files passed, in order: indices in
    /// [`super::FdTable::files`] (a description the process also holds, or
    /// one only in flight).
    pub files: Vec<u32>,
}

/// The most descriptors one message carries (the kernel's SCM_MAX_FD).
pub const MOST_PASSED: usize = 253;

/// The descriptors a peek installed in crp for message `message` of end
/// `end`: captured once the process's own descriptions are known.
pub(super) struct InFlight {
    pub end: usize,
    pub message: u32,
    pub fds: Vec<OwnedFd>,
    /// `fd N -> socket:[INODE]` of the end whose queue holds them.
    pub location: String,
}

/// A socket pair both of whose ends the process holds.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SocketPair {
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    pub kind: i32,
    pub ends: [PairEnd; 2],
}

/// Whether socket `inode` is one end of a pair wholly inside the process:
/// connected to a socket the process holds (`inside` holds the inodes of
/// every socket it holds) that is connected back. Datagram ends must be
/// unnamed (named ones are connected again by name, see
/// [`super::socket`]); stream and seqpacket ends may be named (a
/// connection accepted from a listening socket of the process).
pub(super) fn is_pair(inode: u64, sockets: &[UnixSocket], inside: &[u64]) -> bool {
    let Some(socket) = sockets.iter().find(|socket| socket.inode == inode) else { return false };
    let unnamed_or_stream = |socket: &UnixSocket| socket.name.is_none() || i32::from(socket.kind) != libc::SOCK_DGRAM;
    let Some(peer) = socket.peer.filter(|peer| unnamed_or_stream(socket) && inside.contains(peer)) else {
        return false;
    };
    sockets.iter().any(|other| other.inode == peer && unnamed_or_stream(other) && other.peer == Some(inode))
}

fn int_option(socket: &OwnedFd, option: libc::c_int) -> Result<libc::c_int, Errno> {
    let mut value: libc::c_int = 0;
    let mut length = INT_LENGTH;
    // SAFETY: value and length are valid for the int getsockopt writes.
    let result = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, option, (&raw mut value).cast(), &raw mut length)
    };
    if result < 0 { Err(Errno::last()) } else { Ok(value) }
}

fn set_int_option(socket: &OwnedFd, option: libc::c_int, value: libc::c_int) -> Result<(), Errno> {
    // SAFETY: the value is a valid int for the length given.
    let result = unsafe {
        libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, option, (&raw const value).cast(), INT_LENGTH)
    };
    if result < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Captures a pair through descriptors `fds` of `pid`, one per end, whose
/// sock_diag records are `sockets`.
/// Also gives the descriptors in flight in its queues, duplicated in crp.
pub(super) fn capture(
    pid: i32,
    kind: u8,
    ends: [(i32, &UnixSocket); 2],
) -> Result<(SocketPair, Vec<InFlight>), CompoundError> {
    let mut in_flight = Vec::new();
    let mut capture_end = |index: usize, (fd, socket): (i32, &UnixSocket)| -> Result<PairEnd, CompoundError> {
        let location = format!("fd {fd} -> socket:[{}]", socket.inode);
        let failed = |operation: &'static str| move |errno| CompoundError::Ptrace { operation, pid, errno };
        let duplicate = crp_ptrace::sys::duplicate_descriptor(pid, fd).map_err(failed("pidfd_getfd"))?;
        let pass_credentials = int_option(&duplicate, libc::SO_PASSCRED).map_err(failed("getsockopt(SO_PASSCRED)"))?;
        let mut queued = Vec::new();
        for (message, (bytes, fds)) in
            (0u32..).zip(queued_messages(&duplicate, i32::from(kind), socket.shutdown, &location)?)
        {
            queued.push(bytes);
            if !fds.is_empty() {
                in_flight.push(InFlight { end: index, message, fds, location: location.clone() });
            }
        }
        if pass_credentials != 0 && !queued.is_empty() {
            return Err(Unsupported {
                what: "a socket with SO_PASSCRED and messages waiting (their senders' credentials cannot be sent \
                       again)"
                    .to_owned(),
                location,
            }
            .into());
        }
        let buffer = |option| int_option(&duplicate, option).map(|size| size.cast_unsigned());
        let fresh = super::socket::options::Kind { family: libc::AF_UNIX, kind: i32::from(kind), protocol: 0 }
            .fresh()
            .map_err(failed("socket (a fresh one to compare options with)"))?;
        let mut options = super::socket::options::capture(
            duplicate.as_fd(),
            fresh.as_fd(),
            super::socket::options::Kind { family: libc::AF_UNIX, kind: i32::from(kind), protocol: 0 },
        );
        // Kept in fields of their own.
        options.retain(|option| {
            option.level != libc::SOL_SOCKET
                || ![libc::SO_SNDBUF, libc::SO_RCVBUF, libc::SO_PASSCRED].contains(&option.name)
        });
        Ok(PairEnd {
            inode: socket.inode,
            queued,
            shutdown: socket.shutdown,
            pass_credentials: pass_credentials != 0,
            send_buffer: buffer(libc::SO_SNDBUF).map_err(failed("getsockopt(SO_SNDBUF)"))?,
            receive_buffer: buffer(libc::SO_RCVBUF).map_err(failed("getsockopt(SO_RCVBUF)"))?,
            options,
            name: socket.name.as_deref().and_then(super::socket::Address::unix),
            passed: Vec::new(),
        })
    };
    let ends = [capture_end(0, ends[0])?, capture_end(1, ends[1])?];
    Ok((SocketPair { kind: i32::from(kind), ends }, in_flight))
}

/// One message read back, with the descriptors it carries (duplicates in crp).
type Message = (Vec<u8>, Vec<OwnedFd>);

/// The messages waiting on `socket`, peeked one after another with
/// SO_PEEK_OFF (set to 0 for the walk and put back after), so nothing is
/// taken from the queue.
fn queued_messages(socket: &OwnedFd, kind: i32, shutdown: u8, location: &str) -> Result<Vec<Message>, CompoundError> {
    let failed = |operation: &'static str| {
        move |errno: Errno| CompoundError::Io { action: operation, path: location.into(), source: errno.into() }
    };
    let original = int_option(socket, libc::SO_PEEK_OFF).map_err(failed("read SO_PEEK_OFF of"))?;
    // An empty queue is seen without touching SO_PEEK_OFF (a crp killed
    // during a walk would leave it changed).
    if original < 0 && nothing_waits(socket.as_fd()) {
        return Ok(Vec::new());
    }
    let guard = super::socket::watchdog::guard(socket.as_fd(), super::socket::watchdog::Restore::PeekOffset(original));
    set_int_option(socket, libc::SO_PEEK_OFF, 0).map_err(failed("set SO_PEEK_OFF of"))?;
    guard.changed();
    let walked = walk_queue(socket, kind, shutdown, location);
    let put_back = set_int_option(socket, libc::SO_PEEK_OFF, original).map_err(failed("put back SO_PEEK_OFF of"));
    drop(guard);
    let messages = walked?;
    put_back?;
    Ok(messages)
}

/// The descriptors in flight in the first message of the queue of `fd` of
/// `pid` (on a stream, in the first piece one peek reads), duplicated in
/// crp, and how many more are in flight (fdinfo's `scm_fds`) than that
/// peek saw. The peek changes nothing (`crp dump --check` reads a running
/// process): none is made while the socket has a peek offset set, which a
/// peek would move, and none when fdinfo says nothing is in flight.
pub(super) fn first_in_flight(pid: i32, fd: i32) -> Result<(Vec<OwnedFd>, usize), CompoundError> {
    let failed = |operation: &'static str| move |errno| CompoundError::Ptrace { operation, pid, errno };
    let in_flight = crp_ptrace::procfs::Fields::read(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|fdinfo| fdinfo.optional("scm_fds").and_then(|count| count.trim().parse::<usize>().ok()));
    if in_flight == Some(0) {
        return Ok((Vec::new(), 0));
    }
    let duplicate = crp_ptrace::sys::duplicate_descriptor(pid, fd).map_err(failed("pidfd_getfd"))?;
    if int_option(&duplicate, libc::SO_PEEK_OFF).map_err(failed("getsockopt(SO_PEEK_OFF)"))? >= 0 {
        return Ok((Vec::new(), in_flight.unwrap_or(0)));
    }
    let mut buffer = vec![0u8; LARGEST_MESSAGE];
    let fds = peek(&duplicate, &mut buffer).map_err(failed("peek at the queue"))?.map(|peeked| peeked.fds);
    let fds = fds.unwrap_or_default();
    let unseen = in_flight.unwrap_or(0).saturating_sub(fds.len());
    Ok((fds, unseen))
}

/// What one peek gave: the bytes read, the descriptors that came with them
/// and the message flags.
struct Peeked {
    length: usize,
    fds: Vec<OwnedFd>,
    flags: libc::c_int,
    /// Credentials or a security label came too.
    credentials: bool,
}

/// Peeks from byte `offset` of the queue (SO_PEEK_OFF set to it) into
/// `buffer`; None when nothing waits there. The descriptors that come are
/// close-on-exec duplicates in crp, closed when dropped.
fn peek_at(socket: &OwnedFd, offset: usize, buffer: &mut [u8]) -> Result<Option<Peeked>, Errno> {
    let offset = libc::c_int::try_from(offset).map_err(|_| Errno::EOVERFLOW)?;
    set_int_option(socket, libc::SO_PEEK_OFF, offset)?;
    peek(socket, buffer)
}

/// Peeks where the socket's peek offset says (from the start when it is
/// off, -1: then nothing of the socket changes).
fn peek(socket: &OwnedFd, buffer: &mut [u8]) -> Result<Option<Peeked>, Errno> {
    // Room for SCM_MAX_FD descriptors and credentials, aligned for cmsghdr.
    let mut control = [0u64; 256];
    let mut vector = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
    // SAFETY: an all-zero msghdr is valid (no name, no vectors, no control).
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &raw mut vector;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = std::mem::size_of_val(&control);
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    // SAFETY: the header points to the buffer and the control area, both
    // valid and writable for the lengths it gives.
    let received = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut header, flags) };
    if received < 0 {
        return match Errno::last() {
            Errno::EAGAIN => Ok(None),
            errno => Err(errno),
        };
    }
    let (fds, credentials) = passed_descriptors(&header);
    Ok(Some(Peeked { length: usize::try_from(received).unwrap_or(0), fds, flags: header.msg_flags, credentials }))
}

fn walk_queue(socket: &OwnedFd, kind: i32, shutdown: u8, location: &str) -> Result<Vec<Message>, CompoundError> {
    let refuse =
        |what: &str| -> CompoundError { Unsupported { what: what.to_owned(), location: location.to_owned() }.into() };
    let failed = |errno: Errno| CompoundError::Io {
        action: "peek at the queue of",
        path: location.into(),
        source: errno.into(),
    };
    let mut messages: Vec<Message> = Vec::new();
    let mut buffer = vec![0u8; LARGEST_MESSAGE];
    let mut offset = 0usize;
    loop {
        let Some(peeked) = peek_at(socket, offset, &mut buffer).map_err(failed)? else { return Ok(messages) };
        if peeked.credentials {
            return Err(refuse(
                "a socket with credentials (SCM_CREDENTIALS) or a security label (SCM_SECURITY) in flight in its \
                 queue, which cannot be sent again as they were",
            ));
        }
        if peeked.flags & libc::MSG_CTRUNC != 0 {
            return Err(refuse("a socket with a message carrying more descriptors than crp can read back"));
        }
        if peeked.flags & libc::MSG_TRUNC != 0 {
            return Err(refuse("a socket with a message of more than 4 MiB waiting"));
        }
        let length = peeked.length;
        if length == 0 {
            if kind == libc::SOCK_STREAM || shutdown & RCV_SHUTDOWN != 0 {
                return Ok(messages); // the end: nothing more will come
            }
            return Err(refuse("a socket with an empty datagram waiting (it cannot be told apart from the end)"));
        }
        // A stream peek reads on into the first message that carries
        // descriptors and stops after it; where that message begins cannot
        // be told (a peek that reads any part of a message goes on, zero
        // bytes at a time, through the messages after it up to one with
        // descriptors: `unix_stream_read_generic`). So the descriptors are
        // sent again with the whole piece, as CRIU does: a read that ends
        // before the message that carried them may get them now.
        if kind == libc::SOCK_STREAM && !peeked.fds.is_empty() && length == buffer.len() {
            return Err(refuse("a stream socket with descriptors in flight behind more than 4 MiB"));
        }
        messages.push((buffer[..length].to_vec(), peeked.fds));
        offset += length;
    }
}

/// Whether a peek from the start of the queue (SO_PEEK_OFF off) finds
/// nothing waiting; the socket is left as it was.
pub(super) fn nothing_waits(socket: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut byte = [0u8; 1];
    let mut control = [0u64; 256];
    let mut vector = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: an all-zero msghdr is valid (no name, no vectors, no control).
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &raw mut vector;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = std::mem::size_of_val(&control);
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    // SAFETY: the header points to the byte and the control area, both
    // valid and writable for the lengths it gives.
    let received = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut header, flags) };
    if received >= 0 {
        drop(passed_descriptors(&header));
    }
    received < 0 && Errno::last() == Errno::EAGAIN
}

/// Closes the descriptors a peek with SCM_RIGHTS installed in crp.
pub(super) fn close_passed_descriptors(header: &libc::msghdr) {
    drop(passed_descriptors(header));
}

/// The descriptors a peek with SCM_RIGHTS installed in crp, and whether
/// anything else (credentials, a security label) came with them.
fn passed_descriptors(header: &libc::msghdr) -> (Vec<OwnedFd>, bool) {
    let mut fds = Vec::new();
    let mut other = false;
    // SAFETY: the header's control area was filled by recvmsg; the CMSG
    // macros walk only within msg_controllen.
    unsafe {
        let mut message = libc::CMSG_FIRSTHDR(header);
        while !message.is_null() {
            if (*message).cmsg_level == libc::SOL_SOCKET && (*message).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(message).cast::<libc::c_int>();
                let count =
                    ((*message).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<libc::c_int>();
                for index in 0..count {
                    // SAFETY: the kernel installed this descriptor in crp for this peek; nothing else owns it.
                    fds.push(OwnedFd::from_raw_fd(data.add(index).read_unaligned()));
                }
            } else {
                other = true;
            }
            message = libc::CMSG_NXTHDR(header, message);
        }
    }
    (fds, other)
}

/// Makes the pair in the tracee at descriptors from `above` up, with each
/// end's options, queue and shutdown state: `[first end, second end]`.
pub(super) fn make(tracee: &mut dyn Tracee, pair: &SocketPair, above: u64) -> Result<[u64; 2], EngineError> {
    let mut scratch = tracee.scratch();
    let ends_address = scratch.reserve(8);
    scratch.commit(tracee)?;
    let kind = arg(pair.kind | libc::SOCK_CLOEXEC);
    tracee.syscall("socketpair", libc::SYS_socketpair, [arg(libc::AF_UNIX), kind, 0, ends_address, 0, 0])?;
    let mut ends = [0u8; 8];
    tracee.read_memory(ends_address, &mut ends)?;
    let [a0, a1, a2, a3, b0, b1, b2, b3] = ends;
    let first = super::move_above(tracee, u64::from(u32::from_ne_bytes([a0, a1, a2, a3])), above)?;
    let second = super::move_above(tracee, u64::from(u32::from_ne_bytes([b0, b1, b2, b3])), above)?;
    let fds = [first, second];
    let duplicates = [tracee.duplicate_descriptor(first)?, tracee.duplicate_descriptor(second)?];
    let pid = tracee.pid();
    let failed = |operation: &'static str, fd: u64| move |errno| EngineError::Descriptor { operation, pid, fd, errno };
    for (index, end) in pair.ends.iter().enumerate() {
        let (socket, fd) = (&duplicates[index], fds[index]);
        for (option, forced, wanted) in [
            (libc::SO_SNDBUF, libc::SO_SNDBUFFORCE, end.send_buffer),
            (libc::SO_RCVBUF, libc::SO_RCVBUFFORCE, end.receive_buffer),
        ] {
            if int_option(socket, option).map_err(failed("read a buffer size of", fd))?.cast_unsigned() != wanted {
                // The kernel doubles what is set, and reported the double.
                let half = libc::c_int::try_from(wanted / 2).unwrap_or(libc::c_int::MAX);
                set_int_option(socket, forced, half).map_err(failed("set a buffer size of", fd))?;
            }
        }
    }
    let deferred = has_passed(pair);
    if !deferred {
        send_queues(pair, &duplicates, fds, pid, &[])?;
    }
    for (index, end) in pair.ends.iter().enumerate() {
        let (socket, fd) = (&duplicates[index], fds[index]);
        super::socket::options::apply(socket.as_fd(), &end.options)
            .map_err(|(_, errno)| failed("set a socket option of", fd)(errno))?;
        if end.pass_credentials {
            set_int_option(socket, libc::SO_PASSCRED, 1).map_err(failed("set SO_PASSCRED of", fd))?;
        }
    }
    if !deferred {
        shut_down(pair, &duplicates, fds, pid)?;
    }
    Ok(fds)
}

/// Whether a queue of `pair` carries descriptors: its queues and shutdowns
/// then wait for [`send_passed`], once every description is made.
pub(super) fn has_passed(pair: &SocketPair) -> bool {
    pair.ends.iter().any(|end| !end.passed.is_empty())
}

/// Sends the queues of `pair`, made at `fds` by [`make`], with the
/// descriptors they carry (from `placed`, where each description of the
/// table was made), then shuts its ends down.
pub(super) fn send_passed(
    tracee: &mut dyn Tracee,
    pair: &SocketPair,
    fds: [u64; 2],
    placed: &[Option<u64>],
) -> Result<(), EngineError> {
    let duplicates = [tracee.duplicate_descriptor(fds[0])?, tracee.duplicate_descriptor(fds[1])?];
    let mut carried: Vec<Vec<Vec<OwnedFd>>> = Vec::new();
    for end in &pair.ends {
        let mut messages = Vec::new();
        for passed in &end.passed {
            let mut duplicated = Vec::new();
            for file in &passed.files {
                let at = placed.get(*file as usize).copied().flatten().ok_or(EngineError::Descriptor {
                    operation: "find the description a queued message carries",
                    pid: tracee.pid(),
                    fd: u64::from(*file),
                    errno: Errno::EBADF,
                })?;
                duplicated.push(tracee.duplicate_descriptor(at)?);
            }
            messages.push(duplicated);
        }
        carried.push(messages);
    }
    send_queues(pair, &duplicates, fds, tracee.pid(), &carried)?;
    shut_down(pair, &duplicates, fds, tracee.pid())
}

/// Sends each end's queue from the other end (with the descriptors of
/// `carried`, per end in [`PairEnd::passed`] order).
fn send_queues(
    pair: &SocketPair,
    duplicates: &[OwnedFd; 2],
    fds: [u64; 2],
    pid: i32,
    carried: &[Vec<Vec<OwnedFd>>],
) -> Result<(), EngineError> {
    let failed = |operation: &'static str, fd: u64| move |errno| EngineError::Descriptor { operation, pid, fd, errno };
    for (index, end) in pair.ends.iter().enumerate() {
        // What waits for this end was sent by the other.
        let (sender, fd) = (&duplicates[1 - index], fds[1 - index]);
        for (message, bytes) in (0u32..).zip(&end.queued) {
            let rights = end
                .passed
                .iter()
                .position(|passed| passed.message == message)
                .and_then(|position| carried.get(index)?.get(position));
            send_message(sender, bytes, rights.map_or(&[][..], Vec::as_slice))
                .map_err(failed("queue a message again through", fd))?;
        }
    }
    Ok(())
}

/// Shuts the ends of `pair` down as they were.
fn shut_down(pair: &SocketPair, duplicates: &[OwnedFd; 2], fds: [u64; 2], pid: i32) -> Result<(), EngineError> {
    let failed = |operation: &'static str, fd: u64| move |errno| EngineError::Descriptor { operation, pid, fd, errno };
    for (index, end) in pair.ends.iter().enumerate() {
        let (socket, fd) = (&duplicates[index], fds[index]);
        let how = match end.shutdown & (RCV_SHUTDOWN | SEND_SHUTDOWN) {
            0 => continue,
            RCV_SHUTDOWN => libc::SHUT_RD,
            SEND_SHUTDOWN => libc::SHUT_WR,
            _ => libc::SHUT_RDWR,
        };
        // SAFETY: shutdown takes a descriptor and a constant.
        if unsafe { libc::shutdown(socket.as_raw_fd(), how) } < 0 {
            return Err(failed("shut down", fd)(Errno::last()));
        }
    }
    Ok(())
}

/// Sends `bytes` through `sender` in one message, with `rights` as SCM_RIGHTS.
fn send_message(sender: &OwnedFd, bytes: &[u8], rights: &[OwnedFd]) -> Result<(), Errno> {
    let mut control = [0u64; 256];
    let mut vector = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
    // SAFETY: an all-zero msghdr is valid (no name, no vectors, no control).
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &raw mut vector;
    header.msg_iovlen = 1;
    if !rights.is_empty() {
        let size = std::mem::size_of_val(rights);
        let size = u32::try_from(size).map_err(|_| Errno::E2BIG)?;
        // SAFETY: CMSG_SPACE and CMSG_LEN only compute lengths.
        let (space, length) = unsafe { (libc::CMSG_SPACE(size) as usize, libc::CMSG_LEN(size) as usize) };
        if space > std::mem::size_of_val(&control) {
            return Err(Errno::E2BIG);
        }
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = space;
        // SAFETY: the control area holds `space` bytes, room for one
        // header and its descriptors; CMSG_FIRSTHDR points into it.
        unsafe {
            let message = libc::CMSG_FIRSTHDR(&raw const header);
            (*message).cmsg_level = libc::SOL_SOCKET;
            (*message).cmsg_type = libc::SCM_RIGHTS;
            (*message).cmsg_len = length;
            let data = libc::CMSG_DATA(message).cast::<libc::c_int>();
            for (index, right) in rights.iter().enumerate() {
                data.add(index).write_unaligned(right.as_raw_fd());
            }
        }
    }
    // SAFETY: the header points to the bytes and the control area, valid
    // for the lengths it gives; sendmsg only reads them.
    let sent = unsafe { libc::sendmsg(sender.as_raw_fd(), &raw const header, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(Errno::last());
    }
    if usize::try_from(sent).ok() != Some(bytes.len()) {
        return Err(Errno::EAGAIN);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixDatagram, UnixStream};

    fn diag_of(stream: &impl AsRawFd) -> UnixSocket {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", stream.as_raw_fd())).unwrap().ino();
        super::super::unix_diag::unix_sockets().unwrap().into_iter().find(|socket| socket.inode == inode).unwrap()
    }

    #[test]
    fn queued_datagrams_are_read_one_by_one_and_left_in_place() {
        let (first, second) = UnixDatagram::pair().unwrap();
        first.send(b"one").unwrap();
        first.send(b"two two").unwrap();
        let pid = std::process::id() as i32;
        let (a, b) = (diag_of(&first), diag_of(&second));
        let (pair, _) = capture(pid, a.kind, [(first.as_raw_fd(), &a), (second.as_raw_fd(), &b)]).unwrap();
        assert_eq!(pair.ends[1].queued, [b"one".to_vec(), b"two two".to_vec()]);
        assert!(pair.ends[0].queued.is_empty());
        let mut buffer = [0u8; 16];
        assert_eq!(second.recv(&mut buffer).unwrap(), 3, "still queued, in order");
        assert_eq!(second.recv(&mut buffer).unwrap(), 7);
    }

    #[test]
    fn a_stream_s_bytes_and_shutdown_are_captured_and_descriptors_in_flight_refused() {
        let (mut first, second) = UnixStream::pair().unwrap();
        first.write_all(b"hello ").unwrap();
        first.write_all(b"world").unwrap();
        first.shutdown(std::net::Shutdown::Write).unwrap();
        let pid = std::process::id() as i32;
        let (a, b) = (diag_of(&first), diag_of(&second));
        let (pair, _) = capture(pid, a.kind, [(first.as_raw_fd(), &a), (second.as_raw_fd(), &b)]).unwrap();
        assert_eq!(pair.ends[1].queued.concat(), b"hello world");
        assert_eq!((pair.ends[0].shutdown, pair.ends[1].shutdown), (SEND_SHUTDOWN, RCV_SHUTDOWN));
        let mut text = String::new();
        (&second).read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello world");
    }

    #[test]
    fn descriptors_in_flight_on_a_stream_come_with_the_bytes_before_them_and_are_left_in_place() {
        let _own = super::super::tests::OWN_DESCRIPTORS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (first, second) = UnixStream::pair().unwrap();
        let passed = std::fs::File::open("/dev/null").unwrap();
        let sender = OwnedFd::from(first.try_clone().unwrap());
        send_message(&sender, b"ab", &[]).unwrap();
        send_message(&sender, b"cd", &[OwnedFd::from(passed)]).unwrap();
        send_message(&sender, b"ef", &[]).unwrap();
        let pid = std::process::id() as i32;
        let (a, b) = (diag_of(&first), diag_of(&second));
        let (pair, in_flight) = capture(pid, a.kind, [(first.as_raw_fd(), &a), (second.as_raw_fd(), &b)]).unwrap();
        assert_eq!(pair.ends[1].queued, [b"abcd".to_vec(), b"ef".to_vec()]);
        assert_eq!(in_flight.len(), 1);
        assert_eq!((in_flight[0].end, in_flight[0].message, in_flight[0].fds.len()), (1, 0, 1));
        let target = std::fs::read_link(format!("/proc/self/fd/{}", in_flight[0].fds[0].as_raw_fd())).unwrap();
        assert_eq!(target, std::path::Path::new("/dev/null"));
        drop(in_flight);
        let receiver = OwnedFd::from(second.try_clone().unwrap());
        let peeked = peek_at(&receiver, 0, &mut [0u8; 16]).unwrap().unwrap();
        assert_eq!((peeked.length, peeked.fds.len()), (4, 1), "still queued, with its descriptor");
    }
}
