//! `/dev/crp` from user space: opening it and the dump-side ioctls. The
//! records are the kernel module's own (`crp-kmod-abi` includes its
//! `abi.rs`).

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;

use crp_kmod_abi::{
    CRP_ABI_VERSION, CRP_IOC_ATTACH, CRP_IOC_DUMP_TASK, CRP_MAX_XSTATE, CrpAttach, CrpDumpRequest, CrpTaskState, CrpVma,
};
use nix::errno::Errno;

/// Where the module's misc device appears.
pub const DEVICE_PATH: &str = "/dev/crp";

#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("the kmod back end needs the crp kernel module: {DEVICE_PATH} does not exist (load crp.ko)")]
    NotLoaded,
    #[error("cannot open {DEVICE_PATH}: {0}")]
    Open(std::io::Error),
    #[error("{operation} on {DEVICE_PATH} for pid {pid} failed: {errno}")]
    Ioctl { operation: &'static str, pid: i32, errno: Errno },
    #[error("the crp kernel module reported a malformed {what}")]
    Malformed { what: &'static str },
    #[error("CRP_IOC_RESTORE left other registers than the image's: {differing}")]
    Registers { differing: String },
}

/// An open `/dev/crp`.
#[derive(Debug)]
pub struct Device {
    file: File,
}

/// What `CRP_IOC_DUMP_TASK` returns for one task.
#[derive(Debug)]
pub struct TaskDump {
    pub state: CrpTaskState,
    /// Each VMA with its name (a path, or a special mapping's name).
    pub vmas: Vec<(CrpVma, String)>,
    pub xstate: Vec<u8>,
}

impl Device {
    pub fn open() -> Result<Self, KmodError> {
        match std::fs::OpenOptions::new().read(true).write(true).open(DEVICE_PATH) {
            Ok(file) => Ok(Self { file }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(KmodError::NotLoaded),
            Err(error) => Err(KmodError::Open(error)),
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Reads the state of `pid`, which the caller holds in a ptrace stop.
    pub fn dump_task(&self, pid: i32) -> Result<TaskDump, KmodError> {
        let mut state = CrpTaskState::default();
        let mut vmas = vec![CrpVma::default(); 256];
        let mut names = vec![0u8; 64 << 10];
        let mut xstate = vec![0u8; CRP_MAX_XSTATE as usize];
        // The task is frozen, so one retry with the room the module asked
        // for suffices; a few more are tolerated, never an endless loop.
        for _ in 0..4 {
            let mut request = CrpDumpRequest {
                abi_version: CRP_ABI_VERSION,
                pid,
                task: (&raw mut state) as u64,
                vmas: vmas.as_mut_ptr() as u64,
                vma_capacity: u32::try_from(vmas.len()).unwrap_or(u32::MAX),
                names: names.as_mut_ptr() as u64,
                names_capacity: u32::try_from(names.len()).unwrap_or(u32::MAX),
                xstate: xstate.as_mut_ptr() as u64,
                xstate_capacity: u32::try_from(xstate.len()).unwrap_or(u32::MAX),
                ..CrpDumpRequest::default()
            };
            // SAFETY: CRP_IOC_DUMP_TASK reads and writes back `request`
            // (its size is encoded in the command) and writes at most the
            // capacities given into `state`, `vmas`, `names` and `xstate`,
            // which all live across the call.
            let result = unsafe { libc::ioctl(self.raw_fd(), CRP_IOC_DUMP_TASK as _, &raw mut request) };
            if result < 0 {
                let errno = Errno::last();
                if errno == Errno::ENOSPC {
                    vmas.resize(request.vma_count as usize + 16, CrpVma::default());
                    names.resize(request.names_used as usize + 4096, 0);
                    continue;
                }
                return Err(KmodError::Ioctl { operation: "CRP_IOC_DUMP_TASK", pid, errno });
            }
            return collect(state, &vmas, &names, &xstate, &request);
        }
        Err(KmodError::Ioctl { operation: "CRP_IOC_DUMP_TASK", pid, errno: Errno::ENOSPC })
    }

    /// Binds this open device to `pid`, whose memory [`Device::read_memory`]
    /// then reads.
    pub fn attach(&self, pid: i32) -> Result<(), KmodError> {
        let request = CrpAttach { abi_version: CRP_ABI_VERSION, pid };
        // SAFETY: CRP_IOC_ATTACH only reads the `CrpAttach` behind the pointer.
        let result = unsafe { libc::ioctl(self.raw_fd(), CRP_IOC_ATTACH as _, &raw const request) };
        if result < 0 {
            return Err(KmodError::Ioctl { operation: "CRP_IOC_ATTACH", pid, errno: Errno::last() });
        }
        Ok(())
    }

    /// Reads the attached task's memory at `address` (the file offset).
    pub fn read_memory(&self, address: u64, buffer: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buffer, address)
    }
}

fn collect(
    state: CrpTaskState,
    vmas: &[CrpVma],
    names: &[u8],
    xstate: &[u8],
    request: &CrpDumpRequest,
) -> Result<TaskDump, KmodError> {
    let vmas = vmas
        .get(..request.vma_count as usize)
        .ok_or(KmodError::Malformed { what: "VMA count" })?
        .iter()
        .map(|vma| {
            let start = vma.name_offset as usize;
            let bytes =
                names.get(start..start + vma.name_length as usize).ok_or(KmodError::Malformed { what: "VMA name" })?;
            Ok((*vma, String::from_utf8_lossy(bytes).into_owned()))
        })
        .collect::<Result<Vec<_>, KmodError>>()?;
    let xstate = xstate.get(..request.xstate_size as usize).ok_or(KmodError::Malformed { what: "XSAVE size" })?;
    Ok(TaskDump { state, vmas, xstate: xstate.to_vec() })
}
