//! Medians, spreads, ratios, the printed table and the JSON document of
//! one run.
//!
//! Ratios: "CRIU/crp" is CRIU's time over crp's (above 1: crp is faster);
//! "crp/dd" is crp's dump time over dd's of the image's bytes, "crp/limit"
//! crp's restore time over the time filling fresh memory of the image's
//! size took (1.0: at the limit). All of them are of medians.

use std::fmt::Write;
use std::process::Command;

use serde_json::{Value, json};

use crate::memory::Peak;
use crate::subjects::Subject;
use crate::tools::Timed;

/// One measurement's samples (wall-clock seconds, in the order taken),
/// their median and spread, and the median CPU time.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub samples: Vec<f64>,
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub cpu_median: Option<f64>,
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => None,
        count if count % 2 == 1 => Some(sorted[count / 2]),
        count => Some((sorted[count / 2 - 1] + sorted[count / 2]) / 2.0),
    }
}

impl Measured {
    pub fn of(samples: &[Timed]) -> Measured {
        let wall: Vec<f64> = samples.iter().map(|sample| sample.wall.as_secs_f64()).collect();
        let cpu: Vec<f64> = samples.iter().map(|sample| sample.cpu.as_secs_f64()).collect();
        Measured {
            median: median(&wall),
            min: wall.iter().copied().reduce(f64::min),
            max: wall.iter().copied().reduce(f64::max),
            cpu_median: median(&cpu),
            samples: wall,
        }
    }

    fn json(&self) -> Value {
        json!({
            "samples_s": self.samples,
            "median_s": self.median,
            "min_s": self.min,
            "max_s": self.max,
            "cpu_median_s": self.cpu_median,
        })
    }
}

/// What one tool did on one subject, round by round.
#[derive(Debug, Default)]
pub struct ToolResult {
    pub dump_page_cache: Vec<Timed>,
    pub dump_durable: Vec<Timed>,
    pub restore: Vec<Timed>,
    /// Of the last image written.
    pub image_bytes: u64,
}

impl ToolResult {
    fn measured(&self) -> [Measured; 3] {
        [&self.dump_page_cache, &self.dump_durable, &self.restore].map(|samples| Measured::of(samples))
    }

    fn json(&self) -> Value {
        let [cache, durable, restore] = self.measured();
        json!({
            "dump_page_cache": cache.json(),
            "dump_durable": durable.json(),
            "restore_until_running": restore.json(),
            "image_bytes": self.image_bytes,
        })
    }
}

/// The physical references for one subject's bytes, round by round.
#[derive(Debug, Default)]
pub struct References {
    pub dd_page_cache: Vec<Timed>,
    pub dd_fsync: Vec<Timed>,
    pub dd_direct: Vec<Timed>,
    /// Writing fresh anonymous memory of the image's size.
    pub fill: Vec<Timed>,
}

pub struct SubjectResult {
    pub subject: Subject,
    pub rounds: usize,
    pub crp: ToolResult,
    pub criu: Option<ToolResult>,
    pub references: References,
    /// crp's peak memory while dumping and while restoring.
    pub peaks: Option<(Peak, Peak)>,
    pub failures: Vec<String>,
}

/// What is measured once per run.
pub struct Limits {
    pub memcpy_bytes_per_second: f64,
    pub load_before: String,
    pub load_after: String,
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
    fn reference_medians(&self) -> [Measured; 4] {
        let references = &self.references;
        [&references.dd_page_cache, &references.dd_fsync, &references.dd_direct, &references.fill]
            .map(|samples| Measured::of(samples))
    }

    /// Seconds memcpy of this subject's image bytes takes at the measured rate.
    fn memcpy_seconds(&self, limits: &Limits) -> Option<f64> {
        (limits.memcpy_bytes_per_second > 0.0).then(|| self.crp.image_bytes as f64 / limits.memcpy_bytes_per_second)
    }

    fn ratios(&self) -> Ratios {
        let [crp_cache, crp_durable, crp_restore] = self.crp.measured().map(|measured| measured.median);
        let [criu_cache, criu_durable, criu_restore] =
            self.criu.as_ref().map_or([None; 3], |criu| criu.measured().map(|measured| measured.median));
        let [dd_cache, dd_fsync, _, fill] = self.reference_medians().map(|measured| measured.median);
        let criu_image = self.criu.as_ref().map(|criu| criu.image_bytes as f64);
        Ratios {
            dump_page_cache_criu_over_crp: ratio(criu_cache, crp_cache),
            dump_durable_criu_over_crp: ratio(criu_durable, crp_durable),
            restore_criu_over_crp: ratio(criu_restore, crp_restore),
            image_criu_over_crp: ratio(criu_image, Some(self.crp.image_bytes as f64)),
            dump_page_cache_crp_over_dd: ratio(crp_cache, dd_cache),
            dump_durable_crp_over_dd_fsync: ratio(crp_durable, dd_fsync),
            restore_crp_over_fill_limit: ratio(crp_restore, fill),
        }
    }
}

/// "0.930 s [0.91–0.95] 1.15 GB/s": median, spread, rate of `bytes`.
fn cell(measured: Option<&Measured>, bytes: u64) -> String {
    match measured.and_then(|measured| Some((measured.median?, measured.min?, measured.max?))) {
        Some((median, min, max)) => {
            format!("{median:>6.3} s [{min:.2}–{max:.2}] {:>5.2} GB/s", bytes as f64 / 1e9 / median)
        }
        None => format!("{:>30}", "-"),
    }
}

