//! crp's top-level error, and the exit code each kind of failure maps to.

use crp_compound::Unsupported;

#[derive(Debug, thiserror::Error)]
pub enum CrpError {
    #[error("{0}")]
    Image(#[from] crp_image::ImageError),
    #[error("{0}")]
    Engine(#[from] crp_ptrace::EngineError),
    #[error("{0}")]
    Arch(#[from] crp_arch_x86::ArchError),
    #[error("{0}")]
    Compound(#[from] crp_compound::CompoundError),
    #[error("{0}")]
    Locks(#[from] crp_locks::LockError),
    #[error("{0}")]
    Kmod(#[from] crate::kmod::KmodError),
    #[error("{0}")]
    Incremental(#[from] crate::incremental::IncrementalError),
    #[error("copy-on-write dump: {0}")]
    CopyOnWrite(#[from] crp_compound::vma::cow::CowError),
    #[error("cannot dump pid {pid}: {refusal}{}; the process was left running and untraced", more_blockers(*pid, *others))]
    Unsupported { pid: i32, refusal: Unsupported, others: usize },
    #[error("cannot dump pid {pid}: it is {what}; crp checkpoints user processes only, never {kind}")]
    NotUserProcess { pid: i32, what: String, kind: &'static str },
    #[error("this host cannot restore the image: {what} {path} {problem}")]
    MissingOnHost { what: &'static str, path: String, problem: String },
    #[error("crp restore lacks privileges the process had: {missing}; {advice}")]
    LacksPrivileges { missing: String, advice: String },
    #[error("no process {pid}: {reason}")]
    NoProcess { pid: i32, reason: String },
    #[error(
        "crp lacks permission to read and trace pid {pid} ({owner}, crp runs as uid {crp_uid}): {reason}; \
         crp must run as root, or with CAP_SYS_PTRACE (and CAP_CHECKPOINT_RESTORE to restore)"
    )]
    NoPermission { pid: i32, owner: String, crp_uid: u32, reason: String },
    #[error(
        "cannot dump pid {pid}: it is already being traced by pid {tracer} ({tracer_name}), a debugger or another \
         crp; a process has one tracer at a time: let that one finish or detach, then try again"
    )]
    AlreadyTraced { pid: i32, tracer: i32, tracer_name: String },
    #[error("{0}")]
    Proc(#[from] crp_ptrace::procfs::ProcError),
    #[error("the image is invalid: {reason}")]
    InvalidImage { reason: String },
    #[error("this host cannot restore the image: {reason}")]
    Incompatible { reason: String },
    #[error("pid {pid} is in use and --pid-must-match was given")]
    PidTaken { pid: i32 },
    #[error("{operation} cancelled by signal {signal} ({}); {}", signal_name(*signal), cancel_outcome(operation))]
    Cancelled { operation: &'static str, signal: i32 },
    #[error(
        "the image is owned by {owner} but describes {what}: restore it as that user, or pass --trust-image if you trust what it holds"
    )]
    UntrustedImage { owner: String, what: String },
    #[error(
        "the restored process's {name} is to be crp restore's own (--fd {fd}=inherit), but crp restore has no fd \
         {fd}: open one for it (`{fd}>FILE` or `{fd}<FILE` in a shell), or choose null or a file"
    )]
    NothingToHandOver { fd: i32, name: String },
    #[error("fd {fd} is chosen twice (--stdin/--stdout/--stderr and --fd name the same descriptor)")]
    ChosenTwice { fd: i32 },
    #[error("lazy restore of pid {pid}: {source}")]
    Lazy { pid: i32, source: crate::restore::lazy::LazyError },
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
}

/// How many more blockers a refusal has, and where to see them.
fn more_blockers(pid: i32, others: usize) -> String {
    match others {
        0 => String::new(),
        1 => format!(" (and 1 more: `crp dump --check {pid}` lists all)"),
        others => format!(" (and {others} more: `crp dump --check {pid}` lists all)"),
    }
}

impl CrpError {
    pub fn unsupported(pid: i32, unsupported: Unsupported) -> Self {
        Self::Unsupported { pid, refusal: unsupported, others: 0 }
    }

    /// The documented exit code (README, "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Unsupported { .. }
            | Self::NotUserProcess { .. }
            | Self::Compound(crp_compound::CompoundError::Unsupported(_))
            | Self::Locks(crp_locks::LockError::Unsupported(_)) => 3,
            // Writing failed (or the output path is a directory, a FIFO...):
            // nothing is wrong with any image.
            Self::Image(
                crp_image::ImageError::Io { .. }
                | crp_image::ImageError::OutputNotRegularFile { .. }
                | crp_image::ImageError::OutputFolderMissing { .. }
                | crp_image::ImageError::PageSource { .. }
                | crp_image::ImageError::Serialize { .. },
            ) => 1,
            // Everything else, a FIFO or directory given as the image
            // (`ImageError::NotRegularFile`) included, is an invalid image.
            Self::Image(_) | Self::InvalidImage { .. } => 4,
            Self::Lazy { source, .. } if source.is_corruption() => 4,
            Self::Arch(
                crp_arch_x86::ArchError::MissingXsaveFeatures { .. } | crp_arch_x86::ArchError::VdsoMismatch { .. },
            )
            | Self::Compound(crp_compound::CompoundError::FileChanged { .. })
            | Self::Compound(crp_compound::CompoundError::FileShrunk { .. })
            | Self::Compound(crp_compound::CompoundError::AddressTaken { .. })
            | Self::Compound(crp_compound::CompoundError::Incompatible { .. })
            | Self::Incompatible { .. }
            | Self::MissingOnHost { .. }
            | Self::Kmod(crate::kmod::KmodError::NotLoaded) => 5,
            Self::PidTaken { .. } => 6,
            Self::Incremental(error) => error.exit_code(),
            Self::Cancelled { signal, .. } => 128 + signal,
            Self::NoPermission { .. } | Self::AlreadyTraced { .. } | Self::LacksPrivileges { .. } | Self::Proc(_) => 1,
            _ => 1,
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "another signal",
    }
}

fn cancel_outcome(operation: &str) -> &'static str {
    match operation {
        "dump" => "the process was left running and untraced, and no image was written",
        _ => "nothing was restored and no process was left behind",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_regular_image_is_an_invalid_image() {
        let error = CrpError::from(crp_image::ImageError::NotRegularFile { path: "/tmp/fifo".into(), kind: "a FIFO" });
        assert_eq!(error.exit_code(), 4);
    }

    #[test]
    fn a_non_regular_output_is_an_operational_failure() {
        let error =
            CrpError::from(crp_image::ImageError::OutputNotRegularFile { path: "/tmp".into(), kind: "a directory" });
        assert_eq!(error.exit_code(), 1);
    }
}
