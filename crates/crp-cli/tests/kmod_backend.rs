//! The kmod back end against the real module: these tests need `/dev/crp`,
//! which only the lab kernel can provide (the host cannot load modules), so
//! they are ignored in a plain `cargo test` and run inside the booted lab
//! kernel by `crates/crp-kmod/tests/in-vm.sh` with `--ignored`.
//!
//! The programs are the ones the userspace tests use, and they check their
//! own state after the restore; every pairing of back ends is exercised.

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use crp_kmod_abi::*;

fn backend(name: &str) -> [&str; 2] {
    ["--backend", name]
}

/// The state subject (heap pattern, TLS, vector registers held inside a
/// blocked read(), file mappings, guard pages) dumped with one back end
/// and restored with another.
fn state_round_trip(program: &Path, dump_with: &str, restore_with: &str) {
    let directory = tempfile::tempdir().unwrap();
    let (private, shared) = state_files(directory.path());
    let mut command = Command::new(program);
    command.arg("state").arg(private).arg(shared);
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("state.crp");
    dump_ok(subject.pid, &image, &backend(dump_with));
    assert_killed(subject.wait());
    let output = restore(&image, &backend(restore_with), "go\n");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "restore: {}\n{}", stdout, stderr_of(&output));
    assert!(stdout.starts_with(&format!("OK pid={} ", subject.pid)), "{stdout}");
    assert!(stdout.ends_with("line=go\n"), "{stdout}");
}

#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn kmod_dump_kmod_restore_dynamic_program() {
    state_round_trip(&programs().dynamic, "kmod", "kmod");
}

#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn kmod_dump_kmod_restore_static_program() {
    state_round_trip(&programs().static_, "kmod", "kmod");
}

#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn userspace_dump_kmod_restore() {
    state_round_trip(&programs().dynamic, "userspace", "kmod");
}

#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn kmod_dump_userspace_restore() {
    state_round_trip(&programs().dynamic, "kmod", "userspace");
}

/// A process caught in user mode between two instructions, with 64-bit
/// patterns in every general register (high halves set), keeps them all.
/// The attributes subject (thread name, affinity, policy and nice, timer
/// slack, parent-death signal, THP disabled, membarrier, oom_score_adj...)
/// dumped with one back end and restored with another: the module does not
/// report these, the kmod dump reads them by injection.
fn attributes_round_trip(dump_with: &str, restore_with: &str) {
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.arg("attributes");
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("attributes.crp");
    dump_ok(subject.pid, &image, &backend(dump_with));
    assert_killed(subject.wait());
    let output = restore(&image, &backend(restore_with), "go\n");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{dump_with} to {restore_with}: {stdout}{}", stderr_of(&output));
    assert!(stdout.starts_with(&format!("OK pid={} attributes kept", subject.pid)), "{stdout}");
}

#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn thread_and_process_attributes_across_back_ends() {
    attributes_round_trip("kmod", "kmod");
    attributes_round_trip("kmod", "userspace");
    attributes_round_trip("userspace", "kmod");
}

fn spin_round_trip(dump_with: &str, restore_with: &str) {
    // A 12 s alarm, dumped 1 s in: the emulated lab VM, running other tests
    // beside it, may take seconds to freeze it, and it must still be spinning.
    let round = round_trip(&["spin", "12"], Duration::from_millis(1000), &backend(dump_with), &backend(restore_with));
    let stdout = stdout_of(&round.output);
    assert!(round.output.status.success(), "{dump_with}->{restore_with}: {stdout}{}", stderr_of(&round.output));
    assert_eq!(stdout, format!("OK pid={} registers kept\n", round.pid), "{dump_with}->{restore_with}");
}

#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn general_registers_survive_across_back_ends() {
    for (dump_with, restore_with) in [("kmod", "kmod"), ("kmod", "userspace"), ("userspace", "kmod")] {
        spin_round_trip(dump_with, restore_with);
    }
}

