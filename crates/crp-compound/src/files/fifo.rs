//! FIFOs (named pipes), reopened by path with each description's flags.
//! A FIFO is a pipe inode: its buffer is captured like a pipe's (see
//! [`super::pipe`], nothing taken out) into one [`PipeBuffer`] of
//! [`FdTable::pipes`] that every description of the FIFO refers to.
//!
//! At the restore the FIFO is first opened read-write (which never blocks,
//! unlike a read-only open without a writer or a write-only open without a
//! reader); each description is then an open of `/proc/self/fd/N` of that
//! one with its own flags, and the read-write one is closed with the other
//! temporaries. The saved bytes are written into it only when no process
//! outside the restored one holds the FIFO open: then the kernel kept the
//! buffer, bytes and size, and writing them again would double them. A FIFO
//! whose path is gone is made again there (`mknodat`) with its mode.
//!
//! A FIFO on fd 0-2 is reopened by path like any other (`prog < myfifo`
//! gets its FIFO back), not handed crp restore's own stream: only a FIFO
//! whose path this mount namespace cannot name is such a stream.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};

use super::proc_fd::Entry;
use super::unlinked::{Gathered, deleted_path};
use super::{FdTable, OpenFile, PipeBuffer, call};
use crate::error::{CompoundError, Unsupported};

/// What `classify` found: a FIFO at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Found {
    pub path: String,
    pub mode: u32,
    pub deleted: bool,
    device: u64,
    inode: u64,
}

pub(super) fn classify(entry: &Entry, metadata: &std::fs::Metadata) -> Found {
    Found {
        path: deleted_path(&entry.link).to_owned(),
        mode: metadata.mode() & 0o7777,
        deleted: entry.link.ends_with(" (deleted)"),
        device: metadata.dev(),
        inode: metadata.ino(),
    }
}

/// The index of the FIFO's buffer in [`FdTable::pipes`], captured through
/// `entry` the first time the FIFO is met.
pub(super) fn pipe_index(
    pid: i32,
    entry: &Entry,
    found: &Found,
    table: &mut FdTable,
    gathered: &mut Gathered,
) -> Result<u32, CompoundError> {
    if let Some(index) = gathered.find(found.device, found.inode) {
        return Ok(index);
    }
    table.pipes.push(super::pipe::capture(pid, entry.fd, found.inode, true)?);
    let index = u32::try_from(table.pipes.len() - 1).unwrap_or(u32::MAX);
    gathered.remember(found.device, found.inode, index);
    Ok(index)
}

/// Refuses, before the child exists, a FIFO whose path now holds something
/// else, or whose directory is gone (so it cannot be made again).
pub(super) fn check_host(path: &str) -> Result<(), CompoundError> {
    let refuse = |what: String| -> CompoundError { Unsupported { what, location: path.to_owned() }.into() };
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_fifo() => Ok(()),
        Ok(_) => Err(refuse("a FIFO whose path now holds something else than a FIFO".into())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let directory = std::path::Path::new(path).parent().unwrap_or(std::path::Path::new("/"));
            match std::fs::metadata(directory) {
                Ok(metadata) if metadata.is_dir() => Ok(()),
                _ => Err(refuse(format!(
                    "a FIFO whose path is gone, and its directory {} too: it cannot be made again",
                    directory.display()
                ))),
            }
        }
        Err(error) => Err(refuse(format!("a FIFO whose path cannot be looked up: {error}"))),
    }
}

/// The FIFOs opened so far in one restore: each one's read-write descriptor.
#[derive(Debug)]
pub(super) struct Made {
    fifos: Vec<Option<u64>>,
}

impl Made {
    pub(super) fn new(table: &FdTable) -> Self {
        Self { fifos: vec![None; table.pipes.len()] }
    }
}

/// The descriptor, at `above` or higher, of description `file` of the FIFO
/// at `path` whose buffer is pipe `pipe`; the FIFO is opened (made, filled)
/// the first time.
pub(super) fn description(
    tracee: &mut dyn Tracee,
    table: &FdTable,
    (path, mode, pipe): (&str, u32, u32),
    file: &OpenFile,
    made: &mut Made,
    above: u64,
) -> Result<Option<u64>, EngineError> {
    let index = pipe as usize;
    let (Some(buffer), Some(slot)) = (table.pipes.get(index), made.fifos.get_mut(index)) else {
        return Ok(None); // refused by check_table
    };
    let read_write = match *slot {
        Some(at) => at,
        None => {
            let at = open_read_write(tracee, path, mode, buffer, above)?;
            *slot = Some(at);
            at
        }
    };
    let mut scratch = tracee.scratch();
    let reopened = scratch.push_c_string(format!("/proc/self/fd/{read_write}").as_bytes());
    scratch.commit(tracee)?;
    let flags = arg(file.flags & !super::REOPEN_EXCLUDED_FLAGS);
    let opened = call(tracee, "openat(FIFO)", libc::SYS_openat, &[arg(libc::AT_FDCWD), reopened, flags])?;
    super::move_above(tracee, opened, above).map(Some)
}

