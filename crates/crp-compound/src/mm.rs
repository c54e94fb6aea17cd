//! The mm_struct fields user space can see and set: code, data, brk and
//! stack bounds, the argument and environment areas, the auxiliary vector
//! and the executable link. Restored in one `prctl(PR_SET_MM_MAP)`.

use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};

use crate::error::{CompoundError, Unsupported};
use crate::valid::{Invalid, check_path};

/// Largest auxv PR_SET_MM_MAP accepts (AT_VECTOR_SIZE words).
const MAX_AUXV_BYTES: usize = 448;
/// `PR_SET_MM_MAP` (not exported by the libc crate for Linux).
const PR_SET_MM_MAP: u64 = 14;
/// `sizeof(struct prctl_mm_map)`.
const PRCTL_MM_MAP_SIZE: usize = 104;

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// The auxiliary vector as raw words, AT_NULL pair included.
    pub auxv: Vec<u64>,
    pub exe_path: String,
}

/// Indices into `procfs::stat_fields` (field N of proc(5) is index N - 3).
const STAT_START_CODE: usize = 26 - 3;
const STAT_END_CODE: usize = 27 - 3;
const STAT_START_STACK: usize = 28 - 3;
const STAT_START_DATA: usize = 45 - 3;

/// The executable `pid` runs; a deleted one is refused.
pub fn exe_path_of(pid: i32) -> Result<String, CompoundError> {
    let exe_link = format!("/proc/{pid}/exe");
    let exe_path = std::fs::read_link(&exe_link)
        .map_err(CompoundError::io("read link", &exe_link))?
        .to_string_lossy()
        .into_owned();
    if exe_path.ends_with(" (deleted)") {
        return Err(Unsupported { what: "a deleted executable".into(), location: exe_path }.into());
    }
    Ok(exe_path)
}

impl MmFields {
    /// Reads the fields of a stopped tracee; brk is not in /proc, so it is
    /// read with an injected `brk(0)`.
    pub fn capture(tracee: &mut dyn Tracee) -> Result<Self, CompoundError> {
        let pid = tracee.pid();
        let stat_path = format!("/proc/{pid}/stat");
        let fields = crp_ptrace::procfs::stat_fields(pid).map_err(CompoundError::io("read", &stat_path))?;
        let field = |index: usize| -> Result<u64, CompoundError> {
            fields.get(index).and_then(|value| value.parse().ok()).ok_or_else(|| CompoundError::Malformed {
                path: stat_path.clone().into(),
                reason: format!("field {} missing or not a number", index + 3),
            })
        };
        let auxv_path = format!("/proc/{pid}/auxv");
        let auxv_bytes = std::fs::read(&auxv_path).map_err(CompoundError::io("read", &auxv_path))?;
        let auxv: Vec<u64> =
            auxv_bytes.chunks_exact(8).map(|word| u64::from_le_bytes(word.try_into().unwrap_or([0; 8]))).collect();
        let exe_path = exe_path_of(pid)?;
        let brk = tracee.syscall("brk", libc::SYS_brk, [0; 6])?;
        Ok(Self {
            start_code: field(STAT_START_CODE)?,
            end_code: field(STAT_END_CODE)?,
            start_stack: field(STAT_START_STACK)?,
            start_data: field(STAT_START_DATA)?,
            end_data: field(STAT_START_DATA + 1)?,
            start_brk: field(STAT_START_DATA + 2)?,
            brk,
            arg_start: field(STAT_START_DATA + 3)?,
            arg_end: field(STAT_START_DATA + 4)?,
            env_start: field(STAT_START_DATA + 5)?,
            env_end: field(STAT_START_DATA + 6)?,
            auxv,
            exe_path,
        })
    }

    /// The 104-byte `struct prctl_mm_map` with the auxv at `auxv_address`.
    fn prctl_mm_map(&self, auxv_address: u64, auxv_size: u32, exe_fd: u32) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(PRCTL_MM_MAP_SIZE);
        for value in self.bounds().into_iter().chain([auxv_address]) {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes.extend_from_slice(&auxv_size.to_le_bytes());
        bytes.extend_from_slice(&exe_fd.to_le_bytes());
        bytes
    }

    /// The address fields in `struct prctl_mm_map` order: code, data, brk
    /// and stack bounds, then the argument and environment areas.
    pub fn bounds(&self) -> [u64; 11] {
        [
            self.start_code,
            self.end_code,
            self.start_data,
            self.end_data,
            self.start_brk,
            self.brk,
            self.start_stack,
            self.arg_start,
            self.arg_end,
            self.env_start,
            self.env_end,
        ]
    }

    /// The fields from [`MmFields::bounds`] order, the auxv and the exe path.
    pub fn from_bounds(bounds: [u64; 11], auxv: Vec<u64>, exe_path: String) -> Self {
        let [
            start_code,
            end_code,
            start_data,
            end_data,
            start_brk,
            brk,
            start_stack,
            arg_start,
            arg_end,
            env_start,
            env_end,
        ] = bounds;
        Self {
            start_code,
            end_code,
            start_data,
            end_data,
            start_brk,
            brk,
            start_stack,
            arg_start,
            arg_end,
            env_start,
            env_end,
            auxv,
            exe_path,
        }
    }

