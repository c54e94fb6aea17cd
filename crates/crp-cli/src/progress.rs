//! The progress bar of a long dump or restore (indicatif): bytes of pages
//! done, total and rate on stderr, drawn only when stderr is a terminal and
//! the pages have taken longer than [`SHOW_AFTER`]; `--quiet` turns it off.
//! Nothing is ever drawn into a pipe or a file.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shorter work shows no bar at all.
pub const SHOW_AFTER: Duration = Duration::from_secs(1);

static ENABLED: AtomicBool = AtomicBool::new(true);

/// `--quiet` calls this with `false`, before any work starts.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// How long the work runs before the bar appears: [`SHOW_AFTER`], or
/// `CRP_PROGRESS_AFTER_MS` (a testing hook, so that tests need no long dump).
fn show_after() -> Duration {
    std::env::var("CRP_PROGRESS_AFTER_MS")
        .ok()
        .and_then(|text| text.parse().ok())
        .map_or(SHOW_AFTER, Duration::from_millis)
}

/// The progress of one phase over `total` bytes; cleared when dropped.
/// Shared by the threads that do the work.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
    show_after: Duration,
    /// Still to decide whether to draw (false once drawn or never to be).
    pending: AtomicBool,
}

impl Progress {
    /// Starts the progress of `what` ("dump", "restore") over `total` bytes.
    pub fn start(what: &'static str, total: u64) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        let template = "crp: {msg} {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}";
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(what);
        let pending = ENABLED.load(Ordering::Relaxed) && std::io::stderr().is_terminal();
        Progress { bar, started: Instant::now(), show_after: show_after(), pending: AtomicBool::new(pending) }
    }

    /// Counts `bytes` more as done; draws the bar from the first call after
    /// the work has run long enough.
    pub fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        if self.pending.load(Ordering::Relaxed)
            && self.started.elapsed() >= self.show_after
            && self.pending.swap(false, Ordering::Relaxed)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.bar.tick();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
