//! crates/crp-kmod/tests/find-lab.sh looks for the kernel lab only where
//! CRP_KERNEL_LAB points or where the repository layout puts it
//! (../shared/kernel-lab beside the repository), and says so otherwise.
//! Each case runs a copy of the script inside a made-up layout.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `root/repo/crates/crp-kmod/tests/find-lab.sh`, copied from this
/// repository; returns the copy's repository folder.
fn layout(root: &Path) -> PathBuf {
    let repository = root.join("repo");
    let tests = repository.join("crates/crp-kmod/tests");
    std::fs::create_dir_all(&tests).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crp-kmod/tests/find-lab.sh");
    std::fs::copy(script, tests.join("find-lab.sh")).unwrap();
    repository
}

fn fake_lab(folder: &Path) {
    std::fs::create_dir_all(folder).unwrap();
    let boot = folder.join("boot.sh");
    std::fs::write(&boot, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&boot, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn find_lab(repository: &Path, lab_variable: Option<&Path>) -> Output {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(r#"source "$1/crates/crp-kmod/tests/find-lab.sh"; echo "lab=$lab""#)
        .arg("find-lab")
        .arg(repository)
        .env_remove("CRP_KERNEL_LAB");
    if let Some(lab) = lab_variable {
        command.env("CRP_KERNEL_LAB", lab);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_lab_beside_the_repository_is_found() {
    let root = tempfile::tempdir().unwrap();
    let repository = layout(root.path());
    fake_lab(&root.path().join("shared/kernel-lab"));
    let output = find_lab(&repository, None);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let expected = root.path().canonicalize().unwrap().join("shared/kernel-lab");
    assert_eq!(text(&output.stdout).trim(), format!("lab={}", expected.display()));
}

#[test]
fn crp_kernel_lab_is_used_when_set() {
    let root = tempfile::tempdir().unwrap();
    let repository = layout(root.path());
    fake_lab(&root.path().join("shared/kernel-lab"));
    let elsewhere = root.path().join("elsewhere");
    fake_lab(&elsewhere);
    let output = find_lab(&repository, Some(&elsewhere));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), format!("lab={}", elsewhere.canonicalize().unwrap().display()));
}

#[test]
fn a_missing_lab_is_an_error_naming_where_it_looked() {
    let root = tempfile::tempdir().unwrap();
    let repository = layout(root.path());
    let output = find_lab(&repository, None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("kernel lab not found") && stderr.contains("../shared/kernel-lab"), "{stderr}");
    assert!(stderr.contains("CRP_KERNEL_LAB"), "{stderr}");
    assert!(!text(&output.stdout).contains("lab="), "the script stopped");
}

#[test]
fn a_wrong_crp_kernel_lab_is_an_error_even_if_the_layout_has_one() {
    let root = tempfile::tempdir().unwrap();
    let repository = layout(root.path());
    fake_lab(&root.path().join("shared/kernel-lab"));
    let wrong = root.path().join("not-a-lab");
    let output = find_lab(&repository, Some(&wrong));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&format!("CRP_KERNEL_LAB={} is not a kernel lab", wrong.display())), "{stderr}");
}
