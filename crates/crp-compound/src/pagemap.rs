//! Which pages of a VMA exist and must be stored, from /proc/PID/pagemap:
//! present or swapped pages of private memory, except the clean page-cache
//! pages of a private file mapping (bit 61: file page), which the file
//! itself still holds.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crate::error::CompoundError;
use crate::vma::{Backing, VmaRecord};

const PAGE_SIZE: u64 = 4096;
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const FILE_OR_SHARED: u64 = 1 << 61;
/// A guard region's page (6.15): no page, whatever the swap bit says.
const GUARD: u64 = 1 << 58;
/// `PAGE_IS_GUARD`, a PAGEMAP_SCAN category.
const PAGE_IS_GUARD: u64 = 1 << 8;
/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
/// Regions per PAGEMAP_SCAN call.
const SCAN_REGIONS: usize = 256;

/// `struct pm_scan_arg`.
#[repr(C)]
struct ScanArguments {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}
/// Entries read per pread.
const BATCH_ENTRIES: usize = 64 * 1024;

/// Decides from one pagemap entry whether the page is stored.
pub fn page_is_stored(entry: u64, file_backed: bool) -> bool {
    let exists = entry & (PRESENT | SWAPPED) != 0 && entry & GUARD == 0;
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

    /// The guard regions (MADV_GUARD_INSTALL) in `[start, end)`, from
    /// PAGEMAP_SCAN; none on a kernel without them (before 6.15 the scan
    /// refuses the category, before 6.7 the ioctl).
    pub fn guard_regions(&self, start: u64, end: u64) -> Result<Vec<(u64, u64)>, CompoundError> {
        let mut found: Vec<(u64, u64)> = Vec::new();
        let mut at = start;
        while at < end {
            let mut regions = [PageRegion::default(); SCAN_REGIONS];
            let mut arguments = ScanArguments {
                size: std::mem::size_of::<ScanArguments>() as u64,
                flags: 0,
                start: at,
                end,
                walk_end: 0,
                vec: regions.as_mut_ptr() as u64,
                vec_len: SCAN_REGIONS as u64,
                max_pages: 0,
                category_inverted: 0,
                category_mask: PAGE_IS_GUARD,
                category_anyof_mask: 0,
                return_mask: PAGE_IS_GUARD,
            };
            // SAFETY: PAGEMAP_SCAN reads `arguments` and writes at most
            // `vec_len` page regions into `regions`, both alive across the call.
            let count = unsafe { libc::ioctl(self.file.as_raw_fd(), PAGEMAP_SCAN, &raw mut arguments) };
            if count < 0 {
                return match nix::errno::Errno::last() {
                    nix::errno::Errno::EINVAL | nix::errno::Errno::ENOTTY => Ok(Vec::new()),
                    errno => Err(CompoundError::Io {
                        action: "scan (PAGEMAP_SCAN)",
                        path: self.path.clone().into(),
                        source: errno.into(),
                    }),
                };
            }
            for region in regions.iter().take(usize::try_from(count).unwrap_or(0)) {
                match found.last_mut() {
                    Some((_, last_end)) if *last_end == region.start => *last_end = region.end,
                    _ => found.push((region.start, region.end)),
                }
            }
            if arguments.walk_end <= at {
                break;
            }
            at = arguments.walk_end;
        }
        Ok(found)
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
        assert!(!page_is_stored(SWAPPED | GUARD, false), "a guard page is a marker, not a swapped page");
    }

    #[test]
    fn a_guard_region_is_found_by_the_scan() {
        // SAFETY: a mapping of this test process, unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4 * 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        let start = base as u64;
        // SAFETY: pages 1-2 of the mapping just made.
        let installed = unsafe { libc::madvise(base.cast::<u8>().add(4096).cast(), 2 * 4096, 102) };
        let pagemap = PageMap::open(std::process::id().cast_signed()).unwrap();
        let guards = pagemap.guard_regions(start, start + 4 * 4096).unwrap();
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(base, 4 * 4096) };
        if installed == 0 {
            assert_eq!(guards, [(start + 4096, start + 3 * 4096)]);
        } else {
            assert!(guards.is_empty(), "a kernel without guard regions has none");
        }
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
