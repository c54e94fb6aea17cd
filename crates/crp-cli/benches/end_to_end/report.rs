//! Medians, ratios, the printed table and the JSON document of one run.
//!
//! Ratios: "CRIU/crp" is CRIU's time over crp's (above 1: crp is faster);
//! "crp/dd" is crp's dump time over dd's of the image's bytes, "crp/limit"
//! crp's restore time over the time the fresh-memory fill rate allows
//! (1.0: at the limit).

use std::fmt::Write;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::memory::Peak;
use crate::subjects::Subject;

/// One measurement's samples and their median, in seconds.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub samples: Vec<f64>,
    pub median: Option<f64>,
}

impl Measured {
    pub fn of(samples: &[Duration]) -> Measured {
        let mut seconds: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
        let samples = seconds.clone();
        seconds.sort_by(f64::total_cmp);
        let median = match seconds.len() {
            0 => None,
            count if count % 2 == 1 => Some(seconds[count / 2]),
            count => Some((seconds[count / 2 - 1] + seconds[count / 2]) / 2.0),
        };
        Measured { samples, median }
    }

    fn json(&self) -> Value {
        json!({ "samples_s": self.samples, "median_s": self.median })
    }
}

/// What one tool did on one subject, round by round.
#[derive(Debug, Default)]
pub struct ToolResult {
    pub dump_page_cache: Vec<Duration>,
    pub dump_durable: Vec<Duration>,
    pub restore: Vec<Duration>,
    /// Of the last image written.
    pub image_bytes: u64,
}

impl ToolResult {
    fn json(&self) -> Value {
        json!({
            "dump_page_cache": Measured::of(&self.dump_page_cache).json(),
            "dump_durable": Measured::of(&self.dump_durable).json(),
            "restore_until_running": Measured::of(&self.restore).json(),
            "image_bytes": self.image_bytes,
        })
    }
}

pub struct SubjectResult {
    pub subject: Subject,
    pub crp: ToolResult,
    pub criu: Option<ToolResult>,
    pub dd_page_cache: Measured,
    pub dd_fsync: Measured,
    /// crp's peak memory while dumping and while restoring.
    pub peaks: Option<(Peak, Peak)>,
    pub failures: Vec<String>,
}

/// The physical references, measured once per run.
pub struct Limits {
    pub memcpy_bytes_per_second: f64,
    pub fresh_fill_bytes_per_second: f64,
    pub fill_sample_bytes: u64,
}

fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(numerator), Some(denominator)) if denominator > 0.0 => Some(numerator / denominator),
        _ => None,
    }
}

/// The ratios the targets are about, for one subject.
struct Ratios {
    dump_page_cache_criu_over_crp: Option<f64>,
    dump_durable_criu_over_crp: Option<f64>,
    restore_criu_over_crp: Option<f64>,
    image_criu_over_crp: Option<f64>,
    dump_page_cache_crp_over_dd: Option<f64>,
    dump_durable_crp_over_dd_fsync: Option<f64>,
    restore_crp_over_fill_limit: Option<f64>,
}

impl SubjectResult {
    fn medians(result: &ToolResult) -> [Option<f64>; 3] {
        [&result.dump_page_cache, &result.dump_durable, &result.restore].map(|samples| Measured::of(samples).median)
    }

    /// Seconds the fresh-memory fill rate allows for this subject's image.
    fn fill_limit(&self, limits: &Limits) -> Option<f64> {
        (limits.fresh_fill_bytes_per_second > 0.0)
            .then(|| self.crp.image_bytes as f64 / limits.fresh_fill_bytes_per_second)
    }

