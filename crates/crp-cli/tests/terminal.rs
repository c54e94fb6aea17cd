//! Processes on terminals, driven through real pseudo-terminals as a user
//! at a terminal would drive them: a python3 REPL and a C program on a
//! terminal are dumped and restored by a `crp restore` running on another
//! terminal (they answer, keep their terminal modes, get the new window
//! size and SIGWINCH, take ^C and ^Z); a program that talks to itself
//! through pseudo-terminal pairs it opened; a restore without a terminal;
//! a terminal crp cannot keep, refused. Every wait is for output on the
//! terminal or a process state, bounded only by a generous deadline.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use crp_compound::files::TerminalSettings;

/// How long any one expected output may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// A pseudo-terminal held by the test: its master, and everything the
/// programs on it wrote, collected by a thread.
struct Terminal {
    master: std::fs::File,
    slave_path: String,
    output: Arc<(Mutex<Vec<u8>>, Condvar)>,
    /// Where the next [`Terminal::expect`] starts looking.
    seen: usize,
}

impl Terminal {
    fn open(rows: u16, columns: u16) -> Self {
        let (master, slave_path) = open_pty(rows, columns);
        let master = std::fs::File::from(master);
        let output = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let (mut reader, collected) = (master.try_clone().unwrap(), Arc::clone(&output));
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            // Ends with EIO once no process holds the slave any more.
            while let Ok(got @ 1..) = reader.read(&mut buffer) {
                let (text, arrived) = &*collected;
                text.lock().unwrap().extend_from_slice(&buffer[..got]);
                arrived.notify_all();
            }
        });
        Self { master, slave_path, output, seen: 0 }
    }

    /// Starts `command` as a session leader whose controlling terminal and
    /// standard streams are this terminal, as a terminal emulator does.
    fn spawn(&self, mut command: Command) -> Child {
        let slave = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(&self.slave_path)
                .unwrap()
        };
        command.stdin(slave()).stdout(slave()).stderr(slave());
        close_inherited_fds(&mut command);
        // SAFETY: the closure runs between fork and exec and makes only
        // async-signal-safe syscalls.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.spawn().unwrap()
    }

    /// Types `keys`.
    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// Waits until the output since the last expectation holds `text`,
    /// and returns that output up to and including it.
    fn expect(&mut self, text: &str) -> String {
        let (collected, arrived) = &*self.output;
        let started = Instant::now();
        let mut output = collected.lock().unwrap();
        loop {
            let since = &output[self.seen.min(output.len())..];
            if let Some(at) = since.windows(text.len()).position(|window| window == text.as_bytes()) {
                let found = String::from_utf8_lossy(&since[..at + text.len()]).into_owned();
                self.seen += at + text.len();
                return found;
            }
            let left = DEADLINE.checked_sub(started.elapsed()).unwrap_or_else(|| {
                panic!("no {text:?} on the terminal; it showed {:?}", String::from_utf8_lossy(since))
            });
            output = arrived.wait_timeout(output, left).unwrap().0;
        }
    }

    /// The terminal's settings, as the programs on it see them.
    fn settings(&self) -> TerminalSettings {
        TerminalSettings::read(self.master.as_fd()).unwrap()
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// A line "WORD <number> ..." of `text`: the number.
fn number_after(text: &str, word: &str) -> i32 {
    let line = text.lines().find_map(|line| line.trim_start_matches('\r').strip_prefix(word)).unwrap();
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// Waits until process `pid` is in state `state` (`T`: stopped), as
/// /proc shows it.
fn wait_for_state(pid: i32, state: &str) {
    let started = Instant::now();
    while status_field(pid, "State").split_whitespace().next() != Some(state) {
        assert!(started.elapsed() < DEADLINE, "pid {pid} never reached state {state}");
        std::thread::yield_now();
    }
}

/// An interactive bash with job control on `terminal`, at its prompt
/// (`$ `), without line editing: what a user types at a terminal.
fn shell_on(terminal: &mut Terminal) -> Child {
    let mut command = Command::new("bash");
    command.args(["--norc", "--noprofile", "--noediting", "-i"]).env("PS1", "$ ").env("TERM", "dumb");
    let shell = terminal.spawn(command);
    terminal.expect("$ ");
    shell
}

/// Types `crp restore IMAGE` at the shell on `terminal`, and waits until
/// the terminal has the restored process's modes `like` (crp sets them
/// right before it releases the process).
fn restore_at_shell(terminal: &mut Terminal, image: &std::path::Path, like: &TerminalSettings) {
    terminal.type_keys(&format!("{} restore {}\r", env!("CARGO_BIN_EXE_crp"), image.display()));
    wait_for_modes(terminal, like);
}

/// Waits until `terminal` is in the modes of `like`.
fn wait_for_modes(terminal: &Terminal, like: &TerminalSettings) {
    let started = Instant::now();
    loop {
        let now = terminal.settings();
        if now.local_flags == like.local_flags && now.input_flags == like.input_flags {
            return;
        }
        assert!(started.elapsed() < DEADLINE, "the terminal never took the image's modes: {now:?}");
        std::thread::yield_now();
    }
}

/// Types `echo status=$?` at the shell (back at its prompt) and returns
/// the status it shows.
fn last_status(terminal: &mut Terminal) -> i32 {
    terminal.expect("$ ");
    terminal.type_keys("echo status=$?\r");
    terminal.expect("status=$?");
    terminal.expect("status=");
    terminal.expect("\n").trim().parse().unwrap()
}

#[test]
fn a_python_repl_is_restored_onto_a_new_terminal_with_its_modes() {
    let directory = tempfile::tempdir().unwrap();
    let mut first = Terminal::open(30, 100);
    let mut command = Command::new("python3");
    command.args(["-q", "-i"]).env("TERM", "dumb").env("PYTHONSTARTUP", "");
    let mut python = first.spawn(command);
    first.expect(">>> ");
    first.type_keys("x = 6 * 7\r");
    first.expect("x = 6 * 7");
    first.expect(">>> ");
    // At its prompt, readline has the terminal without echo or canonical mode.
    let modes = first.settings();
    assert!(!modes.echoes() && !modes.canonical(), "readline's modes: {modes:?}");
    let pid = python.id().cast_signed();
    let image = directory.path().join("repl.crp");
    dump_ok(pid, &image, &[]);
    assert_killed(python.wait().unwrap());

    let inspect = crp().arg("inspect").arg(&image).output().unwrap();
    let text = stdout_of(&inspect);
    assert!(
        text.contains(&format!("sid {pid} (its own), pgid {pid} (its own), controlling terminal {}", first.slave_path)),
        "{text}"
    );
    assert!(text.contains("no echo, raw, 30x100"), "{text}");
    let json = crp().args(["inspect", "--json"]).arg(&image).output().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_matches_inspect_schema(&summary);
    assert_eq!(summary["session"]["controlling_terminal"], first.slave_path.as_str());
    assert_eq!(summary["session"]["in_foreground"], true);
    assert_eq!(summary["session"]["terminal"]["echo"], false);

    // A new terminal, in its default (echoing, canonical) modes, with a shell.
    let mut second = Terminal::open(40, 120);
    assert!(second.settings().echoes());
    let mut shell = shell_on(&mut second);
    restore_at_shell(&mut second, &image, &modes);
    second.type_keys("print(x + 1)\r");
    let answer = second.expect("43");
    assert_eq!(answer.matches("print(x + 1)").count(), 1, "the typed line shows once: {answer:?}");
    second.expect(">>> ");
    let restored = second.settings();
    assert!(!restored.echoes() && !restored.canonical(), "readline's modes again: {restored:?}");
    second.type_keys("import os; print(os.get_terminal_size(), os.tcgetpgrp(0) == os.getpgrp())\r");
    second.expect("os.terminal_size(columns=120, lines=40) True");
    second.type_keys("exit()\r");
    assert_eq!(last_status(&mut second), 0);

    // Again, its streams all given files: the terminal keeps its own modes.
    let (input, output) = (directory.path().join("in.py"), directory.path().join("out.txt"));
    std::fs::write(&input, "print(x * 2)\n").unwrap();
    second.type_keys(&format!(
        "{} restore {} --stdin {} --stdout {} --stderr {3}\r",
        env!("CARGO_BIN_EXE_crp"),
        image.display(),
        input.display(),
        output.display()
    ));
    assert_eq!(last_status(&mut second), 0);
    assert!(second.settings().echoes(), "the shell's terminal modes are left alone");
    assert!(std::fs::read_to_string(&output).unwrap().contains("84"));
    second.type_keys("exit\r");
    assert!(shell.wait().unwrap().success());
}

#[test]
fn a_program_on_a_terminal_keeps_its_modes_job_and_dev_tty() {
    let directory = tempfile::tempdir().unwrap();
    let mut first = Terminal::open(24, 80);
    let mut program = first.spawn(Command::new(c_program("tty_job")));
    let ready = first.expect("24x80");
    let pid = number_after(&ready, "READY ");
    let modes = first.settings();
    let image = directory.path().join("job.crp");
    dump_ok(pid, &image, &[]);
    assert_killed(program.wait().unwrap());

    let mut second = Terminal::open(33, 111);
    let mut shell = shell_on(&mut second);
    let shell_pid = shell.id().cast_signed();
    restore_at_shell(&mut second, &image, &modes);
    second.type_keys("c");
    second.expect(&format!("OK pid={pid} size=33x111 winch=1 sid={shell_pid} pgid="));
    // The job's group is crp restore's, which the shell made.
    let crp_pid: i32 = second.expect("\n").trim().parse().unwrap();
    assert_ne!(crp_pid, shell_pid);
    assert!(std::fs::read_to_string(format!("/proc/{crp_pid}/comm")).unwrap().starts_with("crp"));
    // ^C is SIGINT to the terminal's foreground job: the process has it.
    second.type_keys("\x03i");
    second.expect("INT 1");
    // ^Z stops the job (crp restore with it), fg continues it.
    second.type_keys("\x1a");
    second.expect("Stopped");
    wait_for_state(pid, "T");
    wait_for_state(crp_pid, "T");
    second.expect("$ ");
    second.type_keys("fg\r");
    second.expect("restore");
    wait_for_modes(&second, &modes);
    second.type_keys("k");
    second.expect("CONT 1");
    second.type_keys("q");
    assert_eq!(last_status(&mut second), 0);
    second.type_keys("exit\r");
    assert!(shell.wait().unwrap().success());
}

#[test]
fn without_a_terminal_the_process_gets_none_and_crp_says_so() {
    let directory = tempfile::tempdir().unwrap();
    let mut first = Terminal::open(24, 80);
    let mut command = Command::new(c_program("tty_job"));
    command.arg("--none-expected");
    let mut program = first.spawn(command);
    let ready = first.expect("24x80");
    let pid = number_after(&ready, "READY ");
    let image = directory.path().join("job.crp");
    dump_ok(pid, &image, &[]);
    assert_killed(program.wait().unwrap());

    let mut command = crp();
    command.arg("restore").arg(&image).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut restore = command.spawn().unwrap();
    restore.stdin.take().unwrap().write_all(b"cq").unwrap();
    let output = restore.wait_with_output().unwrap();
    let (stdout, stderr) = (stdout_of(&output), stderr_of(&output));
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("OK pid={pid} no terminal, sid={pid}")), "{stdout}{stderr}");
    assert!(stderr.contains("without a controlling terminal"), "{stderr}");
    assert!(stderr.contains("(5: /dev/tty) become /dev/null"), "{stderr}");
}

