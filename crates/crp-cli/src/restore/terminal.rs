//! `crp restore`'s own controlling terminal, which a process that ran on a
//! terminal is restored onto: it joins crp restore's job there (see
//! `crp_compound::session`), the terminal takes the image's modes (echo,
//! canonical mode, control characters...) right before the process is
//! released, and keeps its own window size: when that differs from the
//! image's, the process gets SIGWINCH, as after a resize. Without a
//! controlling terminal, or with --detach, the process gets none, and this
//! says so on stderr.

use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::OpenOptionsExt;

use crp_compound::files::{FdTable, FdTarget, Streams, TerminalSettings, window_size};
use crp_compound::session::SessionState;

use crate::error::CrpError;

/// crp restore's controlling terminal, when the process gets it.
#[derive(Debug)]
pub(super) struct Terminal {
    attached: Option<std::fs::File>,
    /// A standard stream of the process is that terminal (else its modes
    /// are left alone: `--stdin FILE --stdout FILE ...`, or crp restore's
    /// own streams redirected).
    streams_on_it: bool,
}

/// What [`Terminal::apply`] changed.
#[derive(Debug, Default)]
pub(super) struct Applied<'a> {
    /// The terminal's window size differs from the image's.
    pub window_changed: bool,
    /// The terminal and the modes it had before.
    before: Option<(&'a std::fs::File, TerminalSettings)>,
}

impl Applied<'_> {
    /// Puts the terminal's modes back (the process is not released after all).
    pub fn undo(&self) {
        if let Some((tty, settings)) = &self.before {
            let _ = settings.set_modes(tty.as_fd());
        }
    }
}

impl Terminal {
    /// crp restore's controlling terminal, when the process ran on a
    /// terminal and crp restore will wait for it.
    pub fn of_restore(session: &SessionState, files: &FdTable, streams: &Streams, detach: bool) -> Self {
        if detach || !session.ran_on_terminal() {
            return Self { attached: None, streams_on_it: false };
        }
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open("/dev/tty")
            .ok();
        let streams_on_it = tty.is_some() && streams_on(files, streams);
        if tty.is_some() && !streams_on_it && session.was_in_foreground() {
            tracing::info!(
                "none of the process's standard streams is crp restore's terminal: its terminal settings are not \
                 applied (the terminal is still its controlling terminal)"
            );
        }
        Self { attached: tty, streams_on_it }
    }

    pub fn attached(&self) -> bool {
        self.attached.is_some()
    }

    /// Says on stderr what a process that had a controlling terminal loses
    /// when crp restore gives it none: that terminal, its modes (when they
    /// were its own), and what its descriptors of /dev/tty become.
    pub fn warn_if_absent(&self, session: &SessionState, files: &FdTable, detach: bool) {
        // Without one before, it has lost none.
        if self.attached() || !session.had_controlling_terminal() {
            return;
        }
        let reason = if detach { "with --detach" } else { "crp restore has no controlling terminal" };
        let name = session.terminal_name.as_str();
        let settings = if session.was_in_foreground() { ", and its terminal settings are not applied" } else { "" };
        eprintln!(
            "crp: note: the process had {name} as its controlling terminal; {reason}, so it is restored in a \
             session of its own without a controlling terminal{settings}"
        );
        let own: Vec<String> = files
            .records()
            .filter(|record| matches!(record.target, FdTarget::OwnTerminal { .. }))
            .map(|record| record.fd.to_string())
            .collect();
        if !own.is_empty() {
            eprintln!("crp: note: its terminal descriptors ({}: /dev/tty) become /dev/null", own.join(", "));
        }
    }

    /// Compares the terminal's window size with the image's, and sets the
    /// image's modes on it when they were the process's own (it was the
    /// foreground job) and one of its standard streams is this terminal.
    pub fn apply(&self, session: &SessionState) -> Result<Applied<'_>, CrpError> {
        let (Some(tty), Some(settings)) = (&self.attached, &session.terminal) else {
            return Ok(Applied::default());
        };
        let failed = |action: &str| {
            let action = format!("{action} crp restore's terminal");
            move |errno: nix::errno::Errno| CrpError::Io { action, source: errno.into() }
        };
        let window = window_size(tty.as_fd()).map_err(failed("read the window size of"))?;
        let window_changed = window != settings.window;
        if !(self.streams_on_it && session.was_in_foreground()) {
            return Ok(Applied { window_changed, before: None });
        }
        let before = TerminalSettings::read(tty.as_fd()).map_err(failed("read the settings of"))?;
        settings.set_modes(tty.as_fd()).map_err(failed("set the process's terminal modes on"))?;
        tracing::info!(
            echo = settings.echoes(),
            canonical = settings.canonical(),
            rows = window.rows,
            columns = window.columns,
            "terminal modes set"
        );
        Ok(Applied { window_changed, before: Some((tty, before)) })
    }
}

/// Whether a standard stream the image recorded as the outside world,
/// and that the user did not choose, is crp restore's controlling terminal
/// (crp restore's own stream of that number is a descriptor of it).
fn streams_on(files: &FdTable, streams: &Streams) -> bool {
    use std::os::unix::fs::MetadataExt;
    // Not the descriptor's own stat: one of /dev/tty is of /dev/tty (5:0).
    let Ok(controlling) = crp_ptrace::procfs::Stat::read(std::process::id().cast_signed())
        .and_then(|stat| stat.number::<i64>(7))
        .map(|device| device.cast_unsigned() & 0xffff_ffff)
    else {
        return false;
    };
    files.records().any(|record| {
        let FdTarget::Inherited { stream } = record.target else { return false };
        if streams.chosen_for(record.fd).is_some() {
            return false;
        }
        std::fs::metadata(format!("/proc/self/fd/{}", streams.source_of_stream(stream)))
            .is_ok_and(|own| own.file_type().is_char_device() && own.rdev() == controlling)
    })
}