/// Pending signals (both queues, exact siginfo), POSIX timers and file
/// locks are read and restored from outside by both back ends (the module
/// neither reports nor sets them): each program checks its own state.
fn queued_state_round_trip(program: &str, arguments: &[&Path], dump_with: &str, restore_with: &str, ok: &str) {
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(c_program(program));
    command.args(arguments);
    let mut subject = Subject::spawn(command);
    if program == "signals_pending" {
        // SAFETY: plain syscalls on the subject's pid; sigval is plain data.
        unsafe {
            assert_eq!(libc::kill(subject.pid, libc::SIGTERM), 0);
            let value = libc::sigval { sival_ptr: 0x4242 as *mut libc::c_void };
            assert_eq!(libc::sigqueue(subject.pid, 34 + 4, value), 0);
        }
        subject.send("parent-sent\n");
        assert_eq!(subject.read_line(), "QUEUED\n");
    }
    let image = directory.path().join("queued.crp");
    dump_ok(subject.pid, &image, &backend(dump_with));
    assert_killed(subject.wait());
    let output = restore(&image, &backend(restore_with), "go\n");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{program} {dump_with}->{restore_with}: {stdout}{}", stderr_of(&output));
    assert_eq!(stdout, format!("OK pid={} {ok}\n", subject.pid), "{program} {dump_with}->{restore_with}");
}

#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn pending_signals_posix_timers_and_file_locks_across_back_ends() {
    let directory = tempfile::tempdir().unwrap();
    for (dump_with, restore_with) in [("kmod", "kmod"), ("kmod", "userspace"), ("userspace", "kmod")] {
        queued_state_round_trip(
            "signals_pending",
            &[],
            dump_with,
            restore_with,
            "pending signals and handlers restored",
        );
        queued_state_round_trip("posix_timers", &[], dump_with, restore_with, "posix timers restored");
        let locks = [directory.path()];
        queued_state_round_trip("file_locks", &locks, dump_with, restore_with, "file locks restored");
    }
}

/// An ITIMER_PROF read by the module keeps the CPU time it had left (see
/// `cpu_itimer_round_trip`), restored by either back end.
#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn cpu_time_itimer_dumped_by_the_module_keeps_its_time_left() {
    for restore_with in ["kmod", "userspace"] {
        // In the emulated VM the module's memory fill, inside the
        // process's own ioctl, takes up to about a CPU-second; a timer
        // re-armed with its full 6 s would still be beyond.
        cpu_itimer_round_trip(&backend("kmod"), &backend(restore_with), 1.5);
    }
}

#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn kmod_process_blocked_in_nanosleep() {
    // The lab VM's dump and restore take seconds each: 5 s asleep is more
    // than the restore's overhead, 20 s leaves a slow dump time to freeze.
    nanosleep_round_trip(20, 5.0, &backend("kmod"), &backend("kmod"));
}

#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn python3_mid_computation_across_back_ends() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/compute.py");
    let mut plain = Command::new("python3");
    close_inherited_fds(&mut plain);
    let uninterrupted = plain.arg(&script).stdin(std::process::Stdio::null()).output().unwrap();
    let expected = String::from_utf8(uninterrupted.stdout).unwrap().lines().last().unwrap().to_owned();
    assert!(expected.starts_with("RESULT "), "{expected}");
    for (dump_with, restore_with) in [("kmod", "kmod"), ("kmod", "userspace"), ("userspace", "kmod")] {
        let directory = tempfile::tempdir().unwrap();
        let mut command = Command::new("python3");
        command.arg(&script);
        let mut subject = Subject::spawn(command);
        std::thread::sleep(Duration::from_millis(1500));
        let image = directory.path().join("python.crp");
        dump_ok(subject.pid, &image, &backend(dump_with));
        assert_killed(subject.wait());
        assert_eq!(subject.rest_of_output(), "", "the original finished before the dump");
        let output = restore(&image, &backend(restore_with), "");
        let stdout = stdout_of(&output);
        assert!(output.status.success(), "{dump_with}->{restore_with}: {stdout}{}", stderr_of(&output));
        assert_eq!(stdout.trim_end(), expected, "{dump_with}->{restore_with}");
    }
}

