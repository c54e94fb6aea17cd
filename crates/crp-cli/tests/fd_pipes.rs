//! Pipes: both ends in the process, with their bytes, sizes and flags; one
//! end only, its other end outside the process (closed at the restore, or
//! replaced by `--fd N=...`); the dump takes nothing out of a pipe.

mod common;

use std::process::Command;

use common::*;

fn pipes_subject(mode: &str) -> Subject {
    let mut command = Command::new(c_program("fd_pipes"));
    command.arg(mode);
    Subject::spawn(command)
}

#[test]
fn both_ends_of_pipes_come_back_with_their_bytes_size_and_flags() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = pipes_subject("inside");
    let image = directory.path().join("pipes.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(inspected.contains("read end (flags 0o4000), 13 bytes buffered of 65536"), "{inspected}");
    assert!(inspected.contains("300000 bytes buffered of 1048576"), "{inspected}");
    assert!(!inspected.contains("outside"), "{inspected}");
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} pipes\n", subject.pid));
    assert_eq!(stderr_of(&output), "", "no warning for pipes wholly inside");
}

#[test]
fn a_dump_that_leaves_the_process_running_leaves_its_pipes_full() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = pipes_subject("inside");
    let image = directory.path().join("pipes.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} pipes\n", subject.pid));
    assert!(subject.wait().success());
}

#[test]
fn a_pipe_whose_other_end_is_outside_comes_back_with_that_end_closed_and_a_warning() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = pipes_subject("outside");
    let image = directory.path().join("outside.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(inspected.contains("6 bytes buffered of 65536, other end outside the process"), "{inspected}");
    let json = stdout_of(&crp().arg("inspect").arg("--json").arg(&image).output().unwrap());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let fd9 = json["files"].as_array().unwrap().iter().find(|file| file["fd"] == 9).unwrap();
    assert_eq!(fd9["kind"], "pipe");
    assert_eq!(fd9["pipe"]["end"], "write");
    assert_eq!(fd9["pipe"]["other_end_outside"], true);
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} fd7=hello fd9=EPIPE\n", subject.pid));
    let warnings = stderr_of(&output);
    assert!(warnings.contains("fd 7 read from a pipe") && warnings.contains("with the 6 bytes it held"), "{warnings}");
    assert!(warnings.contains("fd 9 wrote to a pipe") && warnings.contains("--fd 9=inherit|null|FILE"), "{warnings}");
}

#[test]
fn a_pipe_end_can_be_handed_a_file_or_crp_restore_s_own_descriptor() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = pipes_subject("outside");
    let image = directory.path().join("outside.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let log = directory.path().join("fd9.log");
    let fd9 = format!("9={}", log.display());
    let output = restore(&image, &["--fd", &fd9], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} fd7=hello fd9=written\n", subject.pid));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "after restore\n");
    assert!(!stderr_of(&output).contains("fd 9"), "{}", stderr_of(&output));

    // `inherit` takes crp restore's own fd 9, here a file the caller opened.
    let inherited = directory.path().join("inherited.log");
    let script = format!(
        "exec {} restore {} --fd 9=inherit 9>>{}",
        env!("CARGO_BIN_EXE_crp"),
        image.display(),
        inherited.display()
    );
    let mut shell = Command::new("sh");
    shell.arg("-c").arg(script);
    close_inherited_fds(&mut shell);
    let mut child = shell.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"go\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stdout_of(&output));
    assert!(stdout_of(&output).ends_with("fd9=written\n"), "{}", stdout_of(&output));
    assert_eq!(std::fs::read_to_string(&inherited).unwrap(), "after restore\n");
}

#[test]
fn a_descriptor_to_hand_over_that_crp_restore_lacks_is_refused_before_anything_runs() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = pipes_subject("outside");
    let image = directory.path().join("outside.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &["--fd", "9=inherit"], "go\n");
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    let message = stderr_of(&output);
    assert!(message.contains("crp restore has no fd 9"), "{message}");
    assert!(!process_exists(subject.pid), "nothing was restored");
    let output = restore(&image, &["--fd", "nine=null"], "");
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("\"nine\" is not a descriptor number"), "{}", stderr_of(&output));
    let output = restore(&image, &["--stdout", "null", "--fd", "1=null"], "");
    assert!(stderr_of(&output).contains("fd 1 is chosen twice"), "{}", stderr_of(&output));
}
