//! A background thread that writes page data while the caller reads the
//! next piece out of the tracee: reading, checksumming and writing overlap.
//!
//! How a piece reaches the disk depends on [`Writeback`]. A durable image
//! is written with `O_DIRECT` where the file system allows it: from crp's
//! page-aligned buffer straight to the device, no copy into the page cache
//! and no dirty pages for the final fsync to wait for (the one copy of a
//! dump is then the read out of the tracee). Where `O_DIRECT` is refused,
//! each piece is written into the page cache and its writeback started at
//! once (`sync_file_range`), so that the page cache never fills with dirty
//! image pages either. An image for the page cache is simply written there.

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::buffer::PageBuffer;

/// Buffers in flight: one being filled while the others are written (in
/// one call when they are queued together, see [`Batch`]).
const BUFFERS: usize = 4;

/// How written pieces are made to reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writeback {
    /// Left in the page cache for the kernel to write back when it likes.
    Lazy,
    /// Straight to the device (`O_DIRECT`), else [`Writeback::Eager`].
    Direct,
    /// Into the page cache, its writeback started after each piece.
    Eager,
}

/// A filled buffer and where its bytes go.
struct Piece {
    buffer: PageBuffer,
    length: usize,
    offset: u64,
}

/// The pieces queued one after the other in the file, written with one
/// `pwritev`: a write straight to the device keeps that many more bytes in
/// flight (a synchronous `O_DIRECT` write waits for the device, and ext4
/// runs the writes that allocate one at a time anyway).
struct Batch {
    pieces: Vec<Piece>,
    offset: u64,
    length: usize,
}

/// Where batches come from: the queue, and a piece taken from it that did
/// not continue the batch before (never the case for an image's pieces,
/// which follow each other, but written right all the same).
struct Batches {
    incoming: Receiver<Piece>,
    held: Option<Piece>,
}

impl Batches {
    /// The next piece, waited for, and those queued right behind it that
    /// continue it in the file; `None` once the filler is done.
    fn next(&mut self) -> Option<Batch> {
        let first = match self.held.take() {
            Some(piece) => piece,
            None => self.incoming.recv().ok()?,
        };
        let mut batch = Batch { offset: first.offset, length: first.length, pieces: vec![first] };
        while let Ok(piece) = self.incoming.try_recv() {
            if piece.offset != batch.offset + batch.length as u64 {
                self.held = Some(piece);
                break;
            }
            batch.length += piece.length;
            batch.pieces.push(piece);
        }
        Some(batch)
    }
}

