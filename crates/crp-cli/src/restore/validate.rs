//! Everything checked before a restore creates anything: the metadata is a
//! valid archive describing a sane layout, and this host can run it (XSAVE
//! features, vDSO layout, the files it maps and opens).

use crp_arch_x86::{VdsoLayout, host_xsave_features};
use crp_compound::files::FdTarget;
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
    let maps = crp_ptrace::procfs::maps(std::process::id().cast_signed())?;
    Ok(VdsoLayout::from_maps(maps.iter().map(|entry| (entry.name.as_str(), entry.start, entry.end))))
}

/// Checks this host can run the image: CPU features, vDSO shape, files
/// (each must exist: a missing one is named, exit 5; a mapped file that
/// changed since the dump, or an open one that changed other than by
/// growing, is refused, exit 5, or with
/// `allow_changed_files` named in a warning unless it shrank below a
/// mapping's end; the descriptors in `chosen` the user replaced), then
/// privileges.
pub fn check_host(image: &ProcessImage, allow_changed_files: bool, chosen: &[i32]) -> Result<(), CrpError> {
    let host_features = host_xsave_features();
    for thread in &image.threads {
        thread.cpu.xsave.check_host_supports(host_features)?;
    }
    image.vdso.check_matches(&host_vdso()?)?;
    require_path("the executable", &image.mm.exe_path, Kind::Any)?;
    require_path("the working directory", &image.task.cwd, Kind::Directory)?;
    for vma in &image.vmas {
        if let Backing::File(file) = &vma.backing {
            require_path("the mapped file", &file.path, Kind::Any)?;
            if let Some(mut change) = crp_compound::vma::mapped_file_change(file, vma.end - vma.start)? {
                change.what = format!("mapped at [{:#x}, {:#x}): {}", vma.start, vma.end, change.what);
                accept_change(change, allow_changed_files)?;
            }
        }
    }
    for record in image.files.records() {
        if let FdTarget::File { path, .. } | FdTarget::CharDevice { path } = &record.target {
            require_path("the file of its descriptor", path, Kind::Any).map_err(|error| with_fd(error, record.fd))?;
        }
        if let FdTarget::File { path, identity: Some(identity) } = &record.target
            && !chosen.contains(&record.fd)
            && let Some(mut change) = crp_compound::vma::file_change(path, identity.size, identity.mtime_ns, 0)?
        {
            change.what = format!("open on fd {}: {}", record.fd, change.what);
            if change.grew {
                // Appended to meanwhile (a log it reads, `tail -f`): what it
                // read so far is still there.
                tracing::info!(path = %change.path, what = %change.what, "an open file grew since the dump");
            } else {
                accept_change(change, allow_changed_files)?;
            }
        }
    }
    crp_compound::files::check_files_exist(&image.files)?;
    crp_compound::vma::shared::check_host(&image.shared_memory)?;
    for thread in &image.threads {
        thread
            .attributes
            .check_speculation(crp_compound::thread_attrs::own_speculation)
            .map_err(|refusal| CrpError::Incompatible { reason: refusal.to_string() })?;
    }
    check_privileges(image)
}

/// Refuses a file that changed since the dump, or with `allow` (`crp
/// restore --allow-changed-files`) warns of it, naming it and what changed;
/// a change that would make the process fault is refused all the same.
fn accept_change(change: crp_compound::vma::FileChange, allow: bool) -> Result<(), CrpError> {
    if !allow || change.fatal {
        return Err(crp_compound::CompoundError::from(change).into());
    }
    eprintln!(
        "crp: warning: {} changed since the dump ({}); restored as it is now (--allow-changed-files)",
        change.path, change.what
    );
    Ok(())
}

/// What a path the image names must be on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Any,
    Directory,
}

/// `path` exists here (and is a directory when `kind` says so), else
/// [`CrpError::MissingOnHost`] naming it.
fn require_path(what: &'static str, path: &str, kind: Kind) -> Result<(), CrpError> {
    let missing = |problem: String| CrpError::MissingOnHost { what, path: path.to_owned(), problem };
    match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(missing("does not exist".to_owned())),
        Err(error) => Err(missing(format!("cannot be looked up: {error}"))),
        Ok(metadata) if kind == Kind::Directory && !metadata.is_dir() => Err(missing("is not a directory".to_owned())),
        Ok(_) => Ok(()),
    }
}

fn with_fd(error: CrpError, fd: i32) -> CrpError {
    match error {
        CrpError::MissingOnHost { path, problem, .. } => {
            CrpError::MissingOnHost { what: "the file of a descriptor", path, problem: format!("(fd {fd}) {problem}") }
        }
        other => other,
    }
}

