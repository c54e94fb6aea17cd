//! Shared memory: MAP_SHARED|MAP_ANONYMOUS and /dev/zero mappings (split,
//! mapped twice: one object after the restore), memfds mapped with and
//! without a descriptor, deleted files mapped shared and privately, and
//! memory shared with a process outside the dump (restored with its
//! contents, with a warning and a line in `crp inspect`). Each program
//! checks its own memory after the restore.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn shared_subject(mode: &str, directory: &Path) -> Subject {
    let mut command = Command::new(c_program("mem_shared"));
    command.arg(mode).arg(directory);
    Subject::spawn(command)
}

/// Dumps `mode`'s subject, checks it was killed, restores it and expects its
/// OK; returns the image and the restore's stderr.
fn round_trip_ok(mode: &str, directory: &Path) -> (PathBuf, String) {
    let mut subject = shared_subject(mode, directory);
    let image = directory.join(format!("{mode}.crp"));
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}\n{inspected}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} {mode}\n", subject.pid), "{}\n{inspected}", stderr_of(&output));
    (image, stderr_of(&output))
}

#[test]
fn anonymous_shared_memory_comes_back_as_one_object_per_original_object() {
    let directory = tempfile::tempdir().unwrap();
    let (image, stderr) = round_trip_ok("anon", directory.path());
    assert!(!stderr.contains("warning"), "nothing was shared outside: {stderr}");
    let json = inspect_json(&image);
    let objects = json["shared_memory"].as_array().unwrap();
    assert_eq!(objects.len(), 2, "the split and aliased object, and /dev/zero's: {objects:?}");
    assert!(objects.iter().all(|object| object["kind"] == "MAP_SHARED|MAP_ANONYMOUS"), "{objects:?}");
    let split = objects.iter().find(|object| object["size"] == 4 * 4096).unwrap();
    assert_eq!(split["mappings"], 4, "three VMAs of the split and the alias: {objects:?}");
    assert_eq!(split["pages_stored"], 3, "each page once, not once per mapping: {objects:?}");
    let zero = objects.iter().find(|object| object["size"] == 2 * 4096).unwrap();
    assert_eq!((zero["mappings"].clone(), zero["pages_stored"].clone()), (1.into(), 1.into()), "{objects:?}");
    assert!(objects.iter().all(|object| object["shared_outside_with"].as_array().unwrap().is_empty()));
}

#[test]
fn memfds_come_back_mapped_and_one_object_with_their_descriptor() {
    let directory = tempfile::tempdir().unwrap();
    let (image, _) = round_trip_ok("memfd", directory.path());
    let json = inspect_json(&image);
    let objects = json["shared_memory"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "only the memfd no descriptor holds: {objects:?}");
    assert_eq!(objects[0]["kind"], "memfd:crp-mapped");
    assert_eq!(objects[0]["mappings"], 2, "shared and private: {objects:?}");
    assert_eq!(objects[0]["contents_bytes"], 2 * 4096, "mapped privately, its contents are stored: {objects:?}");
    let text = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(text.contains("descriptor object #0"), "{text}");
}

#[test]
fn deleted_files_come_back_mapped_shared_and_privately() {
    let directory = tempfile::tempdir().unwrap();
    round_trip_ok("deleted", directory.path());
}

#[test]
fn deleted_files_no_descriptor_holds_come_back_with_their_contents() {
    let directory = tempfile::tempdir().unwrap();
    let (image, _) = round_trip_ok("unheld", directory.path());
    let json = inspect_json(&image);
    let objects = json["shared_memory"].as_array().unwrap();
    assert_eq!(objects.len(), 2, "DIR/shm once for its two mappings, and DIR/lib: {objects:?}");
    assert!(objects.iter().all(|object| object["kind"].as_str().unwrap().starts_with("deleted file ")), "{objects:?}");
    let shm = objects.iter().find(|object| object["kind"].as_str().unwrap().ends_with("/shm")).unwrap();
    assert_eq!(shm["mappings"], 2, "{objects:?}");
}

#[test]
fn memory_shared_outside_the_dump_is_restored_with_a_warning() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let mut subject = shared_subject("outside", directory.path());
    let helper: i32 = std::fs::read_to_string(directory.path().join("helper.pid")).unwrap().trim().parse().unwrap();
    let image = directory.path().join("outside.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let json = inspect_json(&image);
    assert_eq!(json["shared_memory"][0]["shared_outside_with"], serde_json::json!([helper]));
    let text = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(text.contains(&format!("shared with pid {helper} outside the dump")), "{text}");
    let output = restore(&image, &[], "go\n");
    // SAFETY: kill only sends a signal to the helper this test's subject made.
    unsafe { libc::kill(helper, libc::SIGKILL) };
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(helper), None);
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} outside\n", subject.pid));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("warning") && stderr.contains(&helper.to_string()) && stderr.contains("cannot be rebuilt"),
        "{stderr}"
    );
}

