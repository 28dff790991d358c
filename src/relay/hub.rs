//! The registry of live sessions, by user: who is online, one session per device,
//! and the outbound queue each session drains.
//!
//! The hub never touches the store and never blocks: delivery pushes into a queue
//! bounded in messages and in bytes, and a session whose queue is full is closed
//! (4009) instead of slowing down everyone else. Its events stay stored; it catches
//! up with `sync`.
//!
//! The queue lives in the session's [`SessionHandle`] (a lock around a `VecDeque`
//! and a [`Notify`]) rather than in a channel of its own: an idle session's empty
//! queue allocates nothing, where a bounded tokio channel allocated about 1 KiB per
//! session up front (its shared state and first block of slots).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferry_proto::CloseCode;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::model::{DeviceId, UserId};

const SHARDS: usize = 32;
/// Counters behind [`Hub::generation`]: a multiple of [`SHARDS`], so that each
/// belongs to one shard and moves under its lock.
const GENERATION_SLOTS: usize = 1024;

/// A message queued for one session: already-serialized JSON, sealed by the session
/// itself (each session has its own keys and counter), behind an 8-byte header with
/// the seq of the stored event it carries (0: not a stored event; [`CATCH_UP`]: no
/// message, a request to catch up from the store). One allocation, shared by every
/// recipient and by the cross-instance bus, which carries the header along.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound(Arc<[u8]>);

/// The header of [`Outbound::catch_up`].
const CATCH_UP: u64 = u64::MAX;
const HEADER: usize = 8;

impl Outbound {
    /// A message that is not a stored event (presence, an ephemeral event).
    pub fn message(json: &[u8]) -> Self {
        Self::with_seq(0, json)
    }

    /// The `event` message of the stored event `seq`.
    pub fn stored(seq: u64, json: &[u8]) -> Self {
        debug_assert!(seq != 0 && seq != CATCH_UP);
        Self::with_seq(seq, json)
    }

    /// Asks the session to fetch from the store the events relayed since the last
    /// one it sent (after the bus between instances lost messages).
    pub fn catch_up() -> Self {
        Self::with_seq(CATCH_UP, b"")
    }

    fn with_seq(seq: u64, json: &[u8]) -> Self {
        let mut v = Vec::with_capacity(HEADER + json.len());
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(json);
        Self(Arc::from(v))
    }

    /// A message as another instance encoded it (header included); `None` when it
    /// is too short to have the header.
    pub fn from_wire(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= HEADER).then(|| Self(Arc::from(bytes)))
    }

    /// The header and the message, as the bus carries them.
    pub fn wire(&self) -> &[u8] {
        &self.0
    }

    fn header(&self) -> u64 {
        let (h, _) = self
            .0
            .split_first_chunk::<HEADER>()
            .expect("built with a header");
        u64::from_be_bytes(*h)
    }

    /// The seq of the stored event this message carries, if it is one.
    pub fn seq(&self) -> Option<u64> {
        Some(self.header()).filter(|s| *s != 0 && *s != CATCH_UP)
    }

    /// Whether this is a request to catch up rather than a message.
    pub fn is_catch_up(&self) -> bool {
        self.header() == CATCH_UP
    }

    /// The serialized message.
    pub fn json(&self) -> &[u8] {
        &self.0[HEADER..]
    }

    /// The message's length in bytes, as the queue's byte limit counts it.
    pub fn len(&self) -> usize {
        self.0.len() - HEADER
    }

    /// Whether the message is empty (only a catch-up request is).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One live session as the hub sees it.
pub struct SessionHandle {
    id: u64,
    user: UserId,
    device: DeviceId,
    /// Messages for the session, oldest first ([`Inbox`] takes them).
    queue: Mutex<std::collections::VecDeque<Outbound>>,
    /// Woken when a message is queued (a permit waits if the session is busy).
    queued: Notify,
    /// The most messages that may be queued.
    max_messages: usize,
    /// The session's [`Inbox`] is gone: nothing queued would be read.
    inbox_gone: AtomicBool,
    kill: CancellationToken,
    close_code: AtomicU16,
    /// Bytes queued and not yet written by the session ([`Self::written`]).
    queued_bytes: AtomicUsize,
    /// The most bytes that may be queued.
    max_bytes: usize,
    /// The bus brought this instance's announcement of the session back: every
    /// instance has seen it, so a registration of the device announced after it is
    /// newer (see [`Remote::Registered`]).
    announced: AtomicBool,
    /// When it registered.
    registered: std::time::Instant,
}

