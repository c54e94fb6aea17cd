//! `crp dump --leave-running` reads private anonymous memory through a
//! copy-on-write snapshot while the process runs on: the image holds the
//! memory as it was at the freeze, and a crp killed meanwhile leaves the
//! process running with nothing of crp's left in it.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;

/// The subject that sweeps `mib` MiB for ever (tests/programs/cow_writer.c).
fn writer(mib: u32, mode: &[&str]) -> Subject {
    let mut command = Command::new(c_program("cow_writer"));
    command.arg(mib.to_string()).args(mode);
    Subject::spawn(command)
}

/// Starts `crp dump --leave-running PID -o IMAGE` with `fault` as its test
/// fault, without waiting for it.
fn start_dump(pid: i32, image: &std::path::Path, fault: &str) -> Child {
    crp()
        .args(["dump", "--leave-running", "--quiet", &pid.to_string(), "-o"])
        .arg(image)
        .env("CRP_TEST_FAULT", fault)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls /proc until `holds` says yes about `pid`'s `file` (an event
/// another process causes; each look is cheap).
fn wait_until(pid: i32, file: &str, holds: impl Fn(&str) -> bool) {
    let path = format!("/proc/{pid}/{file}");
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if holds(&text) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn state_of(text: &str) -> Option<char> {
    text.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next())
}

/// Asks the writer (original or restored) to check its memory, returning
/// what it printed.
fn check_line(pid: i32, read_line: &mut dyn FnMut() -> String) -> String {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGUSR1).unwrap();
    read_line()
}

#[test]
fn the_image_holds_the_memory_of_the_freeze_while_the_process_writes_on() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("writer.crp");
    let mut original = writer(64, &[]);
    let map = read_map(&mut original);
    // crp stops itself once the process is released, before reading any
    // private page; the process then writes on and waits in the kernel
    // for crp's handler: a page written after the freeze, not yet read.
    let dump = start_dump(original.pid, &image, "copying@0:STOP");
    let crp_pid = dump.id().cast_signed();
    wait_until(crp_pid, "stat", |stat| state_of(stat) == Some('T'));
    wait_until(original.pid, "wchan", |wchan| wchan.trim() == "handle_userfault");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(crp_pid), nix::sys::signal::Signal::SIGCONT).unwrap();
    let output = dump.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("read copy-on-write while it ran on"), "{stderr}");
    let copied: u64 = stderr
        .split(" pages copied before their first write")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count of copied pages: {stderr}"));
    assert!(copied > 0, "the write made during the copy was not seen: {stderr}");
    assert_eq!(status_field(original.pid, "TracerPid"), "0");

    let line = check_line(original.pid, &mut || original.read_line());
    assert!(line.starts_with("CONSISTENT"), "the original: {line}");
    original.child.kill().unwrap();
    original.wait();

    assert_image_is_the_freeze(&image, &map);
    // And the image restores: the copy sweeps on from there.
    let mut restored = restore_detached(&image);
    let line = check_line(restored.pid, &mut || restored.read_line());
    assert!(line.starts_with("CONSISTENT"), "the restored copy: {line}");
    let restored_pid = nix::unistd::Pid::from_raw(restored.pid);
    nix::sys::signal::kill(restored_pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let ended = nix::sys::wait::waitpid(restored_pid, None).unwrap();
    assert!(
        matches!(ended, nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)),
        "{ended:?}"
    );
}

/// Where the writer's memory is: "MAP <memory> <progress> <pages>".
struct WriterMap {
    memory: u64,
    progress: u64,
    pages: u64,
}

fn read_map(subject: &mut Subject) -> WriterMap {
    let line = subject.read_line();
    let words: Vec<&str> = line.split_whitespace().collect();
    let hex = |word: &str| u64::from_str_radix(word, 16).unwrap();
    assert_eq!(words.len(), 4, "{line}");
    WriterMap { memory: hex(words[1]), progress: hex(words[2]), pages: words[3].parse().unwrap() }
}

