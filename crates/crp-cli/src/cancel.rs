//! Cancelling crp with SIGTERM, SIGINT or SIGHUP: the handler only records
//! the signal; dump and restore check it between their steps and undo what
//! they did (the dumped process is released, a half-built child killed,
//! the unfinished image removed), then crp exits with 128 + N.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::error::CrpError;

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(signal: libc::c_int) {
    RECEIVED.store(signal, Ordering::SeqCst);
}

/// Installs the recording handler for `signals`. Without SA_RESTART, so
/// that a wait for a process returns to crp, which then decides.
pub fn install(signals: &[Signal]) {
    let action = SigAction::new(SigHandler::Handler(record), SaFlags::empty(), SigSet::empty());
    for signal in signals {
        // SAFETY: the handler only stores into an atomic, which is
        // async-signal-safe.
        let _ = unsafe { sigaction(*signal, &action) };
    }
}

/// The cancelling signal received so far, if any.
pub fn requested() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Fails with [`CrpError::Cancelled`] once a cancelling signal arrived.
pub fn check(operation: &'static str) -> Result<(), CrpError> {
    match requested() {
        Some(signal) => Err(CrpError::Cancelled { operation, signal }),
        None => Ok(()),
    }
}
