//! Which pages an incremental dump stores: in a VMA under crp's tracking
//! (smaps `uw`, and PAGEMAP_SCAN confirms asynchronous write protection)
//! only those written since the parent; the ones there and not written are
//! the parent's (`inherited`); a page in neither is not there (zero).
//! Everything else (a VMA not tracked: new, moved, or not private
//! anonymous memory) is stored whole, as by a full dump.

use crp_compound::pagemap::PageMap;
use crp_compound::vma::{Backing, VmaRecord};
use crp_ptrace::procfs::MapsEntry;

use super::PageRange;
use crate::error::CrpError;

/// What tracking covers in one dump.
#[derive(Debug, Default)]
pub struct TrackedPlan {
    /// Ranges the parent holds (an incremental dump only).
    pub inherited: Vec<PageRange>,
    /// The VMAs tracking is armed over (private anonymous memory).
    pub registered: Vec<(u64, u64)>,
    /// Their runs of pages there now, write-protected by the arming.
    pub populated: Vec<(u64, u64)>,
    /// Pages stored whole because no tracking covered them.
    pub untracked_pages: u64,
    /// The VMAs of `registered` tracking did not cover (new since the
    /// parent), and their populated runs: registered and protected by the
    /// tracking that moves on ([`super::tracking::move_on`]).
    pub untracked: Vec<(u64, u64)>,
    pub untracked_populated: Vec<(u64, u64)>,
}

/// Whether `vma` is memory tracking covers: private anonymous.
pub fn trackable(vma: &VmaRecord) -> bool {
    !vma.shared && matches!(vma.backing, Backing::Anonymous { .. }) && vma.stores_pages()
}

/// Narrows `planned` (each VMA with the runs a full dump stores) to what
/// changed since the parent when `incremental`, and says what tracking
/// covers.
pub fn plan(
    incremental: bool,
    maps: &[MapsEntry],
    pagemap: &PageMap,
    planned: &mut [(&VmaRecord, Vec<(u64, u64)>)],
) -> Result<TrackedPlan, CrpError> {
    let mut plan = TrackedPlan::default();
    for (vma, runs) in planned.iter_mut() {
        if !trackable(vma) {
            continue;
        }
        plan.registered.push((vma.start, vma.end));
        plan.populated.extend(runs.iter().copied());
        if !incremental {
            continue;
        }
        let tracked = maps.iter().any(|entry| entry.start <= vma.start && vma.end <= entry.end && entry.has_flag("uw"));
        if tracked && runs.is_empty() {
            continue;
        }
        // Written pages are protected again in the same walk: the caller
        // moves the tracking on at once (its new identity is this dump's).
        match tracked.then(|| pagemap.tracked_pages(vma.start, vma.end, true)).transpose()?.flatten() {
            Some(pages) => {
                plan.inherited
                    .extend(pages.unchanged.iter().map(|&(vaddr, page_count)| PageRange { vaddr, page_count }));
                *runs = pages.written;
            }
            None => {
                plan.untracked_pages += runs.iter().map(|&(_, pages)| pages).sum::<u64>();
                plan.untracked.push((vma.start, vma.end));
                plan.untracked_populated.extend(runs.iter().copied());
            }
        }
    }
    Ok(plan)
}
