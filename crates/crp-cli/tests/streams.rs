//! `crp restore` from scripts: the restored process's standard streams
//! chosen explicitly (`--stdin/--stdout/--stderr inherit|null|FILE`), a
//! `--pidfile`, and a warning when the old PID is taken.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn sleeping_image(directory: &Path, seconds: &str) -> (i32, PathBuf) {
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", seconds]);
    let mut subject = Subject::spawn(command);
    let image = directory.join("sleep.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    (subject.pid, image)
}

fn fd_target(pid: i32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_detached_restore_with_chosen_streams_returns_at_once_and_writes_its_pidfile() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = sleeping_image(directory.path(), "2");
    let log = directory.path().join("out.log");
    let pidfile = directory.path().join("job.pid");
    // As `pid=$(crp restore --detach ...)` runs it: stdout a pipe read to
    // its end, which returns only once no process holds the pipe.
    let output = crp()
        .arg("restore")
        .arg("--detach")
        .args(["--stdin", "null", "--stderr", "null", "--stdout"])
        .arg(&log)
        .arg("--pidfile")
        .arg(&pidfile)
        .arg(&image)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(process_exists(pid), "the output was read only after the process ended");
    assert_eq!(stdout_of(&output), format!("{pid}\n"));
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), format!("{pid}\n"));
    assert_eq!(fd_target(pid, 0), "/dev/null");
    assert_eq!(fd_target(pid, 1), log.to_string_lossy());
    assert_eq!(fd_target(pid, 2), "/dev/null");
    assert_eq!(wait_pid(pid), 0);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.starts_with("OK pid="), "{said}");
}

#[test]
fn a_stdin_file_is_what_the_restored_process_reads() {
    let directory = tempfile::tempdir().unwrap();
    let (private, shared) = state_files(directory.path());
    let mut command = Command::new(&programs().dynamic);
    command.arg("state").arg(private).arg(shared).arg("1");
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("state.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let input = directory.path().join("input");
    std::fs::write(&input, "from-a-file\n").unwrap();
    let output = restore(&image, &["--stdin", input.to_str().unwrap()], "not-this\n");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(stdout_of(&output).ends_with("line=from-a-file\n"), "{}", stdout_of(&output));
}

#[test]
fn a_taken_pid_gives_a_new_one_with_a_warning_naming_both() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "2"]);
    let mut original = Subject::spawn(command);
    let image = directory.path().join("copy.crp");
    dump_ok(original.pid, &image, &["--leave-running"]);
    let output = crp().args(["restore", "--detach", "--stdout", "null"]).arg(&image).output().unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let copy: i32 = stdout_of(&output).trim().parse().unwrap();
    assert_ne!(copy, original.pid);
    let expected = format!("crp: warning: pid {} is in use; the process is restored as pid {copy}", original.pid);
    assert!(stderr_of(&output).contains(&expected), "{}", stderr_of(&output));
    assert_eq!(wait_pid(copy), 0);
    assert!(original.wait().success());
}

#[test]
fn a_bad_pidfile_or_stream_file_fails_before_any_process_exists() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = sleeping_image(directory.path(), "1");
    for (option, value, named) in [
        ("--pidfile", "/nonexistent-crp-dir/job.pid", "pid file /nonexistent-crp-dir/job.pid"),
        ("--stdin", "/nonexistent-crp-input", "/nonexistent-crp-input for the restored process's stdin"),
        ("--stdout", "/nonexistent-crp-dir/out", "/nonexistent-crp-dir/out for the restored process's stdout"),
    ] {
        let output = restore(&image, &[option, value], "");
        assert_eq!(output.status.code(), Some(1), "{option}: {}", stderr_of(&output));
        assert!(stderr_of(&output).contains(named), "{option}: {}", stderr_of(&output));
        assert!(!process_exists(pid), "{option}: a process was created");
    }
}
