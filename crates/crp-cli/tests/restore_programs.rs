//! Real programs are dumped, killed, restored, and then check their own
//! state: memory, TLS, vector registers, file mappings, guard pages, a
//! syscall they were blocked in, their PID.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::*;

fn state_subject(program: &Path, directory: &Path) -> Subject {
    let (private, shared) = state_files(directory);
    let mut command = Command::new(program);
    command.arg("state").arg(private).arg(shared);
    Subject::spawn(command)
}

fn dump_kill_restore_state(program: &Path) {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = state_subject(program, directory.path());
    let image = directory.path().join("state.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &[], "go\n");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "restore: {}\n{}", stdout, stderr_of(&output));
    assert!(stdout.starts_with(&format!("OK pid={} ", subject.pid)), "{stdout}");
    assert!(stdout.ends_with("line=go\n"), "{stdout}");
}

#[test]
fn dynamic_program_keeps_heap_tls_vectors_mappings_and_pid() {
    dump_kill_restore_state(&programs().dynamic);
}

#[test]
fn static_program_keeps_heap_tls_vectors_mappings_and_pid() {
    dump_kill_restore_state(&programs().static_);
}

#[test]
fn process_blocked_in_nanosleep_sleeps_the_rest_of_its_time() {
    nanosleep_round_trip(8, 2.0, &[], &[]);
}

#[test]
fn leave_running_then_restore_a_second_copy() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let mut original = state_subject(&programs().dynamic, directory.path());
    let image = directory.path().join("copy.crp");
    dump_ok(original.pid, &image, &["--leave-running"]);
    assert_eq!(status_field(original.pid, "TracerPid"), "0");

    // The old PID is taken: --pid-must-match refuses, creating nothing.
    let refused = restore(&image, &["--pid-must-match"], "");
    assert_eq!(refused.status.code(), Some(6), "{}", stderr_of(&refused));
    assert!(stderr_of(&refused).contains(&format!("pid {} is in use", original.pid)));

    // Without it, the copy gets a new PID and runs beside the original.
    let mut copy = restore_detached(&image);
    assert_ne!(copy.pid, original.pid);
    copy.stdin.write_all(b"copy\n").unwrap();
    let copy_result = copy.read_line();
    assert_eq!(wait_pid(copy.pid), 0, "{copy_result}");
    assert!(copy_result.starts_with(&format!("OK pid={} ", copy.pid)), "{copy_result}");

    original.send("original\n");
    let result = original.read_line();
    assert!(result.starts_with(&format!("OK pid={} ", original.pid)), "{result}");
    assert!(result.ends_with("line=original\n"));
    assert!(original.wait().success());
}

#[test]
fn the_same_image_restores_twice_in_a_row() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = state_subject(&programs().dynamic, directory.path());
    let image = directory.path().join("twice.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    for round in ["first\n", "second\n"] {
        let output = restore(&image, &["--pid-must-match"], round);
        let stdout = stdout_of(&output);
        assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
        assert!(stdout.starts_with(&format!("OK pid={} ", subject.pid)), "{stdout}");
        assert!(stdout.ends_with(&format!("line={round}")), "{stdout}");
    }
}

#[test]
fn exit_status_of_the_restored_process_is_passed_on() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = state_subject(&programs().dynamic, directory.path());
    let image = directory.path().join("eof.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    // No input: read() sees end of file and the program fails with 1.
    let output = restore(&image, &[], "");
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert!(stdout_of(&output).starts_with("FAIL read from stdin"));
}

/// A process of an unprivileged user comes back as that user (not as the
/// root crp runs as), with its resource limits and a pending alarm that
/// still fires on time.
#[test]
fn unprivileged_process_keeps_its_user_limits_and_alarm() {
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.arg("identity").uid(NOBODY).gid(NOBODY).current_dir("/");
    let mut subject = Subject::spawn(command);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let image = directory.path().join("identity.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &[], "");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    let expected = format!(
        "OK pid={} uid={NOBODY}/{NOBODY}/{NOBODY} gid={NOBODY}/{NOBODY}/{NOBODY} groups=0 nofile=123/456 dumpable=1 alarm=",
        subject.pid
    );
    assert!(stdout.starts_with(&expected), "{stdout}");
}