/// Opens the FIFO at `path` read-write in the tracee (making it first when
/// the path is gone), and gives it its saved size and bytes unless a
/// process outside holds it open.
fn open_read_write(
    tracee: &mut dyn Tracee,
    path: &str,
    mode: u32,
    buffer: &PipeBuffer,
    above: u64,
) -> Result<u64, EngineError> {
    let mut scratch = tracee.scratch();
    let path_address = scratch.push_c_string(path.as_bytes());
    scratch.commit(tracee)?;
    if std::fs::symlink_metadata(path).is_err_and(|error| error.kind() == std::io::ErrorKind::NotFound) {
        let node = u64::from(libc::S_IFIFO | (mode & 0o7777));
        call(tracee, "mknodat(FIFO)", libc::SYS_mknodat, &[arg(libc::AT_FDCWD), path_address, node, 0])?;
        // The mode without the umask.
        call(tracee, "fchmodat", libc::SYS_fchmodat, &[arg(libc::AT_FDCWD), path_address, u64::from(mode & 0o7777)])?;
        tracing::info!(path, mode = format_args!("{mode:#o}"), "made the FIFO again");
    }
    let flags = arg(libc::O_RDWR | libc::O_CLOEXEC);
    let opened =
        call(tracee, "openat(FIFO read-write)", libc::SYS_openat, &[arg(libc::AT_FDCWD), path_address, flags])?;
    let read_write = super::move_above(tracee, opened, above)?;
    if held_outside(tracee.pid(), read_write) {
        tracing::info!(path, "the FIFO is held open outside: the kernel kept its bytes, not written again");
        return Ok(read_write);
    }
    if buffer.size != super::pipe::DEFAULT_PIPE_SIZE {
        let args = [read_write, arg(libc::F_SETPIPE_SZ), u64::from(buffer.size)];
        call(tracee, "fcntl(F_SETPIPE_SZ)", libc::SYS_fcntl, &args)?;
    }
    if !buffer.data.is_empty() {
        super::pipe::fill(tracee, read_write, &buffer.data)?;
    }
    Ok(read_write)
}

/// Whether any process other than `pid` (the one being restored) and crp
/// holds open the FIFO of `pid`'s descriptor `fd`: a scan of every
/// /proc/*/fd for the same device and inode (what the kernel keeps a
/// FIFO's buffer for is not exposed otherwise).
fn held_outside(pid: i32, fd: u64) -> bool {
    let Ok(fifo) = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) else { return false };
    let own = std::process::id().cast_signed();
    let Ok(processes) = std::fs::read_dir("/proc") else { return false };
    processes
        .filter_map(Result::ok)
        .filter_map(|process| process.file_name().to_str().and_then(|name| name.parse::<i32>().ok()))
        .filter(|other| *other != pid && *other != own)
        .any(|other| {
            let Ok(descriptors) = std::fs::read_dir(format!("/proc/{other}/fd")) else { return false };
            descriptors.filter_map(Result::ok).any(|descriptor| {
                let path = descriptor.path();
                // Only paths can be FIFOs; pipes, sockets and anonymous inodes are skipped unread.
                std::fs::read_link(&path).is_ok_and(|link| link.starts_with("/"))
                    && std::fs::metadata(&path)
                        .is_ok_and(|metadata| metadata.dev() == fifo.dev() && metadata.ino() == fifo.ino())
            })
        })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::files::{Descriptor, FdTarget, check_table};
    use crp_ptrace::Persist;
    use crp_ptrace::fake::FakeTracee;

    fn fifo_target(pipe: u32) -> FdTarget {
        FdTarget::Fifo { path: "/nonexistent-crp-dir/fifo".into(), mode: 0o640, deleted: true, pipe }
    }

    #[test]
    fn a_fifo_is_opened_read_write_once_filled_and_each_description_reopened() {
        let table = FdTable {
            files: vec![
                OpenFile { flags: libc::O_RDONLY | libc::O_NONBLOCK, offset: 0, target: fifo_target(0), owner: None },
                OpenFile { flags: libc::O_WRONLY, offset: 0, target: fifo_target(0), owner: None },
            ],
            descriptors: vec![
                Descriptor { fd: 3, cloexec: false, file: 0 },
                Descriptor { fd: 4, cloexec: false, file: 1 },
            ],
            pipes: vec![PipeBuffer { inode: 5, size: 1 << 20, data: b"queued".to_vec() }],
            objects: vec![],
            socket_pairs: vec![],
        };
        check_table(&table).unwrap();
        let (mut reader, writer) = std::io::pipe().unwrap();
        let mut next = 9;
        let mut tracee = FakeTracee::answering(move |call, _| match call.number {
            libc::SYS_fcntl if call.args[1] == libc::F_DUPFD_CLOEXEC as u64 => {
                next += 1;
                next
            }
            libc::SYS_openat => 5,
            _ => 0,
        });
        tracee.descriptors.insert(10, writer.into());
        table.restore(&mut crp_ptrace::Restore::new(&mut tracee)).unwrap();
        let made = tracee.calls_of(libc::SYS_mknodat);
        assert_eq!(made.len(), 1, "the gone FIFO is made again");
        assert_eq!(made[0].args[2], u64::from(libc::S_IFIFO | 0o640));
        let opens: Vec<u64> = tracee.calls_of(libc::SYS_openat).iter().map(|call| call.args[2]).collect();
        assert_eq!(
            opens,
            [
                (libc::O_RDWR | libc::O_CLOEXEC) as u64,
                (libc::O_RDONLY | libc::O_NONBLOCK) as u64,
                libc::O_WRONLY as u64
            ]
        );
        let reopen = tracee.calls_of(libc::SYS_openat)[2];
        assert_eq!(tracee.memory.read(reopen.args[1], 17), b"/proc/self/fd/10\0");
        assert!(tracee.calls.iter().any(|call| call.args[1] == libc::F_SETPIPE_SZ as u64 && call.args[2] == 1 << 20));
        let mut filled = [0u8; 6];
        reader.read_exact(&mut filled).unwrap();
        assert_eq!(&filled, b"queued");
    }

    #[test]
    fn a_fifo_whose_directory_is_gone_is_refused_naming_it() {
        let error = check_host("/nonexistent-crp-dir/fifo").unwrap_err().to_string();
        assert!(error.contains("its directory /nonexistent-crp-dir too"), "{error}");
        assert!(check_host("/dev/null").unwrap_err().to_string().contains("something else than a FIFO"));
    }
}
