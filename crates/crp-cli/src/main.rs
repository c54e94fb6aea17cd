//! The `crp` binary: parse arguments into a plan, run it, map failures to
//! the exit codes documented in the README.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crp_cli::dump::{Backend, DumpPlan, Durability, dump};
use crp_cli::restore::{FdChoice, RestoreOutcome, RestorePlan, StreamChoice, restore};
use crp_cli::{CrpError, cancel, check, inspect, logging};
use nix::sys::signal::Signal;

/// Checkpoint a running Linux process into one image file, and restore it.
#[derive(Debug, Parser)]
#[command(name = "crp", version)]
struct Arguments {
    /// Show what crp does on stderr: -v the phases of a dump or restore,
    /// -vv every step (each injected syscall included).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Append a debug-level log of everything crp does to FILE (created
    /// with mode 0600), whatever -v says.
    #[arg(long, value_name = "FILE", global = true)]
    log_file: Option<PathBuf>,
    /// Draw no progress bar. Without it, a dump or restore whose pages take
    /// longer than a second shows one (bytes, rate) on stderr when stderr is
    /// a terminal and -v is not given; never into a pipe or a file.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Freeze a process and write its whole state to an image file.
    ///
    /// The process is killed once the image is safely on disk (complete in
    /// the page cache with --no-sync), unless --leave-running is given. A
    /// descriptor 0-2 that is a terminal or a pipe is recorded as "the
    /// outside world": at restore it is re-attached to the same standard
    /// stream of `crp restore`. Processes with more than one thread,
    /// children, seccomp filters, sockets or other unsupported state are
    /// refused before they are touched; `--check` lists all of what stops a
    /// process from being dumped.
    Dump {
        /// The process to checkpoint.
        pid: i32,
        /// Where to write the image (created with mode 0600).
        #[arg(short, long, required_unless_present = "check")]
        output: Option<PathBuf>,
        /// Touch nothing and write nothing: list everything that stops crp
        /// from dumping the process (exit 3 if anything does, 0 if not).
        #[arg(long, conflicts_with_all = ["output", "leave_running"])]
        check: bool,
        /// Let the process carry on after the dump instead of killing it.
        /// It is frozen only while its state is read, not while the image
        /// is written out.
        #[arg(long)]
        leave_running: bool,
        /// Leave crp's change tracking armed in the process (with
        /// --leave-running): a userfaultfd in asynchronous write-protect
        /// mode on a high descriptor, so that a later `--parent` dump
        /// stores only the pages written since this one.
        #[arg(long, requires = "leave_running")]
        track_changes: bool,
        /// Store only the pages written since PARENT (an image of this
        /// process dumped with --track-changes or --parent) and name it for
        /// the rest; re-arms the tracking. Needs --leave-running.
        #[arg(long, value_name = "PARENT", requires = "leave_running")]
        parent: Option<PathBuf>,
        /// How to read the process: `userspace` (ptrace and /proc, works
        /// everywhere) or `kmod` (the crp kernel module, /dev/crp).
        #[arg(long, value_enum, default_value = "userspace")]
        backend: Backend,
        /// The most data a dump saves of one deleted file or memfd the
        /// process holds open (bytes, or with K, M, G suffixes); a larger
        /// one is refused.
        #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_size)]
        max_file_contents: u64,
        /// Keep established TCP connections to peers outside the process
        /// (by TCP_REPAIR): the peer must still be there at the restore,
        /// and must send nothing meanwhile (it would be reset).
        #[arg(long)]
        tcp_established: bool,
        /// Do not wait for the image to reach the disk: it is complete in
        /// the page cache when crp exits (and the process killed then), and
        /// the kernel writes it back later. Faster, but a crash of the
        /// machine before that may lose the image and the process with it.
        /// Without it, the image is fsynced before the process is killed.
        #[arg(long)]
        no_sync: bool,
    },
    /// Recreate a process from an image; it carries on where it was frozen.
    ///
    /// It gets its old PID when that PID is free. Its standard streams that
    /// were a terminal or a pipe become crp restore's own stdin, stdout and
    /// stderr. Without --detach, crp waits and exits with the process's exit
    /// status (128+N if killed by signal N); like system(3) it ignores
    /// SIGINT and SIGQUIT meanwhile, so a Ctrl-C is the process's to handle.
    Restore {
        /// The image to restore.
        image: PathBuf,
        /// Return once the process runs, printing its PID as the last line.
        #[arg(short, long)]
        detach: bool,
        /// Fail instead of using a new PID when the old one is taken.
        #[arg(long)]
        pid_must_match: bool,
        /// Let the process run before its private anonymous memory is in:
        /// each page comes from the image on its first touch
        /// (userfaultfd), the rest in the background. crp stays until
        /// every page is in (then detaches or waits as without it); if crp
        /// dies before, the process is killed. Userspace back end only.
        #[arg(long)]
        lazy: bool,
        /// How to rebuild the process: `userspace` (ptrace and injected
        /// syscalls) or `kmod` (the crp kernel module, /dev/crp). Either
        /// reads images written by either.
        #[arg(long, value_enum, default_value = "userspace")]
        backend: Backend,
        /// Restore an image file owned by another user with crp's own
        /// credentials. Without it, such an image is restored only if it
        /// describes a process of that user, and every file it opens is
        /// opened as that user.
        #[arg(long)]
        trust_image: bool,
        /// Restore although a file the process mapped or held open changed
        /// since the dump (its size or mtime differ): a warning names each
        /// file and what changed. Only where the change is known to be
        /// safe; a file shrunk below the end of a mapping of it is refused
        /// all the same (the process would get SIGBUS).
        #[arg(long)]
        allow_changed_files: bool,
        /// The restored process's stdin: `inherit` (crp restore's own),
        /// `null`, or a file to read. Default: as dumped (a terminal or pipe
        /// becomes crp restore's own, a file is reopened where it was).
        #[arg(long, value_name = "inherit|null|FILE")]
        stdin: Option<StreamChoice>,
        /// The restored process's stdout: `inherit`, `null`, or a file,
        /// created or appended to. Default: as dumped. With --detach in a
        /// script, choose one (e.g. `null` or a log file): inheriting the
        /// script's pipe keeps `$(crp restore ...)` waiting for the process.
        #[arg(long, value_name = "inherit|null|FILE")]
        stdout: Option<StreamChoice>,
        /// The restored process's stderr, like --stdout.
        #[arg(long, value_name = "inherit|null|FILE")]
        stderr: Option<StreamChoice>,
        /// Descriptor N of the restored process: `N=inherit` (crp restore's
        /// own fd N, e.g. `--fd 5=inherit 5>>log`), `N=null`, or `N=FILE`.
        /// For a pipe whose other end was outside the process (a job
        /// server's, a supervisor's), which is otherwise restored with that
        /// end closed. Repeatable.
        #[arg(long = "fd", value_name = "N=inherit|null|FILE")]
        fds: Vec<FdChoice>,
        /// Write the restored process's PID (and a newline) to this file once
        /// it runs.
        #[arg(long, value_name = "FILE")]
        pidfile: Option<PathBuf>,
    },
    /// Disarm crp's change tracking in a process (left by `crp dump
    /// --track-changes`): its descriptor is closed inside the process, which
    /// is frozen only for that. A later `--parent` dump of it is refused.
    Untrack {
        /// The process whose tracking to disarm.
        pid: i32,
    },
    /// Show what an image holds.
    Inspect {
        image: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Report whether this kernel and CPU give crp what it needs.
    ///
    /// Each probe exercises the feature for real and says which part of
    /// crp needs it. Exit 0 when every required probe passes, 1 otherwise.
    /// It checks this machine, not a process: `crp dump --check PID` lists
    /// what stops one process from being dumped.
    Check {
        /// Machine-readable output: an array of probes with name, required,
        /// ok, detail and needed_for.
        #[arg(long)]
        json: bool,
    },
    /// Print crp's manual page (roff, from these definitions): `crp help-man
    /// | man -l -`, or `crp help-man dump` for one command's page.
    #[command(hide = true)]
    HelpMan {
        /// The command whose page to print (dump, restore, inspect, check).
        command: Option<String>,
    },
}

/// A size in bytes, with an optional K, M or G (binary) suffix.
fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.trim_end_matches(['B', 'i']).char_indices().last() {
        Some((at, 'K' | 'k')) => (&text[..at], 1u64 << 10),
        Some((at, 'M' | 'm')) => (&text[..at], 1 << 20),
        Some((at, 'G' | 'g')) => (&text[..at], 1 << 30),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(unit))
        .ok_or_else(|| format!("{text:?} is not a size in bytes (such as 1048576, 512K, 64M, 2G)"))
}

