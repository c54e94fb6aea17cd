// SPDX-License-Identifier: GPL-2.0
//! Safe wrappers over the C shim (`crp_helpers.c`): owned task and mm
//! references, and the few operations on them. Every `unsafe` of the module
//! that calls into C lives here.

use core::ptr::NonNull;

use kernel::bindings;
use kernel::iov::IovIterDest;
use kernel::prelude::*;

/// Words of `crp_task_misc` (see crp_helpers.h).
pub(crate) const MISC_WORDS: usize = 16;
/// Words of one VMA from `crp_next_vma`.
pub(crate) const VMA_WORDS: usize = 5;
/// Words of the mm fields, `prctl_mm_map` order.
pub(crate) const MM_WORDS: usize = 11;
/// ELF note types of the regsets crp reads.
pub(crate) const NT_PRSTATUS: u32 = 1;
pub(crate) const NT_X86_XSTATE: u32 = 0x202;

mod ffi {
    use kernel::prelude::*;

    extern "C" {
        pub(super) fn crp_caller_may_checkpoint() -> c_int;
        pub(super) fn crp_get_task(nr: c_int) -> *mut c_void;
        pub(super) fn crp_put_task(task: *mut c_void);
        pub(super) fn crp_check_dump_target(task: *mut c_void) -> c_int;
        pub(super) fn crp_get_task_mm(task: *mut c_void) -> *mut c_void;
        pub(super) fn crp_put_mm(mm: *mut c_void);
        pub(super) fn crp_current_mm() -> *mut c_void;
        pub(super) fn crp_current_thread_count() -> c_int;
        pub(super) fn crp_task_regset(task: *mut c_void, note_type: c_uint, buf: *mut c_void, size: c_uint) -> c_int;
        pub(super) fn crp_task_signals(task: *mut c_void, actions: *mut u64, blocked: *mut u64, altstack: *mut u64);
        pub(super) fn crp_task_misc(task: *mut c_void, misc: *mut u64);
        pub(super) fn crp_task_rlimits(task: *mut c_void, limits: *mut u64);
        pub(super) fn crp_mm_fields(mm: *mut c_void, fields: *mut u64, auxv: *mut u64, capacity: c_uint) -> c_int;
        pub(super) fn crp_next_vma(
            mm: *mut c_void,
            from: u64,
            vma: *mut u64,
            name: *mut u8,
            capacity: c_uint,
        ) -> c_long;
        pub(super) fn crp_force_write(address: u64, buf: *const c_void, len: c_ulong) -> c_long;
        pub(super) fn crp_read_task_memory(task: *mut c_void, address: u64, iter: *mut c_void) -> c_long;
        pub(super) fn crp_file_is_regular(file: *mut c_void) -> c_int;
        pub(super) fn crp_file_size(file: *mut c_void) -> i64;
        pub(super) fn crp_read_file(file: *mut c_void, buf: *mut c_void, len: c_ulong, pos: i64) -> c_long;
        pub(super) fn crp_fill_user_parallel(file: *mut c_void, pieces: *const u64, count: c_uint) -> c_long;
        pub(super) fn crp_unmap(start: u64, length: u64) -> c_int;
        pub(super) fn crp_map(start: u64, length: u64, flags: u64, file: *mut c_void, offset: u64) -> c_long;
        pub(super) fn crp_set_vma_flags(start: u64, flags: u64) -> c_int;
        pub(super) fn crp_set_mm_fields(fields: *const u64, auxv: *const u64, auxv_words: c_uint) -> c_int;
        pub(super) fn crp_set_signals(actions: *const u64, blocked: u64, altstack: *const u64) -> c_int;
        pub(super) fn crp_set_misc(personality: u64, robust_list_head: u64, clear_child_tid: u64);
        pub(super) fn crp_set_fs_base(fsbase: u64);
        pub(super) fn crp_set_user_regs(regs: *const u64) -> c_int;
    }
}

