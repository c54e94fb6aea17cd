//! The physical limits a dump and a restore are compared with, measured in
//! the same run on the same bytes: `dd` into the page cache, with
//! `conv=fsync` and with `oflag=direct conv=fsync`, memcpy between two
//! faulted-in buffers, and the fill rate of fresh anonymous memory (page
//! faults dominate, as in a restore).

use std::num::NonZeroUsize;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::tools::{Timed, prepare, run};

/// Block size of the `dd` runs.
const DD_BLOCK_MIB: u64 = 8;

/// How `dd` writes its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DdMode {
    /// Into the page cache, left there.
    PageCache,
    /// Into the page cache, then fsynced (`conv=fsync`).
    Fsync,
    /// Straight to the device (`oflag=direct`), then fsynced.
    Direct,
}

/// `dd if=/dev/zero of=FILE bs=8M count=N` in `mode`: `bytes` rounded up
/// to whole blocks, into a fresh file, after [`prepare`] like every step.
pub fn dd(directory: &Path, bytes: u64, mode: DdMode) -> Result<Timed, String> {
    let file = directory.join("dd.out");
    let _ = std::fs::remove_file(&file);
    prepare(bytes);
    let blocks = bytes.div_ceil(DD_BLOCK_MIB << 20).max(1);
    let mut command = Command::new("dd");
    command.arg("if=/dev/zero").arg(format!("of={}", file.display()));
    command.arg(format!("bs={DD_BLOCK_MIB}M")).arg(format!("count={blocks}")).arg("status=none");
    match mode {
        DdMode::PageCache => {}
        DdMode::Fsync => {
            command.arg("conv=fsync");
        }
        DdMode::Direct => {
            command.arg("oflag=direct").arg("conv=fsync");
        }
    }
    let result = run(&mut command).map(|(time, _)| time);
    let _ = std::fs::remove_file(&file);
    result
}

/// Bytes per second of memcpy between two buffers of `bytes`, both faulted
/// in first: best of a few copies.
pub fn memcpy_rate(bytes: usize) -> f64 {
    let source = vec![0x5au8; bytes];
    let mut target = vec![0xa5u8; bytes];
    (0..5)
        .map(|_| {
            let started = Instant::now();
            target.copy_from_slice(std::hint::black_box(&source));
            std::hint::black_box(&mut target);
            bytes as f64 / started.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Writes every byte of a fresh anonymous mapping of `bytes` (one page
/// fault per 4 KiB, then the stores, as a restore does) and unmaps it; how
/// long the writing took.
pub fn fill(bytes: usize) -> Duration {
    let Some(length) = NonZeroUsize::new(bytes) else {
        return Duration::ZERO;
    };
    let protection = nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE;
    // SAFETY: a new private anonymous mapping, aliased by nothing.
    let Ok(memory) =
        (unsafe { nix::sys::mman::mmap_anonymous(None, length, protection, nix::sys::mman::MapFlags::MAP_PRIVATE) })
    else {
        return Duration::ZERO;
    };
    let started = Instant::now();
    // SAFETY: the mapping is `bytes` long, readable and writable, and only
    // this slice refers to it until it is unmapped below.
    let slice = unsafe { std::slice::from_raw_parts_mut(memory.as_ptr().cast::<u8>(), bytes) };
    slice.fill(0x5a);
    std::hint::black_box(&slice);
    let elapsed = started.elapsed();
    // SAFETY: unmaps exactly the mapping made above; `slice` is not used again.
    let _ = unsafe { nix::sys::mman::munmap(memory, bytes) };
    elapsed
}
