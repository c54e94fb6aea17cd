//! What crp refuses, and how: unsupported state is refused before the
//! process is touched (it keeps running, untraced); bad images are refused
//! before anything is created.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// Runs a refused dump and checks the message, the exit code, and that the
/// process is left running and untraced.
fn assert_dump_refused(subject: &mut Subject, expected_message: &str) {
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("refused.crp");
    let output = dump(subject.pid, &image, &[]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(expected_message), "{stderr}");
    assert!(stderr.contains(&subject.pid.to_string()) || stderr.contains("fd "), "{stderr}");
    assert!(!image.exists());
    assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 0, "no temporary left");
    assert_eq!(status_field(subject.pid, "TracerPid"), "0");
    let state = status_field(subject.pid, "State");
    assert!(state.starts_with('S') || state.starts_with('R'), "{state}");
    assert!(subject.child.try_wait().unwrap().is_none(), "still running");
}

fn python(code: &str) -> Subject {
    let mut command = Command::new("python3");
    command.args(["-c", code]);
    Subject::spawn(command)
}

#[test]
fn child_process_is_refused() {
    let mut command = Command::new("sh");
    command.args(["-c", "sleep 60 & echo READY $$; wait"]);
    let mut subject = Subject::spawn(command);
    assert_dump_refused(&mut subject, "child processes");
}

#[test]
fn anonymous_inode_other_than_an_event_descriptor_is_refused_by_kind() {
    let mut subject = python(
        "import os, time\n\
         fd = os.pidfd_open(os.getpid())\n\
         print('READY', os.getpid(), flush=True)\n\
         time.sleep(60)",
    );
    assert_dump_refused(&mut subject, "a pidfd");
}

#[test]
fn netlink_socket_is_refused_and_named() {
    let mut subject = python(
        "import os, socket, time\n\
         s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)\n\
         print('READY', os.getpid(), flush=True)\n\
         time.sleep(60)",
    );
    assert_dump_refused(&mut subject, "an AF_NETLINK SOCK_RAW socket (crp keeps unix, TCP and UDP sockets only)");
}

#[test]
fn tcp_connection_to_a_peer_outside_is_refused_and_named() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let mut subject = python(&format!(
        "import os, socket, time\n\
         client = socket.create_connection(('127.0.0.1', {port}))\n\
         print('READY', os.getpid(), flush=True)\n\
         time.sleep(60)"
    ));
    let _accepted = server.accept().unwrap();
    assert_dump_refused(
        &mut subject,
        &format!("with an established connection to 127.0.0.1:{port}, outside the process"),
    );
}

#[test]
fn a_sealed_mapping_is_refused() {
    // Shared anonymous memory is restored now (tests/mem_shared.rs); a
    // mapping sealed with mseal is not.
    let mut subject = python(
        "import ctypes, mmap, os, time\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.mmap.restype = ctypes.c_void_p\n\
         libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]\n\
         address = libc.mmap(None, 4096, 3, 0x22, -1, 0)\n\
         assert libc.syscall(462, ctypes.c_void_p(address), ctypes.c_size_t(4096), 0) == 0, ctypes.get_errno()\n\
         print('READY', os.getpid(), flush=True)\n\
         time.sleep(60)",
    );
    assert_dump_refused(&mut subject, "a sealed mapping (mseal)");
}

#[test]
fn seccomp_filter_is_refused() {
    let mut command = Command::new(&programs().dynamic);
    command.arg("seccomp");
    let mut subject = Subject::spawn(command);
    assert_dump_refused(&mut subject, "seccomp");
}

#[test]
fn missing_process_is_named() {
    let output = dump(i32::MAX - 7, std::path::Path::new("/tmp/never.crp"), &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr_of(&output).contains("no process"), "{}", stderr_of(&output));
}

/// A dumped `sleep` subject and its image, the original reaped.
fn dumped_sleeper(directory: &std::path::Path) -> (i32, std::path::PathBuf) {
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "30"]);
    let mut subject = Subject::spawn(command);
    let image = directory.join("sleeper.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    (subject.pid, image)
}

#[test]
fn corrupted_image_is_refused_before_anything_is_created() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_sleeper(directory.path());
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[4096 + 100] ^= 0x40; // inside the first page run
    std::fs::write(&image, &bytes).unwrap();
    let output = restore(&image, &[], "");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("corrupted"), "{stderr}");
    assert!(!process_exists(pid));

    std::fs::write(&image, &bytes[..bytes.len() / 2]).unwrap();
    let output = restore(&image, &[], "");
    assert_eq!(output.status.code(), Some(4));
    assert!(stderr_of(&output).contains("truncated"), "{}", stderr_of(&output));
    assert!(!process_exists(pid));
}

