//! Attributes crp does not restore, checked at dump to hold the value a
//! restored process would get anyway (its default, or crp's own), and
//! refused otherwise: restored with crp's value instead, they would be lost
//! in silence. Each is read from /proc (or asked of the kernel from outside)
//! before the process is touched, so `crp dump --check` lists them.

use std::os::unix::fs::MetadataExt;

use crate::error::{CompoundError, Unsupported};

/// `untag_mask` of a process without linear address masking (LAM).
const NO_ADDRESS_TAGS: &str = "0xffffffffffffffff";
/// `PR_SCHED_CORE` and its `PR_SCHED_CORE_GET` operation, on a PID
/// (`PIDTYPE_PID`).
const PR_SCHED_CORE: i32 = 62;
const PR_SCHED_CORE_GET: u64 = 0;
const PIDTYPE_PID: u64 = 0;
/// The LSM attributes a process sets for what it does next (exec, file,
/// key and socket creation): empty unless it set one.
const LSM_NEXT: [&str; 4] = ["exec", "fscreate", "keycreate", "sockcreate"];

/// Every attribute of `pid` that differs from what its restore would give.
pub fn preflight(pid: i32) -> Result<Vec<Unsupported>, CompoundError> {
    let mut blockers = Vec::new();
    let refuse = |what: &str, location: String| Unsupported { what: what.to_owned(), location };
    let root = format!("/proc/{pid}/root");
    let theirs = std::fs::metadata(&root).map_err(CompoundError::io("stat", &root))?;
    let own = std::fs::metadata("/").map_err(CompoundError::io("stat", "/"))?;
    if (theirs.dev(), theirs.ino()) != (own.dev(), own.ino()) {
        let link = std::fs::read_link(&root).map_or_else(|_| "?".to_owned(), |link| link.display().to_string());
        blockers.push(refuse("a process with another root directory (chroot)", format!("root -> {link}")));
    }
    let status_path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&status_path).map_err(CompoundError::io("read", &status_path))?;
    if let Some(mask) = status.lines().find_map(|line| line.strip_prefix("untag_mask:")).map(str::trim)
        && mask != NO_ADDRESS_TAGS
    {
        blockers.push(refuse("linear address masking (ARCH_ENABLE_TAGGED_ADDR)", format!("untag_mask {mask}")));
    }
    let autogroup = format!("/proc/{pid}/autogroup");
    // A kernel without CONFIG_SCHED_AUTOGROUP has no such file.
    if let Ok(text) = std::fs::read_to_string(&autogroup)
        && let Some(nice) = text.split_whitespace().skip_while(|word| *word != "nice").nth(1)
        && nice != "0"
    {
        blockers
            .push(refuse("a nice value of its autogroup (/proc/PID/autogroup)", format!("autogroup {}", text.trim())));
    }
    if let Some(cookie) = core_scheduling_cookie(pid)
        && cookie != 0
    {
        blockers.push(refuse("a core-scheduling cookie (PR_SCHED_CORE)", format!("cookie {cookie:#x}")));
    }
    blockers.extend(security_attributes(pid));
    Ok(blockers)
}

/// The core-scheduling cookie of `pid` (asked by crp, which may trace it);
/// `None` on a kernel without core scheduling.
fn core_scheduling_cookie(pid: i32) -> Option<u64> {
    let mut cookie = 0u64;
    let pid = u64::try_from(pid).ok()?;
    // SAFETY: PR_SCHED_CORE_GET writes one u64 through the pointer, which
    // points to `cookie`, alive and writable for the call.
    let result = unsafe { libc::prctl(PR_SCHED_CORE, PR_SCHED_CORE_GET, pid, PIDTYPE_PID, &raw mut cookie) };
    (result == 0).then_some(cookie)
}

/// Each mapping with a NUMA memory policy of its own (mbind), from
/// /proc/PID/numa_maps (absent without CONFIG_NUMA). Apart from
/// [`preflight`]: reading it walks every page of the process, which a
/// copy-on-write dump does once the process runs again.
pub fn memory_policies(pid: i32) -> Result<Vec<Unsupported>, CompoundError> {
    let path = format!("/proc/{pid}/numa_maps");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(CompoundError::io("read", &path)(error)),
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let start = words.next()?;
            let policy = words.next()?;
            (policy != "default").then(|| Unsupported {
                what: "a NUMA memory policy of a mapping (mbind)".into(),
                location: format!("numa_maps {start} {policy}"),
            })
        })
        .collect())
}

/// The process's security context (SELinux, AppArmor, Smack...), when it
/// is not crp's, and the contexts it set for what it does next. Nothing
/// without an LSM that has them (the files then fail to read).
fn security_attributes(pid: i32) -> Vec<Unsupported> {
    let read = |who: &str, name: &str| std::fs::read(format!("/proc/{who}/attr/{name}")).ok();
    let mut blockers = Vec::new();
    let pid_text = pid.to_string();
    if let (Some(theirs), Some(own)) = (read(&pid_text, "current"), read("self", "current"))
        && theirs != own
    {
        blockers.push(Unsupported {
            what: "a security context other than crp's (LSM attr/current)".into(),
            location: format!(
                "attr/current {:?} (crp's: {:?})",
                String::from_utf8_lossy(&theirs).trim_end_matches(['\0', '\n']),
                String::from_utf8_lossy(&own).trim_end_matches(['\0', '\n'])
            ),
        });
    }
    for name in LSM_NEXT {
        if let Some(value) = read(&pid_text, name)
            && !value.iter().all(|byte| matches!(byte, 0 | b'\n'))
        {
            blockers.push(Unsupported {
                what: format!("a security context set for what it does next (LSM attr/{name})"),
                location: format!("attr/{name} {:?}", String::from_utf8_lossy(&value).trim_end_matches(['\0', '\n'])),
            });
        }
    }
    blockers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crp_itself_holds_every_default() {
        let blockers = preflight(i32::try_from(std::process::id()).unwrap()).unwrap();
        // The test runner may run under a nice autogroup; nothing else may differ from itself.
        assert!(blockers.iter().all(|blocker| blocker.what.contains("autogroup")), "{blockers:?}");
    }

    #[test]
    fn a_process_gone_is_an_error() {
        assert!(preflight(i32::MAX).is_err());
    }
}
