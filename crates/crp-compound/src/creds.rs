//! Credentials: user and group ids, supplementary groups, capability sets,
//! keep-caps, dumpable and no_new_privs. A restored process must run as the
//! user it was, not as the root `crp restore` runs as.
//!
//! Order matters at restore: the bounding set is trimmed and the groups set
//! while the process still has crp's privileges; ids change next (with
//! keep-caps, so capabilities can then be set exactly); dumpable and
//! no_new_privs come last.

use crp_ptrace::procfs::{Fields, ProcError};
use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt, arg};

use crate::error::CompoundError;
use crate::valid::Invalid;

/// `NGROUPS_MAX`.
const NGROUPS_MAX: usize = 65536;

const PR_GET_KEEPCAPS: u64 = 7;
const PR_SET_KEEPCAPS: u64 = 8;
const PR_GET_DUMPABLE: u64 = 3;
const PR_SET_DUMPABLE: u64 = 4;
const PR_SET_NO_NEW_PRIVS: u64 = 38;
const PR_CAPBSET_DROP: u64 = 24;
const PR_CAP_AMBIENT: u64 = 47;
const PR_CAP_AMBIENT_RAISE: u64 = 2;
const PR_CAP_AMBIENT_CLEAR_ALL: u64 = 4;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Capability numbers the kernel knows today (0..=40) fit in the 64-bit sets.
const CAPABILITY_BITS: u32 = 64;

/// The capabilities Linux knows today, by number (capability(7)).
const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Every capability [`capability_names`] knows by name.
pub fn known_capability_set() -> u64 {
    (1u64 << CAPABILITY_NAMES.len()) - 1
}

/// The name of each capability in `set`, lowest first; one this table
/// does not know is `CAP_<number>`.
pub fn capability_names(set: u64) -> Vec<String> {
    (0..CAPABILITY_BITS)
        .filter(|bit| set & (1u64 << bit) != 0)
        .map(|bit| match CAPABILITY_NAMES.get(bit as usize) {
            Some(name) => (*name).to_owned(),
            None => format!("CAP_{bit}"),
        })
        .collect()
}

/// Ids and capability sets, as /proc/PID/status shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct IdsAndCapabilities {
    /// Real, effective, saved and filesystem user id.
    pub uids: [u32; 4],
    /// Real, effective, saved and filesystem group id.
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inheritable: u64,
    pub cap_permitted: u64,
    pub cap_effective: u64,
    pub cap_bounding: u64,
    pub cap_ambient: u64,
    pub no_new_privs: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Credentials {
    pub ids: IdsAndCapabilities,
    pub keep_caps: bool,
    pub dumpable: u64,
}

/// The credential fields of a /proc/PID/status text; each must be there
/// and parse.
pub fn parse_status(status: &Fields) -> Result<IdsAndCapabilities, ProcError> {
    let ids = |key: &str| -> Result<[u32; 4], ProcError> {
        let value = status.field(key)?;
        let values: Vec<u32> = status.decimals(key)?;
        values.try_into().map_err(|_| status.malformed(key, value, "not four ids"))
    };
    let no_new_privs = match status.field("NoNewPrivs")? {
        "0" => false,
        "1" => true,
        other => return Err(status.malformed("NoNewPrivs", other, "neither 0 nor 1")),
    };
    Ok(IdsAndCapabilities {
        uids: ids("Uid")?,
        gids: ids("Gid")?,
        groups: status.decimals("Groups")?,
        cap_inheritable: status.hex("CapInh")?,
        cap_permitted: status.hex("CapPrm")?,
        cap_effective: status.hex("CapEff")?,
        cap_bounding: status.hex("CapBnd")?,
        cap_ambient: status.hex("CapAmb")?,
        no_new_privs,
    })
}

/// Ids and capability sets of `pid`, from /proc/PID/status.
pub fn read_status(pid: i32) -> Result<IdsAndCapabilities, CompoundError> {
    Ok(parse_status(&Fields::status(pid)?)?)
}