    fn ratios(&self, limits: &Limits) -> Ratios {
        let [crp_cache, crp_durable, crp_restore] = Self::medians(&self.crp);
        let [criu_cache, criu_durable, criu_restore] = self.criu.as_ref().map_or([None; 3], Self::medians);
        let criu_image = self.criu.as_ref().map(|criu| criu.image_bytes as f64);
        Ratios {
            dump_page_cache_criu_over_crp: ratio(criu_cache, crp_cache),
            dump_durable_criu_over_crp: ratio(criu_durable, crp_durable),
            restore_criu_over_crp: ratio(criu_restore, crp_restore),
            image_criu_over_crp: ratio(criu_image, Some(self.crp.image_bytes as f64)),
            dump_page_cache_crp_over_dd: ratio(crp_cache, self.dd_page_cache.median),
            dump_durable_crp_over_dd_fsync: ratio(crp_durable, self.dd_fsync.median),
            restore_crp_over_fill_limit: ratio(crp_restore, self.fill_limit(limits)),
        }
    }
}

fn seconds(value: Option<f64>, bytes: u64) -> String {
    match value {
        Some(value) => format!("{value:>7.3} s {:>5.2} GB/s", bytes as f64 / 1e9 / value),
        None => format!("{:>19}", "-"),
    }
}

