//! Sockets other than the unix socket pairs of [`super::unix_pair`]: unix
//! sockets (stream, datagram, seqpacket; unnamed, bound to a path or an
//! abstract name, listening, a datagram socket connected to a named peer,
//! a stream connected to a peer outside the process), TCP sockets that are
//! listening or not connected, established TCP connections both of whose
//! ends the process holds ([`tcp`]), and UDP sockets, over IPv4 and IPv6.
//!
//! At the dump crp reads each socket from outside: a duplicate of it
//! (`pidfd_getfd`) answers getsockname, getpeername, getsockopt and
//! `MSG_PEEK`; sock_diag tells a unix socket's peer, backlog and bound
//! file; `TCP_INFO` a TCP socket's state and backlog. At the restore an
//! injected socket(2) makes it in the process (its network namespace and
//! owner); crp sets its options, binds it, listens and queues its
//! datagrams again through a duplicate, and connects it once every socket
//! of the process exists (a datagram peer may be one of them).
//!
//! Not kept, and said: connections waiting in a listening socket's backlog
//! (their clients see the connection reset when the original is killed), the
//! name of a unix datagram's named sender. Refused: TCP connections to a
//! peer outside the process, netlink, packet, raw, SCTP, vsock and other
//! families, socket filters, and a unix stream connected outside the
//! process unless the user hands over a replacement (`crp restore --fd
//! N=...`).

pub mod address;
mod check;
mod inet_diag;
pub mod multicast;
pub mod options;
pub mod queue;
pub mod tcp;
mod unix;
pub(crate) mod watchdog;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};
use nix::errno::Errno;

pub use address::Address;
pub(crate) use check::{check, check_host};
pub use check::{check_outside_peers, warnings};
pub use options::SocketOption;
pub use queue::Datagram;
pub use tcp::{Repaired, TcpConnection};
pub use watchdog::{Held, hold, set_checkpoint};

use super::unix_diag::UnixSocket;
use crate::error::{CompoundError, Unsupported};

const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;
const RCV_SHUTDOWN: u8 = 1;
const SEND_SHUTDOWN: u8 = 2;
/// getsockopt(SO_GET_FILTER) answers with the length of a classic filter.
const SO_GET_FILTER: i32 = libc::SO_ATTACH_FILTER;

/// One socket, as its open file description holds it.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SocketFile {
    /// Its inode at the dump (`socket:[INODE]`).
    pub inode: u64,
    /// AF_UNIX, AF_INET or AF_INET6.
    pub family: i32,
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    pub kind: i32,
    /// IPPROTO_TCP or IPPROTO_UDP (0 for unix).
    pub protocol: i32,
    /// Where it is bound, when it is.
    pub local: Option<Address>,
    /// For a unix socket bound to a path: the file bind made.
    pub bound_file: Option<BoundFile>,
    pub peer: Peer,
    /// For a listening socket: its backlog.
    pub backlog: Option<u32>,
    /// Connections waiting in the backlog at the dump: not restored.
    pub lost_connections: u32,
    /// RCV_SHUTDOWN (1) and SEND_SHUTDOWN (2).
    pub shutdown: u8,
    /// The options that differ from a fresh socket's.
    pub options: Vec<SocketOption>,
    /// Datagrams waiting on a datagram socket, oldest first.
    pub queued: Vec<Datagram>,
    /// For an established TCP connection (its peer is [`Peer::Address`]).
    pub connection: Option<TcpConnection>,
    /// The multicast groups a UDP socket joined.
    pub memberships: Vec<multicast::Membership>,
}

/// The file a unix socket bound to a path made.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BoundFile {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The path still led to the socket at the dump (else it had been
    /// removed, and is removed again after the restore binds).
    pub present: bool,
}

/// What a socket is connected to.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Peer {
    None,
    /// Connected again at the restore: a UDP peer, or the name of a unix
    /// datagram socket's peer.
    Address(Address),
    /// A unix stream or seqpacket connection to socket `inode` outside the
    /// process (bound to `name`): restored only as the descriptor the user
    /// hands over.
    Outside {
        inode: u64,
        name: Option<Address>,
    },
}