/// Every descriptor kind's own test program (pipes with their bytes, socket
/// pairs with their queues, epoll and inotify, a FIFO, a deleted file, a
/// memfd, owners and O_ASYNC, eventfd/timerfd/signalfd, pseudo-terminal
/// pairs), dumped and
/// restored through the module and across back ends: the descriptors are
/// read and rebuilt from outside by the same code for both.
#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn descriptor_kinds_across_back_ends() {
    // (program, mode, whether it works in a directory of its own, input, what it says)
    let cases: [(&str, Option<&str>, bool, &str, &str); 10] = [
        ("fd_pipes", Some("inside"), false, "go\n", "pipes"),
        ("fd_sockets", Some("pairs"), false, "go\n", "pairs"),
        ("fd_epoll", Some("epoll"), false, "go\n", "epoll"),
        ("fd_epoll", Some("inotify"), true, "go\n", "inotify"),
        ("fd_files", Some("fifo"), true, "go\n", "fifo"),
        ("fd_files", Some("deleted"), true, "go\n", "deleted"),
        ("fd_files", Some("memfd"), true, "go\n", "memfd"),
        ("fd_owner", None, false, "restored\n", "owners restored"),
        ("fd_events", None, false, "restored\n", "events restored"),
        ("fd_pty", None, false, "go\n", "pseudo-terminals"),
    ];
    for (dump_with, restore_with) in [("kmod", "kmod"), ("kmod", "userspace"), ("userspace", "kmod")] {
        for (program, mode, in_directory, input, said) in cases {
            let directory = tempfile::tempdir().unwrap();
            let mut command = Command::new(c_program(program));
            command.args(mode);
            if in_directory {
                command.arg(directory.path());
            }
            let mut subject = Subject::spawn(command);
            let image = directory.path().join(format!("{program}.crp"));
            dump_ok(subject.pid, &image, &backend(dump_with));
            assert_killed(subject.wait());
            if program == "fd_events" {
                // Its absolute timer's deadline must pass while it is down.
                let json = crp().args(["inspect", "--json"]).arg(&image).output().unwrap();
                wait_past_timerfd_deadline(&serde_json::from_slice(&json.stdout).unwrap(), 8);
            }
            let output = restore(&image, &backend(restore_with), input);
            let stdout = stdout_of(&output);
            let context = format!("{program} {mode:?}, {dump_with} to {restore_with}");
            assert!(output.status.success(), "{context}: {stdout}{}", stderr_of(&output));
            assert_eq!(stdout, format!("OK pid={} {said}\n", subject.pid), "{context}");
        }
    }
}

