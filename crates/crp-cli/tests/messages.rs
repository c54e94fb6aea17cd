//! Messages that must say the right thing: what crp never does (kernel
//! threads), what this host lacks (a missing cwd, mapped file, executable or
//! kernel module, exit 5, before any child exists), which privilege an
//! unprivileged restore lacks, and which output folder is missing.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const NOBODY: u32 = 65534;
/// `PF_KTHREAD` in /proc/PID/stat's flags.
const PF_KTHREAD: u64 = 0x0020_0000;

/// The sleep subject started in `cwd` (its stderr /dev/null, so that an
/// image of it names no pipe or file of the test's).
fn sleeper_in(cwd: &Path) -> Subject {
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "60"]).current_dir(cwd);
    Subject::spawn_with_stderr(command, Stdio::null())
}

/// Dumps `subject` into `directory`, the dump killing it.
fn dumped(mut subject: Subject, directory: &Path) -> (i32, PathBuf) {
    let image = directory.join("subject.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    (subject.pid, image)
}

/// Asserts a restore of `image` failed with `code`, saying `expected`, and
/// created no process.
fn assert_restore_refused(image: &Path, extra: &[&str], pid: i32, code: i32, expected: &str) -> String {
    let output = restore(image, extra, "");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!process_exists(pid), "a process was created");
    stderr
}

fn kernel_thread() -> (i32, String) {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let flags: u64 = rest.split(' ').nth(6)?.parse().ok()?;
            (flags & PF_KTHREAD != 0).then(|| (pid, comm.to_owned()))
        })
        .expect("this kernel shows at least one kernel thread (kthreadd)")
}

#[test]
fn a_kernel_thread_is_refused_as_never_supported() {
    let (pid, name) = kernel_thread();
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("kthread.crp");
    let output = dump(pid, &image, &[]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("cannot dump pid {pid}: it is a kernel thread ({name})")), "{stderr}");
    assert!(stderr.contains("crp checkpoints user processes only"), "{stderr}");
    assert!(!stderr.contains("yet"), "a kernel thread will never be supported: {stderr}");
    assert!(!image.exists());
}

#[test]
fn a_deleted_working_directory_is_refused_naming_it() {
    let directory = tempfile::tempdir().unwrap();
    let cwd = directory.path().join("work");
    std::fs::create_dir(&cwd).unwrap();
    let (pid, image) = dumped(sleeper_in(&cwd), directory.path());
    std::fs::remove_dir(&cwd).unwrap();
    let expected =
        format!("this host cannot restore the image: the working directory {} does not exist", cwd.display());
    assert_restore_refused(&image, &[], pid, 5, &expected);
}

#[test]
fn a_working_directory_that_became_a_file_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let cwd = directory.path().join("work");
    std::fs::create_dir(&cwd).unwrap();
    let (pid, image) = dumped(sleeper_in(&cwd), directory.path());
    std::fs::remove_dir(&cwd).unwrap();
    std::fs::write(&cwd, b"not a directory").unwrap();
    let expected = format!("the working directory {} is not a directory", cwd.display());
    assert_restore_refused(&image, &[], pid, 5, &expected);
}

#[test]
fn a_missing_mapped_file_is_refused_naming_it() {
    let directory = tempfile::tempdir().unwrap();
    let (private, shared) = state_files(directory.path());
    let mut command = Command::new(&programs().dynamic);
    command.arg("state").arg(&private).arg(&shared);
    let (pid, image) = dumped(Subject::spawn_with_stderr(command, Stdio::null()), directory.path());
    std::fs::remove_file(&private).unwrap();
    let expected = format!("the mapped file {} does not exist", private.display());
    assert_restore_refused(&image, &[], pid, 5, &expected);
}

#[test]
fn a_missing_executable_is_refused_naming_it() {
    let directory = tempfile::tempdir().unwrap();
    let executable = directory.path().join("copied-subject");
    std::fs::copy(&programs().dynamic, &executable).unwrap();
    let mut command = Command::new(&executable);
    command.args(["sleep", "60"]);
    let (pid, image) = dumped(Subject::spawn_with_stderr(command, Stdio::null()), directory.path());
    std::fs::remove_file(&executable).unwrap();
    let expected = format!("the executable {} does not exist", executable.display());
    assert_restore_refused(&image, &[], pid, 5, &expected);
}

#[test]
fn a_missing_descriptor_file_is_refused_naming_it_and_its_fd() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped(sleeper_in(directory.path()), directory.path());
    let gone = directory.path().join("gone.txt");
    let gone_path = gone.to_str().unwrap().to_owned();
    let changed = rewritten_image(&image, |image| {
        image.files.push_record(crp_compound::files::FdRecord {
            fd: 7,
            flags: libc::O_RDONLY,
            offset: 0,
            target: crp_compound::files::FdTarget::File { path: gone_path.clone(), identity: None },
        });
    });
    let expected = format!("the file of a descriptor {} (fd 7) does not exist", gone.display());
    assert_restore_refused(&changed, &[], pid, 5, &expected);
}

/// On this host there is no /dev/crp: a kmod restore says so before it
/// looks at anything in the image (here, a missing file and cwd).
#[test]
fn a_kmod_restore_without_the_module_says_so_first() {
    assert!(!Path::new("/dev/crp").exists(), "this test is for hosts without the module");
    let directory = tempfile::tempdir().unwrap();
    let cwd = directory.path().join("work");
    std::fs::create_dir(&cwd).unwrap();
    let (pid, image) = dumped(sleeper_in(&cwd), directory.path());
    std::fs::remove_dir(&cwd).unwrap();
    let stderr = assert_restore_refused(&image, &["--backend", "kmod"], pid, 5, "/dev/crp does not exist");
    assert!(!stderr.contains("work"), "the module is named first, not the cwd: {stderr}");
}

#[test]
fn an_unprivileged_restore_names_the_capabilities_it_lacks() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::set_permissions(directory.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "60"]).uid(NOBODY).gid(NOBODY).current_dir("/");
    let (pid, image) = dumped(Subject::spawn_with_stderr(command, Stdio::null()), directory.path());
    std::os::unix::fs::chown(&image, Some(NOBODY), Some(NOBODY)).unwrap();
    // nobody restores nobody's own image.
    let output = crp()
        .arg("restore")
        .arg(&image)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("crp: error: crp restore lacks privileges the process had: CAP_CHOWN, "), "{stderr}");
    for named in ["CAP_SETGID", "CAP_SETUID", "CAP_SYS_PTRACE", "CAP_CHECKPOINT_RESTORE"] {
        assert!(stderr.contains(named), "{named} not named: {stderr}");
    }
    assert!(
        stderr.contains(&format!("crp restore runs as uid {NOBODY} and needs them"))
            && stderr.contains("run it as root"),
        "{stderr}"
    );
    assert!(!process_exists(pid), "a process was created");
}

#[test]
fn a_missing_output_folder_is_named_and_the_process_untouched() {
    let directory = tempfile::tempdir().unwrap();
    let subject = sleeper_in(directory.path());
    let folder = directory.path().join("missing/dir");
    let output = dump(subject.pid, &folder.join("x.crp"), &[]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("the folder {} does not exist", folder.display())), "{stderr}");
    assert_eq!(status_field(subject.pid, "TracerPid"), "0");
    assert!(status_field(subject.pid, "State").starts_with('S'));
}
