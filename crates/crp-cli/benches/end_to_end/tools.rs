//! Running crp and CRIU 4.1 (../shared/peers/criu.sh) the way a user
//! would, timed from the command's start to its exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `command` to its end; the time it took and what it printed, or
/// what went wrong.
pub fn run(command: &mut Command) -> Result<(Duration, Output), String> {
    let started = Instant::now();
    let output = command.stdin(Stdio::null()).output().map_err(|error| format!("{command:?}: {error}"))?;
    let elapsed = started.elapsed();
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

pub fn crp_binary() -> &'static str {
    env!("CARGO_BIN_EXE_crp")
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
    pub fn dump(&self, pid: i32, images: &Path) -> Result<Duration, String> {
        run(self.command().args(["dump", "-t", &pid.to_string(), "-D"]).arg(images)).map(|(time, _)| time)
    }

    /// `criu restore -d -D DIR --pidfile FILE`: returns once the process
    /// runs, with its pid.
    pub fn restore(&self, images: &Path) -> Result<(Duration, i32), String> {
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
pub fn sync_directory(directory: &Path) -> Result<Duration, String> {
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

/// Writes back everything dirty and empties the page cache, so that every
/// dump starts from the same point.
pub fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Writes back everything dirty (untimed, before a restore): the restore
/// then reads a cached image without writeback running beside it.
pub fn sync_all() {
    let _ = Command::new("sync").status();
}
