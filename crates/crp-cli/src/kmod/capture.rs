//! Translating what `CRP_IOC_DUMP_TASK` reports into the image's model, so
//! an image written with the kmod back end is the same kind of image the
//! userspace back end writes.

use crp_arch_x86::{CpuState, RegisterFile, VdsoLayout, XsaveArea, host_xsave_features};
use crp_compound::Unsupported;
use crp_compound::creds::Credentials;
use crp_compound::mm::MmFields;
use crp_compound::rlimits::Limit;
use crp_compound::signals::{SignalAction, SignalState};
use crp_compound::timers::IntervalTimers;
use crp_compound::vma::{Backing, MappedFile, VmaFlags, VmaRecord};
use crp_kmod_abi::*;
use crp_locks::{LockState, RseqRegistration};

use crp_ptrace::procfs::Snapshot;

use super::device::TaskDump;
use crate::error::CrpError;

/// ABI VMA flag → the image's VMA flag.
const VMA_FLAGS: [(u64, VmaFlags); 8] = [
    (CRP_VMA_GROWSDOWN, VmaFlags::GROWS_DOWN),
    (CRP_VMA_HUGEPAGE, VmaFlags::HUGEPAGE),
    (CRP_VMA_NOHUGEPAGE, VmaFlags::NO_HUGEPAGE),
    (CRP_VMA_DONTFORK, VmaFlags::DONT_FORK),
    (CRP_VMA_WIPEONFORK, VmaFlags::WIPE_ON_FORK),
    (CRP_VMA_DONTDUMP, VmaFlags::DONT_DUMP),
    (CRP_VMA_MAYWRITE, VmaFlags::MAY_WRITE),
    (CRP_VMA_NORESERVE, VmaFlags::NO_RESERVE),
];

/// The image's [`VmaFlags`] bits as ABI `CRP_VMA_*` bits (for restore).
pub fn abi_vma_flags(vma: &VmaRecord) -> u64 {
    let mut flags = 0;
    for (bit, present) in [
        (CRP_VMA_READ, vma.protection & libc::PROT_READ.cast_unsigned() != 0),
        (CRP_VMA_WRITE, vma.protection & libc::PROT_WRITE.cast_unsigned() != 0),
        (CRP_VMA_EXEC, vma.protection & libc::PROT_EXEC.cast_unsigned() != 0),
        (CRP_VMA_SHARED, vma.shared),
    ] {
        if present {
            flags |= bit;
        }
    }
    for (bit, flag) in VMA_FLAGS {
        if vma.flags().contains(flag) {
            flags |= bit;
        }
    }
    flags
}

pub fn cpu_state(dump: &TaskDump) -> Result<CpuState, CrpError> {
    Ok(CpuState {
        registers: RegisterFile { values: dump.state.regs.to_vec() },
        xsave: XsaveArea::new(dump.xstate.clone(), host_xsave_features())?,
    })
}

pub fn vdso_layout(dump: &TaskDump) -> VdsoLayout {
    VdsoLayout::from_maps(
        dump.vmas
            .iter()
            .filter(|(vma, _)| vma.kind == CRP_VMA_SPECIAL)
            .map(|(vma, name)| (name.as_str(), vma.start, vma.end)),
    )
}

