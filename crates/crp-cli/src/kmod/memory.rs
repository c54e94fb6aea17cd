//! What the kmod back end cannot restore of a process's memory, refused
//! before anything is touched: its module maps only private anonymous
//! memory and named files, so shared memory objects and mappings of memfds
//! and deleted files (which the userspace back end restores) are refused
//! at the dump before the freeze, and in an image before the child exists.

use crp_compound::vma::{Backing, Mapping, VmaRecord};
use crp_ptrace::{Unsupported, procfs};

use crate::error::CrpError;
use crate::model::ProcessImage;

/// Refuses, before the process is frozen, a mapping this back end cannot
/// restore (`Mapping::kmod_refusal`).
pub fn preflight(pid: i32) -> Result<(), CrpError> {
    let threads = crp_ptrace::thread_ids(pid)
        .map_err(|errno| CrpError::Io { action: format!("list the threads of pid {pid}"), source: errno.into() })?;
    if threads.len() > 1 {
        return Err(CrpError::unsupported(pid, more_threads(threads.len())));
    }
    let maps = procfs::smaps(pid)?;
    for entry in maps.iter().filter(|entry| !crp_arch_x86::is_special_mapping(&entry.name)) {
        if let Some(refusal) = Mapping::from_maps(entry).kmod_refusal() {
            return Err(CrpError::unsupported(pid, refusal));
        }
    }
    Ok(())
}

/// Refuses, before the child exists, an image with mappings this back end
/// cannot restore (made by the userspace back end's dump).
pub fn check_image(image: &ProcessImage) -> Result<(), CrpError> {
    if image.threads.len() > 1 {
        return Err(CrpError::unsupported(image.pid, more_threads(image.threads.len())));
    }
    if let Some(&crp_compound::vma::GuardRegion { start, end }) = image.guard_regions.first() {
        return Err(CrpError::unsupported(
            image.pid,
            Unsupported {
                what: "guard regions (MADV_GUARD_INSTALL), with the kmod back end (its module does not install them; \
                       restore with --backend userspace)"
                    .into(),
                location: format!("[{start:#x}, {end:#x})"),
            },
        ));
    }
    match image.vmas.iter().find_map(refusal) {
        Some(refusal) => Err(CrpError::unsupported(image.pid, refusal)),
        None => Ok(()),
    }
}

/// The module records and rebuilds one task: a multi-threaded process is
/// refused up front, at dump and at restore.
pub(crate) fn more_threads(count: usize) -> Unsupported {
    Unsupported {
        what: "a process with more than one thread, with the kmod back end (its module records and rebuilds one \
               task; use --backend userspace)"
            .into(),
        location: format!("{count} threads"),
    }
}

fn refusal(vma: &VmaRecord) -> Option<Unsupported> {
    let what = match vma.backing {
        _ if vma.flags().contains(crp_compound::vma::VmaFlags::LOCKED) => "mlock()ed memory",
        _ if vma
            .flags()
            .intersects(crp_compound::vma::VmaFlags::MERGEABLE | crp_compound::vma::VmaFlags::DROPPABLE) =>
        {
            "a KSM-mergeable or droppable mapping"
        }
        Backing::Shared { .. } => "shared memory (MAP_SHARED|MAP_ANONYMOUS, /dev/zero or a memfd)",
        Backing::Descriptor { .. } => "a mapping of a memfd or deleted file",
        Backing::Anonymous { .. } | Backing::File(_) => return None,
    };
    Some(Unsupported {
        what: format!(
            "{what}, with the kmod back end (its module maps only private anonymous memory and named files; \
             restore with --backend userspace)"
        ),
        location: format!("[{:#x}, {:#x}) {}", vma.start, vma.end, vma.describe_backing()),
    })
}

#[cfg(test)]
mod tests {
    use crp_compound::vma::{MappedFile, VmaRecord};

    use super::*;

    fn vma(shared: bool, backing: Backing) -> VmaRecord {
        VmaRecord { start: 0x1000, end: 0x2000, protection: 3, shared, flags: 0, backing }
    }

    #[test]
    fn shared_memory_and_descriptor_mappings_are_refused_by_name() {
        let shared = refusal(&vma(true, Backing::Shared { object: 0, offset: 0 })).unwrap();
        assert!(shared.what.contains("kmod back end") && shared.what.contains("MAP_SHARED"), "{shared}");
        assert!(shared.location.contains("0x1000"), "{shared}");
        let memfd = refusal(&vma(false, Backing::Descriptor { object: 1, offset: 0 })).unwrap();
        assert!(memfd.what.contains("memfd or deleted file"), "{memfd}");
        assert!(refusal(&vma(false, Backing::Anonymous { label: String::new() })).is_none());
        let file = MappedFile { path: "/bin/true".into(), offset: 0, size: 1, mtime_ns: 0 };
        assert!(refusal(&vma(true, Backing::File(file))).is_none());
    }

    #[test]
    fn a_shared_anonymous_mapping_is_refused_before_the_freeze() {
        let entry = procfs::MapsEntry {
            start: 0x1000,
            end: 0x2000,
            readable: true,
            writable: true,
            executable: false,
            shared: true,
            offset: 0,
            device: (0, 1),
            inode: 77,
            name: "/dev/zero (deleted)".into(),
            vm_flags: vec!["rd".into(), "wr".into(), "sh".into(), "mw".into()],
            populated_kb: Some(4),
        };
        assert!(Mapping::from_maps(&entry).refusal().is_none(), "the userspace back end takes it");
        let refusal = Mapping::from_maps(&entry).kmod_refusal().unwrap();
        assert!(refusal.what.contains("kmod back end"), "{refusal}");
    }
}
