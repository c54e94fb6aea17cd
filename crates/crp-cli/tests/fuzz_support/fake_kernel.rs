//! A stand-in for the process being restored: it accepts every injected
//! syscall, remembers what was written into its memory, and notes each call
//! the real kernel would refuse for its arguments alone (EINVAL, EBADF,
//! EIO...). An image `load_image` accepts must cause no such note: a
//! refusal then would come after the child exists.

use crp_cli::restore::validate::TASK_SIZE;
use crp_ptrace::{EngineError, Tracee};

const SCRATCH: u64 = 0x1_0000;
const SCRATCH_BYTES: usize = 7 * 4096;
/// `fs.nr_open`'s default: no descriptor can be at or above it.
const NR_OPEN: i64 = 1 << 20;
/// `sizeof(struct robust_list_head)`.
const ROBUST_LIST_HEAD: u64 = 24;

#[derive(Debug, Default)]
pub struct FakeKernel {
    writes: Vec<(u64, Vec<u8>)>,
    next_fd: u64,
    pub refusals: Vec<String>,
    pub calls: usize,
}

impl FakeKernel {
    fn memory(&self, address: u64, length: usize) -> Option<Vec<u8>> {
        self.writes.iter().rev().find_map(|(start, bytes)| {
            let offset = usize::try_from(address.checked_sub(*start)?).ok()?;
            bytes.get(offset..offset.checked_add(length)?).map(<[u8]>::to_vec)
        })
    }

    fn words(&self, address: u64, count: usize) -> Vec<u64> {
        self.memory(address, count * 8)
            .map(|bytes| bytes.chunks_exact(8).map(|word| u64::from_le_bytes(word.try_into().unwrap())).collect())
            .unwrap_or_else(|| vec![0; count])
    }

    fn refuse(&mut self, why: String) {
        self.refusals.push(why);
    }

    fn check_range(&mut self, name: &str, start: u64, length: u64) {
        let end = start.checked_add(length);
        if !start.is_multiple_of(4096) || length == 0 || end.is_none_or(|end| end > TASK_SIZE) {
            self.refuse(format!("{name}({start:#x}, {length:#x}): EINVAL"));
        }
    }