/// Every VMA but the special mappings, refusing what crp cannot restore.
pub fn vma_records(pid: i32, dump: &TaskDump) -> Result<Vec<VmaRecord>, CrpError> {
    let mm = &dump.state.mm;
    let mut records = Vec::with_capacity(dump.vmas.len());
    for (vma, name) in dump.vmas.iter().filter(|(vma, _)| vma.kind != CRP_VMA_SPECIAL) {
        let location = format!("[{:#x}, {:#x}) {name}", vma.start, vma.end);
        let refuse =
            |what: &str| CrpError::unsupported(pid, Unsupported { what: what.into(), location: location.clone() });
        if vma.flags & CRP_VMA_DEVICE != 0 {
            return Err(refuse("a device mapping"));
        }
        if vma.flags & CRP_VMA_LOCKED != 0 {
            return Err(refuse("mlock()ed memory"));
        }
        let shared = vma.flags & CRP_VMA_SHARED != 0;
        if shared && vma.kind == CRP_VMA_ANONYMOUS {
            return Err(refuse("shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, memfd or SysV shm)"));
        }
        let backing = if vma.kind == CRP_VMA_FILE {
            if name.ends_with(" (deleted)") {
                return Err(refuse("a mapping of a deleted file"));
            }
            Backing::File(MappedFile::identify(name, vma.file_offset)?)
        } else {
            // The labels /proc/PID/maps gives.
            let label = if vma.start <= mm.brk && vma.end >= mm.start_brk {
                "[heap]"
            } else if vma.start <= mm.start_stack && vma.end >= mm.start_stack {
                "[stack]"
            } else {
                ""
            };
            Backing::Anonymous { label: label.to_owned() }
        };
        let mut protection = 0u32;
        for (bit, prot) in
            [(CRP_VMA_READ, libc::PROT_READ), (CRP_VMA_WRITE, libc::PROT_WRITE), (CRP_VMA_EXEC, libc::PROT_EXEC)]
        {
            if vma.flags & bit != 0 {
                protection |= prot.cast_unsigned();
            }
        }
        let mut flags = VmaFlags::empty();
        for (bit, flag) in VMA_FLAGS {
            if vma.flags & bit != 0 {
                flags |= flag;
            }
        }
        records.push(VmaRecord { start: vma.start, end: vma.end, protection, shared, flags: flags.bits(), backing });
    }
    Ok(records)
}

pub fn mm_fields(proc: &Snapshot, dump: &TaskDump) -> Result<MmFields, CrpError> {
    let mm = &dump.state.mm;
    let auxv_words = usize::try_from(mm.auxv_words).unwrap_or(usize::MAX);
    let auxv = mm.auxv.get(..auxv_words).ok_or(super::KmodError::Malformed { what: "auxv length" })?;
    Ok(MmFields::from_bounds(mm.bounds(), auxv.to_vec(), crp_compound::mm::exe_path_of(proc)?))
}

pub fn signal_state(dump: &TaskDump) -> SignalState {
    let state = &dump.state;
    let actions = (1..=64i32)
        .zip(state.actions.iter())
        .filter(|(signal, _)| *signal != libc::SIGKILL && *signal != libc::SIGSTOP)
        .map(|(signal, action)| SignalAction {
            signal,
            handler: action.handler,
            flags: action.flags,
            restorer: action.restorer,
            mask: action.mask,
        })
        .collect();
    SignalState {
        actions,
        blocked: state.blocked,
        altstack_sp: state.altstack_sp,
        altstack_flags: state.altstack_flags.cast_signed(),
        altstack_size: state.altstack_size,
    }
}

pub fn lock_state(dump: &TaskDump) -> LockState {
    let state = &dump.state;
    LockState {
        robust_list_head: state.robust_list_head,
        robust_list_length: state.robust_list_length,
        rseq: (state.rseq_address != 0).then_some(RseqRegistration {
            address: state.rseq_address,
            length: state.rseq_length,
            signature: state.rseq_signature,
        }),
        clear_child_tid: state.clear_child_tid,
    }
}

pub fn credentials(proc: &Snapshot, dump: &TaskDump) -> Result<Credentials, CrpError> {
    Ok(Credentials {
        ids: crp_compound::creds::parse_status(&proc.status)?,
        keep_caps: dump.state.keep_caps != 0,
        dumpable: u64::from(dump.state.dumpable),
    })
}

pub fn rlimits(dump: &TaskDump) -> Vec<Limit> {
    (0u32..)
        .zip(dump.state.rlimits.iter())
        .map(|(resource, limit)| Limit { resource, soft: limit.soft, hard: limit.hard })
        .collect()
}

