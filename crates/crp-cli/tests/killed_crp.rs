//! crp killed (SIGKILL) or cancelled (SIGTERM) at every named moment of a
//! dump and of a restore, chosen deterministically with the
//! `CRP_TEST_FAULT` hook: the process being dumped carries on exactly as it
//! was (it checks its own registers, vector registers, memory, mask,
//! altstack and handler), untraced and not stopped; a cancelled dump leaves
//! no file; a killed restore leaves no process.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn crp_with_fault(fault: &str, arguments: &[&std::ffi::OsStr]) -> Output {
    crp().env("CRP_TEST_FAULT", fault).args(arguments).output().unwrap()
}

fn dump_with_fault(pid: i32, image: &Path, fault: &str, extra: &[&str]) -> Output {
    let pid = pid.to_string();
    let mut arguments: Vec<&std::ffi::OsStr> = vec!["dump".as_ref(), pid.as_ref(), "-o".as_ref(), image.as_os_str()];
    arguments.extend(extra.iter().map(|argument| std::ffi::OsStr::new(*argument)));
    crp_with_fault(fault, &arguments)
}

fn state_subject(directory: &Path) -> Subject {
    let (private, shared) = state_files(directory);
    let mut command = Command::new(&programs().dynamic);
    command.arg("state").arg(private).arg(shared);
    Subject::spawn(command)
}

/// The process is untraced, and not left stopped, once crp is gone.
fn assert_released(pid: i32, after: &str) {
    assert_eq!(status_field(pid, "TracerPid"), "0", "still traced after {after}");
    let state = status_field(pid, "State");
    assert!(!state.starts_with('T') && !state.starts_with('t'), "left stopped ({state}) after {after}");
}

/// Nothing but the files the test put there is left in `directory`.
fn assert_no_leftovers(directory: &Path, expected: &[&str], after: &str) {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into())
        .collect();
    names.sort();
    let mut expected: Vec<String> = expected.iter().map(|name| (*name).to_owned()).collect();
    expected.sort();
    assert_eq!(names, expected, "files left after {after}");
}

fn assert_killed_by(output: &Output, signal: i32, fault: &str) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(output.status.signal(), Some(signal), "crp with {fault}: {:?} {}", output.status, stderr_of(output));
}

/// How many syscalls a dump of `pid` with `extra` arguments injects while
/// the process is parked (each one a numbered `injecting` moment), from
/// its log.
fn injections_in_a_dump(pid: i32, image: &Path, extra: &[&str]) -> u64 {
    let log = image.with_extension("log");
    let output = crp()
        .arg("--log-file")
        .arg(&log)
        .args(["dump", &pid.to_string(), "-o"])
        .arg(image)
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(image);
    let _ = std::fs::remove_file(&log);
    text.lines().filter(|line| line.contains("injected syscall (parked)")).count() as u64
}

#[test]
fn a_dump_killed_between_or_during_any_injected_syscall_leaves_the_process_exact() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = state_subject(directory.path());
    let image = directory.path().join("killed.crp");
    let mut left_a_userfaultfd = Vec::new();
    for extra in [&[][..], &["--leave-running"][..]] {
        // Counted on a subject of its own: the dump kills it.
        let injections = {
            let counted = state_subject(directory.path());
            let injections = injections_in_a_dump(counted.pid, &image, extra);
            assert_killed(subject_wait(counted, extra));
            injections
        };
        assert!(injections > 10, "only {injections} injected syscalls?");
        let mut faults: Vec<String> = ["frozen", "parking", "unparking", "unparked", "captured", "pages"]
            .iter()
            .map(|moment| format!("{moment}:KILL"))
            .collect();
        for count in 1..=injections {
            faults.push(format!("injecting@{count}:KILL"));
            faults.push(format!("in-syscall@{count}:KILL"));
        }
        for fault in &faults {
            let output = dump_with_fault(subject.pid, &image, fault, extra);
            assert_killed_by(&output, libc::SIGKILL, fault);
            assert_released(subject.pid, fault);
            assert_no_leftovers(directory.path(), &["private.bin", "shared.bin"], fault);
            // The one documented leftover of a descriptor: a copy-on-write
            // dump killed between the userfaultfd it injects and its close
            // leaves that (inert: never set up) descriptor. The survivor
            // cannot be dumped again (crp refuses userfaultfds): a new
            // subject takes its place.
            if userfaultfds_of(subject.pid) > 0 {
                left_a_userfaultfd.push(fault.clone());
                subject.child.kill().unwrap();
                subject.wait();
                subject = state_subject(directory.path());
            }
        }
    }
    // The window is one injected syscall and the next one's entry.
    assert!(left_a_userfaultfd.len() <= 3, "a userfaultfd left after {left_a_userfaultfd:?}");
    // One more, complete dump still works on the survivor.
    dump_ok(subject.pid, &image, &["--leave-running"]);
    subject.send("go\n");
    let verdict = subject.read_line();
    assert!(verdict.starts_with(&format!("OK pid={} ", subject.pid)), "after every fault: {verdict}");
    assert!(subject.wait().success());
}

