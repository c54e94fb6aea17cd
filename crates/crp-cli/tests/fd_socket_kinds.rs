//! Sockets other than socket pairs: unix sockets bound to paths, abstract
//! and autobound names, listening, connected by name; TCP listeners and
//! UDP sockets over IPv4 and IPv6 with their options and queued
//! datagrams and multicast memberships. The restored process checks its own
//! sockets; a path taken by
//! something else, or a port the original still holds, is refused before
//! anything is created.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn unix_subject(directory: &Path) -> Subject {
    let mut command = Command::new(c_program("fd_socket_kinds"));
    command.arg("unix").arg(directory);
    Subject::spawn(command)
}

fn inet_subject() -> Subject {
    let mut command = Command::new(c_program("fd_socket_kinds"));
    command.arg("inet");
    Subject::spawn(command)
}

#[test]
fn unix_sockets_come_back_with_their_names_queues_and_peers() {
    let directory = tempfile::tempdir().unwrap();
    let sockets = directory.path().join("sockets");
    std::fs::create_dir(&sockets).unwrap();
    let mut subject = unix_subject(&sockets);
    let image = directory.path().join("unix.crp");
    let dumped = dump(subject.pid, &image, &[]);
    assert!(dumped.status.success(), "{}", stderr_of(&dumped));
    assert!(
        stderr_of(&dumped).contains("fds 11 and 12: a unix connection both of whose ends the process holds comes back"),
        "{}",
        stderr_of(&dumped)
    );
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    let listen_path = sockets.join("listen.sock");
    for expected in [
        format!("unix stream socket {} listening (backlog 5), options SO_PASSCRED=1", listen_path.display()),
        format!("unix datagram socket {}, 2 datagrams (11 bytes) waiting", sockets.join("dgram.sock").display()),
        "unix seqpacket socket @crp-test-".to_owned(),
        format!("connected to {}", sockets.join("dgram.sock").display()),
        "write shut down".to_owned(),
        format!("{} (path removed)", sockets.join("gone.sock").display()),
        format!("was named {} (name not kept)", listen_path.display()),
    ] {
        assert!(inspected.contains(&expected), "{expected:?} not in:\n{inspected}");
    }
    let json = stdout_of(&crp().arg("inspect").arg("--json").arg(&image).output().unwrap());
    assert!(json.contains("\"kind\": \"unix datagram\"") || json.contains("\"kind\":\"unix datagram\""), "{json}");
    // The killed original left its socket file: the restore takes it over.
    assert!(listen_path.exists());
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} unix\n", subject.pid));
    // Removed meanwhile: the restore makes the path again.
    std::fs::remove_file(&listen_path).unwrap();
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert!(listen_path.exists(), "the path is made again");
}

#[test]
fn a_unix_path_taken_by_something_else_is_refused_before_anything_is_made() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = unix_subject(directory.path());
    let image = directory.path().join("unix.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let listen_path = directory.path().join("listen.sock");
    std::fs::remove_file(&listen_path).unwrap();
    std::fs::write(&listen_path, "not a socket").unwrap();
    let output = restore(&image, &[], "go\n");
    assert_eq!(output.status.code(), Some(5), "{}", stderr_of(&output));
    let message = stderr_of(&output);
    assert!(
        message.contains(&format!("cannot bind fd 3 (unix stream socket) to {} again", listen_path.display())),
        "{message}"
    );
    assert!(message.contains("something else than a socket"), "{message}");
    assert!(!process_exists(subject.pid), "no process is left");
    assert_eq!(std::fs::read_to_string(&listen_path).unwrap(), "not a socket", "untouched");
}

#[test]
fn tcp_listeners_and_udp_sockets_come_back_with_their_options_and_datagrams() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = inet_subject();
    let image = directory.path().join("inet.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    for expected in [
        "TCP socket 127.0.0.1:",
        "listening (backlog 7)",
        "TCP_DEFER_ACCEPT=",
        "TCP_FASTOPEN=8",
        "SO_LINGER=on 4 s",
        "TCP6 socket [::1]:",
        "IPV6_V6ONLY=1",
        "UDP socket 127.0.0.1:",
        "2 datagrams (6 bytes) waiting",
        "UDP6 socket [::1]:",
        "TCP socket (unbound)",
        "TCP_CORK=1",
    ] {
        assert!(inspected.contains(expected), "{expected:?} not in:\n{inspected}");
    }
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} inet\n", subject.pid));
}

