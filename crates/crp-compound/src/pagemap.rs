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
/// PAGEMAP_SCAN categories.
const PAGE_IS_WRITTEN: u64 = 1 << 1;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
const PAGE_IS_GUARD: u64 = 1 << 8;
/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
/// PAGEMAP_SCAN flag: fail (EPERM) on a VMA without asynchronous write
/// protection rather than report its pages.
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
/// PAGEMAP_SCAN flag: write-protect again the pages reported, in the same walk.
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
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
/// Which pages a scan reports: those with every category of `all_of` and
/// one of `any_of`, with the categories of `returned`.
#[derive(Debug, Clone, Copy)]
struct ScanFilter {
    flags: u64,
    all_of: u64,
    any_of: u64,
    returned: u64,
}

/// The runs of `(vaddr, page_count)` to store from scanned regions: as
/// [`page_is_stored`] decides from pagemap entries.
fn runs_from_regions(regions: &[PageRegion], file_backed: bool) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for region in regions {
        let exists =
            region.categories & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED) != 0 && region.categories & PAGE_IS_GUARD == 0;
        let cow_private = !file_backed || region.categories & PAGE_IS_FILE == 0;
        if !(exists && cow_private) {
            continue;
        }
        let count = (region.end - region.start) / PAGE_SIZE;
        match runs.last_mut() {
            Some((start, pages)) if *start + *pages * PAGE_SIZE == region.start => *pages += count,
            _ => runs.push((region.start, count)),
        }
    }
    runs
}

