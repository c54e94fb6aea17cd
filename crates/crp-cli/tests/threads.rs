//! Multi-threaded processes: every thread frozen, captured and restored
//! at its own thread id with its own registers, name, blocked mask,
//! affinity, alternate stack, robust list, clear_child_tid and pending
//! signals, each resuming the system call it was waiting in
//! (tests/programs/threads.c checks all of it from inside).

mod common;

use std::process::Command;

use common::*;

fn threads_subject() -> Subject {
    Subject::spawn(Command::new(c_program("threads")))
}

/// The ids of the threads of `pid`, the leader first.
fn thread_ids(pid: i32) -> Vec<i32> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    tids.sort_unstable_by_key(|tid| (*tid != pid, *tid));
    tids
}

#[test]
fn every_thread_comes_back_at_its_id_with_its_own_state() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = threads_subject();
    let tids = thread_ids(subject.pid);
    assert_eq!(tids.len(), 6, "{tids:?}");
    let image = directory.path().join("threads.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());

    let json = stdout_of(&crp().arg("inspect").arg("--json").arg(&image).output().unwrap());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let threads = json["threads"].as_array().unwrap();
    let listed: Vec<i64> = threads.iter().map(|thread| thread["tid"].as_i64().unwrap()).collect();
    assert_eq!(listed, tids.iter().map(|tid| i64::from(*tid)).collect::<Vec<_>>());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    for name in ["worker-0", "worker-4"] {
        assert!(inspected.contains(name), "{name} not in\n{inspected}");
    }

    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} threads restored\n", subject.pid));
}

/// `--leave-running`: every thread carries on untouched after the dump,
/// and the image restores all the same.
#[test]
fn a_multi_threaded_process_left_running_carries_on() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = threads_subject();
    let image = directory.path().join("threads.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    assert_eq!(thread_ids(subject.pid).len(), 6);
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} threads restored\n", subject.pid));
    assert!(subject.wait().success());

    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} threads restored\n", subject.pid));
}

/// The kmod back end records one task: it refuses a multi-threaded
/// process before touching it, and an image of one before the child
/// exists.
#[test]
fn the_kmod_back_end_refuses_threads_up_front() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = threads_subject();
    let image = directory.path().join("threads.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    subject.send("go\n");
    assert!(subject.wait().success());
    let restored = crp().args(["restore", "--backend", "kmod"]).arg(&image).output().unwrap();
    assert!(!restored.status.success());
    let said = stderr_of(&restored);
    // Without the module the device is said missing first; with it, the
    // threads are refused.
    assert!(said.contains("/dev/crp") || said.contains("more than one thread"), "{said}");
}