    fn check_mm_map(&mut self, address: u64) {
        let words = self.words(address, 13);
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
            _auxv,
            sizes,
        ] = words[..]
        else {
            return;
        };
        let ordered = start_code < end_code
            && start_data <= end_data
            && start_brk <= brk
            && arg_start <= arg_end
            && env_start <= env_end;
        let in_range = words[..11].iter().all(|address| (4096..TASK_SIZE).contains(address));
        let auxv_bytes = sizes & 0xffff_ffff;
        if !ordered || !in_range || auxv_bytes > 448 || start_stack == 0 {
            self.refuse(format!("prctl(PR_SET_MM_MAP) with {:x?}: EINVAL", &words[..12]));
        }
    }

    fn check(&mut self, number: i64, args: [u64; 6]) {
        let signed = |index: usize| args[index].cast_signed();
        match number {
            libc::SYS_rt_sigaction => {
                let signal = signed(0);
                if !(1..=64).contains(&signal) || signal == 9 || signal == 19 {
                    self.refuse(format!("rt_sigaction({signal}): EINVAL"));
                }
            }
            libc::SYS_prlimit64 => {
                let words = self.words(args[2], 2);
                if args[1] >= 16 || words[0] > words[1] {
                    self.refuse(format!("prlimit64(resource {}, {:?}): EINVAL", args[1], words));
                }
            }
            libc::SYS_setitimer => {
                let words = self.words(args[1], 4);
                let bad = |seconds: u64, micros: u64| seconds.cast_signed() < 0 || micros >= 1_000_000;
                if args[0] > 2 || bad(words[0], words[1]) || bad(words[2], words[3]) {
                    self.refuse(format!("setitimer({}, {:?}): EINVAL", args[0], words));
                }
            }
            libc::SYS_dup3 if !(0..NR_OPEN).contains(&signed(1)) || args[0] == args[1] => {
                self.refuse(format!("dup3({}, {}): EBADF/EINVAL", signed(0), signed(1)));
            }
            libc::SYS_lseek if signed(1) < 0 => self.refuse(format!("lseek(offset {}): EINVAL", signed(1))),
            libc::SYS_mmap => {
                self.check_range("mmap", args[0], args[1]);
                if !args[5].is_multiple_of(4096) || args[5].checked_add(args[1]).is_none() {
                    self.refuse(format!("mmap(offset {:#x}): EINVAL", args[5]));
                }
                if args[2] & !0x7 != 0 {
                    self.refuse(format!("mmap(protection {:#x}): EINVAL", args[2]));
                }
            }
            libc::SYS_mprotect | libc::SYS_madvise => self.check_range("mprotect/madvise", args[0], args[1]),
            libc::SYS_mremap => {
                self.check_range("mremap(old)", args[0], args[1]);
                self.check_range("mremap(new)", args[4], args[2]);
            }
            libc::SYS_sched_setattr => {
                let words = self.words(args[1], 7);
                let [size_policy, _flags, nice_priority, ..] = words[..] else { return };
                let policy = size_policy >> 32;
                let nice = (nice_priority & 0xffff_ffff) as u32 as i32;
                let priority = nice_priority >> 32;
                let fits = match policy {
                    0 | 3 | 5 => (-20..=19).contains(&nice) && priority == 0,
                    1 | 2 => (1..=99).contains(&priority),
                    _ => false,
                };
                if !fits {
                    self.refuse(format!("sched_setattr(policy {policy}, nice {nice}, priority {priority}): EINVAL"));
                }
            }
            libc::SYS_ioprio_set if args[2] >> 13 > 3 || args[2] >= 1 << 16 => {
                self.refuse(format!("ioprio_set({:#x}): EINVAL", args[2]));
            }
            libc::SYS_membarrier if ![4, 16, 64, 256].contains(&args[0]) => {
                self.refuse(format!("membarrier({:#x}): EINVAL", args[0]));
            }
            libc::SYS_prctl => match args[0] {
                1 if args[1] > 64 => self.refuse(format!("prctl(PR_SET_PDEATHSIG, {}): EINVAL", args[1])),
                4 if args[1] > 1 => self.refuse(format!("prctl(PR_SET_DUMPABLE, {}): EINVAL", args[1])),
                26 if !(1..=2).contains(&args[1]) => self.refuse(format!("prctl(PR_SET_TSC, {}): EINVAL", args[1])),
                41 if args[1] > 1 || args[2] & !2 != 0 => {
                    self.refuse(format!("prctl(PR_SET_THP_DISABLE, {}, {}): EINVAL", args[1], args[2]));
                }
                35 if args[1] == 14 => self.check_mm_map(args[2]),
                _ => {}
            },
            libc::SYS_setgroups if args[0] > 65536 => self.refuse(format!("setgroups({}): EINVAL", args[0])),
            libc::SYS_personality if args[0] > u64::from(u32::MAX) => {
                self.refuse(format!("personality({:#x}): truncated", args[0]));
            }
            libc::SYS_set_robust_list if args[1] != ROBUST_LIST_HEAD => {
                self.refuse(format!("set_robust_list(length {}): EINVAL", args[1]));
            }
            libc::SYS_rseq if args[2] == 0 && (args[1] < 32 || !args[0].is_multiple_of(32) || args[0] >= TASK_SIZE) => {
                self.refuse(format!("rseq({:#x}, {}): EINVAL", args[0], args[1]));
            }
            libc::SYS_close_range if args[0] > args[1] => self.refuse("close_range: EINVAL".into()),
            libc::SYS_timerfd_create if ![0, 1, 7, 8, 9].contains(&args[0]) => {
                self.refuse(format!("timerfd_create(clock {}): EINVAL", signed(0)));
            }
            libc::SYS_timerfd_settime => {
                let words = self.words(args[2], 4);
                let bad = |seconds: u64, nanoseconds: u64| seconds.cast_signed() < 0 || nanoseconds >= 1_000_000_000;
                if args[1] & !3 != 0 || bad(words[0], words[1]) || bad(words[2], words[3]) {
                    self.refuse(format!("timerfd_settime(flags {:#o}, {:?}): EINVAL", args[1], words));
                }
            }
            libc::SYS_rt_sigqueueinfo | libc::SYS_rt_tgsigqueueinfo => {
                let signal = signed(if number == libc::SYS_rt_sigqueueinfo { 1 } else { 2 });
                if !(1..=64).contains(&signal) {
                    self.refuse(format!("rt_sigqueueinfo({signal}): EINVAL"));
                }
            }
            libc::SYS_timer_create => {
                let clock = i32::from_le_bytes(args[0].to_le_bytes()[..4].try_into().unwrap_or_default());
                let event = self.words(args[1], 2);
                let halves = event[1].to_le_bytes();
                let half = |at: usize| i32::from_le_bytes(halves[at..at + 4].try_into().unwrap_or_default());
                let (signal, notify) = (half(0), half(4));
                let named = [0, 1, 2, 3, 7, 8, 9, 11].contains(&clock);
                let cpu = clock < 0 && clock & 3 != 3;
                if !(named || cpu) || ![0, 1, 4].contains(&notify) || (notify != 1 && !(1..=64).contains(&signal)) {
                    self.refuse(format!("timer_create(clock {clock}, notify {notify}, signal {signal}): EINVAL"));
                }
            }
            libc::SYS_timer_settime => {
                let words = self.words(args[2], 4);
                if words.iter().any(|word| word.cast_signed() < 0)
                    || words[1] >= 1_000_000_000
                    || words[3] >= 1_000_000_000
                {
                    self.refuse(format!("timer_settime({words:?}): EINVAL"));
                }
            }
            libc::SYS_fcntl if args[1] == 6 || args[1] == 37 => {
                let words = self.words(args[2], 3);
                if words[1].cast_signed() < 0
                    || words[2].cast_signed() < 0
                    || words[1].checked_add(words[2]).is_none_or(|end| end.cast_signed() < 0)
                {
                    self.refuse(format!("fcntl(F_SETLK, start {}, length {}): EINVAL", words[1], words[2]));
                }
            }
            libc::SYS_fcntl | libc::SYS_flock if !(0..NR_OPEN).contains(&signed(0)) => {
                self.refuse(format!("fcntl/flock on fd {}: EBADF", signed(0)));
            }
            // crp writes only an eventfd's count, which cannot be ULLONG_MAX.
            libc::SYS_write if args[2] == 8 && self.words(args[1], 1)[0] == u64::MAX => {
                self.refuse("write(eventfd, ULLONG_MAX): EINVAL".into());
            }
            _ => {}
        }
    }
}

