//! Established TCP connections both of whose ends the process holds,
//! through `TCP_REPAIR` (Linux 3.5+; CAP_NET_ADMIN): at the dump each end
//! is put in repair mode (so that killing the original sends neither FIN
//! nor RST), its sequence numbers, queues, MSS, window scales, SACK and
//! timestamp options and window are read; at the restore each end is made
//! in repair mode (bound and connected without a handshake, its queues put
//! back), and only once both ends exist is repair turned off and the bytes
//! that had never been sent sent.
//!
//! Repair mode is on only while crp reads an end (microseconds), and again
//! for the kill: [`Repaired`] keeps a duplicate of every end read, puts
//! them all in repair mode just before the original is killed and lets
//! them close so, silently. A dump that fails, is cancelled or leaves the
//! process running never leaves an end in repair mode; a crp killed between
//! those last two steps takes the process with it (the dump sets
//! `PTRACE_O_EXITKILL` first: the image is complete by then), so its ends
//! close in repair mode as at the kill. Only a crp killed during the read
//! of an end (a few getsockopt calls) leaves that end in repair mode. Between the read
//! and the kill the frozen process sends nothing; a late acknowledgement
//! only makes the restored end send again bytes its peer already has,
//! which TCP drops.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;

use super::address::{Address, socklen};
use super::watchdog::{self, Restore};

pub(super) const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_REPAIR_OPTIONS: i32 = 22;
const TCP_TIMESTAMP: i32 = 24;
const TCP_REPAIR_WINDOW: i32 = 29;
/// Repair off without the window probe (Linux 4.16+).
pub(super) const TCP_REPAIR_OFF_NO_WP: i32 = -1;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
const TCP_NO_QUEUE: i32 = 0;
const SIOCOUTQNSD: libc::c_ulong = 0x894b;
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;

/// The dump option that lets a connection to a peer outside the process be
/// dumped (the peer is expected to still be there at the restore).
pub const OUTSIDE_OPTION: &str = "--tcp-established";

static OUTSIDE_ALLOWED: AtomicBool = AtomicBool::new(false);

/// Whether connections to peers outside the process are dumped (set once
/// per dump from [`OUTSIDE_OPTION`]).
pub fn allow_outside_peers(allowed: bool) {
    OUTSIDE_ALLOWED.store(allowed, Ordering::Relaxed);
}

pub fn outside_peers_allowed() -> bool {
    OUTSIDE_ALLOWED.load(Ordering::Relaxed)
}

/// One end of an established connection.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TcpConnection {
    /// The sequence number after the last byte queued to send (write_seq).
    pub send_seq: u32,
    /// The sequence number of the next byte to receive (rcv_nxt).
    pub receive_seq: u32,
    /// Bytes sent but not acknowledged, then bytes not sent yet.
    pub send_queue: Vec<u8>,
    /// How many of the last bytes of `send_queue` were never sent.
    pub unsent: u32,
    /// Bytes received that the process has not read.
    pub receive_queue: Vec<u8>,
    pub mss_clamp: u32,
    /// `tcpi_options`: TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE.
    pub options: u8,
    pub send_wscale: u8,
    pub receive_wscale: u8,
    /// TCP_TIMESTAMP (the timestamp clock, with its offset).
    pub timestamp: u32,
    /// TCP_REPAIR_WINDOW: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
    pub window: Option<[u32; 5]>,
    /// The peer was outside the process (dumped with [`OUTSIDE_OPTION`]).
    pub peer_outside: bool,
}

/// Duplicates of the dumped process's connection ends with their
/// SO_REUSEADDR, and whether they are in repair mode now.
static READ: Mutex<(Vec<(OwnedFd, i32)>, bool)> = Mutex::new((Vec::new(), false));

fn read_ends() -> std::sync::MutexGuard<'static, (Vec<(OwnedFd, i32)>, bool)> {
    READ.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The dump's hold on the connection ends it read, and on the watchdog