#[test]
fn pseudo_terminal_pairs_the_process_opened_are_made_again() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = Subject::spawn(Command::new(c_program("fd_pty")));
    let image = directory.path().join("pty.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspect = crp().arg("inspect").arg(&image).output().unwrap();
    let text = stdout_of(&inspect);
    assert!(text.contains("pseudo-terminal master of /dev/pts/"), "{text}");
    assert!(text.contains(", no echo, raw, 10x20, packet mode (flags"), "{text}");
    assert!(text.contains(", echo, canonical, 50x132, locked (flags"), "{text}");
    let json = crp().args(["inspect", "--json"]).arg(&image).output().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_matches_inspect_schema(&summary);
    let slaves = summary["files"].as_array().unwrap().iter().filter(|file| file["pty"]["end"] == "slave").count();
    assert_eq!(slaves, 3, "fds 2, 4 and 6");

    let output = restore(&image, &[], "go\n");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert_eq!(stdout, format!("OK pid={} pseudo-terminals\n", subject.pid));
}

#[test]
fn unread_bytes_in_a_pair_and_a_terminal_of_someone_else_are_refused() {
    let other = Terminal::open(24, 80);
    let script = "import os, sys\n\
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)\n\
        print('READY', os.getpid(), flush=True)\n\
        sys.stdin.readline()\n";
    let mut command = Command::new("python3");
    command.args(["-c", script, &other.slave_path]);
    let mut subject = Subject::spawn(command);
    let directory = tempfile::tempdir().unwrap();
    let output = dump(subject.pid, &directory.path().join("refused.crp"), &[]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("neither the process's own"), "{}", stderr_of(&output));
    subject.send("done\n");
    subject.wait();

    let script = "import os, pty\n\
        master, slave = pty.openpty()\n\
        os.write(slave, b'unread')\n\
        print('READY', os.getpid(), flush=True)\n\
        input()\n";
    let mut command = Command::new("python3");
    command.args(["-c", script]);
    let mut subject = Subject::spawn(command);
    let output = dump(subject.pid, &directory.path().join("refused.crp"), &[]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("6 bytes its slave wrote"), "{}", stderr_of(&output));
    subject.send("done\n");
    subject.wait();
    drop(other);
}

