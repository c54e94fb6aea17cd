//! Attributes Linux keeps for the whole process (its mm or signal struct)
//! that no other kind covers: transparent huge pages disabled
//! (PR_SET_THP_DISABLE), membarrier registrations, oom_score_adj, the
//! child-subreaper flag, memory-deny-write-execute (PR_SET_MDWE), the
//! permission to use AMX tile data (ARCH_REQ_XCOMP_PERM), the core-dump
//! filter and the audit login uid. The getters are injected (each answers
//! only for the calling process), and so are the setters; oom_score_adj,
//! coredump_filter and loginuid are read from the /proc snapshot; crp
//! writes the first two into /proc/PID, the process its own loginuid (the
//! kernel lets only a process itself write it, with CAP_AUDIT_CONTROL).
//!
//! Refused at dump: KSM merging of the whole process (PR_SET_MEMORY_MERGE
//! needs CAP_SYS_RESOURCE), and, on a kernel without
//! MEMBARRIER_CMD_GET_REGISTRATIONS (before 6.3), any process at all: its
//! membarrier registrations cannot be read, and would be lost in silence.
//! At restore, an oom_score_adj lower than crp restore may set without
//! CAP_SYS_RESOURCE is refused before the child exists
//! ([`can_set_oom_score_adj`]).

use std::io::Write;

use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt};

use crate::error::{CompoundError, Unsupported};
use crate::valid::Invalid;

const PR_SET_CHILD_SUBREAPER: u64 = 36;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_SET_THP_DISABLE: u64 = 41;
const PR_GET_THP_DISABLE: u64 = 42;
const PR_SET_MDWE: u64 = 65;
const PR_GET_MDWE: u64 = 66;
const PR_GET_MEMORY_MERGE: u64 = 68;
/// `PR_MDWE_REFUSE_EXEC_GAIN | PR_MDWE_NO_INHERIT`.
const MDWE_FLAGS: u64 = 1 | 2;
/// PR_GET_THP_DISABLE: 1 disabled, `| PR_THP_DISABLE_EXCEPT_ADVISED` (6.18)
/// except where madvise asked for them.
const THP_DISABLE_EXCEPT_ADVISED: u64 = 1 << 1;

const MEMBARRIER_CMD_QUERY: u64 = 0;
const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;
/// The registration commands, as GET_REGISTRATIONS reports them.
const MEMBARRIER_REGISTRATIONS: [(u64, &str); 4] = [
    (1 << 2, "MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED"),
    (1 << 4, "MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED"),
    (1 << 6, "MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE"),
    (1 << 8, "MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ"),
];

const PR_FUTEX_HASH: u64 = 78;
const PR_FUTEX_HASH_SET_SLOTS: u64 = 1;
const PR_FUTEX_HASH_GET_SLOTS: u64 = 2;
const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
/// The XSAVE features a process must ask permission for (AMX tile data).
const XFEATURE_XTILEDATA: u64 = 18;
/// `/proc/PID/loginuid` of a process outside any login session.
pub const LOGIN_UID_UNSET: u32 = u32::MAX;
const LOGIN_UID_SELF: &str = "/proc/self/loginuid";

const OOM_SCORE_ADJ_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;
const OOM_SCORE_ADJ_SELF: &str = "/proc/self/oom_score_adj";

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProcessAttributes {
    /// PR_GET_THP_DISABLE: 0, 1, or 3 (disabled except where advised).
    pub thp_disable: u64,
    /// The membarrier registration commands the process ran (a mask of
    /// MEMBARRIER_CMD_REGISTER_*).
    pub membarrier_registrations: u64,
    /// /proc/PID/oom_score_adj, -1000..=1000.
    pub oom_score_adj: i32,
    /// PR_SET_CHILD_SUBREAPER.
    pub child_subreaper: bool,
    /// PR_GET_MDWE: PR_MDWE_REFUSE_EXEC_GAIN (1), PR_MDWE_NO_INHERIT (2).
    pub memory_deny_write_execute: u64,
    /// ARCH_GET_XCOMP_PERM: the XSAVE features the process may use; AMX
    /// tile data only once it asked.
    pub xsave_permissions: u64,
    /// /proc/PID/coredump_filter: which mappings a core dump holds.
    pub coredump_filter: u32,
    /// /proc/PID/loginuid ([`LOGIN_UID_UNSET`] outside a login session);
    /// `None` on a kernel without audit.
    pub login_uid: Option<u32>,
    /// PR_FUTEX_HASH_GET_SLOTS: the slots of its private futex hash set
    /// with PR_FUTEX_HASH_SET_SLOTS; 0 for the kernel's choice.
    pub futex_hash_slots: u64,
}

