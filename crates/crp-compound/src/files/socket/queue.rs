//! The datagrams waiting on a datagram socket, each with its sender's
//! address: read at the dump with `MSG_PEEK` walking `SO_PEEK_OFF` (left in
//! place, the offset put back), sent again at the restore from the same
//! address: a unix datagram from an unnamed socket of crp's (so a named
//! sender's name is lost), a UDP datagram through a raw socket of crp's
//! that writes the sender's address and port into the packet itself.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

use super::address::{Address, Raw};

/// The largest datagram crp reads back.
const LARGEST: usize = 1 << 16;

/// One waiting datagram.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Datagram {
    /// Who sent it (None: an unnamed unix socket).
    pub source: Option<Address>,
    pub data: Vec<u8>,
}

/// Why a queue cannot be read back.
#[derive(Debug)]
pub enum QueueError {
    /// What the kernel refused, and its errno.
    Failed(&'static str, Errno),
    /// What crp cannot keep.
    Refused(&'static str),
}

fn int_option(socket: BorrowedFd<'_>, name: i32) -> Result<i32, Errno> {
    let mut value: i32 = 0;
    let mut length = 4 as libc::socklen_t;
    // SAFETY: value and length are valid for the int getsockopt writes.
    let result = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, name, (&raw mut value).cast(), &raw mut length)
    };
    if result < 0 { Err(Errno::last()) } else { Ok(value) }
}

fn set_int_option(socket: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> Result<(), Errno> {
    // SAFETY: the value is a valid int for the length given.
    let result = unsafe { libc::setsockopt(socket.as_raw_fd(), level, name, (&raw const value).cast(), 4) };
    if result < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// The datagrams waiting on `socket` (the process's, a dump reads), oldest
/// first, left in place; a crp killed meanwhile leaves its watchdog to put
/// the peek offset back.
pub fn capture(socket: BorrowedFd<'_>) -> Result<Vec<Datagram>, QueueError> {
    walk(socket, Guarded::Yes)
}

/// Whether a walk of a queue is guarded by the watchdog.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Guarded {
    Yes,
    /// A socket crp made itself (a restore's, whose process dies with a
    /// dying crp): no watchdog is started for it.
    No,
}

fn walk(socket: BorrowedFd<'_>, guarded: Guarded) -> Result<Vec<Datagram>, QueueError> {
    let original =
        int_option(socket, libc::SO_PEEK_OFF).map_err(|errno| QueueError::Failed("read SO_PEEK_OFF", errno))?;
    // An empty queue is seen without touching SO_PEEK_OFF (a crp killed
    // during a walk would leave it changed).
    if original < 0 && super::super::unix_pair::nothing_waits(socket) {
        return Ok(Vec::new());
    }
    let guard = (guarded == Guarded::Yes)
        .then(|| super::watchdog::guard(socket, super::watchdog::Restore::PeekOffset(original)));
    if let Err(errno) = set_int_option(socket, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0) {
        // Without a peek offset only the first datagram can be read back.
        return match peek(socket) {
            Ok(None) => Ok(Vec::new()),
            Ok(Some(_)) => Err(QueueError::Refused(
                "a datagram socket with datagrams waiting, on a kernel without SO_PEEK_OFF for it",
            )),
            Err(_) => Err(QueueError::Failed("set SO_PEEK_OFF", errno)),
        };
    }
    if let Some(guard) = &guard {
        guard.changed();
    }
    let mut datagrams = Vec::new();
    let mut offset = 0usize;
    let walked = loop {
        match peek(socket) {
            Ok(Some(datagram)) => {
                offset += datagram.data.len();
                datagrams.push(datagram);
                // Each peek moves the offset past what it read; one moved
                // otherwise (by another holder of the socket) would have
                // the walk read the same datagrams again, without end.
                if int_option(socket, libc::SO_PEEK_OFF).ok().and_then(|now| usize::try_from(now).ok()) != Some(offset)
                {
                    break Err(QueueError::Refused("a datagram socket whose peek offset is moved by another holder"));
                }
            }
            Ok(None) => break Ok(datagrams),
            Err(error) => break Err(error),
        }
    };
    let put_back = set_int_option(socket, libc::SOL_SOCKET, libc::SO_PEEK_OFF, original);
    drop(guard);
    let datagrams = walked?;
    put_back.map_err(|errno| QueueError::Failed("put SO_PEEK_OFF back", errno))?;
    Ok(datagrams)
}

/// The next datagram (from the peek offset), or None when none waits.
fn peek(socket: BorrowedFd<'_>) -> Result<Option<Datagram>, QueueError> {
    let mut buffer = vec![0u8; LARGEST];
    let mut control = [0u8; 256];
    let mut name = Raw::empty();
    let mut vector = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
    // SAFETY: an all-zero msghdr is valid (no name, no vectors, no control).
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_name = name.as_mut_ptr().cast();
    header.msg_namelen = name.length;
    header.msg_iov = &raw mut vector;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = control.len();
    // SAFETY: the header points to the name, buffer and control areas, all
    // valid and writable for the lengths it gives.
    let received = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut header, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if received < 0 {
        return match Errno::last() {
            Errno::EAGAIN => Ok(None),
            errno => Err(QueueError::Failed("peek at the queue", errno)),
        };
    }
    if header.msg_controllen > 0 {
        super::super::unix_pair::close_passed_descriptors(&header);
        return Err(QueueError::Refused(
            "a socket with descriptors (SCM_RIGHTS) or credentials in flight in its queue, which cannot be sent again \
             as they were",
        ));
    }
    if header.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(QueueError::Refused("a socket with a datagram of more than 64 KiB waiting"));
    }
    name.length = header.msg_namelen;
    buffer.truncate(usize::try_from(received).unwrap_or(0));
    if buffer.is_empty() {
        return Err(QueueError::Refused("a socket with an empty datagram waiting (it cannot be told apart from none)"));
    }
    Ok(Some(Datagram { source: Address::from_raw(&name), data: buffer }))
}

