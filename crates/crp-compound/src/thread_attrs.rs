//! What Linux keeps per thread beyond registers and signals: the name
//! (comm), CPU affinity, scheduling policy and priority, timer slack, I/O
//! priority, machine-check kill policy, the TSC mode, speculation controls
//! and the parent-death signal. All are read by injected syscalls in the
//! thread itself (each getter answers for the calling thread) and set the
//! same way.
//!
//! Refused at dump, because crp cannot set them back or they would be lost:
//! SCHED_DEADLINE (the restore runs its injected syscalls under the policy
//! it sets, and a deadline task's affinity cannot be changed), PR_SET_IO_FLUSHER
//! (needs CAP_SYS_RESOURCE), an enabled user shadow stack, securebits other
//! than keep-caps.
//!
//! The parent-death signal is its own kind ([`ParentDeathSignal`]): the
//! kernel clears it whenever the effective or file-system ids change
//! (`commit_creds`), so it is set after the credentials, not with the rest.

use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt, arg};
use nix::sched::{CpuSet, sched_getaffinity};
use nix::unistd::Pid;

use crate::error::{CompoundError, Unsupported};
use crate::valid::Invalid;

/// Longest comm accepted: `TASK_COMM_LEN` is 16 today (15 bytes and a NUL);
/// some room is left for kernels that widen it.
/// arch_prctl codes of cpuid faulting.
const ARCH_GET_CPUID: u64 = 0x1011;
const ARCH_SET_CPUID: u64 = 0x1012;
const MAX_COMM_BYTES: usize = 63;
/// The buffer PR_GET_NAME fills (`TASK_COMM_LEN`), with room to spare.
const NAME_BUFFER: usize = 64;
/// Bytes of the affinity mask asked for: 8192 CPUs, a multiple of a long.
const AFFINITY_BUFFER: usize = 1024;
/// `SCHED_ATTR_SIZE_VER1`: with the utilisation clamps.
const SCHED_ATTR_SIZE: usize = 56;
const SCHED_ATTR_SIZE_FIELD: u32 = 56;

const PR_SET_PDEATHSIG: u64 = 1;
const PR_GET_PDEATHSIG: u64 = 2;
const PR_SET_NAME: u64 = 15;
const PR_GET_NAME: u64 = 16;
const PR_GET_TSC: u64 = 25;
const PR_SET_TSC: u64 = 26;
const PR_GET_SECUREBITS: u64 = 27;
const PR_GET_TIMERSLACK: u64 = 30;
const PR_SET_TIMERSLACK: u64 = 29;
const PR_MCE_KILL: u64 = 33;
const PR_MCE_KILL_GET: u64 = 34;
const PR_MCE_KILL_CLEAR: u64 = 0;
const PR_MCE_KILL_SET: u64 = 1;
/// PR_MCE_KILL_GET of a thread that never chose: the system's policy.
pub const MCE_KILL_DEFAULT: u32 = 2;
const PR_GET_SPECULATION_CTRL: u64 = 52;
const PR_SET_SPECULATION_CTRL: u64 = 53;
/// The speculation controls PR_GET_SPECULATION_CTRL knows, by number.
const SPECULATION_CONTROLS: [&str; 3] = ["store bypass", "indirect branch", "L1D flush"];
/// The control can be changed by prctl (else the value is the system's).
pub const PR_SPEC_PRCTL: u64 = 1;
const PR_SPEC_MODES: u64 = 2 | 4 | 8 | 16;
/// `PR_TSC_ENABLE`: rdtsc allowed (every new process).
pub const TSC_ENABLE: u32 = 1;
const TSC_SIGSEGV: u32 = 2;
const ARCH_SHSTK_STATUS: u64 = 0x5005;
const SECBIT_KEEP_CAPS: u64 = 1 << 4;
/// `PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE`: what PR_SET_IO_FLUSHER sets.
const PF_IO_FLUSHER: u64 = 0x0008_0000 | 0x0010_0000;

const IOPRIO_WHO_PROCESS: u64 = 1;
const IOPRIO_CLASS_SHIFT: u32 = 13;
const IOPRIO_CLASS_RT: u32 = 1;
const IOPRIO_CLASS_BE: u32 = 2;
const IOPRIO_CLASS_IDLE: u32 = 3;

pub const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;
const SCHED_RR: u32 = 2;
const SCHED_BATCH: u32 = 3;
const SCHED_IDLE: u32 = 5;
const SCHED_DEADLINE: u32 = 6;
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;
const SCHED_FLAG_UTIL_CLAMP: u64 = 0x20 | 0x40;
/// `SCHED_CAPACITY_SCALE`: the utilisation clamps' range, and the maximum
/// clamp every task starts with.
const UTIL_SCALE: u32 = 1024;

/// The scheduling attributes of `sched_getattr` (the deadline parameters
/// are not kept: SCHED_DEADLINE is refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Scheduling {
    /// SCHED_OTHER 0, FIFO 1, RR 2, BATCH 3, IDLE 5.
    pub policy: u32,
    /// Only SCHED_FLAG_RESET_ON_FORK (0x01) is kept.
    pub reset_on_fork: bool,
    /// -20..=19 (SCHED_OTHER, BATCH).
    pub nice: i32,
    /// The real-time priority, 1..=99 (FIFO, RR), else 0.
    pub priority: u32,
    /// The utilisation clamps (0..=1024; 0 and 1024 unless set; both 0
    /// when the kernel has no CONFIG_UCLAMP_TASK).
    pub util_min: u32,
    pub util_max: u32,
}

