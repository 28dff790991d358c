//! Rate limits decided in Redis, so that a limit holds across every instance of a
//! cluster instead of once per instance.
//!
//! Each decision is one `EVALSHA` of [`GCRA_SCRIPT`]: the same generic cell rate
//! algorithm as [`super::Gcra`], computed inside Redis on Redis's own clock
//! (`TIME`), so instances with skewed clocks agree. The key stores the theoretical
//! arrival time in microseconds and expires by itself once the key is rested (back
//! to a full burst), so Redis holds only keys that are limited now.
//!
//! A decision may grant several actions at once (a lease, see
//! [`super::Limiter`]): the instance spends them without asking again. Every action
//! spent anywhere was granted by Redis first, so the cluster never allows more than
//! the rule; a lease that expires unspent (the device moved to another instance)
//! only allows less.
//!
//! Redis is not the truth of anything here: when a decision does not come back
//! within [`DECISION_TIMEOUT`], or Redis refuses the connection, the caller falls
//! back to its instance's own limiter. A [`Breaker`] stops asking Redis after
//! [`FAILURES_TO_OPEN`] failures in a row, for [`OPEN_FOR`], then lets one decision
//! probe it: so while Redis is down the limits are local (each instance allows the
//! configured rate on its own) within about one second, and shared again within
//! about one second of Redis answering.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Gcra, RateInfo};
use crate::breaker::{Breaker, BreakerMetrics, State};

/// The longest a decision may take before the limiter decides locally.
pub const DECISION_TIMEOUT: Duration = Duration::from_millis(200);
/// Failed decisions in a row that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How long the breaker stays open before a decision probes Redis again.
pub const OPEN_FOR: Duration = Duration::from_millis(500);
/// Every key this module writes starts with this.
pub const KEY_PREFIX: &str = "ferry:rl:v1:";

/// GCRA in Redis, granting several actions at once. `KEYS[1]`: the limited key.
/// `ARGV`: emission interval and tolerance (burst − 1 emissions) in microseconds,
/// and how many actions to grant (0 to only ask whether one would be allowed).
/// Returns `{granted, retry_after_us, reset_us}`: how many actions were granted (at
/// most as many as the rule allows now; 0 when refused), how long to wait when
/// none was, and how long until the full burst is back.
///
/// The arrival time is written with `%.0f` (Lua's default number format would
/// round a microsecond timestamp to 14 digits).
pub const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local available = math.floor((now + tolerance + emission - tat) / emission)
if available < 1 then
  return {0, tat - tolerance - now, tat - now}
end
if want == 0 then
  return {1, 0, tat - now}
end
local granted = math.min(want, available)
local new_tat = tat + granted * emission
local ttl_ms = math.floor((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {granted, 0, new_tat - now}
";

/// What Redis decided: how many actions it granted (0: refused) and the numbers
/// for the `RateLimit-*` headers after the grant.
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    /// Actions granted (the caller spends one now and may keep the rest).
    pub granted: u32,
    /// The decision, as if only one action had been asked for.
    pub info: RateInfo,
}

/// The connection to Redis that decisions share, its breaker and its counters.
pub struct SharedLimits {
    conn: ConnectionManager,
    script: redis::Script,
    breaker: Breaker,
    decisions: IntCounterVec,
}

impl SharedLimits {
    /// Connects to Redis at `url`; fails when it cannot be reached now.
    pub async fn connect(
        url: &str,
        breakers: BreakerMetrics,
        decisions: IntCounterVec,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(DECISION_TIMEOUT))
            .set_max_delay(Duration::from_secs(1));
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(Self {
            conn,
            script: redis::Script::new(GCRA_SCRIPT),
            breaker: Breaker::new("redis", FAILURES_TO_OPEN, OPEN_FOR, Some(breakers)),
            decisions,
        })
    }

    /// The breaker's state: `Open` while decisions are local.
    pub fn state(&self) -> State {
        self.breaker.state()
    }

    /// One decision for `key` of the limit `name` under `rule`: up to `want`
    /// actions granted (0 only asks whether one would be); `None` when Redis did not
    /// decide (the caller decides locally).
    pub async fn decide(
        &self,
        name: &str,
        rule: &Gcra,
        key: &[u8],
        want: u32,
        now: Instant,
    ) -> Option<Grant> {
        if self.breaker.allow(now).is_err() {
            return None;
        }
        let mut full_key = Vec::with_capacity(KEY_PREFIX.len() + name.len() + 1 + key.len());
        full_key.extend_from_slice(KEY_PREFIX.as_bytes());
        full_key.extend_from_slice(name.as_bytes());
        full_key.push(b':');
        full_key.extend_from_slice(key);
        let mut conn = self.conn.clone();
        let mut call = self.script.key(full_key);
        call.arg(micros(rule.emission()))
            .arg(micros(rule.tolerance()))
            .arg(want);
        let answer: Result<redis::RedisResult<(i64, i64, i64)>, _> =
            tokio::time::timeout(DECISION_TIMEOUT, call.invoke_async(&mut conn)).await;
        match answer {
            Ok(Ok((granted, retry_us, reset_us))) => {
                self.breaker.success();
                self.decisions.with_label_values(&["shared"]).inc();
                let granted = u32::try_from(granted.max(0)).unwrap_or(u32::MAX);
                let info = rule.info(
                    granted > 0,
                    Duration::from_micros(retry_us.max(0) as u64),
                    Duration::from_micros(reset_us.max(0) as u64),
                );
                Some(Grant { granted, info })
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "shared rate limit failed; deciding locally");
                self.breaker.failure(Instant::now());
                None
            }
            Err(_) => {
                tracing::debug!("shared rate limit timed out; deciding locally");
                self.breaker.failure(Instant::now());
                None
            }
        }
    }
}

impl SharedLimits {
    /// Counts a decision made locally because Redis did not make it.
    pub(super) fn count_fallback(&self) {
        self.decisions.with_label_values(&["fallback"]).inc();
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// Where the limiters find the shared limits once Redis is connected (a cheap
/// clone; empty: every decision is local).
#[derive(Clone, Default)]
pub struct Shared {
    slot: Arc<OnceLock<SharedLimits>>,
}

impl Shared {
    /// Makes every limiter holding this handle decide in Redis from now on. Once.
    pub fn attach(&self, limits: SharedLimits) {
        let _ = self.slot.set(limits);
    }

    /// The shared limits, when attached.
    pub fn get(&self) -> Option<&SharedLimits> {
        self.slot.get()
    }

    /// The Redis breaker's state, when the limits are shared.
    pub fn state(&self) -> Option<State> {
        self.get().map(SharedLimits::state)
    }
}
