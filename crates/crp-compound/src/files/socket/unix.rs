//! What is particular to unix sockets that are not pairs: their name,
//! bound file, backlog and peer from sock_diag, and binding to a path
//! again (taking over the socket file the killed original left, refusing
//! a path something else holds now).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use nix::errno::Errno;

use super::{
    Address, BoundFile, Found, Peer, RCV_SHUTDOWN, SEND_SHUTDOWN, SocketFile, TCP_LISTEN, bind, connect, options,
};
use crate::error::CompoundError;

/// A unix socket's name, bound file, backlog, peer and shutdown state,
/// from sock_diag.
pub(super) fn unix_endpoints(
    file: &mut SocketFile,
    found: &Found<'_>,
    refuse: &dyn Fn(String) -> CompoundError,
) -> Result<(), CompoundError> {
    let record = |inode: u64| found.diag.iter().find(|socket| socket.inode == inode);
    let Some(socket) = record(file.inode) else {
        return Err(refuse("a unix socket sock_diag does not know (another network namespace?)".to_owned()));
    };
    file.local = socket.name.as_deref().and_then(Address::unix);
    file.shutdown = socket.shutdown & (RCV_SHUTDOWN | SEND_SHUTDOWN);
    if let Some(local) = &file.local {
        if local.path().is_some_and(|path| path.first() != Some(&b'/')) {
            return Err(refuse(format!("a unix socket bound to the relative path {local}")));
        }
        if let Some(path) = local.path() {
            file.bound_file = Some(bound_file(path, socket.bound_file));
        }
    }
    if socket.state == TCP_LISTEN {
        file.backlog = Some(socket.backlog);
        file.lost_connections = socket.queued;
        return Ok(());
    }
    let Some(peer_inode) = socket.peer else { return Ok(()) };
    let peer_name = record(peer_inode).and_then(|peer| peer.name.as_deref()).and_then(Address::unix);
    let inside = found.inside.contains(&peer_inode);
    file.peer = match (file.kind, inside, peer_name) {
        (libc::SOCK_DGRAM, _, Some(name)) => Peer::Address(name),
        (libc::SOCK_DGRAM, _, None) => {
            return Err(refuse(format!(
                "a unix datagram socket connected to the unnamed socket:[{peer_inode}] (not a socket pair)"
            )));
        }
        (_, true, _) => {
            return Err(refuse(format!(
                "a unix stream connection to socket:[{peer_inode}] inside the process with a named end (accepted \
                 from a listening socket)"
            )));
        }
        (_, false, name) => Peer::Outside { inode: peer_inode, name },
    };
    Ok(())
}

/// The file at `path`, as the restore should make it again.
pub(super) fn bound_file(path: &[u8], made: Option<(u64, u32)>) -> BoundFile {
    let path = OsStr::from_bytes(path);
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            let present = made.is_none_or(|(inode, device)| {
                // sock_diag gives the kernel's dev_t: major above bit 20.
                let same_device =
                    libc::major(metadata.dev()) == device >> 20 && libc::minor(metadata.dev()) == device & 0xf_ffff;
                metadata.ino() == inode && same_device
            });
            BoundFile { mode: metadata.mode() & 0o7777, uid: metadata.uid(), gid: metadata.gid(), present }
        }
        _ => BoundFile { mode: 0o777, uid: 0, gid: 0, present: false },
    }
}

/// Whether a unix socket can be bound at `path` again: nothing is there,
/// or a socket file nobody listens on any more (the original's, left when
/// it was killed), which the restore removes. Else why not.
pub(super) fn check_path_free(path: &[u8], kind: i32) -> Result<(), String> {
    let path_name = OsStr::from_bytes(path);
    let parent = std::path::Path::new(path_name).parent().unwrap_or(std::path::Path::new("/"));
    if !parent.is_dir() {
        return Err(format!("its directory {} does not exist", parent.display()));
    }
    match std::fs::symlink_metadata(path_name) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(format!("cannot look at the path: {error}")),
        Ok(metadata) if !metadata.file_type().is_socket() => {
            Err("something else than a socket is at that path now".to_owned())
        }
        Ok(_) => match connect_probe(&Address::Unix(path.to_vec()), kind) {
            Err(Errno::ECONNREFUSED) => Ok(()),
            Ok(()) => Err("a running socket is bound there (does the original still run?)".to_owned()),
            Err(errno) => Err(format!("a socket file is there that crp cannot tell is unused: {errno}")),
        },
    }
}

/// Connects a throwaway unix socket of `kind` to `address`.
pub(super) fn connect_probe(address: &Address, kind: i32) -> Result<(), Errno> {
    let probe = options::Kind { family: libc::AF_UNIX, kind, protocol: 0 }.fresh()?;
    connect(probe.as_fd(), address)
}

/// Binds a unix socket at its path: a socket file left there by the
/// original (which [`check_host`] found unused) is removed first; the new
/// file gets the old one's mode and owner (and goes again, in
/// [`remove_path_again`], if the original had removed it).
pub(super) fn bind_path(socket: BorrowedFd<'_>, local: &Address, path: &[u8], file: &BoundFile) -> Result<(), Errno> {
    let path = OsStr::from_bytes(path);
    if std::fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
    bind(socket, local)?;
    let io = |error: std::io::Error| Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(file.mode)).map_err(io)?;
    std::os::unix::fs::lchown(path, Some(file.uid), Some(file.gid)).map_err(io)
}

/// Removes again the path of a unix socket whose path the original had
/// removed (once its datagrams, sent to that path, are queued).
pub(super) fn remove_path_again(local: &Address, file: Option<&BoundFile>) -> Result<(), Errno> {
    let (Some(path), Some(file)) = (local.path(), file) else { return Ok(()) };
    if file.present {
        return Ok(());
    }
    std::fs::remove_file(OsStr::from_bytes(path))
        .map_err(|error| Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)))
}
