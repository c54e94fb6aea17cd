//! The physical limits a dump and a restore are compared with, measured in
//! the same run: `dd` of the image's bytes into the page cache and to disk,
//! memcpy between two faulted-in buffers, and the fill rate of fresh
//! anonymous memory (page faults dominate, as in a restore).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::tools::{drop_caches, run};

/// Block size of the `dd` runs.
const DD_BLOCK_MIB: u64 = 8;

/// `dd if=/dev/zero of=FILE bs=8M count=N` (with `conv=fsync` when
/// `durable`): `bytes` rounded up to whole blocks, into a fresh file.
pub fn dd(directory: &Path, bytes: u64, durable: bool) -> Result<Duration, String> {
    let file = directory.join("dd.out");
    let _ = std::fs::remove_file(&file);
    drop_caches();
    let blocks = bytes.div_ceil(DD_BLOCK_MIB << 20).max(1);
    let mut command = Command::new("dd");
    command.arg("if=/dev/zero").arg(format!("of={}", file.display()));
    command.arg(format!("bs={DD_BLOCK_MIB}M")).arg(format!("count={blocks}")).arg("status=none");
    if durable {
        command.arg("conv=fsync");
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

/// Bytes per second of writing `bytes` of fresh anonymous memory (a new
/// mapping each time: every page faults in): best of a few.
pub fn fresh_fill_rate(bytes: usize) -> f64 {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            // A fresh mapping from the allocator (this large, it is mmap),
            // written through: one page fault per 4 KiB.
            let memory = std::hint::black_box(vec![0x5au8; bytes]);
            let elapsed = started.elapsed();
            drop(memory);
            bytes as f64 / elapsed.as_secs_f64()
        })
        .fold(0.0, f64::max)
}
