// SPDX-License-Identifier: GPL-2.0
//! The ABI of `/dev/crp`, shared word for word by the kernel module
//! (`crp_main.rs`: `mod abi;`) and user space (the `crp-kmod-abi` crate,
//! whose root includes this file). It depends on nothing but `core`.
//!
//! Every record is `#[repr(C)]`, made only of `u64`/`u32`/`i32` fields and
//! arrays of records, laid out so that there is no implicit padding: the
//! kernel copies them from and to user memory as plain bytes. The kernel
//! never sees the image's rkyv metadata; user space translates.
//!
//! ioctls (magic `'C'`):
//! - [`CRP_IOC_DUMP_TASK`]: fill a [`CrpTaskState`], a [`CrpVma`] array with
//!   its names, and the XSAVE area of a task the caller has ptrace-stopped.
//! - [`CRP_IOC_ATTACH`]: bind the open file to such a task; `pread` on the
//!   file then reads the task's memory, the file offset being the address.
//! - [`CRP_IOC_RESTORE`]: turn the calling process into the one described:
//!   unmap it, map every VMA, fill pages from the image file, set the mm
//!   fields, signal state, robust list, clear_child_tid, personality and
//!   the general registers, and return to user mode at the saved
//!   instruction. The ioctl's return value is the saved `rax`.

/// Bumped on any change of a record or ioctl below.
pub const CRP_ABI_VERSION: u32 = 1;

/// Signals 1..=64, index `signal - 1`.
pub const CRP_SIGNALS: usize = 64;
/// `struct user_regs_struct` on x86_64, in its order (r15 first, gs last).
pub const CRP_USER_REGS: usize = 27;
/// Words of `mm->saved_auxv` the records carry (the kernel keeps fewer).
pub const CRP_AUXV_WORDS: usize = 64;
/// `RLIM_NLIMITS`.
pub const CRP_RLIMITS: usize = 16;
/// Upper bounds the module enforces on counts passed in.
pub const CRP_MAX_VMAS: u32 = 1 << 16;
pub const CRP_MAX_RUNS: u32 = 1 << 22;
/// Largest XSAVE area the module copies out.
pub const CRP_MAX_XSTATE: u32 = 1 << 16;

/// `CrpVma::flags` and `CrpRestoreVma::flags` bits: the module translates
/// the kernel's own `VM_*` flags to these, which do not change with it.
pub const CRP_VMA_READ: u64 = 1 << 0;
pub const CRP_VMA_WRITE: u64 = 1 << 1;
pub const CRP_VMA_EXEC: u64 = 1 << 2;
/// `VM_MAYSHARE`: a `MAP_SHARED` mapping.
pub const CRP_VMA_SHARED: u64 = 1 << 3;
pub const CRP_VMA_GROWSDOWN: u64 = 1 << 4;
pub const CRP_VMA_HUGEPAGE: u64 = 1 << 5;
pub const CRP_VMA_NOHUGEPAGE: u64 = 1 << 6;
/// `VM_DONTCOPY` (`MADV_DONTFORK`).
pub const CRP_VMA_DONTFORK: u64 = 1 << 7;
pub const CRP_VMA_WIPEONFORK: u64 = 1 << 8;
pub const CRP_VMA_DONTDUMP: u64 = 1 << 9;
pub const CRP_VMA_MAYWRITE: u64 = 1 << 10;
pub const CRP_VMA_NORESERVE: u64 = 1 << 11;
/// Reported at dump only; refused by user space.
pub const CRP_VMA_LOCKED: u64 = 1 << 12;
/// `VM_IO`/`VM_PFNMAP`/`VM_MIXEDMAP`: device memory. Reported at dump only.
pub const CRP_VMA_DEVICE: u64 = 1 << 13;
/// The bits a restore request may carry.
pub const CRP_VMA_RESTORABLE: u64 = CRP_VMA_READ
    | CRP_VMA_WRITE
    | CRP_VMA_EXEC
    | CRP_VMA_SHARED
    | CRP_VMA_GROWSDOWN
    | CRP_VMA_HUGEPAGE
    | CRP_VMA_NOHUGEPAGE
    | CRP_VMA_DONTFORK
    | CRP_VMA_WIPEONFORK
    | CRP_VMA_DONTDUMP
    | CRP_VMA_MAYWRITE
    | CRP_VMA_NORESERVE;

/// `CrpVma::kind`.
pub const CRP_VMA_ANONYMOUS: u32 = 0;
pub const CRP_VMA_FILE: u32 = 1;
/// A kernel special mapping (`[vdso]`, `[vvar]`, ...): its name is given.
pub const CRP_VMA_SPECIAL: u32 = 2;

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;
const CRP_IOC_MAGIC: u32 = b'C' as u32;

