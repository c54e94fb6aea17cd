//! Real programs are dumped, killed, restored, and then check their own
//! state: memory, TLS, vector registers, file mappings, guard pages, a
//! syscall they were blocked in, their PID.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn state_subject(program: &Path, directory: &Path) -> Subject {
    let (private, shared) = state_files(directory);
    let mut command = Command::new(program);
    command.arg("state").arg(private).arg(shared);
    Subject::spawn(command)
}

fn dump_kill_restore_state(program: &Path) {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = state_subject(program, directory.path());
    let image = directory.path().join("state.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &[], "go\n");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "restore: {}\n{}", stdout, stderr_of(&output));
    assert!(stdout.starts_with(&format!("OK pid={} ", subject.pid)), "{stdout}");
    assert!(stdout.ends_with("line=go\n"), "{stdout}");
}

#[test]
fn dynamic_program_keeps_heap_tls_vectors_mappings_and_pid() {
    dump_kill_restore_state(&programs().dynamic);
}

#[test]
fn static_program_keeps_heap_tls_vectors_mappings_and_pid() {
    dump_kill_restore_state(&programs().static_);
}

#[test]
fn process_blocked_in_nanosleep_sleeps_the_rest_of_its_time() {
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "3"]);
    let mut subject = Subject::spawn(command);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let image = directory.path().join("sleep.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &[], "");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    let slept: f64 = stdout
        .trim()
        .rsplit_once("slept=")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(slept >= 3.0, "{stdout}");
}

#[test]
fn leave_running_then_restore_a_second_copy() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let mut original = state_subject(&programs().dynamic, directory.path());
    let image = directory.path().join("copy.crp");
    dump_ok(original.pid, &image, &["--leave-running"]);
    assert_eq!(status_field(original.pid, "TracerPid"), "0");

    // The old PID is taken: --pid-must-match refuses, creating nothing.
    let refused = restore(&image, &["--pid-must-match"], "");
    assert_eq!(refused.status.code(), Some(6), "{}", stderr_of(&refused));
    assert!(stderr_of(&refused).contains(&format!("pid {} is in use", original.pid)));

    // Without it, the copy gets a new PID and runs beside the original.
    let mut restorer =
        crp().arg("restore").arg(&image).arg("--detach").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    // Child::wait closes stdin: keep our end of the copy's stdin first.
    let mut copy_input = restorer.stdin.take().unwrap();
    let mut copy_output = BufReader::new(restorer.stdout.take().unwrap());
    let mut pid_line = String::new();
    copy_output.read_line(&mut pid_line).unwrap();
    assert!(restorer.wait().unwrap().success());
    let copy_pid: i32 = pid_line.trim().parse().unwrap_or_else(|_| panic!("{pid_line:?}"));
    assert_ne!(copy_pid, original.pid);
    copy_input.write_all(b"copy\n").unwrap();
    let mut copy_result = String::new();
    copy_output.read_line(&mut copy_result).unwrap();
    assert_eq!(wait_pid(copy_pid), 0, "{copy_result}");
    assert!(copy_result.starts_with(&format!("OK pid={copy_pid} ")), "{copy_result}");

    original.send("original\n");
    let result = original.read_line();
    assert!(result.starts_with(&format!("OK pid={} ", original.pid)), "{result}");
    assert!(result.ends_with("line=original\n"));
    assert!(original.wait().success());
}

#[test]
fn the_same_image_restores_twice_in_a_row() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = state_subject(&programs().dynamic, directory.path());
    let image = directory.path().join("twice.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    for round in ["first\n", "second\n"] {
        let output = restore(&image, &["--pid-must-match"], round);
        let stdout = stdout_of(&output);
        assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
        assert!(stdout.starts_with(&format!("OK pid={} ", subject.pid)), "{stdout}");
        assert!(stdout.ends_with(&format!("line={round}")), "{stdout}");
    }
}

#[test]
fn exit_status_of_the_restored_process_is_passed_on() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = state_subject(&programs().dynamic, directory.path());
    let image = directory.path().join("eof.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    // No input: read() sees end of file and the program fails with 1.
    let output = restore(&image, &[], "");
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert!(stdout_of(&output).starts_with("FAIL read from stdin"));
}

/// A process of an unprivileged user comes back as that user (not as the
/// root crp runs as), with its resource limits and a pending alarm that
/// still fires on time.
#[test]
fn unprivileged_process_keeps_its_user_limits_and_alarm() {
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.arg("identity").uid(NOBODY).gid(NOBODY).current_dir("/");
    let mut subject = Subject::spawn(command);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let image = directory.path().join("identity.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &[], "");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    let expected = format!(
        "OK pid={} uid={NOBODY}/{NOBODY}/{NOBODY} gid={NOBODY}/{NOBODY}/{NOBODY} groups=0 nofile=123/456 dumpable=1 alarm=",
        subject.pid
    );
    assert!(stdout.starts_with(&expected), "{stdout}");
}