#[test]
fn a_port_the_original_still_holds_is_refused_and_nothing_is_left() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = inet_subject();
    let image = directory.path().join("inet.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    let output = restore(&image, &[], "go\n");
    assert_eq!(output.status.code(), Some(5), "{}", stderr_of(&output));
    let message = stderr_of(&output);
    assert!(
        message.contains("cannot bind fd 3 (TCP socket) to 127.0.0.1:")
            && message.contains("does the original still run?"),
        "{message}"
    );
    // The original, untouched, still has everything.
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} inet\n", subject.pid));
    assert!(subject.wait().success());
}

/// `crp dump PID -o IMAGE` with `CRP_TEST_FAULT=fault`.
fn dump_with_fault(pid: i32, image: &Path, fault: &str) -> std::process::Output {
    crp().arg("dump").arg(pid.to_string()).arg("-o").arg(image).env("CRP_TEST_FAULT", fault).output().unwrap()
}

fn tcp_subject() -> Subject {
    let mut command = Command::new(c_program("fd_socket_kinds"));
    command.arg("tcp");
    Subject::spawn(command)
}

#[test]
fn an_established_tcp_connection_inside_the_process_carries_on_byte_exact() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = tcp_subject();
    let image = directory.path().join("tcp.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(inspected.contains("TCP connection"), "{inspected}");
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert!(stdout_of(&output).starts_with(&format!("OK pid={} tcp ", subject.pid)), "{}", stdout_of(&output));
}

#[test]
fn a_dump_that_leaves_the_process_running_takes_its_connections_out_of_repair() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = tcp_subject();
    let image = directory.path().join("tcp.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    subject.send("go\n");
    assert!(subject.read_line().starts_with(&format!("OK pid={} tcp ", subject.pid)));
    assert!(subject.wait().success());
}

#[test]
fn a_dump_killed_or_cancelled_after_reading_the_connection_leaves_it_working() {
    for fault in ["captured:KILL", "written:KILL", "pages:TERM"] {
        let directory = tempfile::tempdir().unwrap();
        let mut subject = tcp_subject();
        let image = directory.path().join("tcp.crp");
        let output = dump_with_fault(subject.pid, &image, fault);
        assert!(!output.status.success(), "{fault}: the dump must not succeed");
        // The original, released by the dead or cancelled crp, carries on
        // with its connection (no end was left in repair mode).
        subject.send("go\n");
        let line = subject.read_line();
        assert!(line.starts_with(&format!("OK pid={} tcp ", subject.pid)), "{fault}: {line}");
        assert!(subject.wait().success());
    }
}

/// Held by the tests that kill crp while its watchdog runs: the watchdogs
/// orphaned to this process (a subreaper) are then the holder's alone to
/// count.
static KILLING_CRP: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn killing_crp() -> std::sync::MutexGuard<'static, ()> {
    KILLING_CRP.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reaps the socket watchdogs a killed crp left to this process (a
/// subreaper): each must have ended (crp's output closed only once it had:
/// it shares crp's descriptors) and exited 0. Called with [`killing_crp`] held.
fn reap_orphaned_watchdogs() -> usize {
    let own = std::process::id().to_string();
    let mut reaped = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((name, rest)) = stat.split_once(") ") else { continue };
        if !name.ends_with("(crp-watchdog") || rest.split(' ').nth(1) != Some(own.as_str()) {
            continue;
        }
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0));
        reaped += 1;
    }
    reaped
}