/// Waits for a subject a dump with `extra` ended: killed (without
/// --leave-running) or left running (then killed here).
fn subject_wait(mut subject: Subject, extra: &[&str]) -> std::process::ExitStatus {
    if !extra.is_empty() {
        subject.child.kill().unwrap();
    }
    subject.wait()
}

/// How many userfaultfd descriptors `pid` holds.
fn userfaultfds_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.unwrap().path()).ok())
        .filter(|target| target.to_string_lossy().contains("userfaultfd"))
        .count()
}

#[test]
fn a_dump_killed_while_the_process_runs_between_two_instructions_keeps_every_register() {
    // The spin subject checks 64-bit patterns in 13 general registers on
    // every iteration, and its CPU-time budget is its own.
    let mut command = Command::new(&programs().dynamic);
    command.args(["spin", "3", "prof"]);
    let mut subject = Subject::spawn(command);
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("spin.crp");
    for fault in ["parking:KILL", "injecting@1:KILL", "in-syscall@5:KILL", "in-syscall@60:KILL", "unparking:KILL"] {
        let output = dump_with_fault(subject.pid, &image, fault, &[]);
        assert_killed_by(&output, libc::SIGKILL, fault);
        assert_released(subject.pid, fault);
    }
    let verdict = subject.rest_of_output();
    assert!(subject.wait().success(), "{verdict}");
    assert!(verdict.starts_with("OK"), "{verdict}");
}

#[test]
fn a_dump_killed_while_the_process_sleeps_lets_it_sleep_its_whole_time() {
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "2"]);
    let mut subject = Subject::spawn(command);
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("sleep.crp");
    for fault in ["in-syscall@3:KILL", "injecting@20:KILL"] {
        let output = dump_with_fault(subject.pid, &image, fault, &[]);
        assert_killed_by(&output, libc::SIGKILL, fault);
        assert_released(subject.pid, fault);
    }
    let stdout = subject.rest_of_output();
    assert!(subject.wait().success(), "{stdout}");
    assert!(slept_seconds(&stdout) >= 2.0, "{stdout}");
}

#[test]
fn a_cancelled_dump_releases_the_process_removes_its_image_and_exits_143() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = state_subject(directory.path());
    let image = directory.path().join("cancelled.crp");
    for moment in ["frozen", "parking", "injecting@3", "in-syscall@7", "unparked", "captured", "pages", "written"] {
        for extra in [&[][..], &["--leave-running"][..]] {
            let fault = format!("{moment}:TERM");
            let output = dump_with_fault(subject.pid, &image, &fault, extra);
            assert_eq!(output.status.code(), Some(143), "{fault}: {}", stderr_of(&output));
            assert!(stderr_of(&output).contains("dump cancelled by signal 15 (SIGTERM)"), "{}", stderr_of(&output));
            assert_released(subject.pid, &fault);
            assert_no_leftovers(directory.path(), &["private.bin", "shared.bin"], &fault);
        }
    }
    subject.send("go\n");
    let verdict = subject.read_line();
    assert!(verdict.starts_with(&format!("OK pid={} ", subject.pid)), "{verdict}");
}