impl Scheduling {
    pub fn policy_name(&self) -> String {
        match self.policy {
            SCHED_OTHER => "SCHED_OTHER".into(),
            SCHED_FIFO => "SCHED_FIFO".into(),
            SCHED_RR => "SCHED_RR".into(),
            SCHED_BATCH => "SCHED_BATCH".into(),
            SCHED_IDLE => "SCHED_IDLE".into(),
            SCHED_DEADLINE => "SCHED_DEADLINE".into(),
            other => format!("policy {other}"),
        }
    }

    fn is_real_time(&self) -> bool {
        matches!(self.policy, SCHED_FIFO | SCHED_RR)
    }

    fn has_clamps(&self) -> bool {
        (self.util_min, self.util_max) != (0, UTIL_SCALE) && (self.util_min, self.util_max) != (0, 0)
    }

    /// `struct sched_attr` for sched_setattr.
    fn to_attr(&self) -> [u8; SCHED_ATTR_SIZE] {
        let mut flags = if self.reset_on_fork { SCHED_FLAG_RESET_ON_FORK } else { 0 };
        if self.has_clamps() {
            flags |= SCHED_FLAG_UTIL_CLAMP;
        }
        let mut attr = [0u8; SCHED_ATTR_SIZE];
        attr[0..4].copy_from_slice(&SCHED_ATTR_SIZE_FIELD.to_le_bytes());
        attr[4..8].copy_from_slice(&self.policy.to_le_bytes());
        attr[8..16].copy_from_slice(&flags.to_le_bytes());
        attr[16..20].copy_from_slice(&self.nice.to_le_bytes());
        attr[20..24].copy_from_slice(&self.priority.to_le_bytes());
        attr[48..52].copy_from_slice(&self.util_min.to_le_bytes());
        attr[52..56].copy_from_slice(&self.util_max.to_le_bytes());
        attr
    }