impl SocketFile {
    /// "unix stream", "TCP", "UDP over IPv6"...
    pub fn kind_name(&self) -> String {
        let version = if self.family == libc::AF_INET6 { "6" } else { "" };
        match (self.family, self.kind) {
            (libc::AF_UNIX, libc::SOCK_STREAM) => "unix stream".to_owned(),
            (libc::AF_UNIX, libc::SOCK_DGRAM) => "unix datagram".to_owned(),
            (libc::AF_UNIX, _) => "unix seqpacket".to_owned(),
            (_, libc::SOCK_STREAM) => format!("TCP{version}"),
            _ => format!("UDP{version}"),
        }
    }

    fn options_kind(&self) -> options::Kind {
        options::Kind { family: self.family, kind: self.kind, protocol: self.protocol }
    }
}

fn int_option(socket: BorrowedFd<'_>, level: i32, name: i32) -> Result<i32, Errno> {
    let mut value: i32 = 0;
    let mut length = 4 as libc::socklen_t;
    // SAFETY: value and length are valid for the int getsockopt writes.
    let result = unsafe { libc::getsockopt(socket.as_raw_fd(), level, name, (&raw mut value).cast(), &raw mut length) };
    if result < 0 { Err(Errno::last()) } else { Ok(value) }
}

/// getsockname or getpeername of `socket`.
fn name_of(socket: BorrowedFd<'_>, peer: bool) -> Option<Address> {
    let mut raw = address::Raw::empty();
    // SAFETY: the storage and its length are valid and writable.
    let result = unsafe {
        if peer {
            libc::getpeername(socket.as_raw_fd(), raw.as_mut_ptr(), &raw mut raw.length)
        } else {
            libc::getsockname(socket.as_raw_fd(), raw.as_mut_ptr(), &raw mut raw.length)
        }
    };
    if result < 0 { None } else { Address::from_raw(&raw) }
}

/// `(state, connections waiting, backlog)` of a TCP socket (`TCP_INFO`:
/// for a listener the kernel reports the waiting connections as
/// `tcpi_unacked` and the backlog as `tcpi_sacked`).
fn tcp_state(socket: BorrowedFd<'_>) -> Result<(u8, u32, u32), Errno> {
    let mut info = [0u8; 104];
    let mut length = address::socklen(info.len());
    // SAFETY: the buffer and its length are valid and writable.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &raw mut length,
        )
    };
    if result < 0 {
        return Err(Errno::last());
    }
    let u32_at = |at: usize| u32::from_ne_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]]);
    Ok((info[0], u32_at(24), u32_at(28)))
}

/// The shutdown bits of an unbound inet socket, as poll shows them:
/// POLLRDHUP for a read shutdown; POLLHUP for both on a datagram socket
/// (a TCP socket that is not connected always shows POLLHUP). A write
/// shutdown alone shows nowhere: README says so.
fn shutdown_by_poll(socket: BorrowedFd<'_>, kind: i32) -> u8 {
    let mut poller = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd; a zero timeout does not block.
    if unsafe { libc::poll(&raw mut poller, 1, 0) } < 1 {
        return 0;
    }
    let mut bits = 0;
    if poller.revents & libc::POLLRDHUP != 0 {
        bits |= RCV_SHUTDOWN;
    }
    if kind == libc::SOCK_DGRAM && poller.revents & libc::POLLHUP != 0 {
        bits |= RCV_SHUTDOWN | SEND_SHUTDOWN;
    }
    bits
}

/// The unix sockets sock_diag knows and the inodes of the process's sockets.
pub(super) struct Found<'a> {
    pub diag: &'a [UnixSocket],
    pub inside: &'a [u64],
    /// Each socket descriptor of the process with its inode.
    pub descriptors: &'a [(i32, u64)],
}

/// How far to look: a preflight (the process still runs) only classifies;
/// a capture (frozen) reads options and queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Depth {
    Check,
    Capture,
}