#[test]
fn foreign_file_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("foreign.crp");
    std::fs::write(&image, vec![0x7fu8; 10_000]).unwrap();
    let output = restore(&image, &[], "");
    assert_eq!(output.status.code(), Some(4));
    assert!(stderr_of(&output).contains("not a crp image"), "{}", stderr_of(&output));
}

#[test]
fn changed_mapped_file_is_refused_before_anything_is_created() {
    let directory = tempfile::tempdir().unwrap();
    let (private, shared) = state_files(directory.path());
    let mut command = Command::new(&programs().dynamic);
    command.arg("state").arg(&private).arg(&shared);
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("state.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    std::fs::write(&private, b"now a different file").unwrap();
    let output = restore(&image, &[], "go\n");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("private.bin") && stderr.contains("changed"), "{stderr}");
    assert!(!process_exists(subject.pid));
}

#[test]
fn inspect_json_describes_the_image() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_sleeper(directory.path());
    let output = crp().arg("inspect").arg(&image).arg("--json").output().unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["process"]["pid"], pid);
    assert_eq!(summary["process"]["comm"], "subject");
    let vmas = summary["vmas"].as_array().unwrap();
    let stack = vmas.iter().find(|vma| vma["backing"] == "[stack]").expect("a [stack] VMA");
    assert!(stack["pages_stored"].as_u64().unwrap() > 0);
    let stored: u64 = vmas.iter().map(|vma| vma["pages_stored"].as_u64().unwrap()).sum();
    assert_eq!(stored * 4096, summary["page_bytes"].as_u64().unwrap());
    assert!(summary["registers"]["rip"].is_u64());
    let sections: Vec<&str> =
        summary["sections"].as_array().unwrap().iter().map(|section| section["kind"].as_str().unwrap()).collect();
    assert_eq!(sections, ["metadata", "page run table", "page data"]);
    let text = crp().arg("inspect").arg(&image).output().unwrap();
    assert!(stdout_of(&text).contains("[stack]"));
}

/// A restore that fails after the child exists (here: a file the process had
/// open for writing became a directory, which only `openat` inside the
/// child finds out) kills and reaps that child: nothing is left behind.
#[test]
fn restore_failing_midway_leaves_no_process_behind() {
    let directory = tempfile::tempdir().unwrap();
    let log = directory.path().join("log.txt");
    let mut subject = python(&format!(
        "import os, time\n\
         log = open({log:?}, 'w')\n\
         print('READY', os.getpid(), flush=True)\n\
         time.sleep(60)"
    ));
    let image = directory.path().join("log.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    std::fs::remove_file(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    let output = restore(&image, &[], "");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("openat") && stderr.contains("EISDIR"), "{stderr}");
    assert!(!process_exists(subject.pid), "the half-built process is gone, zombie included");
}

/// A dump that cannot write its image fails without touching the process.
#[test]
fn unwritable_destination_leaves_the_process_untouched() {
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "30"]);
    let mut subject = Subject::spawn(command);
    let output = dump(subject.pid, std::path::Path::new("/nonexistent-directory/image.crp"), &[]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent-directory"), "{stderr}");
    assert_eq!(status_field(subject.pid, "TracerPid"), "0");
    assert!(subject.child.try_wait().unwrap().is_none(), "still running");
}

/// A directory or FIFO as the output is refused before the process is
/// frozen, and nothing is written.
#[test]
fn a_directory_or_fifo_destination_leaves_the_process_untouched() {
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "30"]);
    let mut subject = Subject::spawn(command);
    let directory = tempfile::tempdir().unwrap();
    let fifo = directory.path().join("fifo.crp");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (output, kind) in [(directory.path().to_owned(), "is a directory"), (fifo, "is a FIFO")] {
        let result = dump(subject.pid, &output, &[]);
        let stderr = stderr_of(&result);
        assert_eq!(result.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(kind), "{stderr}");
        assert_eq!(status_field(subject.pid, "TracerPid"), "0");
        assert!(subject.child.try_wait().unwrap().is_none(), "still running");
    }
    assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 1, "only the FIFO");
}

/// A FIFO given as the image is refused at once (it used to block forever),
/// a directory named as one; both are invalid images (exit code 4).
#[test]
fn a_fifo_or_directory_image_is_refused_at_once() {
    let directory = tempfile::tempdir().unwrap();
    let fifo = directory.path().join("fifo.crp");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (image, kind) in [(fifo.as_path(), "is a FIFO"), (directory.path(), "is a directory")] {
        let output = restore(image, &[], "");
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(4), "{stderr}");
        assert!(stderr.contains(kind), "{stderr}");
        let output = crp().arg("inspect").arg(image).output().unwrap();
        assert_eq!(output.status.code(), Some(4), "{}", stderr_of(&output));
    }
}

