//! Which pages of a VMA exist and must be stored, from /proc/PID/pagemap:
//! present or swapped pages of private memory, except the clean page-cache
//! pages of a private file mapping (bit 61: file page), which the file
//! itself still holds.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::error::CompoundError;
use crate::vma::{Backing, VmaRecord};

const PAGE_SIZE: u64 = 4096;
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const FILE_OR_SHARED: u64 = 1 << 61;
/// Entries read per pread.
const BATCH_ENTRIES: usize = 64 * 1024;

/// Decides from one pagemap entry whether the page is stored.
pub fn page_is_stored(entry: u64, file_backed: bool) -> bool {
    let exists = entry & (PRESENT | SWAPPED) != 0;
    let cow_private = !file_backed || entry & FILE_OR_SHARED == 0;
    exists && cow_private
}

/// Turns per-page decisions into runs of `(vaddr, page_count)`.
pub fn runs_from_pages(start: u64, stored: impl IntoIterator<Item = bool>) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (index, keep) in stored.into_iter().enumerate() {
        if !keep {
            continue;
        }
        let vaddr = start + index as u64 * PAGE_SIZE;
        match runs.last_mut() {
            Some((run_start, count)) if *run_start + *count * PAGE_SIZE == vaddr => *count += 1,
            _ => runs.push((vaddr, 1)),
        }
    }
    runs
}

/// An open /proc/PID/pagemap.
#[derive(Debug)]
pub struct PageMap {
    file: File,
    path: String,
}

impl PageMap {
    pub fn open(pid: i32) -> Result<Self, CompoundError> {
        let path = format!("/proc/{pid}/pagemap");
        let file = File::open(&path).map_err(CompoundError::io("open", &path))?;
        Ok(Self { file, path })
    }

    /// The runs of `vma` whose pages the image must store. `populated_kb`
    /// (from smaps) lets a VMA with nothing resident or swapped skip the
    /// pagemap walk: large reservations cost nothing.
    pub fn stored_runs(&self, vma: &VmaRecord, populated_kb: Option<u64>) -> Result<Vec<(u64, u64)>, CompoundError> {
        // A shared object's pages are found by `vma::shared::page_runs`.
        if !vma.stores_pages() || vma.shared || populated_kb == Some(0) {
            return Ok(Vec::new());
        }
        let file_backed = matches!(vma.backing, Backing::File(_) | Backing::Descriptor { .. } | Backing::Shared { .. });
        let page_count = vma.length() / PAGE_SIZE;
        let mut decisions = Vec::new();
        // One 8-byte entry per page: every entry is read whole.
        let mut buffer = vec![[0u8; 8]; BATCH_ENTRIES];
        let mut done = 0u64;
        while done < page_count {
            // What does not fit in a usize is more than a batch.
            let batch = usize::try_from(page_count - done).map_or(BATCH_ENTRIES, |left| left.min(BATCH_ENTRIES));
            let entries = &mut buffer[..batch];
            let offset = (vma.start / PAGE_SIZE + done) * 8;
            self.file
                .read_exact_at(entries.as_flattened_mut(), offset)
                .map_err(CompoundError::io("read", &self.path))?;
            decisions.extend(entries.iter().map(|entry| page_is_stored(u64::from_le_bytes(*entry), file_backed)));
            done += batch as u64;
        }
        Ok(runs_from_pages(vma.start, decisions))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn file_pages_are_skipped_but_cow_copies_kept() {
        assert!(page_is_stored(PRESENT, false));
        assert!(page_is_stored(SWAPPED, false));
        assert!(!page_is_stored(0, false));
        assert!(!page_is_stored(PRESENT | FILE_OR_SHARED, true));
        assert!(page_is_stored(PRESENT, true));
    }

    proptest! {
        #[test]
        fn runs_cover_exactly_the_stored_pages(pages in proptest::collection::vec(any::<bool>(), 0..300)) {
            let start = 0x40_0000;
            let runs = runs_from_pages(start, pages.iter().copied());
            let mut covered = vec![false; pages.len()];
            let mut previous_end = 0;
            for &(vaddr, count) in &runs {
                prop_assert!(count > 0);
                prop_assert!(vaddr > previous_end || previous_end == 0, "runs must not touch");
                previous_end = vaddr + count * PAGE_SIZE;
                for page in 0..count {
                    covered[usize::try_from((vaddr - start) / PAGE_SIZE + page).unwrap()] = true;
                }
            }
            prop_assert_eq!(covered, pages);
        }
    }
}
