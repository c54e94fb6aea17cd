//! Thin wrappers over the ptrace requests and memory calls nix does not
//! cover. All of this crate's `unsafe` lives here.

use std::fs::OpenOptions;
use std::io::IoSliceMut;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::sys::uio::{RemoteIoVec, process_vm_readv, process_vm_writev};
use nix::unistd::Pid;

/// `NT_X86_XSTATE`: the regset holding the whole XSAVE area.
pub const NT_X86_XSTATE: libc::c_int = 0x202;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// Largest XSAVE area any current CPU defines, with room to spare.
const XSTATE_BUFFER: usize = 64 << 10;

/// `struct ptrace_rseq_configuration` from `<linux/ptrace.h>`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct RseqConfiguration {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

/// Reads the XSAVE area (`PTRACE_GETREGSET`, `NT_X86_XSTATE`).
#[doc(alias = "PTRACE_GETREGSET")]
pub fn get_xstate(pid: Pid) -> Result<Vec<u8>, Errno> {
    let mut buffer = vec![0u8; XSTATE_BUFFER];
    let mut iov = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
    // SAFETY: the iovec describes `buffer`, which outlives the call; the
    // kernel writes at most `iov_len` bytes and updates `iov_len`.
    let result = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            pid.as_raw(),
            NT_X86_XSTATE as usize as *mut libc::c_void,
            (&raw mut iov).cast::<libc::c_void>(),
        )
    };
    Errno::result(result)?;
    buffer.truncate(iov.iov_len);
    Ok(buffer)
}

/// Writes the XSAVE area (`PTRACE_SETREGSET`, `NT_X86_XSTATE`). The kernel
/// wants exactly its own XSAVE size.
#[doc(alias = "PTRACE_SETREGSET")]
pub fn set_xstate(pid: Pid, area: &[u8]) -> Result<(), Errno> {
    let mut iov = libc::iovec { iov_base: area.as_ptr().cast_mut().cast(), iov_len: area.len() };
    // SAFETY: the iovec describes `area`, which the kernel only reads.
    let result = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGSET,
            pid.as_raw(),
            NT_X86_XSTATE as usize as *mut libc::c_void,
            (&raw mut iov).cast::<libc::c_void>(),
        )
    };
    Errno::result(result).map(drop)
}

/// The blocked signal mask (`PTRACE_GETSIGMASK`).
#[doc(alias = "PTRACE_GETSIGMASK")]
pub fn get_sigmask(pid: Pid) -> Result<u64, Errno> {
    let mut mask = 0u64;
    // SAFETY: `mask` is 8 bytes, the size passed in `addr`.
    let result = unsafe {
        libc::ptrace(
            PTRACE_GETSIGMASK,
            pid.as_raw(),
            std::mem::size_of::<u64>() as *mut libc::c_void,
            (&raw mut mask).cast::<libc::c_void>(),
        )
    };
    Errno::result(result).map(|_| mask)
}

/// Sets the blocked signal mask (`PTRACE_SETSIGMASK`).
#[doc(alias = "PTRACE_SETSIGMASK")]
pub fn set_sigmask(pid: Pid, mask: u64) -> Result<(), Errno> {
    // SAFETY: `mask` is 8 bytes, the size passed in `addr`; the kernel reads it.
    let result = unsafe {
        libc::ptrace(
            PTRACE_SETSIGMASK,
            pid.as_raw(),
            std::mem::size_of::<u64>() as *mut libc::c_void,
            (&raw const mask).cast_mut().cast::<libc::c_void>(),
        )
    };
    Errno::result(result).map(drop)
}

/// Size of a `siginfo_t` as the kernel copies it to user space.
pub const SIGINFO_SIZE: usize = 128;
/// `PTRACE_PEEKSIGINFO` and its flag for the process-wide queue.
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
/// How many siginfos one `PTRACE_PEEKSIGINFO` asks for.
const PEEK_BATCH: i32 = 32;

/// `struct ptrace_peeksiginfo_args`.
#[repr(C)]
struct PeekSiginfoArgs {
    offset: u64,
    flags: u32,
    count: i32,
}

