//! The socket options that change how a socket behaves, read from the
//! process's socket (through a duplicate) and kept when they differ from
//! what a fresh socket of the same kind has; set again on the restored
//! socket from crp. Options a kind of socket does not have are not asked.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

use crate::valid::Invalid;

/// One option as getsockopt gave it.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SocketOption {
    pub level: i32,
    pub name: i32,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Int,
    /// `struct linger`.
    Linger,
    /// `struct timeval` (the _OLD option numbers).
    Timeval,
    /// A NUL-padded name (SO_BINDTODEVICE, TCP_CONGESTION).
    Text,
}

/// Which sockets an option belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applies {
    Any,
    Inet,
    Tcp,
    Udp,
    V4,
    V6,
    /// Multicast options: the kernel refuses them on stream sockets.
    UdpV4,
    UdpV6,
}

struct Known {
    level: i32,
    name: i32,
    label: &'static str,
    shape: Shape,
    applies: Applies,
}

const SO_RCVTIMEO_OLD: i32 = 20;
const SO_SNDTIMEO_OLD: i32 = 21;
const IPV6_TRANSPARENT: i32 = 75;
const IPV6_FREEBIND: i32 = 78;

macro_rules! known {
    ($level:expr, $name:expr, $label:literal, $shape:ident, $applies:ident) => {
        Known { level: $level, name: $name, label: $label, shape: Shape::$shape, applies: Applies::$applies }
    };
}