/// `CAP_IPC_LOCK`, which lifts RLIMIT_MEMLOCK off mlock.
const CAP_IPC_LOCK: u64 = 1 << 14;

/// Refuses an image whose locked memory (mlock, mlockall MCL_CURRENT) crp
/// could not lock again: without CAP_IPC_LOCK, mlock may lock only
/// RLIMIT_MEMLOCK bytes (crp's own limit while it rebuilds the process).
fn check_locked_memory(
    vmas: &[crp_compound::vma::VmaRecord],
    can_lock_any: bool,
    own_limit: u64,
) -> Result<(), CrpError> {
    let locked: u64 = vmas.iter().map(crp_compound::vma::VmaRecord::locked_bytes).sum();
    if locked == 0 || can_lock_any || locked <= own_limit {
        return Ok(());
    }
    Err(CrpError::LacksPrivileges {
        missing: format!(
            "CAP_IPC_LOCK, to lock {locked} bytes of mlock()ed memory again, above crp's RLIMIT_MEMLOCK of \
             {own_limit} bytes (raise it with ulimit -l, or run crp restore with CAP_IPC_LOCK)"
        ),
        advice: privilege_advice(),
    })
}

/// crp's own soft RLIMIT_MEMLOCK (the restored process has it while crp
/// rebuilds it).
fn own_memlock_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK).map_or(0, |(soft, _)| soft)
}

/// `CAP_SYS_RESOURCE`, needed to raise a hard resource limit.
const CAP_SYS_RESOURCE: u64 = 1 << 24;
/// `CAP_WAKE_ALARM`, needed for a timer on CLOCK_REALTIME_ALARM (8) or
/// CLOCK_BOOTTIME_ALARM (9).
const CAP_WAKE_ALARM: u64 = 1 << 35;
const ALARM_CLOCKS: [i32; 2] = [8, 9];

/// `CAP_LEASE`, needed for a lease on a file crp does not own.
const CAP_LEASE: u64 = 1 << 28;

/// Refuses a lease crp could not take again: on a file another user owns,
/// without CAP_LEASE (the locks are taken before the credentials, with
/// crp's own).
fn check_leases(locks: &crp_locks::FileLocks, can_lease_any: bool) -> Result<(), CrpError> {
    use std::os::unix::fs::MetadataExt;
    if can_lease_any {
        return Ok(());
    }
    let own = nix::unistd::geteuid().as_raw();
    for lease in locks.locks.iter().filter(|lock| lock.kind == crp_locks::LockKind::Lease) {
        let owner = std::fs::metadata(&lease.path).map(|metadata| metadata.uid()).ok();
        if owner.is_some_and(|owner| owner != own) {
            return Err(CrpError::LacksPrivileges {
                missing: format!(
                    "CAP_LEASE, to take fd {}'s lease on {} again (another user's file)",
                    lease.fd, lease.path
                ),
                advice: privilege_advice(),
            });
        }
    }
    Ok(())
}

