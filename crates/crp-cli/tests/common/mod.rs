//! Shared pieces of the integration tests: the crp binary, the compiled
//! subject programs, and a handle on a process under test that announces
//! itself with "READY <pid>".

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;

/// The `crp` binary under test.
pub fn crp() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crp"));
    close_inherited_fds(&mut command);
    command
}

/// Keeps descriptors the test runner inherited (from whatever started
/// cargo) out of the processes under test: crp would rightly refuse them.
pub fn close_inherited_fds(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only makes one
    // async-signal-safe syscall.
    unsafe {
        command.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
}

/// Makes this test process reap (and be able to wait for) detached
/// restored processes, whose parent `crp restore` exits.
pub fn become_subreaper() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER"));
}

/// The subject program, built once per test binary: dynamic and static.
pub struct Programs {
    pub dynamic: PathBuf,
    pub static_: PathBuf,
}

pub fn programs() -> &'static Programs {
    static PROGRAMS: OnceLock<Programs> = OnceLock::new();
    PROGRAMS.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/subject.c");
        let directory = std::env::temp_dir().join(format!("crp-subjects-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let build = |name: &str, extra: &[&str]| {
            let output = directory.join(name);
            let status = Command::new("gcc")
                .args(["-O2", "-Wall", "-o"])
                .arg(&output)
                .arg(&source)
                .args(extra)
                .status()
                .expect("gcc must be installed");
            assert!(status.success(), "building {name} failed");
            output
        };
        Programs { dynamic: build("subject", &[]), static_: build("subject-static", &["-static"]) }
    })
}

/// The test program tests/programs/NAME.c, built once per test binary.
pub fn c_program(name: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    built
        .entry(name.to_owned())
        .or_insert_with(|| {
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/programs/{name}.c"));
            let directory = std::env::temp_dir().join(format!("crp-subjects-{}", std::process::id()));
            std::fs::create_dir_all(&directory).unwrap();
            let output = directory.join(name);
            let status = Command::new("gcc")
                .args(["-O2", "-Wall", "-o"])
                .arg(&output)
                .arg(&source)
                .status()
                .expect("gcc must be installed");
            assert!(status.success(), "building {name} failed");
            output
        })
        .clone()
}

/// The subject without a C library (tests/programs/bare.c), built once.
pub fn bare_program() -> &'static Path {
    static BARE: OnceLock<PathBuf> = OnceLock::new();
    BARE.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/bare.c");
        let directory = std::env::temp_dir().join(format!("crp-subjects-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let output = directory.join("bare");
        let status = Command::new("gcc")
            .args(["-O2", "-Wall", "-nostdlib", "-static", "-no-pie", "-ffreestanding", "-fno-builtin"])
            .args(["-fno-tree-loop-distribute-patterns", "-fno-stack-protector", "-o"])
            .arg(&output)
            .arg(&source)
            .status()
            .expect("gcc must be installed");
        assert!(status.success(), "building bare failed");
        output
    })
}

/// A private and a shared file for the `state` subject to map.
pub fn state_files(directory: &Path) -> (PathBuf, PathBuf) {
    let private = directory.join("private.bin");
    let mut contents = Vec::new();
    for page in [&b"private-page-0"[..], b"private-page-1", b"private-page-2"] {
        let mut block = page.to_vec();
        block.resize(4096, 0);
        contents.extend(block);
    }
    std::fs::write(&private, contents).unwrap();
    let shared = directory.join("shared.bin");
    std::fs::write(&shared, vec![0u8; 4096]).unwrap();
    (private, shared)
}

/// A running process under test.
pub struct Subject {
    pub child: Child,
    pub pid: i32,
    pub stdin: Option<ChildStdin>,
    pub stdout: BufReader<ChildStdout>,
}

impl Subject {
    /// Starts `command` with piped stdin/stdout and waits for "READY <pid>".
    pub fn spawn(command: Command) -> Subject {
        Self::spawn_with_stderr(command, Stdio::inherit())
    }

    /// Like [`Subject::spawn`], with `stderr` as its standard error.
    pub fn spawn_with_stderr(mut command: Command, stderr: Stdio) -> Subject {
        close_inherited_fds(&mut command);
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(stderr).spawn().expect("spawn subject");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let pid = read_ready(&mut stdout);
        assert_eq!(pid, child.id() as i32, "subject announced another pid");
        Subject { child, pid, stdin, stdout }
    }

    /// Waits for the process to end (it must, e.g. after a dump killed it).
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    /// Sends a line on its stdin.
    pub fn send(&mut self, line: &str) {
        self.stdin.as_mut().unwrap().write_all(line.as_bytes()).unwrap();
    }

