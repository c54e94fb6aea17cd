//! How a dump stores pages: zero pages of private anonymous memory are left
//! out (they read as zero after the restore anyway) while zeros written over
//! a file's data are stored, and `--no-sync` images restore like durable
//! ones. The subject checks every byte of its memory after the restore.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Pages of the subject's anonymous mapping that hold data (i % 4 == 0 or 3).
const ANON_DATA_PAGES: u64 = 32;
/// Pages of its file mapping it wrote: zeros over page 1, 'g's over page 2.
const FILE_WRITTEN_PAGES: u64 = 2;

/// Starts tests/programs/zero_pages.c and returns it with the addresses of
/// its anonymous and its file mapping.
fn zero_pages_subject(directory: &Path) -> (Subject, u64, u64) {
    let file = directory.join("file.bin");
    std::fs::write(&file, vec![b'f'; 4 * 4096]).unwrap();
    let mut command = Command::new(c_program("zero_pages"));
    command.arg(&file);
    let mut subject = Subject::spawn(command);
    let line = subject.read_line();
    let words: Vec<&str> = line.split_whitespace().collect();
    let address = |text: &str| u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap();
    assert!(words.len() == 4 && words[0] == "ANON" && words[2] == "FILE", "{line:?}");
    (subject, address(words[1]), address(words[3]))
}

/// Pages the image stores in `[start, start + pages)` (the mapping's VMA
/// may have merged with a neighbour of the C library's).
fn pages_stored_in(image: &Path, start: u64, pages: u64) -> u64 {
    let end = start + pages * 4096;
    let reader = crp_image::ImageReader::open(image).unwrap();
    let overlap = |run: &crp_image::PageRunEntry| run.vaddr_end().min(end).saturating_sub(run.vaddr.max(start));
    reader.page_runs().iter().map(overlap).sum::<u64>() / 4096
}

/// Dumps the subject with `dump_arguments`, checks what the image stores,
/// restores it and expects the subject's OK.
fn round_trip(dump_arguments: &[&str]) -> String {
    let directory = tempfile::tempdir().unwrap();
    let (mut subject, anon, file) = zero_pages_subject(directory.path());
    let image = directory.path().join("zero-pages.crp");
    let output = dump(subject.pid, &image, dump_arguments);
    assert!(output.status.success(), "dump failed: {}", stderr_of(&output));
    assert_killed(subject.wait());
    assert_eq!(pages_stored_in(&image, anon, 64), ANON_DATA_PAGES, "zero anonymous pages are left out");
    assert_eq!(pages_stored_in(&image, file, 4), FILE_WRITTEN_PAGES, "zeros written over the file are stored");
    let restored = restore(&image, &[], "go\n");
    assert!(restored.status.success(), "{}{}", stdout_of(&restored), stderr_of(&restored));
    assert_eq!(stdout_of(&restored), format!("OK pid={} zero_pages\n", subject.pid), "{}", stderr_of(&restored));
    stderr_of(&output)
}

#[test]
fn zero_pages_of_anonymous_memory_are_left_out_and_zeros_over_a_file_are_kept() {
    let stderr = round_trip(&[]);
    // 32 zero pages of the mapping, and whatever the C library's own
    // anonymous memory holds.
    assert!(stderr.contains("MiB of zero pages left out"), "{stderr}");
}

#[test]
fn a_dump_left_in_the_page_cache_restores() {
    round_trip(&["--no-sync"]);
}