/// The first word of each page of the image from `start` on, for `count`
/// pages, and the last word; a page the image lacks reads as zero.
fn page_words(reader: &crp_image::ImageReader, start: u64, count: u64) -> Vec<(u64, u64)> {
    let mut words = vec![(0, 0); usize::try_from(count).unwrap()];
    for run in reader.page_runs() {
        let data = reader.run_data(run);
        for index in 0..run.page_count {
            let address = run.vaddr + index * 4096;
            if address < start || address >= start + count * 4096 {
                continue;
            }
            let page = &data[usize::try_from(index * 4096).unwrap()..][..4096];
            let word = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().unwrap());
            words[usize::try_from((address - start) / 4096).unwrap()] = (word(0), word(4096 - 8));
        }
    }
    words
}

/// The image holds the writer as it was at one instant: its progress word
/// and every page agree (see cow_writer.c).
fn assert_image_is_the_freeze(image: &std::path::Path, map: &WriterMap) {
    let reader = crp_image::ImageReader::open(image).unwrap();
    let progress = page_words(&reader, map.progress, 1)[0].0;
    let (generation, position) = (progress / map.pages + 1, progress % map.pages);
    for (page, (first, last)) in page_words(&reader, map.memory, map.pages).into_iter().enumerate() {
        let page = page as u64;
        let allowed: &[u64] = match page.cmp(&position) {
            std::cmp::Ordering::Less => &[generation],
            std::cmp::Ordering::Equal => &[generation - 1, generation],
            std::cmp::Ordering::Greater => &[generation - 1],
        };
        assert!(
            allowed.contains(&first) && allowed.contains(&last),
            "page {page} holds {first}/{last} in the image, frozen at generation {generation} position {position}"
        );
    }
}

#[test]
fn a_crp_killed_during_the_background_copy_leaves_the_process_running_untracked() {
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("writer.crp");
    let mut original = writer(64, &[]);
    read_map(&mut original);
    let dump = start_dump(original.pid, &image, "copying@2:KILL");
    let output = dump.wait_with_output().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&output.status), Some(libc::SIGKILL));
    assert!(!image.exists(), "a killed dump left an image");
    // It runs on, its memory intact, and goes on writing.
    let first = check_line(original.pid, &mut || original.read_line());
    assert!(first.starts_with("CONSISTENT"), "{first}");
    let second = check_line(original.pid, &mut || original.read_line());
    assert!(second.starts_with("CONSISTENT") && second != first, "it stopped sweeping: {first} then {second}");
    assert_eq!(status_field(original.pid, "TracerPid"), "0");
    // No userfaultfd left in it, no range still registered.
    for entry in std::fs::read_dir(format!("/proc/{}/fd", original.pid)).unwrap() {
        let target = std::fs::read_link(entry.unwrap().path()).unwrap();
        assert!(!target.to_string_lossy().contains("userfaultfd"), "left behind: {}", target.display());
    }
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", original.pid)).unwrap();
    for flags in smaps.lines().filter(|line| line.starts_with("VmFlags:")) {
        assert!(!flags.split_whitespace().any(|flag| flag == "uw"), "still write-protect tracked: {flags}");
    }
    original.child.kill().unwrap();
    original.wait();
}

#[test]
fn memory_unmapped_during_the_copy_makes_crp_dump_again_frozen() {
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("writer.crp");
    let mut original = writer(64, &["unmap"]);
    let map = read_map(&mut original);
    let dump = start_dump(original.pid, &image, "copying@0:STOP");
    let crp_pid = dump.id().cast_signed();
    wait_until(crp_pid, "stat", |stat| state_of(stat) == Some('T'));
    // It unmaps memory crp has not read yet; the unmap waits for crp's
    // handler to hear of it, then crp goes on.
    wait_until(original.pid, "wchan", |wchan| wchan.trim() == "handle_userfault");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(original.pid), nix::sys::signal::Signal::SIGUSR2).unwrap();
    wait_until(original.pid, "wchan", |wchan| wchan.trim() == "userfaultfd_event_wait_completion");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(crp_pid), nix::sys::signal::Signal::SIGCONT).unwrap();
    let output = dump.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("unmapped") && stderr.contains("dumping it again, frozen for the whole copy"), "{stderr}");
    assert!(!stderr.contains("read copy-on-write"), "{stderr}");
    assert_eq!(original.read_line(), "UNMAPPED\n");
    assert_image_is_the_freeze(&image, &map);
    original.child.kill().unwrap();
    original.wait();
}