impl Batch {
    /// Writes every piece's bytes at the batch's offset, in order.
    fn write(&self, file: &File) -> std::io::Result<()> {
        // (A piece of zero pages only is empty: nothing to write.)
        let mut slices: Vec<IoSlice> = self
            .pieces
            .iter()
            .filter(|piece| piece.length > 0)
            .map(|piece| IoSlice::new(&piece.buffer[..piece.length]))
            .collect();
        let mut slices = &mut slices[..];
        let mut offset = self.offset;
        while !slices.is_empty() {
            let position = libc::off_t::try_from(offset).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
            let written = match nix::sys::uio::pwritev(file, slices, position) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(written) => written,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) => return Err(errno.into()),
            };
            offset += written as u64;
            IoSlice::advance_slices(&mut slices, written);
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct WritePipeline {
    file: Arc<File>,
    pieces: Option<SyncSender<Piece>>,
    recycled: Receiver<PageBuffer>,
    writer: Option<JoinHandle<std::io::Result<()>>>,
    allocated: usize,
    buffer_bytes: usize,
    /// Whether the file was switched to `O_DIRECT` (and must be switched back).
    direct: bool,
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Piece({} bytes at {:#x})", self.length, self.offset)
    }
}

impl WritePipeline {
    /// `buffer_bytes` must be a whole number of pages, and so must every
    /// piece's length and offset ([`Writeback::Direct`] needs them aligned).
    pub(crate) fn start(file: Arc<File>, buffer_bytes: usize, writeback: Writeback) -> std::io::Result<Self> {
        let direct = writeback == Writeback::Direct && set_direct(&file, true).is_ok();
        let mut writeback = match writeback {
            Writeback::Direct if !direct => Writeback::Eager,
            other => other,
        };
        let (pieces, incoming) = sync_channel::<Piece>(BUFFERS);
        let (give_back, recycled) = sync_channel::<PageBuffer>(BUFFERS);
        let thread_file = Arc::clone(&file);
        let writer =
            std::thread::Builder::new().name("crp-image-writer".into()).spawn(move || -> std::io::Result<()> {
                let file = thread_file;
                let mut batches = Batches { incoming, held: None };
                while let Some(batch) = batches.next() {
                    match batch.write(&file) {
                        // A file system that takes the flag but not the
                        // write (a device with larger blocks than a page):
                        // the page cache after all, from this batch on.
                        Err(error) if writeback == Writeback::Direct && error.raw_os_error() == Some(libc::EINVAL) => {
                            set_direct(&file, false)?;
                            writeback = Writeback::Eager;
                            batch.write(&file)?;
                        }
                        result => result?,
                    }
                    // (A length of 0 would mean "to the end of the file".)
                    if writeback == Writeback::Eager && batch.length > 0 {
                        start_writeback(&file, batch.offset, batch.length);
                    }
                    for piece in batch.pieces {
                        // The filler may be gone after an error; the buffer is then dropped.
                        let _ = give_back.send(piece.buffer);
                    }
                }
                Ok(())
            })?;
        Ok(Self { file, pieces: Some(pieces), recycled, writer: Some(writer), allocated: 0, buffer_bytes, direct })
    }

    /// The size of every buffer handed out.
    pub(crate) fn piece_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// A buffer to fill: a recycled one, or a new one while fewer than
    /// [`BUFFERS`] exist.
    pub(crate) fn buffer(&mut self) -> std::io::Result<PageBuffer> {
        if self.allocated < BUFFERS {
            self.allocated += 1;
            return PageBuffer::new(self.buffer_bytes);
        }
        match self.recycled.recv() {
            Ok(buffer) => Ok(buffer),
            Err(_) => Err(self.join_error()),
        }
    }

    /// Queues `buffer[..length]` to be written at `offset`.
    pub(crate) fn write(&mut self, buffer: PageBuffer, length: usize, offset: u64) -> std::io::Result<()> {
        let sender = self.pieces.as_ref().expect("pipeline already finished");
        if sender.send(Piece { buffer, length, offset }).is_err() {
            return Err(self.join_error());
        }
        Ok(())
    }

    /// Waits until everything queued is written, and leaves the file as
    /// it found it (not `O_DIRECT`) for the caller's own writes.
    pub(crate) fn finish(&mut self) -> std::io::Result<()> {
        self.pieces = None;
        let written = match self.writer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("image writer thread panicked")),
            None => Ok(()),
        };
        let restored = if std::mem::take(&mut self.direct) { set_direct(&self.file, false) } else { Ok(()) };
        written.and(restored)
    }

    fn join_error(&mut self) -> std::io::Error {
        match self.finish() {
            Err(error) => error,
            Ok(()) => std::io::Error::other("image writer thread stopped"),
        }
    }
}

impl Drop for WritePipeline {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Switches `O_DIRECT` on or off for `file` (its open file description).
fn set_direct(file: &File, on: bool) -> std::io::Result<()> {
    let flags = nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_GETFL)?;
    let mut flags = nix::fcntl::OFlag::from_bits_retain(flags);
    flags.set(nix::fcntl::OFlag::O_DIRECT, on);
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Asks the kernel to start writing `[offset, offset + length)` back now.
/// Purely an optimisation: the image is fsynced before it counts as written.
fn start_writeback(file: &File, offset: u64, length: usize) {
    let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length)) else {
        return;
    };
    // SAFETY: sync_file_range only takes a descriptor this File owns and
    // integers; it touches no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, length, libc::SYNC_FILE_RANGE_WRITE);
    }
}