#[test]
fn privileges_crp_lacks_are_refused_before_anything_is_created() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_sleeper(directory.path());
    // Unchanged, the rewritten image restores: the refusals below are
    // caused by the changes alone.
    become_subreaper();
    let unchanged = rewritten_image(&image, |_| {});
    let restored = nix::unistd::Pid::from_raw(restore_detached(&unchanged).pid);
    nix::sys::signal::kill(restored, nix::sys::signal::Signal::SIGKILL).unwrap();
    nix::sys::wait::waitpid(restored, None).unwrap();

    let own_permitted = crp_compound::creds::own_status().unwrap().cap_permitted;
    if own_permitted != u64::MAX {
        let more_capabilities = rewritten_image(&image, |image| image.credentials.ids.cap_permitted = u64::MAX);
        let output = restore(&more_capabilities, &[], "");
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(5), "{stderr}");
        assert!(stderr.contains("capabilities"), "{stderr}");
        assert!(!process_exists(pid));
    }

    let own_hard = crp_ptrace::sys::own_hard_limit(libc::RLIMIT_NOFILE).unwrap();
    let lacks_sys_resource = crp_compound::creds::own_status().unwrap().cap_effective & (1 << 24) == 0;
    if lacks_sys_resource && own_hard != u64::MAX {
        let higher_limit = rewritten_image(&image, |image| {
            for limit in image.rlimits.iter_mut() {
                if limit.resource == libc::RLIMIT_NOFILE {
                    limit.hard = own_hard + 1;
                }
            }
        });
        let output = restore(&higher_limit, &[], "");
        let stderr = stderr_of(&output);
        // A privilege crp lacks: exit 1, naming the capability.
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("lacks privileges") && stderr.contains("CAP_SYS_RESOURCE"), "{stderr}");
        assert!(stderr.contains("RLIMIT_NOFILE"), "{stderr}");
        assert!(!process_exists(pid));
    }
}

/// Metadata that passes its checksum but describes pages outside every VMA
/// (a crafted or buggy image) is refused before anything is created.
#[test]
fn pages_outside_the_vmas_are_refused() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_sleeper(directory.path());
    let without_stack = rewritten_image(&image, |image| {
        image.vmas.retain(
            |vma| !matches!(&vma.backing, crp_compound::vma::Backing::Anonymous { label } if label == "[stack]"),
        );
    });
    let output = restore(&without_stack, &[], "");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("outside any private VMA"), "{stderr}");
    assert!(!process_exists(pid));
}

#[test]
fn dump_check_lists_every_blocker_at_once_and_touches_nothing() {
    let mut subject = python(
        "import os, socket, threading, time\n\
         threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n\
         held, holder = os.pipe()\n\
         if os.fork() == 0:\n\
         \x20   os.close(holder)\n\
         \x20   os.read(held, 1)\n\
         \x20   os._exit(0)\n\
         pidfd = os.pidfd_open(os.getpid())\n\
         netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)\n\
         print('READY', os.getpid(), flush=True)\n\
         time.sleep(60)",
    );
    let pid = subject.pid.to_string();
    let output = crp().args(["dump", "--check", &pid]).output().unwrap();
    let stdout = stdout_of(&output);
    assert_eq!(output.status.code(), Some(3), "{stdout}{}", stderr_of(&output));
    for expected in ["child processes", "anon_inode:[pidfd]", "socket:["] {
        assert!(stdout.contains(expected), "{expected:?} not in\n{stdout}");
    }
    // Its second thread is not one: threads are dumped.
    assert!(stdout.contains("cannot be dumped: 3 things"), "{stdout}");
    assert_eq!(status_field(subject.pid, "TracerPid"), "0");
    assert!(subject.child.try_wait().unwrap().is_none(), "still running");
    // A dump names the first and says how many more there are.
    assert_dump_refused(&mut subject, &format!("(and 2 more: `crp dump --check {pid}` lists all)"));
}

#[test]
fn dump_check_of_a_process_crp_can_dump_says_so_and_writes_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = python("import os, time\nprint('READY', os.getpid(), flush=True)\ntime.sleep(60)");
    let output =
        crp().current_dir(directory.path()).args(["dump", "--check", &subject.pid.to_string()]).output().unwrap();
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("crp: nothing stops a dump of pid {}\n", subject.pid));
    assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 0);
    assert_eq!(status_field(subject.pid, "TracerPid"), "0");
    assert!(subject.child.try_wait().unwrap().is_none(), "still running");
    let both = crp().args(["dump", "--check", "-o", "x.crp", &subject.pid.to_string()]).output().unwrap();
    assert_eq!(both.status.code(), Some(2), "--check writes no image: {}", stderr_of(&both));
}