impl SessionHandle {
    /// The process-unique session number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The session's user.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// The session's device.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// Asks the session to close with `code`. The first code asked for wins.
    pub fn close(&self, code: CloseCode) {
        let _ =
            self.close_code
                .compare_exchange(0, code.as_u16(), Ordering::AcqRel, Ordering::Acquire);
        self.kill.cancel();
    }

    /// Resolves when someone asked this session to close: the code asked for, or
    /// [`CloseCode::Normal`] when the server's shutdown token was cancelled.
    pub async fn killed(&self) -> CloseCode {
        self.kill.cancelled().await;
        CloseCode::from_u16(self.close_code.load(Ordering::Acquire)).unwrap_or(CloseCode::Normal)
    }

    /// Queues a message; a queue full in messages or in bytes closes the session as
    /// a slow consumer. Returns whether the message was queued.
    pub fn deliver(&self, msg: &Outbound) -> bool {
        let len = msg.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before.saturating_add(len) > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.close(CloseCode::SlowConsumer);
            return false;
        }
        let mut queue = self.queue.lock().expect("session queue lock poisoned");
        if self.inbox_gone.load(Ordering::Acquire) {
            drop(queue);
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        if queue.len() >= self.max_messages {
            drop(queue);
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.close(CloseCode::SlowConsumer);
            return false;
        }
        queue.push_back(msg.clone());
        drop(queue);
        self.queued.notify_one();
        true
    }

    /// The session wrote (or dropped) messages of `bytes` bytes that it took from its
    /// queue: they no longer count against the byte limit.
    pub fn written(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes queued for the session and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }
}

/// The session's side of its registration.
pub struct SessionLink {
    /// The handle others use to reach this session.
    pub handle: Arc<SessionHandle>,
    /// Messages for this session.
    pub rx: Inbox,
}

/// The session's end of its queue: takes what [`SessionHandle::deliver`] queued, in
/// order. Dropping it (the session ended) empties the queue and refuses further
/// messages.
pub struct Inbox {
    handle: Arc<SessionHandle>,
}

/// A queue that held a burst keeps at most this many slots once it is empty again.
const INBOX_KEEP: usize = 64;

impl Inbox {
    /// The next queued message, waiting for one. Cancel-safe: a message is taken
    /// only when this returns it.
    pub async fn recv(&mut self) -> Outbound {
        loop {
            if let Some(m) = self.try_recv() {
                return m;
            }
            // A message queued after the check above left a permit: this returns
            // at once and the loop takes it.
            self.handle.queued.notified().await;
        }
    }

    /// The next queued message, if one is there.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let mut queue = self.queue();
        let m = queue.pop_front();
        give_back_burst(&mut queue);
        m
    }

    /// Moves up to `max` queued messages, oldest first, to the end of `out`, under
    /// one lock; returns how many.
    pub fn take(&mut self, out: &mut Vec<Outbound>, max: usize) -> usize {
        let mut queue = self.queue();
        let n = max.min(queue.len());
        out.extend(queue.drain(..n));
        give_back_burst(&mut queue);
        n
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Outbound>> {
        self.handle
            .queue
            .lock()
            .expect("session queue lock poisoned")
    }
}

/// After a burst, once drained: gives the memory back instead of keeping it for
/// the rest of a (mostly idle) session.
fn give_back_burst(queue: &mut std::collections::VecDeque<Outbound>) {
    if queue.is_empty() && queue.capacity() > INBOX_KEEP {
        queue.shrink_to(INBOX_KEEP);
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut queue = self.queue();
        self.handle.inbox_gone.store(true, Ordering::Release);
        *queue = std::collections::VecDeque::new();
    }
}

