//! What crp does with every attribute the kernel exposes of a process: its
//! /proc/PID entries, the fields of /proc/PID/status, the prctl(2) and
//! arch_prctl(2) options. Each is restored, checked at dump to hold the
//! value a restore gives anyway (and refused otherwise), always refused, not
//! state of its own (a statistic, a view of another entry, a getter), or a
//! known loss the README names. The audit test enumerates what the running
//! kernel has and fails on anything missing here, so that a new kernel's
//! attribute cannot slip through unnoticed; docs/attributes.md is rendered
//! from these tables.

/// What crp does with one attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Captured at dump and restored, by the kind named.
    Restored(&'static str),
    /// Checked at dump to hold its default (or crp's own) value, refused
    /// naming it otherwise.
    Checked(&'static str),
    /// Refused whenever it is set or present.
    Refused(&'static str),
    /// Not state of its own: a statistic, a view of another attribute, a
    /// getter, another architecture's option.
    NotState(&'static str),
    /// Not kept, and said so in the README.
    Lost(&'static str),
}

impl Handling {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Restored(_) => "restored",
            Self::Checked(_) => "checked default",
            Self::Refused(_) => "refused",
            Self::NotState(_) => "not state",
            Self::Lost(_) => "lost (documented)",
        }
    }

    pub fn detail(&self) -> &'static str {
        match self {
            Self::Restored(detail)
            | Self::Checked(detail)
            | Self::Refused(detail)
            | Self::NotState(detail)
            | Self::Lost(detail) => detail,
        }
    }
}

use Handling::{Checked, Lost, NotState, Refused, Restored};

const MEMORY: Handling = Restored("memory (VMAs and pages)");
const MEMORY_VIEW: Handling = NotState("a view of the memory, which is restored");
const MOUNTS: Handling = Checked("the mount namespace must be crp's (namespaces)");
const USER_NAMESPACE: Handling = Checked("the user namespace must be crp's (namespaces)");
const CGROUP: Handling = Lost("the restored process joins crp restore's cgroup");
const STATISTIC: Handling = NotState("a statistic of the kernel's");
const CREDENTIALS: Handling = Restored("credentials");
const THREAD_ATTRIBUTES: Handling = Restored("thread attributes");
const PROCESS_ATTRIBUTES: Handling = Restored("process attributes");
const OTHER_ARCHITECTURE: Handling = NotState("another architecture's option (EINVAL on x86-64)");
const GETTER: Handling = NotState("the getter of a setter listed here");

/// Every /proc/PID entry, by name.
pub const PROC_ENTRIES: &[(&str, Handling)] = &[
    ("arch_status", STATISTIC),
    ("attr", Checked("LSM contexts must be crp's, and none set for the next exec or file (defaults)")),
    ("autogroup", Checked("its nice value must be 0 (defaults)")),
    ("auxv", Restored("mm fields")),
    ("cgroup", CGROUP),
    ("clear_refs", NotState("write-only: clears the referenced and soft-dirty bits")),
    ("cmdline", Restored("memory and mm fields (the argument area)")),
    ("comm", THREAD_ATTRIBUTES),
    ("coredump_filter", PROCESS_ATTRIBUTES),
    ("cpu_resctrl_groups", CGROUP),
    ("cpuset", CGROUP),
    ("cwd", Restored("task identity")),
    ("environ", Restored("memory and mm fields (the environment area)")),
    ("exe", Restored("mm fields (the exe link)")),
    ("fail-nth", NotState("fault injection for kernel tests")),
    ("fd", Restored("descriptors")),
    ("fdinfo", Restored("descriptors (flags, offsets, kind-specific state) and file locks (lock: lines)")),
    ("gid_map", USER_NAMESPACE),
    ("io", STATISTIC),
    ("ksm_merging_pages", NotState("KSM counters; KSM merging of the process is refused (process attributes)")),
    ("ksm_stat", NotState("KSM counters; KSM merging of the process is refused (process attributes)")),
    ("latency", STATISTIC),
    ("limits", Restored("resource limits")),
    ("loginuid", PROCESS_ATTRIBUTES),
    ("make-it-fail", NotState("fault injection for kernel tests")),
    ("map_files", MEMORY_VIEW),
    ("maps", MEMORY),
    ("mem", MEMORY_VIEW),
    ("mountinfo", MOUNTS),
    ("mounts", MOUNTS),
    ("mountstats", MOUNTS),
    ("net", Checked("the network namespace must be crp's (namespaces)")),
    ("ns", Checked("every namespace must be crp's (namespaces)")),
    ("numa_maps", Checked("every mapping's NUMA policy must be the default (defaults)")),
    ("oom_adj", Restored("process attributes (the legacy view of oom_score_adj)")),
    ("oom_score", NotState("computed from the memory use and oom_score_adj")),
    ("oom_score_adj", PROCESS_ATTRIBUTES),
    ("pagemap", MEMORY_VIEW),
    ("patch_state", NotState("live-patching transition state of the kernel's")),
    ("personality", Restored("task identity")),
    ("projid_map", USER_NAMESPACE),
    ("root", Checked("the root directory must be crp's: no chroot (defaults)")),
    ("sched", Restored("thread attributes (policy, nice, priority); the rest are statistics")),
    ("schedstat", STATISTIC),
    ("sessionid", Lost("the audit session id: the kernel gives a new one with the login uid")),
    ("setgroups", USER_NAMESPACE),
    ("smaps", MEMORY),
    ("smaps_rollup", MEMORY_VIEW),
    ("stack", NotState("the kernel stack of a blocked task")),
    ("stat", NotState("its fields are those of status, sched and the memory")),
    ("statm", MEMORY_VIEW),
    ("status", NotState("its fields are audited one by one (STATUS_FIELDS)")),
    ("syscall", Restored("registers (the syscall it is blocked in is re-executed)")),
    ("task", Restored("threads: every thread at its own id, with its own state (userspace back end)")),
    ("timens_offsets", Checked("the time namespace must be crp's (namespaces)")),
    ("timers", Restored("POSIX timers (ids, clocks, notification, time left; not the overrun count)")),
    ("timerslack_ns", THREAD_ATTRIBUTES),
    ("uid_map", USER_NAMESPACE),
    ("wchan", NotState("where a blocked task sleeps in the kernel")),
];

/// Every field of /proc/PID/status, by name.
pub const STATUS_FIELDS: &[(&str, Handling)] = &[
    ("Name", THREAD_ATTRIBUTES),
    ("Umask", Restored("task identity")),
    ("State", Restored("a process stopped by a signal comes back stopped; any other runs on")),
    ("Tgid", Restored("the PID")),
    ("Ngid", NotState("its NUMA balancing group, chosen by the kernel")),
    ("Pid", Restored("the PID")),
    ("PPid", Lost("the parent is crp restore (the subreaper, once it detaches)")),
    ("TracerPid", Checked("a traced process is refused")),
    ("Uid", CREDENTIALS),
    ("Gid", CREDENTIALS),
    ("FDSize", NotState("the size of the descriptor table, grown as needed")),
    ("Groups", CREDENTIALS),
    ("NStgid", Restored("the PID (one PID namespace: crp's)")),
    ("NSpid", Restored("the PID (one PID namespace: crp's)")),
    (
        "NSpgid",
        Lost(
            "the process group: crp restore's job, or its own (the same id) when it led one, got its pid back and is not attached to crp restore's terminal (README: terminals, sessions)",
        ),
    ),
    (
        "NSsid",
        Lost(
            "the session: its own when it led one with its pid back or had a terminal crp restore cannot give it (the same id when it led it), else crp restore's (README: terminals, sessions)",
        ),
    ),
    ("Kthread", Refused("kernel threads")),
    ("VmPeak", STATISTIC),
    ("VmSize", MEMORY_VIEW),
    ("VmLck", Restored("memory (mlock and mlock2(MLOCK_ONFAULT) re-applied per mapping)")),
    ("VmPin", STATISTIC),
    ("VmHWM", STATISTIC),
    ("VmRSS", STATISTIC),
    ("RssAnon", STATISTIC),
    ("RssFile", STATISTIC),
    ("RssShmem", STATISTIC),
    ("VmData", MEMORY_VIEW),
    ("VmStk", MEMORY_VIEW),
    ("VmExe", MEMORY_VIEW),
    ("VmLib", MEMORY_VIEW),
    ("VmPTE", STATISTIC),
    ("VmSwap", STATISTIC),
    ("HugetlbPages", Refused("hugetlbfs mappings")),
    ("CoreDumping", NotState("a core dump in progress, which ends with the process")),
    ("THP_enabled", Restored("process attributes (PR_SET_THP_DISABLE)")),
    ("untag_mask", Checked("linear address masking must be off (defaults)")),
    ("Threads", Restored("threads (each one made again; the kmod back end refuses more than one)")),
    ("SigQ", NotState("the count of queued signals, against RLIMIT_SIGPENDING")),
    ("SigPnd", Restored("pending signals (the thread's queue, with each siginfo)")),
    ("ShdPnd", Restored("pending signals (the process-wide queue, with each siginfo)")),
    ("SigBlk", Restored("signals (the blocked mask)")),
    ("SigIgn", Restored("signals (dispositions)")),
    ("SigCgt", Restored("signals (dispositions)")),
    ("CapInh", CREDENTIALS),
    ("CapPrm", CREDENTIALS),
    ("CapEff", CREDENTIALS),
    ("CapBnd", CREDENTIALS),
    ("CapAmb", CREDENTIALS),
    ("NoNewPrivs", CREDENTIALS),
    ("Seccomp", Refused("a seccomp filter or strict mode")),
    ("Seccomp_filters", Refused("a seccomp filter or strict mode")),
    ("Speculation_Store_Bypass", THREAD_ATTRIBUTES),
    ("SpeculationIndirectBranch", THREAD_ATTRIBUTES),
    ("Cpus_allowed", THREAD_ATTRIBUTES),
    ("Cpus_allowed_list", THREAD_ATTRIBUTES),
    ("Mems_allowed", CGROUP),
    ("Mems_allowed_list", CGROUP),
    ("voluntary_ctxt_switches", STATISTIC),
    ("nonvoluntary_ctxt_switches", STATISTIC),
    ("x86_Thread_features", Refused("user shadow stacks (CET)")),
    ("x86_Thread_features_locked", Refused("user shadow stacks (CET)")),
];

/// Every prctl(2) option, by number.
pub const PRCTL_OPTIONS: &[(u64, &str, Handling)] = &[
    (1, "PR_SET_PDEATHSIG", Restored("the parent-death signal, after the credentials")),
    (2, "PR_GET_PDEATHSIG", GETTER),
    (3, "PR_GET_DUMPABLE", GETTER),
    (4, "PR_SET_DUMPABLE", CREDENTIALS),
    (5, "PR_GET_UNALIGN", OTHER_ARCHITECTURE),
    (6, "PR_SET_UNALIGN", OTHER_ARCHITECTURE),
    (7, "PR_GET_KEEPCAPS", GETTER),
    (8, "PR_SET_KEEPCAPS", CREDENTIALS),
    (9, "PR_GET_FPEMU", OTHER_ARCHITECTURE),
    (10, "PR_SET_FPEMU", OTHER_ARCHITECTURE),
    (11, "PR_GET_FPEXC", OTHER_ARCHITECTURE),
    (12, "PR_SET_FPEXC", OTHER_ARCHITECTURE),
    (13, "PR_GET_TIMING", GETTER),
    (14, "PR_SET_TIMING", NotState("only PR_TIMING_STATISTICAL exists")),
    (15, "PR_SET_NAME", THREAD_ATTRIBUTES),
    (16, "PR_GET_NAME", GETTER),
    (19, "PR_GET_ENDIAN", OTHER_ARCHITECTURE),
    (20, "PR_SET_ENDIAN", OTHER_ARCHITECTURE),
    (21, "PR_GET_SECCOMP", GETTER),
    (22, "PR_SET_SECCOMP", Refused("a seccomp filter or strict mode")),
    (23, "PR_CAPBSET_READ", GETTER),
    (24, "PR_CAPBSET_DROP", CREDENTIALS),
    (25, "PR_GET_TSC", GETTER),
    (26, "PR_SET_TSC", THREAD_ATTRIBUTES),
    (27, "PR_GET_SECUREBITS", GETTER),
    (28, "PR_SET_SECUREBITS", Restored("credentials (keep-caps); the other securebits are refused")),
    (29, "PR_SET_TIMERSLACK", THREAD_ATTRIBUTES),
    (30, "PR_GET_TIMERSLACK", GETTER),
    (31, "PR_TASK_PERF_EVENTS_DISABLE", NotState("acts on the process's perf events, whose descriptors are refused")),
    (32, "PR_TASK_PERF_EVENTS_ENABLE", NotState("acts on the process's perf events, whose descriptors are refused")),
    (33, "PR_MCE_KILL", THREAD_ATTRIBUTES),
    (34, "PR_MCE_KILL_GET", GETTER),
    (35, "PR_SET_MM", Restored("mm fields")),
    (36, "PR_SET_CHILD_SUBREAPER", PROCESS_ATTRIBUTES),
    (37, "PR_GET_CHILD_SUBREAPER", GETTER),
    (38, "PR_SET_NO_NEW_PRIVS", CREDENTIALS),
    (39, "PR_GET_NO_NEW_PRIVS", GETTER),
    (40, "PR_GET_TID_ADDRESS", Restored("locks (clear_child_tid)")),
    (41, "PR_SET_THP_DISABLE", PROCESS_ATTRIBUTES),
    (42, "PR_GET_THP_DISABLE", GETTER),
    (43, "PR_MPX_ENABLE_MANAGEMENT", NotState("removed from the kernel (EINVAL)")),
    (44, "PR_MPX_DISABLE_MANAGEMENT", NotState("removed from the kernel (EINVAL)")),
    (45, "PR_SET_FP_MODE", OTHER_ARCHITECTURE),
    (46, "PR_GET_FP_MODE", OTHER_ARCHITECTURE),
    (47, "PR_CAP_AMBIENT", CREDENTIALS),
    (50, "PR_SVE_SET_VL", OTHER_ARCHITECTURE),
    (51, "PR_SVE_GET_VL", OTHER_ARCHITECTURE),
    (52, "PR_GET_SPECULATION_CTRL", GETTER),
    (53, "PR_SET_SPECULATION_CTRL", THREAD_ATTRIBUTES),
    (54, "PR_PAC_RESET_KEYS", OTHER_ARCHITECTURE),
    (55, "PR_SET_TAGGED_ADDR_CTRL", OTHER_ARCHITECTURE),
    (56, "PR_GET_TAGGED_ADDR_CTRL", OTHER_ARCHITECTURE),
    (57, "PR_SET_IO_FLUSHER", Refused("an I/O flusher (needs CAP_SYS_RESOURCE)")),
    (58, "PR_GET_IO_FLUSHER", GETTER),
    (59, "PR_SET_SYSCALL_USER_DISPATCH", Refused("syscall user dispatch, seen once the process is frozen")),
    (60, "PR_PAC_SET_ENABLED_KEYS", OTHER_ARCHITECTURE),
    (61, "PR_PAC_GET_ENABLED_KEYS", OTHER_ARCHITECTURE),
    (62, "PR_SCHED_CORE", Checked("the core-scheduling cookie must be 0 (defaults)")),
    (63, "PR_SME_SET_VL", OTHER_ARCHITECTURE),
    (64, "PR_SME_GET_VL", OTHER_ARCHITECTURE),
    (65, "PR_SET_MDWE", PROCESS_ATTRIBUTES),
    (66, "PR_GET_MDWE", GETTER),
    (67, "PR_SET_MEMORY_MERGE", Refused("KSM merging of the whole process (needs CAP_SYS_RESOURCE)")),
    (68, "PR_GET_MEMORY_MERGE", GETTER),
    (69, "PR_RISCV_V_SET_CONTROL", OTHER_ARCHITECTURE),
    (70, "PR_RISCV_V_GET_CONTROL", OTHER_ARCHITECTURE),
    (71, "PR_RISCV_SET_ICACHE_FLUSH_CTX", OTHER_ARCHITECTURE),
    (72, "PR_PPC_GET_DEXCR", OTHER_ARCHITECTURE),
    (73, "PR_PPC_SET_DEXCR", OTHER_ARCHITECTURE),
    (74, "PR_GET_SHADOW_STACK_STATUS", OTHER_ARCHITECTURE),
    (75, "PR_SET_SHADOW_STACK_STATUS", OTHER_ARCHITECTURE),
    (76, "PR_LOCK_SHADOW_STACK_STATUS", OTHER_ARCHITECTURE),
    (77, "PR_TIMER_CREATE_RESTORE_IDS", NotState("a mode for restorers' own timer_create calls")),
    (78, "PR_FUTEX_HASH", PROCESS_ATTRIBUTES),
    (0x4155_5856, "PR_GET_AUXV", GETTER),
    (0x5356_4d41, "PR_SET_VMA", Checked("named anonymous mappings are refused")),
    (0x5961_6d61, "PR_SET_PTRACER", Lost("the Yama ptracer exception cannot be read")),
];

/// Every arch_prctl(2) code of x86-64, by number.
pub const ARCH_PRCTL_OPTIONS: &[(u64, &str, Handling)] = &[
    (0x1001, "ARCH_SET_GS", Restored("registers (gs base)")),
    (0x1002, "ARCH_SET_FS", Restored("registers (fs base)")),
    (0x1003, "ARCH_GET_FS", GETTER),
    (0x1004, "ARCH_GET_GS", GETTER),
    (0x1011, "ARCH_GET_CPUID", GETTER),
    (0x1012, "ARCH_SET_CPUID", THREAD_ATTRIBUTES),
    (0x1021, "ARCH_GET_XCOMP_SUPP", NotState("what the CPU and kernel support")),
    (0x1022, "ARCH_GET_XCOMP_PERM", GETTER),
    (0x1023, "ARCH_REQ_XCOMP_PERM", PROCESS_ATTRIBUTES),
    (0x1024, "ARCH_GET_XCOMP_GUEST_PERM", GETTER),
    (0x1025, "ARCH_REQ_XCOMP_GUEST_PERM", NotState("for KVM guests, whose /dev/kvm descriptors are refused")),
    (0x2001, "ARCH_MAP_VDSO_X32", Restored("the vDSO placement")),
    (0x2002, "ARCH_MAP_VDSO_32", Restored("the vDSO placement")),
    (0x2003, "ARCH_MAP_VDSO_64", Restored("the vDSO placement")),
    (0x4001, "ARCH_GET_UNTAG_MASK", GETTER),
    (0x4002, "ARCH_ENABLE_TAGGED_ADDR", Checked("linear address masking must be off (defaults)")),
    (0x4003, "ARCH_GET_MAX_TAG_BITS", GETTER),
    (0x4004, "ARCH_FORCE_TAGGED_SVA", Checked("linear address masking must be off (defaults)")),
    (0x5001, "ARCH_SHSTK_ENABLE", Refused("user shadow stacks (CET)")),
    (0x5002, "ARCH_SHSTK_DISABLE", Refused("user shadow stacks (CET)")),
    (0x5003, "ARCH_SHSTK_LOCK", Refused("user shadow stacks (CET)")),
    (0x5004, "ARCH_SHSTK_UNLOCK", Refused("user shadow stacks (CET)")),
    (0x5005, "ARCH_SHSTK_STATUS", GETTER),
];

/// docs/attributes.md: every table as a list.
pub fn render() -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "# What crp does with each process attribute\n\n\
         Rendered from `crates/crp-compound/src/audit.rs` (the audit test fails when the running kernel \
         has an attribute it does not list, or this file is stale: regenerate it with \
         `CRP_REGENERATE_ATTRIBUTES=1 cargo test -p crp-compound --test attribute_audit`).\n",
    );
    let mut section = |title: &str, rows: Vec<(String, Handling)>| {
        let _ = write!(out, "\n## {title}\n\n| attribute | handling | how |\n|---|---|---|\n");
        for (name, handling) in rows {
            let _ = writeln!(out, "| `{name}` | {} | {} |", handling.label(), handling.detail());
        }
    };
    section("/proc/PID entries", PROC_ENTRIES.iter().map(|(name, handling)| ((*name).to_owned(), *handling)).collect());
    section(
        "/proc/PID/status fields",
        STATUS_FIELDS.iter().map(|(name, handling)| ((*name).to_owned(), *handling)).collect(),
    );
    let options = |table: &[(u64, &str, Handling)]| {
        table.iter().map(|(number, name, handling)| (format!("{name} ({number:#x})"), *handling)).collect()
    };
    section("prctl options", options(PRCTL_OPTIONS));
    section("arch_prctl codes", options(ARCH_PRCTL_OPTIONS));
    out
}
