//! What only sock_diag tells about a TCP or UDP socket (`INET_DIAG`,
//! net/ipv4/inet_diag.c): its shutdown bits, which getsockopt does not
//! report. The messages are built by hand as in [`super::super::unix_diag`].

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::CompoundError;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const INET_DIAG_SHUTDOWN: u16 = 8;
/// Where `idiag_inode` is in an `inet_diag_msg`, and its attributes start.
const INODE_AT: usize = 68;
const ATTRIBUTES_AT: usize = 72;

fn failed(action: &'static str) -> impl FnOnce(std::io::Error) -> CompoundError {
    CompoundError::io(action, "sock_diag (NETLINK_SOCK_DIAG, inet)")
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The shutdown bits (RCV_SHUTDOWN 1, SEND_SHUTDOWN 2) of socket `inode`
/// of `family` and `protocol` in crp's network namespace, or None when
/// sock_diag does not list it.
pub fn shutdown_of(family: i32, protocol: i32, inode: u64) -> Result<Option<u8>, CompoundError> {
    // SAFETY: socket takes no pointers.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if raw < 0 {
        return Err(failed("open")(std::io::Error::last_os_error()));
    }
    // SAFETY: socket returned a new descriptor that nothing else owns.
    let netlink = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut request = Vec::with_capacity(72);
    request.extend_from_slice(&72u32.to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.push(u8::try_from(family).unwrap_or_default());
    request.push(u8::try_from(protocol).unwrap_or_default());
    request.extend_from_slice(&[0, 0]); // no extensions, padding
    request.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    request.extend_from_slice(&[0; 48]); // any socket id
    // SAFETY: the buffer is valid for its length; send reads only it.
    if unsafe { libc::send(netlink.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) } < 0 {
        return Err(failed("send a request to")(std::io::Error::last_os_error()));
    }
    let mut buffer = vec![0u8; 64 << 10];
    let mut found = None;
    loop {
        // SAFETY: the buffer is valid and writable for its length.
        let received = unsafe { libc::recv(netlink.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        let Ok(received) = usize::try_from(received) else {
            return Err(failed("read the answer of")(std::io::Error::last_os_error()));
        };
        if received == 0 {
            return Ok(found);
        }
        let mut bytes = &buffer[..received];
        while bytes.len() >= 16 {
            let length = u32_at(bytes, 0).and_then(|length| usize::try_from(length).ok()).unwrap_or(0);
            if length < 16 || length > bytes.len() {
                return Err(CompoundError::Malformed {
                    path: "sock_diag (NETLINK_SOCK_DIAG, inet)".into(),
                    reason: "a message overruns the answer".to_owned(),
                });
            }
            let payload = &bytes[16..length];
            match u16_at(bytes, 4).unwrap_or(0) {
                NLMSG_DONE => return Ok(found),
                NLMSG_ERROR => {
                    let errno = u32_at(payload, 0).map_or(libc::EIO, |code| -(code.cast_signed()));
                    if errno != 0 {
                        return Err(failed("dump sockets through")(std::io::Error::from_raw_os_error(errno)));
                    }
                }
                SOCK_DIAG_BY_FAMILY if u32_at(payload, INODE_AT).map(u64::from) == Some(inode) => {
                    found = Some(shutdown_attribute(payload.get(ATTRIBUTES_AT..).unwrap_or_default()));
                }
                _ => {}
            }
            bytes = &bytes[length.next_multiple_of(4).min(bytes.len())..];
        }
    }
}

fn shutdown_attribute(mut attributes: &[u8]) -> u8 {
    while attributes.len() >= 4 {
        let length = usize::from(u16_at(attributes, 0).unwrap_or(0));
        if length < 4 {
            break;
        }
        if u16_at(attributes, 2) == Some(INET_DIAG_SHUTDOWN) {
            return attributes.get(4).copied().unwrap_or(0);
        }
        attributes = attributes.get(length.next_multiple_of(4).min(attributes.len())..).unwrap_or_default();
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_udp_socket_s_shutdown_is_seen() {
        use std::os::unix::fs::MetadataExt;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd())).unwrap().ino();
        assert_eq!(shutdown_of(libc::AF_INET, libc::IPPROTO_UDP, inode).unwrap(), Some(0));
        // SAFETY: shutdown takes a descriptor and a constant (ENOTCONN, but the bits are set).
        unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_WR) };
        assert_eq!(shutdown_of(libc::AF_INET, libc::IPPROTO_UDP, inode).unwrap(), Some(2));
    }
}