/// Sockets dumped and restored through the module and across back ends:
/// unix sockets with names, queues and peers, TCP listeners and UDP sockets
/// with their options and datagrams, an established TCP connection (repair
/// mode), multicast memberships, descriptors in flight in a socket pair's
/// queue.
#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn socket_programs_across_back_ends() {
    // (program, mode, its argument: none, a folder ("") or a file in the test's folder, what it says first)
    let cases: [(&str, &str, Option<&str>, &str); 5] = [
        ("fd_socket_kinds", "unix", Some(""), "unix"),
        ("fd_socket_kinds", "multicast", None, "multicast"),
        ("fd_socket_kinds", "inet", None, "inet"),
        ("fd_socket_kinds", "tcp", None, "tcp "),
        ("fd_sockets", "inflight", Some("passed.txt"), "inflight"),
    ];
    for (dump_with, restore_with) in [("kmod", "kmod"), ("kmod", "userspace"), ("userspace", "kmod")] {
        for (program, mode, argument, said) in cases {
            if mode == "multicast" && !Path::new("/proc/net/igmp").exists() {
                // No list of the groups joined (CONFIG_IP_MULTICAST off, as
                // in the lab kernel): memberships cannot be found (README).
                continue;
            }
            let directory = tempfile::tempdir().unwrap();
            let mut command = Command::new(c_program(program));
            command.arg(mode);
            match argument {
                // A folder of its own for its socket files, beside the image.
                Some("") => {
                    let sockets = directory.path().join("sockets");
                    std::fs::create_dir(&sockets).unwrap();
                    command.arg(sockets);
                }
                Some(name) => drop(command.arg(directory.path().join(name))),
                None => {}
            }
            let mut subject = Subject::spawn(command);
            let image = directory.path().join(format!("{program}-{mode}.crp"));
            dump_ok(subject.pid, &image, &backend(dump_with));
            assert_killed(subject.wait());
            let output = restore(&image, &backend(restore_with), "go\n");
            let stdout = stdout_of(&output);
            let context = format!("{program} {mode}, {dump_with} to {restore_with}");
            assert!(output.status.success(), "{context}: {stdout}{}", stderr_of(&output));
            assert!(stdout.starts_with(&format!("OK pid={} {said}", subject.pid)), "{context}: {stdout}");
        }
    }
}

/// A restore that fails inside the ioctl, after the module has begun to
/// replace the caller (a "file" mapping that turns out to be a directory,
/// which vm_mmap refuses), leaves no process behind, zombie included.
#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn restore_failing_inside_the_module_leaves_no_process_behind() {
    let directory = tempfile::tempdir().unwrap();
    let (private, shared) = state_files(directory.path());
    let mut command = Command::new(&programs().dynamic);
    command.arg("state").arg(&private).arg(shared);
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("state.crp");
    dump_ok(subject.pid, &image, &backend("kmod"));
    assert_killed(subject.wait());
    let impostor = directory.path().join("a-directory");
    std::fs::create_dir(&impostor).unwrap();
    let metadata = std::fs::metadata(&impostor).unwrap();
    let changed = rewritten_image(&image, |image| {
        let private = private.to_string_lossy();
        let file = image
            .vmas
            .iter_mut()
            .find_map(|vma| match &mut vma.backing {
                crp_compound::vma::Backing::File(file) if file.path == private => Some(file),
                _ => None,
            })
            .expect("the subject maps its private file");
        file.path = impostor.to_string_lossy().into_owned();
        file.size = std::os::unix::fs::MetadataExt::size(&metadata);
        file.mtime_ns = std::os::unix::fs::MetadataExt::mtime(&metadata) * 1_000_000_000
            + std::os::unix::fs::MetadataExt::mtime_nsec(&metadata);
    });
    let output = restore(&changed, &backend("kmod"), "");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CRP_IOC_RESTORE") && stderr.contains("ENODEV"), "{stderr}");
    assert!(!process_exists(subject.pid), "the half-built process is gone, zombie included");
}

// ---- bad input straight to the module: errnos, never an oops ----

fn device() -> File {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/crp").expect("/dev/crp")
}

/// Runs one ioctl and returns its errno (0 on success).
fn ioctl_errno(file: &File, command: u32, argument: u64) -> i32 {
    // SAFETY: the module validates every pointer it is given; a wrong one
    // yields EFAULT. Callers pass pointers to live records or deliberately
    // invalid addresses the kernel checks before use.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), command as _, argument) };
    if result < 0 { std::io::Error::last_os_error().raw_os_error().unwrap_or(0) } else { 0 }
}

fn address_of<T>(value: &T) -> u64 {
    std::ptr::from_ref(value) as u64
}

/// For records the module writes into.
fn address_of_mut<T>(value: &mut T) -> u64 {
    std::ptr::from_mut(value) as u64
}

