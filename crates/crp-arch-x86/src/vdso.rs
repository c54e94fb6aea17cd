//! The kernel's special mappings ([vdso], [vvar], [vvar_vclock]...). They
//! are never stored: a restored process keeps the ones its kernel gave it,
//! moved as one block to where the image had them.

use crp_ptrace::procfs::MapsEntry;
use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt};

use crate::ArchError;

pub use crp_ptrace::procfs::is_special_mapping;

const PAGE_SIZE: u64 = 4096;
/// Lowest address considered for the block's temporary place.
const SEARCH_FLOOR: u64 = 0x1_0000;

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SpecialMapping {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

/// The vDSO block: its mappings in address order. [vsyscall] is fixed by
/// the kernel and not part of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct VdsoLayout {
    pub mappings: Vec<SpecialMapping>,
}

impl VdsoLayout {
    /// Collects the vDSO block from `(name, start, end)` of a task's maps.
    pub fn from_maps<'a>(maps: impl IntoIterator<Item = (&'a str, u64, u64)>) -> Self {
        let mut mappings: Vec<SpecialMapping> = maps
            .into_iter()
            .filter(|(name, _, _)| is_special_mapping(name) && *name != "[vsyscall]" && *name != "[uprobes]")
            .map(|(name, start, end)| SpecialMapping { name: name.to_owned(), start, end })
            .collect();
        mappings.sort_by_key(|mapping| mapping.start);
        Self { mappings }
    }

    /// The vDSO block among `maps`.
    pub fn of_maps(maps: &[MapsEntry]) -> Self {
        Self::from_maps(maps.iter().map(|entry| (entry.name.as_str(), entry.start, entry.end)))
    }

    pub fn block(&self) -> Option<(u64, u64)> {
        Some((self.mappings.first()?.start, self.mappings.last()?.end))
    }

    /// Refuses a layout no kernel produces: names that are not the vDSO
    /// block's, empty, reversed or unaligned mappings, mappings out of
    /// address order or overlapping, a name twice. Everything that computes
    /// offsets in the block relies on this.
    pub fn check(&self) -> Result<(), ArchError> {
        let mut previous_end = self.block().map_or(0, |(start, _)| start);
        for (index, mapping) in self.mappings.iter().enumerate() {
            let malformed = |reason| {
                Err(ArchError::MalformedVdso {
                    index,
                    name: mapping.name.clone(),
                    start: mapping.start,
                    end: mapping.end,
                    reason,
                })
            };
            let name = mapping.name.as_str();
            if !is_special_mapping(name) || name == "[vsyscall]" || name == "[uprobes]" {
                return malformed("is not a mapping of the vDSO block");
            }
            if mapping.start >= mapping.end {
                return malformed("is empty or reversed");
            }
            if mapping.start % PAGE_SIZE != 0 || mapping.end % PAGE_SIZE != 0 {
                return malformed("is not page-aligned");
            }
            if index > 0 && mapping.start < self.mappings[0].start {
                return malformed("starts before the block");
            }
            if mapping.start < previous_end {
                return malformed("overlaps the mapping before it");
            }
            if self.mappings[..index].iter().any(|other| other.name == mapping.name) {
                return malformed("appears twice");
            }
            previous_end = mapping.end;
        }
        Ok(())
    }

    /// `name:size` pairs in order with their offsets in the block: what must
    /// match between the image and this kernel. Saturating, so that even an
    /// unchecked layout gives a shape (that matches no kernel's).
    fn shape(&self) -> Vec<(String, u64, u64)> {
        let base = self.block().map_or(0, |(start, _)| start);
        self.mappings
            .iter()
            .map(|mapping| {
                (mapping.name.clone(), mapping.start.saturating_sub(base), mapping.end.saturating_sub(mapping.start))
            })
            .collect()
    }

    fn describe(&self) -> String {
        self.shape()
            .iter()
            .map(|(name, offset, size)| format!("{name}@+{offset:#x}/{size:#x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Refuses when this kernel's vDSO block is laid out differently, or
    /// either layout is malformed.
    pub fn check_matches(&self, host: &VdsoLayout) -> Result<(), ArchError> {
        self.check()?;
        host.check()?;
        if self.shape() != host.shape() {
            return Err(ArchError::VdsoMismatch { image: self.describe(), host: host.describe() });
        }
        Ok(())
    }

    /// Moves the block from `self` (where it is now in the tracee) to
    /// `target`. When the two overlap, the block first goes to
    /// `temporary` (a free address the size of the block), since a fixed
    /// mremap would otherwise clobber its own neighbours.
    /// Both layouts must have passed [`VdsoLayout::check`] (and
    /// [`VdsoLayout::check_matches`] each other).
    pub fn move_to(&self, tracee: &mut dyn Tracee, target: &VdsoLayout, temporary: u64) -> Result<(), EngineError> {
        let (Some((from_start, from_end)), Some((to_start, to_end))) = (self.block(), target.block()) else {
            return Ok(());
        };
        if from_start == to_start {
            return Ok(());
        }
        let overlaps = from_start < to_end && to_start < from_end;
        if overlaps {
            move_block(tracee, self, from_start, temporary)?;
            move_block(tracee, self, temporary, to_start)
        } else {
            move_block(tracee, self, from_start, to_start)
        }
    }
}

impl Persist for VdsoLayout {
    const KIND: &'static str = "vDSO placement";
    type Error = ArchError;

    /// Where the process's vDSO block is, from the snapshot's memory map.
    fn capture(context: &mut Capture<'_>) -> Result<Self, ArchError> {
        Ok(Self::of_maps(&context.proc.maps))
    }

    /// Moves the block the restore child has (its kernel's, checked to be
    /// laid out as the image's) to the image's addresses, through the
    /// lowest hole free of every mapping the child has now and of the
    /// image's block when the two overlap.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), ArchError> {
        let maps = context.tracee.mappings()?;
        let live = Self::of_maps(&maps);
        let (Some((start, end)), Some(target)) = (live.block(), self.block()) else {
            return Ok(());
        };
        let occupied = maps.iter().map(|entry| (entry.start, entry.end)).chain([target]);
        let temporary = lowest_hole(occupied, end - start).ok_or(ArchError::NoHole { bytes: end - start })?;
        Ok(live.move_to(context.tracee, self, temporary)?)
    }
}

/// The lowest page-aligned address from [`SEARCH_FLOOR`] up where `size`
/// bytes touch none of `occupied`, below the end of user space.
fn lowest_hole(occupied: impl Iterator<Item = (u64, u64)>, size: u64) -> Option<u64> {
    let mut ranges: Vec<(u64, u64)> = occupied.collect();
    ranges.sort_unstable();
    let mut candidate = SEARCH_FLOOR;
    for (start, end) in ranges {
        if candidate.checked_add(size)? <= start {
            break;
        }
        candidate = candidate.max(end.next_multiple_of(PAGE_SIZE));
    }
    candidate.checked_add(size).filter(|&end| end <= crp_ptrace::USER_SPACE_END).map(|_| candidate)
}

/// Moves each mapping of `layout`, currently based at `from`, to base `to`.
fn move_block(tracee: &mut dyn Tracee, layout: &VdsoLayout, from: u64, to: u64) -> Result<(), EngineError> {
    let base = layout.block().map_or(0, |(start, _)| start);
    for mapping in &layout.mappings {
        // A checked layout is sorted inside its block and below TASK_SIZE,
        // so none of this wraps; with an unchecked one a wrapped address
        // is refused by the kernel, never a panic here.
        let size = mapping.end.wrapping_sub(mapping.start);
        let offset = mapping.start.wrapping_sub(base);
        let (old, new) = (from.wrapping_add(offset), to.wrapping_add(offset));
        let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        tracee.syscall("mremap", libc::SYS_mremap, [old, size, size, flags, new, 0])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crp_ptrace::fake::{FakeTracee, mapping};

    use super::*;

    #[test]
    fn layout_ignores_vsyscall_and_compares_shapes() {
        let image = VdsoLayout::from_maps([
            ("[vdso]", 0x7fff_2000, 0x7fff_4000),
            ("[vvar]", 0x7fff_0000, 0x7fff_2000),
            ("[vsyscall]", 0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000),
        ]);
        assert_eq!(image.mappings.len(), 2);
        assert_eq!(image.block(), Some((0x7fff_0000, 0x7fff_4000)));
        let moved = VdsoLayout::from_maps([("[vvar]", 0x1000, 0x3000), ("[vdso]", 0x3000, 0x5000)]);
        assert!(image.check_matches(&moved).is_ok());
        let other = VdsoLayout::from_maps([("[vvar]", 0x1000, 0x4000), ("[vdso]", 0x4000, 0x6000)]);
        assert!(image.check_matches(&other).is_err());
    }

    fn layout(mappings: &[(&str, u64, u64)]) -> VdsoLayout {
        VdsoLayout {
            mappings: mappings
                .iter()
                .map(|&(name, start, end)| SpecialMapping { name: name.into(), start, end })
                .collect(),
        }
    }

    #[test]
    fn malformed_layouts_are_refused_naming_the_mapping() {
        let refusal = |mappings: &[(&str, u64, u64)]| layout(mappings).check().unwrap_err().to_string();
        let unsorted = refusal(&[("[vvar]", 0x5000, 0x7000), ("[vdso]", 0x3000, 0x5000)]);
        assert!(unsorted.contains("vDSO mapping 1") && unsorted.contains("starts before the block"), "{unsorted}");
        assert!(refusal(&[("[vdso]", 0x3000, 0x1000)]).contains("reversed"));
        assert!(refusal(&[("[vvar]", 0x1000, 0x3000), ("[vdso]", 0x2000, 0x4000)]).contains("overlaps"));
        assert!(refusal(&[("[heap]", 0x1000, 0x3000)]).contains("not a mapping of the vDSO block"));
        assert!(refusal(&[("[vdso]", 0x1000, 0x2000), ("[vdso]", 0x2000, 0x3000)]).contains("twice"));
        assert!(refusal(&[("[vdso]", u64::MAX - 0xfff, u64::MAX)]).contains("page-aligned"));
    }

    fn mremaps(tracee: &FakeTracee) -> Vec<[u64; 2]> {
        tracee.calls_of(libc::SYS_mremap).iter().map(|call| [call.args[0], call.args[4]]).collect()
    }

    /// A restore child with the gadget at 0x10000 and its kernel's vDSO
    /// block at 0x7fff_0000 (vvar, then vdso).
    fn child() -> FakeTracee {
        let mut tracee = FakeTracee::default();
        tracee.mappings = vec![
            mapping("", 0x1_0000, 0x1_8000),
            mapping("[vvar]", 0x7fff_0000, 0x7fff_4000),
            mapping("[vdso]", 0x7fff_4000, 0x7fff_6000),
            mapping("[vsyscall]", 0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000),
        ];
        tracee
    }

    #[test]
    fn the_block_moves_to_the_image_s_addresses_through_a_hole_when_the_two_overlap() {
        let apart = layout(&[("[vvar]", 0x5000_0000, 0x5000_4000), ("[vdso]", 0x5000_4000, 0x5000_6000)]);
        let mut tracee = child();
        apart.restore(&mut Restore::new(&mut tracee)).unwrap();
        assert_eq!(mremaps(&tracee), [[0x7fff_0000, 0x5000_0000], [0x7fff_4000, 0x5000_4000]], "moved directly");

        let overlapping = layout(&[("[vvar]", 0x7fff_2000, 0x7fff_6000), ("[vdso]", 0x7fff_6000, 0x7fff_8000)]);
        let mut tracee = child();
        overlapping.restore(&mut Restore::new(&mut tracee)).unwrap();
        assert_eq!(
            mremaps(&tracee),
            [[0x7fff_0000, 0x1_8000], [0x7fff_4000, 0x1_c000], [0x1_8000, 0x7fff_2000], [0x1_c000, 0x7fff_6000]],
            "through the lowest hole past the gadget"
        );

        let mut tracee = child();
        let same = layout(&[("[vvar]", 0x7fff_0000, 0x7fff_4000), ("[vdso]", 0x7fff_4000, 0x7fff_6000)]);
        same.restore(&mut Restore::new(&mut tracee)).unwrap();
        assert!(tracee.calls.is_empty(), "already in place");
    }

    #[test]
    fn the_block_is_captured_from_the_snapshot_s_map() {
        let mut proc = crp_ptrace::fake::snapshot();
        proc.maps = child().mappings.into();
        let mut tracee = FakeTracee::default();
        let context = &mut Capture { tracee: &mut tracee, proc: &proc, stopped_before_freeze: false };
        let captured = VdsoLayout::capture(context).unwrap();
        assert_eq!(captured.block(), Some((0x7fff_0000, 0x7fff_6000)));
        assert_eq!(captured.mappings.len(), 2, "[vsyscall] is not part of it");
    }

    #[test]
    fn the_hole_search_skips_what_is_occupied_and_stays_in_user_space() {
        assert_eq!(lowest_hole([(0x1_0000, 0x2_0000), (0x2_0000, 0x2_1800)].into_iter(), 0x1000), Some(0x2_2000));
        assert_eq!(lowest_hole([(0x3_0000, 0x4_0000)].into_iter(), 0x2_0000), Some(0x1_0000));
        assert_eq!(lowest_hole([(0x1_0000, crp_ptrace::USER_SPACE_END)].into_iter(), 0x1000), None);
    }

    #[test]
    fn an_unsorted_layout_never_matches_and_never_overflows() {
        let unsorted = layout(&[("[vvar]", 0x5000, 0x7000), ("[vdso]", 0x3000, 0x5000)]);
        let sorted = layout(&[("[vvar]", 0x3000, 0x5000), ("[vdso]", 0x5000, 0x7000)]);
        assert!(matches!(unsorted.check_matches(&sorted), Err(ArchError::MalformedVdso { index: 1, .. })));
        assert!(sorted.check_matches(&unsorted).is_err());
    }
}
