//! The page runs of an image as its pieces are filled: zero pages left out
//! where the caller asks (the pages after them moved up in the piece), each
//! stretch of kept pages continuing the run before it when it follows it
//! both in memory and in the file, and each run's checksum computed as its
//! bytes go by, while they are still in the CPU's cache.

use xxhash_rust::xxh3::Xxh3;

use crate::format::{PAGE_SIZE, PageRunEntry};

/// [`PAGE_SIZE`] as a length.
const PAGE_BYTES: usize = 4096;
const _: () = assert!(PAGE_BYTES as u64 == PAGE_SIZE);

/// The run being built: where it starts, how long it is so far and the
/// checksum of its bytes so far.
struct OpenRun {
    vaddr: u64,
    data_offset: u64,
    bytes: u64,
    hasher: Box<Xxh3>,
}

#[derive(Default)]
pub(crate) struct Runs {
    done: Vec<PageRunEntry>,
    open: Option<OpenRun>,
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Runs").field("done", &self.done.len()).finish_non_exhaustive()
    }
}

impl Runs {
    /// Takes in `piece`, filled from `vaddr`, whose bytes go to the file at
    /// `data_offset`. With `omit_zeros` its pages that are all zero are
    /// left out and the others moved to its front. Returns how many bytes
    /// at its front are to be written.
    pub(crate) fn add(&mut self, piece: &mut [u8], vaddr: u64, data_offset: u64, omit_zeros: bool) -> usize {
        if !omit_zeros {
            self.extend(piece, vaddr, data_offset);
            return piece.len();
        }
        let mut kept = 0usize;
        // The first kept byte and the address of the stretch being kept.
        let mut stretch: Option<(usize, u64)> = None;
        for index in 0..piece.len() / PAGE_BYTES {
            let source = index * PAGE_BYTES;
            if is_zero(&piece[source..source + PAGE_BYTES]) {
                if let Some((start, address)) = stretch.take() {
                    self.extend(&piece[start..kept], address, data_offset + start as u64);
                }
                continue;
            }
            if source != kept {
                piece.copy_within(source..source + PAGE_BYTES, kept);
            }
            stretch.get_or_insert((kept, vaddr + source as u64));
            kept += PAGE_BYTES;
        }
        if let Some((start, address)) = stretch {
            self.extend(&piece[start..kept], address, data_offset + start as u64);
        }
        kept
    }

    /// Adds `bytes` (from `vaddr`, at `data_offset` in the file) to the
    /// open run if they follow it, else closes it and opens another.
    fn extend(&mut self, bytes: &[u8], vaddr: u64, data_offset: u64) {
        let follows = self
            .open
            .as_ref()
            .is_some_and(|open| open.vaddr + open.bytes == vaddr && open.data_offset + open.bytes == data_offset);
        if !follows {
            self.close();
        }
        let open = self.open.get_or_insert_with(|| OpenRun { vaddr, data_offset, bytes: 0, hasher: Box::default() });
        open.hasher.update(bytes);
        open.bytes += bytes.len() as u64;
    }

    /// Ends the open run, if there is one: what comes next starts another.
    pub(crate) fn close(&mut self) {
        if let Some(open) = self.open.take()
            && open.bytes > 0
        {
            self.done.push(PageRunEntry {
                vaddr: open.vaddr,
                page_count: open.bytes / PAGE_SIZE,
                data_offset: open.data_offset,
                checksum: open.hasher.digest(),
            });
        }
    }

    /// The runs closed so far.
    pub(crate) fn entries(&self) -> &[PageRunEntry] {
        &self.done
    }
}

/// Whether every byte of `page` is zero. Compares 64 bytes at a time (a
/// loop the compiler vectorises) and stops at the first block that is not:
/// a page of data usually costs one block.
fn is_zero(page: &[u8]) -> bool {
    page.chunks(64).all(|block| block.iter().fold(0u8, |bits, &byte| bits | byte) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::checksum;

    fn pages(marks: &[u8]) -> Vec<u8> {
        marks.iter().flat_map(|&mark| std::iter::repeat_n(mark, PAGE_BYTES)).collect()
    }

    #[test]
    fn pieces_that_follow_each_other_make_one_run_with_the_checksum_of_all_its_bytes() {
        let mut runs = Runs::default();
        let (mut first, mut second) = (pages(&[1, 2]), pages(&[3]));
        assert_eq!(runs.add(&mut first, 0x10000, 4096, true), 2 * PAGE_BYTES);
        assert_eq!(runs.add(&mut second, 0x12000, 4096 + 2 * 4096, true), PAGE_BYTES);
        runs.close();
        let entry =
            PageRunEntry { vaddr: 0x10000, page_count: 3, data_offset: 4096, checksum: checksum(&pages(&[1, 2, 3])) };
        assert_eq!(runs.entries(), [entry]);
    }

    #[test]
    fn zero_pages_split_runs_and_the_rest_moves_up() {
        let mut runs = Runs::default();
        let mut piece = pages(&[0, 1, 0, 0, 2, 3, 0]);
        let kept = runs.add(&mut piece, 0x20000, 8192, true);
        runs.close();
        assert_eq!(kept, 3 * PAGE_BYTES);
        assert_eq!(piece[..kept], pages(&[1, 2, 3]));
        let entries = [
            PageRunEntry { vaddr: 0x21000, page_count: 1, data_offset: 8192, checksum: checksum(&pages(&[1])) },
            PageRunEntry { vaddr: 0x24000, page_count: 2, data_offset: 12288, checksum: checksum(&pages(&[2, 3])) },
        ];
        assert_eq!(runs.entries(), entries);
    }

    #[test]
    fn zero_pages_are_kept_when_asked_and_close_ends_a_run() {
        let mut runs = Runs::default();
        let mut piece = pages(&[0, 5]);
        assert_eq!(runs.add(&mut piece, 0x30000, 4096, false), 2 * PAGE_BYTES);
        runs.close();
        let mut next = pages(&[6]);
        runs.add(&mut next, 0x32000, 4096 + 8192, false);
        runs.close();
        assert_eq!(runs.entries().len(), 2);
        assert_eq!(runs.entries()[0].checksum, checksum(&pages(&[0, 5])));
        // A piece of zero pages only leaves no run behind.
        let mut zeros = pages(&[0, 0]);
        assert_eq!(runs.add(&mut zeros, 0x40000, 16384, true), 0);
        runs.close();
        assert_eq!(runs.entries().len(), 2);
    }
}
