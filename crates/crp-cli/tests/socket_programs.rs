//! Real programs holding sockets: python3's http.server checkpointed and
//! restored still answers on its port; with the original left running the
//! restore is refused (its port is taken) and leaves nothing behind; a
//! python3 unix datagram receiver keeps the datagrams waiting for it; a
//! python3 TCP transfer to itself dumped midway completes byte-exact; an
//! asyncio server answers after the restore.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use common::*;

/// `python3 -m http.server` on a free port of 127.0.0.1 serving
/// `directory`, once it says it listens.
fn http_server(directory: &std::path::Path) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = Command::new("python3");
    command.args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory"]).arg(directory);
    command.arg(port.to_string());
    close_inherited_fds(&mut command);
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("Serving HTTP on 127.0.0.1"), "{line:?}");
    (child, port)
}

fn get(port: u16, path: &str) -> String {
    let mut connection = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    connection.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    write!(connection, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    connection.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn python_http_server_answers_on_its_port_after_a_restore() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let served = directory.path().join("served");
    std::fs::create_dir(&served).unwrap();
    std::fs::write(served.join("hello.txt"), "restored and serving\n").unwrap();
    let (mut server, port) = http_server(&served);
    let image = directory.path().join("http.crp");
    dump_ok(server.id() as i32, &image, &[]);
    assert_killed(server.wait().unwrap());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(inspected.contains(&format!("TCP socket 127.0.0.1:{port} listening")), "{inspected}");
    let restored = restore_detached(&image);
    let response = get(port, "/hello.txt");
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.ends_with("\r\n\r\nrestored and serving\n"), "{response}");
    // SAFETY: kill takes a pid and a signal.
    unsafe { libc::kill(restored.pid, libc::SIGKILL) };
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(restored.pid), None);
}

#[test]
fn python_http_server_left_running_keeps_its_port_and_the_restore_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("index.txt"), "original\n").unwrap();
    let (mut server, port) = http_server(directory.path());
    let image = directory.path().join("http.crp");
    dump_ok(server.id() as i32, &image, &["--leave-running"]);
    let output = restore(&image, &[], "");
    assert_eq!(output.status.code(), Some(5), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains(&format!("to 127.0.0.1:{port} again: Address already in use")),
        "{}",
        stderr_of(&output)
    );
    // The original serves on.
    assert!(get(port, "/index.txt").ends_with("original\n"));
    server.kill().unwrap();
    server.wait().unwrap();
}

/// python3 holding a unix datagram socket bound to a path (a syslog-like
/// receiver), with datagrams waiting at the dump: after the restore it
/// reads them and what was sent after, in order.
#[test]
fn python_unix_datagram_receiver_reads_what_waited_and_what_came_after() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("log.sock");
    let script = "import os, socket, sys\n\
                  receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                  receiver.bind(sys.argv[1])\n\
                  print('READY', os.getpid(), flush=True)\n\
                  sys.stdin.readline()\n\
                  lines = [receiver.recv(100).decode() for _ in range(3)]\n\
                  print('OK', ' '.join(lines), receiver.getsockname(), flush=True)\n";
    let mut command = Command::new("python3");
    command.arg("-c").arg(script).arg(&path);
    let mut subject = Subject::spawn(command);
    let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
    sender.send_to(b"first", &path).unwrap();
    sender.send_to(b"second", &path).unwrap();
    let image = directory.path().join("receiver.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    become_subreaper();
    let mut restored = restore_detached(&image);
    sender.send_to(b"third", &path).unwrap();
    restored.stdin.write_all(b"go\n").unwrap();
    assert_eq!(restored.read_line(), format!("OK first second third {}\n", path.display()));
    assert_eq!(wait_pid(restored.pid), 0);
}

/// python3 sending 4 MiB to itself over a loopback TCP connection, dumped
/// mid-transfer: the restored process completes the transfer and the bytes
/// received hash as the bytes sent.
#[test]
fn python_tcp_transfer_dumped_midway_completes_with_the_right_bytes() {
    tcp_transfer(&[]);
}

