//! Unix socket pairs both of whose ends the process holds: stream,
//! datagram and seqpacket, with their queues, options and shutdown state;
//! a descriptor in flight and a peer outside the process are refused.

mod common;

use std::process::Command;

use common::*;

fn sockets_subject(mode: &str) -> Subject {
    let mut command = Command::new(c_program("fd_sockets"));
    command.arg(mode);
    Subject::spawn(command)
}

#[test]
fn socket_pairs_come_back_with_their_queues_options_and_shutdowns() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = sockets_subject("pairs");
    let image = directory.path().join("pairs.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(inspected.contains("datagram pair with fd 5, 3 messages (6 bytes) waiting"), "{inspected}");
    assert!(
        inspected.contains("seqpacket pair with fd 8, 1 messages (6 bytes) waiting, read shut down"),
        "{inspected}"
    );
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} pairs\n", subject.pid));
}

#[test]
fn a_dump_that_leaves_the_process_running_leaves_its_queues_in_place() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = sockets_subject("pairs");
    let image = directory.path().join("pairs.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} pairs\n", subject.pid));
    assert!(subject.wait().success());
}

#[test]
fn a_descriptor_in_flight_is_refused_and_the_process_runs_on() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = sockets_subject("inflight");
    let image = directory.path().join("inflight.crp");
    let output = dump(subject.pid, &image, &[]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("descriptors (SCM_RIGHTS)"), "{}", stderr_of(&output));
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} inflight\n", subject.pid));
}

#[test]
fn a_socket_connected_outside_the_process_is_refused_naming_its_peer() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = sockets_subject("outside");
    let output = dump(subject.pid, &directory.path().join("outside.crp"), &[]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let message = stderr_of(&output);
    assert!(
        message.contains("a unix socket connected to socket:[") && message.contains("outside the process"),
        "{message}"
    );
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} outside\n", subject.pid));
}
