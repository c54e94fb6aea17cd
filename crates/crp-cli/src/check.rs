//! `crp check`: does this kernel and CPU give crp what it needs? Each probe
//! exercises the real feature (no version guessing), like `criu check`, and
//! says which part of crp needs it. It checks the machine, not a process.

use std::io::IoSliceMut;

use crp_ptrace::spawn_stopped_child;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use serde::Serialize;

/// One line of the report.
#[derive(Debug)]
pub struct Probe {
    pub name: &'static str,
    /// crp cannot work without it (else only the feature named in
    /// `needed_for` is missing).
    pub required: bool,
    /// What of crp needs it, and for what.
    pub needed_for: &'static str,
    pub result: Result<String, String>,
}

/// The JSON form of one probe (`crp check --json` prints an array of them).
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    pub name: &'static str,
    pub required: bool,
    pub ok: bool,
    pub detail: String,
    pub needed_for: &'static str,
}

impl Probe {
    pub fn report(&self) -> ProbeReport {
        let (ok, detail) = match &self.result {
            Ok(detail) => (true, detail.clone()),
            Err(detail) => (false, detail.clone()),
        };
        ProbeReport { name: self.name, required: self.required, ok, detail, needed_for: self.needed_for }
    }

    /// "ok", "missing" (required and absent) or "absent" (optional).
    pub fn verdict(&self) -> &'static str {
        match (&self.result, self.required) {
            (Ok(_), _) => "ok",
            (Err(_), true) => "missing",
            (Err(_), false) => "absent",
        }
    }
}

/// Every required probe passed.
pub fn all_required_present(probes: &[Probe]) -> bool {
    probes.iter().all(|probe| probe.result.is_ok() || !probe.required)
}

/// The text report: per probe, its verdict, name and detail, then what
/// needs it on an indented line.
pub fn render_text(probes: &[Probe]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for probe in probes {
        let detail = match &probe.result {
            Ok(detail) | Err(detail) => detail,
        };
        let _ = writeln!(out, "{:<8} {:<30} {detail}", probe.verdict(), probe.name);
        let _ = writeln!(out, "{:<8} {:<30} needed for: {}", "", "", probe.needed_for);
    }
    out
}

/// A value in crp's own memory for the process_vm_readv probe to find in
/// a forked child.
static PROBE_PATTERN: [u8; 8] = *b"crp-chk!";

fn probe_ptrace_and_clone3() -> Vec<Probe> {
    let mut probes = Vec::new();
    let first = spawn_stopped_child(None, None);
    let traced = first.as_ref().map(|child| child.pid().as_raw()).map_err(|error| error.to_string());
    probes.push(Probe {
        name: "ptrace",
        required: true,
        needed_for: "dump and restore: crp freezes a process, reads it and rebuilds it through ptrace",
        result: traced.clone().map(|pid| format!("traced a forked child (pid {pid})")),
    });
    probes.push(Probe {
        name: "process_vm_readv",
        required: true,
        needed_for: "dump: copying the process's memory into the image",
        result: match &first {
            Ok(child) => {
                let mut found = [0u8; 8];
                let remote = [RemoteIoVec { base: PROBE_PATTERN.as_ptr() as usize, len: found.len() }];
                process_vm_readv(child.pid(), &mut [IoSliceMut::new(&mut found)], &remote)
                    .map_err(|errno| errno.to_string())
                    .and_then(|_| {
                        (found == PROBE_PATTERN)
                            .then(|| "read a child's memory".to_owned())
                            .ok_or_else(|| "read back the wrong bytes".to_owned())
                    })
            }
            Err(error) => Err(error.to_string()),
        },
    });
    probes.push(Probe {
        name: "PTRACE_GET_RSEQ_CONFIGURATION",
        required: true,
        needed_for: "dump: saving the rseq registration; restore: undoing the one crp's child inherits",
        result: match &first {
            Ok(child) => crp_ptrace::sys::get_rseq_configuration(child.pid())
                .map(|configuration| match configuration.rseq_abi_pointer {
                    0 => "available (the child has no rseq area)".to_owned(),
                    address => format!("available (the child's rseq area is at {address:#x})"),
                })
                .map_err(|errno| format!("{errno}: rseq registrations cannot be saved")),
            Err(error) => Err(error.to_string()),
        },
    });
    drop(first); // kills and reaps the child, freeing its pid
    probes.push(Probe {
        name: "clone3 set_tid",
        required: true,
        needed_for: "restore: giving the process its old PID",
        result: match traced {
            Ok(pid) => spawn_stopped_child(Some(pid), None)
                .map(|child| format!("created a child with chosen pid {}", child.pid()))
                .map_err(|error| format!("{error} (restore could not keep PIDs)")),
            Err(error) => Err(error),
        },
    });
    probes
}

