//! `crp restore --lazy`: the process runs before its private anonymous
//! pages are in; they come from the image on first touch (userfaultfd) or
//! in the background. The subject checks every byte of its memory after
//! the restore; a crp killed before every page is in takes the process with
//! it, and a corrupted page run kills it, never letting it run on zeros.

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// The state subject with a heap of `heap_mib` MiB of known patterns,
/// dumped into `directory`: returns its pid (free again) and the image.
fn dumped_state_subject(directory: &Path, heap_mib: u32) -> (i32, PathBuf) {
    let (private, shared) = state_files(directory);
    let mut command = Command::new(&programs().dynamic);
    command.arg("state").arg(private).arg(shared).arg(heap_mib.to_string());
    let mut subject = Subject::spawn(command);
    let image = directory.join("lazy.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    (subject.pid, image)
}

#[test]
fn a_lazily_restored_process_has_every_page_of_its_memory() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_state_subject(directory.path(), 96);
    let log = directory.path().join("restore.log");
    let output = restore(&image, &["--lazy", "--log-file", log.to_str().unwrap()], "go\n");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(output.status.success(), "{}{}\n{log}", stdout_of(&output), stderr_of(&output));
    assert!(stdout_of(&output).starts_with(&format!("OK pid={pid} ")), "{}", stdout_of(&output));
    assert!(log.contains("lazy restore: private anonymous memory registered"), "{log}");
    assert!(log.contains("every page is in"), "{log}");
}

/// Starts `crp restore --lazy IMAGE` with `fault` (CRP_TEST_FAULT), its
/// stdin and stdout piped (the restored process inherits them).
fn lazy_restore_with_fault(image: &Path, fault: &str, extra: &[&str]) -> std::process::Child {
    let mut command = crp();
    command.arg("restore").arg("--lazy").args(extra).arg(image).env("CRP_TEST_FAULT", fault);
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits until `pid` is stopped (state T).
fn wait_until_stopped(pid: u32) {
    let path = format!("/proc/{pid}/stat");
    loop {
        let stat = std::fs::read_to_string(&path).unwrap();
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next().unwrap_or(' '));
        if state == Some('T') {
            return;
        }
        assert_ne!(state, Some('Z'), "crp ended instead of stopping at the fault");
        std::thread::yield_now();
    }
}

/// Reaps `pid` (reparented to the test) and asserts SIGKILL ended it.
fn assert_reaped_after_sigkill(pid: i32) {
    match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap() {
        nix::sys::wait::WaitStatus::Signaled(_, signal, _) => assert_eq!(signal, nix::sys::signal::Signal::SIGKILL),
        other => panic!("the restored process ended with {other:?}, not SIGKILL"),
    }
}

#[test]
fn a_crp_killed_before_every_page_is_in_leaves_no_process() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_state_subject(directory.path(), 96);
    // crp stops itself after its third run is placed: the process runs,
    // most of its heap still in the image. It is told to check its memory,
    // so it faults on pages only crp could place; then crp is killed.
    let mut restorer = lazy_restore_with_fault(&image, "lazy@3:STOP", &[]);
    wait_until_stopped(restorer.id());
    assert!(process_exists(pid), "the process runs while crp is stopped");
    let mut stdin = restorer.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    // Not closed yet: the process reads its line into a page only crp can
    // place, holding the pipe's lock, which a close would wait for.
    restorer.kill().unwrap();
    let output = restorer.wait_with_output().unwrap();
    assert_eq!(output.status.signal(), Some(libc::SIGKILL), "{}", stderr_of(&output));
    // The watchdog killed it (it is the test's child now).
    assert_reaped_after_sigkill(pid);
    drop(stdin);
    // It never ran on zeros: it said nothing (no FAIL, no OK).
    assert_eq!(stdout_of(&output), "", "{}", stderr_of(&output));
}