fn times(value: Option<f64>) -> String {
    value.map_or_else(|| format!("{:>7}", "-"), |value| format!("{value:>6.2}x"))
}

fn cpu(measured: &Measured) -> String {
    measured.cpu_median.map_or_else(|| "-".into(), |seconds| format!("{seconds:.2}"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The table printed at the end of a run.
pub fn table(results: &[SubjectResult], limits: &Limits, criu: Option<&str>) -> String {
    let mut out = String::new();
    let machine = machine();
    let _ = writeln!(
        out,
        "\ncrp vs {} — {} — medians [min–max] of alternating rounds; GB/s of the crp image's bytes",
        criu.unwrap_or("CRIU (not run)"),
        machine["summary"].as_str().unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "memcpy {:.2} GB/s; load average before {}, after {}",
        limits.memcpy_bytes_per_second / 1e9,
        limits.load_before,
        limits.load_after
    );
    for result in results {
        let bytes = result.crp.image_bytes;
        let crp = result.crp.measured();
        let criu = result.criu.as_ref().map(ToolResult::measured);
        let ratios = result.ratios();
        let _ = writeln!(
            out,
            "\n{} (crp image {:.1} MiB, {} rounds)",
            result.subject.name(),
            bytes as f64 / (1 << 20) as f64,
            result.rounds
        );
        let _ = writeln!(out, "  {:<32}{:>31}{:>33}{:>10}", "", "crp", "CRIU", "CRIU/crp");
        let rows = [
            ("dump into the page cache", ratios.dump_page_cache_criu_over_crp),
            ("durable dump (CRIU: then sync)", ratios.dump_durable_criu_over_crp),
            ("restore until running (eager)", ratios.restore_criu_over_crp),
        ];
        for (index, (name, ratio)) in rows.into_iter().enumerate() {
            let theirs = criu.as_ref().map(|measured| &measured[index]);
            let _ = writeln!(
                out,
                "  {name:<32}  {:<31}  {:<31}  {}",
                cell(Some(&crp[index]), bytes),
                cell(theirs, bytes),
                times(ratio)
            );
        }
        let criu_image = result.criu.as_ref().map_or(0, |criu| criu.image_bytes);
        let _ = writeln!(
            out,
            "  {:<32}  {:<31}  {:<31}  {}",
            "image size",
            format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64),
            format!("{:.1} MiB", criu_image as f64 / (1 << 20) as f64),
            times(ratios.image_criu_over_crp)
        );
        let _ = writeln!(
            out,
            "  {:<32}  {:<31}  {:<31}",
            "CPU s (cache / durable / restore*)",
            crp.iter().map(cpu).collect::<Vec<_>>().join(" / "),
            criu.as_ref().map_or_else(|| "-".into(), |criu| criu.iter().map(cpu).collect::<Vec<_>>().join(" / "))
        );
        let [dd_cache, dd_fsync, dd_direct, fill] = result.reference_medians();
        let _ =
            writeln!(out, "  (*: of the tool's own processes; CRIU restores inside the restored process, not counted)");
        let _ = writeln!(out, "  references, the same bytes:");
        for (name, measured) in [
            ("dd into the page cache", &dd_cache),
            ("dd conv=fsync", &dd_fsync),
            ("dd oflag=direct conv=fsync", &dd_direct),
            ("fill fresh anonymous memory", &fill),
        ] {
            let _ = writeln!(out, "    {name:<30}  {}", cell(Some(measured), bytes));
        }
        if let Some(seconds) = result.memcpy_seconds(limits) {
            let _ = writeln!(out, "    {:<30}  {seconds:>6.3} s", "memcpy (at the rate above)");
        }
        let _ = writeln!(
            out,
            "  crp/dd {} (page cache), crp/dd conv=fsync {} (durable), crp restore/fill {}",
            times(ratios.dump_page_cache_crp_over_dd).trim(),
            times(ratios.dump_durable_crp_over_dd_fsync).trim(),
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
pub fn json(results: &[SubjectResult], limits: &Limits, criu: Option<&str>) -> Value {
    let subjects: Vec<Value> = results
        .iter()
        .map(|result| {
            let ratios = result.ratios();
            let [dd_cache, dd_fsync, dd_direct, fill] = result.reference_medians();
            json!({
                "key": result.subject.key(),
                "name": result.subject.name(),
                "mib": result.subject.mib,
                "rounds": result.rounds,
                "crp": result.crp.json(),
                "criu": result.criu.as_ref().map(ToolResult::json),
                "references": {
                    "dd_page_cache": dd_cache.json(),
                    "dd_fsync": dd_fsync.json(),
                    "dd_direct_fsync": dd_direct.json(),
                    "fill_fresh_anonymous": fill.json(),
                    "memcpy_s": result.memcpy_seconds(limits),
                },
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
        "schema": "crp-bench-end-to-end/2",
        "machine": machine(),
        "crp_commit": command_line("git", &["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"]),
        "criu": criu,
        "memcpy_bytes_per_s": limits.memcpy_bytes_per_second,
        "load_average_before": limits.load_before,
        "load_average_after": limits.load_after,
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
