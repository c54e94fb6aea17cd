//! Files without a name the restore could reopen: deleted files and memfds,
//! each one object of [`FdTable::objects`](super::FdTable) that every
//! description of it refers to by index (so that a mapping can later refer
//! to the same object).
//!
//! - A **deleted file** (link text `PATH (deleted)`) whose inode has no
//!   other link: its contents are saved (data extents only, found with
//!   SEEK_DATA/SEEK_HOLE, so holes stay holes) up to a limit
//!   ([`set_contents_limit`], `crp dump --max-file-contents`), and at the
//!   restore it is made again as an unlinked file in its original directory
//!   (`O_TMPFILE`, so on the original file system), filled from crp,
//!   truncated to its size, given its mode and owner.
//! - A deleted name of a file **still linked elsewhere** (`st_nlink > 0`):
//!   the same inode again through a file handle (`name_to_handle_at` at the
//!   dump, `open_by_handle_at` at the restore, which needs
//!   CAP_DAC_READ_SEARCH), never a copy.
//! - A **memfd** (`/memfd:NAME (deleted)`): name, mode, seals and contents;
//!   made again by `memfd_create(MFD_ALLOW_SEALING)`, filled, truncated,
//!   then sealed (`F_ADD_SEALS`) after the filling.
//!
//! - An open **deleted directory** (empty, as rmdir left it): made again
//!   in its original parent directory (under its own name, or a temporary
//!   one when that is taken), given its mode and owner, held open, then
//!   removed again.
//!
//! Each description of an object is a reopening of `/proc/self/fd/T` (T the
//! object's temporary descriptor) with the description's own flags, at its
//! offset.
//!
//! Written by hand: no crate reads extents or file handles of another
//! process's descriptor.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::sync::atomic::{AtomicU64, Ordering};

use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};
use nix::errno::Errno;

use super::proc_fd::Entry;
use super::{FdTable, OpenFile, call};
use crate::error::{CompoundError, Unsupported};
use crate::valid::{Invalid, check_path};

/// The default of [`set_contents_limit`]: 64 MiB per file.
pub const DEFAULT_CONTENTS_LIMIT: u64 = 64 << 20;
/// The `crp dump` option that raises the limit, named in the refusal.
pub const CONTENTS_LIMIT_OPTION: &str = "--max-file-contents";

static CONTENTS_LIMIT: AtomicU64 = AtomicU64::new(DEFAULT_CONTENTS_LIMIT);

/// The most data bytes a dump saves of one deleted file or memfd; above it
/// the dump is refused, naming the file and [`CONTENTS_LIMIT_OPTION`].
/// One setting for the whole dump (crp dumps one process per run).
pub fn set_contents_limit(bytes: u64) {
    CONTENTS_LIMIT.store(bytes, Ordering::Relaxed);
}

pub fn contents_limit() -> u64 {
    CONTENTS_LIMIT.load(Ordering::Relaxed)
}

/// The longest memfd name (`MFD_NAME_MAX_LEN`).
const MEMFD_NAME_MAX: usize = 249;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
/// `__O_TMPFILE` (O_TMPFILE without O_DIRECTORY).
const O_TMPFILE_BIT: i32 = libc::O_TMPFILE & !libc::O_DIRECTORY;

/// A run of data bytes of a file, at `offset`; what lies between extents is
/// a hole.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Extent {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// The contents of a file: its size and its data extents.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Contents {
    pub size: u64,
    /// In ascending offset order, not overlapping, within `size`.
    pub extents: Vec<Extent>,
}

impl Contents {
    /// The data bytes stored (the holes excluded).
    pub fn stored_bytes(&self) -> u64 {
        self.extents.iter().map(|extent| extent.data.len() as u64).sum()
    }
}

/// A file object several descriptions (and later mappings) share.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum FileObject {
    /// A deleted file with no other link, made again from its contents.
    Deleted { path: String, inode: u64, mode: u32, uid: u32, gid: u32, contents: Contents },
    /// A deleted name of a file still linked elsewhere: reopened by handle.
    Linked {
        path: String,
        inode: u64,
        /// A mount point of the file's file system, for `open_by_handle_at`.
        mount: String,
        handle_type: i32,
        handle: Vec<u8>,
    },
    /// A memfd.
    Memfd { name: String, inode: u64, mode: u32, uid: u32, gid: u32, seals: u32, contents: Contents },
    /// A deleted directory (empty): made again in its parent, then removed.
    DeletedDirectory { path: String, inode: u64, mode: u32, uid: u32, gid: u32 },
}

impl FileObject {
    pub fn inode(&self) -> u64 {
        match self {
            Self::Deleted { inode, .. }
            | Self::Linked { inode, .. }
            | Self::Memfd { inode, .. }
            | Self::DeletedDirectory { inode, .. } => *inode,
        }
    }
}

/// What `classify` found: a descriptor of an unlinked object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    device: u64,
    inode: u64,
    memfd: bool,
    directory: bool,
    links: u64,
}

