//! Event descriptors, the anonymous-inode files whose whole state fdinfo
//! shows: an eventfd (its counter, EFD_SEMAPHORE), a timerfd (its clock, the
//! time left or its absolute deadline, its interval, the ticks not read yet,
//! TFD_TIMER_ABSTIME and TFD_TIMER_CANCEL_ON_SET) and a signalfd (its mask).
//! Read at the dump from /proc/PID/fdinfo (the kernel's
//! `eventfd_show_fdinfo`, `timerfd_show`, `signalfd_show_fdinfo`); made again
//! at the restore by injected `eventfd2` (and an 8-byte `write` of the
//! count), `timerfd_create` + `timerfd_settime` (+ `TFD_IOC_SET_TICKS` for
//! the unread ticks), `signalfd4`. Their status flags (O_NONBLOCK) are the
//! description's, set like any other's.
//!
//! Every other anonymous-inode descriptor (epoll, inotify, io_uring, ...)
//! is refused here, naming its kind.
//!
//! A relative timer keeps its time left across the downtime (as crp's
//! itimers do): it fires that long after the restore. An absolute one is
//! re-armed at the same deadline on its clock, so a deadline that passed
//! while the process was down fires at once.

use std::os::fd::{AsRawFd, OwnedFd};

use crp_ptrace::procfs::{Fields, ProcError};
use crp_ptrace::{EngineError, Tracee, TraceeExt, arg};

use crate::error::{CompoundError, Unsupported};
use crate::valid::Invalid;

/// `_IOW('T', 0, u64)` (include/uapi/linux/timerfd.h): sets a timerfd's
/// unread ticks; there with CONFIG_CHECKPOINT_RESTORE.
const TFD_IOC_SET_TICKS: u64 = (1 << 30) | (8 << 16) | ((b'T' as u64) << 8);
/// The `timerfd_settime` flags a timer keeps.
const TFD_TIMER_ABSTIME: i32 = 1;
const TFD_TIMER_CANCEL_ON_SET: i32 = 2;
/// An eventfd counts up to this (ULLONG_MAX - 1).
const EVENTFD_MAX: u64 = u64::MAX - 1;
/// The clocks `timerfd_create` accepts, with their names.
const CLOCKS: [(i32, &str); 5] = [
    (libc::CLOCK_REALTIME, "CLOCK_REALTIME"),
    (libc::CLOCK_MONOTONIC, "CLOCK_MONOTONIC"),
    (libc::CLOCK_BOOTTIME, "CLOCK_BOOTTIME"),
    (libc::CLOCK_REALTIME_ALARM, "CLOCK_REALTIME_ALARM"),
    (libc::CLOCK_BOOTTIME_ALARM, "CLOCK_BOOTTIME_ALARM"),
];
/// Capability number of CAP_WAKE_ALARM, which the _ALARM clocks need.
const CAP_WAKE_ALARM: u32 = 35;
/// How many times the dump reads a periodic timer that keeps firing
/// between the two reads its state takes, before giving up.
const TIMER_READ_ATTEMPTS: usize = 1000;

/// A `timespec`: seconds and nanoseconds (below 10⁹).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Timespec {
    pub seconds: u64,
    pub nanoseconds: u32,
}

impl Timespec {
    pub fn is_zero(&self) -> bool {
        self.seconds == 0 && self.nanoseconds == 0
    }

    /// The sum, saturating at the largest time a `timespec` holds.
    fn plus(self, other: Self) -> Self {
        let nanoseconds = self.nanoseconds + other.nanoseconds;
        let carry = u64::from(nanoseconds >= 1_000_000_000);
        let seconds = self.seconds.saturating_add(other.seconds).saturating_add(carry);
        if seconds > i64::MAX as u64 {
            return Self { seconds: i64::MAX as u64, nanoseconds: 999_999_999 };
        }
        Self { seconds, nanoseconds: nanoseconds % 1_000_000_000 }
    }

    /// The two 64-bit words of a C `struct timespec`.
    fn words(self) -> [u64; 2] {
        [self.seconds, u64::from(self.nanoseconds)]
    }
}

impl std::fmt::Display for Timespec {
    /// `1.5s`, `30s`, `0.000001s`: seconds, with the nanoseconds that are there.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fraction = format!("{:09}", self.nanoseconds);
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            write!(formatter, "{}s", self.seconds)
        } else {
            write!(formatter, "{}.{fraction}s", self.seconds)
        }
    }
}

