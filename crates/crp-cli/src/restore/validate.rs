//! Everything checked before a restore creates anything: the metadata is a
//! valid archive describing a sane layout, and this host can run it (XSAVE
//! features, vDSO layout, the files it maps and opens).

use crp_arch_x86::{VdsoLayout, host_xsave_features};
use crp_compound::vma::Backing;
use crp_image::ImageReader;
use crp_recursive::AddressSpace;

use crate::error::CrpError;
use crate::model::{ArchivedProcessImage, ProcessImage};

/// Highest user address plus one with 4-level paging.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;
const PAGE_SIZE: u64 = 4096;

mod layout;
mod state;

/// The error for an image whose values no restore can apply, naming the
/// field (exit code 4, like a corrupted image).
fn invalid(reason: impl std::fmt::Display) -> CrpError {
    CrpError::InvalidImage { reason: reason.to_string() }
}

/// Reads the archive (validated in place by bytecheck) into plain types and
/// checks, once and before anything is created, every value the restore
/// computes from: the layout it describes, its page runs, and each kind of
/// state against what the kernel would accept. After this, no step of a
/// restore fails because of the image's values alone.
pub fn load_image(reader: &ImageReader) -> Result<ProcessImage, CrpError> {
    let archived = reader.metadata::<ArchivedProcessImage>()?;
    let image: ProcessImage = rkyv::deserialize::<ProcessImage, rkyv::rancor::Error>(archived).map_err(invalid)?;
    let user = user_space();
    layout::check(&image, reader, &user)?;
    state::check(&image, &user)?;
    Ok(image)
}

/// `[mmap_min_addr, TASK_SIZE)`: where a process's mappings and mm fields
/// may lie.
fn user_space() -> std::ops::Range<u64> {
    let mmap_min_addr: u64 = std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(PAGE_SIZE);
    mmap_min_addr.max(PAGE_SIZE)..TASK_SIZE
}

/// The target's address space, its VMAs and vDSO mappings together.
pub fn target_space(image: &ProcessImage) -> Result<AddressSpace<()>, CrpError> {
    let ranges = image
        .vmas
        .iter()
        .map(|vma| (vma.start, vma.end, ()))
        .chain(image.vdso.mappings.iter().map(|mapping| (mapping.start, mapping.end, ())));
    AddressSpace::from_ranges(ranges).map_err(|error| invalid(format!("address space: {error}")))
}

/// The vDSO layout of this kernel, as crp itself has it.
pub fn host_vdso() -> Result<VdsoLayout, CrpError> {
    let maps = crp_ptrace::procfs::read_smaps(std::process::id() as i32)
        .map_err(|source| CrpError::Io { action: "read /proc/self/smaps".into(), source })?;
    Ok(VdsoLayout::from_maps(maps.iter().map(|entry| (entry.name.as_str(), entry.start, entry.end))))
}

/// Checks this host can run the image: CPU features, vDSO shape, files.
pub fn check_host(image: &ProcessImage) -> Result<(), CrpError> {
    image.cpu.xsave.check_host_supports(host_xsave_features())?;
    image.vdso.check_matches(&host_vdso()?)?;
    for vma in &image.vmas {
        if let Backing::File(file) = &vma.backing {
            crp_compound::vma::check_mapped_file(file)?;
        }
    }
    crp_compound::files::check_files_exist(&image.files)?;
    check_privileges(image)?;
    std::fs::metadata(&image.mm.exe_path)
        .map_err(|source| CrpError::Io { action: format!("find executable {}", image.mm.exe_path), source })?;
    Ok(())
}

/// `CAP_SYS_RESOURCE`, needed to raise a hard resource limit.
const CAP_SYS_RESOURCE: u64 = 1 << 24;

/// Refuses an image whose process had capabilities, or hard limits, that
/// crp itself does not have: it could not give them back.
fn check_privileges(image: &ProcessImage) -> Result<(), CrpError> {
    let own = crp_compound::creds::own_status()?;
    let beyond = image.credentials.capabilities_beyond(&own);
    if beyond != 0 {
        return Err(CrpError::Incompatible {
            reason: format!("the process had capabilities {beyond:#x} that crp restore does not hold"),
        });
    }
    let can_raise_limits = own.cap_effective & CAP_SYS_RESOURCE != 0;
    match crp_compound::rlimits::first_above(&image.rlimits, crp_ptrace::sys::own_hard_limit) {
        Some((limit, own_limit)) if !can_raise_limits => Err(CrpError::Incompatible {
            reason: format!(
                "{} hard limit {} is above crp's own {own_limit} and crp lacks CAP_SYS_RESOURCE",
                limit.name(),
                limit.hard
            ),
        }),
        _ => Ok(()),
    }
}
