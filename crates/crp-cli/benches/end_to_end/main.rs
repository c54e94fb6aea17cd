//! The end-to-end benchmark: crp against CRIU 4.1 (../shared/peers/criu.sh)
//! in one run on one machine, alternating, several rounds, medians and
//! spreads.
//!
//! Subjects: processes holding N MiB of dirty anonymous memory (hog.c, no
//! zero page) for each size of CRP_BENCH_MIB (default 1024,4096), and
//! python3 holding a dict of CRP_BENCH_PYTHON_MIB MiB of strings (heap.py,
//! default 1024; 0 for none). An uncounted warm-up of both tools on a small
//! subject comes first. Then for each subject, CRP_BENCH_ROUNDS rounds
//! (default 5; CRP_BENCH_LARGE_ROUNDS, default 3, for subjects over 2 GiB,
//! which keeps a full run near 15 minutes); in each, every step is taken by crp and CRIU in turn, who
//! goes first alternating from round to round, each dump from a fresh
//! subject:
//!
//! - dump into the page cache: `crp dump --no-sync` vs plain `criu dump`,
//!   then restore until the process runs (`--detach`, `-d`; both are
//!   eager: all memory is in place by then) from the cached image;
//! - durable dump: `crp dump` (fsyncs) vs `criu dump` then `sync` of its
//!   files and folder;
//! - the references on the image's bytes: `dd` into the page cache, with
//!   `conv=fsync` and with `oflag=direct conv=fsync`, and writing fresh
//!   anonymous memory of that size (the page-fault-bound fill rate).
//!
//! Before every timed step the machine is prepared the same way (see
//! tools::prepare): dirty pages written back, and as much memory as the
//! step needs faulted in and freed, never the page cache dropped. memcpy is
//! measured once; crp's peak memory in an untimed run (see memory.rs). It
//! prints a table with the ratios and writes everything as JSON to
//! CRP_BENCH_JSON (default CRP_BENCH_DIR/end_to_end.json). Images go to
//! CRP_BENCH_DIR (default $TMPDIR/crp-bench); CRP_BENCH_CRIU=0 skips CRIU.
//!
//! Run it with `bash scripts/bench.sh` (as root; `--quick` for a short
//! check of the harness), or `cargo bench -p crp-cli --bench end_to_end`.

mod memory;
mod references;
mod report;
mod subjects;
mod tools;

use std::path::{Path, PathBuf};

use references::DdMode;
use report::{References, SubjectResult, ToolResult};
use subjects::{Kind, Programs, Subject, kill_and_reap, reap};
use tools::{Criu, Timed, bytes_in, prepare, run, sync_all};

/// Subjects larger than this take [`Settings::large_rounds`] rounds.
const LARGE_MIB: u64 = 2048;

/// The settings of one run, from the environment.
struct Settings {
    subjects: Vec<Subject>,
    rounds: usize,
    /// Rounds for subjects over [`LARGE_MIB`].
    large_rounds: usize,
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
        let rounds = usize::try_from(environment_number("CRP_BENCH_ROUNDS", 5)).unwrap_or(5).max(1);
        let large_rounds =
            usize::try_from(environment_number("CRP_BENCH_LARGE_ROUNDS", 3)).unwrap_or(3).clamp(1, rounds);
        let directory = std::env::var_os("CRP_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("crp-bench"));
        let json =
            std::env::var_os("CRP_BENCH_JSON").map(PathBuf::from).unwrap_or_else(|| directory.join("end_to_end.json"));
        let criu = if std::env::var("CRP_BENCH_CRIU").as_deref() == Ok("0") { None } else { Criu::find() };
        Settings { subjects, rounds, large_rounds, directory, json, criu }
    }
}

/// Who takes a step.
#[derive(Clone, Copy)]
enum Tool<'a> {
    Crp,
    Criu(&'a Criu),
}

impl Tool<'_> {
    fn name(&self) -> &'static str {
        match self {
            Tool::Crp => "crp",
            Tool::Criu(_) => "CRIU",
        }
    }
}

/// What a step needs: the subjects' programs, where images go, and about
/// how many bytes the step will write or fault in.
struct Stage<'a> {
    programs: &'a Programs,
    subject: &'a Subject,
    directory: &'a Path,
    bytes: u64,
}