impl ProcessAttributes {
    fn capture_from(tracee: &mut dyn Tracee, from_proc: FromProc) -> Result<Self, CompoundError> {
        let mut scratch = tracee.scratch();
        let word = scratch.reserve(8);
        scratch.commit(tracee)?;
        let thp_disable =
            tracee.syscall("prctl(PR_GET_THP_DISABLE)", libc::SYS_prctl, [PR_GET_THP_DISABLE, 0, 0, 0, 0, 0])?;
        let membarrier_registrations = membarrier_registrations(tracee)?;
        let args = [PR_GET_CHILD_SUBREAPER, word, 0, 0, 0, 0];
        tracee.syscall("prctl(PR_GET_CHILD_SUBREAPER)", libc::SYS_prctl, args)?;
        let mut subreaper = [0u8; 4];
        tracee.read_memory(word, &mut subreaper)?;
        // Kernels before 6.3 know neither: nothing can be set there.
        let optional = |tracee: &mut dyn Tracee, option: u64| -> Result<u64, EngineError> {
            Ok(u64::try_from(tracee.raw_syscall(libc::SYS_prctl, [option, 0, 0, 0, 0, 0])?).unwrap_or(0))
        };
        let memory_deny_write_execute = optional(tracee, PR_GET_MDWE)?;
        if optional(tracee, PR_GET_MEMORY_MERGE)? != 0 {
            return Err(Unsupported {
                what: "KSM merging of the whole process (PR_SET_MEMORY_MERGE needs CAP_SYS_RESOURCE, which crp \
                       restore lacks)"
                    .into(),
                location: "PR_GET_MEMORY_MERGE 1".into(),
            }
            .into());
        }
        let args = [ARCH_GET_XCOMP_PERM, word, 0, 0, 0, 0];
        // Kernels before 5.16 (no dynamic XSAVE features) refuse the request: nothing to ask for.
        let xsave_permissions = if tracee.raw_syscall(libc::SYS_arch_prctl, args)? == 0 {
            let mut mask = [0u8; 8];
            tracee.read_memory(word, &mut mask)?;
            u64::from_le_bytes(mask)
        } else {
            0
        };
        // Kernels before 6.17 have no private futex hash (EINVAL).
        let args = [PR_FUTEX_HASH, PR_FUTEX_HASH_GET_SLOTS, 0, 0, 0, 0];
        let futex_hash_slots = u64::try_from(tracee.raw_syscall(libc::SYS_prctl, args)?).unwrap_or(0);
        Ok(Self {
            thp_disable,
            membarrier_registrations,
            oom_score_adj: from_proc.oom_score_adj,
            child_subreaper: u32::from_le_bytes(subreaper) != 0,
            memory_deny_write_execute,
            xsave_permissions,
            coredump_filter: from_proc.coredump_filter,
            login_uid: from_proc.login_uid,
            futex_hash_slots,
        })
    }

    /// It asked for AMX tile data (ARCH_REQ_XCOMP_PERM).
    pub fn amx_permitted(&self) -> bool {
        self.xsave_permissions & (1 << XFEATURE_XTILEDATA) != 0
    }

    /// The names of the membarrier registrations.
    pub fn membarrier_names(&self) -> Vec<&'static str> {
        MEMBARRIER_REGISTRATIONS
            .iter()
            .filter(|(bit, _)| self.membarrier_registrations & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    }

