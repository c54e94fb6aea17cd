//! Pending signals, standard and real-time, in the process-wide and the
//! thread's queue, some sent by the process itself and some by another
//! process (its parent, the test): after a restore the program finds each
//! still pending, blocked, in the same queue, in the same order, with the
//! same siginfo (si_code, si_pid, si_uid, si_value), and its handlers with
//! the same flags (SA_SIGINFO, SA_RESTART, SA_ONSTACK, SA_NODEFER,
//! SA_RESETHAND), masks and restorer, each behaving as its flags say.

mod common;

use std::process::Command;

use common::*;

const SIGRTMIN: i32 = 34;

/// Starts the program and sends it, from this process, SIGTERM (kill,
/// SI_USER) and SIGRTMIN+4 (sigqueue, SI_QUEUE, value 0x4242).
fn pending_subject() -> Subject {
    let mut subject = Subject::spawn(Command::new(c_program("signals_pending")));
    // SAFETY: plain syscalls on the subject's pid; sigval is a plain union.
    unsafe {
        assert_eq!(libc::kill(subject.pid, libc::SIGTERM), 0);
        let value = libc::sigval { sival_ptr: 0x4242 as *mut libc::c_void };
        assert_eq!(libc::sigqueue(subject.pid, SIGRTMIN + 4, value), 0);
    }
    subject.send("parent-sent\n");
    assert_eq!(subject.read_line(), "QUEUED\n");
    subject
}

#[test]
fn pending_signals_and_handlers_come_back_exactly() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = pending_subject();
    let test_pid = std::process::id();
    let image = directory.path().join("pending.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());

    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    let pid = subject.pid;
    for expected in [
        format!("pending     SIGUSR1 (process queue), SI_USER from pid {pid} uid 0"),
        format!("pending     SIGTERM (process queue), SI_USER from pid {test_pid} uid 0"),
        format!("pending     SIGRTMIN+2 (process queue), SI_QUEUE from pid {pid} uid 0, value 0x14d"),
        format!("pending     SIGRTMIN+4 (process queue), SI_QUEUE from pid {test_pid} uid 0, value 0x4242"),
        format!("pending     SIGUSR2 (thread {pid} queue), SI_TKILL from pid {pid} uid 0"),
        format!("pending     SIGRTMIN+3 (thread {pid} queue), SI_QUEUE from pid {pid} uid 0, value 0x7"),
    ] {
        assert!(inspected.contains(&expected), "{expected:?} not in\n{inspected}");
    }
    let json = stdout_of(&crp().arg("inspect").arg("--json").arg(&image).output().unwrap());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pending = json["pending_signals"].as_array().unwrap();
    let values: Vec<_> =
        pending.iter().filter(|signal| signal["signal"] == SIGRTMIN + 2).map(|s| &s["value"]).collect();
    assert_eq!(values, [111, 222, 333], "queue order is kept: {pending:?}");
    assert_eq!(pending.len(), 9, "{pending:?}");

    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={pid} pending signals and handlers restored\n"));
}

#[test]
fn a_dump_that_leaves_the_process_running_takes_no_pending_signal() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = pending_subject();
    let image = directory.path().join("pending.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} pending signals and handlers restored\n", subject.pid));
    assert!(subject.wait().success());

    // And the image restores them too, once the original is gone.
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} pending signals and handlers restored\n", subject.pid));
}

/// A process stopped (SIGSTOP) with signals pending comes back stopped with
/// them still pending: neither crp's freeze nor the stop takes or adds one.
#[test]
fn a_stopped_process_keeps_its_pending_signals_and_its_stop() {
    use std::io::Write;
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let mut subject = pending_subject();
    let pid = subject.pid;
    // SAFETY: a plain kill on the subject's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    while !status_field(pid, "State").starts_with('T') {
        std::thread::yield_now();
    }
    let image = directory.path().join("stopped.crp");
    dump_ok(pid, &image, &[]);
    assert_killed(subject.wait());
    let json = stdout_of(&crp().arg("inspect").arg("--json").arg(&image).output().unwrap());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["process"]["stopped"], true);
    assert_eq!(json["pending_signals"].as_array().unwrap().len(), 9, "no signal taken or added");

    let mut restored = restore_detached(&image);
    assert_eq!(restored.pid, pid);
    while !status_field(pid, "State").starts_with('T') {
        std::thread::yield_now();
    }
    // SAFETY: a plain kill on the restored pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    restored.stdin.write_all(b"go\n").unwrap();
    assert_eq!(restored.read_line(), format!("OK pid={pid} pending signals and handlers restored\n"));
    assert_eq!(wait_pid(pid), 0);
}

/// Real-time signals arriving while crp freezes the process (a 200 µs
/// timer's, unblocked) are delivered, not a failure of the dump nor lost:
/// every dump succeeds and leaves the process ticking, and so does the
/// restored one.
#[test]
fn real_time_signals_arriving_during_the_freeze_are_delivered() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = Subject::spawn(std::process::Command::new(c_program("rt_ticks")));
    let image = directory.path().join("ticks.crp");
    for _ in 0..10 {
        dump_ok(subject.pid, &image, &["--leave-running"]);
    }
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} ticks go on\n", subject.pid));
}
