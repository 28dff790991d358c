//! Who is online across the cluster: each instance records its live sessions in
//! Redis under keys that expire by themselves, so `online` in device lists and the
//! admin API's live-session counts cover every instance, and an instance that dies
//! drops out within [`TTL`].
//!
//! - `ferry:online:v1:<user>`: a sorted set per user; each member is
//!   `device(32) instance(16)`, scored with the Unix ms until which it counts as
//!   live. Written when a session joins and every [`REFRESH`] while it lives,
//!   removed when it leaves.
//! - `ferry:sessions:v1:<instance>`: the instance's live-session count, counted up
//!   and down as sessions join and leave, rewritten every [`REFRESH`] and expiring
//!   after [`TTL`]; `ferry:instances:v1` lists the instances by the same kind of
//!   score.
//!
//! Writes go through a queue to one task and never hold up a session; reads wait
//! at most [`READ_TIMEOUT`]. While Redis does not answer, each instance reports what
//! it sees itself (its own sessions), and the directory catches up at the next
//! refresh once Redis is back.

use std::collections::HashSet;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::hub::Hub;
use crate::clock::SharedClock;
use crate::model::{DeviceId, UserId};

/// How long an entry counts as live without a refresh.
pub const TTL: Duration = Duration::from_secs(30);
/// How often an instance rewrites the entries of its live sessions.
pub const REFRESH: Duration = Duration::from_secs(10);
/// The longest a read may take before the caller uses what this instance knows.
pub const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// Joins and leaves waiting to be written before new ones are dropped (the next
/// refresh repairs the directory).
const QUEUE: usize = 65_536;
/// Most joins and leaves written in one pipeline.
const BATCH: usize = 512;

const ONLINE_PREFIX: &[u8] = b"ferry:online:v1:";
const SESSIONS_PREFIX: &[u8] = b"ferry:sessions:v1:";
const INSTANCES: &str = "ferry:instances:v1";

enum Op {
    Join(UserId, DeviceId),
    Leave(UserId, DeviceId),
}

/// The cluster's directory of live sessions (see the module docs).
pub struct Directory {
    conn: ConnectionManager,
    instance: [u8; 16],
    tx: mpsc::Sender<Op>,
    clock: SharedClock,
}

fn online_key(user: &UserId) -> Vec<u8> {
    [ONLINE_PREFIX, &user.0[..]].concat()
}

fn sessions_key(instance: &[u8; 16]) -> Vec<u8> {
    [SESSIONS_PREFIX, &instance[..]].concat()
}

fn member(device: &DeviceId, instance: &[u8; 16]) -> Vec<u8> {
    [&device.0[..], &instance[..]].concat()
}

impl Directory {
    /// Connects to Redis and spawns the writer (joins, leaves, and the refresh of
    /// `hub`'s sessions every [`REFRESH`]) on `tracker` until `cancel`.
    pub async fn start(
        url: &str,
        instance: [u8; 16],
        hub: Hub,
        clock: SharedClock,
        cancel: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_max_delay(Duration::from_secs(2));
        let conn = client.get_connection_manager_with_config(config).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            conn: conn.clone(),
            instance,
            clock: clock.clone(),
            hub,
        };
        tracker.spawn(writer.run(rx, cancel));
        Ok(Self {
            conn,
            instance,
            tx,
            clock,
        })
    }

    /// A session of `device` joined here (every join is followed by one
    /// [`Self::left`]).
    pub fn joined(&self, user: UserId, device: DeviceId) {
        let _ = self.tx.try_send(Op::Join(user, device));
    }

    /// A session of `device` left here.
    pub fn left(&self, user: UserId, device: DeviceId) {
        let _ = self.tx.try_send(Op::Leave(user, device));
    }

    /// The user's devices with a live session on any instance; `None` when Redis
    /// did not answer in time.
    pub async fn online(&self, user: &UserId) -> Option<HashSet<DeviceId>> {
        let now = self.clock.unix_ms();
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(online_key(user)).arg(now).arg("+inf");
        let read = cmd.query_async::<Vec<Vec<u8>>>(&mut conn);
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(members)) => Some(
                members
                    .iter()
                    .filter_map(|m| m.first_chunk::<32>().map(|d| DeviceId(*d)))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The user's live sessions on every instance; `None` when Redis did not answer.
    pub async fn user_sessions(&self, user: &UserId) -> Option<u64> {
        let now = self.clock.unix_ms();
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("ZCOUNT");
        cmd.arg(online_key(user)).arg(now).arg("+inf");
        let read = cmd.query_async::<u64>(&mut conn);
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(n)) => Some(n),
            _ => None,
        }
    }

    /// The live sessions of each user on every instance; `None` when Redis did not
    /// answer.
    pub async fn users_sessions(&self, users: &[UserId]) -> Option<Vec<u64>> {
        if users.is_empty() {
            return Some(Vec::new());
        }
        let now = self.clock.unix_ms();
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("ZCOUNT")
                .arg(online_key(user))
                .arg(now)
                .arg("+inf");
        }
        let read = pipe.query_async::<Vec<u64>>(&mut conn);
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(n)) => Some(n),
            _ => None,
        }
    }

    /// Live sessions on every instance (as of each one's last refresh, this one's
    /// `local` now); `None` when Redis did not answer.
    pub async fn total_sessions(&self, local: u64) -> Option<u64> {
        let now = self.clock.unix_ms();
        let mut conn = self.conn.clone();
        let read = async {
            let instances: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
                .arg(INSTANCES)
                .arg(now)
                .arg("+inf")
                .query_async(&mut conn)
                .await?;
            let others: Vec<Vec<u8>> = instances
                .into_iter()
                .filter(|i| i[..] != self.instance[..])
                .map(|i| [SESSIONS_PREFIX, &i[..]].concat())
                .collect();
            if others.is_empty() {
                return Ok::<u64, redis::RedisError>(local);
            }
            let counts: Vec<Option<u64>> = redis::cmd("MGET")
                .arg(others)
                .query_async(&mut conn)
                .await?;
            Ok(local + counts.into_iter().flatten().sum::<u64>())
        };
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(n)) => Some(n),
            _ => None,
        }
    }
}

