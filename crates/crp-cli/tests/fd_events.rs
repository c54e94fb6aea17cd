//! Event descriptors: eventfds (count, semaphore mode, flags), timerfds
//! (time left, interval, unread ticks, disarmed, an absolute deadline that
//! passes while the process is down) and a signalfd, each checked by the
//! restored process itself; a dump that leaves the process running takes
//! no count or tick from it.

mod common;

use std::process::Command;

use common::*;

fn events_subject() -> Subject {
    Subject::spawn(Command::new(c_program("fd_events")))
}

#[test]
fn event_descriptors_come_back_with_their_counts_times_ticks_and_masks() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = events_subject();
    let image = directory.path().join("events.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());

    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    for expected in [
        "fd 3   eventfd, count 1099511627781 (flags 0o4002)",
        "fd 4   eventfd, count 3, semaphore (flags 0o2000002)",
        "fd 5   timerfd on CLOCK_MONOTONIC, 29.",
        "s left, every 1s, 0 ticks unread",
        "fd 7   timerfd on CLOCK_MONOTONIC, disarmed, every 5s, 0 ticks unread (flags 0o4002)",
        "(absolute), 0 ticks unread, cancelled if the clock is set",
        "fd 9   signalfd for SIGUSR1 (0x200)",
    ] {
        assert!(inspected.contains(expected), "{expected:?} not in\n{inspected}");
    }
    let json = inspect_json(&image);
    let files = json["files"].as_array().unwrap();
    let fd = |number: i32| files.iter().find(|file| file["fd"] == number).unwrap();
    assert_eq!(fd(3)["kind"], "eventfd");
    assert_eq!(fd(3)["eventfd"]["count"], (1u64 << 40) + 5);
    assert_eq!(fd(4)["eventfd"]["semaphore"], true);
    assert_eq!(fd(6)["kind"], "timerfd");
    assert!(fd(6)["timerfd"]["ticks"].as_u64().unwrap() >= 3, "{}", fd(6));
    assert_eq!(fd(6)["timerfd"]["interval"]["nanoseconds"], 20_000_000);
    assert_eq!(fd(8)["timerfd"]["armed"], true, "the deadline had not passed at the dump: {}", fd(8));
    assert_eq!(fd(9)["signalfd"]["mask"]["names"][0], "SIGUSR1");
    assert!(fd(3)["timerfd"].is_null() && fd(9)["eventfd"].is_null());

    // fd 8's deadline passes while the process is down.
    wait_past_timerfd_deadline(&json, 8);
    let output = restore(&image, &[], "restored\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} events restored\n", subject.pid));
}

#[test]
fn a_dump_that_leaves_the_process_running_takes_no_count_or_tick() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = events_subject();
    let image = directory.path().join("events.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    subject.send("original\n");
    assert_eq!(subject.read_line(), format!("OK pid={} events original\n", subject.pid));
    assert!(subject.wait().success());
}