/// A timerfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TimerFd {
    /// Its clock: CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME or their
    /// _ALARM forms.
    pub clock: i32,
    /// Its `timerfd_settime` flags: TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET.
    pub settime_flags: i32,
    /// When it expires next: for a TFD_TIMER_ABSTIME timer the deadline on
    /// its clock, else the time that was left at the dump; zero when it is
    /// disarmed.
    pub value: Timespec,
    /// Its period; zero for a one-shot timer (a disarmed timer may have one
    /// too, which `timerfd_gettime` shows).
    pub interval: Timespec,
    /// Expirations not read yet.
    pub ticks: u64,
}

impl TimerFd {
    pub fn is_absolute(&self) -> bool {
        self.settime_flags & TFD_TIMER_ABSTIME != 0
    }

    pub fn cancels_on_set(&self) -> bool {
        self.settime_flags & TFD_TIMER_CANCEL_ON_SET != 0
    }

    pub fn is_armed(&self) -> bool {
        !self.value.is_zero()
    }

    /// The name of its clock.
    pub fn clock_name(&self) -> String {
        clock_name(self.clock).map_or_else(|| format!("clock {}", self.clock), str::to_owned)
    }
}

fn clock_name(clock: i32) -> Option<&'static str> {
    CLOCKS.iter().find(|(id, _)| *id == clock).map(|(_, name)| *name)
}

/// What one event descriptor's open file description is.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum EventFile {
    /// An eventfd: its counter, and whether it reads as a semaphore (one
    /// at a time, EFD_SEMAPHORE).
    EventFd {
        count: u64,
        semaphore: bool,
    },
    TimerFd(TimerFd),
    /// A signalfd and the signals it reads (bit N-1 is signal N).
    SignalFd {
        mask: u64,
    },
}

impl EventFile {
    /// "eventfd", "timerfd" or "signalfd".
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EventFd { .. } => "eventfd",
            Self::TimerFd(_) => "timerfd",
            Self::SignalFd { .. } => "signalfd",
        }
    }

    /// The link text /proc/PID/fd shows for it.
    pub fn link(&self) -> String {
        format!("anon_inode:[{}]", self.kind())
    }
}

/// What the other anonymous-inode descriptors are, by their link text
/// after `anon_inode:`, for the refusal.
fn refused_kind(name: &str) -> String {
    let known = [
        ("[eventpoll]", "an epoll instance"),
        ("inotify", "an inotify instance"),
        ("[fanotify]", "a fanotify group"),
        ("[userfaultfd]", "a userfaultfd"),
        ("[perf_event]", "a perf event"),
        ("[io_uring]", "an io_uring instance"),
        ("[pidfd]", "a pidfd"),
        ("[fscontext]", "a file-system context (fsopen)"),
        ("[landlock-ruleset]", "a Landlock ruleset"),
    ];
    if let Some((_, what)) = known.iter().find(|(link, _)| *link == name) {
        return (*what).to_owned();
    }
    if name.trim_start_matches('[').starts_with("bpf") {
        return "a BPF object".to_owned();
    }
    if name.starts_with("kvm") {
        return "a KVM object".to_owned();
    }
    format!("an anonymous-inode descriptor ({name})")
}

/// Reads the event descriptor `fd` of `pid`, whose link text is `link`
/// (`anon_inode:...`), or refuses it: another kind of anonymous inode, an
/// eventfd on a kernel whose fdinfo hides EFD_SEMAPHORE, a timer crp could
/// not make again. The timerfd read makes a periodic timer that fired
/// count its expirations now rather than at the next read (see
/// [`capture_timer`]), which nothing can observe.
pub(super) fn capture(pid: i32, fd: i32, link: &str) -> Result<EventFile, CompoundError> {
    let refuse =
        |what: String| -> CompoundError { Unsupported { what, location: format!("fd {fd} -> {link}") }.into() };
    let fdinfo = || Fields::read(format!("/proc/{pid}/fdinfo/{fd}"));
    match link.strip_prefix("anon_inode:").unwrap_or(link) {
        "[eventfd]" => {
            let (count, semaphore) = parse_eventfd(&fdinfo()?)?;
            let semaphore = semaphore.ok_or_else(|| {
                refuse(
                    "an eventfd on a kernel whose fdinfo does not say whether it is a semaphore \
                     (no eventfd-semaphore line)"
                        .into(),
                )
            })?;
            Ok(EventFile::EventFd { count, semaphore })
        }
        "[timerfd]" => {
            let timer = capture_timer(pid, fd)?;
            let Some(clock) = clock_name(timer.clock) else {
                return Err(refuse(format!("a timerfd on clock {}, which timerfd_create does not take", timer.clock)));
            };
            if clock.ends_with("_ALARM") && !super::has_capability(CAP_WAKE_ALARM) {
                return Err(refuse(format!(
                    "a timerfd on {clock}: making it again needs CAP_WAKE_ALARM, which crp lacks"
                )));
            }
            Ok(EventFile::TimerFd(timer))
        }
        "[signalfd]" => Ok(EventFile::SignalFd { mask: fdinfo()?.hex("sigmask")? }),
        other => Err(refuse(refused_kind(other))),
    }
}

