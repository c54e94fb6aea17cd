//! Writing an image: page runs are streamed first, metadata and the header
//! last; the file is built unnamed (see [`crate::staging`]), fsynced, then
//! given its name atomically, so a reader never sees a half-written image
//! and a dump that dies leaves nothing behind.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zerocopy::IntoBytes;

use crate::error::ImageError;
use crate::format::{
    FORMAT_VERSION, HEADER_BLOCK, Header, MAGIC, MAX_SECTIONS, PAGE_SIZE, PageRunEntry, RKYV_LAYOUT, SectionEntry,
    SectionKind, checksum, page_align_up,
};
use crate::pipeline::{WritePipeline, Writeback};
use crate::runs::Runs;
use crate::staging::StagedFile;

/// Whether [`ImageWriter::finish`] makes the image durable before it returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Written to the disk while it is written (`O_DIRECT` where the file
    /// system allows it, else through the page cache with its writeback
    /// started at once), fsynced with its directory before it gets its
    /// name: once `finish` returns, a crash does not lose it.
    #[default]
    Durable,
    /// Left in the page cache for the kernel to write back when it likes:
    /// faster, but a crash (of the machine, not of crp) may lose the image.
    PageCache,
}

/// The largest page run; also the bytes copied per call of a page source
/// for a durable image (whose `O_DIRECT` writes want large pieces).
const CHUNK_BYTES: usize = 8 << 20;

/// Bytes copied per call of a page source for an image left in the page
/// cache: a piece that stays in the CPU's cache between the read out of the
/// tracee and the copy into the page cache, which the writer thread makes
/// right after (the same core's L2 or the L3 both cores share). With 8 MiB
/// pieces both copies went through memory: a dump of 1 GiB took 2.8 s of
/// CPU where it takes 1.1 s with 256 KiB (the same calls otherwise,
/// measured on the development machine, AMD EPYC with 512 KiB of L2 per
/// core; 512 KiB did as well, 1 MiB twice worse).
const CACHE_PIECE_BYTES: usize = 256 << 10;

/// Builds one image file. Dropping it without [`ImageWriter::finish`] leaves
/// nothing behind (and the destination untouched).
#[derive(Debug)]
pub struct ImageWriter {
    /// Dropped first: its thread is joined before the file goes.
    pipeline: WritePipeline,
    staged: StagedFile,
    runs: Runs,
    next_data_offset: u64,
    durability: Durability,
}

impl ImageWriter {
    /// Starts an image that will appear at `path` once finished, mode 0600
    /// (it holds the process's memory). An existing directory, FIFO, socket
    /// or device at `path`, or a directory that cannot be written, is
    /// refused here, before any process is touched.
    pub fn create(path: &Path) -> Result<Self, ImageError> {
        Self::create_with(path, Durability::Durable)
    }

    /// Like [`ImageWriter::create`], made as durable as `durability` says.
    pub fn create_with(path: &Path, durability: Durability) -> Result<Self, ImageError> {
        let staged = StagedFile::create(path)?;
        let writeback = match durability {
            Durability::Durable => Writeback::Direct,
            Durability::PageCache => Writeback::Lazy,
        };
        let piece_bytes = if writeback == Writeback::Lazy { CACHE_PIECE_BYTES } else { CHUNK_BYTES };
        let pipeline = WritePipeline::start(Arc::clone(staged.file()), piece_bytes, writeback).map_err(|source| {
            ImageError::Io { action: "start the image writer thread for", path: path.to_owned(), source }
        })?;
        Ok(Self { staged, pipeline, runs: Runs::default(), next_data_offset: HEADER_BLOCK, durability })
    }

    fn io_error(&self, action: &'static str) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
        move |source| ImageError::Io { action, path: self.staged.final_path().to_owned(), source }
    }