/// The asm-generic `_IOC` encoding. Record sizes fit the 14-bit field
/// (the layout pins below keep them small).
#[allow(clippy::cast_possible_truncation)]
const fn ioc(direction: u32, number: u32, size: usize) -> u32 {
    (direction << 30) | ((size as u32) << 16) | (CRP_IOC_MAGIC << 8) | number
}

pub const CRP_IOC_DUMP_TASK: u32 = ioc(IOC_READ | IOC_WRITE, 1, core::mem::size_of::<CrpDumpRequest>());
pub const CRP_IOC_ATTACH: u32 = ioc(IOC_WRITE, 2, core::mem::size_of::<CrpAttach>());
pub const CRP_IOC_RESTORE: u32 = ioc(IOC_WRITE, 3, core::mem::size_of::<CrpRestoreRequest>());

/// One signal's disposition (`struct sigaction` as the kernel keeps it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrpSigaction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// The `mm_struct` fields `PR_SET_MM_MAP` covers, and the saved auxv.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrpMmState {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// Words used in `auxv` (pairs, ending with `AT_NULL`).
    pub auxv_words: u64,
    pub auxv: [u64; CRP_AUXV_WORDS],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrpRlimit {
    pub soft: u64,
    pub hard: u64,
}

/// Per-task state. Filled by `CRP_IOC_DUMP_TASK`; read by `CRP_IOC_RESTORE`,
/// which uses `regs`, `actions`, `blocked`, the altstack, `personality`,
/// `mm`, the robust list and `clear_child_tid` and ignores the rest.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrpTaskState {
    pub regs: [u64; CRP_USER_REGS],
    pub actions: [CrpSigaction; CRP_SIGNALS],
    /// Blocked signals, bit `signal - 1`.
    pub blocked: u64,
    pub altstack_sp: u64,
    pub altstack_size: u64,
    pub altstack_flags: u32,
    pub personality: u32,
    pub mm: CrpMmState,
    pub robust_list_head: u64,
    pub robust_list_length: u64,
    pub clear_child_tid: u64,
    pub rseq_address: u64,
    pub rseq_length: u32,
    pub rseq_signature: u32,
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`: time to the next
    /// expiry (0: disarmed) and the interval, in ns (real or CPU time).
    pub itimer_real_value_ns: u64,
    pub itimer_real_interval_ns: u64,
    pub itimer_virtual_value_ns: u64,
    pub itimer_virtual_interval_ns: u64,
    pub itimer_prof_value_ns: u64,
    pub itimer_prof_interval_ns: u64,
    /// Threads in the task's group (the module reports; user space refuses > 1).
    pub thread_count: u32,
    /// `SECURE_KEEP_CAPS` of the task's credentials (`PR_GET_KEEPCAPS`).
    pub keep_caps: u32,
    /// `PR_GET_DUMPABLE`.
    pub dumpable: u32,
    pub _reserved: u32,
    pub rlimits: [CrpRlimit; CRP_RLIMITS],
}

/// One VMA as `CRP_IOC_DUMP_TASK` reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrpVma {
    pub start: u64,
    pub end: u64,
    /// Byte offset of `start` in the mapped file (0 for anonymous memory).
    pub file_offset: u64,
    /// `CRP_VMA_*` flag bits.
    pub flags: u64,
    /// `CRP_VMA_ANONYMOUS`, `CRP_VMA_FILE` or `CRP_VMA_SPECIAL`.
    pub kind: u32,
    /// The file's path (or the special mapping's name) in the names
    /// buffer: `name_length` bytes at `name_offset`, no NUL.
    pub name_offset: u32,
    pub name_length: u32,
    pub _reserved: u32,
}

/// Argument of `CRP_IOC_DUMP_TASK` (read and written back).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrpDumpRequest {
    pub abi_version: u32,
    pub pid: i32,
    /// `*mut CrpTaskState`.
    pub task: u64,
    /// `*mut CrpVma` with room for `vma_capacity`; out: `vma_count`. If the
    /// room is too small the ioctl fails with `ENOSPC` and `vma_count` says
    /// how many there are.
    pub vmas: u64,
    pub vma_capacity: u32,
    pub vma_count: u32,
    /// `*mut u8` for the VMA names; out: bytes used (or needed, with ENOSPC).
    pub names: u64,
    pub names_capacity: u32,
    pub names_used: u32,
    /// `*mut u8` for the XSAVE area (the `NT_X86_XSTATE` regset); out: its size.
    pub xstate: u64,
    pub xstate_capacity: u32,
    pub xstate_size: u32,
}

/// Argument of `CRP_IOC_ATTACH`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrpAttach {
    pub abi_version: u32,
    pub pid: i32,
}

/// One VMA to map at restore.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrpRestoreVma {
    pub start: u64,
    pub end: u64,
    /// Byte offset in the file (page-aligned); 0 for anonymous memory.
    pub file_offset: u64,
    /// `CRP_VMA_RESTORABLE` bits.
    pub flags: u64,
    /// An open fd of the caller for the mapped file, or -1 for anonymous memory.
    pub fd: i32,
    pub _reserved: u32,
}

/// `pages` pages stored at `file_offset` in the image, to be written at `address`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrpPageRun {
    pub address: u64,
    pub pages: u64,
    pub file_offset: u64,
}

/// Argument of `CRP_IOC_RESTORE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrpRestoreRequest {
    pub abi_version: u32,
    /// The image file, opened for reading by the caller.
    pub image_fd: i32,
    /// `*const CrpTaskState`.
    pub task: u64,
    /// `*const CrpRestoreVma`, sorted by address, not overlapping.
    pub vmas: u64,
    pub vma_count: u32,
    pub run_count: u32,
    /// `*const CrpPageRun`, each inside one private VMA.
    pub runs: u64,
}

