//! `crp check` on this machine: every probe runs for real, and the features
//! crp needs are all present here.

mod common;

#[test]
fn check_reports_every_probe_and_passes_here() {
    let output = common::crp().arg("check").output().unwrap();
    let stdout = common::stdout_of(&output);
    assert!(output.status.success(), "{stdout}");
    for probe in
        ["ptrace", "process_vm_readv", "clone3 set_tid", "PR_SET_MM_MAP", "PTRACE_GET_RSEQ_CONFIGURATION", "XSAVE"]
    {
        let line = stdout.lines().find(|line| line.contains(probe)).unwrap_or_else(|| panic!("no {probe} line"));
        assert!(line.starts_with("ok "), "{line}");
    }
    assert!(stdout.lines().all(|line| ["ok ", "missing ", "absent "].iter().any(|word| line.starts_with(word))));
}