    /// Reads a `struct sched_attr` as sched_getattr filled it, refusing
    /// SCHED_DEADLINE.
    fn from_attr(attr: &[u8; SCHED_ATTR_SIZE]) -> Result<Self, Unsupported> {
        let u32_at = |at: usize| u32::from_le_bytes([attr[at], attr[at + 1], attr[at + 2], attr[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        let policy = u32_at(4);
        if policy == SCHED_DEADLINE {
            let location = format!("runtime {} ns, deadline {} ns, period {} ns", u64_at(24), u64_at(32), u64_at(40));
            return Err(Unsupported {
                what: "SCHED_DEADLINE scheduling (crp cannot restore a deadline task: its affinity and the \
                       injected syscalls after it would not be allowed)"
                    .into(),
                location,
            });
        }
        Ok(Self {
            policy,
            reset_on_fork: u64_at(8) & SCHED_FLAG_RESET_ON_FORK != 0,
            nice: u32_at(16).cast_signed(),
            priority: u32_at(20),
            util_min: u32_at(48),
            util_max: u32_at(52),
        })
    }

    /// The I/O priority the kernel derives from this when the thread set
    /// none (`IOPRIO_CLASS_NONE`): what ioprio_get then reports.
    fn derived_io_priority(&self) -> u32 {
        let class = match self.policy {
            SCHED_IDLE => IOPRIO_CLASS_IDLE,
            SCHED_FIFO | SCHED_RR => IOPRIO_CLASS_RT,
            _ => IOPRIO_CLASS_BE,
        };
        // clamp: a hostile image's nice value must not overflow here.
        let level =
            if self.is_real_time() { 4 } else { u32::try_from((self.nice.clamp(-20, 19) + 20) / 5).unwrap_or(4) };
        (class << IOPRIO_CLASS_SHIFT) | level
    }

    fn check(&self) -> Result<(), Invalid> {
        let fits = match self.policy {
            SCHED_OTHER | SCHED_BATCH | SCHED_IDLE => (-20..=19).contains(&self.nice) && self.priority == 0,
            SCHED_FIFO | SCHED_RR => (1..=99).contains(&self.priority),
            _ => false,
        };
        if !fits {
            let detail = format!("{} with nice {} and priority {}", self.policy_name(), self.nice, self.priority);
            return Err(Invalid::new("scheduling", format!("{detail} is not one sched_setattr takes")));
        }
        if self.util_min > self.util_max || self.util_max > UTIL_SCALE {
            let detail = format!("{}..{} is not within 0..={UTIL_SCALE}", self.util_min, self.util_max);
            return Err(Invalid::new("utilisation clamps", detail));
        }
        Ok(())
    }
}

/// The signal the thread gets when its parent thread exits (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ParentDeathSignal(pub u32);

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ThreadAttributes {
    /// The thread's name (PR_GET_NAME).
    pub comm: String,
    /// CPUs the thread may run on.
    pub cpu_affinity: Vec<u32>,
    pub scheduling: Scheduling,
    /// PR_GET_TIMERSLACK, nanoseconds (0 for a real-time thread).
    pub timer_slack_ns: u64,
    /// ioprio_get(IOPRIO_WHO_PROCESS) of the thread: class << 13 | level.
    pub io_priority: u32,
    /// PR_MCE_KILL_GET: 0 late, 1 early, 2 the system's default.
    pub machine_check_kill: u32,
    /// PR_GET_TSC: 1 rdtsc allowed, 2 rdtsc raises SIGSEGV.
    pub tsc: u32,
    /// PR_GET_SPECULATION_CTRL of each control (store bypass, indirect
    /// branch, L1D flush); 0 when the CPU is not affected or the kernel
    /// does not know the control.
    pub speculation: Vec<u64>,
    /// ARCH_SET_CPUID 0: the cpuid instruction faults (SIGSEGV).
    pub cpuid_faulting: bool,
    pub parent_death_signal: ParentDeathSignal,
}

impl ThreadAttributes {
    fn capture_from(tracee: &mut dyn Tracee, task_flags: u64) -> Result<Self, CompoundError> {
        if task_flags & PF_IO_FLUSHER == PF_IO_FLUSHER {
            return Err(Unsupported {
                what: "an I/O flusher (PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE, which crp restore lacks)".into(),
                location: format!("task flags {task_flags:#x}"),
            }
            .into());
        }
        let mut scratch = tracee.scratch();
        let name = scratch.reserve(NAME_BUFFER);
        let mask = scratch.reserve(AFFINITY_BUFFER);
        let attr = scratch.reserve(SCHED_ATTR_SIZE);
        let word = scratch.reserve(8);
        let memory_policy = scratch.reserve(8);
        scratch.commit(tracee)?;

        let prctl = |tracee: &mut dyn Tracee, name: &'static str, args: [u64; 5]| {
            let [option, second, third, fourth, fifth] = args;
            tracee.syscall(name, libc::SYS_prctl, [option, second, third, fourth, fifth, 0])
        };
        prctl(tracee, "prctl(PR_GET_NAME)", [PR_GET_NAME, name, 0, 0, 0])?;
        let mut name_bytes = [0u8; NAME_BUFFER];
        tracee.read_memory(name, &mut name_bytes)?;
        let length = name_bytes.iter().position(|byte| *byte == 0).unwrap_or(NAME_BUFFER);
        let comm = String::from_utf8_lossy(&name_bytes[..length]).into_owned();

        let copied = tracee.syscall(
            "sched_getaffinity",
            libc::SYS_sched_getaffinity,
            [0, AFFINITY_BUFFER as u64, mask, 0, 0, 0],
        )?;
        let mut mask_bytes = vec![0u8; usize::try_from(copied).unwrap_or(0).min(AFFINITY_BUFFER)];
        tracee.read_memory(mask, &mut mask_bytes)?;
        let cpu_affinity = (0u32..)
            .zip(&mask_bytes)
            .flat_map(|(byte, bits)| (0..8).filter(move |bit| bits & (1 << bit) != 0).map(move |bit| byte * 8 + bit))
            .collect();

        tracee.syscall("sched_getattr", libc::SYS_sched_getattr, [0, attr, SCHED_ATTR_SIZE as u64, 0, 0, 0])?;
        let mut attr_bytes = [0u8; SCHED_ATTR_SIZE];
        tracee.read_memory(attr, &mut attr_bytes)?;
        let scheduling = Scheduling::from_attr(&attr_bytes)?;

        let timer_slack_ns = prctl(tracee, "prctl(PR_GET_TIMERSLACK)", [PR_GET_TIMERSLACK, 0, 0, 0, 0])?;
        // A kernel without a block layer (CONFIG_BLOCK) has no I/O priority.
        let io_priority =
            unless_missing(tracee, "ioprio_get", libc::SYS_ioprio_get, [IOPRIO_WHO_PROCESS, 0, 0, 0, 0, 0])?
                .unwrap_or(0);
        let machine_check_kill = prctl(tracee, "prctl(PR_MCE_KILL_GET)", [PR_MCE_KILL_GET, 0, 0, 0, 0])?;
        prctl(tracee, "prctl(PR_GET_TSC)", [PR_GET_TSC, word, 0, 0, 0])?;
        let tsc = read_u32(tracee, word)?;
        let speculation = (0..SPECULATION_CONTROLS.len() as u64)
            .map(|control| {
                // An unknown control (EINVAL, ENODEV) has nothing to restore.
                let result = tracee.raw_syscall(libc::SYS_prctl, [PR_GET_SPECULATION_CTRL, control, 0, 0, 0, 0])?;
                Ok(u64::try_from(result).unwrap_or(0))
            })
            .collect::<Result<Vec<u64>, EngineError>>()?;

        let securebits = prctl(tracee, "prctl(PR_GET_SECUREBITS)", [PR_GET_SECUREBITS, 0, 0, 0, 0])?;
        if securebits & !SECBIT_KEEP_CAPS != 0 {
            return Err(Unsupported {
                what: "securebits other than keep-caps (SECBIT_NOROOT, SECBIT_NO_SETUID_FIXUP... and their locks)"
                    .into(),
                location: format!("PR_GET_SECUREBITS {securebits:#x}"),
            }
            .into());
        }
        // A kernel without user shadow stacks refuses the call: none is on.
        if tracee.raw_syscall(libc::SYS_arch_prctl, [ARCH_SHSTK_STATUS, word, 0, 0, 0, 0])? == 0 {
            let mut features = [0u8; 8];
            tracee.read_memory(word, &mut features)?;
            let features = u64::from_le_bytes(features);
            if features != 0 {
                return Err(Unsupported {
                    what: "a user shadow stack (ARCH_SHSTK_ENABLE)".into(),
                    location: format!("ARCH_SHSTK_STATUS {features:#x}"),
                }
                .into());
            }
        }
        // The thread's NUMA memory policy (set_mempolicy): MPOL_DEFAULT (0)
        // unless it set one; a kernel without NUMA has nothing else.
        if tracee.raw_syscall(libc::SYS_get_mempolicy, [memory_policy, 0, 0, 0, 0, 0])? == 0 {
            let policy = read_u32(tracee, memory_policy)?;
            if policy != 0 {
                return Err(Unsupported {
                    what: "a NUMA memory policy (set_mempolicy)".into(),
                    location: format!("get_mempolicy mode {policy}"),
                }
                .into());
            }
        }
        // ARCH_GET_CPUID: 1 when cpuid runs, 0 when it faults.
        let cpuid_faulting = tracee.raw_syscall(libc::SYS_arch_prctl, [ARCH_GET_CPUID, 0, 0, 0, 0, 0])? == 0;
        Ok(Self {
            comm,
            cpu_affinity,
            scheduling,
            timer_slack_ns,
            io_priority: u32::try_from(io_priority).unwrap_or(0),
            machine_check_kill: u32::try_from(machine_check_kill).unwrap_or(MCE_KILL_DEFAULT),
            tsc,
            speculation,
            cpuid_faulting,
            parent_death_signal: ParentDeathSignal::capture_from(tracee)?,
        })
    }

    /// Whether the I/O priority is the one the kernel derives from the
    /// scheduling attributes, as for a thread that never set one: it is
    /// then left to follow them (IOPRIO_CLASS_NONE) rather than fixed.
    pub fn io_priority_follows_scheduling(&self) -> bool {
        self.io_priority == self.scheduling.derived_io_priority()
    }

    /// Refuses what the restore would set wrongly or not at all.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.comm.len() > MAX_COMM_BYTES || self.comm.contains('\0') {
            return Err(Invalid::new("comm", format!("{:.40?} is not a task name", self.comm)));
        }
        self.scheduling.check()?;
        let class = self.io_priority >> IOPRIO_CLASS_SHIFT;
        if class > IOPRIO_CLASS_IDLE || self.io_priority >= 1 << 16 {
            return Err(Invalid::new("I/O priority", format!("{:#x} is not a class and level", self.io_priority)));
        }
        if self.machine_check_kill > MCE_KILL_DEFAULT {
            return Err(Invalid::new(
                "machine-check kill policy",
                format!("{} is not 0, 1 or 2", self.machine_check_kill),
            ));
        }
        if !matches!(self.tsc, TSC_ENABLE | TSC_SIGSEGV) {
            return Err(Invalid::new("TSC mode", format!("{} is not PR_TSC_ENABLE or PR_TSC_SIGSEGV", self.tsc)));
        }
        if self.speculation.len() > SPECULATION_CONTROLS.len() {
            return Err(Invalid::new("speculation controls", format!("are {}, not at most 3", self.speculation.len())));
        }
        if let Some(value) = self.speculation.iter().find(|value| **value & !(PR_SPEC_PRCTL | PR_SPEC_MODES) != 0) {
            return Err(Invalid::new("speculation control", format!("{value:#x} is not a PR_SPEC_* value")));
        }
        self.parent_death_signal.check()
    }