/// What the hub tells the other instances, and applies when they tell it
/// ([`Hub::apply_remote`]). The hub only knows that some [`Peers`] carry these; the
/// cross-instance bus (`relay::bus`) is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// Deliver `msg` to the user's sessions, except `except`'s, only to `only` if set.
    Deliver {
        /// Whose sessions.
        user: UserId,
        /// The device to leave out (the origin).
        except: Option<DeviceId>,
        /// When set, only these devices.
        only: Option<Vec<[u8; 32]>>,
        /// The serialized message.
        msg: Outbound,
    },
    /// Close the device's sessions.
    CloseDevice {
        /// Whose device.
        user: UserId,
        /// Which device.
        device: DeviceId,
        /// With this code.
        code: CloseCode,
    },
    /// Close all of the user's sessions.
    CloseUser {
        /// Whose sessions.
        user: UserId,
        /// With this code.
        code: CloseCode,
    },
    /// Messages between instances were lost: every live session catches up from
    /// the store.
    CatchUp,
    /// A session of `device` registered on the sending instance: older sessions of
    /// the device elsewhere close with 4011.
    ///
    /// "Older" is decided by the bus's own order, without comparing clocks: every
    /// instance receives the channel's messages in one order, its own included. A
    /// session whose announcement came back before another instance's is older
    /// than that one; a session whose announcement has not come back yet is newer
    /// (unless it registered more than [`ANNOUNCE_GRACE`] ago: its announcement was
    /// lost, and the newcomer wins).
    Registered {
        /// Whose device.
        user: UserId,
        /// Which device.
        device: DeviceId,
        /// The session's number on the sending instance.
        session: u64,
    },
}

/// How long a session whose announcement never came back (the bus was down) keeps
/// its place against a registration announced elsewhere.
pub const ANNOUNCE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The other instances, as the hub sees them: somewhere to send what it does
/// locally. Sending never blocks (a full queue drops: the store is the truth).
pub trait Peers: Send + Sync + 'static {
    /// Queues `msg` for the other instances.
    fn send(&self, msg: &Remote);
}

/// Cheap-to-clone handle to the registry.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

/// What a fan-out did locally.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fanout {
    /// Sessions the message was queued for.
    pub delivered: u64,
    /// Sessions whose queue was full (they close with 4009).
    pub overflowed: u64,
}

struct Shared {
    shards: Vec<Mutex<HashMap<UserId, Vec<Arc<SessionHandle>>>>>,
    /// [`Hub::generation`]'s counters; slot `i` belongs to shard `i % SHARDS`.
    generations: Vec<AtomicU64>,
    hasher: std::collections::hash_map::RandomState,
    next_id: AtomicU64,
    queue: usize,
    queue_bytes: usize,
    peers: std::sync::OnceLock<Box<dyn Peers>>,
}

