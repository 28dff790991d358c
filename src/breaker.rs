//! Circuit breakers: stop calling a dependency that keeps failing, so callers fail
//! fast (or fall back) instead of piling up behind timeouts, and find out on their
//! own when it answers again.
//!
//! A breaker is **closed** while calls succeed. After `threshold` consecutive
//! failures it **opens**: [`Breaker::allow`] refuses every call for `open_for`. Then
//! the next call is let through as a **half-open** probe (the others are still
//! refused): its success closes the breaker, its failure opens it again. A probe
//! that never reports back (its caller was dropped) is replaced after another
//! `open_for`.
//!
//! Time is passed in, so every rule here is tested without sleeping. Each
//! transition is logged once and counted in `ferry_breaker_transitions_total`; the
//! state is the gauge `ferry_breaker_state` (0 closed, 1 half-open, 2 open).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec};
use tracing::{info, warn};

/// What a breaker is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Calls go through.
    Closed,
    /// One probe call is under way; the others are refused.
    HalfOpen,
    /// Calls are refused until the time is up.
    Open,
}

impl State {
    /// The metric's value and the log's word.
    fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }

    /// The word for logs, metrics and health responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

#[derive(Debug)]
enum Mode {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_until: Instant },
}

/// Where a breaker reports its state and transitions.
#[derive(Clone)]
pub struct BreakerMetrics {
    /// `ferry_breaker_state{breaker}`.
    pub state: IntGaugeVec,
    /// `ferry_breaker_transitions_total{breaker,to}`.
    pub transitions: IntCounterVec,
}