/// The restorer's own credentials, to check an image needs nothing more.
pub fn own_status() -> Result<IdsAndCapabilities, CompoundError> {
    read_status(std::process::id().cast_signed())
}

impl Credentials {
    /// Reads ids and capability sets from /proc, keep-caps and dumpable by
    /// injected prctl.
    fn capture_from(tracee: &mut dyn Tracee, proc: &crp_ptrace::procfs::Snapshot) -> Result<Self, CompoundError> {
        let ids = parse_status(&proc.status)?;
        let keep_caps = tracee.syscall("prctl(PR_GET_KEEPCAPS)", libc::SYS_prctl, [PR_GET_KEEPCAPS, 0, 0, 0, 0, 0])?;
        let dumpable = tracee.syscall("prctl(PR_GET_DUMPABLE)", libc::SYS_prctl, [PR_GET_DUMPABLE, 0, 0, 0, 0, 0])?;
        if dumpable > 1 {
            // SUID_DUMP_ROOT, which the kernel sets itself; PR_SET_DUMPABLE
            // takes only 0 and 1, so no restore could give it back.
            let location = format!("PR_GET_DUMPABLE {dumpable}");
            return Err(crate::Unsupported { what: "dumpable mode 2 (suid_dumpable)".into(), location }.into());
        }
        Ok(Self { ids, keep_caps: keep_caps != 0, dumpable })
    }

    /// Capabilities the image's process had that the restorer lacks, which
    /// no restore could give back; 0 when all is well.
    pub fn capabilities_beyond(&self, restorer: &IdsAndCapabilities) -> u64 {
        (self.ids.cap_permitted | self.ids.cap_bounding) & !restorer.cap_permitted
    }

