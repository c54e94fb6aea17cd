//! Terminals on descriptors other than the standard streams (those are
//! the outside world, [`super::FdTarget::Inherited`], unless they are ends
//! of a pair the process opened):
//!
//! - **The process's own terminal** (`/dev/tty`, or its controlling
//!   terminal or the terminal of its standard streams by name, such as
//!   `/dev/pts/3` opened again): [`super::FdTarget::OwnTerminal`], reopened
//!   at the restore as `/dev/tty`, the restored process's controlling
//!   terminal (`crp restore`'s); `/dev/null` when it has none.
//! - **A pseudo-terminal pair the process opened** (a master from
//!   `/dev/ptmx`, and descriptors of its slave `/dev/pts/N`):
//!   [`super::FdTarget::PtyMaster`] holds the pair's terminal settings,
//!   window size, packet mode and lock state, read through a duplicate of
//!   the master (`pidfd_getfd`, then `TCGETS2`, `TIOCGWINSZ`, `TIOCGPKT`,
//!   `TIOCGPTLCK`); [`super::FdTarget::PtySlave`] names the pair. At the
//!   restore the master is opened again from `/dev/ptmx`, with the same
//!   number when it is free, the settings set through a duplicate of it,
//!   each slave description opened from its new `/dev/pts/N`, and the lock
//!   state set last.
//!
//! Unread data: a terminal's queues cannot be peeked, and a read takes the
//! bytes from the process for good. So a pair with bytes queued for either
//! end (`TIOCINQ`: what the master can read, and the complete lines or raw
//! bytes a slave the process holds can read) is refused, at preflight and
//! again once frozen; a partial line typed into a slave in canonical mode
//! is invisible to `TIOCINQ` and is lost. Any other terminal (a slave whose
//! master is elsewhere and that is not its own terminal, a serial line, a
//! virtual console) is refused.
//!
//! The ioctls are made by hand through libc: nix's termios module uses
//! glibc's `struct termios`, not the kernel's `termios2` these take.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};
use nix::errno::Errno;

use super::proc_fd::{self, Entry};
use super::{FdTable, FdTarget, OpenFile};
use crate::error::{CompoundError, Unsupported};
use crate::valid::Invalid;

/// The major of /dev/tty (minor 0), /dev/console (1) and /dev/ptmx (2).
const TTYAUX_MAJOR: u64 = 5;
const DEV_TTY_MINOR: u64 = 0;
const PTMX_MINOR: u64 = 2;
/// The majors of the pseudo-terminal slaves, /dev/pts/N.
const PTY_SLAVE_MAJORS: std::ops::RangeInclusive<u64> = 136..=143;
/// `NCCS` of the kernel's `struct termios2`.
pub const CONTROL_CHARACTERS: usize = 19;
/// How many masters a restore opens at most looking for the old number.
const NUMBER_ATTEMPTS: usize = 64;

/// A terminal's window size (`struct winsize`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct WindowSize {
    pub rows: u16,
    pub columns: u16,
    pub x_pixels: u16,
    pub y_pixels: u16,
}

/// A terminal's settings: its modes (the kernel's `struct termios2`) and
/// its window size.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TerminalSettings {
    pub input_flags: u32,
    pub output_flags: u32,
    pub control_flags: u32,
    pub local_flags: u32,
    pub line_discipline: u8,
    /// `c_cc`, [`CONTROL_CHARACTERS`] of them.
    pub control_characters: Vec<u8>,
    pub input_speed: u32,
    pub output_speed: u32,
    pub window: WindowSize,
}

impl TerminalSettings {
    /// The settings of the terminal `fd` is open on.
    pub fn read(fd: BorrowedFd<'_>) -> Result<Self, Errno> {
        let modes: libc::termios2 = read_struct(fd, libc::TCGETS2)?;
        Ok(Self {
            input_flags: modes.c_iflag,
            output_flags: modes.c_oflag,
            control_flags: modes.c_cflag,
            local_flags: modes.c_lflag,
            line_discipline: modes.c_line,
            control_characters: modes.c_cc.to_vec(),
            input_speed: modes.c_ispeed,
            output_speed: modes.c_ospeed,
            window: window_size(fd)?,
        })
    }

