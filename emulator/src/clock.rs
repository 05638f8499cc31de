//! The hub's one source of time, so schedules and timeouts are testable under paused tokio time.
//!
//! `tokio::time::pause` moves only `tokio::time::Instant`, not the wall clock, so the test clock derives UTC
//! from a fixed epoch plus tokio's elapsed time: a job scheduled an hour ahead runs at once under paused time.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

/// What the hub asks of time: the UTC now, and sleeping until a UTC instant.
pub trait Clock: Send + Sync + 'static {
    /// The current UTC time.
    fn now(&self) -> Timestamp;

    /// Sleeps until `deadline` (returns at once when it has passed), on tokio's timer.
    fn sleep_until(&self, deadline: Timestamp) -> tokio::time::Sleep {
        let wait = deadline.duration_since(self.now());
        let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait)
    }

    /// Seconds since the Unix epoch, as SAS expiry checks use.
    fn unix_seconds(&self) -> u64 {
        u64::try_from(self.now().as_second()).unwrap_or(0)
    }
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock for tests: a fixed UTC epoch plus the tokio time elapsed since creation.
#[derive(Debug, Clone)]
pub struct TokioClock {
    epoch: Timestamp,
    started: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `epoch` now, advancing with tokio time (and so with `tokio::time::advance`).
    pub fn starting_at(epoch: Timestamp) -> Self {
        Self { epoch, started: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = self.started.elapsed();
        self.epoch.checked_add(elapsed).unwrap_or(self.epoch)
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// Formats a timestamp as the hub prints it: UTC with seven fractional digits, e.g. `2024-05-01T12:00:00.1234567Z`.
pub fn format_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.7fZ").to_string()
}

/// What the hub prints for a time that was never set.
pub const NEVER: &str = "0001-01-01T00:00:00Z";

/// Formats an optional timestamp, `NEVER` when unset.
pub fn format_optional_time(ts: Option<Timestamp>) -> String {
    ts.map(format_time).unwrap_or_else(|| NEVER.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_seven_fractional_digits() {
        let ts: Timestamp = "2024-06-01T12:00:00.1234567Z".parse().expect("parse");
        assert_eq!(format_time(ts), "2024-06-01T12:00:00.1234567Z");
        let whole: Timestamp = "2024-06-01T12:00:00Z".parse().expect("parse");
        assert_eq!(format_time(whole), "2024-06-01T12:00:00.0000000Z");
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let epoch: Timestamp = "2030-01-01T00:00:00Z".parse().expect("parse");
        let clock = TokioClock::starting_at(epoch);
        let deadline = epoch.checked_add(jiff::SignedDuration::from_secs(3600)).expect("add");
        clock.sleep_until(deadline).await;
        assert!(clock.now() >= deadline);
        assert_eq!(clock.unix_seconds(), u64::try_from(deadline.as_second()).expect("positive"));
    }
}