    /// Sets the CPU affinity (an injected sched_setaffinity). CPUs crp may
    /// not use are dropped; when none is left the thread may run anywhere
    /// crp may.
    fn restore_affinity(&self, tracee: &mut dyn Tracee) -> Result<(), CompoundError> {
        let allowed = sched_getaffinity(Pid::from_raw(0)).map_err(|errno| CompoundError::Ptrace {
            operation: "sched_getaffinity",
            pid: std::process::id().cast_signed(),
            errno,
        })?;
        // is_set fails only for a CPU beyond CpuSet::count(): one crp may not use.
        let may_use = |cpu: usize| allowed.is_set(cpu).unwrap_or(false);
        let wanted: Vec<usize> = self
            .cpu_affinity
            .iter()
            // A CPU number this machine cannot even represent is one it lacks.
            .filter_map(|cpu| usize::try_from(*cpu).ok())
            .filter(|cpu| may_use(*cpu))
            .collect();
        let cpus: Vec<usize> =
            if wanted.is_empty() { (0..CpuSet::count()).filter(|cpu| may_use(*cpu)).collect() } else { wanted };
        let mut mask = vec![0u8; CpuSet::count().div_ceil(8)];
        for cpu in cpus {
            mask[cpu / 8] |= 1 << (cpu % 8);
        }
        let mut scratch = tracee.scratch();
        let address = scratch.push(&mask);
        scratch.commit(tracee)?;
        tracee.syscall("sched_setaffinity", libc::SYS_sched_setaffinity, [0, mask.len() as u64, address, 0, 0, 0])?;
        Ok(())
    }

    /// Sets every attribute but the parent-death signal. The timer slack
    /// goes before the policy (a real-time thread ignores PR_SET_TIMERSLACK),
    /// the I/O priority after it (it may be derived from it).
    fn restore_into(&self, tracee: &mut dyn Tracee) -> Result<(), CompoundError> {
        let mut scratch = tracee.scratch();
        let comm = scratch.push_c_string(self.comm.as_bytes());
        scratch.commit(tracee)?;
        tracee.syscall("prctl(PR_SET_NAME)", libc::SYS_prctl, [PR_SET_NAME, comm, 0, 0, 0, 0])?;
        self.restore_affinity(tracee)?;
        let slack = [PR_SET_TIMERSLACK, self.timer_slack_ns, 0, 0, 0, 0];
        tracee.syscall("prctl(PR_SET_TIMERSLACK)", libc::SYS_prctl, slack)?;
        // The scratch area is reused: laid out again for each call.
        let mut scratch = tracee.scratch();
        let attr = scratch.push(&self.scheduling.to_attr());
        scratch.commit(tracee)?;
        tracee.syscall("sched_setattr", libc::SYS_sched_setattr, [0, attr, 0, 0, 0, 0])?;
        let io_priority = if self.io_priority_follows_scheduling() { 0 } else { u64::from(self.io_priority) };
        let args = [IOPRIO_WHO_PROCESS, 0, io_priority, 0, 0, 0];
        // IOPRIO_CLASS_NONE needs nothing of a kernel without a block layer.
        if unless_missing(tracee, "ioprio_set", libc::SYS_ioprio_set, args)?.is_none() && io_priority != 0 {
            tracee.syscall("ioprio_set", libc::SYS_ioprio_set, args)?;
        }
        let machine_check = match self.machine_check_kill {
            MCE_KILL_DEFAULT => [PR_MCE_KILL, PR_MCE_KILL_CLEAR, 0, 0, 0, 0],
            policy => [PR_MCE_KILL, PR_MCE_KILL_SET, u64::from(policy), 0, 0, 0],
        };
        tracee.syscall("prctl(PR_MCE_KILL)", libc::SYS_prctl, machine_check)?;
        tracee.syscall("prctl(PR_SET_TSC)", libc::SYS_prctl, [PR_SET_TSC, u64::from(self.tsc), 0, 0, 0, 0])?;
        if self.cpuid_faulting {
            tracee.syscall("arch_prctl(ARCH_SET_CPUID, 0)", libc::SYS_arch_prctl, [ARCH_SET_CPUID, 0, 0, 0, 0, 0])?;
        }
        self.restore_speculation(tracee)
    }