/// Decides whether the deleted-looking descriptor `entry` is one this module
/// keeps, and what it is.
pub(super) fn classify(pid: i32, entry: &Entry, metadata: &std::fs::Metadata) -> Result<Found, CompoundError> {
    let refuse = |what: String| -> CompoundError {
        Unsupported { what, location: format!("fd {} -> {}", entry.fd, entry.link) }.into()
    };
    let directory = metadata.is_dir();
    if !directory && !metadata.is_file() {
        return Err(refuse("a deleted file that is not a regular file".into()));
    }
    let memfd = entry.link.starts_with("/memfd:");
    if memfd {
        match statfs_type(pid, entry.fd)? {
            TMPFS_MAGIC => {}
            HUGETLBFS_MAGIC => return Err(refuse("a hugetlbfs memfd (MFD_HUGETLB)".into())),
            other => return Err(refuse(format!("a memfd on file system {other:#x}, not tmpfs"))),
        }
    } else if metadata.nlink() == 0 || directory {
        // Made again in its directory: it must be there, on the same file system.
        let path = deleted_path(&entry.link);
        let noun = if directory { "a deleted directory" } else { "a deleted file" };
        let parent = directory_of(path);
        match std::fs::metadata(parent) {
            Ok(parent_metadata) if parent_metadata.dev() == metadata.dev() => {}
            Ok(_) => {
                return Err(refuse(format!(
                    "{noun} whose parent directory {parent} is now on another file system than it"
                )));
            }
            Err(error) => {
                return Err(refuse(format!("{noun} whose parent directory {parent} cannot be found: {error}")));
            }
        }
    }
    Ok(Found { device: metadata.dev(), inode: metadata.ino(), memfd, directory, links: metadata.nlink() })
}

/// The path of a `PATH (deleted)` link text.
pub(super) fn deleted_path(link: &str) -> &str {
    link.strip_suffix(" (deleted)").unwrap_or(link)
}

/// The directory a path is in.
fn directory_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(slash) => &path[..slash],
    }
}

fn statfs_type(pid: i32, fd: i32) -> Result<i64, CompoundError> {
    let link = format!("/proc/{pid}/fd/{fd}");
    let stat = nix::sys::statfs::statfs(link.as_str()).map_err(|errno| CompoundError::Io {
        action: "statfs",
        path: link.into(),
        source: errno.into(),
    })?;
    Ok(stat.filesystem_type().0)
}

/// Refuses, before anything is touched, an object whose contents exceed the limit.
pub(super) fn check_capturable(pid: i32, entry: &Entry, found: Found) -> Result<(), CompoundError> {
    if found.directory || (!found.memfd && found.links > 0) {
        return Ok(()); // made empty, or reopened by handle: nothing stored
    }
    let file = reopen(pid, entry.fd)?;
    let size = file.metadata().map_err(CompoundError::io("stat", &entry.link))?.len();
    let stored: u64 = data_ranges(&file, size, &entry.link)?.iter().map(|(start, end)| end - start).sum();
    check_limit(entry, stored)
}

fn check_limit(entry: &Entry, stored: u64) -> Result<(), CompoundError> {
    let limit = contents_limit();
    if stored > limit {
        let what = if entry.link.starts_with("/memfd:") { "a memfd" } else { "a deleted file" };
        return Err(Unsupported {
            what: format!(
                "{what} holding {stored} bytes of data, above the {limit} bytes a dump saves of one file \
                 (raise it with crp dump {CONTENTS_LIMIT_OPTION} BYTES)"
            ),
            location: format!("fd {} -> {}", entry.fd, entry.link),
        }
        .into());
    }
    Ok(())
}

fn reopen(pid: i32, fd: i32) -> Result<std::fs::File, CompoundError> {
    let path = format!("/proc/{pid}/fd/{fd}");
    std::fs::File::open(&path).map_err(CompoundError::io("reopen the deleted file", &path))
}

/// The data ranges `[start, end)` of a file of `size` bytes
/// (SEEK_DATA/SEEK_HOLE); a file system without them reports one range,
/// the whole file.
pub(crate) fn data_ranges(file: &std::fs::File, size: u64, link: &str) -> Result<Vec<(u64, u64)>, CompoundError> {
    let seek = |offset: u64, whence: libc::c_int| -> Result<Option<u64>, CompoundError> {
        // SAFETY: lseek on a descriptor crp owns; it touches no memory.
        let result = unsafe { libc::lseek(file.as_raw_fd(), offset.cast_signed(), whence) };
        if result < 0 {
            return match Errno::last() {
                Errno::ENXIO => Ok(None),
                errno => {
                    Err(CompoundError::Io { action: "seek data or hole in", path: link.into(), source: errno.into() })
                }
            };
        }
        Ok(Some(result.cast_unsigned()))
    };
    let mut ranges = Vec::new();
    let mut at = 0;
    while at < size {
        let Some(start) = seek(at, libc::SEEK_DATA)? else { break };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        if end <= start {
            break;
        }
        ranges.push((start, end));
        at = end;
    }
    Ok(ranges)
}

/// The contents of descriptor `entry` of `pid`: its size and data extents.
fn capture_contents(pid: i32, entry: &Entry) -> Result<Contents, CompoundError> {
    let mut file = reopen(pid, entry.fd)?;
    let size = file.metadata().map_err(CompoundError::io("stat", &entry.link))?.len();
    let ranges = data_ranges(&file, size, &entry.link)?;
    check_limit(entry, ranges.iter().map(|(start, end)| end - start).sum())?;
    let mut extents = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        let mut data = Vec::new();
        file.seek(SeekFrom::Start(start)).map_err(CompoundError::io("seek", &entry.link))?;
        (&mut file).take(end - start).read_to_end(&mut data).map_err(CompoundError::io("read", &entry.link))?;
        extents.push(Extent { offset: start, data });
    }
    Ok(Contents { size, extents })
}

/// The objects met so far in one capture, by device and inode.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    seen: Vec<(u64, u64, u32)>,
}

