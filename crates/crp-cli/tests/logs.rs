//! crp's diagnostic log: `-v` names the phases of a dump and a restore on
//! stderr, `-vv` every injected syscall, `--log-file` keeps everything at
//! debug level in a file; without them stderr holds only crp's own lines.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// A running `sleep` subject (killed and reaped when dropped). Its stderr
/// is /dev/null, so that a restored copy holds no pipe of the test's.
fn sleeper() -> Subject {
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "60"]);
    Subject::spawn_with_stderr(command, Stdio::null())
}

/// What `crp restore --detach` wrote on stderr.
struct Restored {
    stderr: String,
}

/// `crp restore --detach IMAGE [extra]`; the restored process is killed
/// and reaped once crp has said its PID. The restored process inherits
/// crp's stdout (it was a pipe): only its first line, the PID, is read.
fn restore_detached_with(image: &Path, extra: &[&str]) -> Restored {
    become_subreaper();
    let mut restorer = crp()
        .arg("restore")
        .arg("--detach")
        .arg(image)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(restorer.stdout.take().unwrap());
    let mut pid_line = String::new();
    stdout.read_line(&mut pid_line).unwrap();
    let mut stderr = String::new();
    restorer.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(restorer.wait().unwrap().success(), "restore failed: {stderr}");
    let pid: i32 = pid_line.trim().parse().unwrap_or_else(|_| panic!("a pid on stdout, got {pid_line:?}; {stderr}"));
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    nix::sys::wait::waitpid(pid, None).unwrap();
    Restored { stderr }
}

/// Asserts each phase appears in `text`, in this order.
fn assert_phases_in_order(text: &str, phases: &[&str]) {
    let mut from = 0;
    for phase in phases {
        let found = text[from..].find(phase).unwrap_or_else(|| panic!("no {phase:?} after byte {from} in:\n{text}"));
        from += found + phase.len();
    }
}

fn image_in(directory: &tempfile::TempDir) -> PathBuf {
    directory.path().join("logged.crp")
}

#[test]
fn verbose_dump_names_each_phase_then_the_summary() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = sleeper();
    let output = dump(subject.pid, &image_in(&directory), &["-v"]);
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    assert_killed(subject.wait());
    assert_phases_in_order(
        &stderr,
        &[
            "INFO dump: checking the process",
            "preflight passed",
            "frozen",
            "parked",
            "captured pid",
            "vmas=",
            "pages written bytes=",
            "image finished",
            "killed",
            "crp: dumped pid",
        ],
    );
    assert!(!stderr.contains("DEBUG"), "-v is info only:\n{stderr}");
    assert!(!stderr.contains("injected syscall"), "{stderr}");
}

#[test]
fn verbose_restore_names_each_phase() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = sleeper();
    dump_ok(subject.pid, &image_in(&directory), &[]);
    assert_killed(subject.wait());
    let output = restore_detached_with(&image_in(&directory), &["-v"]);
    assert_phases_in_order(
        &output.stderr,
        &[
            "restore: opening the image",
            "image validated",
            "host checked",
            "child created pid=",
            "memory mapped",
            "state restored",
            "released",
        ],
    );
}

#[test]
fn very_verbose_shows_every_injected_syscall() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = sleeper();
    // The option is global: it may stand before the command too.
    let output =
        crp().arg("-vv").arg("dump").arg(subject.pid.to_string()).arg("-o").arg(image_in(&directory)).output().unwrap();
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    assert_killed(subject.wait());
    let injected: Vec<&str> = stderr.lines().filter(|line| line.contains("injected syscall (parked)")).collect();
    assert!(injected.len() >= 5, "expected the dump's injected syscalls:\n{stderr}");
    assert!(injected.iter().all(|line| line.contains("number=") && line.contains("args=") && line.contains("result=")));
    let output = restore_detached_with(&image_in(&directory), &["-vv"]);
    assert!(output.stderr.contains("injected syscall (restore child)"), "{}", output.stderr);
}

#[test]
fn without_verbose_stderr_is_the_one_line_summary() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = sleeper();
    let output = dump(subject.pid, &image_in(&directory), &[]);
    assert_killed(subject.wait());
    let stderr = stderr_of(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("crp: dumped pid {} to ", subject.pid)), "{stderr}");
    let output = restore_detached_with(&image_in(&directory), &[]);
    assert_eq!(output.stderr, "", "a detached restore prints only the pid, on stdout");
}

#[test]
fn log_file_keeps_debug_lines_while_stderr_stays_quiet() {
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("crp.log");
    let mut subject = sleeper();
    let output = dump(subject.pid, &image_in(&directory), &["--log-file", log.to_str().unwrap()]);
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    assert_killed(subject.wait());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_phases_in_order(
        &text,
        &["crp started", "preflight passed", "injected syscall", "captured", "image finished"],
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);

    // The file is appended to: a restore's lines follow the dump's.
    restore_detached_with(&image_in(&directory), &["--log-file", log.to_str().unwrap()]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_phases_in_order(&text, &["image finished", "restore: opening the image", "released"]);
}

#[test]
fn a_failure_is_one_stderr_line_and_is_kept_in_the_log_file() {
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("crp.log");
    let missing = directory.path().join("missing.crp");
    let output =
        crp().arg("restore").arg(&missing).arg("--log-file").arg(&log).arg("-v").stdin(Stdio::null()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    let errors: Vec<&str> = stderr.lines().filter(|line| line.contains("No such file")).collect();
    assert_eq!(errors.len(), 1, "the error once on stderr, even with -v:\n{stderr}");
    assert!(errors[0].starts_with("crp: error: "), "{stderr}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|line| line.contains("ERROR") && line.contains("No such file") && line.contains("exit_code=1")),
        "{text}"
    );
}

#[test]
fn an_unwritable_log_file_is_refused_naming_it() {
    let output = crp().args(["check", "--log-file", "/nonexistent-dir/crp.log"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("cannot open the log file /nonexistent-dir/crp.log"), "{stderr}");
    assert_eq!(stdout_of(&output), "", "nothing ran");
}