/// How many datagrams wait on `socket` now (one the restore made: unguarded).
pub fn count(socket: BorrowedFd<'_>) -> usize {
    walk(socket, Guarded::No).map_or(0, |datagrams| datagrams.len())
}

/// Sends `datagram` to `destination` from its source address (a unix one
/// from an unnamed socket); false when it could not be sent.
pub fn send_again(datagram: &Datagram, destination: &Address) -> bool {
    match destination {
        Address::Unix(_) => send_unix(datagram, destination),
        Address::V4 { .. } | Address::V6 { .. } => send_udp(datagram, destination),
    }
}

fn new_socket(family: i32, kind: i32, protocol: i32) -> Option<OwnedFd> {
    // SAFETY: socket takes no pointers.
    let raw = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, protocol) };
    // SAFETY: socket returned a new descriptor nothing else owns.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

fn send_to(socket: &OwnedFd, data: &[u8], destination: &Raw) -> bool {
    // SAFETY: data and the address are valid for their lengths; sendto only reads them.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            destination.as_ptr(),
            destination.length,
        )
    };
    usize::try_from(sent).is_ok_and(|sent| sent == data.len())
}

/// From an unnamed unix socket: exact only for a datagram whose sender was
/// unnamed (the dump warns of the others).
fn send_unix(datagram: &Datagram, destination: &Address) -> bool {
    let Some(socket) = new_socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) else { return false };
    send_to(&socket, &datagram.data, &destination.to_raw())
}