/// A python3 subject started by `leader` (setsid or setpgid in the child)
/// that prints its session and group ids after the restore.
fn ids_after_restore(leader: fn() -> std::io::Result<()>) -> (i32, i32, i32) {
    let script = "import os, sys\n\
        print('READY', os.getpid(), flush=True)\n\
        sys.stdin.readline()\n\
        print('IDS', os.getsid(0), os.getpgrp(), flush=True)\n";
    let mut command = Command::new("python3");
    command.args(["-c", script]);
    // SAFETY: `leader` makes one async-signal-safe syscall.
    unsafe { command.pre_exec(leader) };
    let mut subject = Subject::spawn(command);
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("ids.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &[], "go\n");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    let ids: Vec<i32> = stdout.trim().strip_prefix("IDS ").unwrap().split(' ').map(|id| id.parse().unwrap()).collect();
    (subject.pid, ids[0], ids[1])
}

#[test]
fn a_session_or_group_leader_without_a_terminal_leads_the_same_ids_again() {
    let (pid, session, group) = ids_after_restore(|| {
        // SAFETY: setsid takes no arguments and touches no memory.
        unsafe { libc::setsid() };
        Ok(())
    });
    assert_eq!((session, group), (pid, pid), "its own session and group, with the old ids");
    let (pid, session, group) = ids_after_restore(|| {
        // SAFETY: setpgid takes two ids and touches no memory.
        unsafe { libc::setpgid(0, 0) };
        Ok(())
    });
    assert_ne!(session, pid, "in crp restore's session");
    // A test run from a terminal gives the subject that controlling
    // terminal: it then joins crp restore's job there instead.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let controlling: i64 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(4).unwrap().parse().unwrap();
    if controlling == 0 {
        assert_eq!(group, pid, "its own group, with the old id");
    }
}

#[test]
fn a_job_dumped_in_the_background_leaves_the_terminal_modes_alone_and_gets_sigwinch() {
    let directory = tempfile::tempdir().unwrap();
    // A shell with line editing: at its prompt, readline has the terminal
    // without echo; the background job never set any modes.
    let mut first = Terminal::open(24, 80);
    let mut command = Command::new("bash");
    command.args(["--norc", "--noprofile", "-i"]).env("PS1", "$ ").env("TERM", "dumb");
    let mut shell = first.spawn(command);
    first.expect("$ ");
    // Not signal.pause(): see the README on SIGWINCH and interrupted calls.
    let script = "import os, signal, time\n\
        signal.signal(signal.SIGWINCH, lambda *_: print('WINCH', os.get_terminal_size(1).lines, flush=True))\n\
        print('READY', os.getpid(), flush=True)\n\
        while True: time.sleep(0.05)\n";
    let path = directory.path().join("background.py");
    std::fs::write(&path, script).unwrap();
    first.type_keys(&format!("python3 {} &\r", path.display()));
    first.expect("READY ");
    let pid: i32 = first.expect("\n").trim().parse().unwrap();
    // The shell's readline at its prompt again, echo off.
    let started = Instant::now();
    while first.settings().echoes() {
        assert!(started.elapsed() < DEADLINE, "the shell never prompted again");
        std::thread::yield_now();
    }
    let image = directory.path().join("background.crp");
    dump_ok(pid, &image, &[]);
    let inspect = crp().arg("inspect").arg(&image).output().unwrap();
    assert!(stdout_of(&inspect).contains("in the background"), "{}", stdout_of(&inspect));
    first.type_keys("exit\r");
    let _ = shell.wait();

    let mut second = Terminal::open(40, 100);
    let before = second.settings();
    let mut shell = shell_on(&mut second);
    second.type_keys(&format!("{} restore {}\r", env!("CARGO_BIN_EXE_crp"), image.display()));
    // A window of another size: SIGWINCH, as after a resize.
    second.expect("WINCH 40");
    let after = second.settings();
    assert_eq!((after.local_flags, after.input_flags), (before.local_flags, before.input_flags), "modes left alone");
    assert!(after.echoes() && after.canonical());
    second.type_keys("\x03");
    assert_eq!(last_status(&mut second), 130, "^C ends it (python's KeyboardInterrupt)");
    second.type_keys("exit\r");
    assert!(shell.wait().unwrap().success());
}

#[test]
fn a_process_whose_terminal_hung_up_is_dumped_and_restored_on_crp_restore_s_streams() {
    let first = Terminal::open(24, 80);
    let script = "import os, signal, time\n\
        signal.signal(signal.SIGHUP, signal.SIG_IGN)\n\
        print('READY', os.getpid(), flush=True)\n\
        while True:\n\
        \x20   time.sleep(0.02)\n\
        \x20   try: data = os.read(0, 100)\n\
        \x20   except OSError: continue\n\
        \x20   if data: os.write(1, b'OK ' + data); break\n";
    let mut command = Command::new("python3");
    command.args(["-c", script]);
    let mut first = first;
    let mut python = first.spawn(command);
    first.expect("READY ");
    let pid: i32 = first.expect("\n").trim().parse().unwrap();
    // As when its terminal emulator closes (vhangup, which root may do).
    let slave = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(&first.slave_path);
    let slave = slave.unwrap();
    // SAFETY: TIOCVHANGUP takes no argument.
    assert_eq!(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCVHANGUP) }, 0);
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("hung-up.crp");
    dump_ok(pid, &image, &[]);
    assert_killed(python.wait().unwrap());
    let output = restore(&image, &[], "go\n");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert_eq!(stdout, "OK go\n");
}

