//! The inspect summaries of what a process holds queued or armed in the
//! kernel: its pending signals (process-wide and per thread, in queue
//! order) and its POSIX timers, with the text lines for them.

use std::fmt::Write;

use crp_compound::pending_signals::{QueuedSignal, code_name};
use crp_compound::posix_timers::{SIGEV_NONE, SIGEV_THREAD_ID, clock_name};
use crp_compound::signals::signal_name;
use serde::Serialize;

use crate::model::ProcessImage;

/// One pending signal, in the order it was queued.
#[derive(Debug, Serialize)]
pub struct PendingSignalSummary {
    /// `process` (the process-wide queue) or `thread`.
    pub queue: &'static str,
    /// The thread whose queue holds it; null for the process-wide queue.
    pub tid: Option<i32>,
    pub signal: i32,
    pub name: String,
    /// `si_code`, and its name.
    pub code: i32,
    pub code_name: String,
    /// `si_pid` and `si_uid` of a signal a process sent; else null.
    pub sender_pid: Option<i32>,
    pub sender_uid: Option<u32>,
    /// `si_value` of a SI_QUEUE, SI_TIMER or SI_MESGQ signal; else null.
    pub value: Option<u64>,
}

fn pending(queue: &'static str, tid: Option<i32>, queued: &QueuedSignal) -> PendingSignalSummary {
    let signal = queued.signal();
    let sender = queued.sender();
    PendingSignalSummary {
        queue,
        tid,
        signal,
        name: signal_name(signal),
        code: queued.code(),
        code_name: code_name(signal, queued.code()),
        sender_pid: sender.map(|(pid, _)| pid),
        sender_uid: sender.map(|(_, uid)| uid),
        value: queued.value(),
    }
}

/// The process-wide queue first, then each thread's.
pub fn pending_signals(image: &ProcessImage) -> Vec<PendingSignalSummary> {
    let shared = image.pending_signals.queue.iter().map(|queued| pending("process", None, queued));
    let threads = image.threads.iter().flat_map(|thread| {
        thread.pending_signals.queue.iter().map(|queued| pending("thread", Some(thread.tid), queued))
    });
    shared.chain(threads).collect()
}

/// The text lines of the pending signals, below the signals section.
pub fn render_pending(out: &mut String, pending: &[PendingSignalSummary]) {
    if pending.is_empty() {
        let _ = writeln!(out, "  no signal pending");
    }
    for signal in pending {
        let queue = match signal.tid {
            Some(tid) => format!("thread {tid}"),
            None => "process".to_owned(),
        };
        let mut line = format!("  pending     {} ({queue} queue), {}", signal.name, signal.code_name);
        if let (Some(pid), Some(uid)) = (signal.sender_pid, signal.sender_uid) {
            let _ = write!(line, " from pid {pid} uid {uid}");
        }
        if let Some(value) = signal.value {
            let _ = write!(line, ", value {value:#x}");
        }
        let _ = writeln!(out, "{line}");
    }
}

/// One POSIX timer.
#[derive(Debug, Serialize)]
pub struct PosixTimerSummary {
    pub id: i32,
    pub clock: i32,
    pub clock_name: String,
    /// `signal` (SIGEV_SIGNAL), `none` (SIGEV_NONE) or `thread`
    /// (SIGEV_THREAD_ID, to `thread`).
    pub notify: &'static str,
    pub signal: i32,
    pub signal_name: String,
    /// `sigev_value`.
    pub value: u64,
    /// The thread a SIGEV_THREAD_ID timer signals; else null.
    pub thread: Option<i32>,
    pub armed: bool,
    pub left_nanoseconds: u64,
    pub interval_nanoseconds: u64,
    /// `timer_getoverrun` at the dump. Not restored: it starts at 0 again.
    pub overrun_at_dump: i32,
}

pub fn posix_timers(image: &ProcessImage) -> Vec<PosixTimerSummary> {
    image
        .posix_timers
        .timers
        .iter()
        .map(|timer| PosixTimerSummary {
            id: timer.id,
            clock: timer.clock,
            clock_name: clock_name(timer.clock),
            notify: match timer.notify {
                SIGEV_NONE => "none",
                SIGEV_THREAD_ID => "thread",
                _ => "signal",
            },
            signal: timer.signal,
            signal_name: signal_name(timer.signal),
            value: timer.value,
            thread: (timer.notify == SIGEV_THREAD_ID).then_some(timer.thread),
            armed: timer.left_ns != 0,
            left_nanoseconds: timer.left_ns,
            interval_nanoseconds: timer.interval_ns,
            overrun_at_dump: timer.overrun,
        })
        .collect()
}

fn seconds(nanoseconds: u64) -> String {
    format!("{:.3} s", nanoseconds as f64 / 1e9)
}

/// The text lines of the POSIX timers, in the timers section.
pub fn render_posix_timers(out: &mut String, timers: &[PosixTimerSummary]) {
    for timer in timers {
        let notify = match timer.notify {
            "none" => "no notification".to_owned(),
            "thread" => format!("{} to thread {}", timer.signal_name, timer.thread.unwrap_or(0)),
            _ => timer.signal_name.clone(),
        };
        let state = if timer.armed {
            format!("{} left, interval {}", seconds(timer.left_nanoseconds), seconds(timer.interval_nanoseconds))
        } else {
            "disarmed".to_owned()
        };
        let _ = writeln!(
            out,
            "  POSIX timer {} on {}, {notify}, value {:#x}, {state}; overrun {} at the dump (not restored: 0 after)",
            timer.id, timer.clock_name, timer.value, timer.overrun_at_dump
        );
    }
}
