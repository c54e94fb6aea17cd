//! Reading a frozen process from outside: /proc, ptrace, and the syscalls
//! only the process itself can make, injected while it is parked.

use crp_arch_x86::{CpuState, VdsoLayout};
use crp_compound::creds::Credentials;
use crp_compound::mm::MmFields;
use crp_compound::rlimits::ResourceLimits;
use crp_compound::signals::{SignalState, ThreadSignals};
use crp_compound::task::TaskIdentity;
use crp_compound::timers::IntervalTimers;
use crp_compound::vma::{DescriptorObjects, Memory};
use crp_locks::LockState;
use crp_ptrace::procfs;
use crp_ptrace::{Capture, Frozen, FrozenProcess, Persist, Tracee, TraceeExt};
use nix::unistd::Pid;

use crate::assemble::{
    BackEndKinds, ThreadKinds, capture_injected, capture_thread, check_shared_with_leader, process_image,
};
use crate::backend::{Captured, DumpBackend, SCRATCH_BYTES, lift_unsupported, park};
use crate::error::CrpError;
use crate::model::ThreadState;
use crate::socket_hold;

/// The userspace back end's dump side.
#[derive(Debug)]
pub struct Dump;

impl DumpBackend for Dump {
    fn capture(
        &self,
        process: &mut FrozenProcess,
        proc: &procfs::Snapshot,
        stopped: bool,
    ) -> Result<Captured, CrpError> {
        let pid = process.pid().as_raw();
        let maps = &proc.maps;
        let (frozen, threads) = process.split();
        // Read before parking: each thread exactly as the freeze left it.
        let cpu = CpuState::capture(&mut Capture { tracee: frozen, proc, stopped_before_freeze: stopped })?;
        let thread_procs =
            threads.iter().map(|thread| proc.of_thread(thread.pid().as_raw())).collect::<Result<Vec<_>, _>>()?;
        let thread_cpus = threads
            .iter_mut()
            .zip(&thread_procs)
            .map(|(thread, proc)| {
                CpuState::capture(&mut Capture { tracee: thread, proc, stopped_before_freeze: false })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let context = &mut Capture { tracee: frozen, proc, stopped_before_freeze: stopped };
        let vdso = VdsoLayout::capture(context)?;

        park(frozen, maps)?;
        let restorer = frozen.restorer();
        // The kinds read by injection, through their Persist impls, are
        // independent of each other: their order is free.
        let (own, injected, threads, populated_kb) = frozen.with_temporary_scratch(SCRATCH_BYTES, |tracee| {
            // The process is held while its sockets are read (a killed crp
            // lets it go only once they are put back).
            let files = socket_hold::while_held(tracee, || Ok(crp_compound::files::capture(pid)?))?;
            let context = &mut Capture { tracee, proc, stopped_before_freeze: stopped };
            // Read after the descriptors: a mapping of a memfd or deleted
            // file a descriptor holds is a mapping of that descriptor's
            // object. From the snapshot's memory map, taken before parking:
            // crp's own mappings are not in it.
            let (memory, populated_kb) = Memory::capture(context, DescriptorObjects(&files.objects))
                .map_err(|error| lift_unsupported(pid, error))?;
            let own = BackEndKinds {
                mm: MmFields::capture(context)?,
                signals: SignalState::capture(context)?,
                credentials: Credentials::capture(context)?,
                rlimits: ResourceLimits::capture(context)?,
                timers: IntervalTimers::capture(context)?,
                task: TaskIdentity::capture(context)?,
                vdso,
                memory,
                files,
            };
            let injected = capture_injected(context)?;
            let leader = thread_state(context, cpu)?;
            let scratch = context.tracee.scratch_area();
            let others = threads.iter_mut().zip(thread_cpus.into_iter().zip(&thread_procs)).zip(1..).map(
                |((thread, (cpu, proc)), number)| {
                    thread.share_restorer(restorer);
                    capture_other_thread(pid, (thread, number), cpu, proc, maps, scratch, &own)
                },
            );
            let threads = std::iter::once(Ok(leader)).chain(others).collect::<Result<Vec<_>, CrpError>>()?;
            Ok::<_, CrpError>((own, injected, threads, populated_kb))
        })?;
        frozen.unpark()?;
        tracing::debug!(pid, "unparked");
        let state = process_image(pid, own, injected, threads);
        Ok(Captured { state, populated_kb })
    }

    fn read_memory(&self, pid: Pid, address: u64, buffer: &mut [u8]) -> std::io::Result<()> {
        crp_ptrace::sys::read_memory(pid, address, buffer).map_err(std::io::Error::from)
    }
}

/// What Linux keeps for one parked thread: the kinds the kmod module would
/// report read by ptrace (`cpu`, before the thread was parked) and
/// injection, and the rest as both back ends read them.
fn thread_state(context: &mut Capture<'_>, cpu: CpuState) -> Result<ThreadState, CrpError> {
    let own = ThreadKinds { cpu, signals: ThreadSignals::capture(context)?, locks: LockState::capture(context)? };
    capture_thread(context, own)
}

/// The state of the `number`th thread other than the leader, read while
/// it is parked (with the leader's scratch mapping: they share the address
/// space), after checking that it shares the leader's credentials and
/// personality.
fn capture_other_thread(
    pid: i32,
    (thread, number): (&mut Frozen, u64),
    cpu: CpuState,
    proc: &procfs::Snapshot,
    maps: &[procfs::MapsEntry],
    (scratch, scratch_bytes): (u64, usize),
    leader: &BackEndKinds,
) -> Result<ThreadState, CrpError> {
    let tid = thread.pid().as_raw();
    park(thread, maps)?;
    // The leader is parked too, with the scratch mapping.
    crate::faults::reached("thread-parked", number);
    thread.set_scratch_area(scratch, scratch_bytes);
    let context = &mut Capture { tracee: thread, proc, stopped_before_freeze: false };
    check_shared_with_leader(pid, context, &leader.credentials, &leader.task)?;
    let state = thread_state(context, cpu)?;
    thread.unpark()?;
    tracing::debug!(pid, tid, "thread captured");
    Ok(state)
}