    /// Refuses what the restore would fail to set.
    pub fn check(&self) -> Result<(), Invalid> {
        if !matches!(self.thp_disable, 0 | 1 | 3) {
            return Err(Invalid::new("THP disable", format!("{:#x} is not 0, 1 or 3", self.thp_disable)));
        }
        let known = MEMBARRIER_REGISTRATIONS.iter().fold(0, |mask, (bit, _)| mask | bit);
        if self.membarrier_registrations & !known != 0 {
            let detail = format!("{:#x} holds commands that are no registration", self.membarrier_registrations);
            return Err(Invalid::new("membarrier registrations", detail));
        }
        if !OOM_SCORE_ADJ_RANGE.contains(&self.oom_score_adj) {
            return Err(Invalid::new("oom_score_adj", format!("{} is not in -1000..=1000", self.oom_score_adj)));
        }
        if let Some(uid) = self.login_uid
            && uid != LOGIN_UID_UNSET
            && i32::try_from(uid).is_err()
        {
            return Err(Invalid::new("login uid", format!("{uid} is not a uid")));
        }
        if self.futex_hash_slots == 1 || !(self.futex_hash_slots == 0 || self.futex_hash_slots.is_power_of_two()) {
            let detail = format!("{} is not a power of two the kernel takes", self.futex_hash_slots);
            return Err(Invalid::new("futex hash slots", detail));
        }
        if self.memory_deny_write_execute & !MDWE_FLAGS != 0 {
            let detail = format!("{:#x} holds unknown flags", self.memory_deny_write_execute);
            return Err(Invalid::new("memory-deny-write-execute", detail));
        }
        Ok(())
    }

    fn restore_into(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        let thp = if self.thp_disable & 1 != 0 { [1, self.thp_disable & THP_DISABLE_EXCEPT_ADVISED] } else { [0, 0] };
        let args = [PR_SET_THP_DISABLE, thp[0], thp[1], 0, 0, 0];
        tracee.syscall("prctl(PR_SET_THP_DISABLE)", libc::SYS_prctl, args)?;
        for (command, name) in MEMBARRIER_REGISTRATIONS {
            if self.membarrier_registrations & command != 0 {
                tracee.syscall(name, libc::SYS_membarrier, [command, 0, 0, 0, 0, 0])?;
            }
        }
        let args = [PR_SET_CHILD_SUBREAPER, u64::from(self.child_subreaper), 0, 0, 0, 0];
        tracee.syscall("prctl(PR_SET_CHILD_SUBREAPER)", libc::SYS_prctl, args)?;
        self.restore_oom_score_adj(tracee)?;
        tracee.write_proc_file("coredump_filter", format!("{:#x}\n", self.coredump_filter).as_bytes())?;
        if self.amx_permitted() {
            let args = [ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA, 0, 0, 0, 0];
            tracee.syscall("arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)", libc::SYS_arch_prctl, args)?;
        }
        self.restore_login_uid(tracee)?;
        if self.futex_hash_slots != 0 {
            let args = [PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS, self.futex_hash_slots, 0, 0, 0];
            tracee.syscall("prctl(PR_FUTEX_HASH_SET_SLOTS)", libc::SYS_prctl, args)?;
        }
        if self.memory_deny_write_execute != 0 {
            let args = [PR_SET_MDWE, self.memory_deny_write_execute, 0, 0, 0, 0];
            tracee.syscall("prctl(PR_SET_MDWE)", libc::SYS_prctl, args)?;
        }
        Ok(())
    }