/// that puts back what a killed crp changed while it read a socket
/// ([`super::watchdog`]). Dropped, it takes the ends out of repair mode if
/// [`Repaired::before_kill`] put them in and lets them go (a failed dump, a
/// kill that failed, a process let run on), and ends the watchdog.
#[derive(Debug)]
pub struct Repaired(());

impl Repaired {
    pub fn guard() -> Self {
        read_ends().0.clear();
        watchdog::reset_moments();
        Self(())
    }

    /// Every socket is read and put back: the watchdog is ended (from
    /// here a killed crp leaves nothing changed).
    pub fn read_all(&self) {
        watchdog::finish();
    }

    /// Whether the dump read any connection (whose ends [`Self::before_kill`]
    /// puts in repair mode).
    pub fn holds_connections(&self) -> bool {
        !read_ends().0.is_empty()
    }

    /// Puts every end read in repair mode, right before the kill, so that
    /// closing them sends the peers neither FIN nor RST.
    pub fn before_kill(&self) {
        // Not to undo the repair mode the kill needs.
        watchdog::finish();
        let mut ends = read_ends();
        ends.1 = true;
        for (socket, _) in &ends.0 {
            let _ = set_int(socket.as_fd(), TCP_REPAIR, 1);
        }
    }

    /// The original is dead: its ends close, in repair mode, with crp's
    /// duplicates.
    pub fn closed_silently(self) {
        read_ends().0.clear();
        watchdog::finish();
        std::mem::forget(self);
    }
}

impl Drop for Repaired {
    fn drop(&mut self) {
        watchdog::finish();
        let mut ends = read_ends();
        if ends.1 {
            for (socket, reuse_address) in &ends.0 {
                repair_off(socket.as_fd());
                let _ = set_reuse_address(socket.as_fd(), *reuse_address);
            }
        }
        ends.0.clear();
        ends.1 = false;
    }
}

/// Repair off, without the window probe where the kernel has that.
fn repair_off(socket: BorrowedFd<'_>) {
    if set_int(socket, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP).is_err() {
        let _ = set_int(socket, TCP_REPAIR, 0);
    }
}

fn set_int(socket: BorrowedFd<'_>, name: i32, value: i32) -> Result<(), Errno> {
    // SAFETY: the value is a valid int for the length given.
    let result = unsafe { libc::setsockopt(socket.as_raw_fd(), libc::IPPROTO_TCP, name, (&raw const value).cast(), 4) };
    if result < 0 { Err(Errno::last()) } else { Ok(()) }
}

fn get_bytes<const N: usize>(socket: BorrowedFd<'_>, name: i32) -> Result<[u8; N], Errno> {
    let mut value = [0u8; N];
    let mut length = socklen(N);
    // SAFETY: the buffer and its length are valid and writable.
    let result = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::IPPROTO_TCP, name, value.as_mut_ptr().cast(), &raw mut length)
    };
    if result < 0 { Err(Errno::last()) } else { Ok(value) }
}

fn get_u32(socket: BorrowedFd<'_>, name: i32) -> Result<u32, Errno> {
    get_bytes::<4>(socket, name).map(u32::from_ne_bytes)
}

fn queued_bytes(socket: BorrowedFd<'_>, request: libc::c_ulong) -> Result<usize, Errno> {
    let mut value: libc::c_int = 0;
    // SAFETY: these ioctls write one int.
    if unsafe { libc::ioctl(socket.as_raw_fd(), request, &raw mut value) } < 0 {
        return Err(Errno::last());
    }
    Ok(usize::try_from(value).unwrap_or(0))
}

/// Whether the socket at `other` is the other end of the connection from
/// `local` to `peer`.
pub fn is_other_end(other: BorrowedFd<'_>, local: &Address, peer: &Address) -> bool {
    super::name_of(other, false).as_ref() == Some(peer) && super::name_of(other, true).as_ref() == Some(local)
}

