//! `crp restore`: validate the image and the host, fork a child with the
//! checkpointed PID, rebuild the process inside it by injected syscalls,
//! load its registers and let it run.

pub(crate) mod bootstrap;
pub mod chain;
pub mod lazy;
pub(crate) mod memory;
mod terminal;
pub(crate) mod threads;
pub mod trust;
pub mod validate;

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crp_image::ImageReader;
use crp_locks::LockState;
use crp_ptrace::{ChildGuard, EngineError, Injector, Tracee, spawn_stopped_child};
use nix::sys::ptrace;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::backend::{Backend, RestoreBackend};
use crate::error::CrpError;
use crate::model::ProcessImage;
use crate::plan;
pub use crate::plan::Choices;
use crate::{cancel, faults};

#[derive(Debug, Clone)]
pub struct RestorePlan {
    pub image: PathBuf,
    pub detach: bool,
    pub pid_must_match: bool,
    pub backend: Backend,
    /// Restore another user's image with crp's own credentials.
    pub trust_image: bool,
    /// What the restored process's descriptors the user chose become
    /// (`--stdin`, `--stdout`, `--stderr`, `--fd N=...`).
    pub descriptors: Vec<FdChoice>,
    /// A file to write the restored process's PID into once it runs.
    pub pidfile: Option<PathBuf>,
    /// Restore although a mapped or open file changed since the dump (a
    /// warning names each); one shrunk below a mapping's end is refused.
    pub allow_changed_files: bool,
    /// Release the process before its private anonymous pages are in:
    /// they come on first touch or in the background (see [`lazy`]).
    pub lazy: bool,
}

/// What one descriptor of the restored process becomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StreamChoice {
    /// As the image says: a terminal or pipe on fds 0-2 becomes crp
    /// restore's own stream, a regular file is reopened where it was.
    #[default]
    AsDumped,
    /// crp restore's own descriptor of that number, whatever the image
    /// recorded.
    Inherit,
    /// /dev/null.
    Null,
    /// This file (read for stdin and for what the process read; created or
    /// appended to for the others).
    File(PathBuf),
}

impl std::str::FromStr for StreamChoice {
    type Err = std::convert::Infallible;

    /// `inherit`, `null`, or a file path.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "inherit" => Self::Inherit,
            "null" => Self::Null,
            path => Self::File(PathBuf::from(path)),
        })
    }
}

/// `--fd N=CHOICE`: descriptor `fd` of the restored process becomes `choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdChoice {
    pub fd: i32,
    pub choice: StreamChoice,
}

impl std::str::FromStr for FdChoice {
    type Err = String;

    /// `N=inherit`, `N=null` or `N=FILE`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (number, choice) = text.split_once('=').ok_or_else(|| format!("{text:?} is not N=inherit|null|FILE"))?;
        let fd = number.parse::<i32>().ok().filter(|fd| *fd >= 0).ok_or_else(|| {
            format!("{number:?} is not a descriptor number (in {text:?}, which should be N=inherit|null|FILE)")
        })?;
        if choice.is_empty() {
            return Err(format!("{text:?} names nothing for fd {fd}: give inherit, null or a file"));
        }
        Ok(Self { fd, choice: choice.parse().unwrap_or_default() })
    }
}

/// The descriptors the user chose, opened by crp (on its user's request,
/// with its credentials) before the child exists, so that a bad path or a
/// descriptor crp restore lacks fails first; the child inherits them and
/// hands them over. A file is opened the way the process used that
/// descriptor: read for stdin or a description it only read, else created
/// or appended to (read and written for one it read and wrote).
fn open_streams(
    choices: &[FdChoice],
    table: &crp_compound::files::FdTable,
) -> Result<(Vec<std::fs::File>, crp_compound::files::Streams), CrpError> {
    let mut streams = crp_compound::files::Streams::default();
    let mut files = Vec::new();
    for (index, FdChoice { fd, choice }) in choices.iter().enumerate() {
        let fd = *fd;
        if choices[..index].iter().any(|earlier| earlier.fd == fd) {
            return Err(CrpError::ChosenTwice { fd });
        }
        let name = descriptor_name(fd);
        let path = match choice {
            StreamChoice::AsDumped => continue,
            StreamChoice::Inherit => {
                if std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
                    return Err(CrpError::NothingToHandOver { fd, name });
                }
                streams.chosen.push(crp_compound::files::Handed { fd, source: fd });
                continue;
            }
            StreamChoice::Null => std::path::Path::new("/dev/null"),
            StreamChoice::File(path) => path.as_path(),
        };
        let recorded = table
            .descriptors
            .iter()
            .find(|descriptor| descriptor.fd == fd)
            .and_then(|descriptor| table.file_of(descriptor))
            .map(|file| file.flags & libc::O_ACCMODE);
        let mut options = std::fs::OpenOptions::new();
        match (fd, recorded) {
            (0, _) | (_, Some(libc::O_RDONLY)) => options.read(true),
            (3.., Some(libc::O_RDWR)) => options.read(true).write(true).create(true),
            _ => options.append(true).create(true),
        };
        let file = options.open(path).map_err(|source| CrpError::Io {
            action: format!("open {} for the restored process's {name}", path.display()),
            source,
        })?;
        streams.chosen.push(crp_compound::files::Handed { fd, source: file.as_raw_fd() });
        files.push(file);
    }
    Ok((files, streams))
}

