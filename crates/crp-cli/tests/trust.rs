//! An image file owned by another user is restored (by root) only as that
//! user: its process must be theirs, and the files it opens are opened with
//! their file-system credentials. `--trust-image` lifts both rules.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const NOBODY: u32 = 65534;

fn chown_to_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// An image of the `identity` subject running as nobody, in `directory`.
fn nobody_image(directory: &Path) -> (i32, PathBuf) {
    let mut command = Command::new(&programs().dynamic);
    command.arg("identity").uid(NOBODY).gid(NOBODY).current_dir("/");
    // Its stderr is a pipe (the outside world at restore): the test's own
    // stderr may be a root-owned log file, which nobody could not reopen.
    let mut subject = Subject::spawn_with_stderr(command, std::process::Stdio::piped());
    let image = directory.join("nobody.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    (subject.pid, image)
}

#[test]
fn an_image_owned_by_its_processs_user_is_restored_by_root_as_that_user() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = nobody_image(directory.path());
    chown_to_nobody(&image);
    let output = restore(&image, &[], "");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert!(stdout.starts_with(&format!("OK pid={pid} uid={NOBODY}/{NOBODY}/{NOBODY}")), "{stdout}");
}

#[test]
fn an_image_of_a_root_process_owned_by_another_user_is_refused_naming_the_owner() {
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "1"]);
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("root.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    chown_to_nobody(&image);
    let output = restore(&image, &[], "");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("owned by nobody (uid 65534)") && stderr.contains("--trust-image"), "{stderr}");
    assert!(!process_exists(subject.pid), "a process was created");
    let trusted = restore(&image, &["--trust-image"], "");
    assert!(trusted.status.success(), "{}{}", stdout_of(&trusted), stderr_of(&trusted));
}

#[test]
fn files_an_owned_image_opens_are_opened_with_its_owners_credentials() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = nobody_image(directory.path());
    // A directory only root may enter becomes the process's cwd.
    let private = directory.path().join("root-only");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let private_path = private.to_str().unwrap().to_owned();
    let changed = rewritten_image(&image, |image| image.task.cwd = private_path.clone());
    chown_to_nobody(&changed);
    let output = restore(&changed, &[], "");
    let stderr = stderr_of(&output);
    assert!(!output.status.success(), "nobody's image entered a root-only directory: {}", stdout_of(&output));
    assert!(stderr.contains("EACCES"), "{stderr}");
    assert!(!process_exists(pid), "a half-built process survived");
    let trusted = restore(&changed, &["--trust-image"], "");
    assert!(trusted.status.success(), "{}{}", stdout_of(&trusted), stderr_of(&trusted));
}
