//! The kmod back end's dump side: the task's state from the kernel's own
//! structures through `/dev/crp`, translated into the image's model (so an
//! image written with the kmod back end is the same kind of image the
//! userspace back end writes); what lives outside the task (fd table, cwd,
//! ids, which VMAs have pages) from /proc. What the module does not report
//! either (the per-thread attributes: name, affinity, scheduling, timer
//! slack, I/O priority, parent-death signal; and THP disable, membarrier
//! registrations, oom_score_adj...) is read by the same injected getters
//! the userspace back end uses, the process parked meanwhile.

use crp_arch_x86::{CpuState, VdsoLayout};
use crp_compound::creds::Credentials;
use crp_compound::mm::MmFields;
use crp_compound::rlimits::ResourceLimits;
use crp_compound::signals::{SignalState, ThreadSignals};
use crp_compound::task::TaskIdentity;
use crp_compound::timers::IntervalTimers;
use crp_compound::vma::{Mapping, Memory, VmaRecord};
use crp_kmod_abi::*;
use crp_locks::LockState;
use crp_ptrace::procfs::Snapshot;
use crp_ptrace::{Capture, FrozenProcess, TraceeExt};
use nix::unistd::Pid;

use super::device::{Device, TaskDump};
use crate::assemble::{BackEndKinds, ThreadKinds, capture_injected, capture_thread, process_image};
use crate::backend::{Captured, DumpBackend, SCRATCH_BYTES, park, vma_record};
use crate::error::CrpError;

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
    fn capture(&self, frozen: &mut FrozenProcess, proc: &Snapshot, stopped: bool) -> Result<Captured, CrpError> {
        let pid = proc.pid;
        let maps = &proc.maps;
        if !frozen.threads().is_empty() {
            // Refused by `memory::preflight`; a thread made since is too.
            return Err(CrpError::unsupported(pid, crate::kmod::memory::more_threads(frozen.threads().len() + 1)));
        }
        let frozen = frozen.leader();
        let dump = self.device.dump_task(pid)?;
        tracing::info!(pid, "task record read from /dev/crp");
        // Which VMAs hold any page at all is in smaps (no exported walk
        // gives it); parking needs the mappings too.
        park(frozen, maps)?;
        let reported = ThreadKinds {
            cpu: CpuState::from_abi(&dump.state, dump.xstate.clone())?,
            signals: ThreadSignals::from_abi(&dump.state),
            locks: LockState::from_abi(&dump.state),
        };
        let (injected, leader, files) = frozen.with_temporary_scratch(SCRATCH_BYTES, |tracee| {
            // Held while its sockets are read, as by the userspace back end.
            let files = crate::socket_hold::while_held(tracee, || Ok(crp_compound::files::capture(pid)?))?;
            let context = &mut Capture { tracee, proc, stopped_before_freeze: stopped };
            Ok::<_, CrpError>((capture_injected(context)?, capture_thread(context, reported)?, files))
        })?;
        frozen.unpark()?;
        self.device.attach(pid)?;
        let vmas = vma_records(pid, &dump)?;
        // Matching by range, a VMA smaps does not show is walked in full.
        let populated_kb = vmas
            .iter()
            .map(|vma| {
                maps.iter()
                    .find(|entry| entry.start == vma.start && entry.end == vma.end)
                    .and_then(|entry| entry.populated_kb)
            })
            .collect();
        let mut task = TaskIdentity::from_proc(proc, stopped)?;
        task.personality = u64::from(dump.state.personality);
        let own = BackEndKinds {
            vdso: vdso_layout(&dump),
            // Shared memory is refused by `kmod_refusal` for this back end;
            // the guard regions are found by the dump.
            memory: Memory { vmas, ..Memory::default() },
            mm: MmFields::from_abi(&dump.state.mm, crp_compound::mm::exe_path_of(proc)?)?,
            files,
            signals: SignalState::from_abi(&dump.state),
            task,
            credentials: Credentials::from_abi(proc, &dump.state)?,
            rlimits: ResourceLimits::from_abi(&dump.state),
            timers: IntervalTimers::from_abi(&dump.state),
        };
        let state = process_image(pid, own, injected, vec![leader]);
        Ok(Captured { populated_kb, state })
    }

    /// Through the device, attached to the task by [`DumpBackend::capture`].
    fn read_memory(&self, _pid: Pid, address: u64, buffer: &mut [u8]) -> std::io::Result<()> {
        self.device.read_memory(address, buffer)
    }
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
    fn what_crp_cannot_restore_is_refused_naming_the_process() {
        // The rules themselves are crp_compound::vma's, tested there.
        let dump = dump_with(vec![anonymous(0x1000, 0x2000, CRP_VMA_READ | CRP_VMA_DEVICE)]);
        let error = vma_records(7, &dump).unwrap_err();
        assert!(error.to_string().starts_with("cannot dump pid 7: a device mapping"), "{error}");
        assert_eq!(error.exit_code(), 3);
    }
}
