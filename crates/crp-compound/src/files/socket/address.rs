//! Socket addresses as the image keeps them, and their `sockaddr` forms:
//! what getsockname/getpeername and recvmsg give, and what bind, connect
//! and sendto take.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::valid::Invalid;

/// The longest unix socket name (`sun_path`).
pub const UNIX_PATH_MAX: usize = 108;

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Address {
    /// A unix socket's name: a path, or with a leading NUL an abstract name
    /// (an autobound socket has a five-hex-digit abstract name).
    Unix(Vec<u8>),
    V4 {
        ip: [u8; 4],
        port: u16,
    },
    V6 {
        ip: [u8; 16],
        port: u16,
        flowinfo: u32,
        scope_id: u32,
    },
}

/// A buffer length as the socket calls take it.
pub fn socklen(length: usize) -> libc::socklen_t {
    libc::socklen_t::try_from(length).unwrap_or(libc::socklen_t::MAX)
}

/// An address family as `sa_family_t`.
fn sa_family(family: i32) -> libc::sa_family_t {
    libc::sa_family_t::try_from(family).unwrap_or_default()
}

/// A `sockaddr_storage` and the length that matters of it.
pub struct Raw {
    pub storage: libc::sockaddr_storage,
    pub length: libc::socklen_t,
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Raw").field("bytes", &self.bytes()).finish()
    }
}

impl Raw {
    pub fn empty() -> Self {
        // SAFETY: an all-zero sockaddr_storage is valid (AF_UNSPEC).
        let storage = unsafe { std::mem::zeroed() };
        Self { storage, length: socklen(size_of::<libc::sockaddr_storage>()) }
    }

    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&raw const self.storage).cast()
    }

    pub fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&raw mut self.storage).cast()
    }

    /// The bytes of the address, as sendto or bind read them.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the storage is plain bytes for its whole size, and the
        // length never exceeds it.
        let all = unsafe {
            std::slice::from_raw_parts((&raw const self.storage).cast::<u8>(), size_of::<libc::sockaddr_storage>())
        };
        &all[..(self.length as usize).min(all.len())]
    }
}