pub fn run() -> Vec<Probe> {
    let mut probes = probe_ptrace_and_clone3();
    probes.push(Probe {
        name: "PR_SET_MM_MAP",
        required: true,
        needed_for: "restore: the memory-map fields (brk, stack, arguments, environment, auxv, exe link)",
        result: crp_ptrace::sys::prctl_mm_map_size()
            .map(|size| format!("struct prctl_mm_map is {size} bytes"))
            .map_err(|errno| format!("{errno}: kernel lacks CONFIG_CHECKPOINT_RESTORE")),
    });
    probes.push(Probe {
        name: "vDSO layout",
        required: true,
        needed_for: "restore: an image is restored only where the vDSO block is laid out as when it was dumped",
        result: crate::restore::validate::host_vdso().map_err(|error| error.to_string()).and_then(|layout| {
            if layout.mappings.iter().any(|mapping| mapping.name == "[vdso]") {
                Ok(layout
                    .mappings
                    .iter()
                    .map(|mapping| format!("{} {} KiB", mapping.name, (mapping.end - mapping.start) / 1024))
                    .collect::<Vec<_>>()
                    .join(", "))
            } else {
                Err("no [vdso] mapping".to_owned())
            }
        }),
    });
    probes.push(Probe {
        name: "unsealed system mappings",
        required: true,
        needed_for: "restore: the vDSO block is moved to where the image had it (a kernel built with \
                     CONFIG_MSEAL_SYSTEM_MAPPINGS seals it)",
        result: probe_system_mappings_unsealed(),
    });
    probes.push(Probe {
        name: "guard regions (PAGEMAP_SCAN)",
        required: false,
        needed_for: "dump of guard regions (MADV_GUARD_INSTALL, 6.15): without PAGEMAP_SCAN's guard category, a \
                     kernel has none to find",
        result: probe_guard_scan(),
    });
    probes.push(Probe {
        name: "/dev/crp (kmod back end)",
        required: false,
        needed_for: "--backend kmod only (dump and restore through the crp kernel module)",
        result: probe_kmod_device(),
    });
    let features = crp_arch_x86::host_xsave_features();
    probes.push(Probe {
        name: "XSAVE",
        required: true,
        needed_for: "dump and restore of the x87/SSE/AVX registers; an image needs every feature it was dumped with",
        result: if features & 0b11 == 0b11 {
            Ok(format!("XCR0 {features:#x} ({})", xsave_feature_names(features)))
        } else {
            Err(format!("XCR0 {features:#x}: no XSAVE with x87+SSE"))
        },
    });
    probes
}

fn xsave_feature_names(features: u64) -> String {
    const NAMES: &[(u32, &str)] = &[
        (0, "x87"),
        (1, "SSE"),
        (2, "AVX"),
        (3, "MPX bounds"),
        (4, "MPX csr"),
        (5, "AVX-512 opmask"),
        (6, "AVX-512 ZMM_Hi256"),
        (7, "AVX-512 Hi16_ZMM"),
        (9, "PKRU"),
        (17, "AMX tilecfg"),
        (18, "AMX tiledata"),
        (19, "APX"),
    ];
    NAMES.iter().filter(|(bit, _)| features & (1 << bit) != 0).map(|(_, name)| *name).collect::<Vec<_>>().join(", ")
}

