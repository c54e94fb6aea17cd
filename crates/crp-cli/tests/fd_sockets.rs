//! Unix socket pairs both of whose ends the process holds: stream,
//! datagram and seqpacket, with their queues, options and shutdown state;
//! descriptors in flight (SCM_RIGHTS) sent again with their messages (an
//! epoll in flight refused); a stream connected outside the
//! process is dumped but restored only as what the user hands over.

mod common;

use std::process::Command;

use common::*;

fn sockets_subject(mode: &str) -> Subject {
    let mut command = Command::new(c_program("fd_sockets"));
    command.arg(mode);
    Subject::spawn(command)
}

#[test]
fn socket_pairs_come_back_with_their_queues_options_and_shutdowns() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = sockets_subject("pairs");
    let image = directory.path().join("pairs.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(inspected.contains("datagram pair with fd 5, 3 messages (6 bytes) waiting"), "{inspected}");
    assert!(
        inspected.contains("stream pair with fd 10, 0 messages (0 bytes) waiting, options SO_SNDTIMEO=1.500000 s"),
        "{inspected}"
    );
    assert!(
        inspected.contains("seqpacket pair with fd 8, 1 messages (6 bytes) waiting, read shut down"),
        "{inspected}"
    );
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} pairs\n", subject.pid));
}

#[test]
fn a_dump_that_leaves_the_process_running_leaves_its_queues_in_place() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = sockets_subject("pairs");
    let image = directory.path().join("pairs.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} pairs\n", subject.pid));
    assert!(subject.wait().success());
}

#[test]
fn descriptors_in_flight_come_back_in_their_messages_and_work() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("passed.txt");
    let mut command = Command::new(c_program("fd_sockets"));
    command.arg("inflight").arg(&file);
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("inflight.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(inspected.contains("message 0 carries ") && inspected.contains("(SCM_RIGHTS)"), "{inspected}");
    let json = stdout_of(&crp().arg("inspect").arg("--json").arg(&image).output().unwrap());
    assert!(json.contains("\"in_flight\": [\n") || json.contains("\"in_flight\":[{"), "{json}");
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} inflight\n", subject.pid), "{}", stderr_of(&output));
}

#[test]
fn a_descriptor_in_flight_of_a_kind_crp_cannot_keep_is_refused_by_name_and_the_process_runs_on() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = sockets_subject("inflight-epoll");
    let image = directory.path().join("inflight.crp");
    // --check names it as the dump does, touching nothing.
    let checked = crp().args(["dump", "--check", &subject.pid.to_string()]).output().unwrap();
    assert_eq!(checked.status.code(), Some(3), "{}{}", stdout_of(&checked), stderr_of(&checked));
    let output = dump(subject.pid, &image, &[]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let message = stderr_of(&output);
    let what = "an epoll instance, in flight (SCM_RIGHTS) in the queue of this socket";
    let location = message.split("fd ").nth(1).and_then(|rest| rest.split(']').next()).map(|fd| format!("fd {fd}]"));
    let location = location.unwrap_or_else(|| panic!("no location in {message}"));
    assert!(message.contains(what) && location.contains("socket:["), "{message}");
    let listed = format!("{}{}", stdout_of(&checked), stderr_of(&checked));
    assert!(listed.contains(what) && listed.contains(&location), "{location} not in --check's\n{listed}");
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} inflight-epoll\n", subject.pid));
}

#[test]
fn a_socket_connected_outside_the_process_is_restored_only_as_what_the_user_hands_over() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let directory = tempfile::tempdir().unwrap();
    let mut subject = sockets_subject("outside");
    let image = directory.path().join("outside.crp");
    let output = dump(subject.pid, &image, &[]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("restoring needs `crp restore --fd 3=...`"), "{}", stderr_of(&output));
    assert_killed(subject.wait());
    let refused = restore(&image, &[], "go\n");
    assert_eq!(refused.status.code(), Some(3), "{}", stderr_of(&refused));
    let message = stderr_of(&refused);
    assert!(
        message.contains("connected to socket:[")
            && message.contains("outside the process")
            && message.contains("--fd 3="),
        "{message}"
    );
    assert!(!process_exists(subject.pid), "nothing is made");
    // Handed a socket of the user's on fd 3, the process carries on with it.
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let handed = theirs.as_raw_fd();
    let mut command = Command::new(env!("CARGO_BIN_EXE_crp"));
    command.arg("restore").arg(&image).args(["--fd", "3=inherit"]);
    // SAFETY: dup2 and close_range are async-signal-safe; the closure
    // allocates nothing. Everything else above 2 is closed, as crp() does.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(handed, 3) != 3 {
                libc::_exit(120);
            }
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(theirs);
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"go\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} outside\n", subject.pid));
    let mut received = String::new();
    ours.read_to_string(&mut received).unwrap();
    assert_eq!(received, "hello");
}