/// Reads the connection of `socket` in repair mode, turned off again
/// before returning. The duplicate stays with crp (see [`Repaired`]).
/// Repair mode overrides SO_REUSEADDR and repair off clears it: it is
/// read first and set back after (a watchdog does it if crp dies between).
pub fn capture(socket: OwnedFd, peer_outside: bool) -> Result<TcpConnection, (&'static str, Errno)> {
    let reuse_address = reuse_address(socket.as_fd()).map_err(|errno| ("read SO_REUSEADDR", errno))?;
    let guard = watchdog::guard(socket.as_fd(), Restore::Repair { reuse_address });
    set_int(socket.as_fd(), TCP_REPAIR, 1).map_err(|errno| ("turn TCP_REPAIR on", errno))?;
    guard.changed();
    let read = read_connection(socket.as_fd()).map(|connection| TcpConnection { peer_outside, ..connection });
    repair_off(socket.as_fd());
    let put_back = set_reuse_address(socket.as_fd(), reuse_address);
    drop(guard);
    read_ends().0.push((socket, reuse_address));
    let read = read?;
    put_back.map_err(|errno| ("put SO_REUSEADDR back", errno))?;
    Ok(read)
}

/// SO_REUSEADDR as the process set it (0 or 1; 2 in repair mode).
pub(super) fn reuse_address(socket: BorrowedFd<'_>) -> Result<i32, Errno> {
    super::int_option(socket, libc::SOL_SOCKET, libc::SO_REUSEADDR)
}

/// Sets SO_REUSEADDR to `value` where it differs (after repair off).
fn set_reuse_address(socket: BorrowedFd<'_>, value: i32) -> Result<(), Errno> {
    if reuse_address(socket)? == value {
        return Ok(());
    }
    // SAFETY: the value is a valid int for the length given.
    let result = unsafe {
        libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, (&raw const value).cast(), 4)
    };
    if result < 0 { Err(Errno::last()) } else { Ok(()) }
}

fn read_connection(socket: BorrowedFd<'_>) -> Result<TcpConnection, (&'static str, Errno)> {
    let outq = queued_bytes(socket, libc::TIOCOUTQ).map_err(|errno| ("SIOCOUTQ", errno))?;
    let unsent = queued_bytes(socket, SIOCOUTQNSD).map_err(|errno| ("SIOCOUTQNSD", errno))?;
    let inq = queued_bytes(socket, libc::FIONREAD).map_err(|errno| ("SIOCINQ", errno))?;
    let info = get_bytes::<8>(socket, libc::TCP_INFO).map_err(|errno| ("TCP_INFO", errno))?;
    let options = info[5];
    let mss_clamp = get_u32(socket, libc::TCP_MAXSEG).map_err(|errno| ("TCP_MAXSEG", errno))?;
    let timestamp = if options & TCPI_OPT_TIMESTAMPS != 0 {
        get_u32(socket, TCP_TIMESTAMP).map_err(|errno| ("TCP_TIMESTAMP", errno))?
    } else {
        0
    };
    let window = match get_bytes::<20>(socket, TCP_REPAIR_WINDOW) {
        Ok(bytes) => {
            let at =
                |index: usize| u32::from_ne_bytes([bytes[index], bytes[index + 1], bytes[index + 2], bytes[index + 3]]);
            Some([at(0), at(4), at(8), at(12), at(16)])
        }
        Err(Errno::ENOPROTOOPT) => None,
        Err(errno) => return Err(("TCP_REPAIR_WINDOW", errno)),
    };
    let (receive_seq, receive_queue) = read_queue(socket, TCP_RECV_QUEUE, inq)?;
    let (send_seq, send_queue) = read_queue(socket, TCP_SEND_QUEUE, outq)?;
    set_int(socket, TCP_REPAIR_QUEUE, TCP_NO_QUEUE).map_err(|errno| ("TCP_REPAIR_QUEUE", errno))?;
    Ok(TcpConnection {
        send_seq,
        receive_seq,
        send_queue,
        unsent: u32::try_from(unsent.min(outq)).unwrap_or(0),
        receive_queue,
        mss_clamp,
        options,
        send_wscale: info[6] & 0xf,
        receive_wscale: info[6] >> 4,
        timestamp,
        window,
        peer_outside: false,
    })
}

