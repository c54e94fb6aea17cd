//! FIFOs (with their bytes, made again when deleted, not doubled when held
//! outside), O_PATH descriptors of a file, a directory and a symlink,
//! deleted files (holes, offsets, shared and independent descriptions, a
//! name linked elsewhere coming back as the same inode) and memfds (name,
//! size, contents, seals): each program checks its own state after the
//! restore.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn files_subject(mode: &str, directory: &Path) -> Subject {
    let mut command = Command::new(c_program("fd_files"));
    command.arg(mode).arg(directory);
    Subject::spawn(command)
}

fn file_of(json: &serde_json::Value, fd: i32) -> serde_json::Value {
    json["files"].as_array().unwrap().iter().find(|file| file["fd"] == fd).unwrap().clone()
}

/// Dumps `mode`'s subject, checks it was killed, restores it and expects its OK.
fn round_trip_ok(mode: &str, directory: &Path) -> std::path::PathBuf {
    let mut subject = files_subject(mode, directory);
    let image = directory.join(format!("{mode}.crp"));
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}\n{inspected}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} {mode}\n", subject.pid), "{inspected}");
    image
}

#[test]
fn fifos_come_back_by_path_with_their_bytes_and_a_deleted_one_is_made_again() {
    let directory = tempfile::tempdir().unwrap();
    let image = round_trip_ok("fifo", directory.path());
    let json = inspect_json(&image);
    let fd3 = file_of(&json, 3);
    assert_eq!(fd3["kind"], "fifo");
    assert_eq!(fd3["fifo"]["buffered_bytes"], 9);
    assert_eq!(fd3["fifo"]["deleted"], false);
    let fd5 = file_of(&json, 5);
    assert_eq!((fd5["fifo"]["deleted"].clone(), fd5["fifo"]["mode"].clone()), (true.into(), "0o640".into()));
    let text = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(
        text.contains("FIFO") && text.contains("deleted: made again") && text.contains("9 bytes buffered"),
        "{text}"
    );
}

#[test]
fn a_dump_that_leaves_the_process_running_leaves_its_fifos_full() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = files_subject("fifo-live", directory.path());
    dump_ok(subject.pid, &directory.path().join("fifo.crp"), &["--leave-running"]);
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} fifo-live\n", subject.pid));
    assert!(subject.wait().success());
}

#[test]
fn a_fifo_held_open_outside_keeps_its_bytes_once() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = files_subject("fifo-outside", directory.path());
    let helper: i32 = std::fs::read_to_string(directory.path().join("helper.pid")).unwrap().trim().parse().unwrap();
    let image = directory.path().join("outside.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &[], "go\n");
    // SAFETY: kill only sends a signal to the helper this test's subject made.
    unsafe { libc::kill(helper, libc::SIGKILL) };
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} fifo-outside\n", subject.pid));
}

#[test]
fn o_path_descriptors_of_a_file_a_directory_and_a_symlink_come_back() {
    let directory = tempfile::tempdir().unwrap();
    let image = round_trip_ok("opath", directory.path());
    let json = inspect_json(&image);
    for fd in 3..=5 {
        assert_eq!(file_of(&json, fd)["kind"], "O_PATH");
    }
    assert!(file_of(&json, 5)["target"].as_str().unwrap().ends_with("/link"));
}

#[test]
fn deleted_files_come_back_with_holes_offsets_sharing_and_linked_inodes() {
    let directory = tempfile::tempdir().unwrap();
    let image = round_trip_ok("deleted", directory.path());
    let json = inspect_json(&image);
    let fd3 = file_of(&json, 3);
    assert_eq!(fd3["kind"], "deleted file");
    assert_eq!(fd3["file_object"]["size"], (3 << 20) + 4);
    assert_eq!(fd3["file_object"]["contents_stored"], true);
    assert!(fd3["file_object"]["stored_bytes"].as_u64().unwrap() < 1 << 20, "{fd3}");
    assert_eq!(file_of(&json, 4)["shares_description_with"], 3);
    assert_eq!(file_of(&json, 5)["file_object"]["inode"], fd3["file_object"]["inode"]);
    let fd7 = file_of(&json, 7);
    assert_eq!(fd7["file_object"]["kind"], "deleted name of a linked file");
    assert_eq!(fd7["file_object"]["contents_stored"], false);
    let text = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(text.contains("reopened by file handle"), "{text}");
}

#[test]
fn memfds_come_back_with_their_name_size_contents_and_seals() {
    let directory = tempfile::tempdir().unwrap();
    let image = round_trip_ok("memfd", directory.path());
    let json = inspect_json(&image);
    let fd3 = file_of(&json, 3);
    assert_eq!(fd3["kind"], "memfd");
    assert_eq!(fd3["target"], "/memfd:crp-test");
    assert_eq!(fd3["file_object"]["seals"], libc::F_SEAL_WRITE | libc::F_SEAL_GROW);
    assert_eq!(fd3["file_object"]["size"], 3 << 20);
    assert_eq!(file_of(&json, 4)["file_object"]["seals"], libc::F_SEAL_SEAL);
}

