//! Turning the forked child into an empty shell: a gadget page (a `syscall`
//! instruction plus scratch space) in a hole of the target's layout, and
//! every other mapping of crp's removed (the plan's first step; the vDSO
//! block, kept, is moved to where the target had it by the next,
//! [`VdsoLayout`]'s restore).

use crp_arch_x86::VdsoLayout;
use crp_ptrace::procfs::MapsEntry;
use crp_ptrace::{Injector, Tracee, TraceeExt};
use crp_recursive::AddressSpace;

use super::validate::TASK_SIZE;
use crate::error::CrpError;

const PAGE_SIZE: u64 = 4096;
/// Scratch space after the code page.
const SCRATCH_BYTES: usize = 7 * 4096;
/// One code page followed by the scratch pages.
pub const GADGET_BYTES: u64 = PAGE_SIZE + SCRATCH_BYTES as u64;
/// Lowest address considered for the gadget.
const SEARCH_FLOOR: u64 = 0x1_0000;
/// `syscall; int3; int3`: every injected syscall runs through here.
const GADGET_CODE: [u8; 4] = [0x0f, 0x05, 0xcc, 0xcc];

/// The gadget: code at `address`, scratch after it.
#[derive(Debug, Clone, Copy)]
pub struct Gadget {
    pub address: u64,
}

impl Gadget {
    pub fn scratch(&self) -> (u64, usize) {
        (self.address + PAGE_SIZE, SCRATCH_BYTES)
    }
}

/// The lowest `size`-byte hole free in both `target` and `occupied`.
pub fn common_hole(target: &AddressSpace<()>, occupied: &AddressSpace<()>, size: u64) -> Option<u64> {
    let mut low = SEARCH_FLOOR;
    loop {
        let candidate = target.find_gap(size, PAGE_SIZE, low, TASK_SIZE)?;
        match occupied.find_gap(size, PAGE_SIZE, candidate, TASK_SIZE)? {
            free if free == candidate => return Some(candidate),
            // Skip past whatever occupies the candidate and search again.
            _ => low = occupied.ranges().find(|(_, end, _)| *end > candidate).map(|(_, end, _)| end)?,
        }
    }
}

fn space_of(ranges: impl IntoIterator<Item = (u64, u64)>) -> AddressSpace<()> {
    let mut space = AddressSpace::new();
    for (start, end) in ranges {
        // Kernel-reported mappings never overlap; a duplicate would only
        // make the search more careful.
        let _ = space.insert(start, end, ());
    }
    space
}

/// Maps the gadget in a hole of both layouts and points the injector at it.
pub fn install_gadget(
    injector: &mut Injector,
    target: &AddressSpace<()>,
    child_maps: &[MapsEntry],
) -> Result<Gadget, CrpError> {
    let occupied =
        space_of(child_maps.iter().filter(|entry| entry.end <= TASK_SIZE).map(|entry| (entry.start, entry.end)));
    let address = common_hole(target, &occupied, GADGET_BYTES).ok_or_else(|| CrpError::InvalidImage {
        reason: "no hole left in the address space for crp's gadget page".into(),
    })?;
    let protection = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
    injector.syscall("mmap(gadget)", libc::SYS_mmap, [address, GADGET_BYTES, protection, flags, u64::MAX, 0])?;
    injector.write_memory(address, &GADGET_CODE)?;
    let code_protection = (libc::PROT_READ | libc::PROT_EXEC) as u64;
    injector.syscall("mprotect(gadget)", libc::SYS_mprotect, [address, PAGE_SIZE, code_protection, 0, 0, 0])?;
    let gadget = Gadget { address };
    injector.set_syscall_ip(address);
    let (scratch, length) = gadget.scratch();
    injector.set_scratch_area(scratch, length);
    Ok(gadget)
}

/// Unmaps everything but the gadget and the vDSO block the child has.
pub fn clear_address_space(injector: &mut Injector, gadget: Gadget) -> Result<(), CrpError> {
    let live_vdso = VdsoLayout::of_maps(&injector.mappings()?);
    let mut keep = vec![(gadget.address, gadget.address + GADGET_BYTES)];
    keep.extend(live_vdso.block());
    keep.sort_unstable();
    let mut next = 0u64;
    for (start, end) in keep.into_iter().chain([(TASK_SIZE, TASK_SIZE)]) {
        if start > next {
            injector.syscall("munmap(crp's own mappings)", libc::SYS_munmap, [next, start - next, 0, 0, 0, 0])?;
        }
        next = next.max(end);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_hole_avoids_both_layouts() {
        let target = AddressSpace::from_ranges([(0x10000, 0x20000, ()), (0x40000, 0x50000, ())]).unwrap();
        let occupied = AddressSpace::from_ranges([(0x20000, 0x30000, ())]).unwrap();
        assert_eq!(common_hole(&target, &occupied, 0x10000), Some(0x30000));
        assert_eq!(common_hole(&target, &occupied, 0x8000), Some(0x30000));
        let empty = AddressSpace::new();
        assert_eq!(common_hole(&target, &empty, 0x8000), Some(0x20000));
    }
}
