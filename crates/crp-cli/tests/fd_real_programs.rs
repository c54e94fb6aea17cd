//! Real programs holding the descriptors of the descriptor kinds, dumped
//! and restored as a user would: `tail -f` (inotify), `sqlite3` reading
//! its commands from a FIFO, and a program `make` started with its job
//! server's pipe on descriptors above 2.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use common::*;

/// A program whose stdout the test reads line by line.
struct Running {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Running {
    fn spawn(mut command: Command) -> Self {
        close_inherited_fds(&mut command);
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdout }
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until descriptor `fd` of `pid` links to something starting with
/// `prefix` (the program set it up), or the program is gone.
fn wait_for_descriptor(pid: i32, prefix: &str) -> i32 {
    loop {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            panic!("pid {pid} is gone before it opened {prefix}");
        };
        for entry in entries.flatten() {
            let link = std::fs::read_link(entry.path()).unwrap_or_default();
            if link.to_string_lossy().starts_with(prefix) {
                return entry.file_name().to_string_lossy().parse().unwrap();
            }
        }
        std::thread::yield_now();
    }
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

#[test]
fn tail_f_follows_its_file_again_after_a_restore() {
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("service.log");
    std::fs::write(&log, "before the dump\n").unwrap();
    let mut tail = Running::spawn({
        let mut command = Command::new("tail");
        command.arg("-n1").arg("-f").arg(&log);
        command
    });
    assert_eq!(tail.read_line(), "before the dump\n");
    let pid = i32::try_from(tail.child.id()).unwrap();
    wait_for_descriptor(pid, "anon_inode:inotify");
    let image = directory.path().join("tail.crp");
    dump_ok(pid, &image, &[]);
    assert_killed(tail.child.wait().unwrap());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(inspected.contains(&format!("watch 1: {}", log.display())), "{inspected}");

    append(&log, "while it was down\n");
    let mut restored = Running::spawn({
        let mut command = crp();
        command.arg("restore").arg("--pid-must-match").arg(&image);
        command
    });
    // The event of the write made while it was down is lost with the queue:
    // the next write brings both lines.
    wait_until_restored(pid, "anon_inode:inotify");
    let restored_pid = pid;
    append(&log, "after the restore\n");
    assert_eq!(restored.read_line(), "while it was down\n");
    assert_eq!(restored.read_line(), "after the restore\n");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(restored_pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = restored.child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "crp restore passes on tail's death by SIGTERM");
}

/// Waits until the restored process `pid` runs on its own (crp no longer
/// traces it) with descriptor kind `prefix` in place. The descriptor is
/// made while crp still traces the child (and the PID is untraced for a
/// moment before that), so both are looked at, in this order, each time.
fn wait_until_restored(pid: i32, prefix: &str) {
    loop {
        let placed = std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|entries| {
            entries.flatten().any(|entry| {
                std::fs::read_link(entry.path()).is_ok_and(|link| link.to_string_lossy().starts_with(prefix))
            })
        });
        if placed
            && let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && status.contains("\nTracerPid:\t0\n")
        {
            return;
        }
        std::thread::yield_now();
    }
}

#[test]
fn sqlite3_reading_commands_from_a_fifo_carries_on_where_it_was() {
    let directory = tempfile::tempdir().unwrap();
    let fifo = directory.path().join("commands");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let database = directory.path().join("data.db");
    // sqlite3's stdin is the FIFO, reopened by path at the restore; the
    // test keeps the writer open across the checkpoint.
    let mut sqlite = Running::spawn({
        let mut command = Command::new("sh");
        command.arg("-c").arg("exec sqlite3 -batch \"$0\" < \"$1\"").arg(&database).arg(&fifo);
        command
    });
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(b"create table t(x);\ninsert into t values ('one');\nselect 'READY';\n").unwrap();
    assert_eq!(sqlite.read_line(), "READY\n");
    let pid = i32::try_from(sqlite.child.id()).unwrap();
    let image = directory.path().join("sqlite.crp");
    dump_ok(pid, &image, &[]);
    assert_killed(sqlite.child.wait().unwrap());

    let mut restored = Running::spawn({
        let mut command = crp();
        command.arg("restore").arg("--pid-must-match").arg(&image);
        command
    });
    // Until the restored sqlite3 reopens it, the FIFO has no reader.
    wait_until_restored(pid, &fifo.to_string_lossy());
    writer.write_all(b"insert into t values ('two');\nselect count(*), group_concat(x) from t;\n").unwrap();
    assert_eq!(restored.read_line(), "2|one,two\n");
    drop(writer); // end of its input: sqlite3 exits 0
    let status = restored.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_program_make_started_keeps_the_job_server_pipe_and_its_token() {
    let directory = tempfile::tempdir().unwrap();
    let script = directory.path().join("job.py");
    std::fs::write(
        &script,
        "import os, re, stat, sys\n\
         r, w = map(int, re.search(r'--jobserver-auth=(\\d+),(\\d+)', os.environ['MAKEFLAGS']).groups())\n\
         print('READY', os.getpid(), r, w, flush=True)\n\
         sys.stdin.readline()\n\
         assert r > 2 and w > 2, (r, w)\n\
         assert stat.S_ISFIFO(os.fstat(r).st_mode) and stat.S_ISFIFO(os.fstat(w).st_mode)\n\
         os.set_blocking(r, False)\n\
         print('OK token', os.read(r, 8), flush=True)\n",
    )
    .unwrap();
    // `+`: a recursive recipe, which make hands its job server's pipe.
    std::fs::write(directory.path().join("Makefile"), format!("all:\n\t+@python3 {}\n", script.display())).unwrap();
    let mut make = Running::spawn({
        let mut command = Command::new("make");
        command.arg("-s").arg("-j2").arg("-C").arg(directory.path());
        command
    });
    let ready = make.read_line();
    let fields: Vec<&str> = ready.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"READY"), "{ready}");
    let pid: i32 = fields[1].parse().unwrap();
    let image = directory.path().join("job.crp");
    dump_ok(pid, &image, &[]);
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    // make -j2 keeps one token in the pipe for a second job: it is there again.
    assert_eq!(stdout_of(&output), "OK token b'+'\n", "{}", stderr_of(&output));
}