    /// Refuses what the kernel would refuse: more groups than
    /// `NGROUPS_MAX`, a dumpable value `PR_SET_DUMPABLE` does not take.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.ids.groups.len() > NGROUPS_MAX {
            return Err(Invalid::new("groups", format!("are {}, more than NGROUPS_MAX", self.ids.groups.len())));
        }
        if self.dumpable > 1 {
            return Err(Invalid::new("dumpable", format!("is {}, not 0 or 1", self.dumpable)));
        }
        Ok(())
    }

    /// Makes the tracee's credentials the image's. Must be the last
    /// privileged step of a restore.
    pub fn restore_as(&self, tracee: &mut dyn Tracee, restorer: &IdsAndCapabilities) -> Result<(), EngineError> {
        for capability in 0..CAPABILITY_BITS {
            let bit = 1u64 << capability;
            if restorer.cap_bounding & bit != 0 && self.ids.cap_bounding & bit == 0 {
                let args = [PR_CAPBSET_DROP, u64::from(capability), 0, 0, 0, 0];
                tracee.syscall("prctl(PR_CAPBSET_DROP)", libc::SYS_prctl, args)?;
            }
        }
        let mut scratch = tracee.scratch();
        let groups: Vec<u8> = self.ids.groups.iter().flat_map(|group| group.to_le_bytes()).collect();
        let groups_address = scratch.push(&groups);
        let header = scratch.push(&[CAPABILITY_VERSION_3.to_le_bytes(), 0u32.to_le_bytes()].concat());
        let split = |set: u64| [(set & 0xffff_ffff) as u32, (set >> 32) as u32];
        let [effective_low, effective_high] = split(self.ids.cap_effective);
        let [permitted_low, permitted_high] = split(self.ids.cap_permitted);
        let [inheritable_low, inheritable_high] = split(self.ids.cap_inheritable);
        let data: Vec<u8> =
            [effective_low, permitted_low, inheritable_low, effective_high, permitted_high, inheritable_high]
                .iter()
                .flat_map(|word| word.to_le_bytes())
                .collect();
        let data_address = scratch.push(&data);
        scratch.commit(tracee)?;

        tracee.syscall("setgroups", libc::SYS_setgroups, [self.ids.groups.len() as u64, groups_address, 0, 0, 0, 0])?;
        let [real_gid, effective_gid, saved_gid, fs_gid] = self.ids.gids.map(u64::from);
        tracee.syscall("setresgid", libc::SYS_setresgid, [real_gid, effective_gid, saved_gid, 0, 0, 0])?;
        tracee.syscall("setfsgid", libc::SYS_setfsgid, [fs_gid, 0, 0, 0, 0, 0])?;
        // Keep the permitted set across the uid change, then set all three
        // sets exactly.
        tracee.syscall("prctl(PR_SET_KEEPCAPS)", libc::SYS_prctl, [PR_SET_KEEPCAPS, 1, 0, 0, 0, 0])?;
        let [real_uid, effective_uid, saved_uid, fs_uid] = self.ids.uids.map(u64::from);
        tracee.syscall("setresuid", libc::SYS_setresuid, [real_uid, effective_uid, saved_uid, 0, 0, 0])?;
        tracee.syscall("setfsuid", libc::SYS_setfsuid, [fs_uid, 0, 0, 0, 0, 0])?;
        tracee.syscall("capset", libc::SYS_capset, [header, data_address, 0, 0, 0, 0])?;
        tracee.syscall(
            "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
            libc::SYS_prctl,
            [PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0],
        )?;
        for capability in (0..CAPABILITY_BITS).filter(|capability| self.ids.cap_ambient & (1 << capability) != 0) {
            let args = [PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, u64::from(capability), 0, 0, 0];
            tracee.syscall("prctl(PR_CAP_AMBIENT_RAISE)", libc::SYS_prctl, args)?;
        }
        let args = [PR_SET_KEEPCAPS, u64::from(self.keep_caps), 0, 0, 0, 0];
        tracee.syscall("prctl(PR_SET_KEEPCAPS)", libc::SYS_prctl, args)?;
        // Changing ids made the process non-dumpable; put back what it was.
        tracee.syscall("prctl(PR_SET_DUMPABLE)", libc::SYS_prctl, [PR_SET_DUMPABLE, self.dumpable, 0, 0, 0, 0])?;
        if self.ids.no_new_privs {
            tracee.syscall("prctl(PR_SET_NO_NEW_PRIVS)", libc::SYS_prctl, [PR_SET_NO_NEW_PRIVS, arg(1), 0, 0, 0, 0])?;
        }
        Ok(())
    }
}

impl Persist for Credentials {
    const KIND: &'static str = "credentials";
    type Error = CompoundError;

    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        Self::capture_from(context.tracee, context.proc)
    }

    /// From crp's own credentials to the image's: the last privileged step.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        let restorer = own_status()?;
        Ok(self.restore_as(context.tracee, &restorer)?)
    }
}