#[test]
fn python_tcp_transfer_over_ipv6_dumped_midway_completes_with_the_right_bytes() {
    tcp_transfer(&["6"]);
}

fn tcp_transfer(arguments: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/tcp_transfer.py");
    let mut expected = Vec::new();
    let pattern: Vec<u8> = (0..=250u8).collect();
    while expected.len() < 4 << 20 {
        expected.extend_from_slice(&pattern);
    }
    expected.truncate(4 << 20);
    let digest = sha256_hex(&expected);
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new("python3");
    command.arg(&script).args(arguments);
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("transfer.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    // It really was interrupted: the original never finished.
    assert_eq!(subject.rest_of_output(), "");
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(inspected.contains("TCP connection"), "{inspected}");
    let output = restore(&image, &[], "");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK {} {digest}\n", 4 << 20));
}

/// The SHA-256 of `bytes` in hex, by sha256sum (coreutils).
fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let output = child.wait_with_output().unwrap();
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

fn echo(port: u16, line: &str) -> String {
    let mut connection = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    connection.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    connection.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    connection.read_to_string(&mut answer).unwrap();
    answer
}

/// An asyncio TCP server (epoll, its self-pipe socket pair, the listening
/// socket) that served a client before the dump serves one after the
/// restore.
#[test]
fn python_asyncio_server_serves_after_a_restore() {
    become_subreaper();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/asyncio_server.py");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = Command::new("python3");
    command.arg(&script).arg(port.to_string());
    let mut subject = Subject::spawn(command);
    assert_eq!(echo(port, "before\n"), "echo before\n");
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("asyncio.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let restored = restore_detached(&image);
    assert_eq!(echo(port, "after\n"), "echo after\n");
    // SAFETY: kill takes a pid and a signal.
    unsafe { libc::kill(restored.pid, libc::SIGKILL) };
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(restored.pid), None);
}

/// A python3 client holding a TCP connection to a server outside the
/// process (this test), dumped with --tcp-established while the server
/// waits for its request: after the restore the request reaches the server
/// on the same connection and the answer comes back. Without the option
/// the dump is refused.
#[test]
fn python_client_connected_to_an_outside_server_carries_on_with_tcp_established() {
    use std::io::BufRead;
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let script = format!(
        "import os, socket, sys\n\
         connection = socket.create_connection(('127.0.0.1', {port}))\n\
         connection.sendall(b'hello\\n')\n\
         print('READY', os.getpid(), flush=True)\n\
         sys.stdin.readline()\n\
         connection.sendall(b'request\\n')\n\
         answer = connection.makefile().readline()\n\
         print('OK', answer.strip(), connection.getsockname()[1], flush=True)\n"
    );
    let mut command = Command::new("python3");
    command.arg("-c").arg(&script);
    let mut subject = Subject::spawn(command);
    let (accepted, _) = server.accept().unwrap();
    let client_port = accepted.peer_addr().unwrap().port();
    let mut from_client = BufReader::new(accepted.try_clone().unwrap());
    let mut line = String::new();
    from_client.read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("client.crp");
    let refused = dump(subject.pid, &image, &[]);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr_of(&refused));
    assert!(stderr_of(&refused).contains("--tcp-established keeps it"), "{}", stderr_of(&refused));
    let dumped = dump(subject.pid, &image, &["--tcp-established"]);
    assert!(dumped.status.success(), "{}", stderr_of(&dumped));
    assert!(stderr_of(&dumped).contains("comes back only if the peer is still there"), "{}", stderr_of(&dumped));
    assert_killed(subject.wait());
    let mut restorer = crp()
        .arg("restore")
        .arg(&image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    restorer.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    from_client.read_line(&mut line).unwrap();
    assert_eq!(line, "request\n", "the request comes on the same connection");
    (&accepted).write_all(b"response\n").unwrap();
    let output = restorer.wait_with_output().unwrap();
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK response {client_port}\n"));
}
