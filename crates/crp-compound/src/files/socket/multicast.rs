//! Multicast memberships of a UDP socket (IP_ADD_MEMBERSHIP,
//! IPV6_JOIN_GROUP, MCAST_JOIN_SOURCE_GROUP...). The kernel lists no
//! socket's memberships, but it lists every group joined on each interface
//! of the network namespace (/proc/PID/net/igmp and igmp6), and
//! `getsockopt(MCAST_MSFILTER)` for one (interface, group) answers with the
//! socket's filter (mode and sources) when the socket joined it, and
//! EADDRNOTAVAIL when it did not. So each group listed is asked about; at
//! the restore each membership is joined again (`MCAST_JOIN_GROUP`) on the
//! interface of the same name and its filter set (`MCAST_MSFILTER`). A
//! kernel without those lists (CONFIG_IP_MULTICAST off: the lab kernel)
//! gives no way to find a socket's groups: they are lost there (README).

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

const MCAST_JOIN_GROUP: i32 = 42;
const MCAST_MSFILTER: i32 = 48;
/// `gf_fmode`: sources listed are excluded (every other one is received).
const MCAST_EXCLUDE: u32 = 0;
/// The size of a sockaddr_storage, and where the fields of a group_filter are.
const STORAGE: usize = 128;
const GROUP_AT: usize = 8;
const FMODE_AT: usize = 136;
const NUMSRC_AT: usize = 140;
const SOURCES_AT: usize = 144;
/// The most sources crp reads back for one membership.
pub const MOST_SOURCES: usize = 64;

/// One group a socket joined, on one interface.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Membership {
    /// The interface's name (its index may differ at the restore).
    pub interface: String,
    /// The group's address: 4 bytes (IPv4) or 16 (IPv6).
    pub group: Vec<u8>,
    /// Only `sources` are received (MCAST_INCLUDE); else all but them.
    pub include: bool,
    /// Addresses of the same size as the group's.
    pub sources: Vec<Vec<u8>>,
}

/// The (interface index, name, group) pairs joined on the interfaces of
/// `pid`'s network namespace, for `family`.
fn joined_groups(pid: i32, family: i32) -> Vec<(u32, String, Vec<u8>)> {
    let mut groups = Vec::new();
    if family == libc::AF_INET {
        // "Idx Device : Count Querier", then one indented line per group:
        // "Group Users Timer Reporter", the group as the hex of its
        // network-order word read in host order.
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/igmp")) else { return groups };
        let mut device: Option<(u32, String)> = None;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !line.starts_with(char::is_whitespace) {
                // A name of 10 characters or more runs into the colon.
                let name = fields.get(1).map(|name| name.trim_end_matches(':').to_owned());
                device = fields.first().and_then(|index| index.parse().ok()).zip(name);
            } else if let (Some((index, name)), Some(Ok(word))) =
                (&device, fields.first().map(|group| u32::from_str_radix(group, 16)))
            {
                groups.push((*index, name.clone(), word.to_ne_bytes().to_vec()));
            }
        }
    } else {
        // "ifindex name group(32 hex digits) users flags timer".
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/igmp6")) else { return groups };
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(index), Some(name), Some(group)) = (fields.first(), fields.get(1), fields.get(2)) else {
                continue;
            };
            let bytes: Option<Vec<u8>> = (0..16)
                .map(|at| group.get(at * 2..at * 2 + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
                .collect();
            if let (Ok(index), Some(bytes)) = (index.parse(), bytes) {
                groups.push((index, (*name).to_owned(), bytes));
            }
        }
    }
    groups
}

/// A sockaddr_in or sockaddr_in6 of `address` (4 or 16 bytes) into `into`.
fn write_address(into: &mut [u8], address: &[u8]) {
    if address.len() == 4 {
        into[..2].copy_from_slice(&u16::try_from(libc::AF_INET).unwrap_or(0).to_ne_bytes());
        into[4..8].copy_from_slice(address);
    } else {
        into[..2].copy_from_slice(&u16::try_from(libc::AF_INET6).unwrap_or(0).to_ne_bytes());
        into[8..24].copy_from_slice(address);
    }
}

fn read_address(from: &[u8], length: usize) -> Vec<u8> {
    if length == 4 { from[4..8].to_vec() } else { from[8..24].to_vec() }
}

fn level_of(family: i32) -> i32 {
    if family == libc::AF_INET { libc::IPPROTO_IP } else { libc::IPPROTO_IPV6 }
}

/// The memberships of `socket` (of `family`, of process `pid`); an error
/// names what crp cannot keep.
pub fn capture(pid: i32, socket: BorrowedFd<'_>, family: i32) -> Result<Vec<Membership>, String> {
    let mut memberships = Vec::new();
    let mut seen: Vec<(u32, Vec<u8>)> = Vec::new();
    for (index, interface, group) in joined_groups(pid, family) {
        if seen.contains(&(index, group.clone())) {
            continue;
        }
        seen.push((index, group.clone()));
        let mut filter = vec![0u8; SOURCES_AT + MOST_SOURCES * STORAGE];
        filter[..4].copy_from_slice(&index.to_ne_bytes());
        write_address(&mut filter[GROUP_AT..GROUP_AT + STORAGE], &group);
        filter[NUMSRC_AT..NUMSRC_AT + 4].copy_from_slice(&u32::try_from(MOST_SOURCES).unwrap_or(0).to_ne_bytes());
        let mut length = super::address::socklen(filter.len());
        // SAFETY: the buffer and its length are valid and writable.
        let result = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                level_of(family),
                MCAST_MSFILTER,
                filter.as_mut_ptr().cast(),
                &raw mut length,
            )
        };
        if result < 0 {
            continue; // not joined by this socket (EADDRNOTAVAIL, ENODEV)
        }
        let word = |at: usize| u32::from_ne_bytes([filter[at], filter[at + 1], filter[at + 2], filter[at + 3]]);
        let count = word(NUMSRC_AT) as usize;
        if count > MOST_SOURCES {
            return Err(format!("a multicast membership with {count} sources (crp keeps {MOST_SOURCES} at most)"));
        }
        let sources = (0..count)
            .map(|source| read_address(&filter[SOURCES_AT + source * STORAGE..][..STORAGE], group.len()))
            .collect();
        memberships.push(Membership { interface, group, include: word(FMODE_AT) != MCAST_EXCLUDE, sources });
    }
    Ok(memberships)
}

