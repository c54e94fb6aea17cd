//! Running crp and CRIU 4.1 (../shared/peers/criu.sh) the way a user
//! would, timed from the command's start to its exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What one timed command took: from its start to its exit, and the CPU
/// time (user and system) it and the children it waited for used.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timed {
    pub wall: Duration,
    pub cpu: Duration,
}

impl std::ops::Add for Timed {
    type Output = Timed;

    fn add(self, other: Timed) -> Timed {
        Timed { wall: self.wall + other.wall, cpu: self.cpu + other.cpu }
    }
}

/// User and system time of every child reaped so far.
fn children_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let seconds = |time: nix::sys::time::TimeVal| {
        let microseconds = u64::try_from(time.tv_usec()).unwrap_or(0);
        Duration::from_secs(u64::try_from(time.tv_sec()).unwrap_or(0)) + Duration::from_micros(microseconds)
    };
    seconds(usage.user_time()) + seconds(usage.system_time())
}

/// Runs `command` to its end; the time it took and what it printed, or
/// what went wrong.
pub fn run(command: &mut Command) -> Result<(Timed, Output), String> {
    let cpu_before = children_cpu();
    let started = Instant::now();
    let output = command.stdin(Stdio::null()).output().map_err(|error| format!("{command:?}: {error}"))?;
    let elapsed = Timed { wall: started.elapsed(), cpu: children_cpu().saturating_sub(cpu_before) };
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok((elapsed, output))
}

/// The crp under test: this build's, or CRP_BENCH_CRP (another build, to
/// compare a change with what came before it in the same conditions).
pub fn crp_binary() -> PathBuf {
    std::env::var_os("CRP_BENCH_CRP").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_crp")), PathBuf::from)
}

/// `crp dump PID -o IMAGE`, with `--no-sync` unless `durable`.
pub fn crp_dump_command(pid: i32, image: &Path, durable: bool) -> Command {
    let mut command = Command::new(crp_binary());
    command.arg("dump").arg(pid.to_string()).arg("-o").arg(image);
    if !durable {
        command.arg("--no-sync");
    }
    command
}

/// `crp restore --detach IMAGE`: returns once the process runs.
pub fn crp_restore_command(image: &Path) -> Command {
    let mut command = Command::new(crp_binary());
    command.arg("restore").arg("--detach").arg(image);
    command
}

/// The pid `crp restore --detach` printed last.
pub fn restored_pid(stdout: &[u8]) -> Result<i32, String> {
    let text = String::from_utf8_lossy(stdout);
    text.lines().last().and_then(|line| line.trim().parse().ok()).ok_or_else(|| format!("no pid in {text:?}"))
}

/// CRIU 4.1 through the project's peer script (its first call installs it).
pub struct Criu {
    script: PathBuf,
}

impl Criu {
    pub fn find() -> Option<Criu> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/criu.sh");
        script.exists().then_some(Criu { script })
    }

    fn command(&self) -> Command {
        let mut command = Command::new("bash");
        command.arg(&self.script);
        command
    }

    /// `criu --version`, which also installs CRIU on the first call.
    pub fn version(&self) -> Result<String, String> {
        let (_, output) = run(self.command().arg("--version"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let version = text.lines().next().unwrap_or_default().trim();
        Ok(format!("CRIU {}", version.trim_start_matches("Version:").trim()))
    }

    /// `criu dump -t PID -D DIR` (kills the process once dumped; no fsync).
    pub fn dump(&self, pid: i32, images: &Path) -> Result<Timed, String> {
        run(self.command().args(["dump", "-t", &pid.to_string(), "-D"]).arg(images)).map(|(time, _)| time)
    }

    /// `criu restore -d -D DIR --pidfile FILE`: returns once the process
    /// runs, with its pid.
    pub fn restore(&self, images: &Path) -> Result<(Timed, i32), String> {
        let pidfile = images.with_extension("pid");
        let _ = std::fs::remove_file(&pidfile);
        let (time, _) = run(self.command().args(["restore", "-d", "-D"]).arg(images).arg("--pidfile").arg(&pidfile))?;
        let pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| format!("CRIU wrote no pid to {}", pidfile.display()))?;
        Ok((time, pid))
    }
}

/// fsyncs every file in `directory` and the directory itself (`sync FILE...`),
/// as crp's durable dump does for its one file.
pub fn sync_directory(directory: &Path) -> Result<Timed, String> {
    let mut command = Command::new("sync");
    for entry in std::fs::read_dir(directory).map_err(|error| error.to_string())? {
        command.arg(entry.map_err(|error| error.to_string())?.path());
    }
    command.arg(directory);
    run(&mut command).map(|(time, _)| time)
}

/// Bytes of a file, or of all the files in a directory.
pub fn bytes_in(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => std::fs::read_dir(path)
            .map(|entries| entries.filter_map(Result::ok).map(|entry| bytes_in(&entry.path())).sum())
            .unwrap_or(0),
        Ok(metadata) => metadata.len(),
        Err(_) => 0,
    }
}

/// Gets the machine ready for a timed step that needs about `bytes` of
/// fresh memory (page cache for a dump, anonymous memory for a restore):
/// writes back everything dirty, so that no writeback of an earlier step
/// runs beside it, then faults in and frees `bytes` of anonymous memory.
///
/// The page cache is never dropped before a timed step. On a VM that hands
/// freed memory back to its host (virtio-balloon free page reporting, as
/// on the development machine), memory freed a while ago costs a trip to
/// the hypervisor per page when it is used again; right after
/// `drop_caches`, writing 1 GiB into the page cache took 0.5 s to 4.8 s of
/// system time for the same `dd`. Memory faulted in and freed just before
/// the step is memory the guest holds, for every tool alike.
pub fn prepare(bytes: u64) {
    sync_all();
    crate::references::fill(usize::try_from(bytes).unwrap_or(usize::MAX));
}

/// Writes back everything dirty (untimed).
pub fn sync_all() {
    let _ = Command::new("sync").status();
}