#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn dump_ioctl_refuses_bad_requests() {
    let file = device();
    // Unknown command, and a known one encoded with another size.
    assert_eq!(ioctl_errno(&file, 0xdead, 0), libc::ENOTTY);
    assert_eq!(ioctl_errno(&file, CRP_IOC_DUMP_TASK ^ (1 << 16), 0), libc::ENOTTY);
    // Pointers the caller does not own.
    assert_eq!(ioctl_errno(&file, CRP_IOC_DUMP_TASK, 0), libc::EFAULT);
    assert_eq!(ioctl_errno(&file, CRP_IOC_DUMP_TASK, 0xffff_ffff_ffff_f000), libc::EFAULT);

    let mut subject = Subject::spawn({
        let mut command = Command::new(&programs().dynamic);
        command.args(["sleep", "30"]);
        command
    });
    let mut state = CrpTaskState::default();
    let mut request = CrpDumpRequest {
        abi_version: CRP_ABI_VERSION,
        pid: subject.pid,
        task: address_of_mut(&mut state),
        ..CrpDumpRequest::default()
    };
    // A running process: not stopped.
    assert_eq!(ioctl_errno(&file, CRP_IOC_DUMP_TASK, address_of_mut(&mut request)), libc::EBUSY);
    // Stopped, but by SIGSTOP and not by this caller's ptrace: not permitted.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(subject.pid), nix::sys::signal::Signal::SIGSTOP).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !status_field(subject.pid, "State").starts_with('T') {
        assert!(std::time::Instant::now() < deadline, "SIGSTOP did not stop the subject");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ioctl_errno(&file, CRP_IOC_DUMP_TASK, address_of_mut(&mut request)), libc::EPERM);
    // Another ABI version, a pid that does not exist, and the caller itself.
    request.abi_version = CRP_ABI_VERSION + 1;
    assert_eq!(ioctl_errno(&file, CRP_IOC_DUMP_TASK, address_of_mut(&mut request)), libc::EPROTO);
    request.abi_version = CRP_ABI_VERSION;
    request.pid = i32::MAX;
    assert_eq!(ioctl_errno(&file, CRP_IOC_DUMP_TASK, address_of_mut(&mut request)), libc::ESRCH);
    request.pid = std::process::id().cast_signed();
    assert_eq!(ioctl_errno(&file, CRP_IOC_DUMP_TASK, address_of_mut(&mut request)), libc::EINVAL);
    // Reading memory before attaching to anyone.
    let mut buffer = [0u8; 16];
    let read = std::os::unix::fs::FileExt::read_at(&file, &mut buffer, 0x1000);
    assert_eq!(read.unwrap_err().raw_os_error(), Some(libc::ENXIO));
    let attach = CrpAttach { abi_version: CRP_ABI_VERSION, pid: subject.pid };
    assert_eq!(ioctl_errno(&file, CRP_IOC_ATTACH, address_of(&attach)), libc::EPERM);

    // Frozen by this caller: the records' pointers and room are checked.
    let pid = nix::unistd::Pid::from_raw(subject.pid);
    nix::sys::ptrace::seize(pid, nix::sys::ptrace::Options::empty()).unwrap();
    nix::sys::ptrace::interrupt(pid).unwrap();
    nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL)).unwrap();
    request.pid = subject.pid;
    let mut vmas = vec![CrpVma::default(); 2];
    let mut names = vec![0u8; 16];
    request.vmas = vmas.as_mut_ptr() as u64;
    request.vma_capacity = 2;
    request.names = names.as_mut_ptr() as u64;
    request.names_capacity = 16;
    assert_eq!(ioctl_errno(&file, CRP_IOC_DUMP_TASK, address_of_mut(&mut request)), libc::ENOSPC);
    // Too little room: the module says how much it needs.
    assert!(request.vma_count > 2 && request.names_used > 16, "{request:?}");
    vmas.resize(request.vma_count as usize, CrpVma::default());
    names.resize(request.names_used as usize, 0);
    request.vmas = vmas.as_mut_ptr() as u64;
    request.vma_capacity = request.vma_count;
    request.names = names.as_mut_ptr() as u64;
    request.names_capacity = request.names_used;
    // Enough room, but the task record points nowhere.
    request.task = 8;
    assert_eq!(ioctl_errno(&file, CRP_IOC_DUMP_TASK, address_of_mut(&mut request)), libc::EFAULT);
    request.task = address_of_mut(&mut state);
    assert_eq!(ioctl_errno(&file, CRP_IOC_DUMP_TASK, address_of_mut(&mut request)), 0);
    // What the module read is what ptrace and /proc say.
    let registers = nix::sys::ptrace::getregs(pid).unwrap();
    assert_eq!((state.regs[16], state.regs[19], state.regs[21]), (registers.rip, registers.rsp, registers.fs_base));
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", subject.pid)).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!(state.mm.start_code.to_string(), fields[23], "startcode");
    assert_eq!(state.mm.start_stack.to_string(), fields[25], "startstack");
    assert!(vmas.iter().any(|vma| vma.kind == CRP_VMA_SPECIAL), "no [vdso] among {vmas:?}");
    assert_eq!(
        ioctl_errno(&file, CRP_IOC_ATTACH, address_of(&CrpAttach { abi_version: CRP_ABI_VERSION, pid: subject.pid })),
        0
    );
    assert_eq!(std::os::unix::fs::FileExt::read_at(&file, &mut buffer, 0).unwrap_err().raw_os_error(), Some(libc::EIO));

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    subject.wait();
}

