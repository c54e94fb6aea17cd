//! What /proc says about one process's descriptors: the numbers
//! (/proc/PID/fd), what each points to (its link text and a stat through
//! it), its status flags and offset (/proc/PID/fdinfo), and whether two
//! descriptors are one open file description (`kcmp`).

use crp_ptrace::procfs::{Fields, ProcError};

use crate::error::CompoundError;

/// One descriptor as /proc shows it.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub fd: i32,
    /// The link text of /proc/PID/fd/FD: a path, or `pipe:[INODE]`,
    /// `socket:[INODE]`, `anon_inode:[eventfd]`...
    pub link: String,
    /// open(2) flags as fdinfo shows them (O_CLOEXEC included).
    pub flags: i32,
    pub offset: u64,
}

impl Entry {
    /// The inode of a `pipe:[INODE]` or `socket:[INODE]` link.
    pub fn bracketed_inode(&self, prefix: &str) -> Option<u64> {
        self.link.strip_prefix(prefix)?.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
    }

    pub fn access_mode(&self) -> i32 {
        self.flags & libc::O_ACCMODE
    }
}

/// The descriptors of `pid`, in ascending order, each with its link text,
/// flags and offset. An entry that cannot be read or is not a number is an
/// error: a descriptor left out would be silently missing after the restore.
/// Only one closed since the listing (which a process not frozen yet may
/// do) is left out: it is not there any more.
pub(super) fn entries(pid: i32) -> Result<Vec<Entry>, CompoundError> {
    let mut entries = Vec::new();
    for fd in open_fds(pid)? {
        let closed = |error: &CompoundError| match error {
            CompoundError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            CompoundError::Proc(error) => error.is_not_found(),
            _ => false,
        };
        match entry(pid, fd) {
            Ok(entry) => entries.push(entry),
            Err(error) if closed(&error) && std::fs::symlink_metadata(format!("/proc/{pid}")).is_ok() => {}
            Err(error) => return Err(error),
        }
    }
    Ok(entries)
}

/// Descriptor `fd` of `pid`.
pub(super) fn entry(pid: i32, fd: i32) -> Result<Entry, CompoundError> {
    let link = link_text(pid, fd)?;
    let (flags, offset) = fdinfo(pid, fd)?;
    Ok(Entry { fd, link, flags, offset })
}

/// The open descriptors of `pid`, in ascending order.
pub(super) fn open_fds(pid: i32) -> Result<Vec<i32>, CompoundError> {
    let directory = format!("/proc/{pid}/fd");
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(&directory).map_err(CompoundError::io("list", &directory))? {
        let name = entry.map_err(CompoundError::io("list", &directory))?.file_name();
        let fd = name.to_str().and_then(|name| name.parse().ok()).ok_or_else(|| CompoundError::Malformed {
            path: directory.clone().into(),
            reason: format!("entry {name:?} is not a descriptor number"),
        })?;
        // crp's change tracking is crp's, not a descriptor of the process.
        if crate::tracking::tracking_fd(pid, fd).is_none() {
            fds.push(fd);
        }
    }
    fds.sort_unstable();
    Ok(fds)
}

pub(super) fn link_text(pid: i32, fd: i32) -> Result<String, CompoundError> {
    let link = format!("/proc/{pid}/fd/{fd}");
    Ok(std::fs::read_link(&link).map_err(CompoundError::io("read link", &link))?.to_string_lossy().into_owned())
}

/// The stat of what descriptor `fd` of `pid` refers to.
pub(super) fn metadata(pid: i32, fd: i32) -> Result<std::fs::Metadata, CompoundError> {
    let link = format!("/proc/{pid}/fd/{fd}");
    std::fs::metadata(&link).map_err(CompoundError::io("stat", &link))
}

pub(super) fn fdinfo(pid: i32, fd: i32) -> Result<(i32, u64), CompoundError> {
    Ok(parse_fdinfo(&Fields::read(format!("/proc/{pid}/fdinfo/{fd}"))?)?)
}

/// `(flags, offset)` of a /proc/PID/fdinfo/FD text.
pub(super) fn parse_fdinfo(fdinfo: &Fields) -> Result<(i32, u64), ProcError> {
    let offset = fdinfo.decimal("pos")?;
    let flags_text = fdinfo.field("flags")?;
    let flags =
        i32::try_from(fdinfo.octal("flags")?).map_err(|_| fdinfo.malformed("flags", flags_text, "out of range"))?;
    Ok((flags, offset))
}

/// `kcmp(KCMP_FILE)`: whether two descriptors of `pid` are one open file
/// description.
pub(super) fn same_description(pid: i32, first: i32, second: i32) -> Result<bool, CompoundError> {
    const KCMP_FILE: libc::c_int = 0;
    // SAFETY: kcmp only compares kernel objects of the given tasks; it reads
    // and writes no memory of crp's.
    let result = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, first, second) };
    if result < 0 {
        return Err(CompoundError::Ptrace { operation: "kcmp(KCMP_FILE)", pid, errno: nix::errno::Errno::last() });
    }
    Ok(result == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fdinfo_text(text: &str) -> Result<(i32, u64), ProcError> {
        parse_fdinfo(&Fields::parse("/proc/4/fdinfo/3", text).unwrap())
    }

    #[test]
    fn fdinfo_gives_flags_and_offset() {
        let text = "pos:\t4096\nflags:\t02100002\nmnt_id:\t21\nino:\t1234\n";
        assert_eq!(fdinfo_text(text).unwrap(), (0o2100002, 4096));
    }

    #[test]
    fn malformed_fdinfo_is_refused_and_named() {
        assert_eq!(fdinfo_text("flags:\t02\n").unwrap_err().to_string(), "/proc/4/fdinfo/3 has no field pos");
        assert_eq!(
            fdinfo_text("pos:\tx\nflags:\t02\n").unwrap_err().to_string(),
            "cannot parse /proc/4/fdinfo/3 field pos `x`: not a decimal number"
        );
        assert_eq!(
            fdinfo_text("pos:\t0\nflags:\t9\n").unwrap_err().to_string(),
            "cannot parse /proc/4/fdinfo/3 field flags `9`: not an octal number"
        );
        assert!(fdinfo_text("pos:\t0\nflags:\t777777777777\n").unwrap_err().to_string().contains("out of range"));
        assert!(fdinfo_text("pos:\t0\n").is_err());
    }

    #[test]
    fn own_descriptors_list_with_flags_and_offset() {
        let _own = super::super::tests::OWN_DESCRIPTORS.lock();
        use std::os::fd::AsRawFd;
        let pid = std::process::id() as i32;
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        // Other tests open and close descriptors meanwhile: list, but read
        // only this test's own.
        assert!(open_fds(pid).unwrap().contains(&file.as_raw_fd()));
        let entry = entry(pid, file.as_raw_fd()).unwrap();
        assert_eq!((entry.access_mode(), entry.offset), (libc::O_RDONLY, 0));
        let (reader, _writer) = std::io::pipe().unwrap();
        let pipe = super::entry(pid, reader.as_raw_fd()).unwrap();
        assert!(pipe.bracketed_inode("pipe:").is_some(), "{}", pipe.link);
        assert_eq!(pipe.bracketed_inode("socket:"), None);
    }
}