/// A tracked VMA's pages as [`PageMap::tracked_pages`] sorts them, each
/// as runs of `(vaddr, page_count)` in address order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackedPages {
    pub written: Vec<(u64, u64)>,
    pub unchanged: Vec<(u64, u64)>,
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
        let filter = ScanFilter { flags: 0, all_of: PAGE_IS_GUARD, any_of: 0, returned: PAGE_IS_GUARD };
        let regions = self.scan(start, end, filter)?.unwrap_or_default();
        let mut found: Vec<(u64, u64)> = Vec::new();
        for region in regions {
            match found.last_mut() {
                Some((_, last_end)) if *last_end == region.start => *last_end = region.end,
                _ => found.push((region.start, region.end)),
            }
        }
        Ok(found)
    }

    /// The regions of `[start, end)` PAGEMAP_SCAN finds with `filter`;
    /// `None` on a kernel without the ioctl or the filter's categories.
    fn scan(&self, start: u64, end: u64, filter: ScanFilter) -> Result<Option<Vec<PageRegion>>, CompoundError> {
        let mut found = Vec::new();
        let mut at = start;
        while at < end {
            let mut regions = [PageRegion::default(); SCAN_REGIONS];
            let mut arguments = ScanArguments {
                size: std::mem::size_of::<ScanArguments>() as u64,
                flags: filter.flags,
                start: at,
                end,
                walk_end: 0,
                vec: regions.as_mut_ptr() as u64,
                vec_len: SCAN_REGIONS as u64,
                max_pages: 0,
                category_inverted: 0,
                category_mask: filter.all_of,
                category_anyof_mask: filter.any_of,
                return_mask: filter.returned,
            };
            // SAFETY: PAGEMAP_SCAN reads `arguments` and writes at most
            // `vec_len` page regions into `regions`, both alive across the call.
            let count = unsafe { libc::ioctl(self.file.as_raw_fd(), PAGEMAP_SCAN, &raw mut arguments) };
            if count < 0 {
                return match nix::errno::Errno::last() {
                    nix::errno::Errno::EINVAL | nix::errno::Errno::ENOTTY => Ok(None),
                    // A VMA without asynchronous write protection, asked
                    // for by PM_SCAN_CHECK_WPASYNC.
                    nix::errno::Errno::EPERM if filter.flags & PM_SCAN_CHECK_WPASYNC != 0 => Ok(None),
                    errno => Err(CompoundError::Io {
                        action: "scan (PAGEMAP_SCAN)",
                        path: self.path.clone().into(),
                        source: errno.into(),
                    }),
                };
            }
            found.extend(regions.iter().take(usize::try_from(count).unwrap_or(0)).copied());
            if arguments.walk_end <= at {
                break;
            }
            at = arguments.walk_end;
        }
        Ok(Some(found))
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
        // PAGEMAP_SCAN skips what is empty and returns runs: a fraction of
        // the time of reading one entry per page.
        let filter = ScanFilter {
            flags: 0,
            all_of: 0,
            any_of: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            returned: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE | PAGE_IS_GUARD,
        };
        if let Some(regions) = self.scan(vma.start, vma.end, filter)? {
            return Ok(runs_from_regions(&regions, file_backed));
        }
        self.runs_from_entries(vma.start, vma.end, file_backed)
    }

    /// The pages of `[start, end)` (one VMA under crp's change tracking)
    /// since the tracking was armed: `written` those to store (written, or
    /// populated since: the kernel clears the protection on the first
    /// write, and a page faulted in after being discarded comes without
    /// it), `unchanged` those that hold what they held when it was armed.
    /// A page in neither is not there (never populated, or discarded:
    /// `MADV_DONTNEED`), and reads as zero. `None` when the range is not
    /// under asynchronous write protection (PM_SCAN_CHECK_WPASYNC refuses
    /// it): then nothing is known of it.
    ///
    /// What the kernel reports, checked on 6.18: a present or swapped page
    /// keeps PAGE_IS_WRITTEN clear until written; a page never populated
    /// carries a marker (WP_UNPOPULATED), reported swapped and not written;
    /// a read fault there maps the zero page still protected; a discarded
    /// page (pte none) is reported written but neither present nor
    /// swapped; a huge page written once is split and reported per page.
    ///
    /// `reprotect`: the same walk write-protects the pages again
    /// (PM_SCAN_WP_MATCHING), so that what is reported written next time is
    /// what was written after this call.
    pub fn tracked_pages(&self, start: u64, end: u64, reprotect: bool) -> Result<Option<TrackedPages>, CompoundError> {
        let filter = ScanFilter {
            flags: PM_SCAN_CHECK_WPASYNC | if reprotect { PM_SCAN_WP_MATCHING } else { 0 },
            all_of: 0,
            any_of: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            returned: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_WRITTEN | PAGE_IS_GUARD,
        };
        let Some(regions) = self.scan(start, end, filter)? else {
            return Ok(None);
        };
        let mut pages = TrackedPages::default();
        for region in regions {
            if region.categories & PAGE_IS_GUARD != 0 {
                continue;
            }
            let runs = if region.categories & PAGE_IS_WRITTEN != 0 { &mut pages.written } else { &mut pages.unchanged };
            let count = (region.end - region.start) / PAGE_SIZE;
            match runs.last_mut() {
                Some((run_start, pages)) if *run_start + *pages * PAGE_SIZE == region.start => *pages += count,
                _ => runs.push((region.start, count)),
            }
        }
        Ok(Some(pages))
    }

    /// The runs to store in `[start, end)` from one pagemap entry per page
    /// (a kernel without PAGEMAP_SCAN).
    fn runs_from_entries(&self, start: u64, end: u64, file_backed: bool) -> Result<Vec<(u64, u64)>, CompoundError> {
        let page_count = (end - start) / PAGE_SIZE;
        let mut decisions = Vec::new();
        // One 8-byte entry per page: every entry is read whole.
        let mut buffer = vec![[0u8; 8]; BATCH_ENTRIES];
        let mut done = 0u64;
        while done < page_count {
            // What does not fit in a usize is more than a batch.
            let batch = usize::try_from(page_count - done).map_or(BATCH_ENTRIES, |left| left.min(BATCH_ENTRIES));
            let entries = &mut buffer[..batch];
            let offset = (start / PAGE_SIZE + done) * 8;
            self.file
                .read_exact_at(entries.as_flattened_mut(), offset)
                .map_err(CompoundError::io("read", &self.path))?;
            decisions.extend(entries.iter().map(|entry| page_is_stored(u64::from_le_bytes(*entry), file_backed)));
            done += batch as u64;
        }
        Ok(runs_from_pages(start, decisions))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_scan_finds_the_runs_the_entries_give() {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[7u8; 16 * 4096]).unwrap();
        let map = |flags, fd| {
            // SAFETY: a fresh mapping of 16 pages of this test process (of
            // `fd` when not -1), unmapped below.
            unsafe { libc::mmap(std::ptr::null_mut(), 16 * 4096, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0) }
        };
        let anonymous = map(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1).cast::<u8>();
        let private_file = map(libc::MAP_PRIVATE, file.as_raw_fd()).cast::<u8>();
        for page in [0usize, 1, 5, 9, 10, 11, 15] {
            // SAFETY: inside the 16 pages mapped above, both writable.
            unsafe { anonymous.add(page * 4096).write_volatile(1) };
        }
        for page in [2usize, 3, 8] {
            // SAFETY: as above; pages 2 and 3 are copied on write, 8 only read.
            unsafe {
                if page == 8 {
                    private_file.add(page * 4096).read_volatile();
                } else {
                    private_file.add(page * 4096).write_volatile(1);
                }
            }
        }
        let pagemap = PageMap::open(std::process::id().cast_signed()).unwrap();
        for (base, file_backed, expected) in
            [(anonymous, false, vec![(0, 2), (5, 1), (9, 3), (15, 1)]), (private_file, true, vec![(2, 2)])]
        {
            let (start, end) = (base as u64, base as u64 + 16 * 4096);
            let filter = ScanFilter {
                flags: 0,
                all_of: 0,
                any_of: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                returned: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE | PAGE_IS_GUARD,
            };
            let scanned = runs_from_regions(&pagemap.scan(start, end, filter).unwrap().unwrap(), file_backed);
            let read = pagemap.runs_from_entries(start, end, file_backed).unwrap();
            let expected: Vec<(u64, u64)> =
                expected.into_iter().map(|(page, count)| (start + page * 4096, count)).collect();
            assert_eq!(scanned, expected);
            assert_eq!(read, expected);
        }
        // SAFETY: the mappings made above.
        unsafe {
            libc::munmap(anonymous.cast(), 16 * 4096);
            libc::munmap(private_file.cast(), 16 * 4096);
        }
    }

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
