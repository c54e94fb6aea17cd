//! The owner of an open file description (`fcntl(F_SETOWN_EX)`): the
//! thread, process or process group that SIGIO and SIGURG go to, and the
//! signal sent instead of SIGIO (`F_SETSIG`). /proc does not show it: crp
//! asks a duplicate of the description (`pidfd_getfd`) at the dump, and the
//! restored process sets it again on itself after its credentials, since
//! F_SETOWN records the caller's credentials, which decide whether the
//! signal may be sent (`sigio_perm`).

use crp_ptrace::sys::{self, F_OWNER_PGRP, F_OWNER_PID, F_OWNER_TID};
use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};

use super::{FdTable, SETFL_FLAGS, Streams, call};
use crate::error::CompoundError;
use crate::valid::Invalid;

/// Who a description's signals go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum OwnerKind {
    /// `F_OWNER_TID`: one thread.
    Thread,
    /// `F_OWNER_PID`: a process.
    Process,
    /// `F_OWNER_PGRP`: a process group.
    Group,
}

/// The owner's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum OwnerId {
    /// No owner: no SIGIO is sent.
    Nobody,
    /// The dumped process itself (or the group it leads): the restored
    /// process's own PID, whatever it is.
    Itself,
    /// Another thread, process or group, by its id.
    Other(i32),
}

/// `F_GETOWN_EX` and `F_GETSIG` of one description, when either is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FileOwner {
    pub kind: OwnerKind,
    pub id: OwnerId,
    /// The `F_SETSIG` signal; 0 is SIGIO.
    pub signal: i32,
}

/// `SIGRTMAX` on Linux.
const SIGNAL_MAX: i32 = 64;

impl FileOwner {
    /// What it says in `crp inspect`: `process 4242`, `itself`, `SIGRTMIN+2`...
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            OwnerKind::Thread => "thread",
            OwnerKind::Process => "process",
            OwnerKind::Group => "process group",
        };
        let who = match self.id {
            OwnerId::Nobody => "nobody".to_owned(),
            OwnerId::Itself => format!("{kind} itself"),
            OwnerId::Other(id) => format!("{kind} {id}"),
        };
        match self.signal {
            0 => who,
            signal => format!("{who}, signal {}", crate::signals::signal_name(signal)),
        }
    }
}

/// The owner of descriptor `fd` of `pid` (frozen), if one or a signal is
/// set.
pub(super) fn capture(pid: i32, fd: i32) -> Result<Option<FileOwner>, CompoundError> {
    let failed =
        |errno| EngineError::Descriptor { operation: "read the owner (F_GETOWN_EX) of", pid, fd: arg(fd), errno };
    let duplicate = sys::duplicate_descriptor(pid, fd).map_err(failed)?;
    let (kind, id, signal) = sys::file_owner(std::os::fd::AsFd::as_fd(&duplicate)).map_err(failed)?;
    if id == 0 && signal == 0 {
        return Ok(None);
    }
    let kind = match kind {
        F_OWNER_TID => OwnerKind::Thread,
        F_OWNER_PGRP => OwnerKind::Group,
        _ => OwnerKind::Process,
    };
    let id = match id {
        0 => OwnerId::Nobody,
        own if own == pid => OwnerId::Itself,
        other => OwnerId::Other(other),
    };
    Ok(Some(FileOwner { kind, id, signal }))
}

/// Refuses an owner no `fcntl` takes.
pub(super) fn check(field: &dyn Fn() -> String, owner: &FileOwner) -> Result<(), Invalid> {
    if !(0..=SIGNAL_MAX).contains(&owner.signal) {
        return Err(Invalid::new(field(), format!("has owner signal {}, not a signal", owner.signal)));
    }
    if let OwnerId::Other(id) = owner.id
        && id <= 0
    {
        return Err(Invalid::new(field(), format!("has owner id {id}, not a process id")));
    }
    Ok(())
}

/// The owners naming another process or group, with a descriptor of each.
pub fn others(table: &FdTable) -> Vec<(i32, FileOwner)> {
    table
        .descriptors
        .iter()
        .filter_map(|descriptor| {
            let owner = table.file_of(descriptor)?.owner?;
            let first = table.shared_with(descriptor).is_none();
            (first && matches!(owner.id, OwnerId::Other(_))).then_some((descriptor.fd, owner))
        })
        .collect()
}