impl Gathered {
    pub(super) fn find(&self, device: u64, inode: u64) -> Option<u32> {
        self.seen.iter().find(|(d, i, _)| *d == device && *i == inode).map(|(_, _, index)| *index)
    }

    pub(super) fn remember(&mut self, device: u64, inode: u64, index: u32) {
        self.seen.push((device, inode, index));
    }
}

/// The index of the object of `entry` in the table, captured the first time.
pub(super) fn object_index(
    pid: i32,
    entry: &Entry,
    found: Found,
    table: &mut FdTable,
    gathered: &mut Gathered,
) -> Result<u32, CompoundError> {
    if let Some(index) = gathered.find(found.device, found.inode) {
        return Ok(index);
    }
    let object = capture_object(pid, entry, found)?;
    table.objects.push(object);
    let index = u32::try_from(table.objects.len() - 1).unwrap_or(u32::MAX);
    gathered.remember(found.device, found.inode, index);
    Ok(index)
}

fn capture_object(pid: i32, entry: &Entry, found: Found) -> Result<FileObject, CompoundError> {
    let metadata = super::proc_fd::metadata(pid, entry.fd)?;
    let (mode, uid, gid) = (metadata.mode() & 0o7777, metadata.uid(), metadata.gid());
    let path = deleted_path(&entry.link);
    if found.directory {
        return Ok(FileObject::DeletedDirectory { path: path.to_owned(), inode: found.inode, mode, uid, gid });
    }
    if found.memfd {
        let name = path.strip_prefix("/memfd:").unwrap_or(path).to_owned();
        let file = reopen(pid, entry.fd)?;
        let seals = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GET_SEALS).map_err(|errno| CompoundError::Io {
            action: "read the seals (F_GET_SEALS) of",
            path: entry.link.clone().into(),
            source: errno.into(),
        })?;
        let contents = capture_contents(pid, entry)?;
        return Ok(FileObject::Memfd {
            name,
            inode: found.inode,
            mode,
            uid,
            gid,
            seals: u32::try_from(seals).unwrap_or(0),
            contents,
        });
    }
    if found.links > 0 {
        match handle_of(pid, entry.fd) {
            Ok((handle_type, handle, mount_id)) => {
                let mount = mount_point(mount_id)?;
                return Ok(FileObject::Linked {
                    path: path.to_owned(),
                    inode: found.inode,
                    mount,
                    handle_type,
                    handle,
                });
            }
            // A file system without file handles: the file is copied.
            Err(errno) => tracing::warn!(fd = entry.fd, link = %entry.link, %errno,
                "no file handle for a deleted name of a file linked elsewhere: its contents are copied"),
        }
    }
    let contents = capture_contents(pid, entry)?;
    Ok(FileObject::Deleted { path: path.to_owned(), inode: found.inode, mode, uid, gid, contents })
}

/// Room for the largest handle (`MAX_HANDLE_SZ`).
const MAX_HANDLE_SIZE: usize = 128;
const MAX_HANDLE_SIZE_U32: u32 = 128;

