//! A recording fake of a process, for unit tests of every kind of state:
//! it answers injected syscalls from a script, keeps the memory crp writes,
//! and records every call so a test can check what a restore did.

use std::collections::BTreeMap;

use crate::Registers;
use crate::error::EngineError;
use crate::tracee::Tracee;

/// One injected syscall as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub number: i64,
    pub args: [u64; 6],
}

/// Answers one syscall: the raw result, and may write into the memory.
pub type Answer = Box<dyn FnMut(&Call, &mut FakeMemory) -> i64>;

/// Byte-addressed memory, written and read in place.
#[derive(Debug, Default)]
pub struct FakeMemory {
    bytes: BTreeMap<u64, u8>,
}

impl FakeMemory {
    pub fn write(&mut self, address: u64, data: &[u8]) {
        for (offset, byte) in data.iter().enumerate() {
            self.bytes.insert(address + offset as u64, *byte);
        }
    }

    /// Reads `length` bytes; bytes never written read as zero.
    pub fn read(&self, address: u64, length: usize) -> Vec<u8> {
        (0..length as u64).map(|offset| self.bytes.get(&(address + offset)).copied().unwrap_or(0)).collect()
    }
}

/// The fake process: pid 4242, a 64 KiB scratch area, syscalls answered by
/// `answer` (0 by default) and recorded in `calls`.
pub struct FakeTracee {
    pub calls: Vec<Call>,
    pub memory: FakeMemory,
    pub blocked: u64,
    pub rseq: crate::sys::RseqConfiguration,
    /// What [`Tracee::pending_signals`] gives: the process-wide queue and
    /// the thread's.
    pub shared_pending: Vec<[u8; crate::sys::SIGINFO_SIZE]>,
    pub thread_pending: Vec<[u8; crate::sys::SIGINFO_SIZE]>,
    /// Pairs of descriptors that are one open file description
    /// ([`Tracee::same_description`]); any other two are not.
    pub shared_descriptions: Vec<(u64, u64)>,
    /// What was written to the process's /proc files: `(name, data)`.
    pub proc_writes: Vec<(String, Vec<u8>)>,
    /// What [`Tracee::reopen_descriptor`] and
    /// [`Tracee::duplicate_descriptor`] give for each descriptor (a
    /// duplicate of the entry); any other descriptor is EBADF.
    pub descriptors: BTreeMap<u64, std::os::fd::OwnedFd>,
    /// The registers at the freeze ([`Tracee::frozen_registers`]; all zero
    /// by default).
    pub registers: Registers,
    /// The live XSAVE area ([`Tracee::xstate`]; by default the smallest
    /// one, legacy region and header, all zero).
    pub xstate: Vec<u8>,
    /// What was loaded by [`Tracee::set_xstate`] and
    /// [`Tracee::load_registers`] (the mask goes to `blocked`), and in which
    /// order: `"xstate"`, `"registers"`, `"blocked mask"`.
    pub loaded_xstate: Option<Vec<u8>>,
    pub loaded_registers: Option<Registers>,
    pub loads: Vec<&'static str>,
    /// What [`Tracee::mappings`] gives (none by default).
    pub mappings: Vec<crate::procfs::MapsEntry>,
    scratch: (u64, usize),
    answer: Answer,
}

impl std::fmt::Debug for FakeTracee {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("FakeTracee").field("calls", &self.calls).finish_non_exhaustive()
    }
}

impl Default for FakeTracee {
    fn default() -> Self {
        Self::answering(|_, _| 0)
    }
}

impl FakeTracee {
    pub const PID: i32 = 4242;
    pub const SCRATCH: u64 = 0x7000_0000;
    /// The size of the fake's XSAVE area: the legacy region and header.
    pub const XSTATE_BYTES: usize = 576;

    pub fn answering(answer: impl FnMut(&Call, &mut FakeMemory) -> i64 + 'static) -> Self {
        Self {
            calls: Vec::new(),
            memory: FakeMemory::default(),
            blocked: 0,
            rseq: crate::sys::RseqConfiguration::default(),
            shared_pending: Vec::new(),
            thread_pending: Vec::new(),
            shared_descriptions: Vec::new(),
            proc_writes: Vec::new(),
            descriptors: BTreeMap::new(),
            // SAFETY: user_regs_struct is plain integers; all-zero is valid.
            registers: unsafe { std::mem::zeroed() },
            xstate: vec![0; Self::XSTATE_BYTES],
            loaded_xstate: None,
            loaded_registers: None,
            loads: Vec::new(),
            mappings: Vec::new(),
            scratch: (Self::SCRATCH, 64 << 10),
            answer: Box::new(answer),
        }
    }

    /// The recorded calls of syscall `number`.
    pub fn calls_of(&self, number: i64) -> Vec<&Call> {
        self.calls.iter().filter(|call| call.number == number).collect()
    }
}

impl Tracee for FakeTracee {
    fn pid(&self) -> i32 {
        Self::PID
    }

    fn raw_syscall(&mut self, number: i64, args: [u64; 6]) -> Result<i64, EngineError> {
        let call = Call { number, args };
        let result = (self.answer)(&call, &mut self.memory);
        self.calls.push(call);
        Ok(result)
    }

    fn read_memory(&self, address: u64, buffer: &mut [u8]) -> Result<(), EngineError> {
        buffer.copy_from_slice(&self.memory.read(address, buffer.len()));
        Ok(())
    }