/// Joins each membership again on `socket` (of `family`), with its filter.
pub fn apply(socket: BorrowedFd<'_>, family: i32, memberships: &[Membership]) -> Result<(), (&'static str, Errno)> {
    for membership in memberships {
        let name = std::ffi::CString::new(membership.interface.as_str()).map_err(|_| ("name", Errno::EINVAL))?;
        // SAFETY: the name is a valid C string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(("find the interface of a multicast membership of", Errno::ENODEV));
        }
        let mut request = [0u8; GROUP_AT + STORAGE];
        request[..4].copy_from_slice(&index.to_ne_bytes());
        write_address(&mut request[GROUP_AT..], &membership.group);
        set(socket, family, MCAST_JOIN_GROUP, &request).map_err(|errno| ("join a multicast group with", errno))?;
        if membership.include || !membership.sources.is_empty() {
            let mut filter = vec![0u8; SOURCES_AT + membership.sources.len().max(1) * STORAGE];
            filter[..4].copy_from_slice(&index.to_ne_bytes());
            write_address(&mut filter[GROUP_AT..GROUP_AT + STORAGE], &membership.group);
            filter[FMODE_AT..FMODE_AT + 4].copy_from_slice(&u32::from(membership.include).to_ne_bytes());
            let count = u32::try_from(membership.sources.len()).unwrap_or(0);
            filter[NUMSRC_AT..NUMSRC_AT + 4].copy_from_slice(&count.to_ne_bytes());
            for (at, source) in membership.sources.iter().enumerate() {
                write_address(&mut filter[SOURCES_AT + at * STORAGE..][..STORAGE], source);
            }
            filter.truncate(SOURCES_AT + membership.sources.len() * STORAGE);
            set(socket, family, MCAST_MSFILTER, &filter).map_err(|errno| ("set a multicast filter of", errno))?;
        }
    }
    Ok(())
}

fn set(socket: BorrowedFd<'_>, family: i32, name: i32, value: &[u8]) -> Result<(), Errno> {
    let length = super::address::socklen(value.len());
    // SAFETY: the value is valid for its length; setsockopt only reads it.
    let result = unsafe { libc::setsockopt(socket.as_raw_fd(), level_of(family), name, value.as_ptr().cast(), length) };
    if result < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Refuses memberships the restore could not join: a group of the wrong
/// size or not multicast, sources of another size, too many, a bad name.
pub fn check(family: i32, memberships: &[Membership]) -> Result<(), String> {
    let size = if family == libc::AF_INET { 4 } else { 16 };
    for membership in memberships {
        let multicast = match membership.group.as_slice() {
            [first, ..] if size == 4 => first & 0xf0 == 0xe0,
            [first, ..] => *first == 0xff,
            [] => false,
        };
        if membership.group.len() != size || !multicast {
            return Err(format!("has a multicast membership of {:?}, not a group of its family", membership.group));
        }
        if membership.sources.len() > MOST_SOURCES || membership.sources.iter().any(|source| source.len() != size) {
            return Err("has a multicast membership with sources crp cannot set".to_owned());
        }
        if membership.interface.is_empty()
            || membership.interface.len() >= libc::IF_NAMESIZE
            || membership.interface.contains('\0')
        {
            return Err(format!("has a multicast membership on {:?}, not an interface name", membership.interface));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
    use std::os::fd::AsFd;

    fn own() -> i32 {
        i32::try_from(std::process::id()).unwrap()
    }

    #[test]
    fn memberships_are_found_with_their_filters_and_joined_again() {
        let member = UdpSocket::bind("0.0.0.0:0").unwrap();
        member.join_multicast_v4(&Ipv4Addr::new(239, 9, 9, 9), &Ipv4Addr::LOCALHOST).unwrap();
        let bystander = UdpSocket::bind("0.0.0.0:0").unwrap();
        let found = capture(own(), member.as_fd(), libc::AF_INET).unwrap();
        let expected =
            Membership { interface: "lo".into(), group: vec![239, 9, 9, 9], include: false, sources: vec![] };
        assert_eq!(found, std::slice::from_ref(&expected));
        assert_eq!(capture(own(), bystander.as_fd(), libc::AF_INET).unwrap(), []);
        let again = UdpSocket::bind("0.0.0.0:0").unwrap();
        apply(again.as_fd(), libc::AF_INET, &found).unwrap();
        assert_eq!(capture(own(), again.as_fd(), libc::AF_INET).unwrap(), [expected]);
        check(libc::AF_INET, &found).unwrap();
    }

    #[test]
    fn ipv6_memberships_are_found_too() {
        let Ok(member) = UdpSocket::bind("[::]:0") else { return }; // no IPv6 here
        let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x1, 0x77);
        if member.join_multicast_v6(&group, 1).is_err() {
            return; // no IPv6 multicast on interface 1 here
        }
        let found = capture(own(), member.as_fd(), libc::AF_INET6).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].group.as_slice(), found[0].include), (&group.octets()[..], false));
    }
}