/// Every signal queued for the tracee, in queue order, without dequeuing
/// any (`PTRACE_PEEKSIGINFO`): the process-wide queue when `shared`, the
/// thread's own otherwise. The tracee must be in a ptrace stop.
#[doc(alias = "PTRACE_PEEKSIGINFO")]
pub fn peek_siginfo(pid: Pid, shared: bool) -> Result<Vec<[u8; SIGINFO_SIZE]>, Errno> {
    let mut queue = Vec::new();
    loop {
        let mut batch = [[0u8; SIGINFO_SIZE]; PEEK_BATCH as usize];
        let args = PeekSiginfoArgs {
            offset: queue.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            count: PEEK_BATCH,
        };
        // SAFETY: `args` is a ptrace_peeksiginfo_args; the kernel writes at
        // most `count` siginfos of SIGINFO_SIZE bytes into `batch`, which
        // holds exactly that many.
        let result = unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO,
                pid.as_raw(),
                (&raw const args).cast_mut().cast::<libc::c_void>(),
                batch.as_mut_ptr().cast::<libc::c_void>(),
            )
        };
        let copied = usize::try_from(Errno::result(result)?).unwrap_or(0).min(batch.len());
        queue.extend_from_slice(&batch[..copied]);
        if copied < batch.len() {
            return Ok(queue);
        }
    }
}

/// The tracee's rseq registration (`PTRACE_GET_RSEQ_CONFIGURATION`).
#[doc(alias = "PTRACE_GET_RSEQ_CONFIGURATION")]
pub fn get_rseq_configuration(pid: Pid) -> Result<RseqConfiguration, Errno> {
    let mut configuration = RseqConfiguration::default();
    // SAFETY: the kernel writes at most `addr` bytes, the size of `configuration`.
    let result = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            pid.as_raw(),
            std::mem::size_of::<RseqConfiguration>() as *mut libc::c_void,
            (&raw mut configuration).cast::<libc::c_void>(),
        )
    };
    Errno::result(result).map(|_| configuration)
}

/// `PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG`.
const PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG: libc::c_uint = 0x4211;

/// The syscall user dispatch mode of a stopped tracee
/// (`PR_SET_SYSCALL_USER_DISPATCH`: 0 off, 1 on).
pub fn syscall_user_dispatch_mode(pid: Pid) -> Result<u64, Errno> {
    // `struct ptrace_sud_config { mode, selector, offset, len }`.
    let mut configuration = [0u64; 4];
    // SAFETY: the kernel writes at most `addr` bytes, the size of `configuration`.
    let result = unsafe {
        libc::ptrace(
            PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG,
            pid.as_raw(),
            std::mem::size_of_val(&configuration) as *mut libc::c_void,
            configuration.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    Errno::result(result).map(|_| configuration[0])
}

/// Reads tracee memory with `process_vm_readv`, falling back to
/// `/proc/PID/mem` for pages the tracee itself cannot read (PROT_NONE).
#[doc(alias = "process_vm_readv")]
/// `kcmp(KCMP_VM)`: whether `first` and `second` share one address space
/// (threads of one process, or a vfork child and its parent).
pub fn same_address_space(first: i32, second: i32) -> Result<bool, Errno> {
    const KCMP_VM: libc::c_int = 1;
    // SAFETY: kcmp only compares kernel objects of the given tasks; it reads
    // and writes no memory of crp's.
    let result = unsafe { libc::syscall(libc::SYS_kcmp, first, second, KCMP_VM, 0, 0) };
    if result < 0 {
        return Err(Errno::last());
    }
    Ok(result == 0)
}

pub fn read_memory(pid: Pid, address: u64, buffer: &mut [u8]) -> Result<(), Errno> {
    let length = buffer.len();
    let remote = [RemoteIoVec { base: remote_base(address)?, len: length }];
    match process_vm_readv(pid, &mut [IoSliceMut::new(buffer)], &remote) {
        Ok(read) if read == length => Ok(()),
        _ => proc_mem(pid, true)?
            .read_exact_at(buffer, address)
            .map_err(|error| Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO))),
    }
}

/// Writes tracee memory with `process_vm_writev`, falling back to
/// `/proc/PID/mem` for pages mapped without write permission.
#[doc(alias = "process_vm_writev")]
pub fn write_memory(pid: Pid, address: u64, data: &[u8]) -> Result<(), Errno> {
    let remote = [RemoteIoVec { base: remote_base(address)?, len: data.len() }];
    match process_vm_writev(pid, &[std::io::IoSlice::new(data)], &remote) {
        Ok(written) if written == data.len() => Ok(()),
        _ => proc_mem(pid, false)?
            .write_all_at(data, address)
            .map_err(|error| Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO))),
    }
}