/// A negative C return value as an error, else the value.
fn check(value: c_long) -> Result<usize> {
    if value < 0 {
        let errno = c_int::try_from(value).unwrap_or(-(bindings::EINVAL as c_int));
        return Err(Error::from_errno(errno));
    }
    Ok(value as usize)
}

/// A negative C int as an error.
fn check_int(value: c_int) -> Result {
    check(value as c_long).map(|_| ())
}

pub(crate) fn caller_may_checkpoint() -> bool {
    // SAFETY: capable() only reads the current task's credentials.
    unsafe { ffi::crp_caller_may_checkpoint() != 0 }
}

/// A counted reference to a task.
pub(crate) struct TaskRef(NonNull<c_void>);

// SAFETY: a task reference may be used and dropped from any thread; the task
// struct stays valid while the reference is held.
unsafe impl Send for TaskRef {}
// SAFETY: every method takes the locks the fields it reads need.
unsafe impl Sync for TaskRef {}

impl TaskRef {
    /// The task with `pid` in the caller's pid namespace.
    pub(crate) fn find(pid: i32) -> Result<Self> {
        // SAFETY: takes its own references; returns NULL when there is no such task.
        let task = unsafe { ffi::crp_get_task(pid) };
        NonNull::new(task).map(Self).ok_or(ESRCH)
    }

    fn raw(&self) -> *mut c_void {
        self.0.as_ptr()
    }

    /// Ok when the task is a user process ptrace-stopped by the caller.
    pub(crate) fn check_dump_target(&self) -> Result {
        // SAFETY: `self` holds a reference, so the task is valid.
        check_int(unsafe { ffi::crp_check_dump_target(self.raw()) })
    }

    pub(crate) fn mm(&self) -> Result<MmRef> {
        // SAFETY: `self` holds a reference; get_task_mm takes one on the mm.
        let mm = unsafe { ffi::crp_get_task_mm(self.raw()) };
        NonNull::new(mm).map(MmRef).ok_or(ESRCH)
    }

    /// Copies the regset `note_type` into `buffer`; returns its length.
    pub(crate) fn regset(&self, note_type: u32, buffer: &mut [u8]) -> Result<usize> {
        let size = c_uint::try_from(buffer.len()).map_err(|_| EINVAL)?;
        // SAFETY: `buffer` is valid for `size` bytes; the task is stopped
        // (checked by the caller) as regset_get requires.
        check(unsafe { ffi::crp_task_regset(self.raw(), note_type, buffer.as_mut_ptr().cast(), size) } as c_long)
    }

    /// Copies the regset `note_type` into `words`; returns its length in bytes.
    pub(crate) fn regset_words(&self, note_type: u32, words: &mut [u64]) -> Result<usize> {
        let size = c_uint::try_from(core::mem::size_of_val(words)).map_err(|_| EINVAL)?;
        // SAFETY: `words` is valid for `size` bytes and any bytes are valid
        // u64s; the task is stopped (checked by the caller).
        check(unsafe { ffi::crp_task_regset(self.raw(), note_type, words.as_mut_ptr().cast(), size) } as c_long)
    }

    /// `actions` gets 4 words per signal; `altstack` sp, size, flags.
    pub(crate) fn signals(&self, actions: &mut [u64; 4 * 64], blocked: &mut u64, altstack: &mut [u64; 3]) {
        // SAFETY: the arrays have the sizes crp_task_signals writes.
        unsafe { ffi::crp_task_signals(self.raw(), actions.as_mut_ptr(), blocked, altstack.as_mut_ptr()) }
    }

    pub(crate) fn misc(&self) -> [u64; MISC_WORDS] {
        let mut misc = [0u64; MISC_WORDS];
        // SAFETY: `misc` has the MISC_WORDS words crp_task_misc writes.
        unsafe { ffi::crp_task_misc(self.raw(), misc.as_mut_ptr()) };
        misc
    }

    /// Soft and hard limit of every resource.
    pub(crate) fn rlimits(&self) -> [u64; 32] {
        let mut limits = [0u64; 32];
        // SAFETY: `limits` has 2 words per RLIM_NLIMITS (16) resources.
        unsafe { ffi::crp_task_rlimits(self.raw(), limits.as_mut_ptr()) };
        limits
    }