/// Restore requests against the calling process itself: every one of
/// these must be refused before anything is unmapped, so the caller
/// survives them all (the child reports each errno, then exits normally).
#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn restore_ioctl_refuses_bad_requests_before_touching_the_caller() {
    let file = device();
    let directory = tempfile::tempdir().unwrap();
    let image_path = directory.path().join("image");
    std::fs::write(&image_path, vec![0u8; 8192]).unwrap();
    let image = File::open(&image_path).unwrap();
    let (pipe_reader, _pipe_writer) = nix::unistd::pipe().unwrap();

    let mut state = CrpTaskState::default();
    state.regs[17] = 0x33;
    state.regs[20] = 0x2b;
    state.mm.start_code = 0x40_0000;
    state.mm.end_code = 0x40_1000;
    let vmas = [
        CrpRestoreVma {
            start: 0x1000_0000,
            end: 0x1000_2000,
            flags: CRP_VMA_READ | CRP_VMA_WRITE,
            fd: -1,
            ..Default::default()
        },
        CrpRestoreVma { start: 0x2000_0000, end: 0x2000_1000, flags: CRP_VMA_READ, fd: -1, ..Default::default() },
    ];
    let runs = [CrpPageRun { address: 0x1000_0000, pages: 2, file_offset: 0 }];
    let good = CrpRestoreRequest {
        abi_version: CRP_ABI_VERSION,
        image_fd: image.as_raw_fd(),
        task: address_of(&state),
        vmas: vmas.as_ptr() as u64,
        vma_count: 2,
        run_count: 1,
        runs: runs.as_ptr() as u64,
    };
    // The module refuses a multi-threaded caller (this test harness)...
    assert_eq!(ioctl_errno(&file, CRP_IOC_RESTORE, address_of(&good)), libc::EBUSY);
    // ...so each bad request is tried by a forked, single-threaded child.
    let mut cases: Vec<(&str, CrpRestoreRequest, i32)> = vec![
        ("other ABI version", CrpRestoreRequest { abi_version: 0, ..good }, libc::EPROTO),
        ("negative image fd", CrpRestoreRequest { image_fd: -5, ..good }, libc::EBADF),
        ("image fd is a pipe", CrpRestoreRequest { image_fd: pipe_reader.as_raw_fd(), ..good }, libc::EINVAL),
        ("no VMAs", CrpRestoreRequest { vma_count: 0, ..good }, libc::E2BIG),
        ("too many VMAs", CrpRestoreRequest { vma_count: CRP_MAX_VMAS + 1, ..good }, libc::E2BIG),
        ("task record unreadable", CrpRestoreRequest { task: 8, ..good }, libc::EFAULT),
        ("VMA array unreadable", CrpRestoreRequest { vmas: 0xffff_ffff_ffff_0000, ..good }, libc::EFAULT),
    ];
    let vma_lists: Vec<(&str, Vec<CrpRestoreVma>, i32)> = vec![
        (
            "overlapping VMAs",
            vec![vmas[0], CrpRestoreVma { start: 0x1000_1000, end: 0x1000_3000, ..vmas[1] }],
            libc::EINVAL,
        ),
        ("unaligned VMA", vec![CrpRestoreVma { start: 0x1000_0800, ..vmas[0] }], libc::EINVAL),
        (
            "kernel address",
            vec![CrpRestoreVma { start: 0xffff_8000_0000_0000, end: 0xffff_8000_0000_1000, ..vmas[0] }],
            libc::EINVAL,
        ),
        ("dump-only flag", vec![CrpRestoreVma { flags: CRP_VMA_LOCKED, ..vmas[0] }], libc::EINVAL),
        ("closed file fd", vec![CrpRestoreVma { fd: 9999, ..vmas[0] }], libc::EBADF),
    ];
    for (name, list, errno) in &vma_lists {
        let request = CrpRestoreRequest {
            vmas: list.as_ptr() as u64,
            vma_count: u32::try_from(list.len()).unwrap(),
            run_count: 0,
            ..good
        };
        cases.push((name, request, *errno));
    }
    let run_lists: Vec<(&str, [CrpPageRun; 1], i32)> = vec![
        ("run past the image's end", [CrpPageRun { file_offset: 4096, ..runs[0] }], libc::EINVAL),
        ("run outside every VMA", [CrpPageRun { address: 0x3000_0000, pages: 1, file_offset: 0 }], libc::EINVAL),
        ("run across two VMAs", [CrpPageRun { address: 0x1000_1000, pages: 2, file_offset: 0 }], libc::EINVAL),
        ("run length overflows", [CrpPageRun { pages: u64::MAX / 2, ..runs[0] }], libc::EOVERFLOW),
    ];
    for (name, list, errno) in &run_lists {
        cases.push((name, CrpRestoreRequest { runs: list.as_ptr() as u64, run_count: 1, ..good }, *errno));
    }
    let mut bad_selector = state;
    bad_selector.regs[17] = 0x10;
    let mut bad_mm = state;
    bad_mm.mm.end_code = 0;
    cases.push(("kernel code selector", CrpRestoreRequest { task: address_of(&bad_selector), ..good }, libc::EINVAL));
    cases.push(("code end before start", CrpRestoreRequest { task: address_of(&bad_mm), ..good }, libc::EINVAL));

    let requests: Vec<CrpRestoreRequest> = cases.iter().map(|(_, request, _)| *request).collect();
    let errnos = errnos_in_single_threaded_child(&file, &requests);
    for ((name, _, expected), got) in cases.iter().zip(&errnos) {
        assert_eq!(got, expected, "{name}: errno {got}, expected {expected}");
    }
    // This process is still whole: its memory and files work.
    assert_eq!(std::fs::read(&image_path).unwrap().len(), 8192);
}