impl Tracee for FakeKernel {
    fn pid(&self) -> i32 {
        1
    }

    fn raw_syscall(&mut self, number: i64, args: [u64; 6]) -> Result<i64, EngineError> {
        self.calls += 1;
        self.check(number, args);
        let result = match number {
            libc::SYS_openat | libc::SYS_fcntl => {
                self.next_fd += 1;
                100 + self.next_fd
            }
            libc::SYS_mmap | libc::SYS_mremap => args[if number == libc::SYS_mmap { 0 } else { 4 }],
            _ => 0,
        };
        Ok(result.cast_signed())
    }

    fn read_memory(&self, address: u64, buffer: &mut [u8]) -> Result<(), EngineError> {
        let bytes = self.memory(address, buffer.len()).unwrap_or_else(|| vec![0; buffer.len()]);
        buffer.copy_from_slice(&bytes);
        Ok(())
    }

    fn write_memory(&mut self, address: u64, data: &[u8]) -> Result<(), EngineError> {
        self.writes.push((address, data.to_vec()));
        Ok(())
    }

    fn scratch_area(&self) -> (u64, usize) {
        (SCRATCH, SCRATCH_BYTES)
    }

    /// The scratch area is fixed in this fake.
    fn set_scratch_area(&mut self, _address: u64, _length: usize) {}

    fn blocked_signals(&self) -> Result<u64, EngineError> {
        Ok(0)
    }
}