    /// Refuses, before a restore child exists, a speculation control the
    /// child (which starts with crp's own) could not be given: one this
    /// system does not let a process change, or crp's is force-disabled.
    /// `own` is crp's PR_GET_SPECULATION_CTRL of a control (0 when unknown).
    pub fn check_speculation(&self, own: impl Fn(u64) -> u64) -> Result<(), Unsupported> {
        for ((control, name), wanted) in (0u64..).zip(SPECULATION_CONTROLS).zip(&self.speculation) {
            refuse_speculation(name, *wanted, own(control))?;
        }
        Ok(())
    }

    /// Each speculation control that differs from what the child inherited
    /// is set; one prctl cannot change (the system decides it) fails the
    /// restore naming it.
    fn restore_speculation(&self, tracee: &mut dyn Tracee) -> Result<(), CompoundError> {
        for ((control, name), wanted) in (0u64..).zip(SPECULATION_CONTROLS).zip(&self.speculation) {
            let now = tracee.raw_syscall(libc::SYS_prctl, [PR_GET_SPECULATION_CTRL, control, 0, 0, 0, 0])?;
            let now = u64::try_from(now).unwrap_or(0);
            if *wanted == 0 || now & PR_SPEC_MODES == wanted & PR_SPEC_MODES {
                continue;
            }
            refuse_speculation(name, *wanted, now)?;
            let args = [PR_SET_SPECULATION_CTRL, control, wanted & PR_SPEC_MODES, 0, 0, 0];
            tracee.syscall("prctl(PR_SET_SPECULATION_CTRL)", libc::SYS_prctl, args)?;
        }
        Ok(())
    }

    /// The name of each speculation control with its value.
    pub fn speculation_controls(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        SPECULATION_CONTROLS.iter().copied().zip(self.speculation.iter().copied())
    }
}

/// 0 (the CPU was not affected) or the same mode needs nothing; another
/// mode needs both sides to be prctl-controlled and the present one not
/// force-disabled.
fn refuse_speculation(name: &str, wanted: u64, now: u64) -> Result<(), Unsupported> {
    const FORCE_DISABLE: u64 = 8;
    if wanted == 0 || now & PR_SPEC_MODES == wanted & PR_SPEC_MODES {
        return Ok(());
    }
    if wanted & PR_SPEC_PRCTL == 0 || now & PR_SPEC_PRCTL == 0 || now & FORCE_DISABLE != 0 {
        return Err(Unsupported {
            what: format!("the {name} speculation control, which this system does not let crp give back"),
            location: format!("PR_GET_SPECULATION_CTRL {wanted:#x} in the image, {now:#x} here"),
        });
    }
    Ok(())
}

/// crp's own PR_GET_SPECULATION_CTRL of `control` (0 when unknown): what a
/// restore child starts with.
pub fn own_speculation(control: u64) -> u64 {
    // SAFETY: PR_GET_SPECULATION_CTRL reads a flag of the calling thread;
    // the unused arguments are 0 (as unsigned longs), as prctl(2) asks.
    let result = unsafe { libc::prctl(libc::PR_GET_SPECULATION_CTRL, control, 0u64, 0u64, 0u64) };
    u64::try_from(result).unwrap_or(0)
}

/// Runs a syscall like [`TraceeExt::syscall`], but answers `None` when the
/// kernel does not have it (ENOSYS).
fn unless_missing(
    tracee: &mut dyn Tracee,
    name: &'static str,
    number: i64,
    args: [u64; 6],
) -> Result<Option<u64>, EngineError> {
    let result = tracee.raw_syscall(number, args)?;
    if result == -i64::from(libc::ENOSYS) {
        return Ok(None);
    }
    if (-4095..0).contains(&result) {
        let used = args.iter().rposition(|value| *value != 0).map_or(0, |last| last + 1);
        return Err(EngineError::Syscall {
            syscall: name,
            args: args[..used].to_vec(),
            pid: tracee.pid(),
            errno: nix::errno::Errno::from_raw(i32::try_from(-result).unwrap_or(libc::EINVAL)),
        });
    }
    Ok(Some(result.cast_unsigned()))
}