/// Socket `inode`, descriptor `fd` of `pid`: captured, or refused naming what.
pub(super) fn capture(
    pid: i32,
    fd: i32,
    inode: u64,
    found: &Found<'_>,
    depth: Depth,
) -> Result<SocketFile, CompoundError> {
    let location = format!("fd {fd} -> socket:[{inode}]");
    let refuse = |what: String| -> CompoundError { Unsupported { what, location: location.clone() }.into() };
    let failed = |operation: &'static str| move |errno| CompoundError::Ptrace { operation, pid, errno };
    let socket = crp_ptrace::sys::duplicate_descriptor(pid, fd).map_err(failed("pidfd_getfd"))?;
    let socket = socket.as_fd();
    let option = |name| int_option(socket, libc::SOL_SOCKET, name);
    let family = option(libc::SO_DOMAIN).map_err(failed("getsockopt(SO_DOMAIN)"))?;
    let kind = option(libc::SO_TYPE).map_err(failed("getsockopt(SO_TYPE)"))?;
    let protocol = option(libc::SO_PROTOCOL).map_err(failed("getsockopt(SO_PROTOCOL)"))?;
    let described = describe(family, kind, protocol);
    let supported = matches!(
        (family, kind, protocol),
        (libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET, _)
            | (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP)
            | (libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP)
    );
    if !supported {
        return Err(refuse(format!("{described} (crp keeps unix, TCP and UDP sockets only)")));
    }
    let mut filter_length: libc::socklen_t = 0;
    // SAFETY: a zero length asks only for the filter's length; nothing is written.
    let filtered = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_GET_FILTER,
            std::ptr::null_mut(),
            &raw mut filter_length,
        )
    };
    if filtered == 0 && filter_length > 0 {
        return Err(refuse(format!("{described} with a socket filter (SO_ATTACH_FILTER)")));
    }
    // An eBPF filter (SO_ATTACH_BPF) cannot be read back.
    if filtered < 0 && Errno::last() == Errno::EACCES {
        return Err(refuse(format!("{described} with an eBPF socket filter (SO_ATTACH_BPF)")));
    }
    let mut file = SocketFile {
        inode,
        family,
        kind,
        protocol: if family == libc::AF_UNIX { 0 } else { protocol },
        local: None,
        bound_file: None,
        peer: Peer::None,
        backlog: None,
        lost_connections: 0,
        shutdown: 0,
        options: Vec::new(),
        queued: Vec::new(),
        connection: None,
        memberships: Vec::new(),
    };
    if family == libc::AF_UNIX {
        unix::unix_endpoints(&mut file, found, &refuse)?;
    } else {
        file.local = name_of(socket, false);
        file.shutdown = match inet_diag::shutdown_of(family, protocol, inode)? {
            Some(bits) => bits & (RCV_SHUTDOWN | SEND_SHUTDOWN),
            // Unbound sockets are in no table sock_diag walks: their poll
            // mask tells a read shutdown (and both, for a datagram one).
            None => shutdown_by_poll(socket, kind),
        };
        if kind == libc::SOCK_STREAM {
            let (state, waiting, backlog) = tcp_state(socket).map_err(failed("getsockopt(TCP_INFO)"))?;
            match state {
                TCP_LISTEN => {
                    file.backlog = Some(backlog);
                    file.lost_connections = waiting;
                }
                TCP_CLOSE => {}
                TCP_ESTABLISHED => {
                    let peer = name_of(socket, true);
                    let (Some(local), Some(peer)) = (file.local.clone(), peer) else {
                        return Err(refuse(format!("{described} established without addresses")));
                    };
                    let inside = found.descriptors.iter().filter(|(_, other)| *other != inode).any(|(other, _)| {
                        crp_ptrace::sys::duplicate_descriptor(pid, *other)
                            .is_ok_and(|other| tcp::is_other_end(other.as_fd(), &local, &peer))
                    });
                    if !inside && !tcp::outside_peers_allowed() {
                        return Err(refuse(format!(
                            "{described} with an established connection to {peer}, outside the process (crp dump \
                             {} keeps it if the peer will still be there at the restore)",
                            tcp::OUTSIDE_OPTION
                        )));
                    }
                    file.peer = Peer::Address(peer);
                    if depth == Depth::Capture {
                        let repaired = crp_ptrace::sys::duplicate_descriptor(pid, fd).map_err(failed("pidfd_getfd"))?;
                        let connection = tcp::capture(repaired, !inside).map_err(|(action, errno)| {
                            CompoundError::Io { action, path: location.clone().into(), source: errno.into() }
                        })?;
                        file.connection = Some(connection);
                    }
                }
                _ => return Err(refuse(format!("{described} in TCP state {state} (connecting or closing)"))),
            }
        } else if let Some(peer) = name_of(socket, true) {
            file.peer = Peer::Address(peer);
        }
    }
    if depth == Depth::Capture {
        let fresh = file.options_kind().fresh().map_err(failed("socket (a fresh one to compare options with)"))?;
        file.options = options::capture(socket, fresh.as_fd(), file.options_kind());
        if file.connection.is_some() {
            // What the connection negotiated, not what the process set:
            // TCP_REPAIR_OPTIONS puts the MSS back.
            file.options.retain(|option| {
                option.level != libc::IPPROTO_TCP || ![libc::TCP_MAXSEG, libc::TCP_WINDOW_CLAMP].contains(&option.name)
            });
        }
        if family != libc::AF_UNIX && kind == libc::SOCK_DGRAM {
            file.memberships = multicast::capture(pid, socket, family).map_err(refuse)?;
        }
        let outside = matches!(file.peer, Peer::Outside { .. });
        if kind == libc::SOCK_DGRAM && !outside {
            file.queued = queue::capture(socket).map_err(|error| match error {
                queue::QueueError::Refused(what) => refuse(what.to_owned()),
                queue::QueueError::Failed(action, errno) => {
                    CompoundError::Io { action, path: location.clone().into(), source: errno.into() }
                }
            })?;
        }
    }
    Ok(file)
}