    /// Reads one line of its stdout.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line
    }

    /// Everything it still writes until it closes stdout.
    pub fn rest_of_output(&mut self) -> String {
        let mut text = String::new();
        self.stdout.read_to_string(&mut text).unwrap();
        text
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_ready(stdout: &mut impl BufRead) -> i32 {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line.strip_prefix("READY ")
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("expected READY <pid>, got {line:?}"))
}

/// Runs `crp dump PID -o IMAGE [extra]` and returns its output.
pub fn dump(pid: i32, image: &Path, extra: &[&str]) -> Output {
    crp().arg("dump").arg(pid.to_string()).arg("-o").arg(image).args(extra).output().unwrap()
}

/// Dumps and asserts success, showing crp's stderr otherwise.
pub fn dump_ok(pid: i32, image: &Path, extra: &[&str]) {
    let output = dump(pid, image, extra);
    assert!(output.status.success(), "dump failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Runs `crp restore IMAGE [extra]` to completion with `input` on stdin.
pub fn restore(image: &Path, extra: &[&str], input: &str) -> Output {
    let mut child = crp()
        .arg("restore")
        .arg(image)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A restore that refuses exits without reading its input: the pipe is
    // then broken, and the output says what happened.
    if let Err(error) = child.stdin.take().unwrap().write_all(input.as_bytes()) {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "writing the restore's input: {error}");
    }
    child.wait_with_output().unwrap()
}

pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the process was killed by SIGKILL (what a dump does).
pub fn assert_killed(status: ExitStatus) {
    assert_eq!(status.signal(), Some(libc::SIGKILL), "expected SIGKILL, got {status:?}");
}

pub fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A /proc/PID/status field.
pub fn status_field(pid: i32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines().find_map(|line| line.strip_prefix(&format!("{key}:")).map(|value| value.trim().to_owned())).unwrap()
}

/// Waits for a (reparented) process and returns its exit code.
pub fn wait_pid(pid: i32) -> i32 {
    match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap() {
        nix::sys::wait::WaitStatus::Exited(_, code) => code,
        other => panic!("pid {pid} ended with {other:?}"),
    }
}

/// A process restored with `crp restore --detach`: its PID (the last line
/// crp printed) and the standard streams it inherited from crp.
pub struct Detached {
    pub pid: i32,
    pub stdin: ChildStdin,
    pub stdout: BufReader<ChildStdout>,
}

impl Detached {
    /// Sends `line` and a newline on its stdin.
    pub fn stdin_line(&mut self, line: &str) {
        self.stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line
    }
}

/// Runs `crp restore --detach IMAGE` and waits for crp (not the process).
/// Reap the process with [`wait_pid`] after [`become_subreaper`].
pub fn restore_detached(image: &Path) -> Detached {
    let mut restorer =
        crp().arg("restore").arg("--detach").arg(image).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    // Child::wait closes stdin: keep our end for the restored process.
    let stdin = restorer.stdin.take().unwrap();
    let mut stdout = BufReader::new(restorer.stdout.take().unwrap());
    let mut pid_line = String::new();
    stdout.read_line(&mut pid_line).unwrap();
    assert!(restorer.wait().unwrap().success(), "crp restore --detach failed");
    let pid = pid_line.trim().parse().unwrap_or_else(|_| panic!("expected a pid, got {pid_line:?}"));
    Detached { pid, stdin, stdout }
}

/// Rewrites a real image's metadata with `change`, keeping its pages.
pub fn rewritten_image(source: &Path, change: impl FnOnce(&mut crp_cli::model::ProcessImage)) -> PathBuf {
    let reader = crp_image::ImageReader::open(source).unwrap();
    let archived = reader.metadata::<crp_cli::model::ArchivedProcessImage>().unwrap();
    let mut image: crp_cli::model::ProcessImage =
        rkyv::deserialize::<crp_cli::model::ProcessImage, rkyv::rancor::Error>(archived).unwrap();
    change(&mut image);
    let target = source.with_extension("changed.crp");
    let mut writer = crp_image::ImageWriter::create(&target).unwrap();
    for run in reader.page_runs() {
        let data = reader.run_data(run);
        writer
            .add_page_run(run.vaddr, run.page_count, |address, buffer| {
                let offset = usize::try_from(address - run.vaddr).unwrap();
                buffer.copy_from_slice(&data[offset..offset + buffer.len()]);
                Ok(())
            })
            .unwrap();
    }
    writer.finish(&crp_image::to_archive(&image).unwrap()).unwrap();
    target
}

/// One dump-then-restore round of the dynamic subject.
pub struct RoundTrip {
    /// The subject's PID (the restored process should have it again).
    pub pid: i32,
    /// `crp restore`'s output: the restored process's stdout and exit.
    pub output: Output,
    /// How long `crp restore` took, the restored process's run included.
    pub restore_seconds: f64,
}

/// Starts the dynamic subject with `arguments`, lets it run for `running`,
/// dumps it with `dump_arguments` (asserting the dump killed it), then
/// restores it with `restore_arguments` and an empty stdin, timing that.
pub fn round_trip(
    arguments: &[&str],
    running: std::time::Duration,
    dump_arguments: &[&str],
    restore_arguments: &[&str],
) -> RoundTrip {
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.args(arguments);
    let mut subject = Subject::spawn(command);
    std::thread::sleep(running);
    let image = directory.path().join("round-trip.crp");
    dump_ok(subject.pid, &image, dump_arguments);
    assert_killed(subject.wait());
    let started = std::time::Instant::now();
    let output = restore(&image, restore_arguments, "");
    RoundTrip { pid: subject.pid, output, restore_seconds: started.elapsed().as_secs_f64() }
}

/// The sleep subject inside nanosleep(`seconds`), dumped (with
/// `dump_arguments`) once at least `asleep_for` seconds of it have passed,
/// and restored (with `restore_arguments`): it must sleep only the rest of
/// its time. A restarted sleep would make the restored process run at least
/// `seconds` again; the rest is at most `seconds - asleep_for`, so
/// `asleep_for` must exceed the restore's own overhead. The subject is
/// started with enough time left that a slow crp still finds it asleep.
pub fn nanosleep_round_trip(seconds: u32, asleep_for: f64, dump_arguments: &[&str], restore_arguments: &[&str]) {
    assert!(asleep_for + 2.0 < f64::from(seconds), "leave crp time to freeze the sleeper");
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", &seconds.to_string()]);
    let mut subject = Subject::spawn(command);
    let ready = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs_f64(asleep_for));
    let image = directory.path().join("sleeper.crp");
    dump_ok(subject.pid, &image, dump_arguments);
    let dumped_after = ready.elapsed().as_secs_f64();
    assert_killed(subject.wait());
    let started = std::time::Instant::now();
    let output = restore(&image, restore_arguments, "");
    let restore_took = started.elapsed().as_secs_f64();
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    let slept = slept_seconds(&stdout);
    assert!(slept >= f64::from(seconds), "woke early: {stdout}");
    assert!(
        restore_took < f64::from(seconds) - 0.5,
        "the restored process ran {restore_took:.2} s: its {seconds} s sleep restarted: {stdout}"
    );
    // It was frozen at most `dumped_after` seconds into its sleep, so the
    // rest it still had to sleep was at least this much.
    let left_at_least = f64::from(seconds) - dumped_after;
    assert!(restore_took >= left_at_least - 0.25, "slept {restore_took:.2} s of at least {left_at_least:.2} s left");
}

