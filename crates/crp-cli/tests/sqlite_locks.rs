//! A real program's POSIX locks across a checkpoint: `sqlite3` in the
//! middle of a write transaction (BEGIN EXCLUSIVE; INSERT), reading its
//! commands from a pipe, is dumped and restored; a second sqlite3 still
//! finds the database locked, and the first one commits.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// The sqlite3 shell (Debian package sqlite3): this test needs it.
fn sqlite3() -> &'static str {
    let found = Command::new("sqlite3").arg("-version").output().is_ok_and(|output| output.status.success());
    assert!(found, "this test runs the sqlite3 shell: apt-get install sqlite3");
    "sqlite3"
}

/// Runs one statement in a second sqlite3; its stdout and stderr.
fn second_sqlite3(database: &Path, sql: &str) -> String {
    let output = Command::new("sqlite3").arg(database).arg(sql).output().unwrap();
    format!("{}{}", stdout_of(&output), stderr_of(&output))
}

#[test]
fn sqlite3_keeps_its_write_transaction_locked_across_a_checkpoint() {
    let sqlite3 = sqlite3();
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let database = directory.path().join("test.db");
    assert_eq!(second_sqlite3(&database, "CREATE TABLE t(x);"), "");

    let mut command = Command::new(sqlite3);
    command.arg(&database).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    close_inherited_fds(&mut command);
    let mut writer = command.spawn().unwrap();
    let pid = writer.id() as i32;
    let mut input = writer.stdin.take().unwrap();
    let mut output = BufReader::new(writer.stdout.take().unwrap());
    input.write_all(b"BEGIN EXCLUSIVE;\nINSERT INTO t VALUES (42);\nSELECT 'in transaction';\n").unwrap();
    let mut line = String::new();
    output.read_line(&mut line).unwrap();
    assert_eq!(line, "in transaction\n");
    assert!(second_sqlite3(&database, "SELECT count(*) FROM t;").contains("database is locked"));

    let image = directory.path().join("sqlite3.crp");
    dump_ok(pid, &image, &[]);
    assert_killed(writer.wait().unwrap());
    // Nothing may touch the database now: with no lock held, another
    // sqlite3 would roll the (hot) journal back.

    let mut restored = restore_detached(&image);
    assert_eq!(restored.pid, pid);
    let seen = second_sqlite3(&database, "SELECT count(*) FROM t;");
    assert!(seen.contains("database is locked"), "the restored sqlite3 holds its locks: {seen:?}");

    restored.stdin.write_all(b"COMMIT;\nSELECT count(*) FROM t;\n.quit\n").unwrap();
    assert_eq!(restored.read_line(), "1\n");
    assert_eq!(wait_pid(pid), 0);
    assert_eq!(second_sqlite3(&database, "SELECT x FROM t;"), "42\n", "the transaction committed");
}