/// The sequence number and the bytes of queue `queue`, `length` long.
fn read_queue(socket: BorrowedFd<'_>, queue: i32, length: usize) -> Result<(u32, Vec<u8>), (&'static str, Errno)> {
    set_int(socket, TCP_REPAIR_QUEUE, queue).map_err(|errno| ("TCP_REPAIR_QUEUE", errno))?;
    let seq = get_u32(socket, TCP_QUEUE_SEQ).map_err(|errno| ("TCP_QUEUE_SEQ", errno))?;
    if length == 0 {
        return Ok((seq, Vec::new()));
    }
    // One byte more, to be sure the queue holds exactly `length`.
    let mut bytes = vec![0u8; length + 1];
    // SAFETY: the buffer is valid and writable for its length.
    let read = unsafe {
        libc::recv(socket.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    if usize::try_from(read).ok() != Some(length) {
        return Err(("peek at a TCP queue", if read < 0 { Errno::last() } else { Errno::EIO }));
    }
    bytes.truncate(length);
    Ok((seq, bytes))
}

/// The part of the restore done in repair mode, before bind: repair on and
/// the queues' sequence numbers.
pub fn prepare(socket: BorrowedFd<'_>, connection: &TcpConnection) -> Result<(), (&'static str, Errno)> {
    set_int(socket, TCP_REPAIR, 1).map_err(|errno| ("turn TCP_REPAIR on", errno))?;
    let length = |queue: &[u8]| u32::try_from(queue.len()).unwrap_or(0);
    for (queue, seq) in [
        (TCP_RECV_QUEUE, connection.receive_seq.wrapping_sub(length(&connection.receive_queue))),
        (TCP_SEND_QUEUE, connection.send_seq.wrapping_sub(length(&connection.send_queue))),
    ] {
        set_int(socket, TCP_REPAIR_QUEUE, queue).map_err(|errno| ("TCP_REPAIR_QUEUE", errno))?;
        set_int(socket, TCP_QUEUE_SEQ, seq.cast_signed()).map_err(|errno| ("TCP_QUEUE_SEQ", errno))?;
    }
    Ok(())
}

/// After the connect (which in repair mode sends nothing): options,
/// timestamp, queues and window.
pub fn establish(socket: BorrowedFd<'_>, connection: &TcpConnection) -> Result<(), (&'static str, Errno)> {
    let mut options: Vec<[u32; 2]> = Vec::new();
    if connection.options & TCPI_OPT_SACK != 0 {
        options.push([TCPOPT_SACK_PERM, 0]);
    }
    if connection.options & TCPI_OPT_WSCALE != 0 {
        options.push([TCPOPT_WINDOW, u32::from(connection.send_wscale) | (u32::from(connection.receive_wscale) << 16)]);
    }
    if connection.options & TCPI_OPT_TIMESTAMPS != 0 {
        options.push([TCPOPT_TIMESTAMP, 0]);
    }
    options.push([TCPOPT_MAXSEG, connection.mss_clamp]);
    let bytes: Vec<u8> = options.iter().flatten().flat_map(|value| value.to_ne_bytes()).collect();
    // SAFETY: the option array is valid for its length; setsockopt reads it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_REPAIR_OPTIONS,
            bytes.as_ptr().cast(),
            socklen(bytes.len()),
        )
    };
    if result < 0 {
        return Err(("TCP_REPAIR_OPTIONS", Errno::last()));
    }
    if connection.options & TCPI_OPT_TIMESTAMPS != 0 {
        set_int(socket, TCP_TIMESTAMP, connection.timestamp.cast_signed()).map_err(|errno| ("TCP_TIMESTAMP", errno))?;
    }
    set_int(socket, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE).map_err(|errno| ("TCP_REPAIR_QUEUE", errno))?;
    send_all(socket, &connection.receive_queue).map_err(|errno| ("put back the receive queue", errno))?;
    let sent = connection.send_queue.len().saturating_sub(connection.unsent as usize);
    set_int(socket, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE).map_err(|errno| ("TCP_REPAIR_QUEUE", errno))?;
    send_all(socket, &connection.send_queue[..sent]).map_err(|errno| ("put back the send queue", errno))?;
    set_int(socket, TCP_REPAIR_QUEUE, TCP_NO_QUEUE).map_err(|errno| ("TCP_REPAIR_QUEUE", errno))?;
    if let Some(window) = connection.window {
        let bytes: Vec<u8> = window.iter().flat_map(|value| value.to_ne_bytes()).collect();
        // SAFETY: the window is valid for its length; setsockopt reads it.
        let result = unsafe {
            libc::setsockopt(socket.as_raw_fd(), libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, bytes.as_ptr().cast(), 20)
        };
        if result < 0 {
            return Err(("TCP_REPAIR_WINDOW", Errno::last()));
        }
    }
    Ok(())
}

