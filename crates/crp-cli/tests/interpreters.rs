//! Real interpreters dumped mid-computation and restored give the same
//! result as an uninterrupted run.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts").join(name)
}

fn uninterrupted_result(interpreter: &str, script: &Path) -> String {
    let mut command = Command::new(interpreter);
    close_inherited_fds(&mut command);
    let output = command.arg(script).stdin(Stdio::null()).output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().last().unwrap().to_owned()
}

fn dumped_mid_computation_gives_the_same_result(interpreter: &str, script_name: &str) {
    let script = script(script_name);
    let expected = uninterrupted_result(interpreter, &script);
    assert!(expected.starts_with("RESULT "), "{expected}");

    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(interpreter);
    command.arg(&script);
    let mut subject = Subject::spawn(command);
    std::thread::sleep(Duration::from_millis(300));
    let image = directory.path().join("interpreter.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    // It really was interrupted: the original never printed its result.
    assert_eq!(subject.rest_of_output(), "");

    let output = restore(&image, &[], "");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert_eq!(stdout.trim_end(), expected);
}

#[test]
fn python3_mid_computation() {
    dumped_mid_computation_gives_the_same_result("python3", "compute.py");
}

#[test]
fn perl_mid_computation() {
    dumped_mid_computation_gives_the_same_result("perl", "compute.pl");
}

/// python3 with a signal handler, a pending kill() and sigqueue() signal,
/// two POSIX timers through ctypes and an flock: the restored interpreter
/// checks each itself.
#[test]
fn python3_signals_posix_timers_and_a_lock() {
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new("python3");
    command.arg(script("signals_timers.py"));
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("python-signals.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(inspected.contains("pending     SIGRTMIN+2 (process queue), SI_QUEUE"), "{inspected}");
    assert!(inspected.contains("POSIX timer 1 on CLOCK_MONOTONIC, SIGRTMIN+3, value 0x22"), "{inspected}");
    assert!(inspected.contains("flock write lock, the whole file"), "{inspected}");

    let output = restore(&image, &[], "go\n");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert_eq!(stdout, format!("OK pid={} python signals, timers and locks\n", subject.pid));
}
