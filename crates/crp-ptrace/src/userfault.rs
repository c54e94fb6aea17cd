//! The userfaultfd ABI crp uses (linux/userfaultfd.h; the libc crate does
//! not carry it): the API handshake, write-protect and missing-page
//! registration, (un)protection of ranges, placing pages (`UFFDIO_COPY`,
//! `UFFDIO_ZEROPAGE`), and reading the messages. A userfaultfd acts
//! on the address space of the process that created it, whoever holds the
//! descriptor: crp creates one inside a frozen process by injection, takes
//! a duplicate with `pidfd_getfd`, and works it from outside.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// `userfaultfd(2)` flag: only faults from user mode are reported (not
/// used by crp: a write by the kernel, e.g. `read(2)` into a protected
/// buffer, must wait for crp too, or it would fail with EFAULT).
pub const UFFD_USER_MODE_ONLY: u64 = 1;

const UFFD_API: u64 = 0xaa;
/// `_IOWR(0xaa, 0x3f, struct uffdio_api)`.
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
/// `_IOWR(0xaa, 0x00, struct uffdio_register)`.
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
/// `_IOR(0xaa, 0x01, struct uffdio_range)`.
const UFFDIO_UNREGISTER: libc::c_ulong = 0x8010_aa01;
/// `_IOWR(0xaa, 0x03, struct uffdio_copy)`.
const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
/// `_IOWR(0xaa, 0x04, struct uffdio_zeropage)`.
const UFFDIO_ZEROPAGE: libc::c_ulong = 0xc020_aa04;
/// `_IOWR(0xaa, 0x06, struct uffdio_writeprotect)`.
const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xc018_aa06;

/// Write faults on write-protected pages are reported.
pub const FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
/// `fork` of a process with registered ranges is reported with a new
/// userfaultfd for the child's (and waits to be read).
pub const FEATURE_EVENT_FORK: u64 = 1 << 1;
/// `mremap` of a registered range is reported (and waits to be read).
pub const FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// `madvise(MADV_DONTNEED/REMOVE)` of a registered range is reported
/// before its pages go (and waits to be read).
pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// `munmap` of a registered range is reported (after the unmap).
pub const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// Write protection of ranges never populated: markers stand in for the
/// missing pages, so a first write there is seen too.
pub const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// Asynchronous write protection: a write to a protected page is let
/// through at once by the kernel, which only clears the page's protection
/// (PAGEMAP_SCAN then reports it written). Nothing waits, no message.
pub const FEATURE_WP_ASYNC: u64 = 1 << 15;

const REGISTER_MODE_MISSING: u64 = 1 << 0;
const REGISTER_MODE_WP: u64 = 1 << 1;
const WRITEPROTECT_MODE_WP: u64 = 1 << 0;

const EVENT_PAGEFAULT: u8 = 0x12;
const EVENT_FORK: u8 = 0x13;
const EVENT_REMAP: u8 = 0x14;
const EVENT_REMOVE: u8 = 0x15;
const EVENT_UNMAP: u8 = 0x16;
const PAGEFAULT_FLAG_WP: u64 = 1 << 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    /// Bytes copied, or a negative errno.
    copy: i64,
}

#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    /// Bytes zeroed, or a negative errno.
    zeropage: i64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

/// `struct uffd_msg`: an event byte, padding, and 24 bytes of arguments.
#[repr(C)]
#[derive(Clone, Copy)]
struct UffdMsg {
    event: u8,
    reserved: [u8; 7],
    arguments: [u64; 3],
}

/// One message read from a userfaultfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A write to the write-protected page holding `address`; the writer
    /// waits until the page is unprotected.
    WriteFault { address: u64 },
    /// An access to the missing page holding `address` (of a range
    /// registered for missing pages); the thread waits until the page is
    /// placed.
    MissingFault { address: u64 },
    /// The process forked: `uffd` is a new descriptor (in the reader's
    /// table) for the child's registered ranges.
    Fork { uffd: i32 },
    /// `[start, end)` is being discarded (`madvise`); the pages go once
    /// this message has been read.
    Remove { start: u64, end: u64 },
    /// `[start, end)` was unmapped.
    Unmap { start: u64, end: u64 },
    /// `length` bytes moved from `from` to `to` (`mremap`).
    Remap { from: u64, to: u64, length: u64 },
    /// A fault or event crp did not ask for (the raw event byte).
    Other { event: u8 },
}