    /// Sets the modes (not the window size) of the terminal `fd` is open
    /// on, at once (`TCSETS2`).
    pub fn set_modes(&self, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        let mut control_characters = [0; CONTROL_CHARACTERS];
        if self.control_characters.len() != CONTROL_CHARACTERS {
            return Err(Errno::EINVAL); // refused by check
        }
        control_characters.copy_from_slice(&self.control_characters);
        let modes = libc::termios2 {
            c_iflag: self.input_flags,
            c_oflag: self.output_flags,
            c_cflag: self.control_flags,
            c_lflag: self.local_flags,
            c_line: self.line_discipline,
            c_cc: control_characters,
            c_ispeed: self.input_speed,
            c_ospeed: self.output_speed,
        };
        write_struct(fd, libc::TCSETS2, &modes)
    }

    /// Whether the terminal echoes what is typed (ECHO).
    pub fn echoes(&self) -> bool {
        self.local_flags & libc::ECHO != 0
    }

    /// Whether it reads line by line (ICANON).
    pub fn canonical(&self) -> bool {
        self.local_flags & libc::ICANON != 0
    }

    /// Refuses settings `TCSETS2` could not take as recorded.
    pub fn check(&self, field: &str) -> Result<(), Invalid> {
        if self.control_characters.len() != CONTROL_CHARACTERS {
            return Err(Invalid::new(
                field,
                format!("has {} control characters, not {CONTROL_CHARACTERS}", self.control_characters.len()),
            ));
        }
        Ok(())
    }
}

/// The window size of the terminal `fd` is open on.
pub fn window_size(fd: BorrowedFd<'_>) -> Result<WindowSize, Errno> {
    let size: libc::winsize = read_struct(fd, libc::TIOCGWINSZ)?;
    Ok(WindowSize { rows: size.ws_row, columns: size.ws_col, x_pixels: size.ws_xpixel, y_pixels: size.ws_ypixel })
}

/// Sets the window size of the terminal `fd` is open on (the kernel sends
/// SIGWINCH to its foreground group when it changes).
pub fn set_window_size(fd: BorrowedFd<'_>, window: &WindowSize) -> Result<(), Errno> {
    let size = libc::winsize {
        ws_row: window.rows,
        ws_col: window.columns,
        ws_xpixel: window.x_pixels,
        ws_ypixel: window.y_pixels,
    };
    write_struct(fd, libc::TIOCSWINSZ, &size)
}

/// A pseudo-terminal master the process opened, with what its pair keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PtyMaster {
    /// The pair's number: its slave is /dev/pts/`number`.
    pub number: u32,
    /// The settings of the pair (of its slave side, which the master's
    /// ioctls reach).
    pub settings: TerminalSettings,
    /// Packet mode (TIOCPKT) is on.
    pub packet: bool,
    /// The slave is locked (TIOCSPTLCK: it cannot be opened).
    pub locked: bool,
}

impl PtyMaster {
    /// Reads the pair of master `fd` (a duplicate of the process's).
    fn read(fd: BorrowedFd<'_>) -> Result<Self, Errno> {
        let number: libc::c_int = read_struct(fd, libc::TIOCGPTN)?;
        let packet: libc::c_int = read_struct(fd, libc::TIOCGPKT)?;
        let locked: libc::c_int = read_struct(fd, libc::TIOCGPTLCK)?;
        Ok(Self {
            number: u32::try_from(number).map_err(|_| Errno::EINVAL)?,
            settings: TerminalSettings::read(fd)?,
            packet: packet != 0,
            locked: locked != 0,
        })
    }
}

