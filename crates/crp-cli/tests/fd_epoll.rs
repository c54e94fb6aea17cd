//! epoll and inotify: registrations with their masks and data (nested,
//! one-shot, edge-triggered, under numbers closed or reused since) and
//! watches with their own watch numbers come back, and the restored
//! process sees the events it should; `crp inspect` shows them.

mod common;

use std::process::Command;

use common::*;

fn epoll_subject() -> Subject {
    let mut command = Command::new(c_program("fd_epoll"));
    command.arg("epoll");
    Subject::spawn(command)
}

fn inotify_subject(directory: &std::path::Path) -> Subject {
    let mut command = Command::new(c_program("fd_epoll"));
    command.arg("inotify").arg(directory);
    Subject::spawn(command)
}

#[test]
fn epoll_registrations_come_back_and_report_what_they_should() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = epoll_subject();
    let image = directory.path().join("epoll.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(inspected.contains("registers fd 7: events IN|ERR|HUP data 0x1111"), "{inspected}");
    assert!(inspected.contains("registers fd 9: events ONESHOT data 0x2222"), "{inspected}");
    assert!(inspected.contains("registers fd 16: events IN|ERR|HUP|ET data 0x5555"), "{inspected}");
    assert!(inspected.contains("registers fd 20 (its file is now fd 21)"), "{inspected}");
    assert!(inspected.contains("registers fd 22 (its file is now fd 23)"), "{inspected}");
    let json = stdout_of(&crp().arg("inspect").arg("--json").arg(&image).output().unwrap());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let files = json["files"].as_array().unwrap();
    let fd3 = files.iter().find(|file| file["fd"] == 3).unwrap();
    assert_eq!(fd3["kind"], "epoll");
    assert_eq!(fd3["epoll"].as_array().unwrap().len(), 6);
    let nested = fd3["epoll"].as_array().unwrap().iter().find(|registration| registration["target_fd"] == 12).unwrap();
    assert_eq!(nested["data"]["value"], 0x3333);
    let fd12 = files.iter().find(|file| file["fd"] == 12).unwrap();
    assert_eq!(fd12["epoll"][0]["target_fd"], 14);
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} epoll\n", subject.pid));
}

#[test]
fn a_dump_that_leaves_the_process_running_leaves_its_epolls_alone() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = epoll_subject();
    let image = directory.path().join("epoll.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} epoll\n", subject.pid));
    assert!(subject.wait().success());
}

#[test]
fn inotify_watches_come_back_with_their_numbers_and_fire() {
    let directory = tempfile::tempdir().unwrap();
    let watched = directory.path().join("watched");
    std::fs::create_dir(&watched).unwrap();
    let mut subject = inotify_subject(&watched);
    let image = directory.path().join("inotify.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    let watched_path = std::fs::canonicalize(&watched).unwrap();
    let line = format!("watch 1: {} (CREATE|DELETE)", watched_path.display());
    assert!(inspected.contains(&line), "{inspected}");
    let line = format!("watch 3: {}/file (MODIFY|ONESHOT)", watched_path.display());
    assert!(inspected.contains(&line), "{inspected}");
    assert!(inspected.contains("events queued at the dump are not kept"), "{inspected}");
    let json = stdout_of(&crp().arg("inspect").arg("--json").arg(&image).output().unwrap());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let fd5 = json["files"].as_array().unwrap().iter().find(|file| file["fd"] == 5).unwrap();
    assert_eq!(fd5["kind"], "inotify");
    assert_eq!(fd5["inotify"][1]["wd"], 3);
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} inotify\n", subject.pid));
}

#[test]
fn a_dump_that_leaves_the_process_running_leaves_its_inotify_alone() {
    let directory = tempfile::tempdir().unwrap();
    let watched = directory.path().join("watched");
    std::fs::create_dir(&watched).unwrap();
    let mut subject = inotify_subject(&watched);
    let image = directory.path().join("inotify.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} inotify\n", subject.pid));
    assert!(subject.wait().success());
}

#[test]
#[ignore = "asyncio's self-pipe is a socket pair, which crp refuses until socket pairs are restored"]
fn a_python_asyncio_loop_with_a_timer_a_pipe_and_its_self_pipe_carries_on() {
    let directory = tempfile::tempdir().unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/asyncio_loop.py");
    let mut command = Command::new("python3");
    command.arg(script);
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("asyncio.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(inspected.contains("anon_inode:[eventpoll]"), "{inspected}");
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} asyncio\n", subject.pid));
}