    /// Copies the task's memory at `address` into `destination` (one copy
    /// per page, like process_vm_readv); returns the bytes copied, fewer at
    /// an unmapped page, EIO if none.
    pub(crate) fn read_memory(&self, address: u64, destination: &mut IovIterDest<'_>) -> Result<usize> {
        // SAFETY: the task is held; `destination` is a live iov_iter the
        // copy advances, as IovIterDest's own copies do.
        check(unsafe { ffi::crp_read_task_memory(self.raw(), address, destination.as_raw().cast()) })
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        // SAFETY: drops the reference `find` took.
        unsafe { ffi::crp_put_task(self.raw()) }
    }
}

/// A counted reference to a task's mm (`get_task_mm`/`mmput`).
pub(crate) struct MmRef(NonNull<c_void>);

impl MmRef {
    fn raw(&self) -> *mut c_void {
        self.0.as_ptr()
    }

    /// The mm fields; returns the auxv words copied.
    pub(crate) fn fields(&self, fields: &mut [u64; MM_WORDS], auxv: &mut [u64]) -> usize {
        let capacity = c_uint::try_from(auxv.len()).unwrap_or(0);
        // SAFETY: `fields` and `auxv` are valid for the words passed; the
        // mm is held.
        let words = unsafe { ffi::crp_mm_fields(self.raw(), fields.as_mut_ptr(), auxv.as_mut_ptr(), capacity) };
        usize::try_from(words).unwrap_or(0)
    }

    /// The first VMA ending above `from`, with its name in `name`.
    pub(crate) fn next_vma(&self, from: u64, name: &mut [u8]) -> Result<Option<([u64; VMA_WORDS], usize)>> {
        next_vma(self.raw(), from, name)
    }
}

impl Drop for MmRef {
    fn drop(&mut self) {
        // SAFETY: drops the reference get_task_mm took.
        unsafe { ffi::crp_put_mm(self.raw()) }
    }
}

fn next_vma(mm: *mut c_void, from: u64, name: &mut [u8]) -> Result<Option<([u64; VMA_WORDS], usize)>> {
    let mut words = [0u64; VMA_WORDS];
    let capacity = c_uint::try_from(name.len()).map_err(|_| EINVAL)?;
    // SAFETY: `mm` is held by the caller (a counted reference, or the
    // current task's own mm); `words` and `name` are valid for their sizes.
    let length = unsafe { ffi::crp_next_vma(mm, from, words.as_mut_ptr(), name.as_mut_ptr(), capacity) };
    if length == -(bindings::ENOENT as c_long) {
        return Ok(None);
    }
    Ok(Some((words, check(length)?)))
}

/// What the restore does to the calling task itself.
pub(crate) mod current {
    use super::*;

    pub(crate) fn thread_count() -> usize {
        // SAFETY: reads the current task's thread count.
        usize::try_from(unsafe { ffi::crp_current_thread_count() }).unwrap_or(usize::MAX)
    }

    /// The first VMA of the caller ending above `from`.
    pub(crate) fn next_vma(from: u64, name: &mut [u8]) -> Result<Option<([u64; VMA_WORDS], usize)>> {
        // SAFETY: the current task's mm lives as long as the task runs this ioctl.
        let mm = unsafe { ffi::crp_current_mm() };
        if mm.is_null() {
            return Err(EINVAL);
        }
        super::next_vma(mm, from, name)
    }

    pub(crate) fn unmap(start: u64, length: u64) -> Result {
        // SAFETY: vm_munmap acts on the current mm with its own locking.
        check_int(unsafe { ffi::crp_unmap(start, length) })
    }

    /// Maps `[start, start + length)` with the CRP_VMA_* `flags`; `file` is
    /// a `struct file *` the caller holds, or null.
    pub(crate) fn map(start: u64, length: u64, flags: u64, file: *mut c_void, offset: u64) -> Result {
        // SAFETY: vm_mmap acts on the current mm; `file`, if not null, is
        // held by the caller for the duration of the call.
        let address = check(unsafe { ffi::crp_map(start, length, flags, file, offset) })?;
        if address as u64 != start {
            return Err(EFAULT);
        }
        Ok(())
    }

