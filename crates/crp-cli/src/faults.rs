//! A testing hook: `CRP_TEST_FAULT=MOMENT[@COUNT]:SIGNAL` makes crp send
//! itself SIGNAL (`KILL`, `TERM`, `INT`, `HUP`, or `STOP` to let a test
//! change the world while crp waits) when it reaches MOMENT
//! (the COUNTth time, for numbered moments), so that tests can kill or
//! cancel crp deterministically at every phase of a dump or restore and
//! check what it leaves behind. Unset, it costs one environment lookup.
//!
//! Moments: dump `frozen`, `parking`, `injecting@N` (before the Nth
//! injected syscall), `in-syscall@N` (while the process runs it),
//! `unparking`, `unparked`, `thread-parked@N` (the Nth thread other than
//! the leader is parked, the leader too), `tcp-repair@N` (the Nth TCP
//! connection end read is in repair mode), `peeking@N` (the Nth socket
//! queue walked has its peek offset moved), `captured`, `pages`, `written`
//! (the image is in place, the process not yet killed or released),
//! `copying@N` (a copy-on-write dump: before its Nth read of private
//! memory, the process released),
//! `repairing` (its TCP connections in repair mode, not yet killed);
//! restore `validated`, `cloned` (the child exists, not yet stopped or
//! traced), `thread-created@N` (the Nth thread other than the leader
//! exists), `built` (rebuilt, not yet released), `lazy@N` (a lazy
//! restore placed its Nth page run, on a fault or ahead of one; raised by
//! the pager thread).

use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    moment: String,
    count: u64,
    signal: i32,
}

fn parse(text: &str) -> Option<Fault> {
    let (at, signal) = text.rsplit_once(':')?;
    let (moment, count) = match at.split_once('@') {
        Some((moment, count)) => (moment, count.parse().ok()?),
        None => (at, 0),
    };
    let signal = match signal {
        "KILL" => libc::SIGKILL,
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "STOP" => libc::SIGSTOP,
        _ => return None,
    };
    Some(Fault { moment: moment.to_owned(), count, signal })
}

fn configured() -> Option<&'static Fault> {
    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    FAULT.get_or_init(|| std::env::var("CRP_TEST_FAULT").ok().as_deref().and_then(parse)).as_ref()
}

/// Called at each named moment; raises the configured signal there.
pub fn reached(moment: &'static str, count: u64) {
    if let Some(fault) = configured()
        && fault.moment == moment
        && fault.count == count
    {
        // SAFETY: raise only sends a signal to this thread.
        unsafe { libc::raise(fault.signal) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_moments_counts_and_signals() {
        assert_eq!(parse("injecting@3:KILL"), Some(Fault { moment: "injecting".into(), count: 3, signal: 9 }));
        assert_eq!(parse("written:TERM"), Some(Fault { moment: "written".into(), count: 0, signal: 15 }));
        assert_eq!(parse("written:STOP"), Some(Fault { moment: "written".into(), count: 0, signal: 19 }));
        assert_eq!(parse("written:USR1"), None);
        assert_eq!(parse("written"), None);
        assert_eq!(parse("injecting@x:KILL"), None);
    }
}