/// A tracee address as an iovec base (addresses are 64-bit on x86-64).
fn remote_base(address: u64) -> Result<usize, Errno> {
    usize::try_from(address).map_err(|_| Errno::EFAULT)
}

fn proc_mem(pid: Pid, read_only: bool) -> Result<std::fs::File, Errno> {
    OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(format!("/proc/{pid}/mem"))
        .map_err(|error| Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)))
}

/// A duplicate, in crp, of descriptor `fd` of `pid`: the same open file
/// description (`pidfd_open` + `pidfd_getfd`, which need ptrace access).
pub fn duplicate_descriptor(pid: i32, fd: i32) -> Result<std::os::fd::OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and touches no memory.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = i32::try_from(pidfd).map_err(|_| Errno::EINVAL)?;
    if pidfd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: pidfd_getfd takes descriptors and flags and touches no memory.
    let duplicate = unsafe { libc::syscall(libc::SYS_pidfd_getfd, std::os::fd::AsRawFd::as_raw_fd(&pidfd), fd, 0) };
    let duplicate = i32::try_from(duplicate).map_err(|_| Errno::EINVAL)?;
    if duplicate < 0 {
        return Err(Errno::last());
    }
    // SAFETY: pidfd_getfd returned a new descriptor (close-on-exec) that
    // nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(duplicate) })
}

/// `fcntl` commands for a description's owner (linux/fcntl.h; libc has
/// them only for some targets).
pub const F_SETSIG: i32 = 10;
pub const F_GETSIG: i32 = 11;
pub const F_SETOWN_EX: i32 = 15;
pub const F_GETOWN_EX: i32 = 16;
/// `struct f_owner_ex.type`.
pub const F_OWNER_TID: i32 = 0;
pub const F_OWNER_PID: i32 = 1;
pub const F_OWNER_PGRP: i32 = 2;

/// The owner `fcntl(F_GETOWN_EX)` reports for the open file description
/// `fd` is of, as `(F_OWNER_TID|F_OWNER_PID|F_OWNER_PGRP, id)` (id 0: no
/// owner), and its `F_GETSIG` signal (0: SIGIO).
pub fn file_owner(fd: std::os::fd::BorrowedFd<'_>) -> Result<(i32, i32, i32), Errno> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // `struct f_owner_ex { int type; pid_t pid; }`.
    let mut owner = [0i32; 2];
    // SAFETY: F_GETOWN_EX writes one `struct f_owner_ex` (two ints) to the
    // pointer, which points to `owner`, alive and writable for the call.
    if unsafe { libc::fcntl(fd, F_GETOWN_EX, owner.as_mut_ptr()) } < 0 {
        return Err(Errno::last());
    }
    // SAFETY: F_GETSIG takes no argument and writes no memory.
    let signal = unsafe { libc::fcntl(fd, F_GETSIG) };
    if signal < 0 {
        return Err(Errno::last());
    }
    Ok((owner[0], owner[1], signal))
}

/// `waitpid(pid, __WALL)`, retried when a signal handler of crp's
/// interrupts it (crp's cancellation handlers do not restart syscalls).
pub fn wait_for(pid: Pid) -> nix::Result<nix::sys::wait::WaitStatus> {
    loop {
        match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL)) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// What `waitpid` reported for a tracee: a status nix names, or a
/// signal-delivery stop for a real-time signal (32 and up), which nix's
/// `Signal` cannot hold (its `WaitStatus` parsing fails with EINVAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Status(nix::sys::wait::WaitStatus),
    RealTimeSignal(i32),
}

/// Like [`wait_for`], but a signal-delivery stop for a real-time signal
/// is reported as such instead of failing.
pub fn wait_for_any_signal(pid: Pid) -> Result<Waited, Errno> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid int for waitpid to write.
        let result = unsafe { libc::waitpid(pid.as_raw(), &raw mut status, libc::__WALL) };
        if result < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                errno => return Err(errno),
            }
        }
        // A plain signal-delivery stop: no event in the high bits; the
        // syscall stops (SIGTRAP | 0x80) are above 64.
        let signal = libc::WSTOPSIG(status);
        if libc::WIFSTOPPED(status) && status >> 16 == 0 && (32..=64).contains(&signal) {
            return Ok(Waited::RealTimeSignal(signal));
        }
        return nix::sys::wait::WaitStatus::from_raw(Pid::from_raw(result), status).map(Waited::Status);
    }
}

