//! The attribute audit: everything the running kernel exposes of a process
//! (its /proc/PID entries, the fields of its status, the prctl and
//! arch_prctl options it accepts, probed in throwaway children) must be in
//! `crp_compound::audit`'s tables, restored, checked, refused or said to be
//! no state of its own; docs/attributes.md must be rendered from them.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crp_compound::audit::{ARCH_PRCTL_OPTIONS, PRCTL_OPTIONS, PROC_ENTRIES, STATUS_FIELDS, render};

fn missing(live: impl IntoIterator<Item = String>, listed: impl Fn(&str) -> bool) -> Vec<String> {
    live.into_iter().filter(|name| !listed(name)).collect::<BTreeSet<_>>().into_iter().collect()
}

#[test]
fn every_proc_entry_of_a_process_is_audited() {
    let live = std::fs::read_dir("/proc/self").unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap());
    let unaudited = missing(live, |name| PROC_ENTRIES.iter().any(|(listed, _)| *listed == name));
    assert!(unaudited.is_empty(), "/proc/PID entries the audit does not list: {unaudited:?}");
}

#[test]
fn every_status_field_is_audited() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let live = status.lines().filter_map(|line| Some(line.split_once(':')?.0.to_owned()));
    let unaudited = missing(live, |name| STATUS_FIELDS.iter().any(|(listed, _)| *listed == name));
    assert!(unaudited.is_empty(), "/proc/PID/status fields the audit does not list: {unaudited:?}");
}

/// What `call` returns in a throwaway child: the result, or minus errno.
fn in_a_child(call: impl Fn() -> i64) -> i64 {
    let mut ends = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `ends`.
    assert_eq!(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child makes only raw calls (the probe, write, _exit): no
    // lock of the parent's other threads is taken.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let result = call();
        let answer =
            if result < 0 { -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { result };
        // SAFETY: writes 8 bytes from `answer`, then ends the child at once.
        unsafe {
            libc::write(ends[1], (&raw const answer).cast(), 8);
            libc::_exit(0);
        }
    }
    // SAFETY: closes the parent's copy of the write end, which it owns.
    unsafe { libc::close(ends[1]) };
    let mut answer = [0u8; 8];
    // SAFETY: reads at most 8 bytes into `answer`.
    let read = unsafe { libc::read(ends[0], answer.as_mut_ptr().cast(), 8) };
    let mut status = 0;
    // SAFETY: reaps the child forked above; closes the read end.
    unsafe {
        libc::waitpid(child, &raw mut status, 0);
        libc::close(ends[0]);
    }
    // A probe that killed its child (no answer) shows the option exists.
    if read == 8 { i64::from_ne_bytes(answer) } else { 0 }
}

/// The options `probe` accepts among `candidates`: anything but EINVAL
/// (which the kernel gives for an option it does not know, and for some it
/// knows whose arguments are 0: those the tables list all the same).
fn accepted(candidates: impl Iterator<Item = u64>, probe: impl Fn(u64) -> i64) -> Vec<u64> {
    candidates.filter(|option| in_a_child(|| probe(*option)) != -i64::from(libc::EINVAL)).collect()
}

#[test]
fn every_prctl_option_the_kernel_accepts_is_audited() {
    let magic = [0x4155_5856, 0x5356_4d41, 0x5961_6d61];
    let live = accepted((1..=128).chain(magic), |option| {
        // SAFETY: prctl with zero arguments, in a child that exits right after.
        unsafe { libc::prctl(i32::try_from(option).unwrap_or(-1), 0, 0, 0, 0) }.into()
    });
    let unaudited: Vec<u64> =
        live.into_iter().filter(|option| !PRCTL_OPTIONS.iter().any(|(listed, ..)| listed == option)).collect();
    assert!(unaudited.is_empty(), "prctl options the kernel accepts and the audit does not list: {unaudited:?}");
}

#[test]
fn every_arch_prctl_code_the_kernel_accepts_is_audited() {
    // Setting the fs or gs base to 0 would take the child's TLS away before it answers.
    let candidates = [0x1000..=0x1040, 0x2000..=0x2010, 0x3000..=0x3010, 0x4000..=0x4010, 0x5000..=0x5010]
        .into_iter()
        .flatten()
        .filter(|code| ![0x1001, 0x1002].contains(code));
    // SAFETY: arch_prctl with a zero argument, in a child that exits right after.
    let live = accepted(candidates, |code| unsafe { libc::syscall(libc::SYS_arch_prctl, code, 0) });
    let unaudited: Vec<String> = live
        .into_iter()
        .filter(|code| !ARCH_PRCTL_OPTIONS.iter().any(|(listed, ..)| listed == code))
        .map(|code| format!("{code:#x}"))
        .collect();
    assert!(unaudited.is_empty(), "arch_prctl codes the kernel accepts and the audit does not list: {unaudited:?}");
}

#[test]
fn docs_attributes_md_is_rendered_from_the_tables() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/attributes.md");
    if std::env::var_os("CRP_REGENERATE_ATTRIBUTES").is_some() {
        std::fs::write(&path, render()).unwrap();
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == render(),
        "docs/attributes.md is stale: CRP_REGENERATE_ATTRIBUTES=1 cargo test -p crp-compound --test attribute_audit"
    );
}
