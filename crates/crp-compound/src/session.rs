//! The process's session, process group and controlling terminal, and the
//! settings of the terminal it runs on.
//!
//! Captured from /proc/PID/stat (`pgrp`, `session`, `tty_nr`, `tpgid`) and,
//! for the settings (modes and window size), through a duplicate
//! (`pidfd_getfd`) of a descriptor of that terminal: its controlling
//! terminal, else the first terminal on its fds 0-2.
//!
//! A session cannot be rebuilt with its old id (setsid gives the caller's
//! own pid; setpgid only joins groups of the caller's session), and a
//! process can only have a controlling terminal of its own session. So the
//! restore places the process in one of three ways ([`Placement`]),
//! decided from the image and what `crp restore` can offer
//! ([`SessionState::placement`]); crp-cli then sets the terminal's modes
//! and compares its window size.
//!
//! It is not a `crp_ptrace::Persist` kind: its restore depends on the
//! restore's circumstances (is there a terminal, does crp restore wait,
//! did the process get its pid back), which a `Restore` context does not
//! hold; crp-cli's plan runs [`SessionState::place`] with the placement it
//! decided.

use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crp_ptrace::{Capture, EngineError, Tracee};

use crate::error::CompoundError;
use crate::files::TerminalSettings;
use crate::valid::Invalid;

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SessionState {
    /// The session id and process group id at the dump.
    pub session: i32,
    pub group: i32,
    /// The controlling terminal's device number, as stat's `tty_nr` (0: none).
    pub terminal_device: u64,
    /// Its name, when a descriptor of the process shows it (`/dev/pts/3`),
    /// else `device MAJOR:MINOR`; empty without a controlling terminal.
    pub terminal_name: String,
    /// The foreground process group of the controlling terminal (`tpgid`;
    /// -1 without one).
    pub foreground_group: i32,
    /// The settings of its terminal (see the module's first lines), when
    /// a descriptor of it was open.
    pub terminal: Option<TerminalSettings>,
}

/// Where a restored process is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// It stays in crp restore's session and process group (the job crp
    /// restore is), with crp restore's controlling terminal.
    JoinRestorer,
    /// `setsid`: a session and group of its own, no controlling terminal.
    OwnSession,
    /// `setpgid(0, 0)`: a group of its own in crp restore's session.
    OwnGroup,
}

impl Placement {
    pub fn describe(self) -> &'static str {
        match self {
            Self::JoinRestorer => "in crp restore's session and process group",
            Self::OwnSession => "in a session and process group of its own, without a controlling terminal",
            Self::OwnGroup => "in a process group of its own in crp restore's session",
        }
    }
}

impl SessionState {
    /// The kind's name in plans and messages.
    pub const KIND: &'static str = "session and process group";

    /// From the /proc snapshot, and the terminal's settings through a
    /// duplicate of one of its descriptors (nothing is injected).
    pub fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        let stat = &context.proc.stat;
        let pid = context.proc.pid;
        let group: i32 = stat.number(5)?;
        let session: i32 = stat.number(6)?;
        let terminal_device: u64 = stat.number::<i64>(7)?.cast_unsigned() & 0xffff_ffff;
        let foreground_group: i32 = stat.number(8)?;
        let found = terminal_descriptor(pid, terminal_device);
        let terminal = match &found {
            Some((fd, _)) => {
                let duplicate = context.tracee.duplicate_descriptor(u64::from(fd.cast_unsigned()))?;
                match TerminalSettings::read(duplicate.as_fd()) {
                    Ok(settings) => Some(settings),
                    // A terminal hung up since (its emulator closed): it has
                    // no settings left to keep.
                    Err(nix::errno::Errno::EIO) => {
                        tracing::info!(pid, fd, "the process's terminal is hung up: no settings kept");
                        None
                    }
                    Err(errno) => {
                        return Err(CompoundError::Ptrace {
                            operation: "read the terminal's settings (TCGETS2, TIOCGWINSZ)",
                            pid,
                            errno,
                        });
                    }
                }
            }
            None => None,
        };
        let terminal_name = match (terminal_device, &found) {
            (0, _) => String::new(),
            (_, Some((_, Some(name)))) => name.clone(),
            (device, _) => format!("device {}:{}", libc::major(device), libc::minor(device)),
        };
        Ok(Self { session, group, terminal_device, terminal_name, foreground_group, terminal })
    }

    /// Whether the process had a controlling terminal.
    pub fn had_controlling_terminal(&self) -> bool {
        self.terminal_device != 0
    }

    /// Whether its group was the foreground job of its controlling
    /// terminal: the terminal's modes were then its own (a job in the
    /// background finds the shell's modes there, readline's at a prompt).
    pub fn was_in_foreground(&self) -> bool {
        self.had_controlling_terminal() && self.foreground_group == self.group
    }

    /// Whether it ran on a terminal: a controlling one, or one on its
    /// standard streams.
    pub fn ran_on_terminal(&self) -> bool {
        self.had_controlling_terminal() || self.terminal.is_some()
    }

    /// Where the process dumped as `pid` goes, restored as `restored_pid`:
    /// with crp restore when `attach` (crp restore waits for it on a
    /// controlling terminal) and it ran on a terminal; otherwise in a
    /// session of its own when it had a controlling terminal (it gets none)
    /// or led its session with its pid back; in a group of its own when it
    /// led its group with its pid back; else with crp restore.
    pub fn placement(&self, pid: i32, restored_pid: i32, attach: bool) -> Placement {
        let same_pid = pid == restored_pid;
        if attach && self.ran_on_terminal() {
            Placement::JoinRestorer
        } else if self.had_controlling_terminal() || (same_pid && self.session == pid) {
            Placement::OwnSession
        } else if same_pid && self.group == pid {
            Placement::OwnGroup
        } else {
            Placement::JoinRestorer
        }
    }

    /// Places the process being restored (crp's child, in crp's session
    /// and group until now) as `placement` says, by injected `setsid` or
    /// `setpgid`; what it became (a group whose id it would take exists
    /// already: it stays with crp restore).
    pub fn place(tracee: &mut dyn Tracee, placement: Placement) -> Result<Placement, EngineError> {
        let (name, number) = match placement {
            Placement::JoinRestorer => return Ok(placement),
            Placement::OwnSession => ("setsid", libc::SYS_setsid),
            Placement::OwnGroup => ("setpgid", libc::SYS_setpgid),
        };
        match tracee.raw_syscall(number, [0; 6])? {
            result if result == -i64::from(libc::EPERM) => Ok(Placement::JoinRestorer),
            result if (-4095..0).contains(&result) => Err(EngineError::Syscall {
                syscall: name,
                args: vec![],
                pid: tracee.pid(),
                errno: nix::errno::Errno::from_raw(i32::try_from(-result).unwrap_or(libc::EINVAL)),
            }),
            _ => Ok(placement),
        }
    }

    /// Refuses settings the restore could not set.
    pub fn check(&self) -> Result<(), Invalid> {
        match &self.terminal {
            Some(settings) => settings.check("terminal settings"),
            None => Ok(()),
        }
    }
}