impl Stage<'_> {
    fn crp_image(&self) -> PathBuf {
        self.directory.join("subject.crp")
    }

    fn criu_images(&self) -> Result<PathBuf, String> {
        let images = self.directory.join("criu-images");
        let _ = std::fs::remove_dir_all(&images);
        std::fs::create_dir_all(&images).map_err(|error| error.to_string())?;
        Ok(images)
    }

    /// A fresh subject, and the machine prepared for the dump.
    fn subject(&self) -> i32 {
        let pid = self.programs.start(self.subject, self.directory);
        prepare(self.bytes);
        pid
    }

    /// Dump into the page cache, then restore from the cached image: the
    /// times of both and the image's size.
    fn page_cache(&self, tool: Tool) -> Result<(Timed, Timed, u64), String> {
        match tool {
            Tool::Crp => {
                let image = self.crp_image();
                let _ = std::fs::remove_file(&image);
                let pid = self.subject();
                let dumped = run(&mut tools::crp_dump_command(pid, &image, false));
                reap(pid);
                let dump = dumped?.0;
                let bytes = bytes_in(&image);
                prepare(self.bytes);
                let restored = run(&mut tools::crp_restore_command(&image));
                let _ = std::fs::remove_file(&image);
                let (restore, output) = restored?;
                kill_and_reap(tools::restored_pid(&output.stdout)?);
                Ok((dump, restore, bytes))
            }
            Tool::Criu(criu) => {
                let images = self.criu_images()?;
                let pid = self.subject();
                let dumped = criu.dump(pid, &images);
                reap(pid);
                let dump = dumped?;
                let bytes = bytes_in(&images);
                prepare(self.bytes);
                let restored = criu.restore(&images);
                let _ = std::fs::remove_dir_all(&images);
                let (restore, pid) = restored?;
                kill_and_reap(pid);
                Ok((dump, restore, bytes))
            }
        }
    }

    /// A durable dump (CRIU's followed by a sync of its files).
    fn durable(&self, tool: Tool) -> Result<Timed, String> {
        match tool {
            Tool::Crp => {
                let image = self.crp_image();
                let _ = std::fs::remove_file(&image);
                let pid = self.subject();
                let dumped = run(&mut tools::crp_dump_command(pid, &image, true));
                reap(pid);
                let _ = std::fs::remove_file(&image);
                Ok(dumped?.0)
            }
            Tool::Criu(criu) => {
                let images = self.criu_images()?;
                let pid = self.subject();
                let dumped = criu.dump(pid, &images);
                reap(pid);
                let durable = dumped.and_then(|dump| Ok(dump + tools::sync_directory(&images)?));
                let _ = std::fs::remove_dir_all(&images);
                durable
            }
        }
    }

    /// The references on this stage's bytes, starting with the `rotation`th.
    fn references(&self, rotation: usize, references: &mut References, failures: &mut Vec<String>) {
        for index in 0..4 {
            let (name, samples, result) = match (index + rotation) % 4 {
                0 => {
                    ("dd", &mut references.dd_page_cache, references::dd(self.directory, self.bytes, DdMode::PageCache))
                }
                1 => (
                    "dd conv=fsync",
                    &mut references.dd_fsync,
                    references::dd(self.directory, self.bytes, DdMode::Fsync),
                ),
                2 => (
                    "dd oflag=direct",
                    &mut references.dd_direct,
                    references::dd(self.directory, self.bytes, DdMode::Direct),
                ),
                _ => {
                    prepare(self.bytes);
                    let wall = references::fill(usize::try_from(self.bytes).unwrap_or(usize::MAX));
                    ("fill", &mut references.fill, Ok(Timed { wall, cpu: wall }))
                }
            };
            match result {
                Ok(time) => samples.push(time),
                Err(error) => failures.push(format!("{name}: {error}")),
            }
        }
    }
}

/// Where `tool`'s results go; `None` for CRIU when it is not measured.
fn result_of<'a>(tool: Tool, crp: &'a mut ToolResult, criu: &'a mut Option<ToolResult>) -> Option<&'a mut ToolResult> {
    match tool {
        Tool::Crp => Some(crp),
        Tool::Criu(_) => criu.as_mut(),
    }
}

