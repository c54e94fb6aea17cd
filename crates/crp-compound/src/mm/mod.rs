//! The mm_struct fields user space can see and set: code, data, brk and
//! stack bounds, the argument and environment areas, the auxiliary vector
//! and the executable link. Restored in one `prctl(PR_SET_MM_MAP)`; the
//! kmod ABI's `CrpMmState` translates to and from them in [`kmod`].

mod kmod;

use crp_ptrace::procfs::Snapshot;
use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt, arg};

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

/// Fields of /proc/PID/stat, numbered as in proc(5).
const STAT_START_CODE: usize = 26;
const STAT_END_CODE: usize = 27;
const STAT_START_STACK: usize = 28;
/// start_data, then end_data, start_brk, arg_start, arg_end, env_start, env_end.
const STAT_START_DATA: usize = 45;

/// /proc/PID/auxv: whole `(type, value)` pairs ending with AT_NULL, no more
/// than PR_SET_MM_MAP takes.
fn parse_auxv(path: &str, bytes: &[u8]) -> Result<Vec<u64>, CompoundError> {
    let malformed = |reason: String| CompoundError::Malformed { path: path.into(), reason };
    let (pairs, rest) = bytes.as_chunks::<16>();
    if !rest.is_empty() {
        return Err(malformed(format!("{} bytes is not a whole number of (type, value) pairs", bytes.len())));
    }
    if bytes.len() > MAX_AUXV_BYTES {
        return Err(malformed(format!("{} bytes, more than the {MAX_AUXV_BYTES} the kernel keeps", bytes.len())));
    }
    // The last pair's type must be AT_NULL (0).
    if pairs.last().is_none_or(|pair| pair[..8] != [0; 8]) {
        return Err(malformed("does not end with AT_NULL".into()));
    }
    let (words, _) = bytes.as_chunks::<8>();
    Ok(words.iter().map(|word| u64::from_le_bytes(*word)).collect())
}

/// The executable `pid` runs; a deleted one is refused.
pub fn exe_path_of(proc: &Snapshot) -> Result<String, CompoundError> {
    let exe_path = proc.exe.clone();
    if exe_path.ends_with(" (deleted)") {
        return Err(Unsupported { what: "a deleted executable".into(), location: exe_path }.into());
    }
    Ok(exe_path)
}

impl MmFields {
    /// Reads the fields of a stopped tracee; brk is not in /proc, so it is
    /// read with an injected `brk(0)`.
    fn capture_from(tracee: &mut dyn Tracee, proc: &Snapshot) -> Result<Self, CompoundError> {
        let stat = &proc.stat;
        let auxv = parse_auxv(&format!("/proc/{}/auxv", proc.pid), &proc.auxv)?;
        let exe_path = exe_path_of(proc)?;
        let brk = tracee.syscall("brk", libc::SYS_brk, [0; 6])?;
        let (start_code, end_code) = (stat.number(STAT_START_CODE)?, stat.number(STAT_END_CODE)?);
        if (start_code, end_code) == (1, 1) {
            // What the kernel shows a reader without ptrace access instead.
            return Err(CompoundError::Malformed {
                path: stat.path().to_owned(),
                reason: "start_code and end_code are hidden (shown as 1): crp may not read this process".into(),
            });
        }
        Ok(Self {
            start_code,
            end_code,
            start_stack: stat.number(STAT_START_STACK)?,
            start_data: stat.number(STAT_START_DATA)?,
            end_data: stat.number(STAT_START_DATA + 1)?,
            start_brk: stat.number(STAT_START_DATA + 2)?,
            brk,
            arg_start: stat.number(STAT_START_DATA + 3)?,
            arg_end: stat.number(STAT_START_DATA + 4)?,
            env_start: stat.number(STAT_START_DATA + 5)?,
            env_end: stat.number(STAT_START_DATA + 6)?,
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
    fn restore_into(&self, tracee: &mut dyn Tracee) -> Result<(), EngineError> {
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

impl Persist for MmFields {
    const KIND: &'static str = "mm fields";
    type Error = CompoundError;

    fn capture(context: &mut Capture<'_>) -> Result<Self, CompoundError> {
        Self::capture_from(context.tracee, context.proc)
    }

    /// `PR_SET_MM_MAP`, the executable link included: after the memory is
    /// in place and crp's own executable is unmapped.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), CompoundError> {
        Ok(self.restore_into(context.tracee)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;

    #[test]
    fn mm_fields_come_from_stat_auxv_exe_and_an_injected_brk() {
        let mut process = FakeTracee::answering(|call, _| if call.number == libc::SYS_brk { 0x60_3000 } else { 0 });
        let proc = crp_ptrace::fake::snapshot();
        let mm = MmFields::capture(&mut Capture { tracee: &mut process, proc: &proc, stopped_before_freeze: false })
            .unwrap();
        assert_eq!((mm.start_code, mm.end_code, mm.start_stack), (0x40_0000, 0x40_1000, 0x7ffd_0000));
        assert_eq!((mm.start_brk, mm.brk), (0x60_2000, 0x60_3000));
        assert_eq!(mm.auxv, [6, 4096, 0, 0]);
        assert_eq!(mm.exe_path, "/usr/bin/fake");

        // The restore hands the same bounds to PR_SET_MM_MAP in one struct.
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let record = std::rc::Rc::clone(&seen);
        let mut restored = FakeTracee::answering(move |call, memory| {
            if call.number == libc::SYS_prctl && call.args[1] == PR_SET_MM_MAP {
                record.borrow_mut().extend(memory.read(call.args[2], PRCTL_MM_MAP_SIZE));
            }
            if call.number == libc::SYS_openat { 9 } else { 0 }
        });
        mm.restore(&mut Restore::new(&mut restored)).unwrap();
        let map = seen.borrow();
        assert_eq!(map.len(), PRCTL_MM_MAP_SIZE);
        assert_eq!(map[..8], 0x40_0000u64.to_le_bytes(), "start_code first");
        assert_eq!(map[100..104], 9u32.to_le_bytes(), "the executable's fd last");
    }

    fn auxv_bytes(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|word| word.to_le_bytes()).collect()
    }

    #[test]
    fn auxv_parses_into_words() {
        let words = [6, 4096, 25, 0x7ffd_0000, 0, 0];
        assert_eq!(parse_auxv("/proc/2/auxv", &auxv_bytes(&words)).unwrap(), words);
    }

    #[test]
    fn malformed_auxv_is_refused_and_named() {
        let refusal = |bytes: &[u8]| parse_auxv("/proc/2/auxv", bytes).unwrap_err().to_string();
        let mut bytes = auxv_bytes(&[6, 4096, 0, 0]);
        bytes.pop();
        assert!(refusal(&bytes).starts_with("/proc/2/auxv is malformed: 31 bytes is not a whole number"));
        assert_eq!(refusal(&auxv_bytes(&[6, 4096])), "/proc/2/auxv is malformed: does not end with AT_NULL");
        assert_eq!(refusal(&[]), "/proc/2/auxv is malformed: does not end with AT_NULL");
        assert!(refusal(&auxv_bytes(&[1; 58])).contains("more than the 448"));
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