impl Hub {
    /// A hub whose sessions queue at most `queue` outbound messages of at most
    /// `queue_bytes` bytes in all.
    pub fn new(queue: usize, queue_bytes: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                generations: (0..GENERATION_SLOTS).map(|_| AtomicU64::new(0)).collect(),
                hasher: Default::default(),
                next_id: AtomicU64::new(1),
                queue: queue.max(1),
                queue_bytes: queue_bytes.max(1),
                peers: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The user's [`Hub::generation`] slot; its shard is `slot % SHARDS`.
    fn slot(&self, user: &UserId) -> usize {
        (self.shared.hasher.hash_one(user) as usize) % GENERATION_SLOTS
    }

    fn shard(&self, user: &UserId) -> &Mutex<HashMap<UserId, Vec<Arc<SessionHandle>>>> {
        &self.shared.shards[self.slot(user) % SHARDS]
    }

    /// A counter that moves whenever a stored event may have been delivered to
    /// `user`'s sessions: every [`Self::fanout_stored`] for the user, and every
    /// delivery from another instance through the bus (which does not say what it
    /// carries). Users sharing the user's slot move it too.
    ///
    /// A greeting uses it to reuse the head it read while admitting the device: if
    /// the generation taken before that read still holds once the session is
    /// registered, no event of the user was delivered in between. An event missing
    /// from that head committed after the read began, so its delivery comes after
    /// the generation was taken: either before the registration (the generation
    /// moved, and the head is read again) or after it (the session receives it).
    pub fn generation(&self, user: &UserId) -> u64 {
        self.shared.generations[self.slot(user)].load(Ordering::SeqCst)
    }

    /// Calls `f` for every live session of `user` while holding the shard lock (no
    /// allocation on the relay path; `f` must not block). With `bump`, also moves the
    /// user's generation, under the same lock that registration takes.
    fn for_each_recipient(&self, user: &UserId, bump: bool, f: impl FnMut(&Arc<SessionHandle>)) {
        let slot = self.slot(user);
        let map = self.shared.shards[slot % SHARDS]
            .lock()
            .expect("hub lock poisoned");
        if bump {
            self.shared.generations[slot].fetch_add(1, Ordering::SeqCst);
        }
        if let Some(sessions) = map.get(user) {
            sessions.iter().for_each(f);
        }
    }

    /// Registers a new session of `device`. An older session of the same device is
    /// told to close with 4011 (replaced).
    pub fn register(
        &self,
        user: UserId,
        device: DeviceId,
        parent: &CancellationToken,
    ) -> SessionLink {
        let handle = Arc::new(SessionHandle {
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            user,
            device,
            queue: Mutex::new(std::collections::VecDeque::new()),
            queued: Notify::new(),
            max_messages: self.shared.queue,
            inbox_gone: AtomicBool::new(false),
            kill: parent.child_token(),
            close_code: AtomicU16::new(0),
            queued_bytes: AtomicUsize::new(0),
            max_bytes: self.shared.queue_bytes,
            announced: AtomicBool::new(false),
            registered: std::time::Instant::now(),
        });
        let replaced: Vec<Arc<SessionHandle>> = {
            let mut map = self.shard(&user).lock().expect("hub lock poisoned");
            let sessions = map.entry(user).or_default();
            let (old, keep): (Vec<_>, Vec<_>) =
                sessions.drain(..).partition(|s| s.device == device);
            *sessions = keep;
            sessions.push(handle.clone());
            old
        };
        for old in replaced {
            old.close(CloseCode::Replaced);
        }
        self.tell_peers(|| Remote::Registered {
            user,
            device,
            session: handle.id,
        });
        let rx = Inbox {
            handle: handle.clone(),
        };
        SessionLink { handle, rx }
    }

    /// Removes a session; drops the user's entry when it was the last one.
    pub fn unregister(&self, handle: &SessionHandle) {
        let mut map = self.shard(&handle.user).lock().expect("hub lock poisoned");
        if let Some(sessions) = map.get_mut(&handle.user) {
            sessions.retain(|s| s.id != handle.id);
            if sessions.is_empty() {
                map.remove(&handle.user);
            }
        }
    }

    /// The live sessions of a user (a snapshot).
    pub fn sessions(&self, user: &UserId) -> Vec<Arc<SessionHandle>> {
        let map = self.shard(user).lock().expect("hub lock poisoned");
        map.get(user).cloned().unwrap_or_default()
    }

    /// Whether `user` has a live session here.
    pub fn has_sessions(&self, user: &UserId) -> bool {
        let map = self.shard(user).lock().expect("hub lock poisoned");
        map.contains_key(user)
    }

    /// Whether `device` of `user` has a live session here.
    pub fn is_connected(&self, user: &UserId, device: &DeviceId) -> bool {
        let map = self.shard(user).lock().expect("hub lock poisoned");
        map.get(user)
            .is_some_and(|sessions| sessions.iter().any(|s| s.device == *device))
    }

    /// Every device with a live session here (a snapshot).
    pub fn devices(&self) -> Vec<(UserId, DeviceId)> {
        let mut out = Vec::new();
        for shard in &self.shared.shards {
            let map = shard.lock().expect("hub lock poisoned");
            out.extend(map.values().flatten().map(|s| (s.user, s.device)));
        }
        out
    }

    /// Connects this hub to the other instances. Once only.
    pub fn attach_peers(&self, peers: Box<dyn Peers>) {
        let _ = self.shared.peers.set(peers);
    }

    fn tell_peers(&self, msg: impl FnOnce() -> Remote) {
        if let Some(peers) = self.shared.peers.get() {
            peers.send(&msg());
        }
    }

    /// Delivers a message to the user's live sessions — here and, with a bus, on
    /// the other instances — leaving out `except`'s sessions and, when `only` is
    /// set, every device not in it. `make` builds the message at most once, and
    /// not at all when nobody could receive it.
    pub fn fanout(
        &self,
        user: &UserId,
        except: Option<&DeviceId>,
        only: Option<&[[u8; 32]]>,
        make: impl FnOnce() -> Outbound,
    ) -> Fanout {
        self.fanout_inner(user, except, only, false, make)
    }

    /// [`Self::fanout`] of a stored event: also moves the user's
    /// [`Self::generation`].
    pub fn fanout_stored(
        &self,
        user: &UserId,
        except: Option<&DeviceId>,
        make: impl FnOnce() -> Outbound,
    ) -> Fanout {
        self.fanout_inner(user, except, None, true, make)
    }

    fn fanout_inner(
        &self,
        user: &UserId,
        except: Option<&DeviceId>,
        only: Option<&[[u8; 32]]>,
        stored: bool,
        make: impl FnOnce() -> Outbound,
    ) -> Fanout {
        let mut make = Some(make);
        let mut msg: Option<Outbound> = None;
        let mut get = |msg: &mut Option<Outbound>| -> Outbound {
            msg.get_or_insert_with(|| (make.take().expect("built once"))())
                .clone()
        };
        let mut out = Fanout::default();
        self.for_each_recipient(user, stored, |s| {
            if Some(s.device()) == except || only.is_some_and(|o| !o.contains(&s.device().0)) {
                return;
            }
            if s.deliver(&get(&mut msg)) {
                out.delivered += 1;
            } else {
                out.overflowed += 1;
            }
        });
        self.tell_peers(|| Remote::Deliver {
            user: *user,
            except: except.copied(),
            only: only.map(<[_]>::to_vec),
            msg: get(&mut msg),
        });
        out
    }

    /// Applies what another instance published, to this instance's sessions only;
    /// returns what a delivery did here (nothing for the other messages).
    pub fn apply_remote(&self, msg: &Remote) -> Fanout {
        let mut out = Fanout::default();
        match msg {
            Remote::Deliver {
                user,
                except,
                only,
                msg,
            } => {
                self.for_each_recipient(user, true, |s| {
                    if Some(s.device()) == except.as_ref()
                        || only.as_ref().is_some_and(|o| !o.contains(&s.device().0))
                    {
                        return;
                    }
                    if s.deliver(msg) {
                        out.delivered += 1;
                    } else {
                        out.overflowed += 1;
                    }
                });
            }
            Remote::CloseDevice { user, device, code } => {
                self.close_device_local(user, device, *code);
            }
            Remote::CloseUser { user, code } => {
                self.close_user_local(user, *code);
            }
            Remote::CatchUp => {
                self.catch_up_local();
            }
            Remote::Registered { user, device, .. } => {
                let older: Vec<_> = self
                    .sessions(user)
                    .into_iter()
                    .filter(|s| {
                        s.device == *device
                            && (s.announced.load(Ordering::Acquire)
                                || s.registered.elapsed() >= ANNOUNCE_GRACE)
                    })
                    .collect();
                older.iter().for_each(|s| s.close(CloseCode::Replaced));
            }
        }
        out
    }

    /// Applies what this instance published, as the bus brings it back: marks a
    /// session's announcement as seen by every instance.
    pub fn apply_own(&self, msg: &Remote) {
        if let Remote::Registered { user, session, .. } = msg
            && let Some(s) = self.sessions(user).iter().find(|s| s.id == *session)
        {
            s.announced.store(true, Ordering::Release);
        }
    }

    /// Asks every live session here to catch up from the store (see
    /// [`Outbound::catch_up`]); returns how many were asked.
    pub fn catch_up_local(&self) -> usize {
        let msg = Outbound::catch_up();
        let mut n = 0;
        for shard in &self.shared.shards {
            let sessions: Vec<_> = shard
                .lock()
                .expect("hub lock poisoned")
                .values()
                .flatten()
                .cloned()
                .collect();
            for s in sessions {
                s.deliver(&msg);
                n += 1;
            }
        }
        n
    }

    /// Closes every session of a device (revocation), on every instance.
    pub fn close_device(&self, user: &UserId, device: &DeviceId, code: CloseCode) -> usize {
        self.tell_peers(|| Remote::CloseDevice {
            user: *user,
            device: *device,
            code,
        });
        self.close_device_local(user, device, code)
    }

    /// Closes the device's sessions on this instance only.
    pub fn close_device_local(&self, user: &UserId, device: &DeviceId, code: CloseCode) -> usize {
        let targets: Vec<_> = self
            .sessions(user)
            .into_iter()
            .filter(|s| &s.device == device)
            .collect();
        targets.iter().for_each(|s| s.close(code));
        targets.len()
    }

    /// Closes every session of a user, on every instance.
    pub fn close_user(&self, user: &UserId, code: CloseCode) -> usize {
        self.tell_peers(|| Remote::CloseUser { user: *user, code });
        self.close_user_local(user, code)
    }

    fn close_user_local(&self, user: &UserId, code: CloseCode) -> usize {
        let targets = self.sessions(user);
        targets.iter().for_each(|s| s.close(code));
        targets.len()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .expect("hub lock poisoned")
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generation_moves_with_stored_events_of_the_slot_only() {
        let hub = Hub::new(4, 1 << 20);
        let root = CancellationToken::new();
        let (u, d) = (UserId([1; 32]), DeviceId([2; 32]));
        let msg = || Outbound::message(b"m");
        let g0 = hub.generation(&u);
        // Registering and leaving deliver nothing.
        let link = hub.register(u, d, &root);
        hub.unregister(&link.handle);
        assert_eq!(hub.generation(&u), g0);
        // Presence and ephemeral events (plain `fanout`) change no head.
        hub.fanout(&u, None, None, msg);
        assert_eq!(hub.generation(&u), g0);
        // A stored event moves it, with or without a session to receive it, and any
        // delivery from another instance does.
        hub.fanout_stored(&u, None, msg);
        assert_eq!(hub.generation(&u), g0 + 1);
        let link = hub.register(u, d, &root);
        assert_eq!(hub.fanout_stored(&u, Some(&d), msg).delivered, 0);
        assert_eq!(hub.generation(&u), g0 + 2);
        hub.apply_remote(&Remote::Deliver {
            user: u,
            except: None,
            only: None,
            msg: msg(),
        });
        assert_eq!(hub.generation(&u), g0 + 3);
        hub.unregister(&link.handle);
        // A user of another slot is not affected.
        let other = (0..=255u8)
            .map(|b| UserId([b; 32]))
            .find(|o| hub.slot(o) != hub.slot(&u))
            .expect("some user in another slot");
        let before = hub.generation(&other);
        hub.fanout_stored(&u, None, msg);
        assert_eq!(hub.generation(&other), before);
    }

    #[tokio::test]
    async fn replacement_closes_the_older_session_with_4011() {
        let hub = Hub::new(4, 1 << 20);
        let root = CancellationToken::new();
        let (u, d) = (UserId([1; 32]), DeviceId([2; 32]));
        let first = hub.register(u, d, &root);
        let second = hub.register(u, d, &root);
        assert_eq!(first.handle.killed().await, CloseCode::Replaced);
        assert!(!second.handle.kill.is_cancelled());
        hub.unregister(&first.handle);
        assert_eq!(hub.len(), 1);
        hub.unregister(&second.handle);
        assert!(hub.is_empty());
    }

    #[tokio::test]
    async fn full_queue_closes_as_slow_consumer() {
        let hub = Hub::new(2, 1 << 20);
        let root = CancellationToken::new();
        let link = hub.register(UserId([1; 32]), DeviceId([2; 32]), &root);
        let msg = Outbound::message(b"{}");
        assert!(link.handle.deliver(&msg));
        assert!(link.handle.deliver(&msg));
        assert!(!link.handle.deliver(&msg));
        assert_eq!(link.handle.killed().await, CloseCode::SlowConsumer);
    }

    /// The inbox hands out messages in order, wakes a waiting session, gives back
    /// a burst's memory once drained, and once dropped refuses messages without
    /// closing anyone (the session is gone).
    #[tokio::test]
    async fn inbox_order_wakeups_and_drop() {
        let hub = Hub::new(1000, 1 << 20);
        let root = CancellationToken::new();
        let SessionLink { handle, mut rx } =
            hub.register(UserId([1; 32]), DeviceId([2; 32]), &root);
        assert_eq!(rx.try_recv(), None);
        // A waiting receiver is woken by a later delivery.
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await;
            (first, rx)
        });
        tokio::task::yield_now().await;
        assert!(handle.deliver(&Outbound::message(b"1")));
        let (first, mut rx) = waiting.await.unwrap();
        assert_eq!(first, Outbound::message(b"1"));
        // A burst comes out in order, and its slots are given back once drained.
        for i in 0..500u32 {
            assert!(handle.deliver(&Outbound::message(i.to_string().as_bytes())));
        }
        // The first 200 under one lock, the rest one at a time.
        let mut taken = Vec::new();
        assert_eq!(rx.take(&mut taken, 200), 200);
        for (i, m) in taken.iter().enumerate() {
            assert_eq!(*m, Outbound::message(i.to_string().as_bytes()));
        }
        for i in 200..500u32 {
            assert_eq!(rx.recv().await, Outbound::message(i.to_string().as_bytes()));
        }
        assert_eq!(rx.take(&mut taken, 10), 0);
        assert!(handle.queue.lock().unwrap().capacity() <= INBOX_KEEP);
        // A delivery while nobody waits leaves a permit: the next recv returns it.
        assert!(handle.deliver(&Outbound::message(b"later")));
        assert_eq!(rx.recv().await, Outbound::message(b"later"));
        drop(rx);
        assert!(!handle.deliver(&Outbound::message(b"gone")));
        // Nothing was marked written: the refused message is not counted.
        let burst: usize = (0..500u32).map(|i| i.to_string().len()).sum();
        assert_eq!(handle.queued_bytes(), 1 + burst + 5);
        assert!(
            !handle.kill.is_cancelled(),
            "a gone session is not a slow one"
        );
    }

    #[tokio::test]
    async fn a_queue_full_in_bytes_closes_as_slow_consumer() {
        let hub = Hub::new(100, 10);
        let root = CancellationToken::new();
        let link = hub.register(UserId([1; 32]), DeviceId([2; 32]), &root);
        let msg = Outbound::message(b"12345");
        assert!(link.handle.deliver(&msg));
        assert!(link.handle.deliver(&msg));
        assert_eq!(link.handle.queued_bytes(), 10);
        // Written messages make room again.
        link.handle.written(5);
        assert!(link.handle.deliver(&msg));
        // One byte over the limit: refused, and the session is told to close.
        assert!(!link.handle.deliver(&Outbound::message(b"x")));
        assert_eq!(link.handle.queued_bytes(), 10);
        assert_eq!(link.handle.killed().await, CloseCode::SlowConsumer);
    }

    #[tokio::test]
    async fn parent_cancel_reaches_sessions() {
        let hub = Hub::new(2, 1 << 20);
        let root = CancellationToken::new();
        let link = hub.register(UserId([1; 32]), DeviceId([2; 32]), &root);
        root.cancel();
        // No code was set: the session picks its own (1001 at shutdown).
        assert_eq!(link.handle.killed().await, CloseCode::Normal);
    }
}
