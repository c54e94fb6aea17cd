//! How `crp inspect` shows an event descriptor (eventfd, timerfd,
//! signalfd): one object per kind beside the descriptor, null for the other
//! kinds and for every other descriptor, and one line of text.

use crp_compound::files::EventFile;
use crp_compound::files::event::{TimerFd, Timespec};
use serde::Serialize;

use super::NamedSet;
use crate::inspect::mask_names;

/// The event objects of one descriptor; at most one is there.
#[derive(Debug, Default, Serialize)]
pub struct EventSummaries {
    /// For an eventfd: its counter.
    pub eventfd: Option<EventFdSummary>,
    /// For a timerfd: its clock, time and ticks.
    pub timerfd: Option<TimerFdSummary>,
    /// For a signalfd: the signals it reads.
    pub signalfd: Option<SignalFdSummary>,
}

#[derive(Debug, Serialize)]
pub struct EventFdSummary {
    pub count: u64,
    /// EFD_SEMAPHORE: each read takes one.
    pub semaphore: bool,
}

#[derive(Debug, Serialize)]
pub struct TimeSummary {
    pub seconds: u64,
    pub nanoseconds: u32,
}

impl From<Timespec> for TimeSummary {
    fn from(time: Timespec) -> Self {
        Self { seconds: time.seconds, nanoseconds: time.nanoseconds }
    }
}

#[derive(Debug, Serialize)]
pub struct TimerFdSummary {
    /// "CLOCK_MONOTONIC"...
    pub clock: String,
    pub clock_id: i32,
    pub armed: bool,
    /// TFD_TIMER_ABSTIME.
    pub absolute: bool,
    /// TFD_TIMER_CANCEL_ON_SET.
    pub cancel_on_set: bool,
    /// For an armed relative timer: the time that was left at the dump.
    pub time_left: Option<TimeSummary>,
    /// For an armed absolute timer: its deadline on its clock.
    pub deadline: Option<TimeSummary>,
    pub interval: TimeSummary,
    /// Expirations not read yet.
    pub ticks: u64,
}

#[derive(Debug, Serialize)]
pub struct SignalFdSummary {
    pub mask: NamedSet,
}

impl EventSummaries {
    pub fn of(event: &EventFile) -> Self {
        match event {
            EventFile::EventFd { count, semaphore } => {
                Self { eventfd: Some(EventFdSummary { count: *count, semaphore: *semaphore }), ..Self::default() }
            }
            EventFile::TimerFd(timer) => Self { timerfd: Some(timer_summary(timer)), ..Self::default() },
            EventFile::SignalFd { mask } => Self {
                signalfd: Some(SignalFdSummary { mask: NamedSet::new(*mask, mask_names(*mask)) }),
                ..Self::default()
            },
        }
    }

    /// The text line's description, when the descriptor is an event one.
    pub fn text(&self) -> Option<String> {
        if let Some(eventfd) = &self.eventfd {
            let semaphore = if eventfd.semaphore { ", semaphore" } else { "" };
            return Some(format!("eventfd, count {}{semaphore}", eventfd.count));
        }
        if let Some(timer) = &self.timerfd {
            let time = |time: &TimeSummary| Timespec { seconds: time.seconds, nanoseconds: time.nanoseconds };
            let when = match (&timer.time_left, &timer.deadline) {
                (Some(left), _) => format!("{} left", time(left)),
                (None, Some(deadline)) => format!("deadline {} (absolute)", time(deadline)),
                (None, None) => "disarmed".to_owned(),
            };
            let interval = time(&timer.interval);
            let every = if interval.is_zero() { String::new() } else { format!(", every {interval}") };
            let cancel = if timer.cancel_on_set { ", cancelled if the clock is set" } else { "" };
            let ticks = if timer.ticks == 1 { "1 tick".to_owned() } else { format!("{} ticks", timer.ticks) };
            return Some(format!("timerfd on {}, {when}{every}, {ticks} unread{cancel}", timer.clock));
        }
        let signalfd = self.signalfd.as_ref()?;
        let names = if signalfd.mask.names.is_empty() { "no signal".to_owned() } else { signalfd.mask.names.join(" ") };
        Some(format!("signalfd for {names} ({:#x})", signalfd.mask.value))
    }
}

fn timer_summary(timer: &TimerFd) -> TimerFdSummary {
    let armed = timer.is_armed();
    TimerFdSummary {
        clock: timer.clock_name(),
        clock_id: timer.clock,
        armed,
        absolute: timer.is_absolute(),
        cancel_on_set: timer.cancels_on_set(),
        time_left: (armed && !timer.is_absolute()).then(|| timer.value.into()),
        deadline: (armed && timer.is_absolute()).then(|| timer.value.into()),
        interval: timer.interval.into(),
        ticks: timer.ticks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_reads_as_one_line() {
        let text = |event: EventFile| EventSummaries::of(&event).text().unwrap();
        assert_eq!(text(EventFile::EventFd { count: 5, semaphore: true }), "eventfd, count 5, semaphore");
        let timer = TimerFd {
            clock: libc::CLOCK_MONOTONIC,
            settime_flags: 0,
            value: Timespec { seconds: 29, nanoseconds: 500_000_000 },
            interval: Timespec { seconds: 1, nanoseconds: 0 },
            ticks: 2,
        };
        assert_eq!(text(EventFile::TimerFd(timer)), "timerfd on CLOCK_MONOTONIC, 29.5s left, every 1s, 2 ticks unread");
        let absolute = TimerFd { clock: libc::CLOCK_REALTIME, settime_flags: 3, ticks: 0, ..timer };
        assert_eq!(
            text(EventFile::TimerFd(absolute)),
            "timerfd on CLOCK_REALTIME, deadline 29.5s (absolute), every 1s, 0 ticks unread, cancelled if the clock is set"
        );
        let disarmed = TimerFd { value: Timespec::default(), interval: Timespec::default(), ..timer };
        assert_eq!(text(EventFile::TimerFd(disarmed)), "timerfd on CLOCK_MONOTONIC, disarmed, 2 ticks unread");
        let fired = TimerFd { ticks: 1, ..disarmed };
        assert_eq!(text(EventFile::TimerFd(fired)), "timerfd on CLOCK_MONOTONIC, disarmed, 1 tick unread");
        assert_eq!(text(EventFile::SignalFd { mask: 0x200 }), "signalfd for SIGUSR1 (0x200)");
        assert_eq!(EventSummaries::default().text(), None);
    }
}
