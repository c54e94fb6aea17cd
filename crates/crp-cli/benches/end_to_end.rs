//! End-to-end benchmark: dump and restore a process holding 1 GiB (or
//! CRP_BENCH_MIB) of dirty anonymous memory with crp, then the same with
//! CRIU 4.1 (../shared/peers/criu.sh) when it is available, and print GB/s
//! for both side by side. Run with `cargo bench -p crp-cli --bench end_to_end`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_MIB: u64 = 1024;

fn build_hog(directory: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/hog.c");
    let binary = directory.join("hog");
    let status = Command::new("gcc").args(["-O2", "-o"]).arg(&binary).arg(&source).status().unwrap();
    assert!(status.success(), "gcc failed");
    binary
}

/// Starts the hog and waits until its memory is dirty.
fn start_hog(hog: &Path, mib: u64, directory: &Path) -> i32 {
    let ready = directory.join("hog.ready");
    let _ = std::fs::remove_file(&ready);
    let mut child =
        Command::new(hog).arg(mib.to_string()).arg(&ready).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    let pid = child.id() as i32;
    while !ready.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("hog exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The process is reaped by whoever kills it (see finish).
    std::mem::forget(child);
    pid
}

fn kill_and_reap(pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}

fn run(command: &mut Command) -> (Duration, String) {
    let started = Instant::now();
    let output = command.stdin(Stdio::null()).output().unwrap();
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "{:?} failed: {}{}",
        command,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (elapsed, String::from_utf8_lossy(&output.stdout).into_owned())
}

fn gigabytes_per_second(mib: u64, elapsed: Duration) -> f64 {
    (mib << 20) as f64 / 1e9 / elapsed.as_secs_f64()
}

fn drop_caches() {
    // Both tools are measured from the same starting point: a clean cache
    // and no dirty image pages still in flight.
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn bench_crp(hog: &Path, mib: u64, directory: &Path) -> (Duration, Duration) {
    let crp = env!("CARGO_BIN_EXE_crp");
    let pid = start_hog(hog, mib, directory);
    let image = directory.join("hog.crp");
    let _ = std::fs::remove_file(&image);
    drop_caches();
    let (dump, _) = run(Command::new(crp).arg("dump").arg(pid.to_string()).arg("-o").arg(&image));
    reap(pid);
    let (restore, stdout) = run(Command::new(crp).arg("restore").arg("--detach").arg(&image));
    let restored: i32 = stdout.lines().last().unwrap().trim().parse().unwrap();
    kill_and_reap(restored);
    let _ = std::fs::remove_file(&image);
    (dump, restore)
}

fn criu_script() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/criu.sh");
    script.exists().then_some(script)
}

fn bench_criu(script: &Path, hog: &Path, mib: u64, directory: &Path) -> Option<(Duration, Duration)> {
    let images = directory.join("criu-images");
    let _ = std::fs::remove_dir_all(&images);
    std::fs::create_dir_all(&images).unwrap();
    let pid = start_hog(hog, mib, directory);
    drop_caches();
    let dump_started = Instant::now();
    let dumped = Command::new("bash")
        .arg(script)
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(&images)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let dump = dump_started.elapsed();
    reap(pid);
    if !dumped.status.success() {
        eprintln!("CRIU dump failed: {}", String::from_utf8_lossy(&dumped.stderr));
        return None;
    }
    let pidfile = directory.join("criu.pid");
    let _ = std::fs::remove_file(&pidfile);
    let restore_started = Instant::now();
    let restored = Command::new("bash")
        .arg(script)
        .args(["restore", "-d", "-D"])
        .arg(&images)
        .arg("--pidfile")
        .arg(&pidfile)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let restore = restore_started.elapsed();
    if !restored.status.success() {
        eprintln!("CRIU restore failed: {}", String::from_utf8_lossy(&restored.stderr));
        return None;
    }
    if let Some(restored_pid) = std::fs::read_to_string(&pidfile).ok().and_then(|text| text.trim().parse().ok()) {
        kill_and_reap(restored_pid);
    }
    let _ = std::fs::remove_dir_all(&images);
    Some((dump, restore))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // then this run only proves the benchmark builds.
    if !std::env::args().any(|argument| argument == "--bench") {
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let mib = std::env::var("CRP_BENCH_MIB").ok().and_then(|value| value.parse().ok()).unwrap_or(DEFAULT_MIB);
    let directory =
        std::env::var_os("CRP_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("crp-bench"));
    std::fs::create_dir_all(&directory).unwrap();
    let hog = build_hog(&directory);
    let rounds = 3;
    println!("end-to-end: {mib} MiB of dirty anonymous memory, images in {}, best of {rounds}", directory.display());
    let best = |results: Vec<(Duration, Duration)>| {
        (results.iter().map(|result| result.0).min().unwrap(), results.iter().map(|result| result.1).min().unwrap())
    };
    let crp = best((0..rounds).map(|_| bench_crp(&hog, mib, &directory)).collect());
    let report = |tool: &str, (dump, restore): (Duration, Duration)| {
        println!(
            "{tool:<10} dump {:>7.1} ms {:>6.2} GB/s   restore {:>7.1} ms {:>6.2} GB/s",
            dump.as_secs_f64() * 1000.0,
            gigabytes_per_second(mib, dump),
            restore.as_secs_f64() * 1000.0,
            gigabytes_per_second(mib, restore)
        );
    };
    report("crp", crp);
    match criu_script() {
        Some(script) => {
            let results: Vec<_> = (0..rounds).filter_map(|_| bench_criu(&script, &hog, mib, &directory)).collect();
            if results.is_empty() {
                println!("CRIU 4.1   failed (see above)");
            } else {
                report("CRIU 4.1", best(results));
            }
        }
        None => println!("CRIU 4.1   not available (../shared/peers/criu.sh missing)"),
    }
}