/// Issues `CRP_IOC_RESTORE` with each request from a forked child (the
/// module wants a single-threaded caller) and returns the errnos. The child
/// only makes raw system calls on memory prepared before the fork; it
/// exits 0 after the last one, which also shows it survived them all.
fn errnos_in_single_threaded_child(file: &File, requests: &[CrpRestoreRequest]) -> Vec<i32> {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    let mut errnos = vec![0i32; requests.len()];
    // SAFETY: the child calls only ioctl, write and _exit (async-signal-safe)
    // on memory that exists before the fork.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            for (request, errno) in requests.iter().zip(errnos.iter_mut()) {
                // SAFETY: `request` is a live record; the module checks every pointer in it.
                let result =
                    unsafe { libc::ioctl(file.as_raw_fd(), CRP_IOC_RESTORE as _, std::ptr::from_ref(request)) };
                // SAFETY: reads this thread's errno.
                *errno = if result < 0 { unsafe { *libc::__errno_location() } } else { 0 };
            }
            let bytes = std::mem::size_of_val(errnos.as_slice());
            // SAFETY: writes the errno array to the pipe, then ends the child.
            unsafe {
                libc::write(writer.as_raw_fd(), errnos.as_ptr().cast(), bytes);
                libc::_exit(0)
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(writer);
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut File::from(reader), &mut bytes).unwrap();
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0), "the child did not survive its requests");
            assert_eq!(bytes.len(), std::mem::size_of_val(errnos.as_slice()));
            bytes.chunks_exact(4).map(|word| i32::from_ne_bytes(word.try_into().unwrap())).collect()
        }
    }
}