/// vim (two threads: glibc's helper for its SIGEV_THREAD timer) editing a
/// file, restored onto a new terminal: it redraws the same text on Ctrl-L,
/// takes an edit, and `:wq` writes it.
#[test]
fn vim_editing_a_file_is_restored_and_writes_the_edit() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("notes.txt");
    std::fs::write(&file, "line one\nline two\n").unwrap();
    let mut first = Terminal::open(24, 80);
    let mut command = Command::new("vim");
    command.args(["-u", "NONE", "-N", "-i", "NONE", "-n"]).arg(&file).env("TERM", "vt100");
    let mut vim = first.spawn(command);
    first.expect("line two");
    // Once vim answers a command it waits for the next key.
    first.type_keys(":echo 'ready'\r");
    first.expect("ready");
    let modes = first.settings();
    let pid = vim.id().cast_signed();
    let image = directory.path().join("vim.crp");
    dump_ok(pid, &image, &[]);
    assert_killed(vim.wait().unwrap());

    let mut second = Terminal::open(30, 100);
    let mut shell = shell_on(&mut second);
    restore_at_shell(&mut second, &image, &modes);
    second.type_keys("\x0c");
    second.expect("line two");
    second.type_keys("Goline three\x1b:wq\r");
    assert_eq!(last_status(&mut second), 0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "line one\nline two\nline three\n");
    second.type_keys("exit\r");
    assert!(shell.wait().unwrap().success());
}

