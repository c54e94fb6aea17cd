//! Where the page data of an image goes.
//!
//! A durable image's pieces are filled in crp's 8 MiB buffers and written
//! by the pipeline thread (straight to the device, see [`crate::pipeline`]).
//! An image for the page cache is filled in one small buffer and written
//! from the same thread at once ([`CacheWriter`]): the copy into the page
//! cache then reads bytes the read out of the tracee has just left in the
//! CPU's cache. With 8 MiB buffers both copies went through memory, and
//! the dump of 1 GiB took 2–3 times the CPU of the small buffer (measured
//! on the development machine: 2.1 s against 0.7 s, the same
//! `process_vm_readv` and `pwrite` calls).

use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::buffer::PageBuffer;
use crate::pipeline::{WritePipeline, Writeback};

/// Bytes filled and written at a time for the page cache: the size of a
/// core's L2 cache on the machines crp was measured on (AMD EPYC, 512 KiB),
/// where 256 KiB and 512 KiB did equally well and 1 MiB twice worse.
const CACHE_PIECE_BYTES: usize = 256 << 10;

/// Bytes of one piece being filled.
pub(crate) struct PieceBuffer(PageBuffer);

impl Deref for PieceBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for PieceBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

#[derive(Debug)]
pub(crate) enum PageSink {
    /// Buffers written by a thread of their own.
    Pipeline { pipeline: WritePipeline, piece_bytes: usize },
    /// One buffer, written where it was filled.
    Cache(CacheWriter),
}

impl PageSink {
    /// The sink for `file`: the pipeline with buffers of `buffer_bytes`,
    /// or for an image left in the page cache (`Writeback::Lazy`) the
    /// [`CacheWriter`].
    pub(crate) fn start(file: Arc<File>, buffer_bytes: usize, writeback: Writeback) -> std::io::Result<Self> {
        match writeback {
            Writeback::Lazy => Ok(Self::Cache(CacheWriter { file, buffer: None })),
            other => Ok(Self::Pipeline {
                pipeline: WritePipeline::start(file, buffer_bytes, other)?,
                piece_bytes: buffer_bytes,
            }),
        }
    }

    /// The most bytes to fill at a time.
    pub(crate) fn piece_bytes(&self) -> usize {
        match self {
            Self::Pipeline { piece_bytes, .. } => *piece_bytes,
            Self::Cache(_) => CACHE_PIECE_BYTES,
        }
    }

    /// A buffer of at least [`PageSink::piece_bytes`] to fill.
    pub(crate) fn buffer(&mut self) -> std::io::Result<PieceBuffer> {
        match self {
            Self::Pipeline { pipeline, .. } => pipeline.buffer().map(PieceBuffer),
            Self::Cache(writer) => writer.buffer().map(PieceBuffer),
        }
    }

    /// The first `length` bytes of `buffer` belong at `offset` (both whole
    /// pages). Every buffer comes back here, even with nothing kept.
    pub(crate) fn write(&mut self, buffer: PieceBuffer, length: usize, offset: u64) -> std::io::Result<()> {
        match self {
            Self::Pipeline { pipeline, .. } => pipeline.write(buffer.0, length, offset),
            Self::Cache(writer) => writer.write(buffer.0, length, offset),
        }
    }

    /// Waits until every piece is written.
    pub(crate) fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Self::Pipeline { pipeline, .. } => pipeline.finish(),
            Self::Cache(_) => Ok(()),
        }
    }
}

/// Writes each piece into the page cache as soon as it is filled.
pub(crate) struct CacheWriter {
    file: Arc<File>,
    /// The buffer, while it is not being filled.
    buffer: Option<PageBuffer>,
}

impl std::fmt::Debug for CacheWriter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("CacheWriter").finish_non_exhaustive()
    }
}

impl CacheWriter {
    fn buffer(&mut self) -> std::io::Result<PageBuffer> {
        match self.buffer.take() {
            Some(buffer) => Ok(buffer),
            None => PageBuffer::new(CACHE_PIECE_BYTES),
        }
    }

    fn write(&mut self, buffer: PageBuffer, length: usize, offset: u64) -> std::io::Result<()> {
        let written = self.file.write_all_at(&buffer[..length], offset);
        self.buffer = Some(buffer);
        written
    }
}
