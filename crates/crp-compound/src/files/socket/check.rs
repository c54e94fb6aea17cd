//! The checks of a socket before a restore creates anything (the image's
//! values, then this host: addresses free, options this kernel takes,
//! outside peers handed over), and what a dump says it does not keep.

use std::os::fd::AsFd;

use nix::errno::Errno;

use super::{Address, Peer, RCV_SHUTDOWN, SEND_SHUTDOWN, SocketFile, bind, describe, options, unix};
use crate::error::{CompoundError, Unsupported};
use crate::files::{FdTable, FdTarget, Streams};
use crate::valid::Invalid;

/// Refuses a socket the restore could not make as recorded.
pub(crate) fn check(socket: &SocketFile, field: &dyn Fn() -> String) -> Result<(), Invalid> {
    let valid_kind = match socket.family {
        libc::AF_UNIX => [libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&socket.kind),
        libc::AF_INET | libc::AF_INET6 => matches!(
            (socket.kind, socket.protocol),
            (libc::SOCK_STREAM, libc::IPPROTO_TCP) | (libc::SOCK_DGRAM, libc::IPPROTO_UDP)
        ),
        _ => false,
    };
    if !valid_kind {
        return Err(Invalid::new(
            field(),
            format!("is {}, not a socket crp makes", describe(socket.family, socket.kind, socket.protocol)),
        ));
    }
    let addresses = [
        socket.local.as_ref(),
        match &socket.peer {
            Peer::Address(peer) => Some(peer),
            _ => None,
        },
    ];
    for address in addresses.into_iter().flatten() {
        if address.family() != socket.family {
            return Err(Invalid::new(field(), format!("has address {address} of another family")));
        }
        address.check(field)?;
    }
    if socket.bound_file.is_some() != socket.local.as_ref().is_some_and(|local| local.path().is_some()) {
        return Err(Invalid::new(field(), "has a bound file without a path, or a path without one"));
    }
    if socket.backlog.is_some() && (socket.kind == libc::SOCK_DGRAM || socket.peer != Peer::None) {
        return Err(Invalid::new(field(), "listens but is a datagram socket or connected"));
    }
    if !socket.queued.is_empty() && socket.kind != libc::SOCK_DGRAM {
        return Err(Invalid::new(field(), "holds datagrams but is not a datagram socket"));
    }
    if !socket.queued.is_empty() && socket.local.is_none() {
        return Err(Invalid::new(field(), "holds datagrams but has no address to send them to"));
    }
    if socket.queued.iter().any(|datagram| datagram.data.is_empty() || datagram.data.len() > 65_507) {
        return Err(Invalid::new(field(), "holds an empty datagram or one larger than a datagram can be"));
    }
    if !socket.memberships.is_empty() && (socket.family == libc::AF_UNIX || socket.kind != libc::SOCK_DGRAM) {
        return Err(Invalid::new(field(), "has multicast memberships but is not a UDP socket"));
    }
    super::multicast::check(socket.family, &socket.memberships).map_err(|what| Invalid::new(field(), what))?;
    let tcp = socket.family != libc::AF_UNIX && socket.kind == libc::SOCK_STREAM;
    match &socket.connection {
        Some(_) if !tcp || socket.local.is_none() || !matches!(socket.peer, Peer::Address(_)) => {
            return Err(Invalid::new(field(), "is a TCP connection without addresses, or not TCP"));
        }
        Some(connection) if connection.unsent as usize > connection.send_queue.len() => {
            return Err(Invalid::new(field(), "has more unsent bytes than its send queue holds"));
        }
        None if tcp && socket.peer != Peer::None => {
            return Err(Invalid::new(field(), "is a connected TCP socket without its connection"));
        }
        _ => {}
    }
    if socket.shutdown & !(RCV_SHUTDOWN | SEND_SHUTDOWN) != 0 {
        return Err(Invalid::new(field(), format!("has shutdown bits {:#x}", socket.shutdown)));
    }
    options::check(&socket.options, field)
}