fn read_u32(tracee: &mut dyn Tracee, address: u64) -> Result<u32, EngineError> {
    let mut bytes = [0u8; 4];
    tracee.read_memory(address, &mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

impl ParentDeathSignal {
    fn capture_from(tracee: &mut dyn Tracee) -> Result<Self, EngineError> {
        let mut scratch = tracee.scratch();
        let word = scratch.reserve(8);
        scratch.commit(tracee)?;
        tracee.syscall("prctl(PR_GET_PDEATHSIG)", libc::SYS_prctl, [PR_GET_PDEATHSIG, word, 0, 0, 0, 0])?;
        Ok(Self(read_u32(tracee, word)?))
    }

    pub fn check(&self) -> Result<(), Invalid> {
        if self.0 > 64 {
            return Err(Invalid::new("parent-death signal", format!("{} is not a signal", self.0)));
        }
        Ok(())
    }
}

impl Persist for ParentDeathSignal {
    const KIND: &'static str = "parent-death signal";
    type Error = EngineError;

    fn capture(context: &mut Capture<'_>) -> Result<Self, EngineError> {
        Self::capture_from(context.tracee)
    }

    /// Always set, 0 included: it replaces the death signal that tied the
    /// restore child to crp.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), EngineError> {
        let args = [PR_SET_PDEATHSIG, arg(self.0.cast_signed()), 0, 0, 0, 0];
        context.tracee.syscall("prctl(PR_SET_PDEATHSIG)", libc::SYS_prctl, args)?;
        Ok(())
    }
}

impl Persist for ThreadAttributes {
    const KIND: &'static str = "thread attributes (comm, affinity, scheduling, timer slack, I/O priority...)";
    type Error = CompoundError;

    /// By injected getters; the I/O-flusher flag from /proc/PID/stat (its
    /// getter needs CAP_SYS_RESOURCE).
    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        let task_flags = context.proc.stat.number::<u64>(9)?;
        Self::capture_from(context.tracee, task_flags)
    }

    /// With crp's privileges (a lower nice value, a real-time policy or I/O
    /// class need CAP_SYS_NICE): before the credentials. The parent-death
    /// signal is not set here (see [`ParentDeathSignal`]).
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        self.restore_into(context.tracee)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crp_ptrace::fake::{Call, FakeMemory, FakeTracee};

    fn batch_attr() -> [u8; SCHED_ATTR_SIZE] {
        Scheduling { policy: SCHED_BATCH, reset_on_fork: true, nice: 7, priority: 0, util_min: 0, util_max: UTIL_SCALE }
            .to_attr()
    }

    /// A thread named `worker` on CPU 1, SCHED_BATCH nice 7, slack 123456,
    /// I/O priority best-effort 6, early MCE kill, TSC enabled, store
    /// bypass disabled by prctl, pdeathsig SIGWINCH.
    fn answer(call: &Call, memory: &mut FakeMemory) -> i64 {
        let [option, second, ..] = call.args;
        match call.number {
            libc::SYS_prctl => match option {
                PR_GET_NAME => {
                    memory.write(second, b"worker\0");
                    0
                }
                PR_GET_TIMERSLACK => 123_456,
                PR_MCE_KILL_GET => 1,
                PR_GET_TSC => {
                    memory.write(second, &1u32.to_le_bytes());
                    0
                }
                PR_GET_SPECULATION_CTRL if second == 0 => 1 | 4,
                PR_GET_SPECULATION_CTRL => -i64::from(libc::ENODEV),
                PR_GET_PDEATHSIG => {
                    memory.write(second, &28u32.to_le_bytes());
                    0
                }
                _ => 0,
            },
            libc::SYS_sched_getaffinity => {
                memory.write(call.args[2], &[0b10, 0, 0, 0, 0, 0, 0, 0]);
                8
            }
            libc::SYS_sched_getattr => {
                memory.write(second, &batch_attr());
                0
            }
            libc::SYS_ioprio_get => (2 << 13) | 6,
            libc::SYS_arch_prctl => -i64::from(libc::EINVAL),
            _ => 0,
        }
    }

    fn capture(process: &mut FakeTracee) -> Result<ThreadAttributes, CompoundError> {
        let proc = crp_ptrace::fake::snapshot();
        ThreadAttributes::capture(&mut Capture { tracee: process, proc: &proc, stopped_before_freeze: false })
    }

    #[test]
    fn every_attribute_is_read_by_an_injected_getter() {
        let mut process = FakeTracee::answering(answer);
        let attributes = capture(&mut process).unwrap();
        assert_eq!(attributes.comm, "worker");
        assert_eq!(attributes.cpu_affinity, [1]);
        assert_eq!(attributes.scheduling.policy_name(), "SCHED_BATCH");
        assert_eq!((attributes.scheduling.nice, attributes.scheduling.reset_on_fork), (7, true));
        assert_eq!((attributes.timer_slack_ns, attributes.io_priority), (123_456, (2 << 13) | 6));
        assert_eq!((attributes.machine_check_kill, attributes.tsc), (1, TSC_ENABLE));
        assert_eq!(attributes.speculation, [5, 0, 0]);
        assert_eq!(attributes.parent_death_signal, ParentDeathSignal(28));
        assert!(!attributes.io_priority_follows_scheduling(), "nice 7 derives level 5, not 6");
        attributes.check().unwrap();
        assert_eq!(process.calls_of(libc::SYS_sched_getattr)[0].args[2], SCHED_ATTR_SIZE as u64);
    }

    #[test]
    fn a_deadline_task_an_io_flusher_and_securebits_are_refused_naming_them() {
        let mut deadline = FakeTracee::answering(|call, memory| {
            if call.number == libc::SYS_sched_getattr {
                let mut attr = [0u8; SCHED_ATTR_SIZE];
                attr[4..8].copy_from_slice(&SCHED_DEADLINE.to_le_bytes());
                attr[24..32].copy_from_slice(&10_000_000u64.to_le_bytes());
                memory.write(call.args[1], &attr);
            }
            0
        });
        let refusal = capture(&mut deadline).unwrap_err().to_string();
        assert!(refusal.contains("SCHED_DEADLINE") && refusal.contains("runtime 10000000 ns"), "{refusal}");

        let mut flusher = FakeTracee::default();
        let refusal = ThreadAttributes::capture_from(&mut flusher, 0x0018_0000).unwrap_err().to_string();
        assert!(refusal.contains("PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE"), "{refusal}");
        assert!(flusher.calls.is_empty(), "refused before anything is injected");

        let mut secure = FakeTracee::answering(|call, _| i64::from(call.args[0] == PR_GET_SECUREBITS) * 0x11);
        let refusal = capture(&mut secure).unwrap_err().to_string();
        assert!(refusal.contains("securebits") && refusal.contains("0x11"), "{refusal}");
    }

    #[test]
    fn cpuid_faulting_comes_back_and_a_numa_policy_is_refused() {
        let mut faulting = FakeTracee::answering(|call, memory| match (call.number, call.args[0]) {
            (libc::SYS_arch_prctl, ARCH_GET_CPUID) => 0,
            (libc::SYS_get_mempolicy, _) => -i64::from(libc::ENOSYS),
            _ => answer(call, memory),
        });
        let attributes = capture(&mut faulting).unwrap();
        assert!(attributes.cpuid_faulting);
        let attributes = ThreadAttributes { speculation: Vec::new(), ..attributes };
        let mut restored = FakeTracee::default();
        attributes.restore(&mut Restore::new(&mut restored)).unwrap();
        assert!(restored.calls_of(libc::SYS_arch_prctl).iter().any(|call| call.args[..2] == [ARCH_SET_CPUID, 0]));

        let mut bound = FakeTracee::answering(|call, memory| {
            if call.number == libc::SYS_get_mempolicy {
                memory.write(call.args[0], &2u32.to_le_bytes()); // MPOL_BIND
                return 0;
            }
            answer(call, memory)
        });
        let refusal = capture(&mut bound).unwrap_err().to_string();
        assert!(refusal.contains("NUMA memory policy") && refusal.contains("mode 2"), "{refusal}");
    }

    #[test]
    fn an_enabled_shadow_stack_is_refused() {
        let mut process = FakeTracee::answering(|call, memory| {
            if call.number == libc::SYS_arch_prctl {
                memory.write(call.args[1], &1u64.to_le_bytes());
            }
            0
        });
        let refusal = capture(&mut process).unwrap_err().to_string();
        assert!(refusal.contains("shadow stack"), "{refusal}");
    }

    #[test]
    fn attributes_are_set_by_injected_calls_in_order() {
        let mut process = FakeTracee::answering(answer);
        let attributes = capture(&mut process).unwrap();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let record = Rc::clone(&seen);
        let mut restored = FakeTracee::answering(move |call, memory| {
            match (call.number, call.args[0]) {
                (libc::SYS_prctl, PR_SET_NAME) => record.borrow_mut().push(memory.read(call.args[1], 7)),
                (libc::SYS_sched_setattr, _) => record.borrow_mut().push(memory.read(call.args[1], SCHED_ATTR_SIZE)),
                (libc::SYS_sched_setaffinity, _) => record.borrow_mut().push(memory.read(call.args[2], 1)),
                // The child inherited crp's: no store-bypass mitigation.
                (libc::SYS_prctl, PR_GET_SPECULATION_CTRL) if call.args[1] == 0 => return 1 | 2,
                (libc::SYS_prctl, PR_GET_SPECULATION_CTRL) => return -i64::from(libc::ENODEV),
                _ => {}
            }
            0
        });
        attributes.restore(&mut Restore::new(&mut restored)).unwrap();
        let numbers: Vec<(i64, u64)> = restored
            .calls
            .iter()
            .map(|call| (call.number, if call.number == libc::SYS_prctl { call.args[0] } else { 0 }))
            .collect();
        assert_eq!(
            numbers,
            [
                (libc::SYS_prctl, PR_SET_NAME),
                (libc::SYS_sched_setaffinity, 0),
                (libc::SYS_prctl, PR_SET_TIMERSLACK),
                (libc::SYS_sched_setattr, 0),
                (libc::SYS_ioprio_set, 0),
                (libc::SYS_prctl, PR_MCE_KILL),
                (libc::SYS_prctl, PR_SET_TSC),
                (libc::SYS_prctl, PR_GET_SPECULATION_CTRL),
                (libc::SYS_prctl, PR_SET_SPECULATION_CTRL),
                (libc::SYS_prctl, PR_GET_SPECULATION_CTRL),
                (libc::SYS_prctl, PR_GET_SPECULATION_CTRL),
            ],
            "the parent-death signal is not set here"
        );
        assert_eq!(seen.borrow()[0], b"worker\0");
        assert_eq!(seen.borrow()[2], batch_attr());
        assert_eq!(restored.calls_of(libc::SYS_prctl)[1].args[1], 123_456);
        assert_eq!(restored.calls_of(libc::SYS_ioprio_set)[0].args[2], (2 << 13) | 6);
        let mce = restored.calls.iter().find(|call| call.args[0] == PR_MCE_KILL).unwrap();
        assert_eq!(mce.args[1..3], [PR_MCE_KILL_SET, 1]);
        let speculation = restored.calls.iter().find(|call| call.args[0] == PR_SET_SPECULATION_CTRL).unwrap();
        assert_eq!(speculation.args[1..3], [0, 4], "store bypass: PR_SPEC_DISABLE");
        let own = sched_getaffinity(Pid::from_raw(0)).unwrap();
        if own.is_set(1).unwrap_or(false) {
            assert_eq!(seen.borrow()[1], [0b10], "CPU 1 only");
        }
    }

    #[test]
    fn an_io_priority_the_kernel_derived_is_left_to_follow_nice() {
        let attributes = ThreadAttributes {
            comm: "x".into(),
            scheduling: Scheduling { nice: 7, util_max: UTIL_SCALE, ..Scheduling::default() },
            io_priority: (2 << 13) | 5,
            machine_check_kill: MCE_KILL_DEFAULT,
            tsc: TSC_ENABLE,
            ..ThreadAttributes::default()
        };
        assert!(attributes.io_priority_follows_scheduling());
        let mut restored = FakeTracee::default();
        attributes.restore(&mut Restore::new(&mut restored)).unwrap();
        assert_eq!(restored.calls_of(libc::SYS_ioprio_set)[0].args[2], 0, "IOPRIO_CLASS_NONE");
        let machine_check = restored.calls.iter().find(|call| call.args[0] == PR_MCE_KILL).unwrap();
        assert_eq!(machine_check.args[1], PR_MCE_KILL_CLEAR);
    }

    #[test]
    fn a_kernel_without_a_block_layer_has_no_io_priority_to_keep() {
        let mut process = FakeTracee::answering(|call, memory| match call.number {
            libc::SYS_ioprio_get | libc::SYS_ioprio_set => -i64::from(libc::ENOSYS),
            _ => answer(call, memory),
        });
        let attributes = capture(&mut process).unwrap();
        assert_eq!(attributes.io_priority, 0);
        let attributes = ThreadAttributes { speculation: Vec::new(), ..attributes };
        let none = ThreadAttributes { io_priority: 0, ..attributes.clone() };
        let mut restored =
            FakeTracee::answering(
                |call, _| {
                    if call.number == libc::SYS_ioprio_set { -i64::from(libc::ENOSYS) } else { 0 }
                },
            );
        none.restore(&mut Restore::new(&mut restored)).unwrap();
        let explicit = ThreadAttributes { io_priority: (1 << 13) | 2, ..attributes };
        let error = explicit.restore(&mut Restore::new(&mut restored)).unwrap_err().to_string();
        assert!(error.contains("ioprio_set") && error.contains("ENOSYS"), "{error}");
    }

    #[test]
    fn a_speculation_control_the_system_fixes_fails_the_restore_when_it_differs() {
        let attributes = ThreadAttributes { tsc: TSC_ENABLE, speculation: vec![4], ..ThreadAttributes::default() };
        let mut restored = FakeTracee::answering(|call, _| if call.args[0] == PR_GET_SPECULATION_CTRL { 2 } else { 0 });
        let error = attributes.restore(&mut Restore::new(&mut restored)).unwrap_err().to_string();
        assert!(error.contains("store bypass speculation control"), "{error}");
        let refusal = attributes.check_speculation(|_| 2).unwrap_err().to_string();
        assert!(refusal.contains("0x4 in the image, 0x2 here"), "{refusal}");
        attributes.check_speculation(|_| 1 | 4).unwrap();
        let not_affected = ThreadAttributes { speculation: vec![0, 0, 0], ..attributes.clone() };
        not_affected.check_speculation(|_| 1 | 2).unwrap();
    }

    #[test]
    fn the_parent_death_signal_is_read_and_set_alone() {
        let mut process = FakeTracee::answering(answer);
        let proc = crp_ptrace::fake::snapshot();
        let signal = ParentDeathSignal::capture(&mut Capture {
            tracee: &mut process,
            proc: &proc,
            stopped_before_freeze: false,
        })
        .unwrap();
        assert_eq!(signal, ParentDeathSignal(28));
        let mut restored = FakeTracee::default();
        ParentDeathSignal(0).restore(&mut Restore::new(&mut restored)).unwrap();
        assert_eq!(restored.calls[0].args[..2], [PR_SET_PDEATHSIG, 0], "0 too: it replaces crp's SIGKILL");
        assert!(ParentDeathSignal(65).check().is_err());
    }

    #[test]
    fn values_sched_setattr_or_prctl_would_refuse_are_invalid() {
        let good = ThreadAttributes {
            comm: "ok".into(),
            scheduling: Scheduling { policy: SCHED_FIFO, priority: 50, util_max: UTIL_SCALE, ..Scheduling::default() },
            tsc: TSC_ENABLE,
            machine_check_kill: MCE_KILL_DEFAULT,
            ..ThreadAttributes::default()
        };
        good.check().unwrap();
        let refused = |change: fn(&mut ThreadAttributes)| {
            let mut bad = good.clone();
            change(&mut bad);
            bad.check().unwrap_err().to_string()
        };
        assert!(refused(|bad| bad.scheduling.priority = 0).contains("SCHED_FIFO"));
        assert!(refused(|bad| bad.scheduling.policy = SCHED_DEADLINE).contains("SCHED_DEADLINE"));
        assert!(refused(|bad| bad.scheduling.util_min = 2000).contains("clamps"));
        assert!(refused(|bad| bad.comm = "a\0b".into()).contains("comm"));
        assert!(refused(|bad| bad.io_priority = 7 << 13).contains("I/O priority"));
        assert!(refused(|bad| bad.tsc = 0).contains("TSC"));
        assert!(refused(|bad| bad.machine_check_kill = 3).contains("machine-check"));
        assert!(refused(|bad| bad.parent_death_signal = ParentDeathSignal(99)).contains("parent-death"));
    }
}