/// Sets every description's O_ASYNC flag and owner again, in the restored
/// process, through its first descriptor (the number its signals carry in
/// `si_fd` is the one O_ASYNC was set through, which the kernel does not
/// show: the first is the likeliest). An owner that is another process no
/// longer there (ESRCH) is left unset: `crp restore` has warned of it. Run
/// after the credentials, so that the owner's credentials are the
/// process's own. Descriptors the user chose (`streams`) keep theirs.
pub fn restore(tracee: &mut dyn Tracee, table: &FdTable, streams: &Streams) -> Result<(), EngineError> {
    for descriptor in &table.descriptors {
        let Some(file) = table.file_of(descriptor) else { continue };
        if table.shared_with(descriptor).is_some() || streams.chosen_for(descriptor.fd).is_some() {
            continue; // set through the description's first descriptor, or not the image's any more
        }
        let fd = arg(descriptor.fd);
        if file.flags & libc::O_ASYNC != 0 {
            let flags = arg(file.flags & SETFL_FLAGS);
            call(tracee, "fcntl(F_SETFL, O_ASYNC)", libc::SYS_fcntl, &[fd, arg(libc::F_SETFL), flags])?;
        }
        let Some(owner) = file.owner else { continue };
        let id = match owner.id {
            OwnerId::Nobody => None,
            OwnerId::Itself => Some(tracee.pid()),
            OwnerId::Other(id) => Some(id),
        };
        if let Some(id) = id {
            let kind = match owner.kind {
                OwnerKind::Thread => F_OWNER_TID,
                OwnerKind::Process => F_OWNER_PID,
                OwnerKind::Group => F_OWNER_PGRP,
            };
            let mut scratch = tracee.scratch();
            let mut bytes = kind.to_ne_bytes().to_vec();
            bytes.extend_from_slice(&id.to_ne_bytes());
            let address = scratch.push(&bytes);
            scratch.commit(tracee)?;
            match call(tracee, "fcntl(F_SETOWN_EX)", libc::SYS_fcntl, &[fd, arg(sys::F_SETOWN_EX), address]) {
                Err(EngineError::Syscall { errno: nix::errno::Errno::ESRCH, .. })
                    if matches!(owner.id, OwnerId::Other(_)) => {}
                other => drop(other?),
            }
        }
        if owner.signal != 0 {
            call(tracee, "fcntl(F_SETSIG)", libc::SYS_fcntl, &[fd, arg(sys::F_SETSIG), arg(owner.signal)])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{FdRecord, FdTarget};
    use crp_ptrace::fake::FakeTracee;

    fn table_with(owner: FileOwner) -> FdTable {
        let mut table = FdTable::from(vec![
            FdRecord {
                fd: 3,
                flags: libc::O_RDWR,
                offset: 0,
                target: FdTarget::File { path: "/srv/a".into(), identity: None },
            },
            FdRecord {
                fd: 4,
                flags: libc::O_RDWR,
                offset: 0,
                target: FdTarget::File { path: "/srv/b".into(), identity: None },
            },
        ]);
        table.files[1].owner = Some(owner);
        table
    }

    #[test]
    fn an_owner_that_was_the_process_becomes_the_restored_process() {
        let table = table_with(FileOwner { kind: OwnerKind::Process, id: OwnerId::Itself, signal: 40 });
        let mut restored = FakeTracee::answering(|call, memory| {
            if call.args[1] == sys::F_SETOWN_EX as u64 {
                let raw = memory.read(call.args[2], 8);
                assert_eq!(raw[..4], F_OWNER_PID.to_ne_bytes());
                assert_eq!(raw[4..], FakeTracee::PID.to_ne_bytes());
            }
            0
        });
        restore(&mut restored, &table, &Streams::default()).unwrap();
        let fcntls: Vec<[u64; 2]> =
            restored.calls_of(libc::SYS_fcntl).iter().map(|call| [call.args[0], call.args[1]]).collect();
        assert_eq!(fcntls, [[4, sys::F_SETOWN_EX as u64], [4, sys::F_SETSIG as u64]]);
        assert_eq!(restored.calls_of(libc::SYS_fcntl)[1].args[2], 40);
    }

    #[test]
    fn an_owner_gone_since_the_dump_is_left_unset_but_other_failures_fail() {
        let gone = table_with(FileOwner { kind: OwnerKind::Group, id: OwnerId::Other(777), signal: 0 });
        assert_eq!(others(&gone).len(), 1);
        let mut restored = FakeTracee::answering(|_, _| -i64::from(libc::ESRCH));
        restore(&mut restored, &gone, &Streams::default()).unwrap();
        let itself = table_with(FileOwner { kind: OwnerKind::Thread, id: OwnerId::Itself, signal: 0 });
        assert!(others(&itself).is_empty());
        let mut failing = FakeTracee::answering(|_, _| -i64::from(libc::ESRCH));
        assert!(restore(&mut failing, &itself, &Streams::default()).is_err());
    }

    #[test]
    fn owners_no_fcntl_takes_are_refused() {
        let field = || "open file 1".to_owned();
        let bad_signal = FileOwner { kind: OwnerKind::Process, id: OwnerId::Nobody, signal: 65 };
        assert!(check(&field, &bad_signal).unwrap_err().to_string().contains("not a signal"));
        let bad_id = FileOwner { kind: OwnerKind::Group, id: OwnerId::Other(-3), signal: 0 };
        assert!(check(&field, &bad_id).unwrap_err().to_string().contains("not a process id"));
        assert_eq!(bad_signal.describe(), "nobody, signal 65".replace("65", &crate::signals::signal_name(65)));
    }
}