#[test]
fn a_process_in_namespaces_of_its_own_is_refused_naming_each() {
    let mut command = Command::new("unshare");
    command.args([
        "--uts",
        "--net",
        "python3",
        "-c",
        "import os, time\nprint('READY', os.getpid(), flush=True)\ntime.sleep(60)",
    ]);
    let mut subject = Subject::spawn(command);
    let output = crp().args(["dump", "--check", &subject.pid.to_string()]).output().unwrap();
    let stdout = stdout_of(&output);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("a process in another UTS (hostname) namespace than crp's: ns/uts uts:["), "{stdout}");
    assert!(stdout.contains("a process in another network namespace than crp's: ns/net net:["), "{stdout}");
    assert_dump_refused(&mut subject, "network namespace");
}

#[test]
fn a_numa_memory_policy_of_a_mapping_is_refused() {
    let mut subject = python(
        "import ctypes, mmap, os, time\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         region = mmap.mmap(-1, 8192, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n\
         address = ctypes.addressof(ctypes.c_char.from_buffer(region))\n\
         node_zero = ctypes.c_ulong(1)\n\
         # mbind(address, 4096, MPOL_BIND, {node 0}, 64, 0)\n\
         assert libc.syscall(237, ctypes.c_void_p(address), ctypes.c_ulong(4096), 2, ctypes.byref(node_zero), ctypes.c_ulong(64), 0) == 0\n\
         print('READY', os.getpid(), flush=True)\n\
         time.sleep(60)",
    );
    assert_dump_refused(&mut subject, "a NUMA memory policy of a mapping (mbind) (numa_maps ");
}

#[test]
fn syscall_user_dispatch_is_refused_at_the_freeze_and_the_process_runs_on() {
    let mut subject = python(
        "import ctypes, os, time\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         selector = ctypes.c_char(b'\\x00')  # SYSCALL_DISPATCH_FILTER_ALLOW: syscalls run as usual\n\
         # prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, 0, 0, &selector)\n\
         assert libc.prctl(59, 1, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.byref(selector)) == 0, ctypes.get_errno()\n\
         print('READY', os.getpid(), flush=True)\n\
         time.sleep(60)",
    );
    assert_dump_refused(
        &mut subject,
        "syscall user dispatch (PR_SET_SYSCALL_USER_DISPATCH) (mode 1, seen at the freeze)",
    );
}

#[test]
fn a_deleted_working_directory_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let gone = directory.path().join("cwd");
    let mut subject = python(&format!(
        "import os, time\n\
         os.mkdir({gone:?})\n\
         os.chdir({gone:?})\n\
         os.rmdir({gone:?})\n\
         print('READY', os.getpid(), flush=True)\n\
         time.sleep(60)",
        gone = gone.to_str().unwrap()
    ));
    assert_dump_refused(&mut subject, "a deleted current working directory");
}

#[test]
fn an_open_deleted_directory_whose_parent_is_deleted_too_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let (parent, child) = (directory.path().join("parent"), directory.path().join("parent/child"));
    let mut subject = python(&format!(
        "import os, time\n\
         os.makedirs({child:?})\n\
         fd = os.open({child:?}, os.O_RDONLY | os.O_DIRECTORY)\n\
         os.rmdir({child:?})\n\
         os.rmdir({parent:?})\n\
         print('READY', os.getpid(), flush=True)\n\
         time.sleep(60)",
        child = child.to_str().unwrap(),
        parent = parent.to_str().unwrap()
    ));
    assert_dump_refused(&mut subject, "a deleted directory whose parent directory");
}

/// A vfork child before its exec runs in its parent's memory: refused by
/// name, both left as they were (the parent still waits, and ends once the
/// child does).
#[test]
fn a_vfork_child_before_its_exec_is_refused() {
    use std::io::{BufRead, BufReader, Write};
    let mut command = Command::new(c_program("vfork_hold"));
    close_inherited_fds(&mut command);
    let mut parent = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(parent.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let child: i32 = line.trim().strip_prefix("CHILD ").unwrap().parse().unwrap();
    let directory = tempfile::tempdir().unwrap();
    let output = dump(child, &directory.path().join("vfork.crp"), &[]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("sharing its parent's address space"), "{stderr}");
    assert_eq!(status_field(child, "TracerPid"), "0");
    parent.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "DONE\n");
    assert!(parent.wait().unwrap().success());
}
