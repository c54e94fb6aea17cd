//! The kernel's special mappings ([vdso], [vvar], [vvar_vclock]...). They
//! are never stored: a restored process keeps the ones its kernel gave it,
//! moved as one block to where the image had them.

use crp_ptrace::{EngineError, Tracee, TraceeExt};

/// Names of mappings the kernel installs itself.
const SPECIAL_NAMES: &[&str] = &["[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]"];

pub fn is_special_mapping(name: &str) -> bool {
    SPECIAL_NAMES.contains(&name)
}

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

    pub fn block(&self) -> Option<(u64, u64)> {
        Some((self.mappings.first()?.start, self.mappings.last()?.end))
    }

    /// `name:size` pairs in order with their offsets in the block: what must
    /// match between the image and this kernel.
    fn shape(&self) -> Vec<(String, u64, u64)> {
        let base = self.block().map_or(0, |(start, _)| start);
        self.mappings
            .iter()
            .map(|mapping| (mapping.name.clone(), mapping.start - base, mapping.end - mapping.start))
            .collect()
    }

    fn describe(&self) -> String {
        self.shape()
            .iter()
            .map(|(name, offset, size)| format!("{name}@+{offset:#x}/{size:#x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Refuses when this kernel's vDSO block is laid out differently.
    pub fn check_matches(&self, host: &VdsoLayout) -> Result<(), crate::ArchError> {
        if self.shape() != host.shape() {
            return Err(crate::ArchError::VdsoMismatch { image: self.describe(), host: host.describe() });
        }
        Ok(())
    }

    /// Moves the block from `self` (where it is now in the tracee) to
    /// `target`. When the two overlap, the block first goes to
    /// `temporary` (a free address the size of the block), since a fixed
    /// mremap would otherwise clobber its own neighbours.
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

/// Moves each mapping of `layout`, currently based at `from`, to base `to`.
fn move_block(tracee: &mut dyn Tracee, layout: &VdsoLayout, from: u64, to: u64) -> Result<(), EngineError> {
    let base = layout.block().map_or(0, |(start, _)| start);
    for mapping in &layout.mappings {
        let size = mapping.end - mapping.start;
        let old = from + (mapping.start - base);
        let new = to + (mapping.start - base);
        let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        tracee.syscall("mremap", libc::SYS_mremap, [old, size, size, flags, new, 0])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