/// `name_to_handle_at` of descriptor `fd` of `pid`: the handle's type, bytes
/// and the mount id it was resolved through.
fn handle_of(pid: i32, fd: i32) -> Result<(i32, Vec<u8>, i32), Errno> {
    let path = std::ffi::CString::new(format!("/proc/{pid}/fd/{fd}")).map_err(|_| Errno::EINVAL)?;
    // struct file_handle: u32 handle_bytes, i32 handle_type, then the bytes.
    let mut buffer = [0u8; 8 + MAX_HANDLE_SIZE];
    buffer[..4].copy_from_slice(&MAX_HANDLE_SIZE_U32.to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `path` is NUL-terminated; `buffer` is a file_handle with room
    // for `handle_bytes` bytes, `mount_id` an int; all live across the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            path.as_ptr(),
            buffer.as_mut_ptr(),
            &raw mut mount_id,
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if result < 0 {
        return Err(Errno::last());
    }
    let [b0, b1, b2, b3, t0, t1, t2, t3, ..] = buffer;
    let bytes = (u32::from_ne_bytes([b0, b1, b2, b3]) as usize).min(MAX_HANDLE_SIZE);
    Ok((i32::from_ne_bytes([t0, t1, t2, t3]), buffer[8..8 + bytes].to_vec(), mount_id))
}

/// The mount point of mount `id` in crp's mount namespace.
fn mount_point(id: i32) -> Result<String, CompoundError> {
    const PATH: &str = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(PATH).map_err(CompoundError::io("read", PATH))?;
    text.lines()
        .find_map(|line| {
            let mut fields = line.split(' ');
            (fields.next()? == id.to_string()).then(|| fields.nth(3).map(unescape_mount_path))?
        })
        .ok_or_else(|| CompoundError::Malformed { path: PATH.into(), reason: format!("no mount {id}") })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mount_path(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes.get(index + 1..index + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[index], escaped) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                index += 4;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Refuses an object no restore could make: bad paths and names, extents
/// out of order or beyond the size, a handle of impossible size.
pub(super) fn check_object(field: &str, object: &FileObject) -> Result<(), Invalid> {
    let check_contents = |contents: &Contents| -> Result<(), Invalid> {
        let mut end = 0u64;
        for (index, extent) in contents.extents.iter().enumerate() {
            let extent_end = extent.offset.checked_add(extent.data.len() as u64);
            if extent.offset < end || extent_end.is_none_or(|extent_end| extent_end > contents.size) {
                return Err(Invalid::new(
                    field,
                    format!(
                        "has extent {index} at {} overlapping another or beyond the size {}",
                        extent.offset, contents.size
                    ),
                ));
            }
            end = extent_end.unwrap_or(u64::MAX);
        }
        if i64::try_from(contents.size).is_err() {
            return Err(Invalid::new(field, format!("has size {}, beyond what ftruncate takes", contents.size)));
        }
        Ok(())
    };
    match object {
        FileObject::Deleted { path, contents, .. } => {
            check_path(field, path)?;
            check_contents(contents)
        }
        FileObject::Linked { path, mount, handle, .. } => {
            check_path(field, path)?;
            check_path(field, mount)?;
            if handle.len() > MAX_HANDLE_SIZE {
                return Err(Invalid::new(
                    field,
                    format!("has a handle of {} bytes, above {MAX_HANDLE_SIZE}", handle.len()),
                ));
            }
            Ok(())
        }
        FileObject::DeletedDirectory { path, .. } => {
            check_path(field, path)?;
            if path == "/" {
                return Err(Invalid::new(field, "is a deleted directory named /, which has no parent".to_owned()));
            }
            Ok(())
        }
        FileObject::Memfd { name, contents, .. } => {
            if name.len() > MEMFD_NAME_MAX || name.contains('\0') {
                return Err(Invalid::new(field, format!("has memfd name {name:.80?}, not one memfd_create takes")));
            }
            check_contents(contents)
        }
    }
}

/// Refuses, before the child exists, an object this host cannot give back:
/// a deleted file whose directory is gone or takes no O_TMPFILE, a file
/// linked elsewhere whose handle no longer opens that file.
pub(super) fn check_host(object: &FileObject) -> Result<(), CompoundError> {
    let unsupported =
        |what: String, location: &str| -> CompoundError { Unsupported { what, location: location.to_owned() }.into() };
    match object {
        FileObject::Deleted { path, .. } => {
            let directory = directory_of(path);
            let made = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(0o600)
                .open(directory);
            made.map(drop).map_err(|error| {
                unsupported(
                    format!("recreating a deleted file needs O_TMPFILE in its original directory {directory}: {error}"),
                    path,
                )
            })
        }
        FileObject::Linked { path, inode, mount, handle_type, handle } => {
            let opened = open_by_handle_in_crp(mount, *handle_type, handle);
            match opened.map(|file| file.metadata().map(|metadata| metadata.ino())) {
                Ok(Ok(found)) if found == *inode => Ok(()),
                Ok(Ok(found)) => {
                    Err(unsupported(format!("the deleted name's file is inode {found} now, not inode {inode}"), path))
                }
                Ok(Err(error)) | Err(error) => Err(unsupported(
                    format!("the file still linked elsewhere cannot be opened by its handle on {mount}: {error}"),
                    path,
                )),
            }
        }
        FileObject::DeletedDirectory { path, .. } => {
            let parent = directory_of(path);
            match std::fs::metadata(parent) {
                Ok(metadata) if metadata.is_dir() => Ok(()),
                Ok(_) => Err(unsupported(
                    format!("recreating a deleted directory needs its parent {parent}, which is not a directory now"),
                    path,
                )),
                Err(error) => Err(unsupported(
                    format!("recreating a deleted directory needs its parent directory {parent}: {error}"),
                    path,
                )),
            }
        }
        FileObject::Memfd { .. } => Ok(()),
    }
}

/// The handle as `struct file_handle` bytes.
fn handle_struct(handle_type: i32, handle: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + handle.len());
    bytes.extend_from_slice(&u32::try_from(handle.len()).unwrap_or(0).to_ne_bytes());
    bytes.extend_from_slice(&handle_type.to_ne_bytes());
    bytes.extend_from_slice(handle);
    bytes
}

fn open_by_handle_in_crp(mount: &str, handle_type: i32, handle: &[u8]) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let mount_fd = std::fs::File::open(mount)?;
    let mut handle = handle_struct(handle_type, handle);
    // SAFETY: `handle` is a complete struct file_handle that outlives the
    // call; open_by_handle_at only reads it.
    let opened = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            handle.as_mut_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if opened < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(i32::try_from(opened).unwrap_or(-1)) })
}

/// The objects made so far in one restore: each one's temporary descriptor.
#[derive(Debug)]
pub(super) struct Made {
    objects: Vec<Option<u64>>,
}

impl Made {
    pub(super) fn new(table: &FdTable) -> Self {
        Self { objects: vec![None; table.objects.len()] }
    }
}

