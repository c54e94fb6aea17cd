//! File locks: POSIX record locks (a write and a read range), an flock,
//! OFD locks and a lease are taken again at restore, so another process
//! trying to take one is refused and the restored process still has its
//! lease; between the dump and the restore nobody holds them; a lock
//! someone else took meanwhile fails the restore, naming the file and the
//! range, and leaves no process behind.

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use common::*;

fn locks_subject(directory: &Path) -> Subject {
    let mut command = Command::new(c_program("file_locks"));
    command.arg(directory);
    Subject::spawn(command)
}

fn open(directory: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(directory.join(name)).unwrap()
}

/// The lock another process would conflict with when asking for `kind`
/// over `start..start+length` (F_GETLK or F_OFD_GETLK): its type and pid.
fn conflicting(file: &std::fs::File, command: i32, kind: i32, start: i64, length: i64) -> (i32, i32) {
    // SAFETY: flock is plain data; fcntl fills it in.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = i16::try_from(kind).unwrap();
    lock.l_whence = i16::try_from(libc::SEEK_SET).unwrap();
    lock.l_start = start;
    lock.l_len = length;
    // SAFETY: `lock` is a valid struct flock for the duration of the call.
    assert_eq!(unsafe { libc::fcntl(file.as_raw_fd(), command, &mut lock) }, 0);
    (i32::from(lock.l_type), lock.l_pid)
}

fn flock_refused(file: &std::fs::File) -> bool {
    // SAFETY: flock on a descriptor this test owns.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    result != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

#[test]
fn file_locks_are_held_again_after_a_restore() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let mut subject = locks_subject(directory.path());
    let (posix, flock, ofd) =
        (open(directory.path(), "posix"), open(directory.path(), "flock"), open(directory.path(), "ofd"));
    assert_eq!(conflicting(&posix, libc::F_GETLK, libc::F_WRLCK, 10, 5), (libc::F_WRLCK, subject.pid));
    let image = directory.path().join("locks.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());

    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    for expected in [
        "file locks (6; taken again at restore, held by nobody in between)",
        "fd 3   POSIX write lock, bytes 10-14 on",
        "fd 3   POSIX read lock, bytes 100 to the end on",
        "fd 4   flock write lock, the whole file on",
        "fd 5   OFD read lock, bytes 0-99 on",
        "fd 5   OFD write lock, bytes 200-299 on",
        "fd 6   read lease, the whole file on",
    ] {
        assert!(inspected.contains(expected), "{expected:?} not in\n{inspected}");
    }
    // Between the dump and the restore nothing holds them.
    assert_eq!(conflicting(&posix, libc::F_GETLK, libc::F_WRLCK, 0, 0).0, libc::F_UNLCK);
    assert_eq!(conflicting(&ofd, libc::F_OFD_GETLK, libc::F_WRLCK, 0, 0).0, libc::F_UNLCK);

    let mut restored = restore_detached(&image);
    let pid = restored.pid;
    assert_eq!(conflicting(&posix, libc::F_GETLK, libc::F_WRLCK, 10, 5), (libc::F_WRLCK, pid));
    assert_eq!(conflicting(&posix, libc::F_GETLK, libc::F_WRLCK, 150, 1), (libc::F_RDLCK, pid));
    assert_eq!(conflicting(&posix, libc::F_GETLK, libc::F_RDLCK, 100, 1).0, libc::F_UNLCK, "a read range is shared");
    assert_eq!(conflicting(&posix, libc::F_GETLK, libc::F_WRLCK, 20, 10).0, libc::F_UNLCK, "between the ranges");
    assert!(flock_refused(&flock), "the flock is held again");
    assert_eq!(conflicting(&ofd, libc::F_OFD_GETLK, libc::F_WRLCK, 50, 1), (libc::F_RDLCK, -1));
    assert_eq!(conflicting(&ofd, libc::F_OFD_GETLK, libc::F_RDLCK, 250, 1), (libc::F_WRLCK, -1));
    assert_eq!(conflicting(&ofd, libc::F_OFD_GETLK, libc::F_WRLCK, 120, 50).0, libc::F_UNLCK);

    use std::io::Write;
    restored.stdin.write_all(b"go\n").unwrap();
    assert_eq!(restored.read_line(), format!("OK pid={pid} file locks restored\n"));
    assert_eq!(wait_pid(pid), 0);
    // Gone with the process.
    assert_eq!(conflicting(&posix, libc::F_GETLK, libc::F_WRLCK, 0, 0).0, libc::F_UNLCK);
}

#[test]
fn a_lock_taken_by_another_process_meanwhile_fails_the_restore_and_leaves_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = locks_subject(directory.path());
    let image = directory.path().join("locks.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());

    // This process takes bytes 12-13 of the POSIX file for itself.
    let posix = open(directory.path(), "posix");
    // SAFETY: flock is plain data; F_SETLK reads it.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = i16::try_from(libc::F_WRLCK).unwrap();
    lock.l_whence = i16::try_from(libc::SEEK_SET).unwrap();
    lock.l_start = 12;
    lock.l_len = 2;
    // SAFETY: `lock` is a valid struct flock.
    assert_eq!(unsafe { libc::fcntl(posix.as_raw_fd(), libc::F_SETLK, &lock) }, 0);

    let output = restore(&image, &[], "");
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    let path = directory.path().join("posix");
    assert!(
        stderr.contains(&format!("cannot take the POSIX write lock on {} (fd 3), bytes 10-14, again", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("another process holds a conflicting lock"), "{stderr}");
    assert!(!process_exists(subject.pid), "no restored process is left");
}
