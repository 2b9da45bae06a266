//! Time as the control plane sees it. Everything that decides by time (lifecycle policies,
//! metering, events) asks a [`Clock`], so tests drive time forward without sleeping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that moves only when told to: for tests of time-driven behaviour.
#[derive(Debug)]
pub struct FakeClock(Mutex<OffsetDateTime>);

impl FakeClock {
    /// A fake clock showing `at`.
    pub fn new(at: OffsetDateTime) -> Arc<FakeClock> {
        Arc::new(FakeClock(Mutex::new(at)))
    }

    /// A fake clock showing the system time now, truncated to the millisecond (the stored
    /// precision), so that times read back compare equal.
    pub fn starting_now() -> Arc<FakeClock> {
        let now = OffsetDateTime::now_utc();
        let ms = now.millisecond();
        Self::new(now.replace_millisecond(ms).unwrap_or(now))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += d;
    }

    /// Sets the clock to `at` (tests may move it backwards, to check that nothing breaks).
    pub fn set(&self, at: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Parses a stored timestamp (RFC 3339).
pub fn parse_time(at: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_clock_moves_only_when_told() {
        let c = FakeClock::starting_now();
        let t0 = c.now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(3600));
        assert_eq!(c.now() - t0, time::Duration::hours(1));
        assert_eq!(parse_time(&crate::format_time(c.now())), Some(c.now()));
    }
}