/// A process stopped by SIGSTOP comes back stopped, and carries on when
/// continued.
#[test]
fn stopped_process_comes_back_stopped() {
    use nix::sys::signal::{Signal, kill};
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "1"]);
    let mut subject = Subject::spawn(command);
    let pid = nix::unistd::Pid::from_raw(subject.pid);
    kill(pid, Signal::SIGSTOP).unwrap();
    while !status_field(subject.pid, "State").starts_with('T') {
        std::thread::yield_now();
    }
    let image = directory.path().join("stopped.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());

    let mut restored = restore_detached(&image);
    assert_eq!(restored.pid, subject.pid);
    // It stays stopped well past the end of its one-second sleep.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(status_field(subject.pid, "State").starts_with('T'), "{}", status_field(subject.pid, "State"));
    kill(pid, Signal::SIGCONT).unwrap();
    let result = restored.read_line();
    assert!(result.starts_with(&format!("OK pid={}", subject.pid)), "{result}");
    assert_eq!(wait_pid(subject.pid), 0);
}

/// What /proc shows of a process's mm fields and identity, which the kernel
/// takes from mm_struct and task_struct: the restored process must show
/// the same.
fn proc_identity(pid: i32) -> Vec<(String, Vec<u8>)> {
    let read = |name: &str| std::fs::read(format!("/proc/{pid}/{name}")).unwrap();
    let link =
        |name: &str| std::fs::read_link(format!("/proc/{pid}/{name}")).unwrap().into_os_string().into_encoded_bytes();
    let stat = String::from_utf8(read("stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // start_code, end_code, start_stack, then start_data..env_end (proc(5) 26-28, 45-51).
    let mm_fields: Vec<&str> = [26, 27, 28, 45, 46, 47, 48, 49, 50, 51].iter().map(|field| fields[field - 3]).collect();
    vec![
        ("cmdline".into(), read("cmdline")),
        ("environ".into(), read("environ")),
        ("auxv".into(), read("auxv")),
        ("comm".into(), read("comm")),
        ("exe".into(), link("exe")),
        ("cwd".into(), link("cwd")),
        ("mm fields".into(), mm_fields.join(" ").into_bytes()),
        ("personality".into(), read("personality")),
        ("Cpus_allowed_list".into(), status_field(pid, "Cpus_allowed_list").into_bytes()),
    ]
}

#[test]
fn mm_fields_and_identity_read_back_the_same_from_proc() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "2"]).current_dir("/usr").env("CRP_TEST_MARKER", "environment survives");
    let mut subject = Subject::spawn(command);
    // Pin it to the last CPU, which crp restore's children would not inherit.
    let last_cpu = std::thread::available_parallelism().unwrap().get() - 1;
    let mut only_last = nix::sched::CpuSet::new();
    only_last.set(last_cpu).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(subject.pid), &only_last).unwrap();
    let before = proc_identity(subject.pid);
    let image = directory.path().join("identity.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let mut restored = restore_detached(&image);
    assert_eq!(restored.pid, subject.pid);
    let after = proc_identity(restored.pid);
    for ((name, expected), (_, found)) in before.iter().zip(&after) {
        assert_eq!(
            String::from_utf8_lossy(found),
            String::from_utf8_lossy(expected),
            "/proc/{}/{name} differs after restore",
            restored.pid
        );
    }
    let result = restored.read_line();
    assert!(result.starts_with("OK "), "{result}");
    assert_eq!(wait_pid(restored.pid), 0);
}

/// Ctrl-C while `crp restore` waits: the interrupt reaches the restored
/// process (same process group), and crp reports how it ended (128 + 2)
/// instead of dying first.
#[test]
fn interrupt_reaches_the_process_and_crp_reports_it() {
    use std::os::unix::process::CommandExt;
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "30"]);
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("interrupt.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let mut restorer = crp()
        .arg("restore")
        .arg(&image)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the process runs on its own: rebuilt (its comm is back)
    // and no longer traced.
    let restored = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm == "subject\n")
            && status_field(pid, "TracerPid") == "0"
    };
    while !restored(subject.pid) {
        assert!(restorer.try_wait().unwrap().is_none(), "crp restore ended before the process ran");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let ignored = u64::from_str_radix(&status_field(subject.pid, "SigIgn"), 16).unwrap();
    assert_eq!(ignored & (1 << (libc::SIGINT - 1)), 0, "the restored process ignores SIGINT");
    let group = nix::unistd::Pid::from_raw(restorer.id().cast_signed());
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = restorer.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{status:?}");
}

#[test]
fn general_registers_survive_a_freeze_between_two_instructions() {
    let round = round_trip(&["spin", "2"], std::time::Duration::from_millis(500), &[], &[]);
    let stdout = stdout_of(&round.output);
    assert!(round.output.status.success(), "{stdout}{}", stderr_of(&round.output));
    assert_eq!(stdout, format!("OK pid={} registers kept\n", round.pid));
}

