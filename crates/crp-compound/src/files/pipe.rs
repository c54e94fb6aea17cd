//! Pipes: the buffer of each pipe the process holds an end of, read at the
//! dump without taking anything out of it (the pipe is reopened through
//! /proc and `tee`d into a pipe of crp's own), and at the restore a new
//! pipe of the same size, filled with those bytes, whose ends become the
//! process's descriptions of it. When only one end is in the process, the
//! other end is outside the dump: the restored pipe's other end is closed
//! (or replaced by a descriptor the user hands over); only a read end's
//! bytes are saved, since bytes waiting in a pipe the process writes to are
//! the outside reader's, and it still has them.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl};

use crate::error::{CompoundError, Unsupported};

/// A pipe's size when nobody changed it: 16 pages.
pub const DEFAULT_PIPE_SIZE: u32 = 16 * 4096;

/// One pipe the process holds one or both ends of.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PipeBuffer {
    /// The pipe's inode at the dump (`pipe:[INODE]`), to tell pipes apart
    /// in `crp inspect`.
    pub inode: u64,
    /// Its capacity in bytes (`F_GETPIPE_SZ`).
    pub size: u32,
    /// The bytes waiting in it, unread, when its read end is in the process.
    pub data: Vec<u8>,
}

/// The most a pipe may hold here without CAP_SYS_RESOURCE.
fn pipe_max_size() -> Result<u64, CompoundError> {
    const PATH: &str = "/proc/sys/fs/pipe-max-size";
    let text = std::fs::read_to_string(PATH).map_err(CompoundError::io("read", PATH))?;
    text.trim()
        .parse()
        .map_err(|_| CompoundError::Malformed { path: PATH.into(), reason: format!("{:?} is not a size", text.trim()) })
}

/// CAP_SYS_RESOURCE's bit.
const CAP_SYS_RESOURCE: u32 = 24;

/// Opens pipe descriptor `fd` of `pid` anew for reading, without blocking.
fn reopen_for_reading(pid: i32, fd: i32) -> Result<std::fs::File, CompoundError> {
    let path = format!("/proc/{pid}/fd/{fd}");
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(CompoundError::io("reopen the pipe", &path))
}

fn size_of(pipe: impl AsFd, path: &str) -> Result<u32, CompoundError> {
    let size = fcntl(pipe.as_fd(), FcntlArg::F_GETPIPE_SZ).map_err(|errno| CompoundError::Io {
        action: "read the size (F_GETPIPE_SZ) of",
        path: path.into(),
        source: errno.into(),
    })?;
    Ok(u32::try_from(size).unwrap_or(u32::MAX))
}

/// Refuses a pipe crp could not make again: one larger than
/// `fs.pipe-max-size` when crp lacks CAP_SYS_RESOURCE.
pub(super) fn check_recreatable(pid: i32, fd: i32, link: &str) -> Result<(), CompoundError> {
    refuse_if_too_large(size_of(reopen_for_reading(pid, fd)?, link)?, fd, link)
}

fn refuse_if_too_large(size: u32, fd: i32, link: &str) -> Result<(), CompoundError> {
    let max = pipe_max_size()?;
    if u64::from(size) > max && !super::has_capability(CAP_SYS_RESOURCE) {
        return Err(Unsupported {
            what: format!(
                "a pipe of {size} bytes, above fs.pipe-max-size ({max}): making it again needs CAP_SYS_RESOURCE, \
                 which crp lacks"
            ),
            location: format!("fd {fd} -> {link}"),
        }
        .into());
    }
    Ok(())
}