/// Through a raw socket bound to the source address, with a UDP header
/// naming the source port: whatever holds that port now.
fn send_udp(datagram: &Datagram, destination: &Address) -> bool {
    let Some(source) = &datagram.source else { return false };
    let (family, source_port) = match source {
        Address::V4 { port, .. } => (libc::AF_INET, *port),
        Address::V6 { port, .. } => (libc::AF_INET6, *port),
        Address::Unix(_) => return false,
    };
    let destination_port = match destination {
        Address::V4 { port, .. } | Address::V6 { port, .. } => *port,
        Address::Unix(_) => return false,
    };
    if source.family() != destination.family() {
        return false;
    }
    let Some(raw) = new_socket(family, libc::SOCK_RAW, libc::IPPROTO_UDP) else { return false };
    let borrowed = std::os::fd::AsFd::as_fd(&raw);
    // A source not on this host (a datagram from elsewhere) needs these.
    let (level, freebind, transparent) = match family {
        libc::AF_INET => (libc::IPPROTO_IP, libc::IP_FREEBIND, libc::IP_TRANSPARENT),
        _ => (libc::IPPROTO_IPV6, 78, 75),
    };
    let _ = set_int_option(borrowed, level, freebind, 1);
    let _ = set_int_option(borrowed, level, transparent, 1);
    if family == libc::AF_INET6 {
        // The kernel computes the UDP checksum (mandatory over IPv6) at offset 6.
        if set_int_option(borrowed, libc::IPPROTO_IPV6, libc::IPV6_CHECKSUM, 6).is_err() {
            return false;
        }
    }
    let source_raw = match source {
        Address::V4 { ip, .. } => Address::V4 { ip: *ip, port: 0 },
        Address::V6 { ip, flowinfo, scope_id, .. } => {
            Address::V6 { ip: *ip, port: 0, flowinfo: *flowinfo, scope_id: *scope_id }
        }
        Address::Unix(_) => return false,
    }
    .to_raw();
    // SAFETY: the address is valid for its length; bind only reads it.
    if unsafe { libc::bind(raw.as_raw_fd(), source_raw.as_ptr(), source_raw.length) } < 0 {
        return false;
    }
    let Ok(length) = u16::try_from(8 + datagram.data.len()) else { return false };
    let mut packet = Vec::with_capacity(usize::from(length));
    packet.extend_from_slice(&source_port.to_be_bytes());
    packet.extend_from_slice(&destination_port.to_be_bytes());
    packet.extend_from_slice(&length.to_be_bytes());
    // Checksum: none over IPv4 (0 is allowed), the kernel's over IPv6.
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(&datagram.data);
    // A raw socket takes no port in its destination.
    let target = match destination {
        Address::V4 { ip, .. } => Address::V4 { ip: *ip, port: 0 },
        Address::V6 { ip, flowinfo, scope_id, .. } => {
            Address::V6 { ip: *ip, port: 0, flowinfo: *flowinfo, scope_id: *scope_id }
        }
        Address::Unix(_) => return false,
    };
    send_to(&raw, &packet, &target.to_raw())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn udp_datagrams_are_read_with_their_sources_and_sent_again_from_them() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"first", receiver.local_addr().unwrap()).unwrap();
        sender.send_to(b"second one", receiver.local_addr().unwrap()).unwrap();
        // Loopback delivers in the sender's softirq, before send_to returns
        // on an idle machine; wait for both all the same.
        while count(receiver.as_fd()) < 2 {
            std::thread::yield_now();
        }
        let datagrams = capture(receiver.as_fd()).unwrap();
        let port = sender.local_addr().unwrap().port();
        let from = Some(Address::V4 { ip: [127, 0, 0, 1], port });
        assert_eq!(datagrams[0], Datagram { source: from.clone(), data: b"first".to_vec() });
        assert_eq!(datagrams[1].data, b"second one");
        let mut buffer = [0u8; 32];
        assert_eq!(receiver.recv_from(&mut buffer).unwrap().0, 5, "left in place");
        assert_eq!(receiver.recv_from(&mut buffer).unwrap().0, 10);
        // The sender still holds its port: the raw socket sends as it anyway.
        let destination = Address::V4 { ip: [127, 0, 0, 1], port: receiver.local_addr().unwrap().port() };
        assert!(send_again(&datagrams[0], &destination));
        receiver.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let (length, source) = receiver.recv_from(&mut buffer).unwrap();
        assert_eq!((&buffer[..length], source), (&b"first"[..], sender.local_addr().unwrap()));
    }
}