#[test]
fn a_crp_killed_mid_prefetch_by_sigkill_leaves_no_process() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_state_subject(directory.path(), 96);
    let mut restorer = lazy_restore_with_fault(&image, "lazy@5:KILL", &[]);
    // Held open: the process waits on its stdin, and must be killed there.
    let _stdin = restorer.stdin.take().unwrap();
    let output = restorer.wait_with_output().unwrap();
    assert_eq!(output.status.signal(), Some(libc::SIGKILL), "{}", stderr_of(&output));
    assert_reaped_after_sigkill(pid);
    assert_eq!(stdout_of(&output), "");
}

/// Flips one byte inside the largest page run of `image`, leaving its
/// header and run table as written: returns the run's index and address.
fn corrupt_largest_run(image: &Path) -> (usize, u64) {
    let reader = crp_image::ImageReader::open(image).unwrap();
    let (index, run) =
        reader.page_runs().iter().enumerate().max_by_key(|(_, run)| run.page_count).map(|(i, run)| (i, *run)).unwrap();
    drop(reader);
    let mut bytes = std::fs::read(image).unwrap();
    let at = usize::try_from(run.data_offset + run.byte_len() / 2).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(image, bytes).unwrap();
    (index, run.vaddr)
}

#[test]
fn a_corrupted_run_kills_the_process_naming_the_run() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_state_subject(directory.path(), 32);
    let (index, vaddr) = corrupt_largest_run(&image);
    // An eager restore refuses the image before anything is created.
    let eager = restore(&image, &[], "go\n");
    assert_eq!(eager.status.code(), Some(4), "{}", stderr_of(&eager));
    // A lazy one finds it when it first needs that run: the process is
    // killed before it reads any of it.
    let output = restore(&image, &["--lazy"], "go\n");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(&format!("page run {index} (address {vaddr:#x}) checksum mismatch")), "{stderr}");
    assert!(stderr.contains("killed"), "{stderr}");
    assert_eq!(stdout_of(&output), "", "the process said something: {stderr}");
    assert!(!process_exists(pid), "the restored process is still there");
}

#[test]
fn every_thread_of_a_lazily_restored_process_comes_back() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = Subject::spawn(Command::new(c_program("threads")));
    let image = directory.path().join("threads.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &["--lazy"], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} threads restored\n", subject.pid));
}

/// Python holding 64 MiB of distinct pages forks right after the restore,
/// while most of them are still in the image: the child (whose missing
/// pages are its parent's) and the parent both read every page.
const FORKING_PYTHON: &str = r#"
import os, sys
pages = 16384
data = bytearray(pages * 4096)
for page in range(pages):
    data[page * 4096:page * 4096 + 8] = (page * 2654435761 % 2**64).to_bytes(8, "little")
    data[page * 4096 + 4088:page * 4096 + 4096] = page.to_bytes(8, "little")
def check():
    for page in range(pages):
        if data[page * 4096:page * 4096 + 8] != (page * 2654435761 % 2**64).to_bytes(8, "little") or \
           data[page * 4096 + 4088:page * 4096 + 4096] != page.to_bytes(8, "little"):
            return page
    return None
print(f"READY {os.getpid()}", flush=True)
sys.stdin.readline()
child = os.fork()
if child == 0:
    os._exit(0 if check() is None else 3)
_, status = os.waitpid(child, 0)
bad = check()
print("OK forked" if status == 0 and bad is None else f"FAIL child status {status} parent page {bad}", flush=True)
"#;

#[test]
fn a_child_forked_before_every_page_is_in_gets_them_too() {
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new("python3");
    command.arg("-c").arg(FORKING_PYTHON);
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("forking.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let log = directory.path().join("restore.log");
    let output = restore(&image, &["--lazy", "--log-file", log.to_str().unwrap()], "go\n");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), "OK forked\n", "{}", stderr_of(&output));
    assert!(log.contains("its child is served too"), "the fork came after every page was in:\n{log}");
}