#[test]
fn a_deleted_file_above_the_limit_is_refused_naming_the_flag() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = files_subject("big", directory.path());
    let image = directory.path().join("big.crp");
    let output = dump(subject.pid, &image, &["--max-file-contents", "1M"]);
    assert!(!output.status.success());
    let message = stderr_of(&output);
    assert!(message.contains("--max-file-contents") && message.contains("/big (deleted)"), "{message}");
    assert!(!image.exists());
    // Untouched: it carries on, and a higher limit dumps it.
    dump_ok(subject.pid, &image, &["--max-file-contents", "4M", "--leave-running"]);
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} big\n", subject.pid));
}

#[test]
fn open_deleted_directories_come_back_deleted_with_their_mode_owner_and_sharing() {
    let directory = tempfile::tempdir().unwrap();
    let image = round_trip_ok("deleted-dir", directory.path());
    let json = inspect_json(&image);
    let fd3 = file_of(&json, 3);
    assert_eq!(fd3["kind"], "deleted directory");
    assert_eq!(fd3["file_object"]["kind"], "deleted directory");
    assert_eq!(fd3["file_object"]["mode"], "0o750");
    assert_eq!(file_of(&json, 4)["shares_description_with"], 3);
    for fd in [5, 6] {
        assert_eq!(file_of(&json, fd)["file_object"]["inode"], fd3["file_object"]["inode"], "fd {fd}");
    }
    assert_ne!(file_of(&json, 7)["file_object"]["inode"], fd3["file_object"]["inode"]);
    let text = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(text.contains("deleted directory") && text.contains("/gone"), "{text}");
    // Removed again: nothing the restore made is left in DIR.
    let mut left: Vec<String> = std::fs::read_dir(directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["deleted-dir.crp", "taken"]);
}

#[test]
fn a_deleted_directory_whose_parent_is_gone_is_refused_before_the_restore() {
    let directory = tempfile::tempdir().unwrap();
    let parent = directory.path().join("parent");
    std::fs::create_dir(&parent).unwrap();
    let mut subject = files_subject("deleted-dir", &parent);
    let image = directory.path().join("deleted-dir.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    std::fs::remove_dir_all(&parent).unwrap();
    let output = restore(&image, &[], "go\n");
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let message = stderr_of(&output);
    assert!(message.contains("deleted directory") && message.contains("/parent"), "{message}");
    assert!(!parent.exists(), "the restore made the parent");
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
}

/// Rewrites DIR/open in place, same size, its mtime set back a day.
fn rewrite_open_file(path: &Path) {
    std::fs::write(path, "OPEN").unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(86_400)).unwrap();
}

/// Dumps the `changed` subject in a directory of its own; its files are
/// DIR/mapped (3 pages, mapped) and DIR/open (on fd 3).
fn dumped_changed_subject(directory: &Path) -> (i32, std::path::PathBuf) {
    let mut subject = files_subject("changed", directory);
    let image = directory.join("changed.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    (subject.pid, image)
}

#[test]
fn changed_mapped_and_open_files_are_refused_unless_allowed_with_a_warning() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_changed_subject(directory.path());
    let (mapped, open) = (directory.path().join("mapped"), directory.path().join("open"));
    append(&mapped, b"m");
    rewrite_open_file(&open);
    let refused = restore(&image, &[], "go\n");
    let message = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(5), "{message}");
    assert!(message.contains(mapped.to_str().unwrap()) && message.contains("size 12288 is now 12289"), "{message}");
    assert!(message.contains("--allow-changed-files"), "{message}");
    assert!(stdout_of(&refused).is_empty(), "nothing ran");
    // The user says it is safe: restored, each change named in a warning.
    let output = restore(&image, &["--allow-changed-files"], "go\n");
    let warnings = stderr_of(&output);
    assert!(output.status.success(), "{warnings}");
    assert_eq!(stdout_of(&output), format!("OK pid={pid} changed\n"));
    assert!(warnings.contains("warning") && warnings.contains(mapped.to_str().unwrap()), "{warnings}");
    assert!(warnings.contains(open.to_str().unwrap()) && warnings.contains("open on fd 3: mtime"), "{warnings}");
}

#[test]
fn a_mapped_file_shrunk_below_its_mapping_is_refused_even_when_allowed() {
    let directory = tempfile::tempdir().unwrap();
    let (_, image) = dumped_changed_subject(directory.path());
    let mapped = directory.path().join("mapped");
    std::fs::OpenOptions::new().write(true).open(&mapped).unwrap().set_len(4096).unwrap();
    let output = restore(&image, &["--allow-changed-files"], "go\n");
    let message = stderr_of(&output);
    assert_eq!(output.status.code(), Some(5), "{message}");
    assert!(message.contains(mapped.to_str().unwrap()) && message.contains("SIGBUS"), "{message}");
    assert!(stdout_of(&output).is_empty(), "nothing ran");
}

#[test]
fn an_open_file_rewritten_is_refused_and_one_that_only_grew_is_restored() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_changed_subject(directory.path());
    let open = directory.path().join("open");
    rewrite_open_file(&open);
    let refused = restore(&image, &[], "go\n");
    let message = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(5), "{message}");
    assert!(message.contains("/open") && message.contains("open on fd 3: mtime"), "{message}");
    // Appended to (a log it follows): what it read is still there.
    std::fs::write(&open, "open, and more").unwrap();
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={pid} changed\n"));
}
