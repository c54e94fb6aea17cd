//! The layout an image describes: its VMAs in address order, page-aligned
//! inside user space, each mappable as recorded; the vDSO block well formed
//! and clear of them; every page run inside a private VMA.

use std::ops::Range;

use crp_image::ImageReader;
use crp_recursive::AddressSpace;

use super::{PAGE_SIZE, invalid, target_space};
use crate::error::CrpError;
use crate::model::ProcessImage;

pub(super) fn check(image: &ProcessImage, reader: &ImageReader, user: &Range<u64>) -> Result<(), CrpError> {
    if image.pid <= 0 {
        return Err(invalid(format!("pid {} is not a process id", image.pid)));
    }
    check_vmas(image, user)?;
    image.vdso.check().map_err(invalid)?;
    for (index, mapping) in image.vdso.mappings.iter().enumerate() {
        if mapping.start < user.start || mapping.end > user.end {
            return Err(invalid(format!(
                "vDSO mapping {index} ({} [{:#x}, {:#x})) is outside user space",
                mapping.name, mapping.start, mapping.end
            )));
        }
    }
    target_space(image)?;
    check_page_runs(image, reader)
}

fn check_vmas(image: &ProcessImage, user: &Range<u64>) -> Result<(), CrpError> {
    if image.vmas.is_empty() {
        return Err(invalid("no VMAs"));
    }
    let mut previous: Option<(u64, u64)> = None;
    for (index, vma) in image.vmas.iter().enumerate() {
        let range = format!("VMA {index} [{:#x}, {:#x})", vma.start, vma.end);
        if vma.start % PAGE_SIZE != 0 || vma.end % PAGE_SIZE != 0 {
            return Err(invalid(format!("{range} is not page-aligned")));
        }
        if vma.start >= vma.end {
            return Err(invalid(format!("{range} is empty or reversed")));
        }
        if vma.start < user.start || vma.end > user.end {
            return Err(invalid(format!("{range} is outside user space")));
        }
        match previous {
            Some((start, _)) if vma.start < start => {
                return Err(invalid(format!("{range} comes before VMA {} (out of address order)", index - 1)));
            }
            Some((start, end)) if vma.start < end => {
                return Err(invalid(format!("{range} overlaps VMA {} [{start:#x}, {end:#x})", index - 1)));
            }
            _ => {}
        }
        vma.check(index).map_err(invalid)?;
        previous = Some((vma.start, vma.end));
    }
    Ok(())
}

fn check_page_runs(image: &ProcessImage, reader: &ImageReader) -> Result<(), CrpError> {
    let mut stores_pages = AddressSpace::new();
    for vma in image.vmas.iter().filter(|vma| vma.stores_pages()) {
        stores_pages.insert(vma.start, vma.end, ()).map_err(invalid)?;
    }
    let runs = reader.page_runs().iter().map(|run| (run.vaddr, run.page_count, "page run"));
    // An incremental image's pages from its parent must lie there too.
    let inherited = image.chain.inherited.iter().map(|range| (range.vaddr, range.page_count, "inherited range"));
    for (vaddr, page_count, what) in runs.chain(inherited) {
        let end = page_count.checked_mul(PAGE_SIZE).and_then(|length| vaddr.checked_add(length));
        match (stores_pages.find(vaddr), end) {
            (Some((_, vma_end, ())), Some(end)) if end <= vma_end => {}
            _ => {
                return Err(invalid(format!("{what} at {vaddr:#x} ({page_count} pages) lies outside any private VMA")));
            }
        }
    }
    Ok(())
}
