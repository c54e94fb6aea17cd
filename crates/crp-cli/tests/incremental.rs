//! Incremental dumps: `crp dump --track-changes --leave-running`, then
//! `crp dump --parent`, of a process that writes 5% of its pages, discards
//! some, unmaps a region and maps a new one between the dumps
//! (tests/programs/incremental.c checks its own memory). The chain restores
//! to the same memory as a full dump; the incremental image holds about the
//! written pages; a missing or changed parent is refused before anything is
//! created; `crp untrack` leaves nothing of crp's in the process.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn subject(mib: u32) -> Subject {
    let mut command = Command::new(c_program("incremental"));
    command.arg(mib.to_string());
    Subject::spawn(command)
}

fn ask(subject: &mut Subject, command: &str) -> String {
    subject.send(&format!("{command}\n"));
    subject.read_line()
}

/// How many userfaultfd descriptors `pid` holds, and VMAs registered with one.
fn uffd_state(pid: i32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.unwrap().path()).ok())
        .filter(|target| target.to_string_lossy().contains("userfaultfd"))
        .count();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let registered = smaps.lines().filter(|line| line.starts_with("VmFlags:") && line.contains(" uw")).count();
    (fds, registered)
}

fn dump_with(pid: i32, image: &Path, extra: &[&str]) -> String {
    let output = dump(pid, image, &[&["--leave-running"], extra].concat());
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "dump {extra:?} failed: {stderr}");
    stderr
}

/// Pages of the image's own page data.
fn own_pages(image: &Path) -> u64 {
    crp_image::ImageReader::open(image).unwrap().page_bytes() / 4096
}

#[test]
fn a_chain_restores_the_memory_a_full_dump_holds_and_stores_only_what_was_written() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let image = |name: &str| directory.path().join(name);
    let mut original = subject(64);
    let pid = original.pid;
    dump_with(pid, &image("full.crp"), &["--track-changes"]);
    assert_eq!(uffd_state(pid).0, 1, "the tracking stays in the process");
    assert!(uffd_state(pid).1 > 0, "its memory is registered");
    assert_eq!(status_field(pid, "TracerPid"), "0");
    let full_pages = own_pages(&image("full.crp"));

    let changed = ask(&mut original, "change");
    let written: u64 = changed.trim().strip_prefix("CHANGED written=").unwrap().parse().unwrap();
    let stderr = dump_with(pid, &image("inc1.crp"), &["--parent", image("full.crp").to_str().unwrap()]);
    assert!(stderr.contains("inherited from the parent"), "{stderr}");
    let inc1_pages = own_pages(&image("inc1.crp"));
    // The written pages, and the small rest: stack, heap (the version
    // table), what is not private anonymous memory.
    assert!(inc1_pages >= written, "{inc1_pages} pages stored, {written} written");
    assert!(
        inc1_pages < written + 200,
        "{inc1_pages} pages stored for {written} written ({full_pages} in the full dump)"
    );

    assert!(ask(&mut original, "change").starts_with("CHANGED"));
    // What was written since full.crp is no longer known: inc1's dump moved
    // the tracking on.
    let stale = dump(pid, &image("stale.crp"), &["--leave-running", "--parent", image("full.crp").to_str().unwrap()]);
    assert_eq!(stale.status.code(), Some(3), "{}", stderr_of(&stale));
    assert!(stderr_of(&stale).contains("a later dump re-armed it"), "{}", stderr_of(&stale));
    dump_with(pid, &image("inc2.crp"), &["--parent", image("inc1.crp").to_str().unwrap()]);
    // A full dump of the same moment, for comparison (the tracking is left
    // as it is: it registered the memory, so this one copies frozen).
    dump_with(pid, &image("same-moment.crp"), &[]);
    assert_eq!(uffd_state(pid).0, 1);
    let expected = ask(&mut original, "check");
    assert!(expected.starts_with("OK digest="), "the original: {expected}");
    drop(original);

    let inspected = crp().arg("inspect").arg(image("inc2.crp")).output().unwrap();
    let text = stdout_of(&inspected);
    assert!(text.contains("inc1.crp (header checksum") && text.contains("full.crp (header checksum"), "{text}");
    let json = inspect_json(&image("inc2.crp"));
    let chain = &json["chain"];
    let parents: Vec<&str> =
        chain["parents"].as_array().unwrap().iter().map(|parent| parent["path"].as_str().unwrap()).collect();
    assert!(parents.len() == 2 && parents[0].ends_with("inc1.crp") && parents[1].ends_with("full.crp"), "{chain}");
    assert_eq!(chain["own_page_bytes"], own_pages(&image("inc2.crp")) * 4096, "{chain}");
    assert!(chain["inherited_page_bytes"].as_u64().unwrap() > 0, "{chain}");
    assert!(chain["broken"].is_null() && chain["tracking"]["fd"].as_i64().unwrap() >= 0, "{chain}");
    let same_moment = inspect_json(&image("same-moment.crp"))["chain"].clone();
    assert!(same_moment.is_null() || same_moment["parents"].as_array().unwrap().is_empty(), "{same_moment}");

    for name in ["inc2.crp", "same-moment.crp"] {
        let mut restored = restore_detached(&image(name));
        restored.stdin_line("check");
        let line = restored.read_line();
        assert_eq!(line, expected, "restored from {name}");
        assert_eq!(uffd_state(restored.pid), (0, 0), "no tracking is restored");
        restored.stdin_line("exit");
        assert_eq!(wait_pid(restored.pid), 0);
    }

    // The parent gone: refused, and nothing created.
    std::fs::rename(image("full.crp"), image("elsewhere.crp")).unwrap();
    let refused = restore(&image("inc2.crp"), &["--detach"], "");
    let stderr = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("full.crp is missing"), "{stderr}");
    let broken = inspect_json(&image("inc2.crp"));
    assert!(broken["chain"]["broken"].as_str().unwrap().contains("full.crp is missing"), "{}", broken["chain"]);
    assert!(!process_exists(pid), "a refused restore created the process");
    // Another image in its place: refused too.
    std::fs::copy(image("same-moment.crp"), image("full.crp")).unwrap();
    let refused = restore(&image("inc2.crp"), &["--detach"], "");
    let stderr = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("is not the one") && stderr.contains("full.crp"), "{stderr}");
    assert!(!process_exists(pid), "a refused restore created the process");
    // Moved together, the chain is found beside its child.
    let moved = directory.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    std::fs::rename(image("elsewhere.crp"), moved.join("full.crp")).unwrap();
    for name in ["inc1.crp", "inc2.crp"] {
        std::fs::rename(image(name), moved.join(name)).unwrap();
    }
    let mut restored = restore_detached(&moved.join("inc2.crp"));
    restored.stdin_line("check");
    assert_eq!(restored.read_line(), expected);
    restored.stdin_line("exit");
    assert_eq!(wait_pid(restored.pid), 0);
}