/// The `slept=SECONDS` the sleep subject reports.
pub fn slept_seconds(stdout: &str) -> f64 {
    stdout
        .trim()
        .rsplit_once("slept=")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or_else(|| panic!("no slept= in {stdout:?}"))
}

/// The spin subject with a 6 CPU-second ITIMER_PROF, dumped (with
/// `dump_arguments`) after at least 2 CPU-seconds and restored (with
/// `restore_arguments`): the restored process must spin for the time the
/// image says was left (at most 4 s), not 6 again, and not forever as with
/// the timer lost. Time is CPU time throughout, so a loaded machine changes
/// nothing. The restored process's CPU clock also counts the restore's own
/// work done in its context before the timer is re-armed
/// (`restore_overhead` seconds at most: the kmod module fills memory inside
/// the process's ioctl). The timer runs on the kernel's tick-sampled
/// user+system time, the process reads its scheduler-precise CPU clock:
/// on a loaded machine the two drift apart by a few percent (88 ms of
/// 1.78 s was seen), hence 10% and a tick or two below. A timer started
/// over (6 s) or lost (spinning forever) is still far outside.
pub fn cpu_itimer_round_trip(dump_arguments: &[&str], restore_arguments: &[&str], restore_overhead: f64) {
    const TIMER_SECONDS: f64 = 6.0;
    let directory = tempfile::tempdir().unwrap();
    // A third in, the subject waits for a line (its CPU timer still), so
    // that however slow the dump (the emulated lab VM running other tests)
    // it cannot run out the timer first; the line comes after the restore.
    const USED_BEFORE: f64 = TIMER_SECONDS / 3.0;
    let mut command = Command::new(&programs().dynamic);
    command.args(["spin", "6", "prof-wait", &USED_BEFORE.to_string()]);
    let mut subject = Subject::spawn(command);
    assert_eq!(subject.read_line().trim(), "SPUN");
    let image = directory.path().join("spin.crp");
    dump_ok(subject.pid, &image, dump_arguments);
    assert_killed(subject.wait());
    let left = itimer_prof_left_in(&image);
    // /proc's CPU time (scaled to the precise clock) said 2 s were used; the
    // timer's tick-sampled clock may lag it (by 0.45 s in the loaded lab VM).
    let at_most = (TIMER_SECONDS - USED_BEFORE) * 1.25;
    assert!(left > 0.0 && left <= at_most, "the image says {left:.3} s were left of the 6 s timer");
    let output = restore(&image, restore_arguments, "go\n");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    let prefix = format!("OK pid={} registers kept cpu=", subject.pid);
    let used_after: f64 = stdout
        .strip_prefix(&prefix)
        .and_then(|rest| rest.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("expected {prefix}SECONDS, got {stdout:?}"));
    // Above: a timer restarted with its full 6 s. Below half: one that lost
    // its time (ITIMER_PROF, sampled at ticks, runs up to a fifth ahead of
    // the precise clock here on a loaded machine).
    assert!(
        (left * 0.5..left + restore_overhead).contains(&used_after),
        "the image says {left:.3} s were left; the restored process used {used_after:.3} s"
    );
}

