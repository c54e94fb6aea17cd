//! Descriptions reopened by path: regular files and directories (at their
//! offset), and the memory character devices (/dev/null, /dev/zero...).

use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};

use super::{FdTarget, OpenFile};

/// Major number of the memory devices (/dev/null, zero, full, random, urandom).
pub(super) const MEM_DEVICE_MAJOR: u64 = 1;
/// Terminal majors: /dev/tty*, /dev/tty and /dev/console, /dev/pts/*.
pub(super) const TTY_MAJORS: &[u64] = &[4, 5, 136, 137, 138, 139, 140, 141, 142, 143];

/// Opens `path` in the tracee with the flags of `file`, seeks a regular
/// file to its offset, and moves the descriptor to `above` or higher.
pub(super) fn open(tracee: &mut dyn Tracee, path: &str, file: &OpenFile, above: u64) -> Result<u64, EngineError> {
    let mut scratch = tracee.scratch();
    let path_address = scratch.push_c_string(path.as_bytes());
    scratch.commit(tracee)?;
    let flags = arg(file.flags & !super::REOPEN_EXCLUDED_FLAGS);
    let opened = tracee.syscall("openat", libc::SYS_openat, [arg(libc::AT_FDCWD), path_address, flags, 0, 0, 0])?;
    if matches!(file.target, FdTarget::File { .. }) && file.offset != 0 {
        tracee.syscall("lseek", libc::SYS_lseek, [opened, file.offset, libc::SEEK_SET as u64, 0, 0, 0])?;
    }
    super::move_above(tracee, opened, above)
}