/// crp killed while it reads a connection end in repair mode, or walks a
/// datagram queue with its peek offset moved: its watchdog puts the
/// socket back, and the original carries on with every socket as it was
/// (it checks TCP_REPAIR, SO_REUSEADDR and SO_PEEK_OFF itself, then uses
/// the connection both ways and reads its datagrams).
#[test]
fn a_crp_killed_while_it_reads_a_socket_leaves_it_as_it_was() {
    let _killing = killing_crp();
    become_subreaper();
    for (mode, fault) in [
        ("tcp", "tcp-repair@1:KILL"),
        ("tcp", "tcp-repair@2:KILL"),
        ("inet", "peeking@1:KILL"),
        ("inet", "peeking@2:KILL"),
    ] {
        let directory = tempfile::tempdir().unwrap();
        let mut subject = if mode == "tcp" { tcp_subject() } else { inet_subject() };
        let image = directory.path().join("killed.crp");
        let output = dump_with_fault(subject.pid, &image, fault);
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&output.status), Some(9), "{fault}: not killed there");
        assert_eq!(reap_orphaned_watchdogs(), 1, "{fault}: one watchdog, ended");
        subject.send("go\n");
        let line = subject.read_line();
        assert!(line.starts_with(&format!("OK pid={} {mode}", subject.pid)), "{fault}: {line}");
        assert!(subject.wait().success());
    }
}

#[test]
fn a_crp_killed_with_the_connections_in_repair_mode_takes_the_process_with_it_and_the_image_restores() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = tcp_subject();
    let image = directory.path().join("tcp.crp");
    let output = dump_with_fault(subject.pid, &image, "repairing:KILL");
    assert!(!output.status.success(), "the dump must have been killed");
    // PTRACE_O_EXITKILL: the process died with crp, its connection's ends
    // in repair mode (neither FIN nor RST), and the complete image holds it.
    // Alive, it would answer "go" and exit 0.
    let _ = std::io::Write::write_all(subject.stdin.as_mut().unwrap(), b"go\n");
    assert_killed(subject.wait());
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert!(stdout_of(&output).starts_with(&format!("OK pid={} tcp ", subject.pid)), "{}", stdout_of(&output));
}

#[test]
fn multicast_memberships_come_back_with_their_source_filters() {
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(c_program("fd_socket_kinds"));
    command.arg("multicast");
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("multicast.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    for expected in ["member of 239.7.7.7 on lo", "member of 239.7.7.8 on lo (include 127.0.0.9)"] {
        assert!(inspected.contains(expected), "{expected:?} not in:\n{inspected}");
    }
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} multicast\n", subject.pid), "{}", stderr_of(&output));
}

/// The worst case for a crp killed while a connection is in repair mode:
/// a process blocked in `recv` on that very connection, which a stopped
/// process let go by the dying crp would restart at once, in repair mode
/// (EPERM). Held in the kernel until the watchdog has put the connection
/// back, it never sees it changed: each of these kills leaves it receiving
/// what the peer sends next.
#[test]
fn a_process_blocked_in_recv_on_the_connection_being_read_never_sees_repair_mode() {
    use std::io::Write;
    let _killing = killing_crp();
    become_subreaper();
    let script = "import os, socket, sys\n\
                  s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
                  print('READY', os.getpid(), flush=True)\n\
                  try:\n    print('GOT', s.recv(16).decode(), flush=True)\n\
                  except OSError as error:\n    print('HARMED', error, flush=True)\n";
    for round in 0..10 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut command = Command::new("python3");
        command.args(["-c", script, &port.to_string()]);
        let mut subject = Subject::spawn(command);
        let (mut peer, _) = listener.accept().unwrap();
        let directory = tempfile::tempdir().unwrap();
        let output = crp()
            .args(["dump", "--tcp-established", &subject.pid.to_string(), "-o"])
            .arg(directory.path().join("held.crp"))
            .env("CRP_TEST_FAULT", "tcp-repair@1:KILL")
            .output()
            .unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&output.status), Some(9), "round {round}: not killed");
        assert_eq!(reap_orphaned_watchdogs(), 1, "round {round}: one watchdog, ended");
        peer.write_all(b"ping").unwrap();
        assert_eq!(subject.read_line().trim(), "GOT ping", "round {round}");
        assert!(subject.wait().success());
    }
}
