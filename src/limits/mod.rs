//! Admission limits: per-key rate limiting (GCRA) and per-IP / global connection caps.
//!
//! A [`Limiter`] decides in this process ([`KeyedGcra`]) or, in a cluster with
//! `limits.shared`, in Redis ([`shared`]), falling back to its local rule while
//! Redis does not answer. Time is passed in, so every local rule here is tested
//! without sleeping.

pub mod shared;

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use shared::{Shared, SharedLimits};

/// The generic cell rate algorithm: `rate` actions per second sustained, `burst`
/// at once.
#[derive(Clone, Copy, Debug)]
pub struct Gcra {
    emission: Duration,
    tolerance: Duration,
    burst: u32,
}

/// One rate-limit decision in the terms of the `RateLimit-*` HTTP headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateInfo {
    /// The burst: how many actions a rested key may take at once.
    pub limit: u32,
    /// Actions still allowed right now, after this one.
    pub remaining: u32,
    /// Until the full burst is available again.
    pub reset: Duration,
    /// Set when this action was refused: how long to wait before the next try.
    pub retry_after: Option<Duration>,
}

impl Gcra {
    /// A rule of `per_sec` per second with bursts of `burst` (both ≥ 1).
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let emission = Duration::from_secs(1) / per_sec.max(1);
        Self {
            emission,
            tolerance: emission * burst.max(1).saturating_sub(1),
            burst: burst.max(1),
        }
    }

    /// A rule of one action every `emission`, with bursts of `burst` (≥ 1).
    pub fn every(emission: Duration, burst: u32) -> Self {
        let burst = burst.max(1);
        Self {
            emission,
            tolerance: emission * (burst - 1),
            burst,
        }
    }

    /// The time between two actions at the sustained rate.
    pub fn emission(&self) -> Duration {
        self.emission
    }

    /// How far ahead of the sustained rate a burst may run (burst − 1 emissions).
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// A decision made elsewhere (in Redis) in this rule's terms: whether the action
    /// was allowed, how long to wait if not, and how long until the full burst is
    /// back (the backlog after the decision).
    pub fn info(&self, allowed: bool, retry_after: Duration, backlog: Duration) -> RateInfo {
        let headroom = (self.tolerance + self.emission).saturating_sub(backlog);
        let remaining = (headroom.as_nanos() / self.emission.as_nanos().max(1)) as u32;
        RateInfo {
            limit: self.burst,
            remaining: if allowed {
                remaining.min(self.burst)
            } else {
                0
            },
            reset: backlog,
            retry_after: (!allowed).then_some(retry_after.max(Duration::from_millis(1))),
        }
    }

    /// Like [`Self::check`], with the numbers the `RateLimit-*` headers report.
    pub fn check_info(&self, tat: &mut Option<Instant>, now: Instant) -> RateInfo {
        let refused = self.check(tat, now).err();
        // After the check, `tat` is when the bucket would be empty again.
        let t = tat.map_or(now, |t| t.max(now));
        let mut info = self.info(refused.is_none(), refused.unwrap_or_default(), t - now);
        info.retry_after = refused;
        info
    }

    /// Whether one more action would be allowed now, without counting it.
    pub fn peek(&self, tat: Option<Instant>, now: Instant) -> Result<(), Duration> {
        let mut copy = tat;
        self.check(&mut copy, now)
    }

    /// Applies the rule to one key's theoretical arrival time.
    pub fn check(&self, tat: &mut Option<Instant>, now: Instant) -> Result<(), Duration> {
        let t = tat.map_or(now, |t| t.max(now));
        let allow_at = t.checked_sub(self.tolerance).unwrap_or(now);
        if now < allow_at {
            return Err(allow_at - now);
        }
        *tat = Some(t + self.emission);
        Ok(())
    }
}

/// A [`Gcra`] rule applied per key, in process memory.
pub struct KeyedGcra<K> {
    rule: Gcra,
    state: Mutex<HashMap<K, Instant>>,
    sweep_at: usize,
}

impl<K: Eq + Hash + Clone> KeyedGcra<K> {
    /// A limiter of `per_sec`/`burst` per key.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self::with_rule(Gcra::new(per_sec, burst))
    }

    /// A limiter applying `rule` per key.
    pub fn with_rule(rule: Gcra) -> Self {
        Self {
            rule,
            state: Mutex::new(HashMap::new()),
            sweep_at: 4096,
        }
    }

    /// The rule applied to each key.
    pub fn rule(&self) -> &Gcra {
        &self.rule
    }
}

