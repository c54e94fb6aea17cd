//! crp's own change tracking in a process (`crp dump --track-changes`): a
//! userfaultfd in asynchronous write-protect mode that the process holds
//! on a descriptor crp placed there. It is recognised by what
//! /proc/PID/fdinfo says of it: a userfaultfd whose features are exactly
//! [`FEATURES`]. Such a descriptor is crp's, not the process's: it is not
//! a descriptor to dump, and the write protection it registered (smaps
//! `uw`) is not a refusal. Its inode number (each userfaultfd has its own)
//! tells one arming from the next.

use crp_ptrace::userfault;

use crate::error::CompoundError;

/// The features crp asks for; fdinfo adds the kernel's "initialised" bit.
pub const FEATURES: u64 = userfault::FEATURE_WP_ASYNC | userfault::FEATURE_WP_UNPOPULATED;
/// `UFFD_FEATURE_INITIALIZED`, set by the kernel once the API handshake is done.
const INITIALISED: u64 = 1 << 31;

/// One tracking descriptor found in a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackingFd {
    pub fd: i32,
    /// The userfaultfd's own inode number.
    pub inode: u64,
}

/// Whether the fdinfo text of a descriptor says it is crp's tracking.
pub fn is_tracking_fdinfo(fdinfo: &str) -> Option<u64> {
    let field = |name: &str| {
        fdinfo.lines().find_map(|line| line.strip_prefix(name).map(|rest| rest.trim_start_matches(':').trim()))
    };
    let api = field("API")?;
    let mut parts = api.split(':');
    let (version, features) = (parts.next()?, parts.next()?);
    let features = u64::from_str_radix(features, 16).ok()?;
    let inode = field("ino")?.parse().ok()?;
    (version == "aa" && features & !INITIALISED == FEATURES).then_some(inode)
}

/// Descriptor `fd` of `pid`, when it is crp's tracking.
pub fn tracking_fd(pid: i32, fd: i32) -> Option<TrackingFd> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    if link.as_os_str() != "anon_inode:[userfaultfd]" {
        return None;
    }
    let fdinfo = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    is_tracking_fdinfo(&fdinfo).map(|inode| TrackingFd { fd, inode })
}

/// Every tracking descriptor `pid` holds (normally none or one).
pub fn find(pid: i32) -> Result<Vec<TrackingFd>, CompoundError> {
    let directory = format!("/proc/{pid}/fd");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&directory).map_err(CompoundError::io("list", &directory))? {
        let name = entry.map_err(CompoundError::io("list", &directory))?.file_name();
        if let Some(tracking) = name.to_str().and_then(|name| name.parse().ok()).and_then(|fd| tracking_fd(pid, fd)) {
            found.push(tracking);
        }
    }
    found.sort_unstable_by_key(|tracking| tracking.fd);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_crps_features_are_tracking() {
        let text = |features| {
            format!(
                "pos:\t0\nflags:\t02004000\nmnt_id:\t17\nino:\t557961\npending:\t0\ntotal:\t0\nAPI:\taa:{features}:80000000000001ff\n"
            )
        };
        assert_eq!(is_tracking_fdinfo(&text("8000a000")), Some(557_961));
        assert_eq!(is_tracking_fdinfo(&text("8000a001")), None, "another feature: the process's own");
        assert_eq!(is_tracking_fdinfo(&text("80000001")), None);
        assert_eq!(is_tracking_fdinfo("pos:\t0\n"), None);
    }
}
