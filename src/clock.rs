//! Time, as the server's decisions read it: wall-clock time for certificate
//! windows, the revocation window, token expiry and event timestamps, and a
//! monotonic clock for rate limiters. Both come from a [`Clock`] that the server is
//! handed ([`crate::server::run_with`]), so tests can jump it; `ferry-proto` never
//! reads a clock at all (the shell passes the time in).
//!
//! Timers (deadlines the runtime sleeps until) stay on the runtime's own clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the server reads the time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Wall-clock Unix milliseconds.
    fn unix_ms(&self) -> i64;
    /// A monotonic instant (rate limiters).
    fn now(&self) -> Instant;
}

/// A shared [`Clock`].
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> i64 {
        unix_ms()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// The operating system's wall clock in Unix milliseconds (0 if it is before 1970).
/// The server reads time through its [`Clock`]; this is that clock's source, and a
/// convenience for tests and tools.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A clock that runs with the system's, and that a test can jump: the wall clock
/// by any amount either way (an NTP step, a wrong clock), the monotonic one forward
/// (time that passed without the server running, as a pause).
#[derive(Debug, Default)]
pub struct JumpingClock {
    wall_offset_ms: AtomicI64,
    monotonic_ahead_ms: AtomicU64,
}

impl JumpingClock {
    /// A clock that reads the system's time until it is jumped.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Moves the wall clock by `ms` (negative: back) from where it is now.
    pub fn jump_wall(&self, ms: i64) {
        self.wall_offset_ms.fetch_add(ms, Ordering::AcqRel);
    }

    /// Moves the monotonic clock forward by `by`.
    pub fn advance_monotonic(&self, by: Duration) {
        self.monotonic_ahead_ms
            .fetch_add(by.as_millis() as u64, Ordering::AcqRel);
    }
}

impl Clock for JumpingClock {
    fn unix_ms(&self) -> i64 {
        unix_ms().saturating_add(self.wall_offset_ms.load(Ordering::Acquire))
    }

    fn now(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.monotonic_ahead_ms.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jumping_clock_moves_only_when_told() {
        let c = JumpingClock::new();
        let before = c.unix_ms();
        c.jump_wall(-3_600_000);
        let after = c.unix_ms();
        assert!(after <= before - 3_600_000 + 60_000, "{before} → {after}");
        let t = c.now();
        c.advance_monotonic(Duration::from_secs(10));
        assert!(c.now() >= t + Duration::from_secs(10));
    }
}