/// Refuses an image whose process had capabilities, hard limits, or an
/// oom_score_adj below crp's own lower bound, that crp itself does not
/// have: it could not give them back. Capabilities
/// this kernel does not know at all make the host unfit (exit 5); known
/// ones crp lacks are a privilege problem of crp's (exit 1).
fn check_privileges(image: &ProcessImage) -> Result<(), CrpError> {
    let own = crp_compound::creds::own_status()?;
    let beyond = image.credentials.capabilities_beyond(&own);
    let unknown_here = beyond & !known_capabilities();
    if unknown_here != 0 {
        return Err(CrpError::Incompatible {
            reason: format!(
                "the process had capabilities this kernel does not know: {}",
                capability_list(unknown_here)
            ),
        });
    }
    if beyond != 0 {
        return Err(CrpError::LacksPrivileges {
            missing: format!(
                "{} (in its permitted or bounding set: even an unprivileged process has a full bounding set)",
                capability_list(beyond)
            ),
            advice: privilege_advice(),
        });
    }
    check_locked_memory(&image.vmas, own.cap_effective & CAP_IPC_LOCK != 0, own_memlock_limit())?;
    if let Some(timer) = image.posix_timers.timers.iter().find(|timer| ALARM_CLOCKS.contains(&timer.clock))
        && own.cap_effective & CAP_WAKE_ALARM == 0
    {
        return Err(CrpError::LacksPrivileges {
            missing: format!(
                "CAP_WAKE_ALARM, to create POSIX timer {} on {}",
                timer.id,
                crp_compound::posix_timers::clock_name(timer.clock)
            ),
            advice: privilege_advice(),
        });
    }
    check_leases(&image.file_locks, own.cap_effective & CAP_LEASE != 0)?;
    let can_raise_limits = own.cap_effective & CAP_SYS_RESOURCE != 0;
    let oom_score_adj = image.attributes.oom_score_adj;
    if !crp_compound::process_attrs::can_set_oom_score_adj(oom_score_adj)? {
        return Err(CrpError::LacksPrivileges {
            missing: format!(
                "CAP_SYS_RESOURCE, to set oom_score_adj {oom_score_adj}, below the lowest crp restore may set (its \
                 own is {})",
                crp_compound::process_attrs::own_oom_score_adj()?
            ),
            advice: privilege_advice(),
        });
    }
    let login_uid = image.attributes.login_uid;
    if !crp_compound::process_attrs::login_uid_settable(login_uid)? {
        return Err(CrpError::LacksPrivileges {
            missing: format!(
                "CAP_AUDIT_CONTROL, to give the process its audit login uid {} (crp restore's is {})",
                login_uid.unwrap_or_default(),
                crp_compound::process_attrs::own_login_uid()?.unwrap_or_default()
            ),
            advice: privilege_advice(),
        });
    }
    match crp_compound::rlimits::first_above(&image.rlimits, crp_ptrace::sys::own_hard_limit) {
        Some((limit, own_limit)) if !can_raise_limits => Err(CrpError::LacksPrivileges {
            missing: format!(
                "CAP_SYS_RESOURCE, to raise the {} hard limit {} above crp's own {own_limit}",
                limit.name(),
                limit.hard
            ),
            advice: privilege_advice(),
        }),
        _ => Ok(()),
    }
}

/// What to do about capabilities crp restore lacks: it needs them to give
/// them back.
fn privilege_advice() -> String {
    match nix::unistd::geteuid().as_raw() {
        0 => "crp restore runs as root but without them (whatever started it dropped them from its bounding \
              set): run it where root holds them"
            .to_owned(),
        uid => format!("crp restore runs as uid {uid} and needs them to give them back: run it as root"),
    }
}

/// "CAP_A, CAP_B (0x...)".
fn capability_list(set: u64) -> String {
    format!("{} ({set:#x})", crp_compound::creds::capability_names(set).join(", "))
}

/// Every capability this kernel knows (`/proc/sys/kernel/cap_last_cap`);
/// all 64 bits when that file cannot be read.
fn known_capabilities() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|last| *last < 63)
        .map_or(u64::MAX, |last| (1u64 << (last + 1)) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_on_another_users_file_needs_cap_lease() {
        let directory = tempfile::tempdir().unwrap();
        let theirs = directory.path().join("theirs");
        std::fs::write(&theirs, b"x").unwrap();
        std::os::unix::fs::chown(&theirs, Some(4321), None).unwrap();
        let lease = |path: &std::path::Path| crp_locks::FileLocks {
            locks: vec![crp_locks::FileLock {
                kind: crp_locks::LockKind::Lease,
                write: false,
                start: 0,
                end: None,
                fd: 5,
                path: path.display().to_string(),
            }],
        };
        let refusal = check_leases(&lease(&theirs), false).unwrap_err().to_string();
        assert!(refusal.contains("CAP_LEASE") && refusal.contains("fd 5"), "{refusal}");
        check_leases(&lease(&theirs), true).unwrap();
        let mine = directory.path().join("mine");
        std::fs::write(&mine, b"x").unwrap();
        check_leases(&lease(&mine), false).unwrap();
    }

    #[test]
    fn locked_memory_above_crps_memlock_limit_needs_cap_ipc_lock() {
        let vma = |flags: crp_compound::vma::VmaFlags| crp_compound::vma::VmaRecord {
            start: 0x1000,
            end: 0x3000,
            protection: 3,
            shared: false,
            flags: flags.bits(),
            backing: Backing::Anonymous { label: String::new() },
        };
        let vmas = [vma(crp_compound::vma::VmaFlags::LOCKED), vma(crp_compound::vma::VmaFlags::empty())];
        check_locked_memory(&vmas, false, 0x2000).unwrap();
        check_locked_memory(&vmas, true, 0).unwrap();
        let refusal = check_locked_memory(&vmas, false, 0x1fff).unwrap_err().to_string();
        assert!(refusal.contains("CAP_IPC_LOCK") && refusal.contains("RLIMIT_MEMLOCK"), "{refusal}");
    }
}