/// Refuses, before anything is created, a socket this host cannot take
/// back: its address in use or taken by something else, an option this
/// kernel does not accept for it, a datagram peer that is not there.
pub(crate) fn check_host(table: &FdTable, fd: i32, socket: &SocketFile) -> Result<(), CompoundError> {
    let described = format!("fd {fd} ({} socket)", socket.kind_name());
    let taken = |address: &Address, reason: String| CompoundError::AddressTaken {
        socket: described.clone(),
        address: address.to_string(),
        reason,
    };
    let probe = socket.options_kind().fresh().map_err(|errno| CompoundError::Io {
        action: "make a socket like the one of",
        path: format!("fd {fd}").into(),
        source: errno.into(),
    })?;
    let probe = probe.as_fd();
    if let Err((option, errno)) = options::apply(probe, &socket.options) {
        return Err(CompoundError::Incompatible {
            what: format!("fd {fd} ({} socket)", socket.kind_name()),
            reason: format!("this kernel does not accept {option} on it: {errno}"),
        });
    }
    if let Some(local) = &socket.local {
        match local.path() {
            Some(path) => unix::check_path_free(path, socket.kind).map_err(|reason| taken(local, reason))?,
            None => {
                if let Err(errno) = bind(probe, local) {
                    let hint = if errno == Errno::EADDRINUSE { " (does the original still run?)" } else { "" };
                    return Err(taken(local, format!("{}{hint}", errno.desc())));
                }
            }
        }
    }
    if let Peer::Address(Address::Unix(name)) = &socket.peer {
        let peer = Address::Unix(name.clone());
        let restored_here = table
            .files
            .iter()
            .any(|file| matches!(&file.target, FdTarget::Socket(other) if other.local.as_ref() == Some(&peer)));
        if !restored_here && let Err(errno) = unix::connect_probe(&peer, socket.kind) {
            return Err(CompoundError::Incompatible {
                what: described,
                reason: format!("its datagram peer {peer} is not there to connect to again: {}", errno.desc()),
            });
        }
    }
    Ok(())
}

/// The sockets of `table` connected outside the process to which the user
/// handed nothing: refused before the restore creates anything.
pub fn check_outside_peers(table: &FdTable, streams: &Streams) -> Result<(), CompoundError> {
    for descriptor in &table.descriptors {
        let Some(FdTarget::Socket(socket)) = table.file_of(descriptor).map(|file| &file.target) else { continue };
        let Peer::Outside { inode, name } = &socket.peer else { continue };
        if streams.chosen_for(descriptor.fd).is_some() {
            continue;
        }
        let fd = descriptor.fd;
        let named = name.as_ref().map(|name| format!(" bound to {name}")).unwrap_or_default();
        return Err(Unsupported {
            what: format!(
                "a {} socket connected to socket:[{inode}]{named}, outside the process, which crp cannot connect \
                 again as it was (hand the process a replacement with --fd {fd}=inherit|null|FILE)",
                socket.kind_name()
            ),
            location: format!("fd {fd} -> socket:[{}]", socket.inode),
        }
        .into());
    }
    Ok(())
}

/// What the dump of `table` does not keep, one sentence each.
pub fn warnings(table: &FdTable) -> Vec<String> {
    let mut warnings = Vec::new();
    for (index, pair) in table.socket_pairs.iter().enumerate() {
        let names: Vec<String> =
            pair.ends.iter().filter_map(|end| end.name.as_ref()).map(ToString::to_string).collect();
        if names.is_empty() {
            continue;
        }
        let fds: Vec<String> = table
            .descriptors
            .iter()
            .filter(|descriptor| {
                table.file_of(descriptor).is_some_and(|file| {
                    matches!(file.target, FdTarget::UnixPair { pair, .. } if usize::try_from(pair).is_ok_and(|pair| pair == index))
                })
            })
            .map(|descriptor| descriptor.fd.to_string())
            .collect();
        warnings.push(format!(
            "fds {}: a unix connection both of whose ends the process holds comes back as a socket pair, whose ends \
             have no names (getsockname/getpeername no longer give {})",
            fds.join(" and "),
            names.join(" and ")
        ));
    }
    for descriptor in &table.descriptors {
        let Some(FdTarget::Socket(socket)) = table.file_of(descriptor).map(|file| &file.target) else { continue };
        if table.shared_with(descriptor).is_some() {
            continue;
        }
        let fd = descriptor.fd;
        if socket.lost_connections > 0 {
            warnings.push(format!(
                "fd {fd}: {} connections waiting in the backlog of the listening {} socket{} are not kept (their \
                 clients see them reset)",
                socket.lost_connections,
                socket.kind_name(),
                socket.local.as_ref().map(|local| format!(" {local}")).unwrap_or_default()
            ));
        }
        let renamed =
            socket.queued.iter().filter(|datagram| socket.family == libc::AF_UNIX && datagram.source.is_some());
        let renamed = renamed.count();
        if renamed > 0 {
            warnings.push(format!(
                "fd {fd}: {renamed} datagrams waiting on the unix datagram socket come back from an unnamed sender \
                 (their senders' names are not kept)"
            ));
        }
        if let (Some(connection), Peer::Address(peer)) = (&socket.connection, &socket.peer)
            && connection.peer_outside
        {
            warnings.push(format!(
                "fd {fd}: the TCP connection to {peer} outside the process comes back only if the peer is still \
                 there at the restore; anything the peer sends until then resets it (crp does not hold the \
                 network back)"
            ));
        }
        if let Peer::Outside { inode, .. } = socket.peer {
            warnings.push(format!(
                "fd {fd}: the {} socket is connected to socket:[{inode}] outside the process: restoring needs \
                 `crp restore --fd {fd}=...`",
                socket.kind_name()
            ));
        }
    }
    warnings
}