/// Reads pipe `inode` through descriptor `fd` of `pid`: its size, and,
/// when `with_data`, the bytes waiting in it (left where they are).
pub(super) fn capture(pid: i32, fd: i32, inode: u64, with_data: bool) -> Result<PipeBuffer, CompoundError> {
    let link = format!("pipe:[{inode}]");
    let source = reopen_for_reading(pid, fd)?;
    let size = size_of(&source, &link)?;
    refuse_if_too_large(size, fd, &link)?;
    let mut data = Vec::new();
    let queued = if with_data { queued_bytes(&source, &link)? } else { 0 };
    if queued > 0 {
        let failed = |action: &'static str| {
            let link = link.clone();
            move |errno: nix::errno::Errno| CompoundError::Io { action, path: link.into(), source: errno.into() }
        };
        let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(failed("make a pipe to copy the buffer of"))?;
        fcntl(&writer, FcntlArg::F_SETPIPE_SZ(libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX)))
            .map_err(failed("size a pipe to copy the buffer of"))?;
        // tee duplicates the buffers without consuming them, always from
        // the start: one call copies everything, into a pipe as large.
        let copied =
            nix::fcntl::tee(&source, &writer, queued, SpliceFFlags::SPLICE_F_NONBLOCK).map_err(failed("tee"))?;
        if copied != queued {
            return Err(CompoundError::Malformed {
                path: link.into(),
                reason: format!("tee copied {copied} of the {queued} bytes buffered"),
            });
        }
        drop(writer);
        std::fs::File::from(reader)
            .read_to_end(&mut data)
            .map_err(CompoundError::io("read the copied buffer of", link.clone()))?;
    }
    Ok(PipeBuffer { inode, size, data })
}

/// How many bytes wait in a pipe (`FIONREAD`).
fn queued_bytes(pipe: &std::fs::File, link: &str) -> Result<usize, CompoundError> {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points to
    // `queued` and lives across the call.
    let result = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &raw mut queued) };
    if result < 0 {
        return Err(CompoundError::Io {
            action: "count the bytes (FIONREAD) in",
            path: link.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(usize::try_from(queued).unwrap_or(0))
}

/// A pipe made in the process being restored, at temporary descriptors.
#[derive(Debug)]
pub(super) struct MadePipe {
    read: u64,
    write: u64,
    read_given: bool,
    write_given: bool,
}

/// Makes a pipe like `buffer` in the tracee, at descriptors from `above`
/// up, sized and filled with its bytes.
pub(super) fn make(tracee: &mut dyn Tracee, buffer: &PipeBuffer, above: u64) -> Result<MadePipe, EngineError> {
    let mut scratch = tracee.scratch();
    let ends_address = scratch.reserve(8);
    scratch.commit(tracee)?;
    tracee.syscall("pipe2", libc::SYS_pipe2, [ends_address, arg(libc::O_CLOEXEC), 0, 0, 0, 0])?;
    let mut ends = [0u8; 8];
    tracee.read_memory(ends_address, &mut ends)?;
    let [r0, r1, r2, r3, w0, w1, w2, w3] = ends;
    let read = super::move_above(tracee, u64::from(u32::from_ne_bytes([r0, r1, r2, r3])), above)?;
    let write = super::move_above(tracee, u64::from(u32::from_ne_bytes([w0, w1, w2, w3])), above)?;
    if buffer.size != DEFAULT_PIPE_SIZE {
        let args = [read, arg(libc::F_SETPIPE_SZ), u64::from(buffer.size), 0, 0, 0];
        tracee.syscall("fcntl(F_SETPIPE_SZ)", libc::SYS_fcntl, args)?;
    }
    if !buffer.data.is_empty() {
        fill(tracee, write, &buffer.data)?;
    }
    Ok(MadePipe { read, write, read_given: false, write_given: false })
}

/// Writes `data` into the pipe whose write end is the tracee's `write`,
/// from crp, through a reopening of that end.
pub(super) fn fill(tracee: &mut dyn Tracee, write: u64, data: &[u8]) -> Result<(), EngineError> {
    let end: OwnedFd = tracee.reopen_descriptor(write, libc::O_WRONLY | libc::O_NONBLOCK)?;
    std::fs::File::from(end).write_all(data).map_err(|error| EngineError::Descriptor {
        operation: "refill the pipe through",
        pid: tracee.pid(),
        fd: write,
        errno: nix::errno::Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)),
    })
}

