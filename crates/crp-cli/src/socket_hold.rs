//! While crp reads the process's sockets (a connection in repair mode, a
//! queue walked with its peek offset moved), the process is held in the
//! kernel, not merely stopped: a crp that dies lets a stopped process go
//! at once, racing the watchdog that puts the sockets back (measured: the
//! released process ran first in 27 of 70 kills, its `recv` failing with
//! EPERM; the watchdog's CPU may not even be running then). Held, it
//! cannot run before the watchdog is done.
//!
//! The hold: an injected `rt_sigtimedwait` for a signal the parked process
//! has blocked (parking blocks them all) and that is pending for neither
//! it nor the thread, left running. crp ends it by sending that signal to
//! the thread, which the wait takes (it is never delivered); a crp that
//! dies leaves that to the watchdog, which sends it once every socket is
//! put back. The wait returns into the parked `rt_sigreturn` and the
//! process carries on where it was frozen, with no descriptor or mapping
//! added. Were crp and its watchdog both killed, the wait's timeout
//! ([`HOLD_TIMEOUT_SECONDS`]) lets the process go. Only the leader is
//! held: a dying crp lets the other threads of a process go as before.
//! Both back ends read the descriptors this way.

use crp_ptrace::procfs::Fields;
use crp_ptrace::{Frozen, Tracee, TraceeExt};

use crate::error::CrpError;

/// How long the process waits at most, were crp and its watchdog both gone.
pub const HOLD_TIMEOUT_SECONDS: i64 = 30;
/// The signals a hold may wait for, the least used first (SIGSTKFLT is
/// never sent by Linux on x86).
const HOLD_SIGNALS: [i32; 3] = [libc::SIGSTKFLT, libc::SIGPWR, libc::SIGXFSZ];

/// Runs `work` with the parked `frozen` held when the process has a
/// socket; as is otherwise, or when no watchdog can be started.
pub fn while_held<T>(frozen: &mut Frozen, work: impl FnOnce() -> Result<T, CrpError>) -> Result<T, CrpError> {
    let pid = frozen.pid().as_raw();
    let Some(signal) = hold_signal(pid) else { return work() };
    let held = match crp_compound::files::socket::hold(pid, pid, signal) {
        Ok(held) => held,
        Err(errno) => {
            tracing::warn!(pid, %errno, "no watchdog: the process is not held while its sockets are read");
            return work();
        }
    };
    let (set, timeout) = write_wait_arguments(frozen, signal)?;
    frozen.start_syscall(libc::SYS_rt_sigtimedwait, [set, 0, timeout, 8, 0, 0])?;
    tracing::debug!(pid, signal, "held waiting for a signal while the sockets are read");
    let result = work();
    let ended = end_hold(frozen, held, signal, set, timeout);
    let value = result?;
    ended?;
    Ok(value)
}

/// The signal a hold of `pid` waits for: one pending for neither the
/// process nor its leader. None when the process has no socket.
fn hold_signal(pid: i32) -> Option<i32> {
    if !has_socket(pid) {
        return None;
    }
    let status = Fields::status(pid).ok()?;
    let pending = status.hex("SigPnd").ok()? | status.hex("ShdPnd").ok()?;
    HOLD_SIGNALS.into_iter().find(|signal| pending & (1u64 << (signal - 1)) == 0)
}

/// Whether any descriptor of `pid` is a socket.
fn has_socket(pid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return true };
    entries.flatten().any(|entry| {
        std::fs::read_link(entry.path()).is_ok_and(|link| link.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
    })
}

/// Writes the wait's signal set and timeout into the scratch area: their
/// addresses.
fn write_wait_arguments(frozen: &mut Frozen, signal: i32) -> Result<(u64, u64), CrpError> {
    let mut scratch = frozen.scratch();
    let set = scratch.push(&(1u64 << (signal - 1)).to_ne_bytes());
    let timeout = scratch.push(&[HOLD_TIMEOUT_SECONDS.to_ne_bytes(), 0i64.to_ne_bytes()].concat());
    scratch.commit(frozen)?;
    Ok((set, timeout))
}

/// Ends the hold: the watchdog forgets it first (a crp killed right after
/// leaves the wait to its timeout, never a second signal), then crp sends
/// the signal and waits for the end of the wait. A wait that ended first
/// (its timeout) leaves crp's signal pending: it is taken by a wait that
/// does not block, so that it never reaches the process.
fn end_hold(
    frozen: &mut Frozen,
    held: crp_compound::files::socket::Held,
    signal: i32,
    set: u64,
    timeout: u64,
) -> Result<(), CrpError> {
    let pid = frozen.pid().as_raw();
    drop(held);
    // SAFETY: sends a signal to one thread crp traces; no memory is involved.
    let sent = unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, signal) } == 0;
    let ended = frozen.finish_syscall()?;
    if ended != i64::from(signal) && sent {
        frozen.write_memory(timeout, &[0; 16])?;
        frozen.syscall("rt_sigtimedwait", libc::SYS_rt_sigtimedwait, [set, 0, timeout, 8, 0, 0])?;
    }
    Ok(())
}