/// `less` scrolled into a file, restored onto a terminal of another size:
/// it redraws at the same place (its new size), scrolls on, and quits.
#[test]
fn less_scrolled_into_a_file_is_restored_at_the_same_place_and_scrolls() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("numbers.txt");
    let text: String = (1..=300).map(|line| format!("number {line:03}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let mut first = Terminal::open(24, 80);
    let mut command = Command::new("less");
    command.arg(&file).env("TERM", "vt100").env("LESSHISTFILE", "-").env("LESS", "");
    let mut less = first.spawn(command);
    first.expect("number 023");
    // `120g` puts line 120 at the top of the screen.
    first.type_keys("120g");
    first.expect("number 142");
    let modes = first.settings();
    let pid = less.id().cast_signed();
    let image = directory.path().join("less.crp");
    dump_ok(pid, &image, &[]);
    assert_killed(less.wait().unwrap());

    let mut second = Terminal::open(40, 100);
    let mut shell = shell_on(&mut second);
    restore_at_shell(&mut second, &image, &modes);
    // Ctrl-L repaints: the same top line, as many lines as the new size holds.
    second.type_keys("\x0c");
    let redrawn = second.expect("number 158");
    assert!(redrawn.contains("number 120"), "the same place: {redrawn:?}");
    // A page on from there.
    second.type_keys(" ");
    second.expect("number 197");
    second.type_keys("q");
    assert_eq!(last_status(&mut second), 0);
    second.type_keys("exit\r");
    assert!(shell.wait().unwrap().success());
}

/// `top` restored onto a new terminal redraws its table there and quits
/// on `q`.
#[test]
fn top_is_restored_redraws_and_quits_on_q() {
    let directory = tempfile::tempdir().unwrap();
    let mut first = Terminal::open(24, 80);
    let mut command = Command::new("top");
    // Its own configuration, not the machine's or a user's.
    command.env("TERM", "vt100").env("HOME", directory.path()).env("XDG_CONFIG_HOME", directory.path());
    let mut top = first.spawn(command);
    first.expect("PID");
    first.expect("COMMAND");
    let modes = first.settings();
    let pid = top.id().cast_signed();
    let image = directory.path().join("top.crp");
    dump_ok(pid, &image, &[]);
    assert_killed(top.wait().unwrap());

    let mut second = Terminal::open(40, 120);
    let mut shell = shell_on(&mut second);
    restore_at_shell(&mut second, &image, &modes);
    // A redraw after the restore (SIGWINCH for the new size, or its timer).
    second.expect("PID");
    second.expect("COMMAND");
    second.type_keys("q");
    assert_eq!(last_status(&mut second), 0);
    second.type_keys("exit\r");
    assert!(shell.wait().unwrap().success());
}