/// The three interval timers, as getitimer(2) would report them.
pub fn interval_timers(dump: &TaskDump) -> IntervalTimers {
    let state = &dump.state;
    IntervalTimers::from_nanoseconds([
        (state.itimer_real_value_ns, state.itimer_real_interval_ns),
        (state.itimer_virtual_value_ns, state.itimer_virtual_interval_ns),
        (state.itimer_prof_value_ns, state.itimer_prof_interval_ns),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump_with(vmas: Vec<(CrpVma, String)>) -> TaskDump {
        let mut state = CrpTaskState::default();
        state.mm.start_brk = 0x60_0000;
        state.mm.brk = 0x62_0000;
        state.mm.start_stack = 0x7ffe_0000_1000;
        TaskDump { state, vmas, xstate: Vec::new() }
    }

    fn anonymous(start: u64, end: u64, flags: u64) -> (CrpVma, String) {
        (CrpVma { start, end, flags, kind: CRP_VMA_ANONYMOUS, ..CrpVma::default() }, String::new())
    }

    #[test]
    fn anonymous_vmas_get_the_labels_proc_gives_and_flags_survive_both_ways() {
        let flags = CRP_VMA_READ | CRP_VMA_WRITE | CRP_VMA_MAYWRITE | CRP_VMA_DONTFORK | CRP_VMA_HUGEPAGE;
        let dump = dump_with(vec![
            anonymous(0x60_0000, 0x62_0000, flags),
            anonymous(0x7ffe_0000_0000, 0x7ffe_0000_2000, flags | CRP_VMA_GROWSDOWN),
            anonymous(0x7f00_0000_0000, 0x7f00_0000_1000, CRP_VMA_NORESERVE),
            (
                CrpVma { start: 0x7fff_f000_0000, end: 0x7fff_f000_2000, kind: CRP_VMA_SPECIAL, ..CrpVma::default() },
                "[vdso]".into(),
            ),
        ]);
        let records = vma_records(1, &dump).unwrap();
        assert_eq!(records.len(), 3, "the special mapping is not a VMA record");
        let labels: Vec<String> = records.iter().map(VmaRecord::describe_backing).collect();
        assert_eq!(labels, ["[heap]", "[stack]", "anonymous"]);
        assert_eq!(records[0].protection_string(), "rw-p");
        assert_eq!(abi_vma_flags(&records[0]), flags);
        assert_eq!(abi_vma_flags(&records[1]), flags | CRP_VMA_GROWSDOWN);
        assert_eq!(abi_vma_flags(&records[2]), CRP_VMA_NORESERVE);
        assert_eq!(vdso_layout(&dump).block(), Some((0x7fff_f000_0000, 0x7fff_f000_2000)));
    }

    #[test]
    fn what_crp_cannot_restore_is_refused_by_name() {
        for (flags, what) in [
            (CRP_VMA_READ | CRP_VMA_DEVICE, "device mapping"),
            (CRP_VMA_READ | CRP_VMA_LOCKED, "mlock"),
            (CRP_VMA_READ | CRP_VMA_SHARED, "shared anonymous"),
        ] {
            let error = vma_records(7, &dump_with(vec![anonymous(0x1000, 0x2000, flags)])).unwrap_err();
            assert!(error.to_string().contains(what), "{error}");
            assert_eq!(error.exit_code(), 3);
        }
    }

    #[test]
    fn signal_dispositions_skip_kill_and_stop_and_keep_numbers() {
        let mut dump = dump_with(Vec::new());
        dump.state.actions[1] = CrpSigaction { handler: 0x401000, flags: 4, restorer: 0x402000, mask: 2 };
        let signals = signal_state(&dump);
        assert_eq!(signals.actions.len(), 62);
        let sigint = signals.actions.iter().find(|action| action.signal == libc::SIGINT).unwrap();
        assert_eq!((sigint.handler, sigint.flags, sigint.restorer, sigint.mask), (0x401000, 4, 0x402000, 2));
        assert!(signals.actions.iter().all(|action| action.signal != libc::SIGKILL && action.signal != libc::SIGSTOP));
    }
}