fn times(value: Option<f64>) -> String {
    value.map_or_else(|| format!("{:>7}", "-"), |value| format!("{value:>6.2}x"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The table printed at the end of a run.
pub fn table(results: &[SubjectResult], limits: &Limits, rounds: usize, criu: Option<&str>) -> String {
    let mut out = String::new();
    let machine = machine();
    let _ = writeln!(
        out,
        "\ncrp vs {} — {} — medians of {rounds} rounds, alternating; GB/s of the crp image's bytes",
        criu.unwrap_or("CRIU (not run)"),
        machine["summary"].as_str().unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "physical references: memcpy {:.2} GB/s, fresh anonymous memory fill {:.2} GB/s ({} MiB)",
        limits.memcpy_bytes_per_second / 1e9,
        limits.fresh_fill_bytes_per_second / 1e9,
        limits.fill_sample_bytes >> 20
    );
    for result in results {
        let bytes = result.crp.image_bytes;
        let [crp_cache, crp_durable, crp_restore] = SubjectResult::medians(&result.crp);
        let [criu_cache, criu_durable, criu_restore] = result.criu.as_ref().map_or([None; 3], SubjectResult::medians);
        let ratios = result.ratios(limits);
        let _ = writeln!(out, "\n{} (crp image {:.1} MiB)", result.subject.name(), bytes as f64 / (1 << 20) as f64);
        let _ = writeln!(out, "  {:<34}{:>21}{:>21}{:>10}", "", "crp", "CRIU", "CRIU/crp");
        let rows = [
            ("dump into the page cache", crp_cache, criu_cache, ratios.dump_page_cache_criu_over_crp),
            ("durable dump (CRIU: then sync)", crp_durable, criu_durable, ratios.dump_durable_criu_over_crp),
            ("restore until running (eager)", crp_restore, criu_restore, ratios.restore_criu_over_crp),
        ];
        for (name, crp, criu, ratio) in rows {
            let _ = writeln!(out, "  {name:<34}  {}  {}   {}", seconds(crp, bytes), seconds(criu, bytes), times(ratio));
        }
        let criu_image = result.criu.as_ref().map_or(0, |criu| criu.image_bytes);
        let _ = writeln!(
            out,
            "  {:<34}  {:>16.1} MiB  {:>16.1} MiB   {}",
            "image size",
            bytes as f64 / (1 << 20) as f64,
            criu_image as f64 / (1 << 20) as f64,
            times(ratios.image_criu_over_crp)
        );
        let _ = writeln!(
            out,
            "  dd of the same bytes: page cache {}, conv=fsync {}; crp/dd {} (page cache), {} (durable)",
            seconds(result.dd_page_cache.median, bytes).trim(),
            seconds(result.dd_fsync.median, bytes).trim(),
            times(ratios.dump_page_cache_crp_over_dd).trim(),
            times(ratios.dump_durable_crp_over_dd_fsync).trim()
        );
        let _ = writeln!(
            out,
            "  fill-rate limit for these bytes {}; crp restore/limit {}",
            seconds(result.fill_limit(limits), bytes).trim(),
            times(ratios.restore_crp_over_fill_limit).trim()
        );
        if let Some((dump, restore)) = result.peaks {
            let _ = writeln!(
                out,
                "  crp peak RssAnon: dump {:.1} MiB, restore {:.1} MiB (file pages apart: RssFile {:.1} / {:.1} MiB; \
                 VmHWM {:.1} / {:.1} MiB)",
                mib(dump.rss_anon_kib),
                mib(restore.rss_anon_kib),
                mib(dump.rss_file_kib),
                mib(restore.rss_file_kib),
                mib(dump.vm_hwm_kib),
                mib(restore.vm_hwm_kib)
            );
        }
        for failure in &result.failures {
            let _ = writeln!(out, "  FAILED: {failure}");
        }
    }
    out
}

fn peak_json(peak: &Peak) -> Value {
    serde_json::to_value(peak).unwrap_or(Value::Null)
}

/// Everything a run measured, with the machine it ran on.
pub fn json(results: &[SubjectResult], limits: &Limits, rounds: usize, criu: Option<&str>) -> Value {
    let subjects: Vec<Value> = results
        .iter()
        .map(|result| {
            let ratios = result.ratios(limits);
            json!({
                "key": result.subject.key(),
                "name": result.subject.name(),
                "mib": result.subject.mib,
                "crp": result.crp.json(),
                "criu": result.criu.as_ref().map(ToolResult::json),
                "dd_page_cache": result.dd_page_cache.json(),
                "dd_fsync": result.dd_fsync.json(),
                "fill_limit_s": result.fill_limit(limits),
                "crp_peak_dump": result.peaks.as_ref().map(|(dump, _)| peak_json(dump)),
                "crp_peak_restore": result.peaks.as_ref().map(|(_, restore)| peak_json(restore)),
                "ratios": {
                    "dump_page_cache_criu_over_crp": ratios.dump_page_cache_criu_over_crp,
                    "dump_durable_criu_over_crp": ratios.dump_durable_criu_over_crp,
                    "restore_criu_over_crp": ratios.restore_criu_over_crp,
                    "image_criu_over_crp": ratios.image_criu_over_crp,
                    "dump_page_cache_crp_over_dd": ratios.dump_page_cache_crp_over_dd,
                    "dump_durable_crp_over_dd_fsync": ratios.dump_durable_crp_over_dd_fsync,
                    "restore_crp_over_fill_limit": ratios.restore_crp_over_fill_limit,
                },
                "failures": result.failures,
            })
        })
        .collect();
    json!({
        "schema": "crp-bench-end-to-end/1",
        "machine": machine(),
        "crp_commit": command_line("git", &["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"]),
        "criu": criu,
        "rounds": rounds,
        "memcpy_bytes_per_s": limits.memcpy_bytes_per_second,
        "fresh_fill_bytes_per_s": limits.fresh_fill_bytes_per_second,
        "fresh_fill_sample_bytes": limits.fill_sample_bytes,
        "subjects": subjects,
    })
}

fn command_line(program: &str, arguments: &[&str]) -> Option<String> {
    let output = Command::new(program).args(arguments).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn file_field(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == key).then(|| value.trim().to_owned())
    })
}

/// What the numbers were measured on.
fn machine() -> Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let cpu = file_field("/proc/cpuinfo", "model name").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = file_field("/proc/meminfo", "MemTotal").unwrap_or_default();
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let disk = command_line("df", &["--output=source,fstype", &std::env::temp_dir().display().to_string()])
        .and_then(|text| text.lines().nth(1).map(|line| line.split_whitespace().collect::<Vec<_>>().join(" ")));
    json!({
        "summary": format!("{cores} cores ({cpu}), {memory}, Linux {kernel}"),
        "kernel": kernel,
        "cpu": cpu,
        "cores": cores,
        "memory": memory,
        "transparent_hugepage": thp.trim(),
        "image_filesystem": disk,
        "date": command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
    })
}