/// `(count, semaphore)` of an eventfd's fdinfo; `semaphore` is `None` on
/// kernels that do not show it.
fn parse_eventfd(fdinfo: &Fields) -> Result<(u64, Option<bool>), ProcError> {
    let count = fdinfo.hex("eventfd-count")?;
    // Kernels before 6.6 have no such line: the caller refuses then.
    let semaphore = match fdinfo.optional("eventfd-semaphore") {
        None => None,
        Some("0") => Some(false),
        Some("1") => Some(true),
        Some(other) => return Err(fdinfo.malformed("eventfd-semaphore", other, "neither 0 nor 1")),
    };
    Ok((count, semaphore))
}

/// A timerfd's fdinfo as the kernel shows it: `value` is the time left
/// (zero when disarmed, or when it expired and is not re-armed yet).
fn parse_timerfd(fdinfo: &Fields) -> Result<TimerFd, ProcError> {
    let pair = |key: &str| -> Result<Timespec, ProcError> {
        let text = fdinfo.field(key)?;
        let malformed = || fdinfo.malformed(key, text, "not `(SECONDS, NANOSECONDS)`");
        let inner = text.strip_prefix('(').and_then(|rest| rest.strip_suffix(')')).ok_or_else(malformed)?;
        let (seconds, nanoseconds) = inner.split_once(',').ok_or_else(malformed)?;
        let seconds = seconds.trim().parse().map_err(|_| malformed())?;
        let nanoseconds = nanoseconds.trim().parse().ok().filter(|ns| *ns < 1_000_000_000).ok_or_else(malformed)?;
        Ok(Timespec { seconds, nanoseconds })
    };
    let flags_text = fdinfo.field("settime flags")?;
    let settime_flags = i32::try_from(fdinfo.octal("settime flags")?)
        .map_err(|_| fdinfo.malformed("settime flags", flags_text, "out of range"))?;
    Ok(TimerFd {
        clock: fdinfo.decimal("clockid")?,
        settime_flags,
        value: pair("it_value")?,
        interval: pair("it_interval")?,
        ticks: fdinfo.decimal("ticks")?,
    })
}

/// Reads timerfd `fd` of `pid`, through a duplicate of it in crp
/// (`pidfd_getfd`). A periodic timer that fired is not re-armed until it is
/// read, so fdinfo would show it with no time left and one tick, however
/// many periods passed: `timerfd_gettime` first makes it count them and
/// re-arm (what its next read would do, so the process sees the same
/// ticks), then fdinfo shows the ticks and time left consistently — unless
/// it fired again in between, which shows as no time left on a timer
/// `timerfd_gettime` found armed: then both are read again, and a timer
/// that fires again every time (an interval shorter than the reads take)
/// is refused. An absolute timer's time left becomes its deadline on its
/// clock.
fn capture_timer(pid: i32, fd: i32) -> Result<TimerFd, CompoundError> {
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let borrowed = crp_ptrace::sys::duplicate_descriptor(pid, fd).map_err(|errno| CompoundError::Ptrace {
        operation: "pidfd_getfd",
        pid,
        errno,
    })?;
    let mut interval = Timespec::default();
    for _ in 0..TIMER_READ_ATTEMPTS {
        let armed = timer_gettime(&borrowed, pid, fd)?;
        let mut timer = parse_timerfd(&Fields::read(&path)?)?;
        let now = clock_now(timer.clock);
        if armed && !timer.is_armed() && !timer.interval.is_zero() {
            interval = timer.interval;
            continue; // fired again between the two reads
        }
        if timer.is_absolute() && timer.is_armed() {
            let now = now.map_err(|errno| CompoundError::Ptrace { operation: "clock_gettime", pid, errno })?;
            timer.value = now.plus(timer.value);
        }
        return Ok(timer);
    }
    Err(Unsupported {
        what: format!("a timerfd whose interval ({interval}) is shorter than crp takes to read it"),
        location: format!("fd {fd} -> anon_inode:[timerfd]"),
    }
    .into())
}

