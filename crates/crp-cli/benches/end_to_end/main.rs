//! The end-to-end benchmark: crp against CRIU 4.1 (../shared/peers/criu.sh)
//! in one run on one machine, alternating, several rounds, medians.
//!
//! Subjects: processes holding N MiB of dirty anonymous memory (hog.c, no
//! zero page) for each size of CRP_BENCH_MIB (default 1024,4096), and
//! python3 holding a dict of CRP_BENCH_PYTHON_MIB MiB of strings (heap.py,
//! default 1024; 0 for none). For each, CRP_BENCH_ROUNDS rounds (default
//! 3), crp and CRIU in alternating order, each from a fresh subject and an
//! empty page cache:
//!
//! - dump into the page cache: `crp dump --no-sync` vs plain `criu dump`;
//! - durable dump: `crp dump` (fsyncs) vs `criu dump` then `sync` of its
//!   files and folder;
//! - restore until the process runs (`--detach`, `-d`; both are eager: all
//!   memory is in place by then), from the cached image;
//! - `dd` of the image's bytes with and without `conv=fsync`;
//!
//! then memcpy and the fill rate of fresh anonymous memory as physical
//! limits, and crp's peak memory in an untimed run (see memory.rs). It
//! prints a table with the ratios and writes everything as JSON to
//! CRP_BENCH_JSON (default CRP_BENCH_DIR/end_to_end.json). Images go to
//! CRP_BENCH_DIR (default $TMPDIR/crp-bench); CRP_BENCH_CRIU=0 skips CRIU.
//!
//! Run it with `bash scripts/bench.sh` (as root), or
//! `cargo bench -p crp-cli --bench end_to_end`.

mod memory;
mod references;
mod report;
mod subjects;
mod tools;

use std::path::{Path, PathBuf};

use report::{Measured, SubjectResult, ToolResult};
use subjects::{Kind, Programs, Subject, kill_and_reap, reap};
use tools::{Criu, bytes_in, drop_caches, run, sync_all};

/// The settings of one run, from the environment.
struct Settings {
    subjects: Vec<Subject>,
    rounds: usize,
    directory: PathBuf,
    json: PathBuf,
    criu: Option<Criu>,
}

fn environment_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_environment() -> Settings {
        let sizes = std::env::var("CRP_BENCH_MIB").unwrap_or_else(|_| "1024,4096".into());
        let mut subjects: Vec<Subject> = sizes
            .split(',')
            .filter(|size| !size.trim().is_empty())
            .map(|size| Subject {
                kind: Kind::Anonymous,
                mib: size.trim().parse().unwrap_or_else(|_| panic!("CRP_BENCH_MIB: {size:?} is not a size in MiB")),
            })
            .collect();
        let python = environment_number("CRP_BENCH_PYTHON_MIB", 1024);
        if python > 0 {
            subjects.push(Subject { kind: Kind::Python, mib: python });
        }
        let rounds = usize::try_from(environment_number("CRP_BENCH_ROUNDS", 3)).unwrap_or(3).max(1);
        let directory = std::env::var_os("CRP_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("crp-bench"));
        let json =
            std::env::var_os("CRP_BENCH_JSON").map(PathBuf::from).unwrap_or_else(|| directory.join("end_to_end.json"));
        let criu = if std::env::var("CRP_BENCH_CRIU").as_deref() == Ok("0") { None } else { Criu::find() };
        Settings { subjects, rounds, directory, json, criu }
    }
}

/// One round of crp on `subject`: page-cache dump and restore, durable dump.
fn crp_round(programs: &Programs, subject: &Subject, directory: &Path, result: &mut ToolResult) -> Result<(), String> {
    let image = directory.join("subject.crp");
    let _ = std::fs::remove_file(&image);

    let pid = programs.start(subject, directory);
    drop_caches();
    let dumped = run(&mut tools::crp_dump_command(pid, &image, false));
    reap(pid);
    result.dump_page_cache.push(dumped?.0);
    result.image_bytes = bytes_in(&image);
    sync_all();
    let (restore, output) = run(&mut tools::crp_restore_command(&image))?;
    kill_and_reap(tools::restored_pid(&output.stdout)?);
    result.restore.push(restore);
    let _ = std::fs::remove_file(&image);

    let pid = programs.start(subject, directory);
    drop_caches();
    let dumped = run(&mut tools::crp_dump_command(pid, &image, true));
    reap(pid);
    result.dump_durable.push(dumped?.0);
    let _ = std::fs::remove_file(&image);
    Ok(())
}

