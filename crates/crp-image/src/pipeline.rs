//! A background thread that writes page data while the caller reads the
//! next piece out of the tracee: reading, checksumming and writing overlap.
//! For a durable image, after each piece it starts writeback
//! (`sync_file_range`), so the final fsync has little left to wait for and
//! the page cache never fills with dirty image pages.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Buffers in flight: one being filled, one being written, one spare.
const BUFFERS: usize = 3;

/// A filled buffer and where its bytes go.
struct Piece {
    buffer: Vec<u8>,
    length: usize,
    offset: u64,
}

#[derive(Debug)]
pub(crate) struct WritePipeline {
    pieces: Option<SyncSender<Piece>>,
    recycled: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<std::io::Result<()>>>,
    allocated: usize,
    buffer_bytes: usize,
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Piece({} bytes at {:#x})", self.length, self.offset)
    }
}

impl WritePipeline {
    /// `writeback`: start writing each piece back as soon as it is written.
    pub(crate) fn start(file: Arc<File>, buffer_bytes: usize, writeback: bool) -> std::io::Result<Self> {
        let (pieces, incoming) = sync_channel::<Piece>(BUFFERS);
        let (give_back, recycled) = sync_channel::<Vec<u8>>(BUFFERS);
        let writer =
            std::thread::Builder::new().name("crp-image-writer".into()).spawn(move || -> std::io::Result<()> {
                for piece in incoming {
                    file.write_all_at(&piece.buffer[..piece.length], piece.offset)?;
                    // (A length of 0 would mean "to the end of the file".)
                    if writeback && piece.length > 0 {
                        start_writeback(&file, piece.offset, piece.length);
                    }
                    // The filler may be gone after an error; the buffer is then dropped.
                    let _ = give_back.send(piece.buffer);
                }
                Ok(())
            })?;
        Ok(Self { pieces: Some(pieces), recycled, writer: Some(writer), allocated: 0, buffer_bytes })
    }

    /// A buffer to fill: a recycled one, or a new one while fewer than
    /// [`BUFFERS`] exist.
    pub(crate) fn buffer(&mut self) -> std::io::Result<Vec<u8>> {
        if self.allocated < BUFFERS {
            self.allocated += 1;
            return Ok(vec![0; self.buffer_bytes]);
        }
        match self.recycled.recv() {
            Ok(buffer) => Ok(buffer),
            Err(_) => Err(self.join_error()),
        }
    }

    /// Queues `buffer[..length]` to be written at `offset`.
    pub(crate) fn write(&mut self, buffer: Vec<u8>, length: usize, offset: u64) -> std::io::Result<()> {
        let sender = self.pieces.as_ref().expect("pipeline already finished");
        if sender.send(Piece { buffer, length, offset }).is_err() {
            return Err(self.join_error());
        }
        Ok(())
    }

    /// Waits until everything queued is written.
    pub(crate) fn finish(&mut self) -> std::io::Result<()> {
        self.pieces = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("image writer thread panicked")),
            None => Ok(()),
        }
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