/// `timerfd_gettime` on crp's duplicate of a timer: whether it is armed.
fn timer_gettime(timer: &OwnedFd, pid: i32, fd: i32) -> Result<bool, CompoundError> {
    let mut current = libc::itimerspec {
        it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
        it_value: libc::timespec { tv_sec: 0, tv_nsec: 0 },
    };
    // SAFETY: timerfd_gettime writes one itimerspec through the pointer,
    // which points to `current` and lives across the call.
    if unsafe { libc::timerfd_gettime(timer.as_raw_fd(), &raw mut current) } < 0 {
        let errno = nix::errno::Errno::last();
        return Err(EngineError::Descriptor { operation: "timerfd_gettime", pid, fd: arg(fd), errno }.into());
    }
    Ok(current.it_value.tv_sec != 0 || current.it_value.tv_nsec != 0)
}

/// The time now on `clock` (an _ALARM clock reads its base clock, which is
/// the same time and needs no RTC).
fn clock_now(clock: i32) -> Result<Timespec, nix::errno::Errno> {
    let base = match clock {
        libc::CLOCK_REALTIME_ALARM => libc::CLOCK_REALTIME,
        libc::CLOCK_BOOTTIME_ALARM => libc::CLOCK_BOOTTIME,
        other => other,
    };
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through the pointer, which
    // points to `now` and lives across the call.
    if unsafe { libc::clock_gettime(base, &raw mut now) } < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(Timespec {
        seconds: u64::try_from(now.tv_sec).unwrap_or(0),
        nanoseconds: u32::try_from(now.tv_nsec).unwrap_or(0),
    })
}

/// Refuses an event descriptor no restore can make: an eventfd count the
/// kernel refuses to hold, a clock or settime flags timerfd refuses, a time
/// that is not a `timespec`.
pub(super) fn check(field: impl Fn() -> String, event: &EventFile) -> Result<(), Invalid> {
    match event {
        EventFile::EventFd { count, .. } if *count > EVENTFD_MAX => {
            Err(Invalid::new(field(), format!("is an eventfd counting {count:#x}, above its maximum {EVENTFD_MAX:#x}")))
        }
        EventFile::TimerFd(timer) => {
            if clock_name(timer.clock).is_none() {
                return Err(Invalid::new(
                    field(),
                    format!("is a timerfd on clock {}, not a timerfd clock", timer.clock),
                ));
            }
            if timer.settime_flags & !(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET) != 0 {
                return Err(Invalid::new(
                    field(),
                    format!("is a timerfd with settime flags {:#o}, not timerfd flags", timer.settime_flags),
                ));
            }
            for (name, time) in [("time", timer.value), ("interval", timer.interval)] {
                if time.seconds > i64::MAX as u64 || time.nanoseconds >= 1_000_000_000 {
                    return Err(Invalid::new(
                        field(),
                        format!("is a timerfd whose {name} ({}, {}) is not a timespec", time.seconds, time.nanoseconds),
                    ));
                }
            }
            Ok(())
        }
        EventFile::EventFd { .. } | EventFile::SignalFd { .. } => Ok(()),
    }
}

/// Makes `event` in the tracee at a descriptor from `above` up, with the
/// status flags of `flags` (O_NONBLOCK), and returns that descriptor.
pub(super) fn make(tracee: &mut dyn Tracee, event: &EventFile, flags: i32, above: u64) -> Result<u64, EngineError> {
    let fd = match event {
        EventFile::EventFd { count, semaphore } => {
            let semaphore = if *semaphore { libc::EFD_SEMAPHORE } else { 0 };
            let args = [0, arg(libc::EFD_CLOEXEC | semaphore), 0, 0, 0, 0];
            let made = tracee.syscall("eventfd2", libc::SYS_eventfd2, args)?;
            let fd = super::move_above(tracee, made, above)?;
            if *count != 0 {
                add_to_count(tracee, fd, *count)?;
            }
            fd
        }
        EventFile::TimerFd(timer) => make_timer(tracee, timer, above)?,
        EventFile::SignalFd { mask } => {
            let mut scratch = tracee.scratch();
            let mask_address = scratch.push(&mask.to_ne_bytes());
            scratch.commit(tracee)?;
            let args = [arg(-1), mask_address, 8, arg(libc::SFD_CLOEXEC), 0, 0];
            let made = tracee.syscall("signalfd4", libc::SYS_signalfd4, args)?;
            super::move_above(tracee, made, above)?
        }
    };
    super::set_status_flags(tracee, fd, flags)?;
    Ok(fd)
}

