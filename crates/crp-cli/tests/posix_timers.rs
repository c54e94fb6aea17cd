//! POSIX timers on every clock (CLOCK_REALTIME, MONOTONIC, BOOTTIME, TAI,
//! the process's and thread's CPU-time clocks, its CPU clock named by pid,
//! BOOTTIME_ALARM where the machine has an RTC), with SIGEV_SIGNAL,
//! SIGEV_NONE and SIGEV_THREAD_ID, sparse ids, armed, disarmed and
//! periodic: the restored program finds each with its id, clock, signal,
//! value, interval and time left, and a fast timer still firing with its
//! siginfo. `crp inspect` shows them and says the overrun count is not
//! restored.

mod common;

use std::process::Command;

use common::*;

#[test]
fn posix_timers_come_back_with_their_ids_clocks_and_times() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = Subject::spawn(Command::new(c_program("posix_timers")));
    let image = directory.path().join("timers.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());

    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    for expected in [
        "POSIX timer 0 on CLOCK_MONOTONIC, SIGRTMIN+1, value 0x1111, 29",
        "POSIX timer 1 on CLOCK_REALTIME, no notification, value 0x2222, 39",
        "POSIX timer 3 on CLOCK_BOOTTIME, SIGRTMIN+2 to thread",
        "value 0x3333, disarmed",
        "on CPU-time clock of its process, SIGUSR1, value 0x4444",
        "on CPU-time clock of its thread, no notification, value 0x5555",
        "(not restored: 0 after)",
    ] {
        assert!(inspected.contains(expected), "{expected:?} not in\n{inspected}");
    }
    let json = stdout_of(&crp().arg("inspect").arg("--json").arg(&image).output().unwrap());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let timers = json["posix_timers"].as_array().unwrap();
    let ids: Vec<_> = timers.iter().map(|timer| timer["id"].as_i64().unwrap()).collect();
    assert!(!ids.contains(&2) && !ids.contains(&4), "deleted ids stay free: {ids:?}");
    let fast = timers.iter().find(|timer| timer["value"] == 0x9999).unwrap();
    // timer_getoverrun counts for the last signal delivered: none yet.
    assert_eq!(fast["overrun_at_dump"], 0, "{fast}");
    assert_eq!(fast["interval_nanoseconds"], 1_000_000);
    let pending = json["pending_signals"].as_array().unwrap();
    assert!(pending.iter().any(|signal| signal["code_name"] == "SI_TIMER"), "its signal is pending: {pending:?}");

    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} posix timers restored\n", subject.pid));
}

/// A timer on an _ALARM clock needs CAP_WAKE_ALARM to be made again: a
/// crp restore without it refuses before the child exists, naming the
/// timer and the capability.
#[test]
fn an_alarm_timer_without_cap_wake_alarm_is_refused_before_anything_is_made() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = Subject::spawn(Command::new(c_program("posix_timers")));
    let image = directory.path().join("timers.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    // This machine may have no RTC for a real one: the image gets one, and
    // its process loses CAP_WAKE_ALARM (which crp restore would otherwise
    // refuse first, as a capability it could not give back).
    let changed = rewritten_image(&image, |image| {
        let timer = image.posix_timers.timers.last_mut().unwrap();
        timer.clock = 9;
        let ids = &mut image.credentials.ids;
        for set in [&mut ids.cap_inheritable, &mut ids.cap_permitted, &mut ids.cap_effective, &mut ids.cap_bounding] {
            *set &= !(1 << 35);
        }
    });
    let output = Command::new("setpriv")
        .args(["--bounding-set", "-wake_alarm", "--"])
        .arg(env!("CARGO_BIN_EXE_crp"))
        .arg("restore")
        .arg(&changed)
        .output()
        .unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CAP_WAKE_ALARM, to create POSIX timer"), "{stderr}");
    assert!(stderr.contains("CLOCK_BOOTTIME_ALARM"), "{stderr}");
    assert!(!process_exists(subject.pid), "nothing was made");
}