impl CrpMmState {
    /// The address fields in `struct prctl_mm_map` order (auxv aside).
    pub const fn bounds(&self) -> [u64; 11] {
        [
            self.start_code,
            self.end_code,
            self.start_data,
            self.end_data,
            self.start_brk,
            self.brk,
            self.start_stack,
            self.arg_start,
            self.arg_end,
            self.env_start,
            self.env_end,
        ]
    }

    /// A record from [`CrpMmState::bounds`] order and the auxv.
    pub const fn from_bounds(bounds: [u64; 11], auxv_words: u64, auxv: [u64; CRP_AUXV_WORDS]) -> Self {
        let [
            start_code,
            end_code,
            start_data,
            end_data,
            start_brk,
            brk,
            start_stack,
            arg_start,
            arg_end,
            env_start,
            env_end,
        ] = bounds;
        Self {
            start_code,
            end_code,
            start_data,
            end_data,
            start_brk,
            brk,
            start_stack,
            arg_start,
            arg_end,
            env_start,
            env_end,
            auxv_words,
            auxv,
        }
    }
}

impl Default for CrpMmState {
    fn default() -> Self {
        Self {
            start_code: 0,
            end_code: 0,
            start_data: 0,
            end_data: 0,
            start_brk: 0,
            brk: 0,
            start_stack: 0,
            arg_start: 0,
            arg_end: 0,
            env_start: 0,
            env_end: 0,
            auxv_words: 0,
            auxv: [0; CRP_AUXV_WORDS],
        }
    }
}

impl Default for CrpTaskState {
    fn default() -> Self {
        Self {
            regs: [0; CRP_USER_REGS],
            actions: [CrpSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 }; CRP_SIGNALS],
            blocked: 0,
            altstack_sp: 0,
            altstack_size: 0,
            altstack_flags: 0,
            personality: 0,
            mm: CrpMmState::default(),
            robust_list_head: 0,
            robust_list_length: 0,
            clear_child_tid: 0,
            rseq_address: 0,
            rseq_length: 0,
            rseq_signature: 0,
            itimer_real_value_ns: 0,
            itimer_real_interval_ns: 0,
            itimer_virtual_value_ns: 0,
            itimer_virtual_interval_ns: 0,
            itimer_prof_value_ns: 0,
            itimer_prof_interval_ns: 0,
            thread_count: 0,
            keep_caps: 0,
            dumpable: 0,
            _reserved: 0,
            rlimits: [CrpRlimit { soft: 0, hard: 0 }; CRP_RLIMITS],
        }
    }
}

// Layout pins: both sides compile these, so a record that changes size
// without a version bump fails to build on both.
const _: () = assert!(core::mem::size_of::<CrpSigaction>() == 32);
const _: () = assert!(core::mem::size_of::<CrpMmState>() == 12 * 8 + CRP_AUXV_WORDS * 8);
const _: () = assert!(core::mem::size_of::<CrpTaskState>() == 3264);
const _: () = assert!(core::mem::size_of::<CrpVma>() == 48);
const _: () = assert!(core::mem::size_of::<CrpDumpRequest>() == 64);
const _: () = assert!(core::mem::size_of::<CrpAttach>() == 8);
const _: () = assert!(core::mem::size_of::<CrpRestoreVma>() == 40);
const _: () = assert!(core::mem::size_of::<CrpPageRun>() == 24);
const _: () = assert!(core::mem::size_of::<CrpRestoreRequest>() == 40);
