//! crp's diagnostic log, through `tracing`: `-v` shows the phases of a
//! dump or restore on stderr (info), `-vv` every step (debug, each injected
//! syscall included); `--log-file FILE` appends everything at debug level to
//! FILE whatever `-v` says. Without either, nothing is logged and stderr
//! holds only crp's own one-line messages.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

/// The target of the line that records how a command ended (its error
/// message): it goes to the log file only, since crp prints that message on
/// stderr itself.
pub const OUTCOME_TARGET: &str = "crp::outcome";

/// Why the log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open the log file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the logger: {0}")]
    Install(#[from] tracing::subscriber::SetGlobalDefaultError),
}

/// The stderr level for `-v` given `count` times.
pub fn stderr_level(count: u8) -> LevelFilter {
    match count {
        0 => LevelFilter::OFF,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Installs the process-wide subscriber. With neither `-v` nor a log file,
/// none is installed and every `tracing` call is a no-op.
pub fn init(verbose: u8, log_file: Option<&Path>) -> Result<(), LogError> {
    if verbose == 0 && log_file.is_none() {
        return Ok(());
    }
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_filter(stderr_level(verbose))
        .with_filter(filter_fn(|metadata| metadata.target() != OUTCOME_TARGET));
    let file = match log_file {
        None => None,
        Some(path) => {
            // Mode 0600: the log holds addresses and paths of the process.
            let opened = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| LogError::Open { path: path.to_owned(), source })?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(Arc::new(opened))
                    .with_ansi(false)
                    .with_filter(LevelFilter::DEBUG),
            )
        }
    };
    let subscriber = Registry::default().with(stderr).with(file);
    tracing::subscriber::set_global_default(subscriber)?;
    Ok(())
}
