//! The namespaces a process lives in. crp restores a process into the
//! namespaces of `crp restore` itself and recreates none, so a process
//! whose namespaces are not those of `crp dump` (a container's, one that
//! called unshare(2)) is refused: restored among crp's, it would see
//! another file system, network, PID numbering, hostname or clock, in
//! silence.

use crate::error::{CompoundError, Unsupported};

/// Every namespace link of /proc/PID/ns, the ones its future children
/// will get included (`unshare(CLONE_NEWPID)` changes only those).
const NAMESPACES: [(&str, &str); 10] = [
    ("mnt", "mount"),
    ("net", "network"),
    ("pid", "PID"),
    ("pid_for_children", "PID (for its children, after unshare)"),
    ("ipc", "IPC"),
    ("uts", "UTS (hostname)"),
    ("user", "user"),
    ("cgroup", "cgroup"),
    ("time", "time"),
    ("time_for_children", "time (for its children, after unshare)"),
];

/// Each namespace of `pid` that is not crp's own, named. A namespace the
/// kernel lacks (no link for crp either) is skipped.
pub fn preflight(pid: i32) -> Result<Vec<Unsupported>, CompoundError> {
    let mut blockers = Vec::new();
    for (link, name) in NAMESPACES {
        let own_path = format!("/proc/self/ns/{link}");
        let Ok(own) = std::fs::read_link(&own_path) else { continue };
        let path = format!("/proc/{pid}/ns/{link}");
        let theirs = std::fs::read_link(&path).map_err(CompoundError::io("read", &path))?;
        if theirs != own {
            blockers.push(Unsupported {
                what: format!("a process in another {name} namespace than crp's"),
                location: format!("ns/{link} {} (crp's: {})", theirs.display(), own.display()),
            });
        }
    }
    Ok(blockers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crp_shares_every_namespace_with_itself() {
        assert_eq!(preflight(i32::try_from(std::process::id()).unwrap()).unwrap(), []);
    }

    #[test]
    fn a_process_gone_is_an_error_not_a_blocker() {
        assert!(preflight(i32::MAX).is_err());
    }
}