/// One round of CRIU on `subject`, the same steps as [`crp_round`].
fn criu_round(
    criu: &Criu,
    programs: &Programs,
    subject: &Subject,
    directory: &Path,
    result: &mut ToolResult,
) -> Result<(), String> {
    let images = directory.join("criu-images");
    let fresh = || {
        let _ = std::fs::remove_dir_all(&images);
        std::fs::create_dir_all(&images).map_err(|error| error.to_string())
    };

    fresh()?;
    let pid = programs.start(subject, directory);
    drop_caches();
    let dumped = criu.dump(pid, &images);
    reap(pid);
    result.dump_page_cache.push(dumped?);
    result.image_bytes = bytes_in(&images);
    sync_all();
    let (restore, restored) = criu.restore(&images)?;
    kill_and_reap(restored);
    result.restore.push(restore);

    fresh()?;
    let pid = programs.start(subject, directory);
    drop_caches();
    let dumped = criu.dump(pid, &images);
    reap(pid);
    let dump = dumped?;
    result.dump_durable.push(dump + tools::sync_directory(&images)?);
    let _ = std::fs::remove_dir_all(&images);
    Ok(())
}

/// crp's peak memory while dumping (into the page cache) and restoring
/// `subject`, in a run of its own.
fn crp_peaks(programs: &Programs, subject: &Subject, directory: &Path) -> Result<(memory::Peak, memory::Peak), String> {
    let image = directory.join("subject.crp");
    let pid = programs.start(subject, directory);
    let dumped = memory::sampled(&mut tools::crp_dump_command(pid, &image, false));
    reap(pid);
    let (_, dump) = dumped?;
    sync_all();
    let (stdout, restore) = memory::sampled(&mut tools::crp_restore_command(&image))?;
    kill_and_reap(tools::restored_pid(&stdout)?);
    let _ = std::fs::remove_file(&image);
    Ok((dump, restore))
}

fn bench_subject(settings: &Settings, programs: &Programs, subject: &Subject) -> SubjectResult {
    let directory = &settings.directory;
    let mut crp = ToolResult::default();
    let mut criu = settings.criu.as_ref().map(|_| ToolResult::default());
    let mut dd_page_cache = Vec::new();
    let mut dd_fsync = Vec::new();
    let mut failures = Vec::new();
    for round in 0..settings.rounds {
        eprintln!("bench: {} round {}/{}", subject.name(), round + 1, settings.rounds);
        // Alternate who goes first, so that neither always runs on a
        // machine the other just warmed or loaded.
        let crp_first = round % 2 == 0;
        for turn in 0..2 {
            if (turn == 0) == crp_first {
                if let Err(error) = crp_round(programs, subject, directory, &mut crp) {
                    failures.push(format!("crp: {error}"));
                }
            } else if let (Some(tool), Some(result)) = (settings.criu.as_ref(), criu.as_mut())
                && let Err(error) = criu_round(tool, programs, subject, directory, result)
            {
                failures.push(format!("CRIU: {error}"));
            }
        }
        let bytes = crp.image_bytes.max(subject.mib << 20);
        for (durable, samples) in [(false, &mut dd_page_cache), (true, &mut dd_fsync)] {
            match references::dd(directory, bytes, durable) {
                Ok(time) => samples.push(time),
                Err(error) => failures.push(format!("dd: {error}")),
            }
        }
    }
    for failure in &failures {
        eprintln!("bench: {} failed: {failure}", subject.name());
    }
    let peaks = crp_peaks(programs, subject, directory).map_err(|error| eprintln!("bench: peak memory: {error}")).ok();
    SubjectResult {
        subject: *subject,
        crp,
        criu,
        dd_page_cache: Measured::of(&dd_page_cache),
        dd_fsync: Measured::of(&dd_fsync),
        peaks,
        failures,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // then this run only proves the benchmark builds.
    if !std::env::args().any(|argument| argument == "--bench") {
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let settings = Settings::from_environment();
    std::fs::create_dir_all(&settings.directory).unwrap();
    let programs = Programs::build(&settings.directory);
    let criu_version = settings.criu.as_ref().map(|criu| criu.version().unwrap_or_else(|error| error));
    eprintln!("bench: images in {}, {} rounds", settings.directory.display(), settings.rounds);
    let largest = settings.subjects.iter().map(|subject| subject.mib).max().unwrap_or(64).clamp(64, 1024);
    let limits = report::Limits {
        memcpy_bytes_per_second: references::memcpy_rate(256 << 20),
        fresh_fill_bytes_per_second: references::fresh_fill_rate(usize::try_from(largest << 20).unwrap_or(1 << 30)),
        fill_sample_bytes: largest << 20,
    };
    let results: Vec<SubjectResult> =
        settings.subjects.iter().map(|subject| bench_subject(&settings, &programs, subject)).collect();
    print!("{}", report::table(&results, &limits, settings.rounds, criu_version.as_deref()));
    let json = report::json(&results, &limits, settings.rounds, criu_version.as_deref());
    match std::fs::write(&settings.json, serde_json::to_string_pretty(&json).unwrap() + "\n") {
        Ok(()) => println!("JSON: {}", settings.json.display()),
        Err(error) => eprintln!("bench: cannot write {}: {error}", settings.json.display()),
    }
}