impl<K: Eq + Hash + Clone + Send> KeyedGcra<K> {
    /// Counts one action of `key` and reports the decision for `RateLimit-*` headers.
    pub fn check_info(&self, key: &K, now: Instant) -> RateInfo {
        let mut map = self.state.lock().expect("limiter lock poisoned");
        if map.len() >= self.sweep_at {
            map.retain(|_, tat| *tat > now);
        }
        let mut tat = map.get(key).copied();
        let info = self.rule.check_info(&mut tat, now);
        if let Some(t) = tat {
            map.insert(key.clone(), t);
        }
        info
    }

    /// Whether one more action of `key` would be allowed now, without counting it.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let map = self.state.lock().expect("limiter lock poisoned");
        self.rule.peek(map.get(key).copied(), now)
    }
}

impl<K: Eq + Hash + Clone + Send> KeyedGcra<K> {
    /// Counts one action of `key`: `Ok` when allowed, `Err(retry_after)` when refused.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut map = self.state.lock().expect("limiter lock poisoned");
        if map.len() >= self.sweep_at {
            // Keys whose arrival time has passed are back to a full burst: forget them.
            map.retain(|_, tat| *tat > now);
        }
        let mut tat = map.get(key).copied();
        let r = self.rule.check(&mut tat, now);
        if let Some(t) = tat {
            map.insert(key.clone(), t);
        }
        r
    }
}

/// What a limited key is in Redis: its bytes after the limit's name.
pub trait LimitKey: Eq + Hash + Clone + Send + Sync {
    /// Appends the key's bytes to `out`.
    fn write_key(&self, out: &mut Vec<u8>);
}

impl LimitKey for IpAddr {
    fn write_key(&self, out: &mut Vec<u8>) {
        match self {
            Self::V4(a) => out.extend_from_slice(&a.octets()),
            Self::V6(a) => out.extend_from_slice(&a.octets()),
        }
    }
}

