//! Whose image is it? An image is code crp will run with the image's
//! credentials, so an image file owned by another user is restored only as
//! that user: its credentials must be ones that user holds (their uid, their
//! groups, no capabilities), and every file the restore opens or maps (the
//! mapped files, the descriptors, the executable, the cwd) is opened with
//! that user's file-system ids and groups, so an image cannot make root open
//! what its owner could not. `--trust-image` lifts both rules.

use crp_compound::creds::IdsAndCapabilities;
use crp_ptrace::{Tracee, TraceeExt, arg};
use nix::unistd::{Gid, Uid, User};

use crate::error::CrpError;

/// The file-system identity the child takes before it opens anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Who owns the image file, and what crp may do on their behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Decides how to restore an image owned by `owner` as `restorer` (crp's
/// effective uid): `None` when crp opens files with its own credentials
/// (its own image, or `trusted`), else the owner's identity to take.
pub fn decide(
    owner: Owner,
    restorer: u32,
    ids: &IdsAndCapabilities,
    trusted: bool,
) -> Result<Option<OpenAs>, CrpError> {
    if trusted || owner.uid == restorer {
        return Ok(None);
    }
    let user = User::from_uid(Uid::from_raw(owner.uid)).ok().flatten();
    let name =
        user.as_ref().map_or_else(|| format!("uid {}", owner.uid), |user| format!("{} (uid {})", user.name, owner.uid));
    let allowed_groups = owner_groups(owner, user.as_ref());
    let refuse = |what: String| CrpError::UntrustedImage { owner: name.clone(), what };
    if let Some(uid) = ids.uids.iter().find(|uid| **uid != owner.uid) {
        return Err(refuse(format!("a process of uid {uid}")));
    }
    if let Some(gid) = ids.gids.iter().chain(&ids.groups).find(|gid| !allowed_groups.contains(gid)) {
        return Err(refuse(format!("a process in group {gid}, which that user is not in")));
    }
    let capabilities = ids.cap_effective | ids.cap_permitted | ids.cap_inheritable | ids.cap_ambient;
    if capabilities != 0 {
        return Err(refuse(format!("a process holding capabilities {capabilities:#x}")));
    }
    Ok(Some(OpenAs { uid: owner.uid, gid: ids.gids[3], groups: ids.groups.clone() }))
}

/// The groups the owner is in: their primary group and every group that
/// lists them; for a uid without an account, the image file's group.
fn owner_groups(owner: Owner, user: Option<&User>) -> Vec<u32> {
    let Some(user) = user else {
        return vec![owner.gid];
    };
    let Ok(name) = std::ffi::CString::new(user.name.as_bytes()) else {
        return vec![user.gid.as_raw()];
    };
    match nix::unistd::getgrouplist(&name, user.gid) {
        Ok(groups) => groups.into_iter().map(Gid::as_raw).collect(),
        Err(_) => vec![user.gid.as_raw()],
    }
}

/// Gives the child the owner's groups and file-system ids, so that what it
/// opens next is opened as the owner. Its other ids and capabilities stay
/// crp's until the credentials are restored, last.
pub fn open_as(tracee: &mut dyn Tracee, identity: &OpenAs) -> Result<(), CrpError> {
    let mut scratch = tracee.scratch();
    let groups: Vec<u8> = identity.groups.iter().flat_map(|gid| gid.to_le_bytes()).collect();
    let address = scratch.push(&groups);
    scratch.commit(tracee)?;
    tracee.syscall("setgroups", libc::SYS_setgroups, [identity.groups.len() as u64, address, 0, 0, 0, 0])?;
    tracee.syscall("setfsgid", libc::SYS_setfsgid, [arg(i64::from(identity.gid)), 0, 0, 0, 0, 0])?;
    tracee.syscall("setfsuid", libc::SYS_setfsuid, [arg(i64::from(identity.uid)), 0, 0, 0, 0, 0])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(uid: u32, gid: u32) -> IdsAndCapabilities {
        IdsAndCapabilities { uids: [uid; 4], gids: [gid; 4], cap_bounding: u64::MAX, ..Default::default() }
    }

    const NOBODY: Owner = Owner { uid: 65534, gid: 65534 };

    #[test]
    fn own_or_trusted_images_open_files_as_crp() {
        assert_eq!(decide(Owner { uid: 0, gid: 0 }, 0, &ids(0, 0), false).unwrap(), None);
        assert_eq!(decide(NOBODY, 0, &ids(0, 0), true).unwrap(), None);
    }

    #[test]
    fn another_users_image_is_restored_as_that_user_only() {
        let as_owner = decide(NOBODY, 0, &ids(65534, 65534), false).unwrap().unwrap();
        assert_eq!((as_owner.uid, as_owner.gid), (65534, 65534));
        let root_process = decide(NOBODY, 0, &ids(0, 0), false).unwrap_err().to_string();
        assert!(root_process.contains("nobody (uid 65534)") && root_process.contains("uid 0"), "{root_process}");
        let mut capable = ids(65534, 65534);
        capable.cap_effective = 1 << 21;
        assert!(decide(NOBODY, 0, &capable, false).unwrap_err().to_string().contains("capabilities"));
        let mut grouped = ids(65534, 65534);
        grouped.groups = vec![0];
        assert!(decide(NOBODY, 0, &grouped, false).unwrap_err().to_string().contains("group 0"));
    }
}
