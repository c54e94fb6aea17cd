//! Faults from the world around a dump or a restore: a full or read-only
//! file system, a folder that vanishes, I/O errors, the target killed
//! midway, a second dump of the same process, a memory cgroup too small for
//! a restore. After each: the process as it was (its own check passes),
//! untraced; no file left; no process left. Moments mid-dump are reached
//! deterministically: `CRP_TEST_FAULT=MOMENT:STOP` stops crp there, the
//! test changes the world, then continues crp.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

fn state_subject(files: &Path) -> Subject {
    let (private, shared) = state_files(files);
    let mut command = Command::new(&programs().dynamic);
    command.arg("state").arg(private).arg(shared);
    Subject::spawn(command)
}

/// The subject answers its own check: everything it set up is intact.
fn assert_intact(mut subject: Subject, after: &str) {
    assert_eq!(status_field(subject.pid, "TracerPid"), "0", "traced after {after}");
    subject.send("go\n");
    let verdict = subject.read_line();
    assert!(verdict.starts_with(&format!("OK pid={} ", subject.pid)), "after {after}: {verdict}");
}

fn entries(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into())
        .collect();
    names.sort();
    names
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Mount {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(options: &str) -> Mount {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(&path).status().unwrap();
        assert!(status.success(), "mount tmpfs -o {options}");
        Mount { path, _parent: parent }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn crp_dump(pid: i32, image: &Path, fault: Option<&str>, extra: &[&str]) -> Command {
    let mut command = crp();
    command.arg("dump").arg(pid.to_string()).arg("-o").arg(image).args(extra);
    if let Some(fault) = fault {
        command.env("CRP_TEST_FAULT", fault);
    }
    command
}

/// Starts crp with a `MOMENT:STOP` fault and returns once it has stopped
/// itself there.
fn crp_stopped_at(mut command: Command) -> Child {
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    match waitpid(pid, Some(WaitPidFlag::WUNTRACED)).unwrap() {
        WaitStatus::Stopped(_, Signal::SIGSTOP) => child,
        other => panic!("crp did not stop at its fault: {other:?}"),
    }
}

fn continue_crp(child: Child) -> Output {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_dump_into_a_full_file_system_fails_and_leaves_the_process_and_folder_as_they_were() {
    let files = tempfile::tempdir().unwrap();
    let subject = state_subject(files.path());
    let mount = Mount::tmpfs("size=4m");
    let output = crp_dump(subject.pid, &mount.path.join("full.crp"), None, &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("No space left on device"), "{}", stderr_of(&output));
    assert_eq!(entries(&mount.path), Vec::<String>::new());
    assert_intact(subject, "ENOSPC");
}

#[test]
fn a_dump_into_a_read_only_folder_is_refused_before_the_process_is_touched() {
    let files = tempfile::tempdir().unwrap();
    let subject = state_subject(files.path());
    let mount = Mount::tmpfs("ro,size=1m");
    let output = crp_dump(subject.pid, &mount.path.join("ro.crp"), None, &[]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("Read-only file system"), "{}", stderr_of(&output));
    assert_intact(subject, "EROFS");
}

#[test]
fn a_dump_whose_folder_vanishes_midway_fails_and_releases_the_process() {
    let files = tempfile::tempdir().unwrap();
    let subject = state_subject(files.path());
    let parent = tempfile::tempdir().unwrap();
    let folder = parent.path().join("vanishing");
    std::fs::create_dir(&folder).unwrap();
    let crp = crp_stopped_at(crp_dump(subject.pid, &folder.join("gone.crp"), Some("pages:STOP"), &[]));
    std::fs::remove_dir(&folder).unwrap();
    let output = continue_crp(crp);
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert!(entries(parent.path()).is_empty(), "{:?}", entries(parent.path()));
    assert_intact(subject, "a vanished folder");
}

#[test]
fn an_io_error_while_writing_fails_the_dump_and_leaves_nothing() {
    let files = tempfile::tempdir().unwrap();
    let subject = state_subject(files.path());
    let folder = tempfile::tempdir().unwrap();
    let image = folder.path().join("eio.crp");
    // The third pwrite64 of any crp thread fails with EIO.
    let mut command = Command::new("strace");
    command.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=pwrite64", "-e", "inject=pwrite64:error=EIO:when=3"]);
    command.arg(env!("CARGO_BIN_EXE_crp")).arg("dump").arg(subject.pid.to_string()).arg("-o").arg(&image);
    close_inherited_fds(&mut command);
    let output = command.output().expect("strace must be installed");
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("Input/output error"), "{}", stderr_of(&output));
    assert!(entries(folder.path()).is_empty(), "{:?}", entries(folder.path()));
    assert_intact(subject, "EIO");
}

#[test]
fn a_process_killed_in_the_middle_of_its_dump_fails_the_dump_cleanly() {
    let files = tempfile::tempdir().unwrap();
    let mut subject = state_subject(files.path());
    let folder = tempfile::tempdir().unwrap();
    for moment in ["in-syscall@5", "captured"] {
        let subject_pid = subject.pid;
        let crp =
            crp_stopped_at(crp_dump(subject_pid, &folder.path().join("x.crp"), Some(&format!("{moment}:STOP")), &[]));
        kill(Pid::from_raw(subject_pid), Signal::SIGKILL).unwrap();
        let output = continue_crp(crp);
        assert_eq!(output.status.code(), Some(1), "{moment}: {}", stderr_of(&output));
        assert_eq!(subject.wait().signal(), Some(libc::SIGKILL));
        assert!(entries(folder.path()).is_empty(), "{:?}", entries(folder.path()));
        subject = state_subject(files.path());
    }
}

#[test]
fn a_second_dump_of_a_process_being_dumped_is_refused_naming_the_first() {
    let files = tempfile::tempdir().unwrap();
    let subject = state_subject(files.path());
    let folder = tempfile::tempdir().unwrap();
    let first = crp_stopped_at(crp_dump(
        subject.pid,
        &folder.path().join("first.crp"),
        Some("in-syscall@5:STOP"),
        &["--leave-running"],
    ));
    let second = crp_dump(subject.pid, &folder.path().join("second.crp"), None, &[]).output().unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", stderr_of(&second));
    assert!(stderr_of(&second).contains(&format!("traced by pid {}", first.id())), "{}", stderr_of(&second));
    let first = continue_crp(first);
    assert!(first.status.success(), "{}", stderr_of(&first));
    assert_eq!(entries(folder.path()), ["first.crp"]);
    assert_intact(subject, "a second dump");
}

/// A memory cgroup (v1 or v2) limited to `bytes`, removed when dropped.
struct MemoryCgroup {
    path: PathBuf,
}

impl MemoryCgroup {
    fn limited_to(bytes: u64) -> Option<MemoryCgroup> {
        let name = format!("crp-test-{}", std::process::id());
        for (root, limit) in [("/sys/fs/cgroup/memory", "memory.limit_in_bytes"), ("/sys/fs/cgroup", "memory.max")] {
            let path = Path::new(root).join(&name);
            if std::fs::create_dir(&path).is_ok() {
                if std::fs::write(path.join(limit), bytes.to_string()).is_ok() {
                    // No swap to escape to, where the knob exists.
                    let _ = std::fs::write(path.join("memory.memsw.limit_in_bytes"), bytes.to_string());
                    let _ = std::fs::write(path.join("memory.swap.max"), "0");
                    return Some(MemoryCgroup { path });
                }
                let _ = std::fs::remove_dir(&path);
            }
        }
        None
    }
}

impl MemoryCgroup {
    /// How many processes its OOM killer killed (v1 `memory.oom_control`,
    /// v2 `memory.events`).
    fn oom_kills(&self) -> u64 {
        ["memory.oom_control", "memory.events"]
            .iter()
            .filter_map(|file| std::fs::read_to_string(self.path.join(file)).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|line| line.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[test]
fn a_restore_under_a_memory_cgroup_too_small_for_it_leaves_no_process() {
    become_subreaper();
    let files = tempfile::tempdir().unwrap();
    let mut subject = state_subject(files.path());
    let image = files.path().join("big.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let Some(cgroup) = MemoryCgroup::limited_to(24 << 20) else {
        panic!("no memory cgroup can be created here (v1 /sys/fs/cgroup/memory or v2 /sys/fs/cgroup)");
    };
    let procs = cgroup.path.join("cgroup.procs");
    let mut command = Command::new("sh");
    command.arg("-c").arg("echo $$ > \"$1\" && exec \"$2\" restore \"$3\"").arg("sh").arg(&procs);
    command.arg(env!("CARGO_BIN_EXE_crp")).arg(&image).stdin(Stdio::null());
    close_inherited_fds(&mut command);
    let output = command.output().unwrap();
    assert!(!output.status.success(), "a 64 MiB process was restored in 24 MiB: {}", stdout_of(&output));
    assert!(
        cgroup.oom_kills() > 0,
        "the restore failed without reaching the limit: {:?} {}{}",
        output.status,
        stdout_of(&output),
        stderr_of(&output)
    );
    // Whatever the OOM killer chose (crp, the child, or both), the child
    // is gone: crp reaped it, or it was orphaned to this subreaper.
    let _ = waitpid(Pid::from_raw(subject.pid), Some(WaitPidFlag::__WALL));
    assert!(!process_exists(subject.pid), "a half-built process survives: {}", stderr_of(&output));
    drop(cgroup);
}