/// One round on `stage`: each step by both tools, `crp_first` or not.
fn round(
    stage: &Stage,
    tools: &[Tool],
    crp: &mut ToolResult,
    criu: &mut Option<ToolResult>,
    failures: &mut Vec<String>,
) {
    for &tool in tools {
        let Some(result) = result_of(tool, crp, criu) else {
            continue;
        };
        match stage.page_cache(tool) {
            Ok((dump, restore, bytes)) => {
                result.dump_page_cache.push(dump);
                result.restore.push(restore);
                result.image_bytes = bytes;
            }
            Err(error) => failures.push(format!("{}: {error}", tool.name())),
        }
    }
    for &tool in tools {
        let Some(result) = result_of(tool, crp, criu) else {
            continue;
        };
        match stage.durable(tool) {
            Ok(dump) => result.dump_durable.push(dump),
            Err(error) => failures.push(format!("{}: {error}", tool.name())),
        }
    }
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
    let mut references = References::default();
    let mut failures = Vec::new();
    let rounds = if subject.mib > LARGE_MIB { settings.large_rounds } else { settings.rounds };
    for round_number in 0..rounds {
        eprintln!("bench: {} round {}/{rounds}", subject.name(), round_number + 1);
        // Alternate who goes first, so that neither always runs on a
        // machine the other just warmed or loaded.
        let mut tools = vec![Tool::Crp];
        if let Some(tool) = settings.criu.as_ref() {
            tools.push(Tool::Criu(tool));
        }
        if round_number % 2 == 1 {
            tools.reverse();
        }
        let largest_image = crp.image_bytes.max(criu.as_ref().map_or(0, |criu| criu.image_bytes));
        let stage = Stage { programs, subject, directory, bytes: largest_image.max(subject.mib << 20) };
        round(&stage, &tools, &mut crp, &mut criu, &mut failures);
        let bytes = crp.image_bytes.max(subject.mib << 20);
        Stage { bytes, ..stage }.references(round_number, &mut references, &mut failures);
    }
    for failure in &failures {
        eprintln!("bench: {} failed: {failure}", subject.name());
    }
    let peaks = crp_peaks(programs, subject, directory).map_err(|error| eprintln!("bench: peak memory: {error}")).ok();
    SubjectResult { subject: *subject, rounds, crp, criu, references, peaks, failures }
}

/// One uncounted round of both tools on a small subject: binaries, CRIU's
/// installation and the file system's metadata are warm before the first
/// timed step.
fn warm_up(settings: &Settings, programs: &Programs) {
    let subject = Subject { kind: Kind::Anonymous, mib: 64 };
    let stage = Stage { programs, subject: &subject, directory: &settings.directory, bytes: 64 << 20 };
    let mut tools = vec![Tool::Crp];
    if let Some(tool) = settings.criu.as_ref() {
        tools.push(Tool::Criu(tool));
    }
    for tool in tools {
        if let Err(error) = stage.page_cache(tool) {
            eprintln!("bench: warm-up of {}: {error}", tool.name());
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
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
    eprintln!(
        "bench: images in {}, {} rounds ({} over {LARGE_MIB} MiB)",
        settings.directory.display(),
        settings.rounds,
        settings.large_rounds
    );
    let load_before = load_average();
    let memcpy_bytes_per_second = references::memcpy_rate(256 << 20);
    warm_up(&settings, &programs);
    let results: Vec<SubjectResult> =
        settings.subjects.iter().map(|subject| bench_subject(&settings, &programs, subject)).collect();
    let limits = report::Limits { memcpy_bytes_per_second, load_before, load_after: load_average() };
    print!("{}", report::table(&results, &limits, criu_version.as_deref()));
    let json = report::json(&results, &limits, criu_version.as_deref());
    match std::fs::write(&settings.json, serde_json::to_string_pretty(&json).unwrap() + "\n") {
        Ok(()) => println!("JSON: {}", settings.json.display()),
        Err(error) => eprintln!("bench: cannot write {}: {error}", settings.json.display()),
    }
}