    /// The process writes its own /proc/self/loginuid (no other process
    /// may), with crp's CAP_AUDIT_CONTROL, when it is not the one it
    /// inherited from crp ([`login_uid_settable`] checked crp may).
    fn restore_login_uid(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        let Some(uid) = self.login_uid else { return Ok(()) };
        if own_login_uid().ok().flatten() == Some(uid) {
            return Ok(());
        }
        let mut scratch = tracee.scratch();
        let path = scratch.push(format!("{LOGIN_UID_SELF}\0").as_bytes());
        let text = uid.to_string();
        let value = scratch.push(text.as_bytes());
        scratch.commit(tracee)?;
        let args = [crp_ptrace::arg(libc::AT_FDCWD), path, crp_ptrace::arg(libc::O_WRONLY | libc::O_CLOEXEC), 0, 0, 0];
        let fd = tracee.syscall("openat(/proc/self/loginuid)", libc::SYS_openat, args)?;
        let written = tracee.syscall("write(loginuid)", libc::SYS_write, [fd, value, text.len() as u64, 0, 0, 0]);
        tracee.syscall("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
        written.map(drop)
    }

    /// Written by crp into /proc/PID/oom_score_adj: the process may by then
    /// have another user's file-system ids, for which its root-owned /proc
    /// files are not writable. The kernel checks the value against the
    /// writer's CAP_SYS_RESOURCE and the process's lower bound, which it
    /// inherited from crp: what [`can_set_oom_score_adj`] checked.
    fn restore_oom_score_adj(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        tracee.write_proc_file("oom_score_adj", format!("{}\n", self.oom_score_adj).as_bytes())
    }
}

/// What the capture takes from the /proc snapshot.
struct FromProc {
    oom_score_adj: i32,
    coredump_filter: u32,
    login_uid: Option<u32>,
}

impl FromProc {
    fn parse(proc: &crp_ptrace::procfs::Snapshot) -> Result<Self, CompoundError> {
        let pid = proc.pid;
        let malformed = |name: &str, text: &str| CompoundError::Malformed {
            path: format!("/proc/{pid}/{name}").into(),
            reason: format!("not a number: {text:?}"),
        };
        let filter = proc.coredump_filter.trim_end_matches('\n');
        let login = proc.loginuid.trim_end_matches('\n');
        Ok(Self {
            oom_score_adj: parse_oom_score_adj(pid, &proc.oom_score_adj)?,
            coredump_filter: u32::from_str_radix(filter, 16).map_err(|_| malformed("coredump_filter", filter))?,
            login_uid: match login {
                "" => None,
                text => Some(text.parse().map_err(|_| malformed("loginuid", text))?),
            },
        })
    }
}

/// crp's own login uid, `None` on a kernel without audit.
pub fn own_login_uid() -> Result<Option<u32>, CompoundError> {
    match std::fs::read_to_string(LOGIN_UID_SELF) {
        Ok(text) => text.trim_end_matches('\n').parse().map(Some).map_err(|_| CompoundError::Malformed {
            path: LOGIN_UID_SELF.into(),
            reason: format!("not a number: {text:?}"),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(CompoundError::io("read", LOGIN_UID_SELF)(error)),
    }
}

/// Whether the restored process may be given login uid `uid`: it is the
/// one it inherits from crp, or crp has CAP_AUDIT_CONTROL to change it.
pub fn login_uid_settable(uid: Option<u32>) -> Result<bool, CompoundError> {
    const CAP_AUDIT_CONTROL: u32 = 30;
    let Some(uid) = uid else { return Ok(true) };
    if own_login_uid()?.is_none_or(|own| own == uid) {
        return Ok(true);
    }
    Ok(crate::creds::own_status().is_ok_and(|own| own.cap_effective & (1 << CAP_AUDIT_CONTROL) != 0))
}

/// MEMBARRIER_CMD_GET_REGISTRATIONS, injected; 0 when the kernel has no
/// membarrier at all. A kernel that has membarrier but not that command
/// cannot say what is registered: refused.
fn membarrier_registrations(tracee: &mut dyn Tracee) -> Result<u64, CompoundError> {
    let result = tracee.raw_syscall(libc::SYS_membarrier, [MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0, 0, 0, 0])?;
    if let Ok(mask) = u64::try_from(result) {
        return Ok(mask);
    }
    if tracee.raw_syscall(libc::SYS_membarrier, [MEMBARRIER_CMD_QUERY, 0, 0, 0, 0, 0])? < 0 {
        return Ok(0);
    }
    Err(Unsupported {
        what: "membarrier registrations on a kernel that cannot report them (MEMBARRIER_CMD_GET_REGISTRATIONS \
               needs Linux 6.3)"
            .into(),
        location: format!("membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS): errno {}", -result),
    }
    .into())
}

/// /proc/PID/oom_score_adj: one decimal number and a newline.
fn parse_oom_score_adj(pid: i32, text: &str) -> Result<i32, CompoundError> {
    text.trim_end_matches('\n').parse().map_err(|_| CompoundError::Malformed {
        path: format!("/proc/{pid}/oom_score_adj").into(),
        reason: format!("not a decimal number: {text:?}"),
    })
}

/// Whether a child crp forks now could set its oom_score_adj to `value`.
/// The child starts with crp's value and lower bound (oom_score_adj_min,
/// which only a CAP_SYS_RESOURCE writer moves); anything at or above crp's
/// own value is allowed. A lower one is tried on crp itself, and crp's own
/// value put back (raising is always allowed).
pub fn can_set_oom_score_adj(value: i32) -> Result<bool, CompoundError> {
    let own_text =
        std::fs::read_to_string(OOM_SCORE_ADJ_SELF).map_err(CompoundError::io("read", OOM_SCORE_ADJ_SELF))?;
    let own = parse_oom_score_adj(std::process::id().cast_signed(), &own_text)?;
    if value >= own {
        return Ok(true);
    }
    let write = |value: i32| {
        std::fs::OpenOptions::new().write(true).open(OOM_SCORE_ADJ_SELF)?.write_all(format!("{value}\n").as_bytes())
    };
    match write(value) {
        Ok(()) => {
            write(own).map_err(CompoundError::io("write back", OOM_SCORE_ADJ_SELF))?;
            Ok(true)
        }
        Err(error) if error.raw_os_error() == Some(libc::EACCES) => Ok(false),
        Err(error) => Err(CompoundError::io("write", OOM_SCORE_ADJ_SELF)(error)),
    }
}

/// crp's own oom_score_adj.
pub fn own_oom_score_adj() -> Result<i32, CompoundError> {
    let text = std::fs::read_to_string(OOM_SCORE_ADJ_SELF).map_err(CompoundError::io("read", OOM_SCORE_ADJ_SELF))?;
    parse_oom_score_adj(std::process::id().cast_signed(), &text)
}

impl Persist for ProcessAttributes {
    const KIND: &'static str =
        "process attributes (THP disable, membarrier, oom_score_adj, subreaper, MDWE, AMX, coredump_filter, loginuid)";
    type Error = CompoundError;

    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        let from_proc = FromProc::parse(context.proc)?;
        Self::capture_from(context.tracee, from_proc)
    }

    /// After the memory (PR_SET_MDWE refuses later executable mappings).
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        Ok(self.restore_into(context.tracee)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

    fn capture(process: &mut FakeTracee, oom_score_adj: &str) -> Result<ProcessAttributes, CompoundError> {
        let mut proc = crp_ptrace::fake::snapshot();
        proc.oom_score_adj = oom_score_adj.into();
        ProcessAttributes::capture(&mut Capture { tracee: process, proc: &proc, stopped_before_freeze: false })
    }

    #[test]
    fn attributes_are_read_by_injected_getters_and_oom_score_adj_from_proc() {
        let mut process = FakeTracee::answering(|call, memory| match (call.number, call.args[0]) {
            (libc::SYS_prctl, PR_GET_THP_DISABLE) => 3,
            (libc::SYS_prctl, PR_GET_CHILD_SUBREAPER) => {
                memory.write(call.args[1], &1u32.to_le_bytes());
                0
            }
            (libc::SYS_prctl, PR_GET_MDWE) => 1,
            (libc::SYS_prctl, PR_GET_MEMORY_MERGE) => -i64::from(libc::EINVAL),
            (libc::SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS) => 1 << 4,
            (libc::SYS_arch_prctl, ARCH_GET_XCOMP_PERM) => {
                memory.write(call.args[1], &0x6_02e7u64.to_le_bytes());
                0
            }
            _ => 0,
        });
        let attributes = capture(&mut process, "400\n").unwrap();
        assert_eq!(attributes.thp_disable, 3);
        assert_eq!(attributes.membarrier_names(), ["MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED"]);
        assert_eq!(attributes.oom_score_adj, 400);
        assert!(attributes.child_subreaper);
        assert_eq!(attributes.memory_deny_write_execute, 1);
        assert_eq!(attributes.xsave_permissions, 0x6_02e7);
        assert_eq!((attributes.coredump_filter, attributes.login_uid), (0x33, Some(LOGIN_UID_UNSET)));
        attributes.check().unwrap();
        assert!(capture(&mut FakeTracee::default(), "x\n").unwrap_err().to_string().contains("oom_score_adj"));
    }

    #[test]
    fn ksm_merging_and_unreadable_membarrier_registrations_are_refused() {
        let mut merging = FakeTracee::answering(|call, _| i64::from(call.args[0] == PR_GET_MEMORY_MERGE));
        let refusal = capture(&mut merging, "0\n").unwrap_err().to_string();
        assert!(refusal.contains("PR_SET_MEMORY_MERGE needs CAP_SYS_RESOURCE"), "{refusal}");

        let mut old_kernel = FakeTracee::answering(|call, _| {
            if call.number == libc::SYS_membarrier && call.args[0] == MEMBARRIER_CMD_GET_REGISTRATIONS {
                -i64::from(libc::EINVAL)
            } else {
                0
            }
        });
        let refusal = capture(&mut old_kernel, "0\n").unwrap_err().to_string();
        assert!(refusal.contains("MEMBARRIER_CMD_GET_REGISTRATIONS needs Linux 6.3"), "{refusal}");

        let mut no_membarrier =
            FakeTracee::answering(
                |call, _| if call.number == libc::SYS_membarrier { -i64::from(libc::ENOSYS) } else { 0 },
            );
        assert_eq!(capture(&mut no_membarrier, "0\n").unwrap().membarrier_registrations, 0);
    }

    #[test]
    fn attributes_are_set_by_injected_calls_and_oom_score_adj_from_crp() {
        let attributes = ProcessAttributes {
            thp_disable: 3,
            membarrier_registrations: (1 << 4) | (1 << 8),
            oom_score_adj: 400,
            child_subreaper: true,
            memory_deny_write_execute: 1,
            xsave_permissions: 0x6_02e7,
            coredump_filter: 0x7f,
            login_uid: own_login_uid().unwrap(),
            futex_hash_slots: 16,
        };
        let mut restored = FakeTracee::default();
        attributes.restore(&mut Restore::new(&mut restored)).unwrap();
        let thp = restored.calls.iter().find(|call| call.args[0] == PR_SET_THP_DISABLE).unwrap();
        assert_eq!(thp.args[1..3], [1, THP_DISABLE_EXCEPT_ADVISED]);
        let commands: Vec<u64> = restored.calls_of(libc::SYS_membarrier).iter().map(|call| call.args[0]).collect();
        assert_eq!(commands, [1 << 4, 1 << 8]);
        let subreaper = restored.calls.iter().find(|call| call.args[0] == PR_SET_CHILD_SUBREAPER).unwrap();
        assert_eq!(subreaper.args[1], 1);
        assert_eq!(
            restored.proc_writes,
            [("oom_score_adj".to_owned(), b"400\n".to_vec()), ("coredump_filter".to_owned(), b"0x7f\n".to_vec())]
        );
        assert!(restored.calls_of(libc::SYS_openat).is_empty(), "not opened by the process itself");
        let futex = restored.calls.iter().find(|call| call.args[0] == PR_FUTEX_HASH).unwrap();
        assert_eq!(futex.args[1..3], [PR_FUTEX_HASH_SET_SLOTS, 16]);
        let amx = restored.calls_of(libc::SYS_arch_prctl);
        assert_eq!(amx.iter().map(|call| call.args[..2].to_vec()).collect::<Vec<_>>(), [vec![0x1023, 18]]);
        let last = restored.calls.last().unwrap();
        assert_eq!(last.args[..2], [PR_SET_MDWE, 1], "MDWE last");
    }

    #[test]
    fn defaults_are_set_too_replacing_what_the_child_inherited() {
        let mut restored = FakeTracee::default();
        ProcessAttributes::default().restore(&mut Restore::new(&mut restored)).unwrap();
        let thp = restored.calls.iter().find(|call| call.args[0] == PR_SET_THP_DISABLE).unwrap();
        assert_eq!(thp.args[1..3], [0, 0]);
        assert!(restored.calls_of(libc::SYS_membarrier).is_empty());
        assert_eq!(
            restored.proc_writes,
            [("oom_score_adj".to_owned(), b"0\n".to_vec()), ("coredump_filter".to_owned(), b"0x0\n".to_vec())]
        );
        assert!(restored.calls.iter().all(|call| call.args[0] != PR_SET_MDWE), "MDWE cannot be unset, nor was set");
        assert!(restored.calls_of(libc::SYS_arch_prctl).is_empty(), "no AMX permission asked for");
    }

    #[test]
    fn values_the_kernel_would_refuse_are_invalid() {
        let refused = |attributes: ProcessAttributes| attributes.check().unwrap_err().to_string();
        assert!(refused(ProcessAttributes { thp_disable: 2, ..ProcessAttributes::default() }).contains("THP"));
        assert!(refused(ProcessAttributes { oom_score_adj: 1001, ..ProcessAttributes::default() }).contains("oom"));
        let membarrier = ProcessAttributes { membarrier_registrations: 1 << 3, ..ProcessAttributes::default() };
        assert!(refused(membarrier).contains("membarrier"));
        let mdwe = ProcessAttributes { memory_deny_write_execute: 4, ..ProcessAttributes::default() };
        assert!(refused(mdwe).contains("memory-deny"));
    }

    #[test]
    fn crp_may_always_set_its_own_oom_score_adj_or_higher() {
        let own = own_oom_score_adj().unwrap();
        assert!(can_set_oom_score_adj(own).unwrap());
        assert!(can_set_oom_score_adj(1000).unwrap());
        assert_eq!(own_oom_score_adj().unwrap(), own, "nothing changed");
    }
}
