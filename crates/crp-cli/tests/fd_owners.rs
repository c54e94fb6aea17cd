//! Descriptor owners: the process, thread or group F_SETOWN_EX named and
//! the F_SETSIG signal come back, and a signal-driven (O_ASYNC) pipe still
//! signals the restored process, checked by the process itself.

mod common;

use std::process::Command;

use common::*;

#[test]
fn owners_and_their_signals_come_back_and_still_signal() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = Subject::spawn(Command::new(c_program("fd_owner")));
    let image = directory.path().join("owners.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());

    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    for expected in [
        "signals (F_SETOWN) go to process itself, signal SIGRTMIN+1",
        "signals (F_SETOWN) go to thread itself",
        "signals (F_SETOWN) go to process group ",
    ] {
        assert!(inspected.contains(expected), "{expected:?} not in\n{inspected}");
    }
    let json = stdout_of(&crp().arg("inspect").arg("--json").arg(&image).output().unwrap());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let files = json["files"].as_array().unwrap();
    let fd = |number: i32| files.iter().find(|file| file["fd"] == number).unwrap();
    assert_eq!(fd(3)["owner"]["kind"], "process");
    assert_eq!(fd(3)["owner"]["itself"], true);
    assert_eq!(fd(3)["owner"]["signal"], 35);
    assert_eq!(fd(5)["owner"]["kind"], "thread");
    let group = nix::unistd::getpgrp().as_raw();
    assert_eq!(fd(7)["owner"]["kind"], "process group");
    assert_eq!(fd(7)["owner"]["id"], group, "the subject runs in the test's process group");
    assert!(fd(4)["owner"].is_null() && fd(6)["owner"].is_null());

    let output = restore(&image, &[], "restored\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} owners restored\n", subject.pid));
    assert!(!stderr_of(&output).contains("no longer exists"), "{}", stderr_of(&output));
}

#[test]
fn an_owner_gone_since_the_dump_is_named_in_a_warning() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = Subject::spawn(Command::new(c_program("fd_owner")));
    let image = directory.path().join("owners.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    // Make fd 7's owner a process that has exited and been reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = i32::try_from(gone.id()).unwrap();
    gone.wait().unwrap();
    let rewritten = rewritten_image(&image, |image| {
        let file = image.files.descriptors.iter().find(|descriptor| descriptor.fd == 7).unwrap().file;
        let owner = image.files.files[file as usize].owner.as_mut().unwrap();
        owner.kind = crp_compound::files::OwnerKind::Process;
        owner.id = crp_compound::files::OwnerId::Other(gone_pid);
    });
    let output = restore(&rewritten, &[], "restored\n");
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(&format!("fd 7 sent its signals (F_SETOWN) to process {gone_pid}, which no longer exists")),
        "{stderr}"
    );
    // The process sees fd 7 without its owner, and says so.
    let stdout = stdout_of(&output);
    assert!(stdout.starts_with("FAIL fd 7 is not owned by the launcher's group"), "{stdout}{stderr}");
}