impl Credentials {
    /// The kmod ABI: the ids from /proc (the module does not report them),
    /// keep-caps and dumpable from the module's task record.
    pub fn from_abi(
        proc: &crp_ptrace::procfs::Snapshot,
        state: &crp_kmod_abi::CrpTaskState,
    ) -> Result<Self, CompoundError> {
        Ok(Self {
            ids: parse_status(&proc.status)?,
            keep_caps: state.keep_caps != 0,
            dumpable: u64::from(state.dumpable),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

    #[test]
    fn dumpable_mode_2_is_refused_at_dump() {
        let mut process = FakeTracee::answering(|call, _| if call.args[0] == PR_GET_DUMPABLE { 2 } else { 0 });
        let proc = crp_ptrace::fake::snapshot();
        let refusal =
            Credentials::capture(&mut Capture { tracee: &mut process, proc: &proc, stopped_before_freeze: false })
                .unwrap_err()
                .to_string();
        assert!(refusal.contains("dumpable mode 2"), "{refusal}");
    }

    #[test]
    fn ids_come_from_the_snapshot_and_keep_caps_and_dumpable_by_injection() {
        let mut process = FakeTracee::answering(|call, _| match call.args[0] {
            PR_GET_KEEPCAPS => 1,
            PR_GET_DUMPABLE => 1,
            _ => 0,
        });
        let proc = crp_ptrace::fake::snapshot();
        let credentials =
            Credentials::capture(&mut Capture { tracee: &mut process, proc: &proc, stopped_before_freeze: false })
                .unwrap();
        assert_eq!(credentials.ids.uids, [0; 4]);
        assert_eq!(credentials.ids.groups, [0, 27]);
        assert_eq!(credentials.ids.cap_permitted, 0x1ff_ffff_ffff);
        assert!(credentials.keep_caps);
        assert_eq!(credentials.dumpable, 1);
        assert_eq!(process.calls_of(libc::SYS_prctl).len(), 2);
    }

    const STATUS: &str = "Name:\tsubject\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\nGroups:\t4 24 27 \n\
        CapInh:\t0000000000000000\nCapPrm:\t0000000000000400\nCapEff:\t0000000000000400\n\
        CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";

    fn parse(text: &str) -> Result<IdsAndCapabilities, ProcError> {
        parse_status(&Fields::parse("/proc/5/status", text).unwrap())
    }

    #[test]
    fn capabilities_are_named_by_number() {
        assert_eq!(capability_names(0), Vec::<String>::new());
        assert_eq!(
            capability_names((1 << 6) | (1 << 7) | (1 << 40)),
            ["CAP_SETGID", "CAP_SETUID", "CAP_CHECKPOINT_RESTORE"]
        );
        assert_eq!(capability_names(1 << 41), ["CAP_41"]);
        assert_eq!(capability_names(0x1ff_ffff_ffff).len(), 41);
    }

    #[test]
    fn status_credentials_parse() {
        let parsed = parse(STATUS).unwrap();
        assert_eq!(parsed.uids, [1000, 1001, 1002, 1003]);
        assert_eq!(parsed.gids, [50, 51, 52, 53]);
        assert_eq!(parsed.groups, vec![4, 24, 27]);
        assert_eq!(parsed.cap_permitted, 0x400);
        assert_eq!(parsed.cap_bounding, 0x1ff_ffff_ffff);
        assert!(parsed.no_new_privs);
    }

    #[test]
    fn malformed_credentials_are_refused_and_named() {
        let refusal = |from: &str, to: &str| parse(&STATUS.replace(from, to)).unwrap_err().to_string();
        assert_eq!(
            refusal("1000\t1001", "1000"),
            "cannot parse /proc/5/status field Uid `1000\t1002\t1003`: not four ids"
        );
        assert_eq!(
            refusal("4 24 27", "4 x 27"),
            "cannot parse /proc/5/status field Groups `4 x 27`: `x` is not a decimal number"
        );
        assert_eq!(
            refusal("CapEff:\t0000000000000400", "CapEff:\t-"),
            "cannot parse /proc/5/status field CapEff `-`: not a hexadecimal mask"
        );
        assert_eq!(
            refusal("NoNewPrivs:\t1", "NoNewPrivs:\t2"),
            "cannot parse /proc/5/status field NoNewPrivs `2`: neither 0 nor 1"
        );
        assert_eq!(refusal("CapAmb", "CapXyz"), "/proc/5/status has no field CapAmb");
        assert_eq!(refusal("Gid:", "Gidd:"), "/proc/5/status has no field Gid");
    }

    #[test]
    fn capabilities_beyond_the_restorer_are_named() {
        let ids = IdsAndCapabilities { cap_permitted: 0b1010, cap_bounding: 0b1111, ..IdsAndCapabilities::default() };
        let image = Credentials { ids, ..Credentials::default() };
        let restorer = IdsAndCapabilities { cap_permitted: 0b0111, ..IdsAndCapabilities::default() };
        assert_eq!(image.capabilities_beyond(&restorer), 0b1000);
    }

    #[test]
    fn own_credentials_are_readable() {
        let own = own_status().unwrap();
        assert_eq!(own.uids[0], nix::unistd::getuid().as_raw());
    }
}
