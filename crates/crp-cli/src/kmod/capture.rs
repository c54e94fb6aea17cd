//! The kmod back end's dump side: the task's state from the kernel's own
//! structures through `/dev/crp`, translated into the image's model (so an
//! image written with the kmod back end is the same kind of image the
//! userspace back end writes); what lives outside the task (fd table, cwd,
//! comm, affinity, ids, which VMAs have pages) from /proc. Nothing is
//! injected.

use crp_arch_x86::{CpuState, RegisterFile, VdsoLayout, XsaveArea, host_xsave_features};
use crp_compound::creds::Credentials;
use crp_compound::mm::MmFields;
use crp_compound::rlimits::Limit;
use crp_compound::signals::{SignalAction, SignalState};
use crp_compound::task::TaskIdentity;
use crp_compound::timers::IntervalTimers;
use crp_compound::vma::{Mapping, VmaRecord};
use crp_kmod_abi::*;
use crp_locks::{LockState, RseqRegistration};
use crp_ptrace::Frozen;
use crp_ptrace::procfs::{self, Snapshot};
use nix::unistd::Pid;

use super::device::{Device, TaskDump};
use crate::backend::{Captured, DumpBackend, vma_record};
use crate::error::CrpError;
use crate::model::{ProcessImage, kernel_release};

/// The kmod back end's dump side: an open `/dev/crp`.
#[derive(Debug)]
pub struct Dump {
    device: Device,
}

impl Dump {
    pub fn open() -> Result<Self, CrpError> {
        Ok(Self { device: Device::open()? })
    }
}

impl DumpBackend for Dump {
    fn capture(&self, _frozen: &mut Frozen, proc: &Snapshot, stopped: bool) -> Result<Captured, CrpError> {
        let pid = proc.pid;
        let dump = self.device.dump_task(pid)?;
        self.device.attach(pid)?;
        let vmas = vma_records(pid, &dump)?;
        let mut task = TaskIdentity::from_proc(proc, stopped)?;
        task.personality = u64::from(dump.state.personality);
        let state = ProcessImage {
            pid,
            kernel_release: kernel_release(),
            dumped_at_unix_seconds: 0,
            cpu: cpu_state(&dump)?,
            vdso: vdso_layout(&dump),
            vmas,
            mm: MmFields::from_abi(&dump.state.mm, crp_compound::mm::exe_path_of(proc)?)?,
            files: crp_compound::files::capture(pid)?,
            signals: signal_state(&dump),
            task,
            credentials: credentials(proc, &dump)?,
            rlimits: rlimits(&dump).into(),
            timers: interval_timers(&dump),
            locks: lock_state(&dump),
        };
        // Which VMAs hold any page at all is in smaps (no exported walk
        // gives it); matching by range, a VMA smaps does not show is
        // walked in full.
        let maps = procfs::smaps(pid)?;
        let populated_kb = state
            .vmas
            .iter()
            .map(|vma| {
                maps.iter()
                    .find(|entry| entry.start == vma.start && entry.end == vma.end)
                    .and_then(|entry| entry.populated_kb)
            })
            .collect();
        Ok(Captured { populated_kb, state })
    }

    /// Through the device, attached to the task by [`DumpBackend::capture`].
    fn read_memory(&self, _pid: Pid, address: u64, buffer: &mut [u8]) -> std::io::Result<()> {
        self.device.read_memory(address, buffer)
    }
}

fn cpu_state(dump: &TaskDump) -> Result<CpuState, CrpError> {
    Ok(CpuState {
        registers: RegisterFile { values: dump.state.regs.to_vec() },
        xsave: XsaveArea::new(dump.xstate.clone(), host_xsave_features())?,
    })
}

fn vdso_layout(dump: &TaskDump) -> VdsoLayout {
    VdsoLayout::from_maps(
        dump.vmas
            .iter()
            .filter(|(vma, _)| vma.kind == CRP_VMA_SPECIAL)
            .map(|(vma, name)| (name.as_str(), vma.start, vma.end)),
    )
}

/// Every VMA but the special mappings, refusing what crp cannot restore.
fn vma_records(pid: i32, dump: &TaskDump) -> Result<Vec<VmaRecord>, CrpError> {
    dump.vmas
        .iter()
        .filter_map(|(vma, name)| Mapping::from_abi(vma, name))
        .map(|mapping| vma_record(pid, mapping))
        .collect()
}

fn signal_state(dump: &TaskDump) -> SignalState {
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

fn lock_state(dump: &TaskDump) -> LockState {
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

fn credentials(proc: &Snapshot, dump: &TaskDump) -> Result<Credentials, CrpError> {
    Ok(Credentials {
        ids: crp_compound::creds::parse_status(&proc.status)?,
        keep_caps: dump.state.keep_caps != 0,
        dumpable: u64::from(dump.state.dumpable),
    })
}

fn rlimits(dump: &TaskDump) -> Vec<Limit> {
    (0u32..)
        .zip(dump.state.rlimits.iter())
        .map(|(resource, limit)| Limit { resource, soft: limit.soft, hard: limit.hard })
        .collect()
}

/// The three interval timers, as getitimer(2) would report them.
fn interval_timers(dump: &TaskDump) -> IntervalTimers {
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
        let mut records = vma_records(1, &dump).unwrap();
        assert_eq!(records.len(), 3, "the special mapping is not a VMA record");
        let mm = MmFields::from_abi(&dump.state.mm, "/bin/x".into()).unwrap();
        crp_compound::vma::label_anonymous(&mut records, &mm);
        let labels: Vec<String> = records.iter().map(VmaRecord::describe_backing).collect();
        assert_eq!(labels, ["[heap]", "[stack]", "anonymous"]);
        assert_eq!(records[0].protection_string(), "rw-p");
        assert_eq!(records[0].abi_flags(), flags);
        assert_eq!(records[1].abi_flags(), flags | CRP_VMA_GROWSDOWN);
        assert_eq!(records[2].abi_flags(), CRP_VMA_NORESERVE);
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