/// The descriptor of one open file description of the made pipe, with
/// status flags `flags`: the pipe's own read or write end the first time
/// one is asked for, else a new description of the same pipe (an open of
/// /proc/self/fd/N, which is how a second one came to be).
pub(super) fn end_for(
    tracee: &mut dyn Tracee,
    made: &mut MadePipe,
    flags: i32,
    above: u64,
) -> Result<u64, EngineError> {
    let given = match flags & libc::O_ACCMODE {
        libc::O_RDONLY if !made.read_given => {
            made.read_given = true;
            Some(made.read)
        }
        libc::O_WRONLY if !made.write_given => {
            made.write_given = true;
            Some(made.write)
        }
        _ => None,
    };
    let fd = match given {
        Some(end) => end,
        None => {
            let mut scratch = tracee.scratch();
            let path = scratch.push_c_string(format!("/proc/self/fd/{}", made.read).as_bytes());
            scratch.commit(tracee)?;
            let open_flags = arg(flags & !super::REOPEN_EXCLUDED_FLAGS);
            let opened =
                tracee.syscall("openat", libc::SYS_openat, [arg(libc::AT_FDCWD), path, open_flags, 0, 0, 0])?;
            super::move_above(tracee, opened, above)?
        }
    };
    super::set_status_flags(tracee, fd, flags)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_s_buffer_is_read_without_taking_it() {
        let (mut reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(b"waiting bytes").unwrap();
        let pid = std::process::id() as i32;
        let buffer = capture(pid, reader.as_raw_fd(), 7, true).unwrap();
        assert_eq!(buffer.data, b"waiting bytes");
        assert_eq!(buffer.size, DEFAULT_PIPE_SIZE);
        let mut left = [0u8; 13];
        reader.read_exact(&mut left).unwrap();
        assert_eq!(&left, b"waiting bytes", "the bytes are still in the pipe");
        // Through the write end too.
        writer.write_all(b"more").unwrap();
        assert_eq!(capture(pid, writer.as_raw_fd(), 7, true).unwrap().data, b"more");
        assert!(capture(pid, writer.as_raw_fd(), 7, false).unwrap().data.is_empty());
    }

    #[test]
    fn a_made_pipe_is_sized_filled_and_each_end_given_once() {
        let (mut reader, writer) = std::io::pipe().unwrap();
        // pipe2 writes fds 3 and 4; F_DUPFD moves them to 10 and 11.
        let mut next = 9;
        let mut tracee = crp_ptrace::fake::FakeTracee::answering(move |call, memory| match call.number {
            libc::SYS_pipe2 => {
                memory.write(call.args[0], &[3, 0, 0, 0, 4, 0, 0, 0]);
                0
            }
            libc::SYS_fcntl if call.args[1] == libc::F_DUPFD_CLOEXEC as u64 => {
                next += 1;
                next
            }
            libc::SYS_openat => 5,
            _ => 0,
        });
        tracee.descriptors.insert(11, writer.into());
        let buffer = PipeBuffer { inode: 1, size: 1 << 20, data: b"kept".to_vec() };
        let mut made = make(&mut tracee, &buffer, 10).unwrap();
        let resize = tracee.calls.iter().find(|call| call.args[1] == libc::F_SETPIPE_SZ as u64).unwrap();
        assert_eq!((resize.args[0], resize.args[2]), (10, 1 << 20));
        let mut filled = [0u8; 4];
        reader.read_exact(&mut filled).unwrap();
        assert_eq!(&filled, b"kept");
        assert_eq!(end_for(&mut tracee, &mut made, libc::O_RDONLY, 10).unwrap(), 10);
        assert_eq!(end_for(&mut tracee, &mut made, libc::O_WRONLY | libc::O_NONBLOCK, 10).unwrap(), 11);
        let setfl = tracee.calls.iter().find(|call| call.args[1] == libc::F_SETFL as u64).unwrap();
        assert_eq!((setfl.args[0], setfl.args[2]), (11, libc::O_NONBLOCK as u64));
        // A second read description is a reopening, moved up.
        assert_eq!(end_for(&mut tracee, &mut made, libc::O_RDONLY, 10).unwrap(), 12);
        assert_eq!(tracee.calls_of(libc::SYS_openat).len(), 1);
    }
}
