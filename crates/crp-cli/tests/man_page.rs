//! `crp help-man` prints crp's manual page, generated from the same clap
//! definitions as `--help` (clap_mangen); it is hidden from `--help`.

mod common;

fn man(extra: &[&str]) -> std::process::Output {
    common::crp().arg("help-man").args(extra).output().unwrap()
}

#[test]
fn the_manual_page_lists_the_commands_and_global_options() {
    let output = man(&[]);
    assert!(output.status.success(), "{}", common::stderr_of(&output));
    let page = common::stdout_of(&output);
    assert!(page.contains(".TH crp 1"), "a roff page:\n{page}");
    assert!(page.contains("Checkpoint a running Linux process"), "{page}");
    for text in
        [r"\-\-log\-file", r"\-\-verbose", r"crp\-dump(1)", r"crp\-restore(1)", r"crp\-inspect(1)", r"crp\-check(1)"]
    {
        assert!(page.contains(text), "no {text} in:\n{page}");
    }
    assert!(!page.contains("help-man") && !page.contains(r"help\-man"), "the hidden command stays hidden");
}

#[test]
fn each_command_has_its_own_page() {
    let output = man(&["restore"]);
    assert!(output.status.success(), "{}", common::stderr_of(&output));
    let page = common::stdout_of(&output);
    assert!(page.contains(".TH crp-restore 1"), "{page}");
    assert!(page.contains(r"\-\-trust\-image") && page.contains(r"\-\-pid\-must\-match"), "{page}");
    let output = man(&["nothing"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(common::stderr_of(&output).contains("no command \"nothing\""));
}

#[test]
fn help_does_not_list_the_man_page_command() {
    let output = common::crp().arg("--help").output().unwrap();
    assert!(!common::stdout_of(&output).contains("help-man"));
}