/// A CPU-time interval timer keeps the CPU time it had left: spinning
/// until 4 CPU-seconds are used, dumped after about 2, the restored process
/// uses the rest, not 4 again (and not forever, as with the timer lost).
/// Time is CPU time throughout, so a loaded machine changes nothing.
#[test]
fn cpu_time_itimer_keeps_its_time_left() {
    cpu_itimer_round_trip(&[], &[], 0.5);
}

/// Descriptors sharing one open file description (dup) still share it, and
/// its offset, after a restore; each keeps its own close-on-exec flag.
#[test]
fn dup_ed_descriptors_share_their_offset_after_a_restore() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("shared-offset.txt");
    std::fs::write(&file, vec![b'x'; 100]).unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.arg("dup").arg(&file);
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("dup.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let inspected = crp().arg("inspect").arg(&image).output().unwrap();
    assert!(stdout_of(&inspected).contains("fd 5   the same open file as fd 3"), "{}", stdout_of(&inspected));
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} shared\n", subject.pid));
}

/// Per-thread attributes (name, affinity, policy and nice, timer slack, I/O
/// priority, parent-death signal, machine-check policy, speculation control)
/// and process attributes (THP disabled, a membarrier registration,
/// oom_score_adj 400, child subreaper, no_new_privs, MDWE) are shown by
/// inspect and come back: the restored program checks each itself.
#[test]
fn thread_and_process_attributes_survive_a_restore() {
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.arg("attributes");
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("attributes.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());

    let inspected = crp().arg("inspect").arg("--json").arg(&image).output().unwrap();
    assert!(inspected.status.success(), "{}", stderr_of(&inspected));
    let summary: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    let thread = &summary["threads"][0];
    assert_eq!(thread["comm"], "attr-subject");
    assert_eq!(thread["scheduling"]["policy"], "SCHED_BATCH");
    assert_eq!(
        (thread["scheduling"]["nice"].as_i64(), thread["scheduling"]["reset_on_fork"].as_bool()),
        (Some(7), Some(true))
    );
    assert_eq!(thread["timer_slack_ns"], 123_456);
    assert_eq!(thread["io_priority"]["value"], (2 << 13) | 6);
    assert_eq!(thread["parent_death_signal"], libc::SIGWINCH);
    assert_eq!(thread["machine_check_kill"], "early");
    let attributes = &summary["process_attributes"];
    assert_eq!(attributes["oom_score_adj"], 400);
    assert_eq!(attributes["thp_disable"], 1);
    assert_eq!(attributes["child_subreaper"], true);
    assert_eq!(attributes["memory_deny_write_execute"], 1);
    assert_eq!(attributes["membarrier_registrations"]["names"][0], "MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED");
    assert_eq!(attributes["coredump_filter"], 0x7f);
    assert_eq!(attributes["futex_hash_slots"], 16);
    let amx = std::fs::read_to_string("/proc/cpuinfo").unwrap().contains(" amx_tile");
    assert_eq!(attributes["amx_permitted"], amx, "the subject asks for AMX where the CPU has it");
    let text = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    assert!(text.contains("oom_score_adj 400") && text.contains("SCHED_BATCH nice 7"), "{text}");
    assert!(text.contains("coredump_filter 0x7f"), "{text}");

    let output = restore(&image, &[], "go\n");
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert!(stdout.starts_with(&format!("OK pid={} attributes kept", subject.pid)), "{stdout}");
    assert!(stdout.contains(&format!("amx {}", u8::from(amx))), "{stdout}");
    assert!(stdout.contains("futex hash 1"), "this kernel (6.17+) has private futex hashes: {stdout}");
}

/// An oom_score_adj below what crp restore may set without CAP_SYS_RESOURCE
/// is refused before the child exists, naming the value and the capability.
#[test]
fn an_oom_score_adj_crp_cannot_set_is_refused_before_the_child_exists() {
    if crp_compound::process_attrs::can_set_oom_score_adj(-500).unwrap() {
        eprintln!("skipped: this test process may lower oom_score_adj to -500 (CAP_SYS_RESOURCE or a low bound)");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "30"]);
    let mut subject = Subject::spawn(command);
    let image = directory.path().join("oom.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let changed = rewritten_image(&image, |image| image.attributes.oom_score_adj = -500);
    let output = restore(&changed, &[], "");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CAP_SYS_RESOURCE, to set oom_score_adj -500"), "{stderr}");
    assert!(!process_exists(subject.pid), "no child was left");
}
