//! crp's own memory while it dumps or restores: /proc/PID/status of the
//! running crp, sampled every millisecond (an untimed run of its own). The
//! kernel keeps no high-water mark of RssAnon, so its peak is the largest
//! sample; crp's buffers live for the whole page loop, which many samples
//! see. VmHWM (the kernel's peak of all resident memory, anonymous and file
//! pages together) is read from the last sample before crp exits.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Peak {
    /// Largest RssAnon seen: crp's own buffers, stacks and heap.
    pub rss_anon_kib: u64,
    /// Largest RssFile seen: mostly the mapped image (restore).
    pub rss_file_kib: u64,
    /// The kernel's high-water mark of crp's whole resident set.
    pub vm_hwm_kib: u64,
    pub samples: u64,
}

/// Runs `command` to its end while sampling its memory; its stdout and
/// what it used at most.
pub fn sampled(command: &mut Command) -> Result<(Vec<u8>, Peak), String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("{command:?}: {error}"))?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = Peak::default();
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            let field = |name: &str| {
                text.lines()
                    .find_map(|line| line.strip_prefix(name))
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            };
            // A zombie has no memory fields: keep what the last live sample said.
            if let (Some(anon), Some(file), Some(hwm)) = (field("RssAnon:"), field("RssFile:"), field("VmHWM:")) {
                peak.rss_anon_kib = peak.rss_anon_kib.max(anon);
                peak.rss_file_kib = peak.rss_file_kib.max(file);
                peak.vm_hwm_kib = peak.vm_hwm_kib.max(hwm);
                peak.samples += 1;
            }
        }
        if let Some(status) = child.try_wait().map_err(|error| error.to_string())? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut stdout = Vec::new();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_end(&mut stdout);
    }
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    if !status.success() {
        return Err(format!("{command:?} failed ({status}): {stderr}"));
    }
    Ok((stdout, peak))
}