/// "stdin", "stdout", "stderr" or "fd N".
fn descriptor_name(fd: i32) -> String {
    match fd {
        0 => "stdin".to_owned(),
        1 => "stdout".to_owned(),
        2 => "stderr".to_owned(),
        _ => format!("fd {fd}"),
    }
}

/// Says on stderr which pipes come back with their other end closed: the
/// process held one end, something outside it the other, and the user
/// handed nothing over for it.
fn warn_of_outside_ends(table: &crp_compound::files::FdTable, streams: &crp_compound::files::Streams) {
    for end in table.outside_ends() {
        if streams.chosen_for(end.fd).is_some() {
            continue;
        }
        let fd = end.fd;
        if end.writes {
            eprintln!(
                "crp: warning: fd {fd} wrote to a pipe (pipe:[{}]) read outside the process; it is restored as a \
                 pipe nobody reads (writes fail with EPIPE). Hand one over with --fd {fd}=inherit|null|FILE",
                end.inode
            );
        } else {
            eprintln!(
                "crp: warning: fd {fd} read from a pipe (pipe:[{}]) written outside the process; it is restored \
                 with the {} bytes it held, then end of file. Hand one over with --fd {fd}=inherit|null|FILE",
                end.inode, end.buffered
            );
        }
    }
}