impl Address {
    /// The address a kernel wrote into `raw`, or None for an unnamed unix
    /// socket, an unbound inet one (port 0) or an unknown family.
    pub fn from_raw(raw: &Raw) -> Option<Self> {
        let bytes = raw.bytes();
        let family = i32::from(u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?));
        match family {
            libc::AF_UNIX => Self::unix(bytes.get(2..)?),
            libc::AF_INET => {
                let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
                let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
                (port != 0).then_some(Self::V4 { ip, port })
            }
            libc::AF_INET6 => {
                let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
                let flowinfo = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
                let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
                let scope_id = u32::from_ne_bytes(bytes.get(24..28)?.try_into().ok()?);
                (port != 0).then_some(Self::V6 { ip, port, flowinfo, scope_id })
            }
            _ => None,
        }
    }

    /// A unix name as the kernel gives it: a path may carry its
    /// terminating NUL; an abstract name is every byte the length gives.
    pub fn unix(name: &[u8]) -> Option<Self> {
        let name = match name.first() {
            Some(0) => name.to_vec(),
            _ => name.split(|byte| *byte == 0).next().unwrap_or_default().to_vec(),
        };
        (!name.is_empty()).then_some(Self::Unix(name))
    }

    /// The `sockaddr` bind, connect and sendto take.
    pub fn to_raw(&self) -> Raw {
        let mut raw = Raw::empty();
        // SAFETY: each arm writes within the storage, which is larger than
        // every sockaddr type, through a pointer of the family's type.
        unsafe {
            match self {
                Self::Unix(name) => {
                    let address = raw.as_mut_ptr().cast::<libc::sockaddr_un>();
                    (*address).sun_family = sa_family(libc::AF_UNIX);
                    let length = name.len().min(UNIX_PATH_MAX);
                    for (index, byte) in name[..length].iter().enumerate() {
                        (*address).sun_path[index] = *byte as libc::c_char;
                    }
                    raw.length = socklen(2 + length);
                }
                Self::V4 { ip, port } => {
                    let address = raw.as_mut_ptr().cast::<libc::sockaddr_in>();
                    (*address).sin_family = sa_family(libc::AF_INET);
                    (*address).sin_port = port.to_be();
                    (*address).sin_addr.s_addr = u32::from_ne_bytes(*ip);
                    raw.length = socklen(size_of::<libc::sockaddr_in>());
                }
                Self::V6 { ip, port, flowinfo, scope_id } => {
                    let address = raw.as_mut_ptr().cast::<libc::sockaddr_in6>();
                    (*address).sin6_family = sa_family(libc::AF_INET6);
                    (*address).sin6_port = port.to_be();
                    (*address).sin6_flowinfo = flowinfo.to_be();
                    (*address).sin6_addr.s6_addr = *ip;
                    (*address).sin6_scope_id = *scope_id;
                    raw.length = socklen(size_of::<libc::sockaddr_in6>());
                }
            }
        }
        raw
    }

    pub fn family(&self) -> i32 {
        match self {
            Self::Unix(_) => libc::AF_UNIX,
            Self::V4 { .. } => libc::AF_INET,
            Self::V6 { .. } => libc::AF_INET6,
        }
    }

    /// The path of a unix socket bound to a path (not an abstract name).
    pub fn path(&self) -> Option<&[u8]> {
        match self {
            Self::Unix(name) if name.first() != Some(&0) => Some(name),
            _ => None,
        }
    }

    /// Whether an inet address is the wildcard (0.0.0.0 or ::).
    pub fn is_wildcard(&self) -> bool {
        match self {
            Self::V4 { ip, .. } => *ip == [0; 4],
            Self::V6 { ip, .. } => *ip == [0; 16],
            Self::Unix(_) => false,
        }
    }

    /// The address a sender on this host reaches this one at: itself, or
    /// the loopback address for a wildcard.
    pub fn reachable(&self) -> Self {
        match self {
            Self::V4 { port, .. } if self.is_wildcard() => Self::V4 { ip: [127, 0, 0, 1], port: *port },
            Self::V6 { port, .. } if self.is_wildcard() => {
                Self::V6 { ip: Ipv6Addr::LOCALHOST.octets(), port: *port, flowinfo: 0, scope_id: 0 }
            }
            other => other.clone(),
        }
    }

    /// Refuses an address bind or connect could not take as recorded.
    pub fn check(&self, field: impl Fn() -> String) -> Result<(), Invalid> {
        match self {
            Self::Unix(name) if name.is_empty() || name.len() > UNIX_PATH_MAX => {
                Err(Invalid::new(field(), format!("is a unix name of {} bytes, not 1..={UNIX_PATH_MAX}", name.len())))
            }
            Self::Unix(name) if name[0] != 0 && name.contains(&0) => {
                Err(Invalid::new(field(), "is a unix path with a NUL byte in it"))
            }
            Self::Unix(name) if name[0] != b'/' && name[0] != 0 => {
                Err(Invalid::new(field(), "is a relative unix path"))
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Address {
    /// `/run/x.sock`, `@abstract`, `127.0.0.1:80`, `[::1]:80`.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(name) => match name.split_first() {
                Some((0, rest)) => write!(formatter, "@{}", String::from_utf8_lossy(rest).escape_debug()),
                _ => write!(formatter, "{}", String::from_utf8_lossy(name)),
            },
            Self::V4 { ip, port } => write!(formatter, "{}:{port}", Ipv4Addr::from(*ip)),
            Self::V6 { ip, port, scope_id: 0, .. } => write!(formatter, "[{}]:{port}", Ipv6Addr::from(*ip)),
            Self::V6 { ip, port, scope_id, .. } => write!(formatter, "[{}%{scope_id}]:{port}", Ipv6Addr::from(*ip)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_sockaddr() {
        for address in [
            Address::Unix(b"/run/crp.sock".to_vec()),
            Address::Unix(b"\0abstract".to_vec()),
            Address::V4 { ip: [127, 0, 0, 1], port: 8080 },
            Address::V6 { ip: Ipv6Addr::LOCALHOST.octets(), port: 53, flowinfo: 7, scope_id: 2 },
        ] {
            assert_eq!(Address::from_raw(&address.to_raw()), Some(address.clone()), "{address}");
        }
        assert_eq!(Address::from_raw(&Address::V4 { ip: [0; 4], port: 0 }.to_raw()), None, "unbound");
        assert_eq!(Address::Unix(b"\0ab".to_vec()).to_string(), "@ab");
        assert_eq!(Address::V4 { ip: [0; 4], port: 9 }.reachable().to_string(), "127.0.0.1:9");
        assert!(Address::Unix(b"rel".to_vec()).check(|| "x".into()).is_err());
    }
}
