//! How an image comes into existence: invisible until complete, nothing
//! left behind by a dump that dies (even by SIGKILL), no name that a stale
//! or planted file could block, and only regular files as images.

mod common;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{sample, write_named_image};
use crp_image::{ImageError, ImageReader, ImageWriter};

/// Set in the child process of [`a_killed_writer_leaves_nothing_behind`]:
/// the directory it writes its image in.
const CHILD_DIRECTORY: &str = "CRP_IMAGE_TEST_KILLED_WRITER_DIRECTORY";
/// What the child prints once its image is half written.
const CHILD_READY: &str = "crp-image-writer-ready";

fn entries(dir: &Path) -> Vec<OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    names.sort();
    names
}

/// Not a test of its own: the child half of
/// [`a_killed_writer_leaves_nothing_behind`], which runs this test binary
/// again with only this test and [`CHILD_DIRECTORY`] set.
#[test]
fn killed_writer_child() {
    let Some(directory) = std::env::var_os(CHILD_DIRECTORY) else {
        return;
    };
    let mut writer = ImageWriter::create(&Path::new(&directory).join("killed.crp")).unwrap();
    writer
        .add_page_run(0x10000, 300, |_, buffer| {
            buffer.fill(0x5a);
            Ok(())
        })
        .unwrap();
    println!("{CHILD_READY}");
    std::io::stdout().flush().unwrap();
    // Killed while waiting here; stdin only ends if the parent is gone.
    let _ = std::io::stdin().read(&mut [0u8; 1]);
}

#[test]
fn a_killed_writer_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["killed_writer_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIRECTORY, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(CHILD_READY) {
        line.clear();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "the child ended before writing its image");
    }
    // Half written: nothing is visible yet.
    assert_eq!(entries(dir.path()), Vec::<OsString>::new());
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(entries(dir.path()), Vec::<OsString>::new(), "the killed writer left something behind");
    // And the next dump to the same name works.
    let path = write_named_image(dir.path(), "killed.crp", &[(0x1000, 1, 0)], &sample());
    ImageReader::open(&path).unwrap();
    assert_eq!(entries(dir.path()), [OsString::from("killed.crp")]);
}

#[test]
fn a_dropped_writer_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = ImageWriter::create(&dir.path().join("dropped.crp")).unwrap();
    writer
        .add_page_run(0x1000, 2, |_, buffer| {
            buffer.fill(1);
            Ok(())
        })
        .unwrap();
    drop(writer);
    assert_eq!(entries(dir.path()), Vec::<OsString>::new());
}

#[test]
fn planted_files_do_not_block_a_dump() {
    let dir = tempfile::tempdir().unwrap();
    // The old predictable temporary name, as a file, a FIFO and a directory,
    // and names like the ones the writer picks now.
    let pid = std::process::id();
    std::fs::write(dir.path().join(format!(".sample.crp.tmp-{pid}")), b"planted").unwrap();
    nix::unistd::mkfifo(&dir.path().join(".fifo.crp.tmp-1"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::create_dir(dir.path().join(format!(".dir.crp.tmp-{pid}"))).unwrap();
    for index in 0..16 {
        std::fs::write(dir.path().join(format!(".crp-{index:016x}.tmp")), b"planted").unwrap();
    }
    let before = entries(dir.path());
    let path = write_named_image(dir.path(), "sample.crp", &[(0x1000, 1, 0)], &sample());
    ImageReader::open(&path).unwrap();
    let mut expected = before;
    expected.push(OsString::from("sample.crp"));
    expected.sort();
    assert_eq!(entries(dir.path()), expected);
    assert_eq!(std::fs::read(dir.path().join(format!(".sample.crp.tmp-{pid}"))).unwrap(), b"planted");
}

#[test]
fn an_existing_image_is_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_named_image(dir.path(), "a.crp", &[(0x1000, 1, 1)], &sample());
    let old = std::fs::read(&first).unwrap();
    let second = write_named_image(dir.path(), "a.crp", &[(0x1000, 3, 2)], &sample());
    assert_eq!(first, second);
    assert_ne!(std::fs::read(&second).unwrap(), old);
    assert_eq!(ImageReader::open(&second).unwrap().page_runs()[0].page_count, 3);
    assert_eq!(entries(dir.path()), [OsString::from("a.crp")]);
}

#[test]
fn a_directory_or_fifo_output_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let subdirectory = dir.path().join("out.crp");
    std::fs::create_dir(&subdirectory).unwrap();
    let error = ImageWriter::create(&subdirectory).unwrap_err();
    assert!(matches!(error, ImageError::OutputNotRegularFile { kind: "a directory", .. }), "{error:?}");
    assert!(error.to_string().contains("it is a directory"), "{error}");
    let fifo = dir.path().join("fifo.crp");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let error = ImageWriter::create(&fifo).unwrap_err();
    assert!(matches!(error, ImageError::OutputNotRegularFile { kind: "a FIFO", .. }), "{error:?}");
    assert_eq!(entries(dir.path()), [OsString::from("fifo.crp"), OsString::from("out.crp")]);
    assert!(entries(&subdirectory).is_empty());
}

#[test]
fn a_fifo_or_directory_is_not_read_as_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.crp");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Would block forever if the reader opened it like a file.
    let error = ImageReader::open(&fifo).unwrap_err();
    assert!(matches!(error, ImageError::NotRegularFile { kind: "a FIFO", .. }), "{error:?}");
    assert!(error.to_string().contains("is a FIFO"), "{error}");
    let error = ImageReader::open(dir.path()).unwrap_err();
    assert!(matches!(error, ImageError::NotRegularFile { kind: "a directory", .. }), "{error:?}");
    assert!(error.to_string().contains("is a directory"), "{error}");
    let error = ImageReader::open(Path::new("/dev/zero")).unwrap_err();
    assert!(matches!(error, ImageError::NotRegularFile { kind: "a character device", .. }), "{error:?}");
}

#[test]
fn a_symbolic_link_to_an_image_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_named_image(dir.path(), "a.crp", &[(0x1000, 1, 1)], &sample());
    let link = dir.path().join("link.crp");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    ImageReader::open(&link).unwrap();
}