/// `ioctl(fd, request, &value)` for a request that fills `T`.
fn read_struct<T: Copy>(fd: BorrowedFd<'_>, request: libc::Ioctl) -> Result<T, Errno> {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: `request` is one of the terminal ioctls that write one `T`
    // (an int, a winsize, a termios2) at the pointer, which points at a
    // zeroed `T` that outlives the call.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), request, value.as_mut_ptr()) };
    if result < 0 {
        return Err(Errno::last());
    }
    // SAFETY: zeroed, then written by the kernel; `T` is plain data
    // (integers and arrays of them) for which every bit pattern is valid.
    Ok(unsafe { value.assume_init() })
}

/// `ioctl(fd, request, &value)` for a request that reads `T`.
fn write_struct<T>(fd: BorrowedFd<'_>, request: libc::Ioctl, value: &T) -> Result<(), Errno> {
    // SAFETY: `request` is one of the terminal ioctls that read one `T`
    // from the pointer, which points at a `T` that outlives the call.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), request, std::ptr::from_ref(value)) };
    if result < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Bytes a terminal descriptor can read now (`TIOCINQ`: complete lines in
/// canonical mode). Bytes written a moment ago may still wait in the
/// terminal's flip buffer, which the kernel hands to the line discipline
/// from a work queue: a `poll` first waits for that work (n_tty_poll
/// flushes it when nothing is readable yet).
fn queued(fd: BorrowedFd<'_>) -> Result<libc::c_int, Errno> {
    let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd, which outlives the call; a zero timeout.
    if unsafe { libc::poll(&raw mut poll, 1, 0) } < 0 {
        return Err(Errno::last());
    }
    read_struct(fd, libc::TIOCINQ)
}

/// Whether `rdev` (a character device) is a terminal crp knows.
pub(crate) fn is_terminal(rdev: u64) -> bool {
    super::path::TTY_MAJORS.contains(&u64::from(libc::major(rdev)))
}

/// The pair number of a pseudo-terminal master descriptor, as its fdinfo
/// says (`tty-index`).
fn master_number(pid: i32, fd: i32) -> Result<u32, CompoundError> {
    let fdinfo = crp_ptrace::procfs::Fields::read(format!("/proc/{pid}/fdinfo/{fd}"))?;
    let number: u64 = fdinfo.decimal("tty-index")?;
    u32::try_from(number).map_err(|_| CompoundError::Malformed {
        path: format!("/proc/{pid}/fdinfo/{fd}").into(),
        reason: format!("tty-index {number} is out of range"),
    })
}

/// The number N of a `/dev/pts/N` path.
fn slave_number(link: &str) -> Option<u32> {
    link.strip_prefix("/dev/pts/")?.parse().ok()
}

/// What terminal descriptor `entry` (of device `rdev`: on fds 0-2, only an
/// end of a pair the process opened, see [`is_own_pair`]) of `pid` is,
/// read in full, or why crp refuses it.
pub(super) fn classify(pid: i32, entry: &Entry, rdev: u64) -> Result<FdTarget, CompoundError> {
    let fd = entry.fd;
    let location = || format!("fd {fd} -> {}", entry.link);
    let refuse = |what: String| -> CompoundError { Unsupported { what, location: location() }.into() };
    let (major, minor) = (u64::from(libc::major(rdev)), u64::from(libc::minor(rdev)));
    let duplicate = || {
        crp_ptrace::sys::duplicate_descriptor(pid, fd).map_err(|errno| CompoundError::Ptrace {
            operation: "pidfd_getfd (terminal)",
            pid,
            errno,
        })
    };
    let read_failed = |operation: &'static str| move |errno| CompoundError::Ptrace { operation, pid, errno };
    if (major, minor) == (TTYAUX_MAJOR, PTMX_MINOR) {
        let master = duplicate()?;
        let pair = PtyMaster::read(master.as_fd()).map_err(read_failed("read pseudo-terminal settings"))?;
        let unread = queued(master.as_fd()).map_err(read_failed("TIOCINQ"))?;
        if unread > 0 {
            return Err(refuse(format!(
                "a pseudo-terminal master (/dev/pts/{}) with {unread} bytes its slave wrote that it has not read \
                 (a terminal's queue cannot be read without taking the bytes from the process)",
                pair.number
            )));
        }
        return Ok(FdTarget::PtyMaster(pair));
    }
    if (major, minor) == (TTYAUX_MAJOR, DEV_TTY_MINOR) {
        return Ok(FdTarget::OwnTerminal { path: entry.link.clone() });
    }
    if PTY_SLAVE_MAJORS.contains(&major)
        && let Some(number) = slave_number(&entry.link)
        && holds_master(pid, number)?
    {
        let slave = duplicate()?;
        let unread = queued(slave.as_fd()).map_err(read_failed("TIOCINQ"))?;
        if unread > 0 {
            return Err(refuse(format!(
                "a pseudo-terminal slave with {unread} bytes its master wrote that it has not read (a terminal's \
                 queue cannot be read without taking the bytes from the process)"
            )));
        }
        return Ok(FdTarget::PtySlave { number });
    }
    if own_terminals(pid)?.contains(&rdev) {
        return Ok(FdTarget::OwnTerminal { path: entry.link.clone() });
    }
    Err(refuse(
        "a terminal that is neither the process's own (its controlling terminal, or the one on its standard \
         streams) nor a pseudo-terminal whose master it holds"
            .to_owned(),
    ))
}

/// Whether terminal descriptor `entry` (of device `rdev`) is an end of a
/// pseudo-terminal pair the process opened (a master, or a slave whose
/// master it holds): on a standard stream too, such a terminal is the
/// process's own, not the outside world.
pub(super) fn is_own_pair(pid: i32, entry: &Entry, rdev: u64) -> Result<bool, CompoundError> {
    let (major, minor) = (u64::from(libc::major(rdev)), u64::from(libc::minor(rdev)));
    if (major, minor) == (TTYAUX_MAJOR, PTMX_MINOR) {
        return Ok(true);
    }
    match slave_number(&entry.link) {
        Some(number) if PTY_SLAVE_MAJORS.contains(&major) => holds_master(pid, number),
        _ => Ok(false),
    }
}

/// Whether `pid` holds the master of pseudo-terminal pair `number`.
fn holds_master(pid: i32, number: u32) -> Result<bool, CompoundError> {
    for fd in proc_fd::open_fds(pid)? {
        let Ok(metadata) = proc_fd::metadata(pid, fd) else { continue }; // closed meanwhile
        let rdev = std::os::unix::fs::MetadataExt::rdev(&metadata);
        if (u64::from(libc::major(rdev)), u64::from(libc::minor(rdev))) == (TTYAUX_MAJOR, PTMX_MINOR)
            && master_number(pid, fd)? == number
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The devices of `pid`'s own terminals: its controlling terminal
/// (/proc/PID/stat's `tty_nr`) and the terminals on its fds 0-2.
fn own_terminals(pid: i32) -> Result<Vec<u64>, CompoundError> {
    let stat = crp_ptrace::procfs::Stat::read(pid)?;
    let controlling: u64 = stat.number(7)?;
    let mut devices = vec![controlling].into_iter().filter(|device| *device != 0).collect::<Vec<_>>();
    for fd in 0..=2 {
        if let Ok(metadata) = proc_fd::metadata(pid, fd) {
            let rdev = std::os::unix::fs::MetadataExt::rdev(&metadata);
            if std::os::unix::fs::FileTypeExt::is_char_device(&metadata.file_type()) && is_terminal(rdev) {
                devices.push(rdev);
            }
        }
    }
    Ok(devices)
}

/// Refuses a table whose pseudo-terminal descriptions do not fit: two
/// masters of one number, a slave of a pair without its master, settings
/// `TCSETS2` would refuse.
pub(super) fn check(table: &FdTable, index: usize, file: &OpenFile, field: &dyn Fn() -> String) -> Result<(), Invalid> {
    match &file.target {
        FdTarget::PtyMaster(master) => {
            master.settings.check(&field())?;
            let twice = table.files[..index]
                .iter()
                .any(|other| matches!(&other.target, FdTarget::PtyMaster(earlier) if earlier.number == master.number));
            if twice {
                return Err(Invalid::new(field(), format!("is a second master of pseudo-terminal {}", master.number)));
            }
        }
        FdTarget::PtySlave { number } if master_of(table, *number).is_none() => {
            return Err(Invalid::new(
                field(),
                format!("is a slave of pseudo-terminal {number}, whose master the table lacks"),
            ));
        }
        FdTarget::OwnTerminal { path } => crate::valid::check_path(field(), path)?,
        _ => {}
    }
    Ok(())
}

/// The master description of pair `number` in `table`.
fn master_of(table: &FdTable, number: u32) -> Option<(usize, &PtyMaster)> {
    table.files.iter().enumerate().find_map(|(index, file)| match &file.target {
        FdTarget::PtyMaster(master) if master.number == number => Some((index, master)),
        _ => None,
    })
}

/// A pair made again in the restored process.
struct MadePair {
    /// The pair's number in the image.
    old: u32,
    /// Its new number (the old one when it was free).
    new: u32,
    /// The master in the process, at a temporary descriptor.
    at: u64,
    /// A duplicate of it in crp.
    master: OwnedFd,
    locked: bool,
}

/// The pairs made so far by one restore.
#[derive(Default)]
pub(super) struct Made {
    pairs: Vec<MadePair>,
}

impl std::fmt::Debug for Made {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.pairs.iter().map(|pair| (pair.old, pair.new, pair.at))).finish()
    }
}

/// Opens `path` in the tracee with `flags` and O_NOCTTY (a terminal must
/// not become the controlling terminal of a process that leads a session
/// without one), returning the raw result.
fn open_terminal(tracee: &mut dyn Tracee, path: &str, flags: i32) -> Result<i64, EngineError> {
    let mut scratch = tracee.scratch();
    let address = scratch.push_c_string(path.as_bytes());
    scratch.commit(tracee)?;
    let flags = arg((flags & !super::REOPEN_EXCLUDED_FLAGS) | libc::O_NOCTTY);
    tracee.raw_syscall(libc::SYS_openat, [arg(libc::AT_FDCWD), address, flags, 0, 0, 0])
}

/// A raw syscall result as a descriptor, or the error naming the call.
fn opened(tracee: &dyn Tracee, name: &'static str, path: &str, result: i64) -> Result<u64, EngineError> {
    if (-4095..0).contains(&result) {
        return Err(EngineError::Syscall {
            syscall: name,
            args: vec![],
            pid: tracee.pid(),
            errno: Errno::from_raw(i32::try_from(-result).unwrap_or(libc::EINVAL)),
        })
        .inspect_err(|_| tracing::debug!(path, "terminal open failed"));
    }
    Ok(result.cast_unsigned())
}

/// The restored process's own terminal, at `above` or higher: /dev/tty
/// (its controlling terminal), or /dev/null when it has none (which
/// `crp restore` said on stderr).
pub(super) fn own_terminal(tracee: &mut dyn Tracee, file: &OpenFile, above: u64) -> Result<u64, EngineError> {
    let result = open_terminal(tracee, "/dev/tty", file.flags)?;
    let at = if result == -i64::from(libc::ENXIO) {
        let null = open_terminal(tracee, "/dev/null", file.flags)?;
        opened(tracee, "openat(/dev/null for /dev/tty)", "/dev/null", null)?
    } else {
        opened(tracee, "openat(/dev/tty)", "/dev/tty", result)?
    };
    super::move_above(tracee, at, above)
}

/// The description `file` of pair `number` (its master, or one of its
/// slave's), at `above` or higher; the pair is made the first time.
pub(super) fn description(
    tracee: &mut dyn Tracee,
    table: &FdTable,
    number: u32,
    file: &OpenFile,
    made: &mut Made,
    above: u64,
) -> Result<Option<u64>, EngineError> {
    let Some((_, master)) = master_of(table, number) else { return Ok(None) }; // refused by check_table
    let position = match made.pairs.iter().position(|pair| pair.old == number) {
        Some(position) => position,
        None => {
            let master_file =
                table.files.iter().find(|file| matches!(&file.target, FdTarget::PtyMaster(m) if m.number == number));
            let flags = master_file.map_or(libc::O_RDWR, |file| file.flags);
            made.pairs.push(make_pair(tracee, master, flags, above)?);
            made.pairs.len() - 1
        }
    };
    let pair = &made.pairs[position];
    if matches!(file.target, FdTarget::PtyMaster(_)) {
        // One description per master: the one made.
        return Ok(Some(pair.at));
    }
    let path = format!("/dev/pts/{}", pair.new);
    let result = open_terminal(tracee, &path, file.flags)?;
    let at = opened(tracee, "openat(pseudo-terminal slave)", &path, result)?;
    super::move_above(tracee, at, above).map(Some)
}

/// Opens a master for `master` in the tracee (with its old number when
/// that is free: /dev/ptmx gives the lowest free number, so masters are
/// opened until it comes or a higher one does), and sets its settings and
/// packet mode through a duplicate; unlocked until [`finish`].
fn make_pair(tracee: &mut dyn Tracee, master: &PtyMaster, flags: i32, above: u64) -> Result<MadePair, EngineError> {
    let failed = |tracee: &dyn Tracee, syscall: &'static str| {
        let pid = tracee.pid();
        move |errno| EngineError::Syscall { syscall, args: vec![], pid, errno }
    };
    let mut extra = Vec::new();
    let made = loop {
        let result = open_terminal(tracee, "/dev/ptmx", flags)?;
        let new_master = opened(tracee, "openat(/dev/ptmx)", "/dev/ptmx", result)?;
        let at = super::move_above(tracee, new_master, above)?;
        let duplicate = tracee.duplicate_descriptor(at)?;
        let number: libc::c_int = read_struct(duplicate.as_fd(), libc::TIOCGPTN).map_err(failed(tracee, "TIOCGPTN"))?;
        let number = u32::try_from(number).unwrap_or(u32::MAX);
        if number >= master.number || extra.len() >= NUMBER_ATTEMPTS {
            break (at, duplicate, number);
        }
        extra.push(at);
    };
    for at in extra {
        tracee.syscall("close", libc::SYS_close, [at, 0, 0, 0, 0, 0])?;
    }
    let (at, duplicate, number) = made;
    if number != master.number {
        tracing::warn!(old = master.number, new = number, "pseudo-terminal number taken");
        eprintln!(
            "crp: warning: pseudo-terminal /dev/pts/{} is in use; the process's pair is restored as /dev/pts/{number}",
            master.number
        );
    }
    let fd = duplicate.as_fd();
    let unlocked: libc::c_int = 0;
    write_struct(fd, libc::TIOCSPTLCK, &unlocked).map_err(failed(tracee, "TIOCSPTLCK"))?;
    master.settings.set_modes(fd).map_err(failed(tracee, "TCSETS2"))?;
    set_window_size(fd, &master.settings.window).map_err(failed(tracee, "TIOCSWINSZ"))?;
    let packet = libc::c_int::from(master.packet);
    write_struct(fd, libc::TIOCPKT, &packet).map_err(failed(tracee, "TIOCPKT"))?;
    Ok(MadePair { old: master.number, new: number, at, master: duplicate, locked: master.locked })
}

/// Locks the slaves that were locked, once every slave description is open.
pub(super) fn finish(tracee: &dyn Tracee, made: &Made) -> Result<(), EngineError> {
    for pair in made.pairs.iter().filter(|pair| pair.locked) {
        let locked: libc::c_int = 1;
        write_struct(pair.master.as_fd(), libc::TIOCSPTLCK, &locked).map_err(|errno| EngineError::Syscall {
            syscall: "TIOCSPTLCK",
            args: vec![],
            pid: tracee.pid(),
            errno,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-terminal pair of crp's own: (master, slave).
    fn own_pair() -> (OwnedFd, OwnedFd) {
        let master = nix::fcntl::open(
            "/dev/ptmx",
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let unlocked: libc::c_int = 0;
        write_struct(master.as_fd(), libc::TIOCSPTLCK, &unlocked).unwrap();
        let number: libc::c_int = read_struct(master.as_fd(), libc::TIOCGPTN).unwrap();
        let slave = nix::fcntl::open(
            format!("/dev/pts/{number}").as_str(),
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        (master, slave)
    }

    #[test]
    fn settings_read_back_as_set() {
        let _own = super::super::tests::OWN_DESCRIPTORS.lock();
        let (master, slave) = own_pair();
        let mut settings = TerminalSettings::read(slave.as_fd()).unwrap();
        assert_eq!(settings.control_characters.len(), CONTROL_CHARACTERS);
        settings.local_flags &= !(libc::ECHO | libc::ICANON);
        settings.control_characters[libc::VMIN] = 3;
        settings.set_modes(master.as_fd()).unwrap();
        let window = WindowSize { rows: 33, columns: 101, x_pixels: 0, y_pixels: 0 };
        set_window_size(master.as_fd(), &window).unwrap();
        let read = TerminalSettings::read(slave.as_fd()).unwrap();
        assert!(!read.echoes() && !read.canonical());
        assert_eq!(read.control_characters[libc::VMIN], 3);
        assert_eq!(read.window, window, "the master's ioctls reach the slave's settings");
        let pair = PtyMaster::read(master.as_fd()).unwrap();
        assert!(!pair.packet && !pair.locked);
        let packet: libc::c_int = 1;
        write_struct(master.as_fd(), libc::TIOCPKT, &packet).unwrap();
        assert!(PtyMaster::read(master.as_fd()).unwrap().packet);
        let mut short = read;
        short.control_characters.pop();
        assert!(short.check("settings").unwrap_err().to_string().contains("18 control characters"));
        assert_eq!(short.set_modes(master.as_fd()), Err(Errno::EINVAL));
    }

    #[test]
    fn own_pairs_classify_and_queued_bytes_are_refused() {
        let _own = super::super::tests::OWN_DESCRIPTORS.lock();
        let (master, slave) = own_pair();
        let pid = std::process::id().cast_signed();
        let entry = |fd: &OwnedFd| proc_fd::entry(pid, fd.as_raw_fd()).unwrap();
        let rdev =
            |fd: &OwnedFd| std::os::unix::fs::MetadataExt::rdev(&proc_fd::metadata(pid, fd.as_raw_fd()).unwrap());
        let FdTarget::PtyMaster(pair) = classify(pid, &entry(&master), rdev(&master)).unwrap() else {
            panic!("a master")
        };
        let slave_target = classify(pid, &entry(&slave), rdev(&slave)).unwrap();
        assert_eq!(slave_target, FdTarget::PtySlave { number: pair.number });
        nix::unistd::write(&slave, b"out\n").unwrap();
        let refused = classify(pid, &entry(&master), rdev(&master)).unwrap_err().to_string();
        assert!(refused.contains("bytes its slave wrote"), "{refused}");
        let mut buffer = [0; 16];
        let _ = nix::unistd::read(&master, &mut buffer).unwrap();
        nix::unistd::write(&master, b"in\n").unwrap();
        let refused = classify(pid, &entry(&slave), rdev(&slave)).unwrap_err().to_string();
        assert!(refused.contains("bytes its master wrote"), "{refused}");
    }

    #[test]
    fn a_pair_is_made_again_with_its_settings_and_its_slave_opened_by_its_new_number() {
        let _own = super::super::tests::OWN_DESCRIPTORS.lock();
        use crp_ptrace::fake::FakeTracee;
        use std::cell::RefCell;
        use std::rc::Rc;
        // The master the fake process "opens" is one of crp's own.
        let (master, _slave) = own_pair();
        let number: libc::c_int = read_struct(master.as_fd(), libc::TIOCGPTN).unwrap();
        let number = u32::try_from(number).unwrap();
        let mut settings = TerminalSettings::read(master.as_fd()).unwrap();
        settings.local_flags &= !libc::ECHO;
        settings.window = WindowSize { rows: 12, columns: 34, x_pixels: 0, y_pixels: 0 };
        let pair = PtyMaster { number, settings, packet: true, locked: true };
        let table = FdTable::from(vec![
            super::super::FdRecord { fd: 3, flags: libc::O_RDWR, offset: 0, target: FdTarget::PtySlave { number } },
            super::super::FdRecord { fd: 4, flags: libc::O_RDWR, offset: 0, target: FdTarget::PtyMaster(pair) },
        ]);
        super::super::check_table(&table).unwrap();
        let opened = Rc::new(RefCell::new(Vec::new()));
        let record = Rc::clone(&opened);
        // fcntl(F_DUPFD) parks fds 0-2 at 30-32; each openat gives 20,
        // moved to 33, 34...
        let mut next = 29;
        let mut restored = FakeTracee::answering(move |call, memory| match call.number {
            libc::SYS_openat => {
                let path = memory.read(call.args[1], 16);
                let end = path.iter().position(|byte| *byte == 0).unwrap_or(path.len());
                record.borrow_mut().push((String::from_utf8_lossy(&path[..end]).into_owned(), call.args[2]));
                20
            }
            libc::SYS_fcntl => {
                next += 1;
                next
            }
            _ => 0,
        });
        restored.descriptors.insert(33, master.try_clone().unwrap());
        super::super::restore(&mut restored, &table, &super::super::Streams::default()).unwrap();
        let opened = opened.borrow();
        assert_eq!(opened[0].0, "/dev/ptmx", "the master first, though its slave's descriptor comes first");
        assert_eq!(opened[1].0, format!("/dev/pts/{number}"));
        assert!(opened.iter().all(|(_, flags)| *flags & libc::O_NOCTTY as u64 != 0), "never a controlling terminal");
        let made = PtyMaster::read(master.as_fd()).unwrap();
        assert!(!made.settings.echoes() && made.packet && made.locked, "{made:?}");
        assert_eq!(made.settings.window, WindowSize { rows: 12, columns: 34, x_pixels: 0, y_pixels: 0 });
        let dups: Vec<[u64; 2]> =
            restored.calls_of(libc::SYS_dup3).iter().map(|call| [call.args[0], call.args[1]]).collect();
        assert_eq!(dups, [[34, 3], [33, 4]]);
    }

    #[test]
    fn own_terminal_is_dev_tty_or_dev_null_without_a_controlling_terminal() {
        use crp_ptrace::fake::FakeTracee;
        let file = OpenFile {
            flags: libc::O_RDWR,
            offset: 0,
            target: FdTarget::OwnTerminal { path: "/dev/tty".into() },
            owner: None,
        };
        let paths = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let record = std::rc::Rc::clone(&paths);
        let mut restored = FakeTracee::answering(move |call, memory| match call.number {
            libc::SYS_openat => {
                record.borrow_mut().push(memory.read(call.args[1], 10));
                if record.borrow().len() == 1 { -i64::from(libc::ENXIO) } else { 7 }
            }
            libc::SYS_fcntl => 9,
            _ => 0,
        });
        assert_eq!(own_terminal(&mut restored, &file, 8).unwrap(), 9);
        assert_eq!(paths.borrow().as_slice(), [b"/dev/tty\0\0".to_vec(), b"/dev/null\0".to_vec()]);
    }

    #[test]
    fn a_slave_without_its_master_is_refused_by_the_table_check() {
        let table = FdTable::from(vec![super::super::FdRecord {
            fd: 4,
            flags: libc::O_RDWR,
            offset: 0,
            target: FdTarget::PtySlave { number: 7 },
        }]);
        let error = super::super::check_table(&table).unwrap_err().to_string();
        assert!(error.contains("whose master the table lacks"), "{error}");
    }
}