/// Dumps a fresh state subject (killing it) into `directory`.
fn dumped_state_image(directory: &Path) -> (i32, std::path::PathBuf) {
    let mut subject = state_subject(directory);
    let image = directory.join("restore-me.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    (subject.pid, image)
}

#[test]
fn a_restore_killed_at_any_moment_leaves_no_process() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_state_image(directory.path());
    for moment in ["validated", "cloned", "built"] {
        let fault = format!("{moment}:KILL");
        let output = crp_with_fault(&fault, &["restore".as_ref(), image.as_os_str()]);
        assert_killed_by(&output, libc::SIGKILL, &fault);
        if moment != "validated" {
            // The child (orphaned to this subreaper) must die on its own.
            match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
                Ok(nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _))
                | Ok(nix::sys::wait::WaitStatus::Exited(_, 127)) => {}
                other => panic!("the restore child after {fault} ended with {other:?}"),
            }
        }
        assert!(!process_exists(pid), "pid {pid} survives {fault}");
    }
    // The image is intact: a complete restore still works.
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
}

#[test]
fn a_cancelled_restore_leaves_no_process_and_exits_143() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_state_image(directory.path());
    for moment in ["validated", "cloned", "built"] {
        let fault = format!("{moment}:TERM");
        let output = crp_with_fault(&fault, &["restore".as_ref(), "--detach".as_ref(), image.as_os_str()]);
        assert_eq!(output.status.code(), Some(143), "{fault}: {}", stderr_of(&output));
        assert!(stderr_of(&output).contains("restore cancelled"), "{}", stderr_of(&output));
        assert!(!process_exists(pid), "pid {pid} survives {fault}");
    }
}

fn bare_subject(mode: &str) -> Subject {
    let mut command = Command::new(bare_program());
    command.arg(mode);
    Subject::spawn(command)
}

#[test]
fn a_dump_of_a_process_without_a_signal_restorer_leaves_its_maps_and_stack_bytes_as_they_were() {
    // "stack": crp parks it on a page of its own (no restorer in its code)
    // but borrows nothing else; "nostack": no room below its stack pointer
    // either. It checks 16 KiB below its stack pointer and its registers.
    for mode in ["stack", "nostack"] {
        let mut subject = bare_subject(mode);
        let directory = tempfile::tempdir().unwrap();
        let image = directory.path().join("bare.crp");
        let maps = || std::fs::read_to_string(format!("/proc/{}/maps", subject.pid)).unwrap();
        let before = maps();
        dump_ok(subject.pid, &image, &["--leave-running"]);
        assert_eq!(maps(), before, "{mode}: the memory map changed");
        subject.send("go\n");
        assert_eq!(subject.read_line(), "OK\n", "{mode}");
        assert!(subject.wait().success());
    }
}

#[test]
fn a_process_without_a_signal_restorer_survives_crp_killed_once_it_is_parked() {
    // A killed dump leaves crp's page behind, and with it a restorer the
    // next dump uses, with a frame below the stack pointer (where a signal
    // would have put one): so the "stack" subject, which checks the bytes
    // there, is killed once; the "nostack" one at every moment.
    let all = ["parking:KILL", "injecting@1:KILL", "in-syscall@2:KILL", "injecting@30:KILL", "unparking:KILL"];
    for (mode, faults) in [("stack", &all[2..3]), ("nostack", &all[..])] {
        let mut subject = bare_subject(mode);
        let directory = tempfile::tempdir().unwrap();
        let image = directory.path().join("bare.crp");
        for fault in faults {
            let output = dump_with_fault(subject.pid, &image, fault, &[]);
            assert_killed_by(&output, libc::SIGKILL, fault);
            assert_released(subject.pid, fault);
        }
        subject.send("go\n");
        assert_eq!(subject.read_line(), "OK\n", "{mode}");
        assert!(subject.wait().success());
    }
}

#[test]
fn a_process_without_a_signal_restorer_is_restored() {
    let mut subject = bare_subject("stack");
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("bare.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), "OK\n");
}