/// Ordered as they are set: IPV6_V6ONLY, SO_REUSEADDR/PORT, IP_FREEBIND and
/// IP_TRANSPARENT matter before bind, which comes after all of them;
/// SO_PRIORITY comes after IP_TOS.
const KNOWN: &[Known] = &[
    known!(libc::SOL_SOCKET, libc::SO_REUSEADDR, "SO_REUSEADDR", Int, Any),
    known!(libc::SOL_SOCKET, libc::SO_REUSEPORT, "SO_REUSEPORT", Int, Inet),
    known!(libc::SOL_SOCKET, libc::SO_KEEPALIVE, "SO_KEEPALIVE", Int, Inet),
    known!(libc::SOL_SOCKET, libc::SO_BROADCAST, "SO_BROADCAST", Int, Udp),
    known!(libc::SOL_SOCKET, libc::SO_OOBINLINE, "SO_OOBINLINE", Int, Tcp),
    known!(libc::SOL_SOCKET, libc::SO_DONTROUTE, "SO_DONTROUTE", Int, Inet),
    known!(libc::SOL_SOCKET, libc::SO_LINGER, "SO_LINGER", Linger, Any),
    known!(libc::SOL_SOCKET, SO_RCVTIMEO_OLD, "SO_RCVTIMEO", Timeval, Any),
    known!(libc::SOL_SOCKET, SO_SNDTIMEO_OLD, "SO_SNDTIMEO", Timeval, Any),
    known!(libc::SOL_SOCKET, libc::SO_RCVBUF, "SO_RCVBUF", Int, Any),
    known!(libc::SOL_SOCKET, libc::SO_SNDBUF, "SO_SNDBUF", Int, Any),
    known!(libc::SOL_SOCKET, libc::SO_RCVLOWAT, "SO_RCVLOWAT", Int, Any),
    known!(libc::SOL_SOCKET, libc::SO_MARK, "SO_MARK", Int, Any),
    known!(libc::SOL_SOCKET, libc::SO_TIMESTAMP, "SO_TIMESTAMP", Int, Any),
    known!(libc::SOL_SOCKET, libc::SO_PEEK_OFF, "SO_PEEK_OFF", Int, Any),
    known!(libc::SOL_SOCKET, libc::SO_BINDTODEVICE, "SO_BINDTODEVICE", Text, Inet),
    // Kernels from 6.16 have these for unix and netlink sockets only (the
    // kernel answers for an inet socket only where it has them); a restore
    // on such a kernel of an inet socket that had one set is refused by
    // the host check, which tries every option first.
    known!(libc::SOL_SOCKET, libc::SO_PASSCRED, "SO_PASSCRED", Int, Any),
    known!(libc::SOL_SOCKET, libc::SO_PASSSEC, "SO_PASSSEC", Int, Any),
    known!(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, "IPV6_V6ONLY", Int, V6),
    known!(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, "IPV6_TCLASS", Int, V6),
    known!(libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", Int, V6),
    known!(libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS", Int, UdpV6),
    known!(libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP", Int, UdpV6),
    known!(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO", Int, V6),
    known!(libc::IPPROTO_IPV6, libc::IPV6_RECVERR, "IPV6_RECVERR", Int, V6),
    known!(libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, "IPV6_RECVTCLASS", Int, V6),
    known!(libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER", Int, V6),
    known!(libc::IPPROTO_IPV6, IPV6_FREEBIND, "IPV6_FREEBIND", Int, V6),
    known!(libc::IPPROTO_IPV6, IPV6_TRANSPARENT, "IPV6_TRANSPARENT", Int, V6),
    known!(libc::IPPROTO_IP, libc::IP_TOS, "IP_TOS", Int, V4),
    known!(libc::IPPROTO_IP, libc::IP_TTL, "IP_TTL", Int, V4),
    known!(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, "IP_MTU_DISCOVER", Int, V4),
    known!(libc::IPPROTO_IP, libc::IP_RECVERR, "IP_RECVERR", Int, V4),
    known!(libc::IPPROTO_IP, libc::IP_PKTINFO, "IP_PKTINFO", Int, V4),
    known!(libc::IPPROTO_IP, libc::IP_RECVTOS, "IP_RECVTOS", Int, V4),
    known!(libc::IPPROTO_IP, libc::IP_RECVTTL, "IP_RECVTTL", Int, V4),
    known!(libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, "IP_MULTICAST_TTL", Int, UdpV4),
    known!(libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP", Int, UdpV4),
    known!(libc::IPPROTO_IP, libc::IP_FREEBIND, "IP_FREEBIND", Int, V4),
    known!(libc::IPPROTO_IP, libc::IP_TRANSPARENT, "IP_TRANSPARENT", Int, V4),
    known!(libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, "IP_BIND_ADDRESS_NO_PORT", Int, V4),
    known!(libc::IPPROTO_TCP, libc::TCP_NODELAY, "TCP_NODELAY", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_CORK, "TCP_CORK", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, "TCP_KEEPINTVL", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, "TCP_KEEPCNT", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_FASTOPEN, "TCP_FASTOPEN", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_SYNCNT, "TCP_SYNCNT", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_LINGER2, "TCP_LINGER2", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP, "TCP_WINDOW_CLAMP", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_MAXSEG, "TCP_MAXSEG", Int, Tcp),
    known!(libc::IPPROTO_TCP, libc::TCP_CONGESTION, "TCP_CONGESTION", Text, Tcp),
    // After IP_TOS, which sets the priority from the TOS bits.
    known!(libc::SOL_SOCKET, libc::SO_PRIORITY, "SO_PRIORITY", Int, Any),
];

/// What a socket is, for choosing its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub family: i32,
    pub kind: i32,
    pub protocol: i32,
}

impl Kind {
    fn has(self, applies: Applies) -> bool {
        let inet = matches!(self.family, libc::AF_INET | libc::AF_INET6);
        match applies {
            Applies::Any => true,
            Applies::Inet => inet,
            Applies::Tcp => inet && self.kind == libc::SOCK_STREAM,
            Applies::Udp => inet && self.kind == libc::SOCK_DGRAM,
            Applies::V4 => self.family == libc::AF_INET,
            Applies::V6 => self.family == libc::AF_INET6,
            Applies::UdpV4 => self.family == libc::AF_INET && self.kind == libc::SOCK_DGRAM,
            Applies::UdpV6 => self.family == libc::AF_INET6 && self.kind == libc::SOCK_DGRAM,
        }
    }

    /// A fresh socket of this kind, in crp.
    pub fn fresh(self) -> Result<std::os::fd::OwnedFd, Errno> {
        use std::os::fd::FromRawFd;
        // SAFETY: socket takes no pointers.
        let raw = unsafe { libc::socket(self.family, self.kind | libc::SOCK_CLOEXEC, self.protocol) };
        if raw < 0 {
            return Err(Errno::last());
        }
        // SAFETY: socket returned a new descriptor nothing else owns.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })
    }
}

fn known(level: i32, name: i32) -> Option<&'static Known> {
    KNOWN.iter().find(|known| known.level == level && known.name == name)
}

/// The name crp shows for an option: `TCP_NODELAY`.
pub fn label(level: i32, name: i32) -> String {
    known(level, name).map_or_else(|| format!("option {level}/{name}"), |known| known.label.to_owned())
}

/// How an option's value reads: `1`, `on 5 s`, `2.500 s`, `cubic`.
pub fn shown_value(option: &SocketOption) -> String {
    let int_at =
        |at: usize| option.value.get(at..at + 4).and_then(|bytes| bytes.try_into().ok()).map_or(0, i32::from_ne_bytes);
    match known(option.level, option.name).map(|known| known.shape) {
        Some(Shape::Linger) if int_at(0) != 0 => format!("on {} s", int_at(4)),
        Some(Shape::Linger) => "off".to_owned(),
        Some(Shape::Timeval) => {
            let long_at = |at: usize| {
                option.value.get(at..at + 8).and_then(|bytes| bytes.try_into().ok()).map_or(0, i64::from_ne_bytes)
            };
            format!("{}.{:06} s", long_at(0), long_at(8))
        }
        Some(Shape::Text) => {
            String::from_utf8_lossy(option.value.split(|byte| *byte == 0).next().unwrap_or_default()).into_owned()
        }
        _ => int_at(0).to_string(),
    }
}

fn value_length(shape: Shape) -> usize {
    match shape {
        Shape::Int => 4,
        Shape::Linger => size_of::<libc::linger>(),
        Shape::Timeval => size_of::<libc::timeval>(),
        Shape::Text => 64,
    }
}

/// getsockopt of `option` on `socket`, as bytes.
fn get(socket: BorrowedFd<'_>, option: &Known) -> Result<Vec<u8>, Errno> {
    let mut value = vec![0u8; value_length(option.shape)];
    let mut length = super::address::socklen(value.len());
    // SAFETY: value and length are valid and writable for the length given.
    let result = unsafe {
        libc::getsockopt(socket.as_raw_fd(), option.level, option.name, value.as_mut_ptr().cast(), &raw mut length)
    };
    if result < 0 {
        return Err(Errno::last());
    }
    value.truncate(length as usize);
    if option.shape == Shape::Text {
        // A name is compared and kept up to its end.
        let end = value.iter().position(|byte| *byte == 0).unwrap_or(value.len());
        value.truncate(end);
    }
    Ok(value)
}

/// setsockopt of `value` on `socket`.
pub fn set(socket: BorrowedFd<'_>, option: &SocketOption) -> Result<(), Errno> {
    let (name, value) = match (option.level, option.name) {
        // getsockopt reports twice what was asked; the FORCE forms let crp
        // (with CAP_NET_ADMIN) set any size, as the process may have been
        // allowed to by a larger net.core.rmem_max.
        (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF) => {
            let doubled = option.value.get(..4).and_then(|bytes| bytes.try_into().ok()).map_or(0, i32::from_ne_bytes);
            let forced = if option.name == libc::SO_RCVBUF { libc::SO_RCVBUFFORCE } else { libc::SO_SNDBUFFORCE };
            (forced, (doubled / 2).to_ne_bytes().to_vec())
        }
        _ => (option.name, option.value.clone()),
    };
    // SAFETY: the value is valid for its length; setsockopt only reads it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            option.level,
            name,
            value.as_ptr().cast(),
            super::address::socklen(value.len()),
        )
    };
    if result < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// The options of `socket` that differ from a fresh socket `fresh` of the
/// same kind. An option the kernel does not answer for this socket is left
/// out (it cannot have been set either).
pub fn capture(socket: BorrowedFd<'_>, fresh: BorrowedFd<'_>, kind: Kind) -> Vec<SocketOption> {
    let mut options = Vec::new();
    for option in KNOWN.iter().filter(|option| kind.has(option.applies)) {
        let Ok(value) = get(socket, option) else { continue };
        if get(fresh, option).is_ok_and(|default| default == value) {
            continue;
        }
        options.push(SocketOption { level: option.level, name: option.name, value });
    }
    options
}

/// Sets each of `options` on `socket` whose value differs there now.
pub fn apply(socket: BorrowedFd<'_>, options: &[SocketOption]) -> Result<(), (String, Errno)> {
    for option in options {
        let Some(known) = known(option.level, option.name) else { continue };
        if get(socket, known).is_ok_and(|now| now == option.value) {
            continue;
        }
        set(socket, option).map_err(|errno| (label(option.level, option.name), errno))?;
    }
    Ok(())
}

/// Refuses an option crp does not know or whose value has the wrong size.
pub fn check(options: &[SocketOption], field: impl Fn() -> String) -> Result<(), Invalid> {
    for option in options {
        let Some(known) = known(option.level, option.name) else {
            return Err(Invalid::new(field(), format!("has unknown option {}/{}", option.level, option.name)));
        };
        let fits = match known.shape {
            Shape::Text => option.value.len() < value_length(Shape::Text),
            shape => option.value.len() == value_length(shape),
        };
        if !fits {
            return Err(Invalid::new(field(), format!("has {} of {} bytes", known.label, option.value.len())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn only_options_that_differ_from_a_fresh_socket_are_kept_and_set_again() {
        let kind = Kind { family: libc::AF_INET, kind: libc::SOCK_STREAM, protocol: 0 };
        let socket = kind.fresh().unwrap();
        let one =
            SocketOption { level: libc::IPPROTO_TCP, name: libc::TCP_NODELAY, value: 1i32.to_ne_bytes().to_vec() };
        set(socket.as_fd(), &one).unwrap();
        let linger = libc::linger { l_onoff: 1, l_linger: 5 };
        // SAFETY: a linger is plain bytes.
        let linger_bytes: [u8; 8] = unsafe { std::mem::transmute(linger) };
        let lingering = SocketOption { level: libc::SOL_SOCKET, name: libc::SO_LINGER, value: linger_bytes.to_vec() };
        set(socket.as_fd(), &lingering).unwrap();
        let fresh = kind.fresh().unwrap();
        let captured = capture(socket.as_fd(), fresh.as_fd(), kind);
        assert_eq!(captured, [lingering.clone(), one.clone()]);
        assert_eq!(shown_value(&captured[0]), "on 5 s");
        check(&captured, || "socket".into()).unwrap();
        let restored = kind.fresh().unwrap();
        apply(restored.as_fd(), &captured).unwrap();
        assert_eq!(capture(restored.as_fd(), fresh.as_fd(), kind), captured);
    }
}