/// Does the API handshake asking for `features`; fails (EINVAL) when the
/// kernel lacks one of them.
pub fn handshake(uffd: BorrowedFd<'_>, features: u64) -> Result<(), Errno> {
    let mut api = UffdioApi { api: UFFD_API, features, ioctls: 0 };
    // SAFETY: UFFDIO_API reads and writes one struct uffdio_api, which
    // `api` is, alive for the call.
    let result = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &raw mut api) };
    Errno::result(result).map(drop)
}

/// Registers `[start, start + length)` for write-protect faults.
pub fn register_write_protect(uffd: BorrowedFd<'_>, start: u64, length: u64) -> Result<(), Errno> {
    let mut register = UffdioRegister { range: UffdioRange { start, len: length }, mode: REGISTER_MODE_WP, ioctls: 0 };
    // SAFETY: UFFDIO_REGISTER reads and writes one struct uffdio_register,
    // which `register` is, alive for the call.
    let result = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &raw mut register) };
    Errno::result(result).map(drop)
}

/// Registers `[start, start + length)` for missing-page faults.
pub fn register_missing(uffd: BorrowedFd<'_>, start: u64, length: u64) -> Result<(), Errno> {
    let mut register =
        UffdioRegister { range: UffdioRange { start, len: length }, mode: REGISTER_MODE_MISSING, ioctls: 0 };
    // SAFETY: UFFDIO_REGISTER reads and writes one struct uffdio_register,
    // which `register` is, alive for the call.
    let result = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &raw mut register) };
    Errno::result(result).map(drop)
}

/// Places `bytes` (whole pages) at `destination` of the registered range
/// (`UFFDIO_COPY`) and wakes the threads waiting on it. Returns how many
/// bytes were placed: fewer than asked when it stopped at a page already
/// present (EEXIST) or for another reason (its errno, with what was
/// placed before it).
pub fn copy(uffd: BorrowedFd<'_>, destination: u64, bytes: &[u8]) -> Result<u64, (Errno, u64)> {
    let mut request =
        UffdioCopy { dst: destination, src: bytes.as_ptr() as u64, len: bytes.len() as u64, mode: 0, copy: 0 };
    // SAFETY: UFFDIO_COPY reads one struct uffdio_copy, which `request`
    // is, reads `len` bytes at `src` (the borrowed `bytes`, alive for the
    // call) and writes the struct's `copy` field.
    let result = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_COPY, &raw mut request) };
    let placed = u64::try_from(request.copy).unwrap_or(0);
    match Errno::result(result) {
        Ok(_) => Ok(placed),
        Err(errno) => Err((errno, placed)),
    }
}

/// Maps the zero page at `[start, start + length)` of the registered
/// range (`UFFDIO_ZEROPAGE`) and wakes the threads waiting on it.
pub fn zero_page(uffd: BorrowedFd<'_>, start: u64, length: u64) -> Result<(), Errno> {
    let mut request = UffdioZeropage { range: UffdioRange { start, len: length }, mode: 0, zeropage: 0 };
    // SAFETY: UFFDIO_ZEROPAGE reads and writes one struct uffdio_zeropage,
    // which `request` is, alive for the call.
    let result = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_ZEROPAGE, &raw mut request) };
    Errno::result(result).map(drop)
}

/// Unregisters `[start, start + length)`: its pages are no longer
/// protected, and the writes waiting on them are woken.
pub fn unregister(uffd: BorrowedFd<'_>, start: u64, length: u64) -> Result<(), Errno> {
    let mut range = UffdioRange { start, len: length };
    // SAFETY: UFFDIO_UNREGISTER reads one struct uffdio_range, which
    // `range` is, alive for the call.
    let result = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_UNREGISTER, &raw mut range) };
    Errno::result(result).map(drop)
}