#[test]
fn python_shared_values_and_an_anonymous_mmap_come_back() {
    let directory = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/shared_values.py");
    let mut command = Command::new("python3");
    command.arg(script);
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("python.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let json = inspect_json(&image);
    let kinds: Vec<String> =
        json["shared_memory"].as_array().unwrap().iter().map(|object| object["kind"].to_string()).collect();
    assert!(kinds.iter().any(|kind| kind.contains("MAP_SHARED|MAP_ANONYMOUS")), "{kinds:?}");
    assert!(kinds.iter().any(|kind| kind.contains("/dev/shm/sem.")), "the Value's semaphore: {kinds:?}");
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} python\n", subject.pid), "{}", stderr_of(&output));
}

/// The keyed segment the sysv subject made for `directory`, if it exists.
fn keyed_segment(directory: &Path) -> Option<i32> {
    let path = std::ffi::CString::new(directory.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: ftok and shmget read only the NUL-terminated path.
    let id = unsafe { libc::shmget(libc::ftok(path.as_ptr(), i32::from(b's')), 0, 0) };
    (id >= 0).then_some(id)
}

fn remove_segment(id: i32) {
    // SAFETY: IPC_RMID takes no buffer.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
}

/// Dumps the sysv subject; `change` runs while it is gone; the restore says
/// what the segment should hold.
fn sysv_round_trip(change: impl FnOnce(&Path, i32), expect: &str) -> serde_json::Value {
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(c_program("mem_shared"));
    command.arg("sysv").arg(directory.path());
    let mut subject = Subject::spawn(command);
    let id = keyed_segment(directory.path()).unwrap();
    let image = directory.path().join("sysv.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let json = inspect_json(&image);
    change(directory.path(), id);
    let output = restore(&image, &[], &format!("{expect}\n"));
    if let Some(left) = keyed_segment(directory.path()) {
        remove_segment(left);
    }
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} sysv {expect}\n", subject.pid), "{}", stderr_of(&output));
    json
}

#[test]
fn a_sysv_segment_that_still_exists_is_attached_again_with_what_others_wrote() {
    let json = sysv_round_trip(
        |_, id| {
            // SAFETY: attaches the subject's segment in this test process, writes one byte, detaches.
            unsafe {
                let address = libc::shmat(id, std::ptr::null(), 0);
                assert_ne!(address as isize, -1);
                address.cast::<u8>().add(100).write(b'T');
                libc::shmdt(address);
            }
        },
        "kept",
    );
    let objects = json["shared_memory"].as_array().unwrap();
    assert_eq!(objects.len(), 2, "{objects:?}");
    let keyed = objects.iter().find(|object| object["size"] == 3 * 4096).unwrap();
    assert!(keyed["kind"].as_str().unwrap().starts_with("SysV shm key"), "{keyed}");
    assert_eq!((keyed["mappings"].clone(), keyed["pages_stored"].clone()), (3.into(), 2.into()), "{keyed}");
}

#[test]
fn a_sysv_segment_removed_meanwhile_is_made_again_with_its_contents() {
    sysv_round_trip(|_, id| remove_segment(id), "made");
}

#[test]
fn locked_memory_and_mlockall_future_are_locked_again() {
    let directory = tempfile::tempdir().unwrap();
    let (image, _) = round_trip_ok("mlock", directory.path());
    let json = inspect_json(&image);
    assert_eq!(json["future_locking"], "mlockall(MCL_FUTURE)");
    let locked: Vec<&serde_json::Value> =
        json["vmas"].as_array().unwrap().iter().filter(|vma| vma["locked"] != "no").collect();
    assert!(locked.iter().any(|vma| vma["locked"] == "on fault"), "{locked:?}");
    assert!(locked.iter().any(|vma| vma["locked"] == "yes"), "{locked:?}");
}

#[test]
fn guard_regions_mergeable_and_droppable_mappings_come_back() {
    let directory = tempfile::tempdir().unwrap();
    let (image, _) = round_trip_ok("flags", directory.path());
    let json = inspect_json(&image);
    let guards = json["guard_regions"].as_array().unwrap();
    assert_eq!(guards.len(), 1, "{guards:?}");
    assert_eq!(guards[0]["end"]["value"].as_u64().unwrap() - guards[0]["start"]["value"].as_u64().unwrap(), 2 * 4096);
}

/// crp refuses `mode`'s subject (exit 3, naming `what` and its range), which
/// runs on untouched.
fn refused_naming_the_range(mode: &str, what: &str) {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = shared_subject(mode, directory.path());
    let output = dump(subject.pid, &directory.path().join("refused.crp"), &[]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(what) && stderr.contains("[0x"), "{stderr}");
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} {mode}\n", subject.pid));
    assert!(subject.wait().success());
}

#[test]
fn a_sealed_mapping_is_refused_naming_its_range() {
    refused_naming_the_range("sealed", "mseal");
}

#[test]
fn a_userfaultfd_range_is_refused_naming_it() {
    refused_naming_the_range("uffd", "userfaultfd");
}

#[test]
fn a_partly_unmapped_sysv_attachment_is_refused_before_the_freeze() {
    refused_naming_the_range("sysv-partial", "a SysV attachment only partly mapped");
}