    fn write_memory(&mut self, address: u64, data: &[u8]) -> Result<(), EngineError> {
        self.memory.write(address, data);
        Ok(())
    }

    fn scratch_area(&self) -> (u64, usize) {
        self.scratch
    }

    fn set_scratch_area(&mut self, address: u64, length: usize) {
        self.scratch = (address, length);
    }

    fn blocked_signals(&self) -> Result<u64, EngineError> {
        Ok(self.blocked)
    }

    fn frozen_registers(&self) -> Result<Registers, EngineError> {
        Ok(self.registers)
    }

    fn xstate(&self) -> Result<Vec<u8>, EngineError> {
        Ok(self.xstate.clone())
    }

    fn set_xstate(&mut self, area: &[u8]) -> Result<(), EngineError> {
        self.loaded_xstate = Some(area.to_vec());
        self.loads.push("xstate");
        Ok(())
    }

    fn load_registers(&mut self, registers: &Registers) -> Result<(), EngineError> {
        self.loaded_registers = Some(*registers);
        self.loads.push("registers");
        Ok(())
    }

    fn set_blocked_signals(&mut self, mask: u64) -> Result<(), EngineError> {
        self.blocked = mask;
        self.loads.push("blocked mask");
        Ok(())
    }

    fn rseq_configuration(&self) -> Result<crate::sys::RseqConfiguration, EngineError> {
        Ok(self.rseq)
    }

    fn mappings(&self) -> Result<Vec<crate::procfs::MapsEntry>, EngineError> {
        Ok(self.mappings.clone())
    }

    fn pending_signals(&self, shared: bool) -> Result<Vec<[u8; crate::sys::SIGINFO_SIZE]>, EngineError> {
        Ok(if shared { self.shared_pending.clone() } else { self.thread_pending.clone() })
    }

    fn same_description(&self, first: u64, second: u64) -> Result<bool, EngineError> {
        Ok(first == second
            || self.shared_descriptions.iter().any(|&(a, b)| (a, b) == (first, second) || (b, a) == (first, second)))
    }

    fn write_proc_file(&mut self, name: &str, data: &[u8]) -> Result<(), EngineError> {
        self.proc_writes.push((name.to_owned(), data.to_vec()));
        Ok(())
    }

    fn reopen_descriptor(&self, fd: u64, _flags: i32) -> Result<std::os::fd::OwnedFd, EngineError> {
        let missing =
            || EngineError::Descriptor { operation: "reopen", pid: Self::PID, fd, errno: nix::errno::Errno::EBADF };
        let descriptor = self.descriptors.get(&fd).ok_or_else(missing)?;
        descriptor.try_clone().map_err(|_| missing())
    }

    fn duplicate_descriptor(&self, fd: u64) -> Result<std::os::fd::OwnedFd, EngineError> {
        self.reopen_descriptor(fd, 0)
    }
}

/// A mapping of the fake process as /proc/PID/smaps shows it: private,
/// readable and writable, nothing resident, no VmFlags but `rd`, `wr`.
pub fn mapping(name: &str, start: u64, end: u64) -> crate::procfs::MapsEntry {
    crate::procfs::MapsEntry {
        start,
        end,
        readable: true,
        writable: true,
        executable: false,
        shared: false,
        offset: 0,
        device: (0, 0),
        inode: 0,
        name: name.to_owned(),
        vm_flags: vec!["rd".into(), "wr".into()],
        populated_kb: Some(0),
    }
}

/// A /proc snapshot of the fake process: a root process named `fake` in
/// `/srv`, umask 022, on CPUs 0 and 1, with code at 0x400000..0x401000, data
/// at 0x600000..0x601000, the stack at 0x7ffd0000 and arguments, environment
/// and auxv (`AT_PAGESZ` 4096) in place, oom_score_adj 0.
pub fn snapshot() -> crate::procfs::Snapshot {
    let status = "Name:\tfake\nUmask:\t0022\nState:\tt (tracing stop)\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
        Groups:\t0 27\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n\
        CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSigPnd:\t0000000000000000\n\
        ShdPnd:\t0000000000000000\nCpus_allowed:\t3\n";
    // Fields 3 onwards of proc(5); 26-28 and 45-51 are the mm bounds.
    let mut fields: Vec<String> = ["t", "1", "4242", "4242"].iter().map(|field| (*field).to_owned()).collect();
    fields.resize(52 - 3, "0".to_owned());
    let mut set = |number: usize, value: u64| fields[number - 3] = value.to_string();
    set(26, 0x40_0000);
    set(27, 0x40_1000);
    set(28, 0x7ffd_0000);
    for (offset, value) in
        [0x60_0000u64, 0x60_1000, 0x60_2000, 0x7ffd_1000, 0x7ffd_1100, 0x7ffd_1100, 0x7ffd_1200].into_iter().enumerate()
    {
        set(45 + offset, value);
    }
    let stat = format!("4242 (fake) {}\n", fields.join(" "));
    let auxv: Vec<u8> = [6u64, 4096, 0, 0].iter().flat_map(|word| word.to_le_bytes()).collect();
    let texts = crate::procfs::Texts {
        status,
        stat: &stat,
        comm: "fake\n",
        personality: "00000000\n",
        auxv: &auxv,
        cwd: "/srv",
        exe: "/usr/bin/fake",
        oom_score_adj: "0\n",
        coredump_filter: "00000033\n",
        loginuid: "4294967295",
        timers: "",
    };
    crate::procfs::Snapshot::parse(FakeTracee::PID, texts).expect("the fake's own texts parse")
}
