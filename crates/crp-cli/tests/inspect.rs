//! `crp inspect` shows what an image holds: the dump date and age, the
//! stopped state, signal handlers and mask, timers, credentials, limits;
//! `--json` follows docs/inspect.schema.json (checked here with the
//! `jsonschema` crate) with numbers as numbers.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::*;

/// A python process with a SIGUSR1 handler, SIGHUP ignored, SIGUSR2
/// blocked, RLIMIT_NOFILE 123/456 and an hour-long ITIMER_REAL, dumped.
fn dumped_python(directory: &Path) -> (i32, PathBuf) {
    let mut command = Command::new("python3");
    command.args([
        "-c",
        "import os, resource, signal, time\n\
         signal.signal(signal.SIGUSR1, lambda *a: None)\n\
         signal.signal(signal.SIGHUP, signal.SIG_IGN)\n\
         signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])\n\
         resource.setrlimit(resource.RLIMIT_NOFILE, (123, 456))\n\
         signal.setitimer(signal.ITIMER_REAL, 3600)\n\
         print('READY', os.getpid(), flush=True)\n\
         time.sleep(600)",
    ]);
    let mut subject = Subject::spawn_with_stderr(command, Stdio::null());
    let image = directory.join("python.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    (subject.pid, image)
}

fn inspect(image: &Path, extra: &[&str]) -> String {
    let output = crp().arg("inspect").arg(image).args(extra).output().unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    stdout_of(&output)
}

fn inspect_json(image: &Path) -> serde_json::Value {
    serde_json::from_str(&inspect(image, &["--json"])).expect("inspect --json prints JSON")
}

fn schema() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/inspect.schema.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("the schema is JSON")
}

fn assert_matches_schema(summary: &serde_json::Value) {
    let validator = jsonschema::validator_for(&schema()).expect("docs/inspect.schema.json is a valid JSON Schema");
    let errors: Vec<String> =
        validator.iter_errors(summary).map(|error| format!("{} at {}", error, error.instance_path)).collect();
    assert!(errors.is_empty(), "inspect --json does not follow docs/inspect.schema.json:\n{}", errors.join("\n"));
}

fn find<'a>(items: &'a serde_json::Value, key: &str, value: &str) -> &'a serde_json::Value {
    items.as_array().unwrap().iter().find(|item| item[key] == value).unwrap_or_else(|| panic!("no {key}={value}"))
}

#[test]
fn inspect_json_follows_its_schema_with_numbers_as_numbers() {
    let directory = tempfile::tempdir().unwrap();
    let (pid, image) = dumped_python(directory.path());
    let summary = inspect_json(&image);
    assert_matches_schema(&summary);
    assert_eq!(summary["schema"], "crp-inspect/1");
    assert_eq!(summary["process"]["pid"], pid);
    assert_eq!(summary["process"]["stopped"], false);
    let rip = &summary["registers"]["rip"];
    assert!(rip.as_u64().unwrap() > 0, "registers keyed by name, numbers: {rip}");
    let stack = find(&summary["vmas"], "backing", "[stack]");
    let start = stack["start"]["value"].as_u64().unwrap();
    assert_eq!(stack["start"]["hex"], format!("{start:#x}"));

    let usr1 = find(&summary["signals"]["handlers"], "name", "SIGUSR1");
    assert_eq!(usr1["signal"], libc::SIGUSR1);
    assert_eq!(usr1["disposition"], "handler");
    assert!(usr1["handler"]["value"].as_u64().unwrap() > 1);
    assert!(usr1["flags"]["names"].as_array().unwrap().iter().any(|flag| flag == "SA_RESTORER"), "{usr1}");
    assert_eq!(find(&summary["signals"]["handlers"], "name", "SIGHUP")["disposition"], "ignore");
    let handled: Vec<&str> =
        summary["signals"]["handlers"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert!(!handled.contains(&"SIGTERM"), "default dispositions are left out: {handled:?}");
    let blocked = summary["signals"]["blocked"]["names"].as_array().unwrap();
    assert!(blocked.iter().any(|name| name == "SIGUSR2"), "{blocked:?}");

    let real = find(&summary["timers"], "name", "ITIMER_REAL");
    assert_eq!(real["armed"], true);
    assert!(real["left_microseconds"].as_u64().unwrap() > 3000 * 1_000_000, "{real}");
    let nofile = find(&summary["rlimits"], "name", "RLIMIT_NOFILE");
    assert_eq!((nofile["soft"].as_u64(), nofile["hard"].as_u64()), (Some(123), Some(456)));
    assert_eq!(find(&summary["rlimits"], "name", "RLIMIT_AS")["soft"], "unlimited");

    let own = crp_compound::creds::own_status().unwrap();
    assert_eq!(summary["credentials"]["uids"]["effective"], own.uids[1]);
    assert_eq!(summary["credentials"]["capabilities"]["bounding"]["value"], own.cap_bounding);

    let dumped = summary["dumped_at"]["unix_seconds"].as_u64().unwrap();
    let utc = humantime::parse_rfc3339(summary["dumped_at"]["utc"].as_str().unwrap()).expect("RFC 3339");
    assert_eq!(utc, SystemTime::UNIX_EPOCH + Duration::from_secs(dumped));
    let age = summary["dumped_at"]["age_seconds"].as_i64().unwrap();
    assert!((0..600).contains(&age), "dumped moments ago: {age}");
}

#[test]
fn inspect_text_shows_date_handlers_mask_timers_credentials_and_limits() {
    let directory = tempfile::tempdir().unwrap();
    let (_, image) = dumped_python(directory.path());
    let text = inspect(&image, &[]);
    let line = |prefix: &str| {
        text.lines()
            .find(|line| line.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{text}"))
            .to_owned()
    };
    let dumped = line("dumped ");
    assert!(dumped.contains("Z (") && dumped.contains(" s ago)"), "{dumped}");
    assert!(line("SIGUSR1").contains("handler 0x"), "{text}");
    assert!(line("SIGHUP").contains("ignored"), "{text}");
    assert!(line("blocked").contains("SIGUSR2"), "{text}");
    assert!(line("ITIMER_REAL").contains(" s left"), "{text}");
    assert_eq!(line("RLIMIT_NOFILE").split_whitespace().collect::<Vec<_>>(), ["RLIMIT_NOFILE", "123", "/", "456"]);
    let own = crp_compound::creds::own_status().unwrap();
    assert!(line("uids").contains(&format!("{}/{}/{}/{}", own.uids[0], own.uids[1], own.uids[2], own.uids[3])));
    assert!(line("bounding").contains(&format!("{:#x}", own.cap_bounding)), "{text}");
    assert!(!text.contains("stopped"), "not stopped:\n{text}");
}

#[test]
fn a_stopped_process_is_shown_stopped() {
    let directory = tempfile::tempdir().unwrap();
    let mut command = Command::new(&programs().dynamic);
    command.args(["sleep", "60"]);
    let mut subject = Subject::spawn_with_stderr(command, Stdio::null());
    let pid = nix::unistd::Pid::from_raw(subject.pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let status = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WUNTRACED)).unwrap();
    assert!(matches!(status, nix::sys::wait::WaitStatus::Stopped(_, nix::sys::signal::Signal::SIGSTOP)), "{status:?}");
    let image = directory.path().join("stopped.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let summary = inspect_json(&image);
    assert_matches_schema(&summary);
    assert_eq!(summary["process"]["stopped"], true);
    assert!(inspect(&image, &[]).contains("stopped (it comes back stopped)"));
}
