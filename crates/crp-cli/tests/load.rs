//! Many cycles: one process dumped and restored 200 times in a row, and ten
//! processes cycled at the same time. Every cycle leaves the same process
//! (same PID, same memory map, descriptors 0-2 only, untraced, not stopped),
//! no file but the image, no zombie; at the end each process checks its
//! whole state itself.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

const CYCLES_IN_A_ROW: usize = 200;
const AT_A_TIME: usize = 10;
const CYCLES_EACH: usize = 10;

/// The memory map without the fields a restore legitimately changes
/// (none; the whole line must match).
fn maps(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap()
}

fn descriptors(pid: i32) -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into())
        .collect();
    fds.sort();
    fds
}

/// Dumps and restores the small state subject `cycles` times in
/// `directory`, checking each cycle, and returns how it answered at the end.
fn cycle(directory: &Path, cycles: usize) -> String {
    let (private, shared) = state_files(directory);
    let mut command = Command::new(&programs().dynamic);
    command.arg("state").arg(private).arg(shared).arg("1");
    let mut subject = Subject::spawn(command);
    let pid = subject.pid;
    let image = directory.join("cycle.crp");
    let first_maps = maps(pid);
    // The first dump kills the test's own child; later ones kill
    // processes restored under this subreaper. Both are reaped here.
    dump_ok(pid, &image, &[]);
    assert_killed(subject.wait());
    let mut restored = None;
    for round in 0..cycles {
        let process = restore_detached(&image);
        assert_eq!(process.pid, pid, "round {round}: another pid");
        assert_eq!(maps(pid), first_maps, "round {round}: the memory map changed");
        assert_eq!(descriptors(pid), ["0", "1", "2"], "round {round}: descriptors");
        // Its stdin is the pipe this crp restore was given, nobody else's.
        let ours =
            std::os::unix::fs::MetadataExt::ino(&std::fs::File::from(process.stdin.try_clone_fd()).metadata().unwrap());
        let its = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
        assert_eq!(its.to_string_lossy(), format!("pipe:[{ours}]"), "round {round}: another stdin");
        assert_eq!(status_field(pid, "TracerPid"), "0", "round {round}");
        assert!(!status_field(pid, "State").starts_with('T'), "round {round}: stopped");
        if round + 1 == cycles {
            restored = Some(process);
            break;
        }
        dump_ok(pid, &image, &[]);
        match waitpid(Pid::from_raw(pid), None).unwrap() {
            WaitStatus::Signaled(_, Signal::SIGKILL, _) => {}
            other => panic!("round {round}: the dumped process ended with {other:?}"),
        }
        let mut names: Vec<String> = std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into())
            .collect();
        names.sort();
        assert_eq!(names, ["cycle.crp", "private.bin", "shared.bin"], "round {round}: files");
    }
    let mut process = restored.expect("at least one cycle");
    if !process.stdin.write_all_line("go") {
        let said = process.read_line();
        panic!("pid {pid} no longer reads its stdin; it said {said:?} and ended with {}", wait_pid(pid));
    }
    let verdict = process.read_line();
    assert_eq!(wait_pid(pid), 0, "{verdict}");
    verdict
}

trait CloneFd {
    fn try_clone_fd(&self) -> std::os::fd::OwnedFd;
}

impl CloneFd for std::process::ChildStdin {
    fn try_clone_fd(&self) -> std::os::fd::OwnedFd {
        std::os::fd::AsFd::as_fd(self).try_clone_to_owned().unwrap()
    }
}

trait WriteLine {
    /// Whether the line could be written.
    fn write_all_line(&mut self, line: &str) -> bool;
}

impl WriteLine for std::process::ChildStdin {
    fn write_all_line(&mut self, line: &str) -> bool {
        use std::io::Write;
        // One write: the subject takes whatever one read returns.
        self.write_all(format!("{line}\n").as_bytes()).is_ok()
    }
}

#[test]
fn two_hundred_dump_restore_cycles_in_a_row_leave_the_same_process_and_nothing_else() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let verdict = cycle(directory.path(), CYCLES_IN_A_ROW);
    assert!(verdict.starts_with("OK pid="), "{verdict}");
}

#[test]
fn ten_processes_cycled_at_the_same_time_each_come_back_whole() {
    become_subreaper();
    let verdicts: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..AT_A_TIME)
            .map(|_| {
                scope.spawn(|| {
                    let directory = tempfile::tempdir().unwrap();
                    cycle(directory.path(), CYCLES_EACH)
                })
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().unwrap()).collect()
    });
    for verdict in &verdicts {
        assert!(verdict.starts_with("OK pid="), "{verdict}");
    }
}