    pub(crate) fn set_vma_flags(start: u64, flags: u64) -> Result {
        // SAFETY: takes the current mm's write lock itself.
        check_int(unsafe { ffi::crp_set_vma_flags(start, flags) })
    }

    /// Writes `data` at `address` of the caller through any protection.
    pub(crate) fn force_write(address: u64, data: &[u8]) -> Result {
        // SAFETY: `data` is valid for its length and only read.
        let written = check(unsafe { ffi::crp_force_write(address, data.as_ptr().cast(), data.len()) })?;
        if written != data.len() {
            return Err(EFAULT);
        }
        Ok(())
    }

    pub(crate) fn set_mm_fields(fields: &[u64; MM_WORDS], auxv: &[u64]) -> Result {
        let words = c_uint::try_from(auxv.len()).map_err(|_| EINVAL)?;
        // SAFETY: the arrays are valid for the words passed.
        check_int(unsafe { ffi::crp_set_mm_fields(fields.as_ptr(), auxv.as_ptr(), words) })
    }

    pub(crate) fn set_signals(actions: &[u64; 4 * 64], blocked: u64, altstack: &[u64; 3]) -> Result {
        // SAFETY: the arrays have the sizes crp_set_signals reads.
        check_int(unsafe { ffi::crp_set_signals(actions.as_ptr(), blocked, altstack.as_ptr()) })
    }

    pub(crate) fn set_misc(personality: u64, robust_list_head: u64, clear_child_tid: u64) {
        // SAFETY: plain stores into the current task.
        unsafe { ffi::crp_set_misc(personality, robust_list_head, clear_child_tid) }
    }

    /// Sets the fs base (below TASK_SIZE, checked by the caller).
    pub(crate) fn set_fs_base(fs_base: u64) {
        // SAFETY: writes the current task's own fs base with preemption off.
        unsafe { ffi::crp_set_fs_base(fs_base) }
    }

    pub(crate) fn set_user_regs(regs: &[u64; 27]) -> Result {
        // SAFETY: `regs` has the 27 user_regs_struct words crp_set_user_regs reads.
        check_int(unsafe { ffi::crp_set_user_regs(regs.as_ptr()) })
    }
}

/// A `struct file *` the caller holds, as the shim wants it.
pub(crate) mod file {
    use super::*;

    pub(crate) fn is_regular(file: *mut c_void) -> bool {
        // SAFETY: `file` is held by the caller.
        unsafe { ffi::crp_file_is_regular(file) != 0 }
    }

    pub(crate) fn size(file: *mut c_void) -> i64 {
        // SAFETY: `file` is held by the caller.
        unsafe { ffi::crp_file_size(file) }
    }

    /// Fills the caller's writable memory from `file`, one worker per CPU:
    /// `pieces` are (address, length, file offset) triplets of similar size.
    pub(crate) fn fill_user_parallel(file: *mut c_void, pieces: &[[u64; 3]]) -> Result {
        let count = c_uint::try_from(pieces.len()).map_err(|_| E2BIG)?;
        // SAFETY: `file` is held by the caller; `pieces` is valid for
        // `count` triplets (a [u64; 3] array is three contiguous u64s) and
        // outlives the call, which waits for every worker.
        check(unsafe { ffi::crp_fill_user_parallel(file, pieces.as_ptr().cast(), count) }).map(|_| ())
    }

    /// Reads exactly `buffer.len()` bytes at `position`, or fails with EIO.
    pub(crate) fn read_exact(file: *mut c_void, buffer: &mut [u8], position: i64) -> Result {
        // SAFETY: `file` is held by the caller; `buffer` is valid for its length.
        let read = check(unsafe { ffi::crp_read_file(file, buffer.as_mut_ptr().cast(), buffer.len(), position) })?;
        if read != buffer.len() {
            return Err(EIO);
        }
        Ok(())
    }
}