#[test]
fn untrack_leaves_nothing_and_a_parent_dump_is_then_refused_untouched() {
    let directory = tempfile::tempdir().unwrap();
    let full = directory.path().join("full.crp");
    let mut original = subject(8);
    let pid = original.pid;
    dump_with(pid, &full, &["--track-changes"]);
    assert_eq!(uffd_state(pid).0, 1);
    let untracked = crp().args(["untrack", &pid.to_string()]).output().unwrap();
    assert!(untracked.status.success(), "{}", stderr_of(&untracked));
    assert_eq!(uffd_state(pid), (0, 0), "a userfaultfd or a registration left");
    let again = crp().args(["untrack", &pid.to_string()]).output().unwrap();
    assert_eq!(again.status.code(), Some(1), "{}", stderr_of(&again));

    let refused =
        dump(pid, &directory.path().join("inc.crp"), &["--leave-running", "--parent", full.to_str().unwrap()]);
    let stderr = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("no change tracking armed"), "{stderr}");
    assert!(!directory.path().join("inc.crp").exists());
    assert_eq!(status_field(pid, "TracerPid"), "0");
    assert!(ask(&mut original, "check").starts_with("OK"));
}

#[test]
fn a_crp_killed_during_an_incremental_dump_leaves_the_process_tracked_against_its_parent() {
    let directory = tempfile::tempdir().unwrap();
    let full = directory.path().join("full.crp");
    let inc = directory.path().join("inc.crp");
    let mut original = subject(8);
    let pid = original.pid;
    dump_with(pid, &full, &["--track-changes"]);
    assert!(ask(&mut original, "change").starts_with("CHANGED"));
    // Killed once the state is captured, before the pages are read and the
    // tracking re-armed: the process runs on, still tracked against full.
    let killed = crp()
        .args(["dump", "--leave-running", "--quiet", &pid.to_string(), "--parent"])
        .arg(&full)
        .arg("-o")
        .arg(&inc)
        .env("CRP_TEST_FAULT", "captured:KILL")
        .output()
        .unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&killed.status), Some(libc::SIGKILL));
    assert!(!inc.exists());
    assert_eq!(status_field(pid, "TracerPid"), "0");
    assert_eq!(uffd_state(pid).0, 1);
    dump_with(pid, &inc, &["--parent", full.to_str().unwrap()]);
    let expected = ask(&mut original, "check");
    drop(original);
    become_subreaper();
    let mut restored = restore_detached(&inc);
    restored.stdin_line("check");
    assert_eq!(restored.read_line(), expected);
    restored.stdin_line("exit");
    assert_eq!(wait_pid(restored.pid), 0);
}
