//! The progress bar: drawn on a terminal (here a pseudo-terminal the test
//! holds), never into a pipe, and not at all with --quiet. A real dump takes
//! well under the second after which the bar appears, so the tests set that
//! delay to zero with the CRP_PROGRESS_AFTER_MS hook.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// Starts the zero-pages subject (it has a few MiB of pages to dump).
fn subject(directory: &Path) -> Subject {
    let file = directory.join("file.bin");
    std::fs::write(&file, vec![b'f'; 4 * 4096]).unwrap();
    let mut command = Command::new(c_program("zero_pages"));
    command.arg(&file);
    let mut subject = Subject::spawn(command);
    subject.read_line();
    subject
}

fn dump_command(pid: i32, image: &Path, extra: &[&str]) -> Command {
    let mut command = crp();
    command.env("CRP_PROGRESS_AFTER_MS", "0").arg("dump").arg(pid.to_string()).arg("-o").arg(image).args(extra);
    command
}

/// Runs `command` with a new pseudo-terminal as its stderr; everything it
/// drew there.
fn stderr_on_a_terminal(mut command: Command) -> String {
    let (master, slave_path) = open_pty(24, 100);
    let slave = std::fs::OpenOptions::new().read(true).write(true).custom_flags_noctty().open(&slave_path).unwrap();
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(slave).spawn().unwrap();
    // The child holds the only slave once `command` (which keeps its own
    // copy) is gone: reading ends (EIO) when the child exits.
    drop(command);
    let mut master = std::fs::File::from(master);
    let mut drawn = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(got @ 1..) = master.read(&mut buffer) {
        drawn.extend_from_slice(&buffer[..got]);
    }
    assert!(child.wait().unwrap().success(), "{}", String::from_utf8_lossy(&drawn));
    String::from_utf8_lossy(&drawn).into_owned()
}

trait NoControllingTerminal {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoControllingTerminal for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::custom_flags(self, libc::O_NOCTTY | libc::O_CLOEXEC)
    }
}

#[test]
fn a_dump_draws_its_progress_on_a_terminal() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = subject(directory.path());
    let drawn = stderr_on_a_terminal(dump_command(subject.pid, &directory.path().join("a.crp"), &[]));
    assert_killed(subject.wait());
    assert!(drawn.contains("crp: dump ") && drawn.contains("B/s"), "no progress bar drawn: {drawn:?}");
    assert!(drawn.contains("crp: dumped pid"), "{drawn:?}");
}

#[test]
fn quiet_draws_no_progress_on_a_terminal() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = subject(directory.path());
    let drawn = stderr_on_a_terminal(dump_command(subject.pid, &directory.path().join("a.crp"), &["--quiet"]));
    assert_killed(subject.wait());
    assert!(!drawn.contains("B/s") && !drawn.contains('\u{1b}'), "{drawn:?}");
    assert!(drawn.contains("crp: dumped pid"), "{drawn:?}");
}

#[test]
fn no_progress_is_drawn_into_a_pipe() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = subject(directory.path());
    let image = directory.path().join("a.crp");
    let output = dump_command(subject.pid, &image, &[]).stdin(Stdio::null()).output().unwrap();
    assert_killed(subject.wait());
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("B/s") && !stderr.contains('\r') && !stderr.contains('\u{1b}'), "{stderr:?}");
    let restored = restore(&image, &[], "go\n");
    assert!(!stderr_of(&restored).contains("B/s"), "{}", stderr_of(&restored));
    assert_eq!(stdout_of(&restored), format!("OK pid={} zero_pages\n", subject.pid));
}