/// A descriptor of `pid` on its terminal, and that terminal's name when
/// the descriptor shows it: one on the controlling terminal `device`
/// (shown by name, or /dev/tty), else the first terminal on fds 0-2.
fn terminal_descriptor(pid: i32, device: u64) -> Option<(i32, Option<String>)> {
    let terminal_of = |fd: i32| -> Option<(u64, String)> {
        let path = format!("/proc/{pid}/fd/{fd}");
        let metadata = std::fs::metadata(&path).ok()?;
        let link = std::fs::read_link(&path).ok()?.to_string_lossy().into_owned();
        (metadata.file_type().is_char_device() && crate::files::tty::is_terminal(metadata.rdev()))
            .then_some((metadata.rdev(), link))
    };
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    let terminals: Vec<(i32, u64, String)> =
        fds.iter().filter_map(|fd| terminal_of(*fd).map(|(rdev, link)| (*fd, rdev, link))).collect();
    if device != 0 {
        if let Some((fd, _, link)) = terminals.iter().find(|(_, rdev, _)| *rdev == device) {
            return Some((*fd, Some(link.clone())));
        }
        // /dev/tty is the controlling terminal, under another name.
        if let Some((fd, _, _)) = terminals.iter().find(|(_, rdev, _)| *rdev == libc::makedev(5, 0)) {
            return Some((*fd, None));
        }
    }
    terminals.iter().find(|(fd, ..)| (0..=2).contains(fd)).map(|(fd, _, link)| (*fd, Some(link.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

    fn state(session: i32, group: i32, terminal_device: u64) -> SessionState {
        SessionState { session, group, terminal_device, ..SessionState::default() }
    }

    #[test]
    fn placement_follows_the_terminal_and_what_the_process_led() {
        let on_terminal = state(10, 20, 0x8803);
        assert_eq!(on_terminal.placement(20, 20, true), Placement::JoinRestorer);
        assert_eq!(on_terminal.placement(20, 20, false), Placement::OwnSession, "no terminal for it: none at all");
        let daemon = state(20, 20, 0);
        assert_eq!(daemon.placement(20, 20, true), Placement::OwnSession, "it led its session, pid back");
        assert_eq!(daemon.placement(20, 21, true), Placement::JoinRestorer, "another pid cannot lead the old ids");
        let group_leader = state(10, 20, 0);
        assert_eq!(group_leader.placement(20, 20, false), Placement::OwnGroup);
        assert_eq!(state(10, 11, 0).placement(20, 20, false), Placement::JoinRestorer);
    }

    #[test]
    fn placing_is_one_injected_call_and_a_taken_group_keeps_it_with_crp() {
        let mut restored = FakeTracee::default();
        assert_eq!(SessionState::place(&mut restored, Placement::OwnSession).unwrap(), Placement::OwnSession);
        assert_eq!(restored.calls_of(libc::SYS_setsid).len(), 1);
        let mut taken = FakeTracee::answering(|_, _| -i64::from(libc::EPERM));
        assert_eq!(SessionState::place(&mut taken, Placement::OwnGroup).unwrap(), Placement::JoinRestorer);
        let mut failing = FakeTracee::answering(|_, _| -i64::from(libc::EINVAL));
        let error = SessionState::place(&mut failing, Placement::OwnSession).unwrap_err().to_string();
        assert!(error.contains("setsid"), "{error}");
        let mut none = FakeTracee::default();
        assert_eq!(SessionState::place(&mut none, Placement::JoinRestorer).unwrap(), Placement::JoinRestorer);
        assert!(none.calls.is_empty());
    }

    #[test]
    fn the_fake_snapshot_has_no_terminal() {
        let mut process = FakeTracee::default();
        let proc = crp_ptrace::fake::snapshot();
        let captured =
            SessionState::capture(&mut Capture { tracee: &mut process, proc: &proc, stopped_before_freeze: false })
                .unwrap();
        assert_eq!(captured.terminal_device, 0);
        assert!(captured.terminal_name.is_empty() && !captured.ran_on_terminal());
    }
}