    /// Appends `page_count` pages that lived at `vaddr`, stored as runs of
    /// at most 8 MiB. `fill` is called with consecutive pieces (address of the
    /// piece, buffer to fill completely) and typically reads the tracee's
    /// memory.
    pub fn add_page_run(
        &mut self,
        vaddr: u64,
        page_count: u64,
        fill: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
    ) -> Result<(), ImageError> {
        self.add_pages(vaddr, page_count, false, fill).map(drop)
    }

    /// Like [`ImageWriter::add_page_run`], except that pages whose bytes
    /// are all zero are left out (the runs around them are stored apart).
    /// Only for memory where a page the image lacks reads as zero after the
    /// restore (private anonymous memory); a zero page written over a
    /// file's data must be stored. Returns how many pages were left out.
    pub fn add_page_run_without_zeros(
        &mut self,
        vaddr: u64,
        page_count: u64,
        fill: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
    ) -> Result<u64, ImageError> {
        self.add_pages(vaddr, page_count, true, fill)
    }

    /// Appends `runs` (`(vaddr, page_count)`, ascending), leaving out the
    /// pages that are all zero as [`ImageWriter::add_page_run_without_zeros`]
    /// does, but packing small runs together into each piece (8 MiB, or
    /// 256 KiB for an image left in the page cache): the
    /// same image as one call per run, with one write per piece instead of
    /// one per run (an incremental dump's written pages are often single
    /// pages). Returns how many pages were left out.
    pub fn add_page_runs_without_zeros(
        &mut self,
        runs: &[(u64, u64)],
        mut fill: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
    ) -> Result<u64, ImageError> {
        let piece_bytes = self.pipeline.piece_bytes();
        let mut omitted = 0u64;
        let mut packed: Option<(crate::buffer::PageBuffer, usize)> = None;
        for &(vaddr, page_count) in runs {
            let length = usize::try_from(page_count.saturating_mul(PAGE_SIZE)).unwrap_or(usize::MAX);
            if packed.as_ref().is_some_and(|(_, used)| used.saturating_add(length) > piece_bytes) {
                self.write_packed(packed.take())?;
            }
            if length > piece_bytes {
                omitted += self.add_pages(vaddr, page_count, true, &mut fill)?;
                continue;
            }
            if packed.is_none() {
                packed = Some((self.pipeline.buffer().map_err(self.io_error("write page data"))?, 0));
            }
            let Some((buffer, used)) = packed.as_mut() else { continue };
            let piece = &mut buffer[*used..*used + length];
            fill(vaddr, piece).map_err(|source| ImageError::PageSource { vaddr, source })?;
            let kept = self.runs.add(piece, vaddr, self.next_data_offset + *used as u64, true);
            // Each run of the caller's is a run of its own (or several).
            self.runs.close();
            omitted += (length - kept) as u64 / PAGE_SIZE;
            *used += kept;
        }
        self.write_packed(packed)?;
        Ok(omitted)
    }

    /// Writes a packed buffer holding `used` bytes of runs already recorded.
    fn write_packed(&mut self, packed: Option<(crate::buffer::PageBuffer, usize)>) -> Result<(), ImageError> {
        if let Some((buffer, used)) = packed {
            let offset = self.next_data_offset;
            self.next_data_offset += used as u64;
            self.pipeline.write(buffer, used, offset).map_err(self.io_error("write page data"))?;
        }
        Ok(())
    }