/// Why socket `inode`, crp's own descriptor `fd` (a descriptor in flight),
/// cannot be captured as a description of its own: a unix socket connected
/// to one the process holds, a TCP connection.
pub(super) fn in_flight_refusal(own: i32, fd: i32, inode: u64, found: &Found<'_>) -> Option<String> {
    let socket = crp_ptrace::sys::duplicate_descriptor(own, fd).ok()?;
    let socket = socket.as_fd();
    let family = int_option(socket, libc::SOL_SOCKET, libc::SO_DOMAIN).ok()?;
    let kind = int_option(socket, libc::SOL_SOCKET, libc::SO_TYPE).ok()?;
    if family == libc::AF_UNIX {
        let peer = found.diag.iter().find(|socket| socket.inode == inode).and_then(|socket| socket.peer)?;
        return found.inside.contains(&peer).then(|| {
            format!(
                "a unix socket connected to socket:[{peer}] of the process (crp keeps a pair whose both ends the \
                 process holds)"
            )
        });
    }
    if kind == libc::SOCK_STREAM {
        let (state, _, _) = tcp_state(socket).ok()?;
        return (state != TCP_LISTEN && state != TCP_CLOSE).then(|| {
            format!("a TCP socket in state {state} (crp keeps listening and unconnected TCP sockets in flight)")
        });
    }
    None
}

/// "an AF_INET6 SOCK_DGRAM socket (protocol 136)".
fn describe(family: i32, kind: i32, protocol: i32) -> String {
    let family = match family {
        libc::AF_UNIX => "AF_UNIX".to_owned(),
        libc::AF_INET => "AF_INET".to_owned(),
        libc::AF_INET6 => "AF_INET6".to_owned(),
        libc::AF_NETLINK => "AF_NETLINK".to_owned(),
        libc::AF_PACKET => "AF_PACKET".to_owned(),
        libc::AF_VSOCK => "AF_VSOCK".to_owned(),
        other => format!("family {other}"),
    };
    let kind = match kind {
        libc::SOCK_STREAM => "SOCK_STREAM".to_owned(),
        libc::SOCK_DGRAM => "SOCK_DGRAM".to_owned(),
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET".to_owned(),
        libc::SOCK_RAW => "SOCK_RAW".to_owned(),
        other => format!("type {other}"),
    };
    let protocol = match protocol {
        0 => String::new(),
        libc::IPPROTO_TCP => " (TCP)".to_owned(),
        libc::IPPROTO_UDP => " (UDP)".to_owned(),
        libc::IPPROTO_SCTP => " (SCTP)".to_owned(),
        libc::IPPROTO_UDPLITE => " (UDP-Lite)".to_owned(),
        other => format!(" (protocol {other})"),
    };
    format!("an {family} {kind} socket{protocol}")
}

fn bind(socket: BorrowedFd<'_>, address: &Address) -> Result<(), Errno> {
    let raw = address.to_raw();
    // SAFETY: the address is valid for its length; bind only reads it.
    if unsafe { libc::bind(socket.as_raw_fd(), raw.as_ptr(), raw.length) } < 0 { Err(Errno::last()) } else { Ok(()) }
}