/// Says on stderr which descriptors' owners (F_SETOWN) named another
/// process or group that is gone: their SIGIO and SIGURG go nowhere now.
fn warn_of_gone_owners(table: &crp_compound::files::FdTable) {
    use crp_compound::files::{OwnerId, OwnerKind};
    for (fd, owner) in crp_compound::files::owner::others(table) {
        let OwnerId::Other(id) = owner.id else { continue };
        let target = if owner.kind == OwnerKind::Group { -id } else { id };
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(target), None) == Err(nix::errno::Errno::ESRCH) {
            eprintln!(
                "crp: warning: fd {fd} sent its signals (F_SETOWN) to {}, which no longer exists; it is restored \
                 without an owner",
                owner.describe()
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// The process runs on its own.
    Detached { pid: i32 },
    /// The process ran to its end; the exit code crp passes on.
    Finished { pid: i32, exit_code: i32 },
}

pub fn restore(plan: &RestorePlan) -> Result<RestoreOutcome, CrpError> {
    tracing::info!(image = %plan.image.display(), backend = ?plan.backend, "restore: opening the image");
    // A missing module is said first: nothing else matters without it.
    if plan.backend == Backend::Kmod {
        drop(crate::kmod::Device::open()?);
    }
    if plan.lazy && plan.backend == Backend::Kmod {
        return Err(CrpError::Incompatible { reason: "--lazy works with the userspace back end only".into() });
    }
    let reader = std::sync::Arc::new(if plan.lazy {
        ImageReader::open_deferring_pages(&plan.image)?
    } else {
        ImageReader::open(&plan.image)?
    });
    tracing::debug!(file_bytes = reader.file_length(), page_runs = reader.page_runs().len(), "checksums verified");
    let image = validate::load_image(&reader)?;
    tracing::info!(pid = image.pid, vmas = image.vmas.len(), files = image.files.len(), "image validated");
    // An incremental image's parents, each found and checked now.
    let chain = chain::Chain::open(&plan.image, &reader, &image.chain)?;
    if !chain.is_empty() && plan.backend == Backend::Kmod {
        return Err(crate::incremental::IncrementalError::KmodRestore.into());
    }
    if !chain.is_empty() && plan.lazy {
        return Err(CrpError::Incompatible {
            reason: "--lazy does not restore an incremental image yet (restore it without --lazy)".into(),
        });
    }
    let chain_pages = chain::ChainPages(chain.pieces(&reader, &image.chain));
    let image_pages = memory::ImagePages(&reader);
    let lazy = plan
        .lazy
        .then(|| lazy::LazyPages::new(std::sync::Arc::clone(&reader), &image.vmas, &image.guard_regions))
        .transpose()?;
    let pages: &dyn crp_ptrace::Pages = match &lazy {
        Some(lazy) => lazy,
        None if chain.is_empty() => &image_pages,
        None => &chain_pages,
    };
    let chosen: Vec<i32> = plan.descriptors.iter().map(|choice| choice.fd).collect();
    validate::check_host(&image, plan.allow_changed_files, &chosen)?;
    if plan.backend == Backend::Kmod {
        crate::kmod::memory::check_image(&image)?;
    }
    tracing::info!("host checked: CPU features, vDSO, files and privileges suffice");
    let owner = reader.owner();
    let open_as = trust::decide(
        trust::Owner { uid: owner.0, gid: owner.1 },
        nix::unistd::geteuid().as_raw(),
        &image.credentials.ids,
        plan.trust_image,
    )?;
    let (_stream_files, streams) = open_streams(&plan.descriptors, &image.files)?;
    warn_of_outside_ends(&image.files, &streams);
    warn_of_gone_owners(&image.files);
    crp_compound::files::socket::check_outside_peers(&image.files, &streams)?;
    let terminal = terminal::Terminal::of_restore(&image.session, &image.files, &streams, plan.detach);
    terminal.warn_if_absent(&image.session, &image.files, plan.detach);
    memory::warn_of_outside_sharing(&image.shared_memory);
    let choices = Choices { open_as, streams, attach_terminal: terminal.attached() };
    // Created (empty) now, so that an unwritable pid file fails first.
    let pidfile = plan.pidfile.as_deref().map(PidFile::create).transpose()?;
    faults::reached("validated", 0);
    cancel::check("restore")?;
    // What the back end holds open (the kmod one's device and image file)
    // the child inherits.
    let backend = plan.backend.for_restore(&plan.image)?;
    let child = create_child(image.pid, plan.pid_must_match)?;
    tracing::info!(pid = child.pid().as_raw(), image_pid = image.pid, "child created");
    let placement = image.session.placement(image.pid, child.pid().as_raw(), choices.attach_terminal);
    if !plan.detach && placement == crp_compound::session::Placement::JoinRestorer {
        // It shares crp's process group: the terminal's Ctrl-C reaches it.
        ignore_terminal_interrupts();
    }
    let others = image.threads.get(1..).unwrap_or_default();
    let keep_thread_ids = threads::keep_ids(image.pid, child.pid().as_raw(), others, plan.pid_must_match)?;
    cancel::check("restore")?;
    build(&child, &image, &reader, pages, backend.as_ref(), &choices, &terminal, keep_thread_ids)?;
    drop(backend);
    let pid = child.disarm();
    tracing::info!(pid = pid.as_raw(), "released: the process runs");
    if let Some(lazy) = &lazy {
        lazy.released();
    }
    if let Some(pidfile) = pidfile {
        // The process runs already: a failure here is reported, not undone.
        pidfile.write(pid.as_raw())?;
    }
    if let Some(lazy) = &lazy {
        finish_lazy(lazy)?;
    }
    if plan.detach {
        return Ok(RestoreOutcome::Detached { pid: pid.as_raw() });
    }
    let exit_code = wait_for_exit(pid)?;
    tracing::info!(pid = pid.as_raw(), exit_code, "the process ended");
    Ok(RestoreOutcome::Finished { pid: pid.as_raw(), exit_code })
}

/// The child gets the old PID when it is free; otherwise a new one, unless
/// the caller insists.
fn create_child(pid: i32, pid_must_match: bool) -> Result<ChildGuard, CrpError> {
    match spawn_stopped_child(Some(pid), Some(faults::reached)) {
        Ok(child) => Ok(child),
        Err(EngineError::Spawn { .. }) if pid_must_match && pid_in_use(pid) => Err(CrpError::PidTaken { pid }),
        Err(EngineError::Spawn { .. }) if pid_in_use(pid) => {
            let child = spawn_stopped_child(None, Some(faults::reached))?;
            eprintln!(
                "crp: warning: pid {pid} is in use; the process is restored as pid {} (--pid-must-match refuses instead)",
                child.pid()
            );
            Ok(child)
        }
        Err(other) => Err(other.into()),
    }
}

/// `--pidfile`: created before the child exists, written once it runs.
struct PidFile {
    path: PathBuf,
    file: std::fs::File,
}

impl PidFile {
    fn create(path: &std::path::Path) -> Result<Self, CrpError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|source| CrpError::Io { action: format!("create pid file {}", path.display()), source })?;
        Ok(Self { path: path.to_owned(), file })
    }

    fn write(mut self, pid: i32) -> Result<(), CrpError> {
        use std::io::Write;
        writeln!(self.file, "{pid}")
            .and_then(|()| self.file.sync_all())
            .map_err(|source| CrpError::Io { action: format!("write pid file {}", self.path.display()), source })
    }
}