/// Adds `count` to the counter of the tracee's eventfd `fd`: one 8-byte
/// `write` of the value (any count up to [`EVENTFD_MAX`]), which an eventfd
/// takes whole or refuses.
fn add_to_count(tracee: &mut dyn Tracee, fd: u64, count: u64) -> Result<(), EngineError> {
    let mut scratch = tracee.scratch();
    let value = scratch.push(&count.to_ne_bytes());
    scratch.commit(tracee)?;
    tracee.syscall("write(eventfd)", libc::SYS_write, [fd, value, 8, 0, 0, 0])?;
    Ok(())
}

/// Makes the timer: created on its clock, armed as it was (an absolute one
/// at its deadline, a relative one for its time left), its interval kept
/// even when disarmed, then its unread ticks set. Arming zeroes the ticks
/// and an absolute deadline already past fires during `timerfd_settime`,
/// so the ticks set are the saved ones plus that expiration (a `poll` says
/// whether it came). A relative timer that expires within the few
/// microseconds between that `poll` and the ioctl loses that one tick,
/// when it had unread ticks: the kernel offers no way to add to them.
fn make_timer(tracee: &mut dyn Tracee, timer: &TimerFd, above: u64) -> Result<u64, EngineError> {
    let args = [arg(timer.clock), arg(libc::TFD_CLOEXEC), 0, 0, 0, 0];
    let made = tracee.syscall("timerfd_create", libc::SYS_timerfd_create, args)?;
    let fd = super::move_above(tracee, made, above)?;
    if timer.is_armed() || !timer.interval.is_zero() || timer.settime_flags != 0 {
        let [interval_seconds, interval_nanoseconds] = timer.interval.words();
        let [value_seconds, value_nanoseconds] = timer.value.words();
        let words = [interval_seconds, interval_nanoseconds, value_seconds, value_nanoseconds];
        let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_ne_bytes()).collect();
        let mut scratch = tracee.scratch();
        let setting = scratch.push(&bytes);
        scratch.commit(tracee)?;
        let args = [fd, arg(timer.settime_flags), setting, 0, 0, 0];
        tracee.syscall("timerfd_settime", libc::SYS_timerfd_settime, args)?;
    }
    if timer.ticks != 0 {
        let mut scratch = tracee.scratch();
        let mut poll = Vec::with_capacity(8);
        poll.extend_from_slice(&i32::try_from(fd).unwrap_or(-1).to_ne_bytes());
        poll.extend_from_slice(&libc::POLLIN.to_ne_bytes());
        poll.extend_from_slice(&0i16.to_ne_bytes());
        let poll_address = scratch.push(&poll);
        let ticks_address = scratch.reserve(8);
        scratch.commit(tracee)?;
        let ready = tracee.syscall("poll(timerfd)", libc::SYS_poll, [poll_address, 1, 0, 0, 0, 0])?;
        let ticks = timer.ticks.saturating_add(u64::from(ready > 0));
        tracee.write_memory(ticks_address, &ticks.to_ne_bytes())?;
        tracee.syscall("ioctl(TFD_IOC_SET_TICKS)", libc::SYS_ioctl, [fd, TFD_IOC_SET_TICKS, ticks_address, 0, 0, 0])?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;
    use std::os::fd::FromRawFd;

    /// The descriptor a syscall returned, owned, or its errno.
    fn owned(result: libc::c_long) -> Result<OwnedFd, nix::errno::Errno> {
        let fd = libc::c_int::try_from(result).map_err(|_| nix::errno::Errno::EBADF)?;
        if fd < 0 {
            return Err(nix::errno::Errno::last());
        }
        // SAFETY: the syscall returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn fields(text: &str) -> Fields {
        Fields::parse("/proc/4/fdinfo/3", text).unwrap()
    }

    #[test]
    fn the_kernel_s_fdinfo_texts_parse() {
        let eventfd = "pos:\t0\nflags:\t04002\nmnt_id:\t17\nino:\t1038\neventfd-count:                5\n\
                       eventfd-id: 1\neventfd-semaphore: 1\n";
        assert_eq!(parse_eventfd(&fields(eventfd)).unwrap(), (5, Some(true)));
        assert_eq!(parse_eventfd(&fields("eventfd-count: fffffffffffffffe\n")).unwrap(), (EVENTFD_MAX, None));
        assert!(parse_eventfd(&fields("eventfd-count: 1\neventfd-semaphore: 2\n")).is_err());
        let timerfd = "pos:\t0\nflags:\t02\nclockid: 0\nticks: 3\nsettime flags: 03\n\
                       it_value: (99, 976302708)\nit_interval: (1, 0)\n";
        let timer = parse_timerfd(&fields(timerfd)).unwrap();
        assert_eq!(
            timer,
            TimerFd {
                clock: 0,
                settime_flags: 3,
                value: Timespec { seconds: 99, nanoseconds: 976_302_708 },
                interval: Timespec { seconds: 1, nanoseconds: 0 },
                ticks: 3,
            }
        );
        assert!(timer.is_absolute() && timer.cancels_on_set() && timer.is_armed());
        let broken = timerfd.replace("(1, 0)", "(1 0)");
        assert!(parse_timerfd(&fields(&broken)).unwrap_err().to_string().contains("it_interval"));
        let broken = timerfd.replace("976302708", "1976302708");
        assert!(parse_timerfd(&fields(&broken)).is_err(), "nanoseconds above 10⁹");
    }

    #[test]
    fn times_add_and_show() {
        let time = Timespec { seconds: 1, nanoseconds: 600_000_000 };
        assert_eq!(time.plus(time), Timespec { seconds: 3, nanoseconds: 200_000_000 });
        assert_eq!(time.to_string(), "1.6s");
        assert_eq!(Timespec { seconds: 30, nanoseconds: 0 }.to_string(), "30s");
        assert_eq!(Timespec { seconds: 0, nanoseconds: 1000 }.to_string(), "0.000001s");
        let huge = Timespec { seconds: u64::MAX, nanoseconds: 0 }.plus(time);
        assert_eq!(huge.seconds, i64::MAX as u64);
    }

    #[test]
    fn other_anonymous_inodes_are_refused_by_kind() {
        assert_eq!(refused_kind("[io_uring]"), "an io_uring instance");
        assert!(refused_kind("[eventpoll]").contains("epoll"));
        assert!(refused_kind("inotify").contains("inotify"));
        assert_eq!(refused_kind("bpf-map"), "a BPF object");
        assert_eq!(refused_kind("[something]"), "an anonymous-inode descriptor ([something])");
        let pid = std::process::id() as i32;
        // SAFETY: pidfd_open returns a new descriptor, owned right away.
        let pidfd = owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) }).unwrap();
        let fd = pidfd.as_raw_fd();
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let error = capture(pid, fd, link.to_str().unwrap()).unwrap_err().to_string();
        assert!(error.contains("a pidfd") && error.contains(&format!("fd {fd} -> anon_inode:[pidfd]")), "{error}");
    }

    #[test]
    fn own_event_descriptors_are_read_exactly() {
        let pid = std::process::id() as i32;
        let owned_fd = |fd: libc::c_int| owned(libc::c_long::from(fd)).unwrap();
        // SAFETY: eventfd takes two integers and returns a new descriptor.
        let counter = owned_fd(unsafe { libc::eventfd(7, libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK) });
        let event = capture(pid, counter.as_raw_fd(), "anon_inode:[eventfd]").unwrap();
        assert_eq!(event, EventFile::EventFd { count: 7, semaphore: true });

        // SAFETY: timerfd_create takes two integers and returns a new descriptor.
        let timer = owned_fd(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) });
        let disarmed = capture(pid, timer.as_raw_fd(), "anon_inode:[timerfd]").unwrap();
        let EventFile::TimerFd(disarmed) = disarmed else { panic!("{disarmed:?}") };
        assert!(!disarmed.is_armed() && disarmed.ticks == 0 && disarmed.clock == libc::CLOCK_MONOTONIC);
        // A periodic timer that fired at once and every 2 ms after: the
        // ticks it shows are all the periods that passed, not one.
        let setting = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 2_000_000 },
            it_value: libc::timespec { tv_sec: 0, tv_nsec: 1 },
        };
        // SAFETY: timerfd_settime reads one itimerspec from `setting`.
        assert_eq!(unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &raw const setting, std::ptr::null_mut()) }, 0);
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(9) {}
        let EventFile::TimerFd(periodic) = capture(pid, timer.as_raw_fd(), "anon_inode:[timerfd]").unwrap() else {
            panic!()
        };
        assert!(periodic.ticks >= 4, "{periodic:?}");
        assert!(periodic.is_armed() && periodic.value.seconds == 0 && periodic.value.nanoseconds <= 2_000_000);
        let mut ticks = [0u8; 8];
        // SAFETY: reads 8 bytes into `ticks`.
        assert_eq!(unsafe { libc::read(timer.as_raw_fd(), ticks.as_mut_ptr().cast(), 8) }, 8);
        assert!(u64::from_ne_bytes(ticks) >= periodic.ticks, "the dump took no tick away");

        // An absolute timer's deadline, on its clock.
        // SAFETY: timerfd_create takes two integers and returns a new descriptor.
        let absolute = owned_fd(unsafe { libc::timerfd_create(libc::CLOCK_REALTIME, 0) });
        let deadline = clock_now(libc::CLOCK_REALTIME).unwrap().plus(Timespec { seconds: 100, nanoseconds: 0 });
        let setting = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: deadline.seconds as i64, tv_nsec: i64::from(deadline.nanoseconds) },
        };
        let flags = TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET;
        // SAFETY: timerfd_settime reads one itimerspec from `setting`.
        let set =
            unsafe { libc::timerfd_settime(absolute.as_raw_fd(), flags, &raw const setting, std::ptr::null_mut()) };
        assert_eq!(set, 0);
        let EventFile::TimerFd(read) = capture(pid, absolute.as_raw_fd(), "anon_inode:[timerfd]").unwrap() else {
            panic!()
        };
        assert_eq!(read.settime_flags, flags);
        assert_eq!(read.value.seconds.abs_diff(deadline.seconds), 0, "{read:?} vs {deadline:?}");

        let mut mask = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset and sigaddset initialise and change the set
        // they point to; signalfd reads it.
        let signals = unsafe {
            libc::sigemptyset(mask.as_mut_ptr());
            libc::sigaddset(mask.as_mut_ptr(), libc::SIGUSR2);
            owned_fd(libc::signalfd(-1, mask.as_ptr(), libc::SFD_CLOEXEC))
        };
        let event = capture(pid, signals.as_raw_fd(), "anon_inode:[signalfd]").unwrap();
        assert_eq!(event, EventFile::SignalFd { mask: 1 << (libc::SIGUSR2 - 1) });
    }

    /// A fake that gives fd 3 to whatever makes a descriptor, moves it to
    /// 20, and says a timer is ready to read when `ready`.
    fn fake(ready: bool) -> FakeTracee {
        FakeTracee::answering(move |call, _| match call.number {
            libc::SYS_eventfd2 | libc::SYS_timerfd_create | libc::SYS_signalfd4 => 3,
            libc::SYS_fcntl if call.args[1] == libc::F_DUPFD_CLOEXEC as u64 => 20,
            libc::SYS_write => 8,
            libc::SYS_poll => i64::from(ready),
            _ => 0,
        })
    }

    #[test]
    fn an_eventfd_is_made_with_its_count_and_flags() {
        let mut tracee = fake(false);
        let event = EventFile::EventFd { count: 1 << 40, semaphore: true };
        assert_eq!(make(&mut tracee, &event, libc::O_RDWR | libc::O_NONBLOCK, 20).unwrap(), 20);
        let created = tracee.calls_of(libc::SYS_eventfd2)[0];
        assert_eq!(created.args[1], (libc::EFD_CLOEXEC | libc::EFD_SEMAPHORE) as u64);
        let write = tracee.calls_of(libc::SYS_write)[0];
        assert_eq!((write.args[0], write.args[2]), (20, 8));
        assert_eq!(tracee.memory.read(write.args[1], 8), (1u64 << 40).to_ne_bytes());
        let setfl = tracee.calls.iter().find(|call| call.args[1] == libc::F_SETFL as u64).unwrap();
        assert_eq!((setfl.args[0], setfl.args[2]), (20, libc::O_NONBLOCK as u64));
        let mut empty = fake(false);
        make(&mut empty, &EventFile::EventFd { count: 0, semaphore: false }, libc::O_RDWR, 20).unwrap();
        assert!(empty.calls_of(libc::SYS_write).is_empty(), "nothing to add");
        let check = |event: &EventFile| check(|| "open file 0".into(), event);
        assert!(check(&event).is_ok());
        let full = EventFile::EventFd { count: u64::MAX, semaphore: false };
        assert!(check(&full).unwrap_err().to_string().contains("above its maximum"));
    }

    #[test]
    fn a_timer_is_armed_as_it_was_and_given_its_ticks() {
        let timer = TimerFd {
            clock: libc::CLOCK_REALTIME,
            settime_flags: TFD_TIMER_ABSTIME,
            value: Timespec { seconds: 1_700_000_000, nanoseconds: 5 },
            interval: Timespec { seconds: 1, nanoseconds: 0 },
            ticks: 3,
        };
        let mut tracee = fake(false);
        make(&mut tracee, &EventFile::TimerFd(TimerFd { ticks: 0, ..timer }), libc::O_RDWR, 20).unwrap();
        assert_eq!(tracee.calls_of(libc::SYS_timerfd_create)[0].args[..2], [0, libc::TFD_CLOEXEC as u64]);
        let settime = tracee.calls_of(libc::SYS_timerfd_settime)[0];
        assert_eq!((settime.args[0], settime.args[1]), (20, 1));
        let setting: Vec<u8> = [1u64, 0, 1_700_000_000, 5].iter().flat_map(|word| word.to_ne_bytes()).collect();
        assert_eq!(tracee.memory.read(settime.args[2], 32), setting);
        assert!(tracee.calls_of(libc::SYS_ioctl).is_empty(), "no ticks to set");
        // The deadline passed: timerfd_settime fired it, so one tick more.
        let mut tracee = fake(true);
        make(&mut tracee, &EventFile::TimerFd(timer), libc::O_RDWR, 20).unwrap();
        let poll = tracee.calls_of(libc::SYS_poll)[0];
        assert_eq!(tracee.memory.read(poll.args[0], 4), 20i32.to_ne_bytes(), "polls the timer");
        let ioctl = tracee.calls_of(libc::SYS_ioctl)[0];
        assert_eq!((ioctl.args[0], ioctl.args[1]), (20, 0x4008_5400));
        assert_eq!(tracee.memory.read(ioctl.args[2], 8), 4u64.to_ne_bytes());
        // Not yet due: the saved ticks only.
        let mut tracee = fake(false);
        make(&mut tracee, &EventFile::TimerFd(timer), libc::O_RDWR, 20).unwrap();
        assert_eq!(tracee.memory.read(tracee.calls_of(libc::SYS_ioctl)[0].args[2], 8), 3u64.to_ne_bytes());
        // Disarmed with nothing to keep: created only.
        let disarmed =
            TimerFd { settime_flags: 0, value: Timespec::default(), interval: Timespec::default(), ticks: 0, ..timer };
        let mut tracee = fake(false);
        make(&mut tracee, &EventFile::TimerFd(disarmed), libc::O_RDWR, 20).unwrap();
        assert!(tracee.calls_of(libc::SYS_timerfd_settime).is_empty() && tracee.calls_of(libc::SYS_ioctl).is_empty());
        let check = |timer: TimerFd| check(|| "open file 0".into(), &EventFile::TimerFd(timer));
        assert!(check(timer).is_ok());
        assert!(check(TimerFd { clock: 4, ..timer }).unwrap_err().to_string().contains("not a timerfd clock"));
        assert!(check(TimerFd { settime_flags: 4, ..timer }).is_err());
        let bad = TimerFd { value: Timespec { seconds: 0, nanoseconds: 1_000_000_000 }, ..timer };
        assert!(check(bad).unwrap_err().to_string().contains("not a timespec"));
    }

    #[test]
    fn a_signalfd_is_made_with_its_mask() {
        let mut tracee = fake(false);
        make(&mut tracee, &EventFile::SignalFd { mask: 0x200 }, libc::O_RDWR, 20).unwrap();
        let created = tracee.calls_of(libc::SYS_signalfd4)[0];
        assert_eq!((created.args[0], created.args[2], created.args[3]), (u64::MAX, 8, libc::SFD_CLOEXEC as u64));
        assert_eq!(tracee.memory.read(created.args[1], 8), 0x200u64.to_ne_bytes());
        assert!(tracee.calls.iter().all(|call| call.number != libc::SYS_fcntl || call.args[1] != libc::F_SETFL as u64));
    }
}