/// Once both ends exist: repair off (without a window probe where the
/// kernel has that) and SO_REUSEADDR back to `reuse_address` (repair off
/// clears it), then the bytes never sent are sent.
pub fn resume(
    socket: BorrowedFd<'_>,
    connection: &TcpConnection,
    reuse_address: i32,
) -> Result<(), (&'static str, Errno)> {
    if set_int(socket, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP).is_err() {
        set_int(socket, TCP_REPAIR, 0).map_err(|errno| ("turn TCP_REPAIR off", errno))?;
    }
    set_reuse_address(socket, reuse_address).map_err(|errno| ("set SO_REUSEADDR again", errno))?;
    let sent = connection.send_queue.len().saturating_sub(connection.unsent as usize);
    let unsent = &connection.send_queue[sent..];
    if unsent.is_empty() {
        return Ok(());
    }
    // The original's queue may have grown past its buffer size (the kernel
    // lets it); the restore makes room for it, then puts the size back.
    let buffer = |name| {
        let mut value: i32 = 0;
        let mut length = socklen(4);
        // SAFETY: value and length are valid for the int getsockopt writes.
        let result = unsafe {
            libc::getsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, name, (&raw mut value).cast(), &raw mut length)
        };
        if result < 0 { Err(Errno::last()) } else { Ok(value) }
    };
    let set_buffer = |value: i32| {
        // SAFETY: the value is a valid int for the length given.
        let result = unsafe {
            libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, (&raw const value).cast(), 4)
        };
        if result < 0 { Err(Errno::last()) } else { Ok(()) }
    };
    let size = buffer(libc::SO_SNDBUF).map_err(|errno| ("read SO_SNDBUF", errno))?;
    let room = i32::try_from(connection.send_queue.len().saturating_mul(4)).unwrap_or(i32::MAX);
    set_buffer(size.saturating_add(room)).map_err(|errno| ("make room in SO_SNDBUF", errno))?;
    let sending = send_all(socket, unsent).map_err(|errno| ("send what had not been sent", errno));
    set_buffer(size / 2).map_err(|errno| ("put SO_SNDBUF back", errno))?;
    sending
}

/// Sends `bytes` in pieces the kernel takes (a repair-mode receive queue
/// takes one linear buffer per call: large ones fail with ENOMEM).
fn send_all(socket: BorrowedFd<'_>, mut bytes: &[u8]) -> Result<(), Errno> {
    let mut piece = bytes.len().max(1);
    while !bytes.is_empty() {
        let length = piece.min(bytes.len());
        // SAFETY: the bytes are valid for the length given; send reads them.
        let sent = unsafe {
            libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), length, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        match usize::try_from(sent) {
            Ok(sent) if sent > 0 => bytes = &bytes[sent..],
            _ if piece > 1024 => piece /= 2,
            _ => return Err(if sent < 0 { Errno::last() } else { Errno::EIO }),
        }
    }
    Ok(())
}
