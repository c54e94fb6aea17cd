//! Mapping a VMA record again in the process being restored (the
//! userspace back end maps every VMA this way; the kmod back end only opens
//! the files, with [`open_mapped_file`], and the module maps them).

use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};

use super::{Backing, FileAccess, VmaFlags, VmaRecord};

/// Opens a mapped file in the tracee as `access` says; returns the fd.
pub fn open_mapped_file(tracee: &mut dyn Tracee, access: FileAccess<'_>) -> Result<u64, EngineError> {
    let mut scratch = tracee.scratch();
    let path = scratch.push_c_string(access.path.as_bytes());
    scratch.commit(tracee)?;
    let flags = arg(access.open_flags());
    tracee.syscall("openat", libc::SYS_openat, [arg(libc::AT_FDCWD), path, flags, 0, 0, 0])
}

/// Maps `vma` at its address in the tracee. With `writable_for_fill` the
/// mapping starts writable so its pages can be filled; call [`finish_vma`]
/// afterwards.
pub fn map_vma(tracee: &mut dyn Tracee, vma: &VmaRecord, writable_for_fill: bool) -> Result<(), EngineError> {
    map_vma_from(tracee, vma, writable_for_fill, None)
}

/// [`map_vma`], a shared memory object's or descriptor object's mapping
/// mapped from `object_fd` (a descriptor of the object in the tracee) at
/// the record's offset.
pub fn map_vma_from(
    tracee: &mut dyn Tracee,
    vma: &VmaRecord,
    writable_for_fill: bool,
    object_fd: Option<u64>,
) -> Result<(), EngineError> {
    let mut protection = u64::from(vma.protection);
    if writable_for_fill {
        protection |= arg(libc::PROT_WRITE);
    }
    let map_type = if vma.shared {
        libc::MAP_SHARED
    } else if vma.flags().contains(VmaFlags::DROPPABLE) {
        MAP_DROPPABLE
    } else {
        libc::MAP_PRIVATE
    };
    let mut map_flags = libc::MAP_FIXED | map_type;
    if vma.flags().contains(VmaFlags::GROWS_DOWN) {
        map_flags |= libc::MAP_GROWSDOWN;
    }
    if vma.flags().contains(VmaFlags::NO_RESERVE) {
        map_flags |= libc::MAP_NORESERVE;
    }
    match &vma.backing {
        Backing::Anonymous { .. } => {
            map_flags |= libc::MAP_ANONYMOUS;
            let args = [vma.start, vma.length(), protection, arg(map_flags), arg(-1), 0];
            tracee.syscall("mmap", libc::SYS_mmap, args)?;
        }
        Backing::File(file) => {
            let fd = open_mapped_file(tracee, FileAccess::new(vma, file))?;
            let args = [vma.start, vma.length(), protection, arg(map_flags), fd, file.offset];
            let mapped = tracee.syscall("mmap", libc::SYS_mmap, args);
            tracee.syscall("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
            mapped?;
        }
        Backing::Shared { offset, .. } | Backing::Descriptor { offset, .. } => {
            let fd = object_fd.ok_or(EngineError::Syscall {
                syscall: "mmap",
                args: vec![vma.start, vma.length()],
                pid: 0,
                errno: nix::errno::Errno::EBADF,
            })?;
            let args = [vma.start, vma.length(), protection, arg(map_flags), fd, *offset];
            tracee.syscall("mmap", libc::SYS_mmap, args)?;
        }
    }
    for (flag, advice) in [
        (VmaFlags::HUGEPAGE, libc::MADV_HUGEPAGE),
        (VmaFlags::NO_HUGEPAGE, libc::MADV_NOHUGEPAGE),
        (VmaFlags::DONT_FORK, libc::MADV_DONTFORK),
        (VmaFlags::WIPE_ON_FORK, libc::MADV_WIPEONFORK),
        (VmaFlags::DONT_DUMP, libc::MADV_DONTDUMP),
        (VmaFlags::MERGEABLE, libc::MADV_MERGEABLE),
    ] {
        if vma.flags().contains(flag) {
            tracee.syscall("madvise", libc::SYS_madvise, [vma.start, vma.length(), arg(advice), 0, 0, 0])?;
        }
    }
    Ok(())
}

/// `MAP_DROPPABLE` (6.11), a map type of its own beside private and shared.
const MAP_DROPPABLE: i32 = 0x08;
/// `MADV_GUARD_INSTALL` (6.15).
const MADV_GUARD_INSTALL: u64 = 102;

/// Installs the guard regions `[start, end)` of the image again, once the
/// memory around them is mapped and filled.
pub fn install_guards<'a>(
    tracee: &mut dyn Tracee,
    guards: impl IntoIterator<Item = &'a super::GuardRegion>,
) -> Result<(), EngineError> {
    for &super::GuardRegion { start, end } in guards {
        tracee.syscall(
            "madvise(MADV_GUARD_INSTALL)",
            libc::SYS_madvise,
            [start, end - start, MADV_GUARD_INSTALL, 0, 0, 0],
        )?;
    }
    Ok(())
}

/// `MLOCK_ONFAULT`.
const MLOCK_ONFAULT: u64 = 1;

/// Sets the final protection of a VMA mapped with [`map_vma`], and locks
/// it again (mlock2) when it was locked.
pub fn finish_vma(tracee: &mut dyn Tracee, vma: &VmaRecord, was_writable_for_fill: bool) -> Result<(), EngineError> {
    if was_writable_for_fill && vma.protection & libc::PROT_WRITE.cast_unsigned() == 0 {
        let args = [vma.start, vma.length(), u64::from(vma.protection), 0, 0, 0];
        tracee.syscall("mprotect", libc::SYS_mprotect, args)?;
    }
    if vma.flags().contains(VmaFlags::LOCKED) {
        // After the fill: the pages locked are the image's.
        let on_fault = if vma.flags().contains(VmaFlags::LOCK_ON_FAULT) { MLOCK_ONFAULT } else { 0 };
        tracee.syscall("mlock2", libc::SYS_mlock2, [vma.start, vma.length(), on_fault, 0, 0, 0])?;
    }
    Ok(())
}