/// Write-protects (`protect`) or unprotects `[start, start + length)`;
/// unprotecting wakes the threads waiting on it.
pub fn write_protect(uffd: BorrowedFd<'_>, start: u64, length: u64, protect: bool) -> Result<(), Errno> {
    let mode = if protect { WRITEPROTECT_MODE_WP } else { 0 };
    let mut request = UffdioWriteprotect { range: UffdioRange { start, len: length }, mode };
    // SAFETY: UFFDIO_WRITEPROTECT reads one struct uffdio_writeprotect,
    // which `request` is, alive for the call.
    let result = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_WRITEPROTECT, &raw mut request) };
    Errno::result(result).map(drop)
}

/// Reads the messages waiting on a non-blocking userfaultfd (none: empty).
pub fn read_messages(uffd: BorrowedFd<'_>) -> Result<Vec<Message>, Errno> {
    const BATCH: usize = 64;
    let mut raw = [UffdMsg { event: 0, reserved: [0; 7], arguments: [0; 3] }; BATCH];
    // SAFETY: read writes at most size_of_val(&raw) bytes into `raw`, an
    // array of plain integers for which any bytes are valid.
    let read = unsafe { libc::read(uffd.as_raw_fd(), raw.as_mut_ptr().cast(), std::mem::size_of_val(&raw)) };
    let read = match Errno::result(read) {
        Ok(read) => read.unsigned_abs(),
        Err(Errno::EAGAIN) => return Ok(Vec::new()),
        Err(errno) => return Err(errno),
    };
    Ok(raw[..read / std::mem::size_of::<UffdMsg>()].iter().map(decode).collect())
}

fn decode(message: &UffdMsg) -> Message {
    let [first, second, third] = message.arguments;
    match message.event {
        EVENT_PAGEFAULT if first & PAGEFAULT_FLAG_WP != 0 => Message::WriteFault { address: second },
        EVENT_PAGEFAULT => Message::MissingFault { address: second },
        EVENT_FORK => Message::Fork { uffd: i32::try_from(first & 0xffff_ffff).unwrap_or(-1) },
        EVENT_REMOVE => Message::Remove { start: first, end: second },
        EVENT_UNMAP => Message::Unmap { start: first, end: second },
        EVENT_REMAP => Message::Remap { from: first, to: second, length: third },
        event => Message::Other { event },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_have_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<UffdioApi>(), 24);
        assert_eq!(std::mem::size_of::<UffdioRegister>(), 32);
        assert_eq!(std::mem::size_of::<UffdioWriteprotect>(), 24);
        assert_eq!(std::mem::size_of::<UffdioCopy>(), 40);
        assert_eq!(std::mem::size_of::<UffdioZeropage>(), 32);
        assert_eq!(std::mem::size_of::<UffdMsg>(), 32);
    }

    #[test]
    fn messages_decode_by_event() {
        let message = |event, arguments| UffdMsg { event, reserved: [0; 7], arguments };
        assert_eq!(decode(&message(0x12, [2, 0x1000, 0])), Message::WriteFault { address: 0x1000 });
        assert_eq!(decode(&message(0x12, [1, 0x1000, 0])), Message::MissingFault { address: 0x1000 });
        assert_eq!(decode(&message(0x12, [0, 0x2000, 0])), Message::MissingFault { address: 0x2000 });
        assert_eq!(decode(&message(0x13, [7, 0, 0])), Message::Fork { uffd: 7 });
        assert_eq!(decode(&message(0x15, [0x1000, 0x3000, 0])), Message::Remove { start: 0x1000, end: 0x3000 });
        assert_eq!(decode(&message(0x16, [0x1000, 0x3000, 0])), Message::Unmap { start: 0x1000, end: 0x3000 });
        assert_eq!(
            decode(&message(0x14, [0x1000, 0x9000, 0x2000])),
            Message::Remap { from: 0x1000, to: 0x9000, length: 0x2000 }
        );
    }
}