/// One circuit breaker around one dependency (see the module docs).
pub struct Breaker {
    name: &'static str,
    threshold: u32,
    open_for: Duration,
    mode: Mutex<Mode>,
    metrics: Option<BreakerMetrics>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

impl Breaker {
    /// A closed breaker named `name` (the metric label) that opens after
    /// `threshold` consecutive failures and stays open for `open_for`.
    pub fn new(
        name: &'static str,
        threshold: u32,
        open_for: Duration,
        metrics: Option<BreakerMetrics>,
    ) -> Self {
        if let Some(m) = &metrics {
            m.state.with_label_values(&[name]).set(0);
        }
        Self {
            name,
            threshold: threshold.max(1),
            open_for,
            mode: Mutex::new(Mode::Closed { failures: 0 }),
            metrics,
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The state now.
    pub fn state(&self) -> State {
        match *self.mode.lock().expect("breaker lock poisoned") {
            Mode::Closed { .. } => State::Closed,
            Mode::Open { .. } => State::Open,
            Mode::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// Whether a call may go ahead now: `Ok` when closed, or when this call is the
    /// half-open probe; `Err(retry_after)` while open (or while another call probes).
    /// A caller that went ahead reports [`Self::success`] or [`Self::failure`].
    pub fn allow(&self, now: Instant) -> Result<(), Duration> {
        let mut mode = self.mode.lock().expect("breaker lock poisoned");
        match *mode {
            Mode::Closed { .. } => Ok(()),
            Mode::Open { until } | Mode::HalfOpen { probe_until: until } if now >= until => {
                let was = if matches!(*mode, Mode::Open { .. }) {
                    State::Open
                } else {
                    State::HalfOpen
                };
                *mode = Mode::HalfOpen {
                    probe_until: now + self.open_for,
                };
                if was == State::Open {
                    self.transition(State::HalfOpen);
                }
                Ok(())
            }
            Mode::Open { until } | Mode::HalfOpen { probe_until: until } => Err(until
                .saturating_duration_since(now)
                .max(Duration::from_millis(1))),
        }
    }

    /// A call succeeded: the breaker closes (or stays closed).
    pub fn success(&self) {
        let mut mode = self.mode.lock().expect("breaker lock poisoned");
        match *mode {
            Mode::Closed { ref mut failures } => *failures = 0,
            Mode::Open { .. } | Mode::HalfOpen { .. } => {
                *mode = Mode::Closed { failures: 0 };
                self.transition(State::Closed);
            }
        }
    }

    /// A call failed at `now`: the breaker opens after `threshold` in a row, and
    /// at once when the failed call was the half-open probe.
    pub fn failure(&self, now: Instant) {
        let mut mode = self.mode.lock().expect("breaker lock poisoned");
        match *mode {
            Mode::Closed { ref mut failures } => {
                *failures += 1;
                if *failures >= self.threshold {
                    *mode = Mode::Open {
                        until: now + self.open_for,
                    };
                    self.transition(State::Open);
                }
            }
            Mode::HalfOpen { .. } => {
                *mode = Mode::Open {
                    until: now + self.open_for,
                };
                self.transition(State::Open);
            }
            // A call let through before the breaker opened reports late: the breaker
            // stays open as it is.
            Mode::Open { .. } => {}
        }
    }

    fn transition(&self, to: State) {
        match to {
            State::Open => warn!(
                breaker = self.name,
                state = to.as_str(),
                "circuit breaker opened"
            ),
            State::HalfOpen => info!(
                breaker = self.name,
                state = to.as_str(),
                "circuit breaker half-open: probing"
            ),
            State::Closed => info!(
                breaker = self.name,
                state = to.as_str(),
                "circuit breaker closed"
            ),
        }
        if let Some(m) = &self.metrics {
            m.state.with_label_values(&[self.name]).set(to.gauge());
            m.transitions
                .with_label_values(&[self.name, to.as_str()])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> BreakerMetrics {
        BreakerMetrics {
            state: IntGaugeVec::new(prometheus::Opts::new("s", "s"), &["breaker"]).unwrap(),
            transitions: IntCounterVec::new(prometheus::Opts::new("t", "t"), &["breaker", "to"])
                .unwrap(),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = Breaker::new("db", 3, Duration::from_secs(1), None);
        let t = Instant::now();
        b.failure(t);
        b.failure(t);
        // A success in between resets the count.
        b.success();
        b.failure(t);
        b.failure(t);
        assert_eq!(b.state(), State::Closed);
        assert!(b.allow(t).is_ok());
        b.failure(t);
        assert_eq!(b.state(), State::Open);
        let wait = b.allow(t).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
    }

    #[test]
    fn one_probe_when_the_time_is_up_and_its_outcome_decides() {
        let m = metrics();
        let b = Breaker::new("redis", 1, Duration::from_millis(500), Some(m.clone()));
        let t0 = Instant::now();
        b.failure(t0);
        assert_eq!(m.state.with_label_values(&["redis"]).get(), 2);
        assert!(b.allow(t0 + Duration::from_millis(499)).is_err());
        // Time is up: one probe goes ahead, the others wait for it.
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.allow(t1).is_ok());
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(m.state.with_label_values(&["redis"]).get(), 1);
        assert!(b.allow(t1).is_err());
        // The probe fails: open again for another period.
        b.failure(t1);
        assert_eq!(b.state(), State::Open);
        assert!(b.allow(t1 + Duration::from_millis(499)).is_err());
        let t2 = t1 + Duration::from_millis(500);
        assert!(b.allow(t2).is_ok());
        b.success();
        assert_eq!(b.state(), State::Closed);
        assert!(b.allow(t2).is_ok());
        assert_eq!(m.state.with_label_values(&["redis"]).get(), 0);
        let count = |to: &str| m.transitions.with_label_values(&["redis", to]).get();
        assert_eq!(
            (count("open"), count("half_open"), count("closed")),
            (2, 2, 1)
        );
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced() {
        let b = Breaker::new("db", 1, Duration::from_millis(100), None);
        let t0 = Instant::now();
        b.failure(t0);
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.allow(t1).is_ok());
        // Its caller was dropped: after another period, another probe goes ahead.
        assert!(b.allow(t1 + Duration::from_millis(99)).is_err());
        assert!(b.allow(t1 + Duration::from_millis(100)).is_ok());
        assert_eq!(b.state(), State::HalfOpen);
    }

    #[test]
    fn a_late_failure_leaves_an_open_breaker_as_it_is() {
        let b = Breaker::new("db", 1, Duration::from_millis(100), None);
        let t0 = Instant::now();
        b.failure(t0);
        b.failure(t0 + Duration::from_millis(90));
        // Still due to probe at t0 + 100 ms, not pushed back by the late report.
        assert!(b.allow(t0 + Duration::from_millis(100)).is_ok());
    }
}