#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn only_privileged_callers_may_open_or_use_the_device() {
    // Opened while privileged, then used after dropping to nobody.
    let file = device();
    let attach = CrpAttach { abi_version: CRP_ABI_VERSION, pid: 1 };
    // SAFETY: the child only makes raw system calls (setresuid, open,
    // ioctl) on memory prepared before the fork, then _exit.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            // SAFETY: raw syscalls with plain integers, a static path and a live record.
            let code = unsafe {
                let denied = || matches!(*libc::__errno_location(), libc::EPERM | libc::EACCES);
                if libc::setresuid(65534, 65534, 65534) != 0 {
                    2
                } else if libc::open(c"/dev/crp".as_ptr(), libc::O_RDWR) >= 0 || !denied() {
                    3
                } else if libc::ioctl(file.as_raw_fd(), CRP_IOC_ATTACH as _, std::ptr::from_ref(&attach)) >= 0
                    || *libc::__errno_location() != libc::EPERM
                {
                    4
                } else {
                    0
                }
            };
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            // 3: nobody could open /dev/crp; 4: nobody could use an inherited one.
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
}

#[test]
#[ignore = "needs /dev/crp: run by crates/crp-kmod/tests/in-vm.sh"]
fn check_reports_the_device_usable() {
    let output = crp().arg("check").output().unwrap();
    let stdout = stdout_of(&output);
    let line = stdout.lines().find(|line| line.contains("/dev/crp")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.starts_with("ok"), "{line}");
}

/// The host's case (its kernel cannot load modules): not ignored.
#[test]
fn without_the_module_kmod_is_refused_and_the_process_left_running() {
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "30"]);
    let mut subject = Subject::spawn(command);
    let directory = tempfile::tempdir().unwrap();
    let output = dump(subject.pid, &directory.path().join("x.crp"), &backend("kmod"));
    assert_eq!(output.status.code(), Some(5), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("/dev/crp does not exist"), "{}", stderr_of(&output));
    assert_eq!(status_field(subject.pid, "TracerPid"), "0");
    assert!(status_field(subject.pid, "State").starts_with('S'));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(subject.pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    subject.wait();
}

/// The host's case for restore: refused before any process is created.
#[test]
fn without_the_module_a_kmod_restore_creates_nothing() {
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "30"]);
    let mut subject = Subject::spawn(command);
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("sleep.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &backend("kmod"), "");
    assert_eq!(output.status.code(), Some(5), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("/dev/crp does not exist"), "{}", stderr_of(&output));
    assert!(!process_exists(subject.pid), "nothing was created");
}