fn run(command: Command) -> Result<ExitCode, CrpError> {
    match command {
        Command::Dump {
            pid,
            output,
            check,
            leave_running,
            track_changes,
            parent,
            backend,
            max_file_contents,
            tcp_established,
            no_sync,
        } => {
            crp_compound::files::unlinked::set_contents_limit(max_file_contents);
            crp_compound::files::socket::tcp::allow_outside_peers(tcp_established);
            let Some(output) = output.filter(|_| !check) else {
                return check_dump(pid, backend);
            };
            cancel::install(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]);
            let durability = if no_sync { Durability::PageCache } else { Durability::Durable };
            let incremental = crp_cli::incremental::Options { track_changes, parent };
            let plan = DumpPlan { pid, output: output.clone(), leave_running, backend, durability, incremental };
            let report = dump(&plan)?;
            let zeros = match report.zero_pages {
                0 => String::new(),
                pages => format!(" and {:.1} MiB of zero pages left out", (pages << 12) as f64 / (1 << 20) as f64),
            };
            let snapshot = match report.copied_on_write {
                None => String::new(),
                Some(pages) => format!(
                    "; its private memory read copy-on-write while it ran on, {pages} pages copied before their \
                     first write"
                ),
            };
            let inherited = match report.inherited_pages {
                None => String::new(),
                Some(pages) => {
                    format!(", {:.1} MiB inherited from the parent", (pages << 12) as f64 / (1 << 20) as f64)
                }
            };
            eprintln!(
                "crp: dumped pid {pid} to {} ({} VMAs, {:.1} MiB of pages{zeros}{inherited}, frozen {:.1} ms{snapshot})",
                output.display(),
                report.vma_count,
                report.page_bytes as f64 / (1 << 20) as f64,
                report.frozen_for.as_secs_f64() * 1000.0
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            image,
            detach,
            pid_must_match,
            lazy,
            backend,
            trust_image,
            allow_changed_files,
            stdin,
            stdout,
            stderr,
            fds,
            pidfile,
        } => {
            // Without --detach, SIGINT goes to the process instead (restore
            // ignores it once the image is validated, as system(3) does).
            cancel::install(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]);
            let streams = [stdin, stdout, stderr]
                .into_iter()
                .zip(0..)
                .filter_map(|(choice, fd)| choice.map(|choice| FdChoice { fd, choice }));
            let descriptors = streams.chain(fds).collect();
            let plan = RestorePlan {
                image,
                detach,
                pid_must_match,
                backend,
                trust_image,
                descriptors,
                pidfile,
                allow_changed_files,
                lazy,
            };
            match restore(&plan)? {
                RestoreOutcome::Detached { pid } => {
                    println!("{pid}");
                    Ok(ExitCode::SUCCESS)
                }
                RestoreOutcome::Finished { exit_code, .. } => {
                    Ok(ExitCode::from(u8::try_from(exit_code).unwrap_or(255)))
                }
            }
        }
        Command::Untrack { pid } => {
            let closed = crp_cli::incremental::tracking::untrack(pid)?;
            eprintln!("crp: change tracking of pid {pid} disarmed ({closed} descriptor closed in the process)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { image, json } => {
            let reader = crp_image::ImageReader::open(&image)?;
            let summary = inspect::summarize(&reader)?;
            if json {
                println!("{}", render_json(&summary)?);
            } else {
                print!("{}", inspect::render_text(&summary));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::HelpMan { command } => print_man_page(command.as_deref()),
        Command::Check { json } => {
            let probes = check::run();
            if json {
                let reports: Vec<check::ProbeReport> = probes.iter().map(check::Probe::report).collect();
                println!("{}", render_json(&reports)?);
            } else {
                print!("{}", check::render_text(&probes));
            }
            Ok(if check::all_required_present(&probes) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// `crp dump --check`: every blocker of the process, touching nothing.
fn check_dump(pid: i32, backend: Backend) -> Result<ExitCode, CrpError> {
    let blockers = crp_cli::dump::blockers(pid, backend)?;
    if blockers.is_empty() {
        println!("crp: nothing stops a dump of pid {pid}");
        return Ok(ExitCode::SUCCESS);
    }
    let count = blockers.len();
    println!(
        "crp: pid {pid} cannot be dumped: {count} thing{} crp does not support yet",
        if count == 1 { "" } else { "s" }
    );
    for blocker in blockers {
        println!("  {}: {}", blocker.what, blocker.location);
    }
    Ok(ExitCode::from(3))
}

/// The commands with a page of their own, and its name.
const PAGE_NAMES: [(&str, &str); 4] =
    [("dump", "crp-dump"), ("restore", "crp-restore"), ("inspect", "crp-inspect"), ("check", "crp-check")];

/// Renders the manual page of crp, or of one of its commands.
fn print_man_page(name: Option<&str>) -> Result<ExitCode, CrpError> {
    use clap::CommandFactory;
    let crp = Arguments::command();
    let page = match name {
        None => crp,
        Some(name) => match PAGE_NAMES.iter().find(|(command, _)| *command == name) {
            Some((command, page)) => {
                let found = crp.find_subcommand(command).cloned().unwrap_or_else(Arguments::command);
                found.name(*page).version(env!("CARGO_PKG_VERSION"))
            }
            None => {
                eprintln!("crp: error: no command {name:?}: dump, restore, inspect or check");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .map_err(|source| CrpError::Io { action: "render the manual page".into(), source })?;
    std::io::Write::write_all(&mut std::io::stdout(), &roff)
        .map_err(|source| CrpError::Io { action: "write the manual page".into(), source })?;
    Ok(ExitCode::SUCCESS)
}

fn render_json(value: &impl serde::Serialize) -> Result<String, CrpError> {
    serde_json::to_string_pretty(value)
        .map_err(|error| CrpError::Io { action: "render JSON".into(), source: error.into() })
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    if let Err(error) = logging::init(arguments.verbose, arguments.log_file.as_deref()) {
        eprintln!("crp: error: {error}");
        return ExitCode::FAILURE;
    }
    // -v's lines on stderr and a bar redrawn there would overwrite each other.
    crp_cli::progress::set_enabled(!arguments.quiet && arguments.verbose == 0);
    tracing::debug!(version = env!("CARGO_PKG_VERSION"), command = ?arguments.command, "crp started");
    match run(arguments.command) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(target: "crp::outcome", exit_code = error.exit_code(), "{error}");
            eprintln!("crp: error: {error}");
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(1))
        }
    }
}