    fn add_pages(
        &mut self,
        vaddr: u64,
        page_count: u64,
        omit_zeros: bool,
        mut fill: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
    ) -> Result<u64, ImageError> {
        let total = page_count.saturating_mul(PAGE_SIZE);
        let piece_bytes = self.pipeline.piece_bytes();
        // Every CHUNK_BYTES of the range end a run (or several, around zero
        // pages), so that reading, checking and restoring can work on runs
        // in parallel; within a chunk, pieces of the pipeline's buffers are filled.
        let mut done = 0u64;
        let mut omitted = 0u64;
        while done < total {
            let chunk_end = (done + CHUNK_BYTES as u64).min(total);
            while done < chunk_end {
                let piece = usize::try_from(chunk_end - done).unwrap_or(piece_bytes).min(piece_bytes);
                let mut buffer = self.pipeline.buffer().map_err(self.io_error("write page data"))?;
                let piece_vaddr = vaddr + done;
                fill(piece_vaddr, &mut buffer[..piece])
                    .map_err(|source| ImageError::PageSource { vaddr: piece_vaddr, source })?;
                let offset = self.next_data_offset;
                let kept = self.runs.add(&mut buffer[..piece], piece_vaddr, offset, omit_zeros);
                omitted += (piece - kept) as u64 / PAGE_SIZE;
                self.next_data_offset += kept as u64;
                // Sent even when empty: the pipeline hands every buffer back.
                self.pipeline.write(buffer, kept, offset).map_err(self.io_error("write page data"))?;
                done += piece as u64;
            }
            self.runs.close();
        }
        Ok(omitted)
    }

    /// Writes the run table, the metadata archive and the header, makes the
    /// file durable (unless it was created for the page cache) and moves it
    /// to its final name.
    pub fn finish(mut self, metadata: &[u8]) -> Result<PathBuf, ImageError> {
        self.pipeline.finish().map_err(self.io_error("write page data"))?;
        let data_section = SectionEntry {
            kind: SectionKind::PageData as u32,
            reserved: 0,
            offset: HEADER_BLOCK,
            length: self.next_data_offset - HEADER_BLOCK,
            checksum: checksum(
                &self.runs.entries().iter().flat_map(|run| run.checksum.to_le_bytes()).collect::<Vec<u8>>(),
            ),
        };
        let runs_bytes = self.runs.entries().as_bytes().to_vec();
        let runs_section = SectionEntry {
            kind: SectionKind::PageRuns as u32,
            reserved: 0,
            offset: self.next_data_offset,
            length: runs_bytes.len() as u64,
            checksum: checksum(&runs_bytes),
        };
        // The archive must start 16-byte aligned when the file is mapped; a
        // page boundary is.
        let metadata_offset = page_align_up(runs_section.offset + runs_section.length);
        let metadata_section = SectionEntry {
            kind: SectionKind::Metadata as u32,
            reserved: 0,
            offset: metadata_offset,
            length: metadata.len() as u64,
            checksum: checksum(metadata),
        };
        let file_length = metadata_offset + metadata.len() as u64;

        // In the order of `SectionKind::ALL`, the only one the reader accepts;
        // the spare slot stays zero.
        let mut sections = [SectionEntry::default(); MAX_SECTIONS];
        sections[0] = metadata_section;
        sections[1] = runs_section;
        sections[2] = data_section;
        let mut header = Header {
            magic: MAGIC,
            format_version: FORMAT_VERSION,
            rkyv_layout: RKYV_LAYOUT,
            flags: 0,
            section_count: 3,
            file_length,
            sections,
            header_checksum: 0,
        };
        header.header_checksum = header.compute_checksum();

        // Every byte not written below (the header block after the header,
        // the gap before the metadata) is a hole and reads as zero, which
        // is what the reader requires there.
        let file = self.staged.file();
        file.write_all_at(&runs_bytes, runs_section.offset).map_err(self.io_error("write page run table"))?;
        file.write_all_at(metadata, metadata_offset).map_err(self.io_error("write metadata"))?;
        file.write_all_at(header.as_bytes(), 0).map_err(self.io_error("write header"))?;
        // With no pages and no metadata nothing was written past the header.
        file.set_len(file_length).map_err(self.io_error("extend image"))?;
        self.staged.publish(self.durability == Durability::Durable)
    }

    /// Runs written so far.
    pub fn runs(&self) -> &[PageRunEntry] {
        self.runs.entries()
    }
}