/// The time left of ITIMER_PROF in an image, from `crp inspect --json`.
fn itimer_prof_left_in(image: &Path) -> f64 {
    let output = crp().args(["inspect", "--json"]).arg(image).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let prof = summary["timers"]
        .as_array()
        .and_then(|timers| timers.iter().find(|timer| timer["name"] == "ITIMER_PROF"))
        .unwrap_or_else(|| panic!("no ITIMER_PROF in {summary}"));
    prof["left_microseconds"].as_f64().unwrap() / 1e6
}

/// Waits until the absolute deadline of the timerfd on descriptor `fd`, as
/// `crp inspect --json` shows it in `json`, has passed: an event of the
/// clock itself, which the restored program checks happened while it was
/// down.
pub fn wait_past_timerfd_deadline(json: &serde_json::Value, fd: i32) {
    let file = json["files"].as_array().unwrap().iter().find(|file| file["fd"] == fd).unwrap();
    let deadline = &file["timerfd"]["deadline"];
    // No deadline left: it passed (and the timer fired) before the dump.
    let Some(seconds) = deadline["seconds"].as_u64() else { return };
    let deadline = std::time::UNIX_EPOCH
        + std::time::Duration::new(seconds, u32::try_from(deadline["nanoseconds"].as_u64().unwrap()).unwrap());
    if let Ok(wait) = deadline.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(wait + std::time::Duration::from_millis(1));
    }
}

/// A new pseudo-terminal pair of `rows` x `columns`: its master, unlocked,
/// and its slave's path (`/dev/pts/N`).
pub fn open_pty(rows: u16, columns: u16) -> (std::os::fd::OwnedFd, String) {
    use std::os::fd::{AsFd, AsRawFd};
    let master = nix::fcntl::open(
        "/dev/ptmx",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let unlocked: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, which outlives the call.
    assert_eq!(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &raw const unlocked) }, 0);
    let mut number: libc::c_int = 0;
    // SAFETY: TIOCGPTN writes one int at the pointer, which outlives the call.
    assert_eq!(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &raw mut number) }, 0);
    let size = crp_compound::files::WindowSize { rows, columns, x_pixels: 0, y_pixels: 0 };
    crp_compound::files::set_window_size(master.as_fd(), &size).unwrap();
    (master, format!("/dev/pts/{number}"))
}

/// Checks `summary` (`crp inspect --json`) against docs/inspect.schema.json.
pub fn assert_matches_inspect_schema(summary: &serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/inspect.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(summary).map(|error| format!("{error} at {}", error.instance_path)).collect();
    assert!(errors.is_empty(), "inspect --json does not follow docs/inspect.schema.json:\n{}", errors.join("\n"));
}

/// `crp inspect --json IMAGE`, checked against docs/inspect.schema.json.
pub fn inspect_json(image: &std::path::Path) -> serde_json::Value {
    let output = crp().arg("inspect").arg("--json").arg(image).output().unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&output)).unwrap();
    assert_matches_inspect_schema(&summary);
    summary
}
