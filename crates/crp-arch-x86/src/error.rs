//! Failures of arch-state capture, checks and re-establishment.

#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    #[error(transparent)]
    Engine(#[from] crp_ptrace::EngineError),
    #[error("{operation} on pid {pid}: {errno}")]
    Ptrace { operation: &'static str, pid: i32, errno: nix::errno::Errno },
    #[error(
        "this CPU lacks XSAVE features the image uses: image needs {image:#x}, CPU offers {host:#x} (missing {missing:#x})"
    )]
    MissingXsaveFeatures { image: u64, host: u64, missing: u64 },
    #[error("XSAVE area of {length} bytes is too short (at least 576 needed)")]
    ShortXsaveArea { length: usize },
    #[error("vDSO layout differs: image has {image}, this kernel has {host}")]
    VdsoMismatch { image: String, host: String },
    #[error("register file has {found} entries, expected {expected}")]
    RegisterCount { found: usize, expected: usize },
    #[error("register {name} = {value:#x} {reason}")]
    MalformedRegister { name: &'static str, value: u64, reason: &'static str },
    #[error("XSAVE area: {reason}")]
    MalformedXsave { reason: String },
    #[error("no hole of {bytes:#x} bytes left in the address space to move the vDSO through")]
    NoHole { bytes: u64 },
    #[error("vDSO mapping {index} ({name} [{start:#x}, {end:#x})) {reason}")]
    MalformedVdso { index: usize, name: String, start: u64, end: u64, reason: &'static str },
}
