//! `crp check` on this machine: every probe runs for real, says which part
//! of crp needs it, and the features crp needs are all present here.

mod common;

const REQUIRED: [&str; 7] = [
    "ptrace",
    "process_vm_readv",
    "clone3 set_tid",
    "PR_SET_MM_MAP",
    "PTRACE_GET_RSEQ_CONFIGURATION",
    "vDSO layout",
    "XSAVE",
];

#[test]
fn check_reports_every_probe_and_passes_here() {
    let output = common::crp().arg("check").output().unwrap();
    let stdout = common::stdout_of(&output);
    assert!(output.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len() % 2, 0, "a verdict line and a needed-for line per probe:\n{stdout}");
    for pair in lines.chunks(2) {
        assert!(["ok ", "missing ", "absent "].iter().any(|word| pair[0].starts_with(word)), "{}", pair[0]);
        let needed = pair[1].trim_start();
        assert!(pair[1].starts_with(' ') && needed.starts_with("needed for: "), "{}", pair[1]);
        assert!(needed.len() > "needed for: ".len() + 10, "says what needs it: {}", pair[1]);
    }
    for probe in REQUIRED {
        let line = stdout.lines().find(|line| line.contains(probe)).unwrap_or_else(|| panic!("no {probe} line"));
        assert!(line.starts_with("ok "), "{line}");
    }
}

/// crp check has no probe for lazy restore or incremental dumps: it must not
/// speak of them as if it did.
#[test]
fn check_mentions_no_feature_crp_lacks() {
    let output = common::crp().arg("check").output().unwrap();
    let stdout = common::stdout_of(&output).to_lowercase();
    for absent in ["lazy", "incremental", "userfaultfd", "soft-dirty"] {
        assert!(!stdout.contains(absent), "mentions {absent}:\n{stdout}");
    }
}

#[test]
fn check_json_is_an_array_of_probes() {
    let output = common::crp().args(["check", "--json"]).output().unwrap();
    assert!(output.status.success(), "{}", common::stderr_of(&output));
    let probes: serde_json::Value = serde_json::from_slice(&output.stdout).expect("check --json prints JSON");
    let probes = probes.as_array().expect("an array");
    assert!(probes.len() >= REQUIRED.len());
    for probe in probes {
        let object = probe.as_object().expect("each probe is an object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["detail", "name", "needed_for", "ok", "required"], "{probe}");
        assert!(probe["required"].is_boolean() && probe["ok"].is_boolean(), "{probe}");
        assert!(!probe["needed_for"].as_str().unwrap().is_empty(), "{probe}");
        assert!(!probe["detail"].as_str().unwrap().is_empty(), "{probe}");
    }
    for name in REQUIRED {
        let probe = probes.iter().find(|probe| probe["name"] == name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(probe["required"], true, "{probe}");
        assert_eq!(probe["ok"], true, "{probe}");
    }
    let kmod = probes.iter().find(|probe| probe["name"].as_str().unwrap().contains("/dev/crp")).expect("kmod probe");
    assert_eq!(kmod["required"], false);
    assert_eq!(kmod["ok"], std::path::Path::new("/dev/crp").exists(), "{kmod}");
}

#[test]
fn check_help_says_it_checks_the_machine_and_where_a_processs_blockers_are() {
    let output = common::crp().args(["check", "--help"]).output().unwrap();
    let help = common::stdout_of(&output);
    assert!(help.contains("not a process"), "{help}");
    assert!(help.contains("crp dump --check PID"), "{help}");
}