fn pid_in_use(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Stays until every page of a lazy restore is in. When the pager failed
/// (it killed the process then), the process is reaped and the failure
/// returned.
fn finish_lazy(lazy: &lazy::LazyPages) -> Result<(), CrpError> {
    let Some((pid, result)) = lazy.finish() else { return Ok(()) };
    match result {
        Ok(stats) => {
            tracing::info!(pid = pid.as_raw(), ?stats, "every page is in");
            Ok(())
        }
        Err(source) => {
            let _ = crp_ptrace::sys::wait_for(pid);
            Err(CrpError::Lazy { pid: pid.as_raw(), source })
        }
    }
}

/// Rebuilds the process in the child through `backend`.
#[expect(clippy::too_many_arguments, reason = "the restore's parts, each checked before the child was made")]
fn build(
    child: &ChildGuard,
    image: &ProcessImage,
    reader: &ImageReader,
    pages: &dyn crp_ptrace::Pages,
    backend: &dyn RestoreBackend,
    choices: &Choices,
    terminal: &terminal::Terminal,
    keep_thread_ids: bool,
) -> Result<(), CrpError> {
    let pid = child.pid();
    let raw = pid.as_raw();
    let start =
        ptrace::getregs(pid).map_err(|errno| EngineError::Ptrace { operation: "PTRACE_GETREGS", pid: raw, errno })?;
    // The child stopped right after its own kill(SIGSTOP) syscall.
    let mut injector = Injector::new(pid, start.rip - 2, start);
    LockState::unregister_inherited_rseq(&mut injector)?;
    let child_maps = injector.mappings()?;
    let target = validate::target_space(image)?;

    let gadget = bootstrap::install_gadget(&mut injector, &target, &child_maps)?;
    tracing::debug!(gadget = format_args!("{:#x}", gadget.address), "syscall gadget mapped");
    // Everything opened from here on is opened as the image's owner.
    if let Some(identity) = &choices.open_as {
        trust::open_as(&mut injector, identity)?;
    }
    let mut rebuild = plan::Rebuild {
        injector: &mut injector,
        pid,
        image,
        reader,
        pages,
        choices,
        gadget,
        threads: Vec::new(),
        keep_thread_ids,
    };
    backend.rebuild(&mut rebuild)?;
    let mut threads = std::mem::take(&mut rebuild.threads);
    let mut pending = injector.take_deferred_signals();
    pending.extend(threads.iter_mut().flat_map(Injector::take_deferred_signals));
    if image.task.stopped {
        // Queued now, it stops the process before its first instruction.
        pending.push(libc::SIGSTOP);
    }
    for signal in pending {
        // SAFETY: kill(2) on the child crp holds; no memory is involved.
        let _ = unsafe { libc::kill(pid.as_raw(), signal) };
    }
    // Until the child is released, a cancelled restore kills it (the
    // guard's drop).
    faults::reached("built", 0);
    tracing::info!(pid = raw, stopped = image.task.stopped, "state restored");
    cancel::check("restore")?;
    // Last, so that a failed restore leaves crp's terminal as it was.
    let applied = terminal.apply(&image.session)?;
    if applied.window_changed {
        // Queued before the release, like the signals above.
        let _ = kill(pid, Signal::SIGWINCH);
    }
    // Every thread is ready: the others go first, the leader last, one
    // right after the other.
    let tids = threads.iter().map(|thread| Pid::from_raw(crp_ptrace::Tracee::pid(thread)));
    for tid in tids.chain([pid]) {
        ptrace::detach(tid, None).map_err(|errno| {
            applied.undo();
            EngineError::Ptrace { operation: "PTRACE_DETACH", pid: tid.as_raw(), errno }
        })?;
    }
    Ok(())
}

/// Like system(3), a crp that will wait for the process ignores SIGINT and
/// SIGQUIT when the process shares its process group: a Ctrl-C reaches the
/// restored process, which decides what it means, and crp still reports
/// how it ended. (A process in a group of its own gets them from crp's
/// wait, which passes on what crp receives.)
/// The child's own dispositions are all set from the image.
fn ignore_terminal_interrupts() {
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGQUIT] {
        // SAFETY: SIG_IGN installs no handler, so no code of crp's can run
        // in signal context.
        let _ = unsafe { sigaction(signal, &ignore) };
    }
}

/// Waits for the restored process like a shell waits for a command: its
/// exit code, or 128 + N when killed by signal N.
fn wait_for_exit(pid: Pid) -> Result<i32, CrpError> {
    let mut forwarded = None;
    loop {
        // A SIGTERM or SIGHUP to crp now is meant for the process it runs.
        if let Some(raw) = cancel::requested().filter(|raw| Some(*raw) != forwarded) {
            if let Ok(signal) = Signal::try_from(raw) {
                let _ = kill(pid, signal);
            }
            forwarded = Some(raw);
        }
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => {
                return Err(CrpError::Io { action: format!("wait for pid {pid}"), source: errno.into() });
            }
        }
    }
}