fn connect(socket: BorrowedFd<'_>, address: &Address) -> Result<(), Errno> {
    let raw = address.to_raw();
    // SAFETY: the address is valid for its length; connect only reads it.
    if unsafe { libc::connect(socket.as_raw_fd(), raw.as_ptr(), raw.length) } < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// A socket made, waiting for the sockets it may connect to.
pub(super) struct Made {
    fd: u64,
    duplicate: OwnedFd,
    peer: Option<Address>,
    shutdown: u8,
    inet: bool,
    /// A TCP connection: its local address and state, and its peer.
    connection: Option<((Address, TcpConnection), Address)>,
    /// Its SO_REUSEADDR, set again once repair mode is off (which clears it).
    reuse_address: i32,
}

/// Makes `socket` in the tracee at a descriptor from `above` up: created
/// there, its options set, bound, listening and its datagrams queued again
/// from crp through a duplicate. Connecting and shutting down wait for
/// [`finish`].
pub(super) fn make(
    tracee: &mut dyn Tracee,
    socket: &SocketFile,
    flags: i32,
    above: u64,
    made: &mut Vec<Made>,
) -> Result<u64, EngineError> {
    let kind = arg(socket.kind | libc::SOCK_CLOEXEC);
    let created =
        tracee.syscall("socket", libc::SYS_socket, [arg(socket.family), kind, arg(socket.protocol), 0, 0, 0])?;
    let fd = super::move_above(tracee, created, above)?;
    let duplicate = tracee.duplicate_descriptor(fd)?;
    let pid = tracee.pid();
    let failed = |operation: &'static str| move |errno| EngineError::Descriptor { operation, pid, fd, errno };
    let borrowed = duplicate.as_fd();
    options::apply(borrowed, &socket.options).map_err(|(_, errno)| failed("set a socket option of")(errno))?;
    if let Some(connection) = &socket.connection {
        let reuse_address = tcp::reuse_address(borrowed).map_err(failed("read SO_REUSEADDR of"))?;
        // Bound and connected in [`finish`], once every listener holds its port.
        tcp::prepare(borrowed, connection)
            .map_err(|(_, errno)| failed("prepare (TCP_REPAIR) the connection of")(errno))?;
        super::set_status_flags(tracee, fd, flags)?;
        let peer = match &socket.peer {
            Peer::Address(peer) => Some(peer.clone()),
            _ => None,
        };
        let connection = socket.local.clone().zip(socket.connection.clone()).zip(peer);
        made.push(Made { fd, duplicate, peer: None, shutdown: socket.shutdown, inet: true, connection, reuse_address });
        return Ok(fd);
    }
    if let Some(local) = &socket.local {
        if let (Some(path), Some(file)) = (local.path(), &socket.bound_file) {
            unix::bind_path(borrowed, local, path, file).map_err(failed("bind (to its unix path) the socket"))?;
        } else {
            bind(borrowed, local).map_err(failed("bind the socket"))?;
        }
    }
    multicast::apply(borrowed, socket.family, &socket.memberships)
        .map_err(|(operation, errno)| failed(operation)(errno))?;
    if let Some(backlog) = socket.backlog {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        // SAFETY: listen takes a descriptor and a number.
        if unsafe { libc::listen(borrowed.as_raw_fd(), backlog) } < 0 {
            return Err(failed("listen on")(Errno::last()));
        }
    }
    if let Some(local) = &socket.local {
        queue_again(borrowed, socket, local, fd);
        unix::remove_path_again(local, socket.bound_file.as_ref()).map_err(failed("remove again the path of"))?;
    }
    super::set_status_flags(tracee, fd, flags)?;
    let peer = match &socket.peer {
        Peer::Address(peer) => Some(peer.clone()),
        Peer::None | Peer::Outside { .. } => None,
    };
    made.push(Made {
        fd,
        duplicate,
        peer,
        shutdown: socket.shutdown,
        inet: socket.family != libc::AF_UNIX,
        connection: None,
        reuse_address: 0,
    });
    Ok(fd)
}

/// Sends the socket's datagrams to it again and waits until they are
/// queued; says how many could not be.
fn queue_again(socket: BorrowedFd<'_>, file: &SocketFile, local: &Address, fd: u64) {
    if file.queued.is_empty() {
        return;
    }
    let destination = local.reachable();
    let sent = file.queued.iter().filter(|datagram| queue::send_again(datagram, &destination)).count();
    // Loopback delivers from a softirq: wait (briefly) until all are in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while queue::count(socket) < sent && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let queued = queue::count(socket);
    if queued < file.queued.len() {
        // A library has no other channel to the user here; crp's own
        // messages go to stderr alike.
        eprintln!(
            "crp: warning: fd {fd}: {} of {} datagrams waiting on the {} socket {local} could not be queued again \
             (from their senders' addresses) and are dropped",
            file.queued.len() - queued,
            file.queued.len(),
            file.kind_name()
        );
    }
}

/// Connects each socket made to its peer (every socket of the process
/// exists by now) and shuts it down as it was.
pub(super) fn finish(tracee: &dyn Tracee, made: &[Made]) -> Result<(), EngineError> {
    let pid = tracee.pid();
    // Every end of every connection in place, in repair mode, before any
    // goes live: a live end's first packet must find its peer.
    for socket in made {
        let Some(((local, connection), peer)) = &socket.connection else { continue };
        let failed =
            |operation: &'static str| move |errno| EngineError::Descriptor { operation, pid, fd: socket.fd, errno };
        let borrowed = socket.duplicate.as_fd();
        bind(borrowed, local).map_err(failed("bind (TCP_REPAIR) the connection of"))?;
        connect(borrowed, peer).map_err(failed("connect (TCP_REPAIR) the connection of"))?;
        tcp::establish(borrowed, connection).map_err(|(_, errno)| failed("put back the TCP connection of")(errno))?;
    }
    for socket in made {
        let Some(((_, connection), _)) = &socket.connection else { continue };
        tcp::resume(socket.duplicate.as_fd(), connection, socket.reuse_address).map_err(|(_, errno)| {
            EngineError::Descriptor {
                operation: "resume (TCP_REPAIR off) the connection of",
                pid,
                fd: socket.fd,
                errno,
            }
        })?;
    }
    for socket in made {
        let failed =
            |operation: &'static str| move |errno| EngineError::Descriptor { operation, pid, fd: socket.fd, errno };
        let borrowed = socket.duplicate.as_fd();
        if let Some(peer) = &socket.peer {
            connect(borrowed, peer).map_err(failed("connect again"))?;
        }
        let how = match socket.shutdown & (RCV_SHUTDOWN | SEND_SHUTDOWN) {
            0 => continue,
            RCV_SHUTDOWN => libc::SHUT_RD,
            SEND_SHUTDOWN => libc::SHUT_WR,
            _ => libc::SHUT_RDWR,
        };
        // SAFETY: shutdown takes a descriptor and a constant.
        if unsafe { libc::shutdown(borrowed.as_raw_fd(), how) } < 0 {
            // An unconnected inet socket answers ENOTCONN, its bits set all the same.
            match Errno::last() {
                Errno::ENOTCONN if socket.inet => {}
                errno => return Err(failed("shut down")(errno)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::super::{FdTable, FdTarget};
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixListener};

    fn diag() -> Vec<UnixSocket> {
        super::super::unix_diag::unix_sockets().unwrap()
    }

    fn inode_of(fd: &impl AsRawFd) -> u64 {
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap().ino()
    }

    fn captured(fd: &impl AsRawFd) -> Result<SocketFile, CompoundError> {
        let inode = inode_of(fd);
        let diag = diag();
        let found = Found { diag: &diag, inside: &[inode], descriptors: &[(fd.as_raw_fd(), inode)] };
        capture(std::process::id() as i32, fd.as_raw_fd(), inode, &found, Depth::Capture)
    }

    #[test]
    fn a_listening_unix_socket_keeps_its_path_backlog_and_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("listen.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // SAFETY: listen again only changes the backlog.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 7) }, 0);
        let _waiting = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let socket = captured(&listener).unwrap();
        assert_eq!(socket.local, Some(Address::Unix(path.as_os_str().as_encoded_bytes().to_vec())));
        assert_eq!((socket.backlog, socket.lost_connections), (Some(7), 1));
        assert!(socket.bound_file.as_ref().unwrap().present);
        check(&socket, &|| "socket".into()).unwrap();
        assert_eq!(warnings_of(socket).len(), 1, "the waiting connection is said to be lost");
        std::fs::remove_file(&path).unwrap();
        assert!(!captured(&listener).unwrap().bound_file.unwrap().present, "removed: not present");
    }

    fn warnings_of(socket: SocketFile) -> Vec<String> {
        let table = FdTable::from(vec![super::super::FdRecord {
            fd: 3,
            flags: 2,
            offset: 0,
            target: FdTarget::Socket(Box::new(socket)),
        }]);
        warnings(&table)
    }

    #[test]
    fn a_bound_datagram_socket_keeps_its_queue_and_peer_name() {
        let directory = tempfile::tempdir().unwrap();
        let (server_path, client_path) = (directory.path().join("server"), directory.path().join("client"));
        let server = UnixDatagram::bind(&server_path).unwrap();
        let client = UnixDatagram::bind(&client_path).unwrap();
        client.connect(&server_path).unwrap();
        client.send(b"one").unwrap();
        UnixDatagram::unbound().unwrap().send_to(b"two", &server_path).unwrap();
        let socket = captured(&server).unwrap();
        let client_name = Some(Address::Unix(client_path.as_os_str().as_encoded_bytes().to_vec()));
        assert_eq!(
            socket.queued,
            [
                Datagram { source: client_name.clone(), data: b"one".to_vec() },
                Datagram { source: None, data: b"two".to_vec() }
            ]
        );
        assert_eq!(captured(&client).unwrap().peer, Peer::Address(socket.local.clone().unwrap()));
        let mut buffer = [0u8; 8];
        assert_eq!(server.recv(&mut buffer).unwrap(), 3, "left in place");
        assert_eq!(warnings_of(socket).len(), 1, "the named sender is said to be lost");
    }

    #[test]
    fn a_tcp_listener_keeps_its_backlog_and_options() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: listen again only changes the backlog.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 9) }, 0);
        let one =
            SocketOption { level: libc::IPPROTO_TCP, name: libc::TCP_NODELAY, value: 1i32.to_ne_bytes().to_vec() };
        options::set(listener.as_fd(), &one).unwrap();
        let socket = captured(&listener).unwrap();
        assert_eq!(socket.backlog, Some(9));
        assert_eq!(socket.local, Some(Address::V4 { ip: [127, 0, 0, 1], port: listener.local_addr().unwrap().port() }));
        assert!(socket.options.contains(&one), "{:?}", socket.options);
        let connected = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let refused = captured(&accepted).unwrap_err().to_string();
        assert!(refused.contains("an AF_INET SOCK_STREAM socket (TCP) with an established connection"), "{refused}");
        drop(connected);
    }

    /// A fake process whose socket() gives fd 3, moved to 10 by
    /// F_DUPFD_CLOEXEC, descriptor 10 being `socket`.
    fn fake_with(socket: OwnedFd) -> crp_ptrace::fake::FakeTracee {
        let mut tracee = crp_ptrace::fake::FakeTracee::answering(|call, _| match call.number {
            libc::SYS_socket => 3,
            libc::SYS_fcntl => 10,
            _ => 0,
        });
        tracee.descriptors.insert(10, socket);
        tracee
    }

    #[test]
    fn a_udp_socket_is_made_again_with_its_address_options_and_datagrams() {
        use std::net::UdpSocket;
        let original = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tos = SocketOption { level: libc::IPPROTO_IP, name: libc::IP_TOS, value: 0x10i32.to_ne_bytes().to_vec() };
        options::set(original.as_fd(), &tos).unwrap();
        sender.send_to(b"kept", original.local_addr().unwrap()).unwrap();
        while queue::count(original.as_fd()) < 1 {
            std::thread::yield_now();
        }
        let socket = captured(&original).unwrap();
        assert_eq!(socket.queued.len(), 1);
        assert!(socket.options.contains(&tos));
        let address = original.local_addr().unwrap();
        drop(original);
        let fresh = options::Kind { family: libc::AF_INET, kind: libc::SOCK_DGRAM, protocol: libc::IPPROTO_UDP }
            .fresh()
            .unwrap();
        let restored = UdpSocket::from(fresh.try_clone().unwrap());
        let mut tracee = fake_with(fresh);
        let mut made = Vec::new();
        assert_eq!(make(&mut tracee, &socket, libc::O_RDWR, 8, &mut made).unwrap(), 10);
        finish(&tracee, &made).unwrap();
        let created = tracee.calls_of(libc::SYS_socket)[0];
        assert_eq!(&created.args[..3], &[2, (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64, 17]);
        assert_eq!(restored.local_addr().unwrap(), address);
        let mut buffer = [0u8; 8];
        let (length, from) = restored.recv_from(&mut buffer).unwrap();
        assert_eq!((&buffer[..length], from), (&b"kept"[..], sender.local_addr().unwrap()));
        assert_eq!(int_option(restored.as_fd(), libc::IPPROTO_IP, libc::IP_TOS).unwrap(), 0x10);
    }

    #[test]
    fn an_established_connection_goes_through_repair_and_carries_on() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        client.write_all(b"waiting").unwrap();
        while tcp_queued(&accepted) < 7 {
            std::thread::yield_now();
        }
        let (client_inode, accepted_inode) = (inode_of(&client), inode_of(&accepted));
        let diag = diag();
        let descriptors = [(client.as_raw_fd(), client_inode), (accepted.as_raw_fd(), accepted_inode)];
        let found = Found { diag: &diag, inside: &[client_inode, accepted_inode], descriptors: &descriptors };
        let pid = std::process::id() as i32;
        let repaired = Repaired::guard();
        let sockets: Vec<SocketFile> =
            descriptors.iter().map(|(fd, inode)| capture(pid, *fd, *inode, &found, Depth::Capture).unwrap()).collect();
        assert_eq!(sockets[1].connection.as_ref().unwrap().receive_queue, b"waiting");
        // Closed in repair mode: neither end hears of it.
        repaired.before_kill();
        drop((client, accepted));
        repaired.closed_silently();
        let kind = options::Kind { family: libc::AF_INET, kind: libc::SOCK_STREAM, protocol: libc::IPPROTO_TCP };
        let mut made = Vec::new();
        let mut restored = Vec::new();
        let mut tracees = Vec::new();
        for socket in &sockets {
            let fresh = kind.fresh().unwrap();
            restored.push(std::net::TcpStream::from(fresh.try_clone().unwrap()));
            let mut tracee = fake_with(fresh);
            make(&mut tracee, socket, libc::O_RDWR, 8, &mut made).unwrap();
            tracees.push(tracee);
        }
        finish(&tracees[0], &made).unwrap();
        let mut text = [0u8; 7];
        restored[1].read_exact(&mut text).unwrap();
        assert_eq!(&text, b"waiting");
        restored[1].write_all(b"back").unwrap();
        let mut back = [0u8; 4];
        restored[0].read_exact(&mut back).unwrap();
        assert_eq!(&back, b"back");
    }

    fn tcp_queued(stream: &std::net::TcpStream) -> usize {
        let mut value: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &raw mut value) };
        usize::try_from(value).unwrap_or(0)
    }

    #[test]
    fn an_option_this_kernel_does_not_take_for_the_socket_is_refused_before_the_restore() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut socket = captured(&udp).unwrap();
        drop(udp);
        let passcred =
            SocketOption { level: libc::SOL_SOCKET, name: libc::SO_PASSCRED, value: 1i32.to_ne_bytes().to_vec() };
        socket.options.push(passcred.clone());
        let table = FdTable::default();
        // Kernels from 6.16 refuse SO_PASSCRED on inet sockets: ask this one.
        let probe = options::Kind { family: libc::AF_INET, kind: libc::SOCK_DGRAM, protocol: libc::IPPROTO_UDP }
            .fresh()
            .unwrap();
        match options::set(probe.as_fd(), &passcred) {
            Ok(()) => check_host(&table, 3, &socket).unwrap(),
            Err(_) => {
                let refused = check_host(&table, 3, &socket).unwrap_err().to_string();
                assert!(refused.contains("this kernel does not accept SO_PASSCRED"), "{refused}");
            }
        }
    }

    #[test]
    fn netlink_sockets_are_refused_by_name() {
        // SAFETY: socket takes no pointers.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: a new descriptor nothing else owns.
        let netlink = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let refused = captured(&netlink).unwrap_err().to_string();
        assert!(refused.contains("an AF_NETLINK SOCK_RAW socket"), "{refused}");
    }
}