/// Resumes a tracee in a signal-delivery stop, delivering `signal` (any
/// number, real-time ones included: `PTRACE_CONT`).
pub fn continue_with_signal(pid: Pid, signal: i32) -> Result<(), Errno> {
    // SAFETY: PTRACE_CONT reads no memory; the signal is passed by value.
    let result = unsafe {
        libc::ptrace(libc::PTRACE_CONT, pid.as_raw(), std::ptr::null_mut::<libc::c_void>(), signal as libc::c_long)
    };
    Errno::result(result).map(drop)
}

/// `struct clone_args` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks a child that asks to be traced and stops itself with SIGSTOP. With
/// `pid`, the child gets exactly that PID (`clone3` with `set_tid`) or the
/// call fails with EEXIST.
///
/// The child dies with crp from its first instruction: it asks for SIGKILL
/// when its parent dies (`PR_SET_PDEATHSIG`), then checks that the parent
/// did not die before that, all before it can be left stopped. The caller
/// ties it to crp's lifetime once more with `PTRACE_O_EXITKILL` (the death
/// signal fires when the parent *thread* exits and is cleared when the
/// child's credentials change) and clears the death signal before release.
#[doc(alias = "clone3")]
pub fn fork_traced_stopped(pid: Option<i32>) -> Result<Pid, Errno> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let wanted: libc::pid_t = pid.unwrap_or(0);
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if pid.is_some() { (&raw const wanted) as u64 } else { 0 },
        set_tid_size: u64::from(pid.is_some()),
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed; without
    // CLONE_VM this is a fork. The child only makes raw syscalls (no
    // allocation, no locks: the parent may be multi-threaded) and never
    // returns from this block: it stops, and crp's tracer takes it over.
    let result = unsafe {
        let result = libc::syscall(libc::SYS_clone3, &raw const args, std::mem::size_of::<CloneArgs>());
        if result == 0 {
            libc::syscall(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::syscall(libc::SYS_getppid) != libc::c_long::from(parent) {
                libc::syscall(libc::SYS_exit_group, 127);
            }
            libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0);
            // glibc's raise() would use the parent's cached thread id here.
            let own_pid = libc::syscall(libc::SYS_getpid);
            libc::syscall(libc::SYS_kill, own_pid, libc::SIGSTOP);
            libc::syscall(libc::SYS_exit_group, 127);
        }
        result
    };
    let child = Errno::result(result)?;
    libc::pid_t::try_from(child).map(Pid::from_raw).map_err(|_| Errno::EOVERFLOW)
}

/// `PR_SET_MM_MAP_SIZE`: asks the kernel for its `struct prctl_mm_map`
/// size, which also tells whether PR_SET_MM_MAP exists (CONFIG_CHECKPOINT_RESTORE).
#[doc(alias = "PR_SET_MM_MAP_SIZE")]
pub fn prctl_mm_map_size() -> Result<u32, Errno> {
    const PR_SET_MM_MAP_SIZE: libc::c_ulong = 15;
    let mut size: libc::c_uint = 0;
    // SAFETY: the kernel writes one unsigned int to `size`; nothing is set.
    let result = unsafe {
        libc::prctl(libc::PR_SET_MM, PR_SET_MM_MAP_SIZE, &raw mut size, 0 as libc::c_ulong, 0 as libc::c_ulong)
    };
    Errno::result(result).map(|_| size)
}

/// Whether `userfaultfd(2)` can create a descriptor here.
#[doc(alias = "userfaultfd")]
pub fn userfaultfd_available() -> Result<(), Errno> {
    // SAFETY: userfaultfd takes only flags and returns a new descriptor,
    // closed right away.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
    let fd = libc::c_int::try_from(Errno::result(fd)?).map_err(|_| Errno::EBADF)?;
    // SAFETY: `fd` was just returned by the kernel and is owned here.
    drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    Ok(())
}

/// This process's hard limit for RLIMIT_* number `resource`.
#[doc(alias = "getrlimit")]
pub fn own_hard_limit(resource: u32) -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one struct rlimit, which `limit` is.
    let result = unsafe { libc::getrlimit(resource as libc::__rlimit_resource_t, &raw mut limit) };
    (result == 0).then_some(limit.rlim_max)
}
