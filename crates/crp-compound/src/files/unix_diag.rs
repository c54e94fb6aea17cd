//! The kernel's own view of unix sockets, through sock_diag netlink
//! (`UNIX_DIAG`, net/unix/diag.c): each socket's type, state, peer, bound
//! name, shutdown bits and queue length. Nothing in /proc tells a socket's
//! peer; no crate wraps UNIX_DIAG, so the few messages are built by hand.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::CompoundError;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_VFS: u32 = 0x02;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

/// One unix socket as sock_diag reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct UnixSocket {
    pub inode: u64,
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    pub kind: u8,
    /// TCP_ESTABLISHED (1), TCP_CLOSE (7) or TCP_LISTEN (10).
    pub state: u8,
    pub peer: Option<u64>,
    /// The bound address, when there is one (a leading NUL: abstract).
    pub name: Option<Vec<u8>>,
    /// RCV_SHUTDOWN (1) and SEND_SHUTDOWN (2).
    pub shutdown: u8,
    /// Bytes waiting in its receive queue (for a datagram socket: the first
    /// datagram's); for a listening socket, the connections waiting to be
    /// accepted.
    pub queued: u32,
    /// For a listening socket, its backlog (what listen(2) was given,
    /// capped by `net.core.somaxconn`).
    pub backlog: u32,
    /// The inode and device of the file a socket bound to a path made.
    pub bound_file: Option<(u64, u32)>,
}

fn failed(action: &'static str) -> impl FnOnce(std::io::Error) -> CompoundError {
    CompoundError::io(action, "sock_diag (NETLINK_SOCK_DIAG)")
}

/// Every unix socket of crp's network namespace.
pub(super) fn unix_sockets() -> Result<Vec<UnixSocket>, CompoundError> {
    // SAFETY: socket takes no pointers.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if raw < 0 {
        return Err(failed("open")(std::io::Error::last_os_error()));
    }
    // SAFETY: socket returned a new descriptor that nothing else owns.
    let netlink = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut request = Vec::with_capacity(40);
    request.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // seq
    request.extend_from_slice(&0u32.to_ne_bytes()); // pid
    request.push(1); // sdiag_family: AF_UNIX
    request.push(0); // sdiag_protocol
    request.extend_from_slice(&0u16.to_ne_bytes());
    request.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    request.extend_from_slice(&0u32.to_ne_bytes()); // any inode
    request.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN).to_ne_bytes());
    request.extend_from_slice(&[0xff; 8]); // no cookie
    // SAFETY: the buffer is valid for its length; send reads only it.
    let sent = unsafe { libc::send(netlink.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(failed("send a request to")(std::io::Error::last_os_error()));
    }
    let mut sockets = Vec::new();
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        // SAFETY: the buffer is valid and writable for its length.
        let received = unsafe { libc::recv(netlink.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        let Ok(received) = usize::try_from(received) else {
            return Err(failed("read the answer of")(std::io::Error::last_os_error()));
        };
        if received == 0 {
            return Ok(sockets);
        }
        if parse_messages(&buffer[..received], &mut sockets)? {
            return Ok(sockets);
        }
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Parses one datagram of netlink messages into `sockets`; true once the
/// dump is done.
fn parse_messages(mut bytes: &[u8], sockets: &mut Vec<UnixSocket>) -> Result<bool, CompoundError> {
    let malformed = |reason: &str| CompoundError::Malformed {
        path: "sock_diag (NETLINK_SOCK_DIAG)".into(),
        reason: reason.to_owned(),
    };
    while bytes.len() >= 16 {
        let length = u32_at(bytes, 0).and_then(|length| usize::try_from(length).ok()).unwrap_or(0);
        let kind = u16_at(bytes, 4).unwrap_or(0);
        if length < 16 || length > bytes.len() {
            return Err(malformed("a message overruns the answer"));
        }
        let payload = &bytes[16..length];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(payload, 0).map_or(libc::EIO, |code| -(code.cast_signed()));
                if errno != 0 {
                    return Err(failed("dump unix sockets through")(std::io::Error::from_raw_os_error(errno)));
                }
            }
            SOCK_DIAG_BY_FAMILY => sockets.push(parse_socket(payload).ok_or_else(|| malformed("a short socket"))?),
            _ => {}
        }
        bytes = &bytes[length.next_multiple_of(4).min(bytes.len())..];
    }
    Ok(false)
}

/// One `unix_diag_msg` and its attributes.
fn parse_socket(payload: &[u8]) -> Option<UnixSocket> {
    let mut socket = UnixSocket {
        kind: *payload.get(1)?,
        state: *payload.get(2)?,
        inode: u64::from(u32_at(payload, 4)?),
        ..UnixSocket::default()
    };
    let mut attributes = payload.get(16..)?;
    while attributes.len() >= 4 {
        let length = usize::from(u16_at(attributes, 0)?);
        let kind = u16_at(attributes, 2)?;
        let value = attributes.get(4..length)?;
        match kind {
            UNIX_DIAG_NAME => socket.name = Some(value.to_vec()),
            UNIX_DIAG_PEER => socket.peer = Some(u64::from(u32_at(value, 0)?)).filter(|peer| *peer != 0),
            UNIX_DIAG_VFS => socket.bound_file = Some((u64::from(u32_at(value, 0)?), u32_at(value, 4)?)),
            UNIX_DIAG_RQLEN => {
                socket.queued = u32_at(value, 0)?;
                socket.backlog = u32_at(value, 4)?;
            }
            UNIX_DIAG_SHUTDOWN => socket.shutdown = *value.first()?,
            _ => {}
        }
        attributes = attributes.get(length.next_multiple_of(4).min(attributes.len())..)?;
    }
    Some(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_pair_s_ends_name_each_other() {
        use std::os::unix::fs::MetadataExt;
        let (first, second) = std::os::unix::net::UnixStream::pair().unwrap();
        second.shutdown(std::net::Shutdown::Write).unwrap();
        std::io::Write::write_all(&mut &first, b"four").unwrap();
        let inode = |stream: &std::os::unix::net::UnixStream| {
            std::fs::metadata(format!("/proc/self/fd/{}", stream.as_raw_fd())).unwrap().ino()
        };
        let sockets = unix_sockets().unwrap();
        let find = |inode: u64| sockets.iter().find(|socket| socket.inode == inode).unwrap().clone();
        let (one, two) = (find(inode(&first)), find(inode(&second)));
        assert_eq!(one.peer, Some(two.inode));
        assert_eq!(two.peer, Some(one.inode));
        assert_eq!(i32::from(one.kind), libc::SOCK_STREAM);
        assert_eq!((one.name.clone(), two.queued), (None, 4));
        assert_eq!((two.shutdown, one.shutdown), (2, 1), "send shut on one side is receive shut on the other");
    }

    #[test]
    fn a_truncated_answer_is_refused() {
        let mut sockets = Vec::new();
        let mut message = vec![0u8; 16];
        message[..4].copy_from_slice(&64u32.to_ne_bytes());
        assert!(parse_messages(&message, &mut sockets).is_err());
    }
}