/// The task that writes the directory.
struct Writer {
    conn: ConnectionManager,
    instance: [u8; 16],
    clock: SharedClock,
    hub: Hub,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Op>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ops = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                // What is queued goes in one pipeline: one round trip for many.
                n = rx.recv_many(&mut ops, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    if let Err(e) = self.apply(ops.drain(..)).await {
                        debug!(error = %e, "presence write failed");
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.refresh().await {
                        debug!(error = %e, "presence refresh failed");
                    }
                }
                _ = cancel.cancelled() => {
                    // Leaving: this instance's entries go now rather than at expiry.
                    let _ = tokio::time::timeout(READ_TIMEOUT, self.withdraw()).await;
                    return;
                }
            }
        }
    }

    fn expiry(&self) -> i64 {
        self.clock.unix_ms() + TTL.as_millis() as i64
    }

    async fn apply(&mut self, ops: impl Iterator<Item = Op>) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for op in ops {
            self.add(&mut pipe, op);
        }
        pipe.query_async::<()>(&mut self.conn).await
    }

    fn add(&self, pipe: &mut redis::Pipeline, op: Op) {
        match op {
            Op::Join(user, device) => {
                let key = online_key(&user);
                pipe.cmd("INCR")
                    .arg(sessions_key(&self.instance))
                    .ignore()
                    .cmd("ZADD")
                    .arg(&key)
                    .arg(self.expiry())
                    .arg(member(&device, &self.instance))
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(TTL.as_millis() as u64 * 2)
                    .ignore();
            }
            Op::Leave(user, device) => {
                pipe.cmd("DECR").arg(sessions_key(&self.instance)).ignore();
                // A newer session of the device may have joined here meanwhile.
                if !self.hub.is_connected(&user, &device) {
                    pipe.cmd("ZREM")
                        .arg(online_key(&user))
                        .arg(member(&device, &self.instance))
                        .ignore();
                }
            }
        }
    }

    /// Rewrites the entries of every live session here, the session count and the
    /// instance's own entry.
    async fn refresh(&mut self) -> redis::RedisResult<()> {
        let devices = self.hub.devices();
        let expiry = self.expiry();
        for chunk in devices.chunks(1000) {
            let mut pipe = redis::pipe();
            for (user, device) in chunk {
                let key = online_key(user);
                pipe.cmd("ZADD")
                    .arg(&key)
                    .arg(expiry)
                    .arg(member(device, &self.instance))
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(TTL.as_millis() as u64 * 2)
                    .ignore();
            }
            pipe.query_async::<()>(&mut self.conn).await?;
        }
        let now = self.clock.unix_ms();
        redis::pipe()
            .cmd("SET")
            .arg(sessions_key(&self.instance))
            .arg(devices.len())
            .arg("PX")
            .arg(TTL.as_millis() as u64)
            .ignore()
            .cmd("ZADD")
            .arg(INSTANCES)
            .arg(expiry)
            .arg(&self.instance[..])
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(INSTANCES)
            .arg("-inf")
            .arg(now)
            .ignore()
            .query_async::<()>(&mut self.conn)
            .await
    }

    /// Removes this instance's entries (at shutdown).
    async fn withdraw(&mut self) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for (user, device) in self.hub.devices() {
            pipe.cmd("ZREM")
                .arg(online_key(&user))
                .arg(member(&device, &self.instance))
                .ignore();
        }
        pipe.cmd("DEL")
            .arg(sessions_key(&self.instance))
            .ignore()
            .cmd("ZREM")
            .arg(INSTANCES)
            .arg(&self.instance[..])
            .ignore();
        pipe.query_async::<()>(&mut self.conn).await
    }
}