/// The descriptor, at `above` or higher, of description `file` of object
/// `object` of the table, making the object the first time.
pub(super) fn description(
    tracee: &mut dyn Tracee,
    table: &FdTable,
    object: u32,
    file: &OpenFile,
    made: &mut Made,
    above: u64,
) -> Result<Option<u64>, EngineError> {
    let index = object as usize;
    let (Some(object), Some(slot)) = (table.objects.get(index), made.objects.get_mut(index)) else {
        return Ok(None); // refused by check_table
    };
    let mut flags = file.flags & !super::REOPEN_EXCLUDED_FLAGS;
    if flags & O_TMPFILE_BIT != 0 {
        // The process made it with O_TMPFILE: a reopening is a plain open.
        flags &= !(O_TMPFILE_BIT | libc::O_DIRECTORY);
    }
    let opened = match object {
        FileObject::Linked { mount, handle_type, handle, .. } => {
            let mut scratch = tracee.scratch();
            let mount_address = scratch.push_c_string(mount.as_bytes());
            let handle_address = scratch.push(&handle_struct(*handle_type, handle));
            scratch.commit(tracee)?;
            let flags_of_mount = arg(libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
            let mount_fd = call(
                tracee,
                "openat(mount point)",
                libc::SYS_openat,
                &[arg(libc::AT_FDCWD), mount_address, flags_of_mount],
            )?;
            let opened =
                call(tracee, "open_by_handle_at", libc::SYS_open_by_handle_at, &[mount_fd, handle_address, arg(flags)]);
            call(tracee, "close", libc::SYS_close, &[mount_fd])?;
            opened?
        }
        FileObject::Deleted { .. } | FileObject::Memfd { .. } | FileObject::DeletedDirectory { .. } => {
            let made_at = match *slot {
                Some(at) => at,
                None => {
                    let at = make(tracee, object, above)?;
                    *slot = Some(at);
                    at
                }
            };
            let mut scratch = tracee.scratch();
            let path = scratch.push_c_string(format!("/proc/self/fd/{made_at}").as_bytes());
            scratch.commit(tracee)?;
            // /proc/self/fd/T is a (magic) link: O_NOFOLLOW, which the
            // original open may have had (Python's mkstemp does), refuses it.
            let flags = flags & !libc::O_NOFOLLOW;
            call(tracee, "openat(/proc/self/fd)", libc::SYS_openat, &[arg(libc::AT_FDCWD), path, arg(flags)])?
        }
    };
    if file.offset != 0 {
        call(tracee, "lseek", libc::SYS_lseek, &[opened, file.offset, libc::SEEK_SET as u64])?;
    }
    super::move_above(tracee, opened, above).map(Some)
}

/// Makes a deleted file or memfd in the tracee, at a descriptor from
/// `above` up, with its contents, size, owner, mode and (memfd) seals.
fn make(tracee: &mut dyn Tracee, object: &FileObject, above: u64) -> Result<u64, EngineError> {
    let (made, contents, mode, uid, gid, seals) = match object {
        FileObject::Deleted { path, mode, uid, gid, contents, .. } => {
            let mut scratch = tracee.scratch();
            let directory = scratch.push_c_string(directory_of(path).as_bytes());
            scratch.commit(tracee)?;
            let flags = arg(libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC);
            let args = [arg(libc::AT_FDCWD), directory, flags, u64::from(*mode & 0o777)];
            let made = call(tracee, "openat(O_TMPFILE)", libc::SYS_openat, &args)?;
            (super::move_above(tracee, made, above)?, contents, *mode, *uid, *gid, 0)
        }
        FileObject::Memfd { name, mode, uid, gid, seals, contents, .. } => {
            let mut scratch = tracee.scratch();
            let name_address = scratch.push_c_string(name.as_bytes());
            scratch.commit(tracee)?;
            let flags = u64::from(libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC);
            let made = call(tracee, "memfd_create", libc::SYS_memfd_create, &[name_address, flags])?;
            (super::move_above(tracee, made, above)?, contents, *mode, *uid, *gid, *seals)
        }
        FileObject::DeletedDirectory { path, mode, uid, gid, .. } => {
            return make_directory(tracee, path, *mode, *uid, *gid, above);
        }
        FileObject::Linked { .. } => return Ok(u64::MAX), // opened by handle, never made
    };
    fill(tracee, made, contents, mode, uid, gid, seals)?;
    Ok(made)
}

/// Makes a deleted directory again in the tracee: `mkdir` in its parent
/// (its own name, else a temporary one beside it when that is taken), an
/// open of it at a descriptor from `above` up, `rmdir`, then its owner and
/// mode. The directory never outlives a failure here.
fn make_directory(
    tracee: &mut dyn Tracee,
    path: &str,
    mode: u32,
    uid: u32,
    gid: u32,
    above: u64,
) -> Result<u64, EngineError> {
    let temporary = format!("{}/.crp-restored-directory-{}", directory_of(path).trim_end_matches('/'), tracee.pid());
    let mut made_name = None;
    for name in [path, temporary.as_str()] {
        let mut scratch = tracee.scratch();
        let address = scratch.push_c_string(name.as_bytes());
        scratch.commit(tracee)?;
        match call(tracee, "mkdirat", libc::SYS_mkdirat, &[arg(libc::AT_FDCWD), address, 0o700]) {
            Ok(_) => {
                made_name = Some(address);
                break;
            }
            Err(EngineError::Syscall { errno: Errno::EEXIST, .. }) if name == path => {}
            Err(error) => return Err(error),
        }
    }
    let Some(address) = made_name else {
        return Err(EngineError::Descriptor {
            operation: "make again the deleted directory",
            pid: tracee.pid(),
            fd: above,
            errno: Errno::EEXIST,
        });
    };
    let flags = arg(libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW);
    let opened = call(tracee, "openat(directory)", libc::SYS_openat, &[arg(libc::AT_FDCWD), address, flags]);
    let removed = call(
        tracee,
        "unlinkat(AT_REMOVEDIR)",
        libc::SYS_unlinkat,
        &[arg(libc::AT_FDCWD), address, arg(libc::AT_REMOVEDIR)],
    );
    let opened = opened?;
    removed?;
    let made = super::move_above(tracee, opened, above)?;
    call(tracee, "fchown", libc::SYS_fchown, &[made, u64::from(uid), u64::from(gid)])?;
    call(tracee, "fchmod", libc::SYS_fchmod, &[made, u64::from(mode & 0o7777)])?;
    Ok(made)
}

/// From crp, through a reopening of the tracee's `made`: the extents, the
/// size, the owner, the mode, then the seals (last: F_SEAL_WRITE would stop
/// the filling, F_SEAL_EXEC the mode).
fn fill(
    tracee: &mut dyn Tracee,
    made: u64,
    contents: &Contents,
    mode: u32,
    uid: u32,
    gid: u32,
    seals: u32,
) -> Result<(), EngineError> {
    let file = std::fs::File::from(tracee.reopen_descriptor(made, libc::O_RDWR)?);
    let failed = |operation: &'static str| {
        let pid = tracee.pid();
        move |error: std::io::Error| EngineError::Descriptor {
            operation,
            pid,
            fd: made,
            errno: Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)),
        }
    };
    for extent in &contents.extents {
        file.write_all_at(&extent.data, extent.offset).map_err(failed("write the saved contents into"))?;
    }
    file.set_len(contents.size).map_err(failed("truncate to its size"))?;
    let owner = std::os::fd::AsFd::as_fd(&file);
    nix::unistd::fchown(owner, Some(uid.into()), Some(gid.into()))
        .map_err(|errno| failed("give its owner to")(errno.into()))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(failed("give its mode to"))?;
    if seals != 0 {
        nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::from_bits_retain(
                i32::try_from(seals).unwrap_or(0),
            )),
        )
        .map_err(|errno| failed("seal (F_ADD_SEALS)")(errno.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd};

    use super::*;
    use crate::files::{Descriptor, FdTarget, check_table, proc_fd};
    use crp_ptrace::Persist;
    use crp_ptrace::fake::FakeTracee;

    fn own_memfd(flags: libc::c_uint) -> std::fs::File {
        // SAFETY: the name is NUL-terminated; memfd_create returns a new descriptor.
        let fd = unsafe { libc::memfd_create(c"crp-unit".as_ptr(), flags) };
        assert!(fd >= 0);
        // SAFETY: a new descriptor nothing else owns.
        unsafe { std::fs::File::from_raw_fd(fd) }
    }

    /// Two descriptions of object 0, at offsets 0 and 9.
    fn table_of(object: FileObject) -> FdTable {
        FdTable {
            files: vec![
                OpenFile { flags: libc::O_RDWR, offset: 0, target: FdTarget::Object { object: 0 }, owner: None },
                OpenFile { flags: libc::O_RDONLY, offset: 9, target: FdTarget::Object { object: 0 }, owner: None },
            ],
            descriptors: vec![
                Descriptor { fd: 3, cloexec: true, file: 0 },
                Descriptor { fd: 4, cloexec: false, file: 1 },
            ],
            pipes: vec![],
            objects: vec![object],
            socket_pairs: vec![],
        }
    }

    fn contents() -> Contents {
        Contents {
            size: 3 << 20,
            extents: vec![
                Extent { offset: 0, data: b"head".to_vec() },
                Extent { offset: 2 << 20, data: b"tail".to_vec() },
            ],
        }
    }

    /// A fake whose made object is `made` at fd 10 (F_DUPFD_CLOEXEC gives
    /// 10, 11, 12...); the first string argument of each memfd_create and
    /// openat, as it was when called, goes to `strings`.
    fn fake_with(made: std::fs::File, strings: &std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>) -> FakeTracee {
        let mut next = 9;
        let strings = strings.clone();
        let mut tracee = FakeTracee::answering(move |call, memory| match call.number {
            libc::SYS_fcntl if call.args[1] == libc::F_DUPFD_CLOEXEC as u64 => {
                next += 1;
                next
            }
            libc::SYS_memfd_create | libc::SYS_openat => {
                let address = if call.number == libc::SYS_openat { call.args[1] } else { call.args[0] };
                let text = memory.read(address, 32);
                strings.borrow_mut().push(text.split(|byte| *byte == 0).next().unwrap_or_default().to_vec());
                5
            }
            _ => 0,
        });
        tracee.descriptors.insert(10, made.into());
        tracee
    }

    #[test]
    fn a_memfd_is_made_once_filled_sized_then_sealed_and_each_description_reopened() {
        let seals = (libc::F_SEAL_WRITE | libc::F_SEAL_GROW) as u32;
        let table = table_of(FileObject::Memfd {
            name: "m".into(),
            inode: 1,
            mode: 0o700,
            uid: 0,
            gid: 0,
            seals,
            contents: contents(),
        });
        check_table(&table).unwrap();
        let ours = own_memfd(libc::MFD_ALLOW_SEALING);
        let strings = std::rc::Rc::default();
        let mut tracee = fake_with(ours.try_clone().unwrap(), &strings);
        table.restore(&mut crp_ptrace::Restore::new(&mut tracee)).unwrap();
        assert_eq!(tracee.calls_of(libc::SYS_memfd_create).len(), 1, "one memfd for both descriptions");
        let create = tracee.calls_of(libc::SYS_memfd_create)[0];
        assert_eq!(create.args[1], u64::from(libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC));
        let reopens = tracee.calls_of(libc::SYS_openat);
        assert_eq!(reopens.len(), 2);
        assert_eq!(*strings.borrow(), [&b"m"[..], b"/proc/self/fd/10", b"/proc/self/fd/10"]);
        assert_eq!((reopens[0].args[2], reopens[1].args[2]), (libc::O_RDWR as u64, libc::O_RDONLY as u64));
        let seeks: Vec<u64> = tracee.calls_of(libc::SYS_lseek).iter().map(|call| call.args[1]).collect();
        assert_eq!(seeks, [9], "only the description at an offset seeks");
        let metadata = ours.metadata().unwrap();
        assert_eq!((metadata.len(), metadata.mode() & 0o7777), (3 << 20, 0o700));
        assert!(metadata.blocks() * 512 < 1 << 20, "the hole stays a hole");
        let mut tail = [0u8; 4];
        ours.read_exact_at(&mut tail, 2 << 20).unwrap();
        assert_eq!(&tail, b"tail");
        assert_eq!(nix::fcntl::fcntl(&ours, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap().cast_unsigned(), seals);
    }

    #[test]
    fn a_deleted_file_is_made_with_o_tmpfile_in_its_directory() {
        let table = table_of(FileObject::Deleted {
            path: "/srv/gone".into(),
            inode: 1,
            mode: 0o640,
            uid: 0,
            gid: 0,
            contents: contents(),
        });
        let ours = own_memfd(0);
        let strings = std::rc::Rc::default();
        let mut tracee = fake_with(ours.try_clone().unwrap(), &strings);
        table.restore(&mut crp_ptrace::Restore::new(&mut tracee)).unwrap();
        let opens = tracee.calls_of(libc::SYS_openat);
        assert_eq!(opens.len(), 3, "the O_TMPFILE one, then a reopening per description");
        assert_eq!(opens[0].args[2], (libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC) as u64);
        assert_eq!(opens[0].args[3], 0o640);
        assert_eq!(strings.borrow()[..2], [&b"/srv"[..], b"/proc/self/fd/10"]);
        assert_eq!(ours.metadata().unwrap().mode() & 0o7777, 0o640);
    }

    #[test]
    fn a_deleted_directory_is_made_in_its_parent_under_another_name_when_taken_then_removed() {
        let mut table = table_of(FileObject::DeletedDirectory {
            path: "/srv/gone".into(),
            inode: 1,
            mode: 0o750,
            uid: 1234,
            gid: 5678,
        });
        table.files[1].flags = libc::O_PATH | libc::O_DIRECTORY;
        check_table(&table).unwrap();
        let strings: std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>> = std::rc::Rc::default();
        let seen = strings.clone();
        let mut next = 9;
        let mut tracee = FakeTracee::answering(move |call, memory| {
            let text = |address| {
                let bytes = memory.read(address, 64);
                bytes.split(|byte| *byte == 0).next().unwrap_or_default().to_vec()
            };
            match call.number {
                libc::SYS_fcntl if call.args[1] == libc::F_DUPFD_CLOEXEC as u64 => {
                    next += 1;
                    next
                }
                libc::SYS_mkdirat => {
                    let name = text(call.args[1]);
                    let taken = name == b"/srv/gone";
                    seen.borrow_mut().push(name);
                    if taken { -i64::from(libc::EEXIST) } else { 0 }
                }
                libc::SYS_openat | libc::SYS_unlinkat => {
                    seen.borrow_mut().push(text(call.args[1]));
                    5
                }
                _ => 0,
            }
        });
        table.restore(&mut crp_ptrace::Restore::new(&mut tracee)).unwrap();
        let temporary = format!("/srv/.crp-restored-directory-{}", FakeTracee::PID).into_bytes();
        assert_eq!(
            *strings.borrow(),
            [
                b"/srv/gone".to_vec(),
                temporary.clone(),
                temporary.clone(),
                temporary,
                b"/proc/self/fd/10".to_vec(),
                b"/proc/self/fd/10".to_vec()
            ],
            "mkdir (the name is taken), mkdir beside it, open, rmdir, then a reopening per description"
        );
        assert_eq!(tracee.calls_of(libc::SYS_mkdirat).len(), 2, "one directory for both descriptions");
        assert_eq!(tracee.calls_of(libc::SYS_unlinkat)[0].args[2], libc::AT_REMOVEDIR as u64);
        assert_eq!(tracee.calls_of(libc::SYS_fchown)[0].args[1..3], [1234, 5678]);
        assert_eq!(tracee.calls_of(libc::SYS_fchmod)[0].args[1], 0o750);
        let reopens = tracee.calls_of(libc::SYS_openat);
        assert_eq!(reopens[2].args[2], (libc::O_PATH | libc::O_DIRECTORY) as u64);
    }

    #[test]
    fn a_deleted_directory_whose_parent_is_gone_is_refused_on_the_host() {
        let object = FileObject::DeletedDirectory {
            path: "/nonexistent-crp-parent/gone".into(),
            inode: 1,
            mode: 0o700,
            uid: 0,
            gid: 0,
        };
        let refusal = check_host(&object).unwrap_err().to_string();
        assert!(refusal.contains("/nonexistent-crp-parent") && refusal.contains("deleted directory"), "{refusal}");
        let root = FileObject::DeletedDirectory { path: "/".into(), inode: 1, mode: 0, uid: 0, gid: 0 };
        assert!(check_table(&table_of(root)).is_err());
    }

    #[test]
    fn a_file_linked_elsewhere_is_opened_by_handle_for_each_description() {
        let mut table = table_of(FileObject::Linked {
            path: "/srv/a".into(),
            inode: 1,
            mount: "/".into(),
            handle_type: 1,
            handle: vec![1, 2, 3, 4, 5, 6, 7, 8],
        });
        table.files[1].flags = libc::O_TMPFILE | libc::O_RDWR;
        let mut tracee = fake_with(own_memfd(0), &std::rc::Rc::default());
        table.restore(&mut crp_ptrace::Restore::new(&mut tracee)).unwrap();
        let by_handle = tracee.calls_of(libc::SYS_open_by_handle_at);
        assert_eq!(by_handle.len(), 2);
        let handle = tracee.memory.read(by_handle[0].args[1], 16);
        assert_eq!(handle, [8, 0, 0, 0, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(by_handle[1].args[2], libc::O_RDWR as u64, "O_TMPFILE's bits are not reopened");
    }

    #[test]
    fn objects_no_restore_could_make_are_refused() {
        let object =
            |contents| FileObject::Memfd { name: "m".into(), inode: 1, mode: 0, uid: 0, gid: 0, seals: 0, contents };
        let beyond = Contents { size: 4, extents: vec![Extent { offset: 2, data: vec![0; 4] }] };
        assert!(check_table(&table_of(object(beyond))).unwrap_err().to_string().contains("beyond the size"));
        let overlapping = Contents {
            size: 100,
            extents: vec![Extent { offset: 0, data: vec![0; 10] }, Extent { offset: 5, data: vec![0; 1] }],
        };
        assert!(check_table(&table_of(object(overlapping))).unwrap_err().to_string().contains("overlapping"));
        let long = FileObject::Memfd {
            name: "n".repeat(300),
            inode: 1,
            mode: 0,
            uid: 0,
            gid: 0,
            seals: 0,
            contents: Contents::default(),
        };
        assert!(check_table(&table_of(long)).unwrap_err().to_string().contains("memfd name"));
        let mut orphan = table_of(object(Contents::default()));
        orphan.objects.push(object(Contents::default()));
        assert!(check_table(&orphan).unwrap_err().to_string().contains("object 1 is referred to by no open file"));
        let mut missing = table_of(object(Contents::default()));
        missing.files[1].target = FdTarget::Object { object: 7 };
        assert!(check_table(&missing).unwrap_err().to_string().contains("object 7, of 1"));
    }

    #[test]
    fn own_deleted_files_and_memfds_are_captured_with_extents_and_handles() {
        let pid = std::process::id() as i32;
        let directory = std::env::temp_dir().join(format!("crp-unlinked-{pid}"));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("sparse");
        let sparse =
            std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        sparse.write_all_at(b"head", 0).unwrap();
        sparse.write_all_at(b"tail", 4 << 20).unwrap();
        std::fs::remove_file(&path).unwrap();
        let linked_path = directory.join("a");
        let linked = std::fs::File::create(&linked_path).unwrap();
        std::fs::hard_link(&linked_path, directory.join("b")).unwrap();
        std::fs::remove_file(&linked_path).unwrap();
        let memfd = own_memfd(libc::MFD_ALLOW_SEALING);
        memfd.write_all_at(b"in memory", 0).unwrap();
        nix::fcntl::fcntl(&memfd, nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::F_SEAL_SHRINK)).unwrap();

        let mut table = FdTable::default();
        let mut gathered = Gathered::default();
        let mut capture = |fd: i32| {
            let entry = proc_fd::entry(pid, fd).unwrap();
            let metadata = proc_fd::metadata(pid, fd).unwrap();
            let found = classify(pid, &entry, &metadata).unwrap();
            object_index(pid, &entry, found, &mut table, &mut gathered).unwrap()
        };
        assert_eq!(capture(sparse.as_raw_fd()), 0);
        assert_eq!(capture(sparse.as_raw_fd()), 0, "one object per inode");
        assert_eq!(capture(linked.as_raw_fd()), 1);
        assert_eq!(capture(memfd.as_raw_fd()), 2);
        let FileObject::Deleted { path: recorded, contents, .. } = &table.objects[0] else {
            panic!("{:?}", table.objects[0])
        };
        assert_eq!(recorded, path.to_str().unwrap());
        assert_eq!(contents.size, (4 << 20) + 4);
        assert_eq!(contents.extents.first().map(|extent| extent.offset), Some(0));
        assert!(contents.stored_bytes() < 1 << 20, "{} bytes stored: the hole was copied", contents.stored_bytes());
        assert!(
            matches!(&table.objects[1], FileObject::Linked { mount, handle, .. } if mount.starts_with('/') && !handle.is_empty())
        );
        check_host(&table.objects[1]).unwrap();
        let FileObject::Memfd { name, seals, contents, .. } = &table.objects[2] else {
            panic!("{:?}", table.objects[2])
        };
        assert_eq!((name.as_str(), *seals), ("crp-unit", libc::F_SEAL_SHRINK as u32));
        assert_eq!(contents.extents[0].data, b"in memory");

        set_contents_limit(4);
        let entry = proc_fd::entry(pid, memfd.as_raw_fd()).unwrap();
        let found = classify(pid, &entry, &proc_fd::metadata(pid, memfd.as_raw_fd()).unwrap()).unwrap();
        let refusal = check_capturable(pid, &entry, found).unwrap_err().to_string();
        set_contents_limit(DEFAULT_CONTENTS_LIMIT);
        assert!(refusal.contains(CONTENTS_LIMIT_OPTION) && refusal.contains("/memfd:crp-unit"), "{refusal}");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape_mount_path(r"/a\\b"), r"/a\\b");
        assert_eq!(directory_of("/srv/x"), "/srv");
        assert_eq!(directory_of("/x"), "/");
    }
}