    /// Refuses fields `PR_SET_MM_MAP` would refuse: bounds out of order or
    /// outside `user` (`[mmap_min_addr, TASK_SIZE)`), an auxv of an odd
    /// number of words or longer than the kernel keeps, an executable path
    /// the kernel would misread.
    pub fn check(&self, user: std::ops::Range<u64>) -> Result<(), Invalid> {
        let ordered = [
            ("start_code", self.start_code, "end_code", self.end_code, self.start_code < self.end_code),
            ("start_data", self.start_data, "end_data", self.end_data, self.start_data <= self.end_data),
            ("start_brk", self.start_brk, "brk", self.brk, self.start_brk <= self.brk),
            ("arg_start", self.arg_start, "arg_end", self.arg_end, self.arg_start <= self.arg_end),
            ("env_start", self.env_start, "env_end", self.env_end, self.env_start <= self.env_end),
        ];
        for (low_name, low, high_name, high, in_order) in ordered {
            if !in_order {
                return Err(Invalid::new(
                    format!("mm {low_name}"),
                    format!("{low:#x} is not below {high_name} {high:#x}"),
                ));
            }
        }
        const NAMES: [&str; 11] = [
            "start_code",
            "end_code",
            "start_data",
            "end_data",
            "start_brk",
            "brk",
            "start_stack",
            "arg_start",
            "arg_end",
            "env_start",
            "env_end",
        ];
        for (name, address) in NAMES.iter().zip(self.bounds()) {
            if !user.contains(&address) {
                return Err(Invalid::new(format!("mm {name}"), format!("{address:#x} is outside user space")));
            }
        }
        if !self.auxv.len().is_multiple_of(2) || self.auxv.len() * 8 > MAX_AUXV_BYTES {
            return Err(Invalid::new(
                "auxv",
                format!("has {} words, not an even number of at most {}", self.auxv.len(), MAX_AUXV_BYTES / 8),
            ));
        }
        check_path("executable path", &self.exe_path)
    }

    /// Sets every field with `PR_SET_MM_MAP`, the executable link included.
    /// Must run after the restorer's own executable is unmapped.
    pub fn restore(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        let auxv: Vec<u8> = self.auxv.iter().flat_map(|word| word.to_le_bytes()).take(MAX_AUXV_BYTES).collect();
        let mut scratch = tracee.scratch();
        let exe_path = scratch.push_c_string(self.exe_path.as_bytes());
        let auxv_address = scratch.push(&auxv);
        let map_address = scratch.reserve(PRCTL_MM_MAP_SIZE);
        scratch.commit(tracee)?;
        let flags = arg(libc::O_RDONLY | libc::O_CLOEXEC);
        let exe_fd = tracee.syscall("openat", libc::SYS_openat, [arg(libc::AT_FDCWD), exe_path, flags, 0, 0, 0])?;
        // Both fit: auxv is capped at 448 bytes, and fds are ints.
        let auxv_size = u32::try_from(auxv.len()).unwrap_or(0);
        let map = self.prctl_mm_map(auxv_address, auxv_size, u32::try_from(exe_fd).unwrap_or(u32::MAX));
        tracee.write_memory(map_address, &map)?;
        let result = tracee.syscall(
            "prctl(PR_SET_MM, PR_SET_MM_MAP)",
            libc::SYS_prctl,
            [libc::PR_SET_MM as u64, PR_SET_MM_MAP, map_address, map.len() as u64, 0, 0],
        );
        tracee.syscall("close", libc::SYS_close, [exe_fd, 0, 0, 0, 0, 0])?;
        result.map(drop)
    }
}

impl MmFields {
    /// Points /proc/PID/exe at the image's executable with
    /// `PR_SET_MM_EXE_FILE`, leaving the other fields as they are (the
    /// kernel module sets those, but cannot set the link: neither
    /// `set_mm_exe_file` nor `replace_mm_exe_file` is exported).
    pub fn restore_exe_link(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
        let mut scratch = tracee.scratch();
        let exe_path = scratch.push_c_string(self.exe_path.as_bytes());
        scratch.commit(tracee)?;
        let flags = arg(libc::O_RDONLY | libc::O_CLOEXEC);
        let exe_fd = tracee.syscall("openat", libc::SYS_openat, [arg(libc::AT_FDCWD), exe_path, flags, 0, 0, 0])?;
        let result = tracee.syscall(
            "prctl(PR_SET_MM, PR_SET_MM_EXE_FILE)",
            libc::SYS_prctl,
            [libc::PR_SET_MM as u64, libc::PR_SET_MM_EXE_FILE as u64, exe_fd, 0, 0, 0],
        );
        tracee.syscall("close", libc::SYS_close, [exe_fd, 0, 0, 0, 0, 0])?;
        result.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_round_trip() {
        let fields = MmFields::from_bounds([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], vec![6, 4096, 0, 0], "/bin/x".into());
        assert_eq!((fields.start_code, fields.brk, fields.env_end), (1, 6, 11));
        assert_eq!(fields.bounds(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn prctl_mm_map_is_104_bytes_in_kernel_order() {
        let fields = MmFields { start_code: 1, env_end: 11, ..MmFields::default() };
        let map = fields.prctl_mm_map(0xabc, 16, 3);
        assert_eq!(map.len(), 104);
        assert_eq!(map[0], 1);
        assert_eq!(map[80], 11);
        assert_eq!(u64::from_le_bytes(map[88..96].try_into().unwrap()), 0xabc);
        assert_eq!(u32::from_le_bytes(map[96..100].try_into().unwrap()), 16);
        assert_eq!(u32::from_le_bytes(map[100..104].try_into().unwrap()), 3);
    }
}