impl LimitKey for String {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl LimitKey for crate::model::DeviceId {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

/// One rate limit, applied per key: in Redis when the [`Shared`] limits are
/// attached and answer, in this process otherwise (see the module docs).
///
/// With shared limits, one round trip to Redis leases up to [`Limiter::lease_size`]
/// actions of a key (about a tenth of a second's worth, at most a quarter of the
/// burst); this instance spends them locally until they run out or
/// [`LEASE_TTL`] passes. A key that acts at its rate costs Redis ten round trips a
/// second instead of one per action, and actions of a key that arrive together
/// wait for one lease request instead of each making one.
pub struct Limiter<K> {
    name: &'static str,
    local: KeyedGcra<K>,
    shared: Shared,
    lease: u32,
    leases: Mutex<HashMap<K, Lease>>,
    /// One lease request to Redis at a time per shard of keys, so that actions of
    /// one key arriving together share one lease instead of each taking one.
    refills: Vec<tokio::sync::Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

/// Shards of [`Limiter`]'s lease requests.
const REFILL_SHARDS: usize = 64;

/// How long leased actions stay spendable.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// Actions of one key granted by Redis and not spent yet.
#[derive(Clone, Copy, Debug)]
struct Lease {
    left: u32,
    until: Instant,
    /// Redis's decision when they were granted (its `remaining` leaves them out).
    info: RateInfo,
}

impl<K: LimitKey> Limiter<K> {
    /// The limit `name` (its keys' namespace in Redis), applying `rule` per key.
    pub fn new(name: &'static str, rule: Gcra, shared: Shared) -> Self {
        let tenth = Duration::from_millis(100).as_nanos() / rule.emission.as_nanos().max(1);
        let lease = (tenth as u32).min(rule.burst / 4).max(1);
        Self {
            name,
            local: KeyedGcra::with_rule(rule),
            shared,
            lease,
            leases: Mutex::new(HashMap::new()),
            refills: (0..REFILL_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: Default::default(),
        }
    }

    /// The limit's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Actions one round trip to Redis leases.
    pub fn lease_size(&self) -> u32 {
        self.lease
    }

    /// Counts one action of `key` and reports the decision for `RateLimit-*` headers.
    pub async fn check_info(&self, key: &K, now: Instant) -> RateInfo {
        if self.shared.get().is_none() {
            return self.local.check_info(key, now);
        }
        if let Some(info) = self.spend_lease(key, now) {
            return info;
        }
        let shard = std::hash::BuildHasher::hash_one(&self.hasher, key) as usize % REFILL_SHARDS;
        let _refill = self.refills[shard].lock().await;
        // Another action of the key may have leased meanwhile.
        if let Some(info) = self.spend_lease(key, now) {
            return info;
        }
        match self.decide_shared(key, self.lease, now).await {
            // Refused, but a decision made meanwhile for the same key may have
            // left a lease here (concurrent actions each asked Redis).
            Some(grant) if grant.granted == 0 => self.spend_lease(key, now).unwrap_or(grant.info),
            Some(grant) => {
                let left = grant.granted - 1;
                if left > 0 {
                    self.keep_lease(key, left, grant.info, now);
                }
                RateInfo {
                    remaining: grant.info.remaining.saturating_add(left),
                    ..grant.info
                }
            }
            None => self.local.check_info(key, now),
        }
    }

    /// Counts one action of `key`: `Ok` when allowed, `Err(retry_after)` when refused.
    pub async fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        match self.check_info(key, now).await.retry_after {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Whether one more action of `key` would be allowed now, without counting it.
    pub async fn peek(&self, key: &K, now: Instant) -> Result<(), Duration> {
        if self.shared.get().is_none() {
            return self.local.peek(key, now);
        }
        let leased = {
            let leases = self.leases.lock().expect("lease lock poisoned");
            leases.get(key).is_some_and(|l| l.left > 0 && now < l.until)
        };
        if leased {
            return Ok(());
        }
        match self.decide_shared(key, 0, now).await {
            Some(grant) => grant.info.retry_after.map_or(Ok(()), Err),
            None => self.local.peek(key, now),
        }
    }

    /// One action from the key's lease, if it holds one.
    fn spend_lease(&self, key: &K, now: Instant) -> Option<RateInfo> {
        let mut leases = self.leases.lock().expect("lease lock poisoned");
        let lease = leases.get_mut(key)?;
        if lease.left == 0 || now >= lease.until {
            leases.remove(key);
            return None;
        }
        lease.left -= 1;
        let info = RateInfo {
            remaining: lease.info.remaining.saturating_add(lease.left),
            ..lease.info
        };
        if lease.left == 0 {
            leases.remove(key);
        }
        Some(info)
    }

    fn keep_lease(&self, key: &K, left: u32, info: RateInfo, now: Instant) {
        let mut leases = self.leases.lock().expect("lease lock poisoned");
        if leases.len() >= 4096 {
            leases.retain(|_, l| now < l.until);
        }
        // Concurrent grants for one key add up.
        let kept = leases
            .get(key)
            .filter(|l| now < l.until)
            .map_or(0, |l| l.left);
        leases.insert(
            key.clone(),
            Lease {
                left: left.saturating_add(kept),
                until: now + LEASE_TTL,
                info,
            },
        );
    }

    async fn decide_shared(&self, key: &K, want: u32, now: Instant) -> Option<shared::Grant> {
        let shared = self.shared.get()?;
        let mut bytes = Vec::with_capacity(32);
        key.write_key(&mut bytes);
        let grant = shared
            .decide(self.name, self.local.rule(), &bytes, want, now)
            .await;
        if grant.is_none() {
            shared.count_fallback();
        }
        grant
    }
}

/// The REST API's limiters: requests per IP, requests per access token, and failed
/// admin-key attempts per IP.
pub struct RestLimiters {
    /// Every REST request, by client IP.
    pub per_ip: Limiter<IpAddr>,
    /// Authenticated requests, by access-token `jti`.
    pub per_token: Limiter<String>,
    /// Failed admin-key attempts, by client IP.
    pub admin_failures: Limiter<IpAddr>,
}

impl RestLimiters {
    /// Limiters of `per_ip` and `per_token` requests per second (bursts twice that);
    /// admin failures: `admin_burst` at once, then one per 6 seconds.
    pub fn new(per_ip: u32, per_token: u32, admin_burst: u32, shared: &Shared) -> Self {
        Self {
            per_ip: Limiter::new(
                "rest_ip",
                Gcra::new(per_ip, per_ip.saturating_mul(2)),
                shared.clone(),
            ),
            per_token: Limiter::new(
                "rest_token",
                Gcra::new(per_token, per_token.saturating_mul(2)),
                shared.clone(),
            ),
            admin_failures: Limiter::new(
                "admin_failures",
                Gcra::every(Duration::from_secs(6), admin_burst),
                shared.clone(),
            ),
        }
    }
}

/// Caps concurrent connections per IP and in total.
pub struct ConnLimiter {
    per_ip: usize,
    global: usize,
    total: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefused {
    /// This IP holds too many connections.
    PerIp,
    /// The server holds too many connections.
    Global,
}

/// Holds one connection slot until dropped.
pub struct ConnGuard {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl ConnLimiter {
    /// A limiter of `per_ip` and `global` concurrent connections.
    pub fn new(per_ip: usize, global: usize) -> Arc<Self> {
        Arc::new(Self {
            per_ip,
            global,
            total: AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for `ip`, or says why not.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, ConnRefused> {
        let mut map = self.by_ip.lock().expect("conn limiter lock poisoned");
        if self.total.load(Ordering::Relaxed) >= self.global {
            return Err(ConnRefused::Global);
        }
        let n = map.entry(ip).or_insert(0);
        if *n >= self.per_ip {
            return Err(ConnRefused::PerIp);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnGuard {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections held now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut map = self
            .limiter
            .by_ip
            .lock()
            .expect("conn limiter lock poisoned");
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        self.limiter.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_burst_then_paces() {
        let lim = KeyedGcra::new(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            lim.check(&1u8, t0).unwrap();
        }
        let wait = lim.check(&1u8, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Other keys are independent.
        lim.check(&2u8, t0).unwrap();
        // After waiting what it said, one more is allowed, not two.
        let t1 = t0 + wait;
        lim.check(&1u8, t1).unwrap();
        assert!(lim.check(&1u8, t1).is_err());
        // After a long pause the full burst is back.
        let t2 = t1 + Duration::from_secs(5);
        for _ in 0..3 {
            lim.check(&1u8, t2).unwrap();
        }
        assert!(lim.check(&1u8, t2).is_err());
    }

    #[test]
    fn rate_info_counts_down_and_refuses() {
        let lim = KeyedGcra::new(10, 3);
        let t0 = Instant::now();
        let remaining: Vec<u32> = (0..3).map(|_| lim.check_info(&1u8, t0).remaining).collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        assert!(lim.peek(&1u8, t0).is_err());
        let refused = lim.check_info(&1u8, t0);
        assert_eq!(refused.limit, 3);
        assert_eq!(refused.remaining, 0);
        assert!(refused.retry_after.is_some());
        assert!(refused.reset <= Duration::from_millis(300), "{refused:?}");
        // Peeking never counts.
        assert!(lim.peek(&2u8, t0).is_ok());
        assert_eq!(lim.check_info(&2u8, t0).remaining, 2);
    }

    #[test]
    fn a_lease_is_a_tenth_of_a_second_at_most_a_quarter_of_the_burst() {
        let lease = |per_sec, burst| {
            Limiter::<IpAddr>::new("t", Gcra::new(per_sec, burst), Shared::default()).lease_size()
        };
        assert_eq!(lease(200, 400), 20);
        assert_eq!(lease(200, 40), 10);
        assert_eq!(lease(20, 10), 2);
        assert_eq!(lease(5, 100), 1);
        assert_eq!(lease(1000, 1), 1);
        let admin = Limiter::<IpAddr>::new(
            "a",
            Gcra::every(Duration::from_secs(6), 5),
            Shared::default(),
        );
        assert_eq!(admin.lease_size(), 1);
    }

    #[tokio::test]
    async fn without_shared_limits_a_limiter_decides_locally() {
        let lim = Limiter::<IpAddr>::new("t", Gcra::new(10, 2), Shared::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(lim.check_info(&ip, t0).await.remaining, 1);
        assert!(lim.check(&ip, t0).await.is_ok());
        assert!(lim.peek(&ip, t0).await.is_err());
        assert!(lim.check(&ip, t0).await.is_err());
    }

    #[test]
    fn conn_caps() {
        let lim = ConnLimiter::new(2, 3);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let g1 = lim.acquire(a).unwrap();
        let _g2 = lim.acquire(a).unwrap();
        assert_eq!(lim.acquire(a).err(), Some(ConnRefused::PerIp));
        let _g3 = lim.acquire(b).unwrap();
        assert_eq!(lim.acquire(b).err(), Some(ConnRefused::Global));
        drop(g1);
        assert_eq!(lim.total(), 2);
        lim.acquire(a).unwrap();
    }
}