/// Opens /dev/crp and makes one harmless ioctl: attaching to crp itself,
/// which a working module of the same ABI refuses with EINVAL (a caller
/// cannot dump itself); another ABI version answers EPROTO.
/// Whether crp's own special mappings (`[vdso]`, `[vvar]`...) are sealed
/// (smaps `sl`): then they cannot be moved, and no restore can place them.
fn probe_system_mappings_unsealed() -> Result<String, String> {
    let maps = crp_ptrace::procfs::smaps(std::process::id().cast_signed()).map_err(|error| error.to_string())?;
    let sealed = sealed_special_mappings(&maps);
    if sealed.is_empty() {
        Ok("[vdso] and [vvar] are not sealed".to_owned())
    } else {
        Err(format!("{} sealed: a kernel with CONFIG_MSEAL_SYSTEM_MAPPINGS cannot be restored into", sealed.join(", ")))
    }
}

/// The kernel's special mappings among `maps` that are sealed.
fn sealed_special_mappings(maps: &[crp_ptrace::procfs::MapsEntry]) -> Vec<&str> {
    maps.iter()
        .filter(|entry| crp_arch_x86::is_special_mapping(&entry.name) && entry.has_flag("sl"))
        .map(|entry| entry.name.as_str())
        .collect()
}

/// Whether PAGEMAP_SCAN finds a guard region crp installs in its own memory.
fn probe_guard_scan() -> Result<String, String> {
    const MADV_GUARD_INSTALL: i32 = 102;
    let pagemap = crp_compound::pagemap::PageMap::open(std::process::id().cast_signed()).map_err(|e| e.to_string())?;
    // SAFETY: a fresh private mapping of crp's own, unmapped below.
    let base = unsafe {
        libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: the second page of the mapping just made.
    let installed = unsafe { libc::madvise(base.cast::<u8>().add(4096).cast(), 4096, MADV_GUARD_INSTALL) };
    let start = base as u64;
    let found = pagemap.guard_regions(start, start + 8192);
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(base, 8192) };
    match (installed, found) {
        (0, Ok(regions)) if regions == [(start + 4096, start + 8192)] => Ok("found by PAGEMAP_SCAN".to_owned()),
        (0, Ok(regions)) => Err(format!("installed, but PAGEMAP_SCAN reports {regions:?}")),
        (0, Err(error)) => Err(error.to_string()),
        _ => Err(format!("MADV_GUARD_INSTALL: {} (kernel before 6.15)", std::io::Error::last_os_error())),
    }
}

fn probe_kmod_device() -> Result<String, String> {
    use crate::kmod::{DEVICE_PATH, Device, KmodError};
    let device = Device::open().map_err(|error| match error {
        KmodError::NotLoaded => format!("{DEVICE_PATH} not present: `--backend kmod` needs crp.ko loaded"),
        other => other.to_string(),
    })?;
    match device.attach(std::process::id().cast_signed()) {
        Err(KmodError::Ioctl { errno: nix::errno::Errno::EINVAL, .. }) => {
            Ok(format!("{DEVICE_PATH} answers, ABI version {}", crp_kmod_abi::CRP_ABI_VERSION))
        }
        Err(KmodError::Ioctl { errno: nix::errno::Errno::EPROTO, .. }) => Err(format!(
            "{DEVICE_PATH} speaks another ABI version than crp's {}: rebuild the module and crp together",
            crp_kmod_abi::CRP_ABI_VERSION
        )),
        Err(other) => Err(other.to_string()),
        Ok(()) => Err(format!("{DEVICE_PATH} let crp attach to itself: not the module crp expects")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_vdso_is_reported() {
        let entry = |name: &str, flags: &[&str]| crp_ptrace::procfs::MapsEntry {
            start: 0x1000,
            end: 0x2000,
            readable: true,
            writable: false,
            executable: true,
            shared: false,
            offset: 0,
            device: (0, 0),
            inode: 0,
            name: name.into(),
            vm_flags: flags.iter().map(|flag| (*flag).to_owned()).collect(),
            populated_kb: None,
        };
        let maps = [entry("[vdso]", &["rd", "ex", "sl"]), entry("[vvar]", &["rd"]), entry("", &["rd", "sl"])];
        assert_eq!(sealed_special_mappings(&maps), ["[vdso]"], "an ordinary sealed mapping is the process's");
    }
}
