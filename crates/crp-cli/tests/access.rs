//! Who may dump a process: a user without the rights is told so (not "no
//! process"), and a process someone else already traces is refused naming
//! that tracer (not a raw `PTRACE_SEIZE: EPERM`). Both leave the process as
//! it was.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;

const NOBODY: u32 = 65534;

fn sleeper() -> Subject {
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "30"]);
    Subject::spawn(command)
}

#[test]
fn nobody_dumping_roots_process_is_told_what_crp_lacks() {
    assert!(nix::unistd::geteuid().is_root(), "the integration tests run as root");
    let mut subject = sleeper();
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("never.crp");
    // Command::uid drops the supplementary groups too when run as root.
    let output =
        crp().uid(NOBODY).gid(NOBODY).arg("dump").arg(subject.pid.to_string()).arg("-o").arg(&image).output().unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "crp lacks permission to read and trace pid {} (owned by uid 0, crp runs as uid {NOBODY})",
        subject.pid
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("Permission denied") && stderr.contains("CAP_SYS_PTRACE"), "{stderr}");
    assert!(!stderr.contains("no process"), "{stderr}");
    assert!(!image.exists());
    assert_eq!(status_field(subject.pid, "TracerPid"), "0");
    assert!(subject.child.try_wait().unwrap().is_none(), "still running");
}

#[test]
fn a_process_traced_by_someone_else_is_refused_naming_the_tracer() {
    let mut subject = sleeper();
    let pid = nix::unistd::Pid::from_raw(subject.pid);
    // This test's thread becomes the tracer, as a debugger or another crp would.
    nix::sys::ptrace::seize(pid, nix::sys::ptrace::Options::empty()).unwrap();
    let tracer = nix::unistd::gettid().as_raw();
    let tracer_comm = std::fs::read_to_string(format!("/proc/{tracer}/comm")).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("never.crp");
    let output = dump(subject.pid, &image, &[]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "cannot dump pid {}: it is already being traced by pid {tracer} (`{}`)",
        subject.pid,
        tracer_comm.trim_end_matches('\n')
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("EPERM") && !stderr.contains("not supported"), "{stderr}");
    assert!(!image.exists());
    assert_eq!(status_field(subject.pid, "TracerPid"), tracer.to_string(), "still ours, untouched");
    assert!(subject.child.try_wait().unwrap().is_none(), "still running");
}
