//! The relay scenario's payloads and its exactly-once, in-order check.
//!
//! Every payload starts with a 24-byte header — magic, origin device, counter, send
//! time — so any receiver knows who published it, which one it was and when.
//! Devices are numbered globally: device `i` belongs to user `i / devices_per_user`
//! and sits in slot `i % devices_per_user` of that user.
//!
//! The check, per receiving device: the `seq`s it received increase strictly; it
//! received no (origin, counter) twice; and the set it received equals exactly the
//! set its user's *other* devices had acknowledged (stored) — nothing missing,
//! nothing extra, nothing from another user or from itself — each with the very
//! `seq` the origin's ack carried.

use serde::Serialize;

/// First bytes of every load-test payload.
pub(crate) const MAGIC: [u8; 4] = *b"FLD1";
/// Length of the header at the front of each payload.
pub(crate) const HEADER_LEN: usize = 24;
/// b64u characters that encode exactly the header (24 bytes = 32 characters).
pub(crate) const HEADER_B64U_LEN: usize = 32;
/// Counters above this are not ours (a garbled payload); they count as foreign.
const MAX_COUNTER: u64 = 1 << 28;

/// What a payload's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Global index of the publishing device.
    pub(crate) origin: u32,
    /// The origin's publish counter, from 0.
    pub(crate) counter: u64,
    /// Send time, nanoseconds since the generator's clock anchor.
    pub(crate) sent_ns: u64,
}

impl Header {
    /// Writes the header into the front of `payload` (at least [`HEADER_LEN`] bytes).
    pub(crate) fn write(&self, payload: &mut [u8]) {
        payload[..4].copy_from_slice(&MAGIC);
        payload[4..8].copy_from_slice(&self.origin.to_be_bytes());
        payload[8..16].copy_from_slice(&self.counter.to_be_bytes());
        payload[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads a header; `None` when the bytes are not one of ours.
    pub(crate) fn read(payload: &[u8]) -> Option<Self> {
        if payload.len() < HEADER_LEN || payload[..4] != MAGIC {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
        Some(Self {
            origin: u32::from_be_bytes(payload[4..8].try_into().expect("4 bytes")),
            counter: u64_at(8),
            sent_ns: u64_at(16),
        })
    }

    /// Reads the header from the b64u text of a payload, decoding only its front.
    pub(crate) fn read_b64u(text: &str) -> Option<Self> {
        let front = text.get(..HEADER_B64U_LEN)?;
        Self::read(&ferry_proto::b64u::decode(front).ok()?)
    }
}

/// What one device received, recorded as it arrives.
#[derive(Clone, Debug)]
pub(crate) struct ReceiverLog {
    me: u32,
    devices_per_user: u32,
    last_seq: u64,
    order_violations: u64,
    duplicates: u64,
    foreign: u64,
    /// Per slot of the user: the seq received for each counter (0 = not received).
    by_slot: Vec<Vec<u64>>,
}

impl ReceiverLog {
    /// An empty log for global device `me`.
    pub(crate) fn new(me: u32, devices_per_user: u32) -> Self {
        Self {
            me,
            devices_per_user,
            last_seq: 0,
            order_violations: 0,
            duplicates: 0,
            foreign: 0,
            by_slot: vec![Vec::new(); devices_per_user as usize],
        }
    }

    /// Records an event with `seq`; `header` is `None` when the payload was not ours.
    pub(crate) fn record(&mut self, seq: u64, header: Option<Header>) {
        if seq <= self.last_seq {
            self.order_violations += 1;
        } else {
            self.last_seq = seq;
        }
        let Some(h) = header else {
            self.foreign += 1;
            return;
        };
        let d = self.devices_per_user;
        if h.origin / d != self.me / d || h.origin == self.me || h.counter >= MAX_COUNTER {
            self.foreign += 1;
            return;
        }
        let slots = &mut self.by_slot[(h.origin % d) as usize];
        let c = h.counter as usize;
        if slots.len() <= c {
            slots.resize(c + 1, 0);
        }
        if slots[c] != 0 {
            self.duplicates += 1;
        } else {
            slots[c] = seq.max(1);
        }
    }

    /// How many distinct events were recorded.
    #[cfg(test)]
    pub(crate) fn received(&self) -> u64 {
        self.by_slot
            .iter()
            .map(|s| s.iter().filter(|&&q| q != 0).count() as u64)
            .sum()
    }
}

/// What one device had acknowledged: the seq for each counter (0 = no ack).
#[derive(Clone, Debug, Default)]
pub(crate) struct PublisherLog {
    acked: Vec<u64>,
}

impl PublisherLog {
    /// Records the ack of `counter` with `seq`; `false` when it was acked already.
    pub(crate) fn ack(&mut self, counter: u64, seq: u64) -> bool {
        let c = counter as usize;
        if self.acked.len() <= c {
            self.acked.resize(c + 1, 0);
        }
        if self.acked[c] != 0 {
            return false;
        }
        self.acked[c] = seq.max(1);
        true
    }

    /// How many publishes were acked.
    #[cfg(test)]
    pub(crate) fn acked(&self) -> u64 {
        self.acked.iter().filter(|&&q| q != 0).count() as u64
    }
}

/// The verdict over all devices.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct CheckReport {
    /// Receiving devices checked.
    pub(crate) receivers: u64,
    /// Deliveries expected: for each receiver, its user's other devices' acks.
    pub(crate) expected: u64,
    /// Distinct deliveries received.
    pub(crate) received: u64,
    /// Expected but never received.
    pub(crate) missing: u64,
    /// Received but never acked to their origin.
    pub(crate) unexpected: u64,
    /// Received more than once.
    pub(crate) duplicates: u64,
    /// A `seq` not above the previous one at the same receiver.
    pub(crate) order_violations: u64,
    /// Received with another `seq` than its origin's ack.
    pub(crate) seq_mismatches: u64,
    /// From another user, from the receiver itself, or not a load-test payload.
    pub(crate) foreign: u64,
}

impl CheckReport {
    /// Whether every device received every event exactly once and in order.
    pub(crate) fn ok(&self) -> bool {
        self.missing == 0
            && self.unexpected == 0
            && self.duplicates == 0
            && self.order_violations == 0
            && self.seq_mismatches == 0
            && self.foreign == 0
    }

    /// One line for humans.
    pub(crate) fn line(&self) -> String {
        format!(
            "{}: {} receivers, {} of {} expected deliveries; missing {}, unexpected {}, \
             duplicates {}, out of order {}, seq mismatches {}, foreign {}",
            if self.ok() { "PASS" } else { "FAIL" },
            self.receivers,
            self.received,
            self.expected,
            self.missing,
            self.unexpected,
            self.duplicates,
            self.order_violations,
            self.seq_mismatches,
            self.foreign
        )
    }
}

/// Checks every receiver against its user's other devices' acks. `publishers` is
/// indexed by global device number.
pub(crate) fn check(publishers: &[PublisherLog], receivers: &[ReceiverLog]) -> CheckReport {
    let mut r = CheckReport::default();
    for log in receivers {
        r.receivers += 1;
        r.duplicates += log.duplicates;
        r.order_violations += log.order_violations;
        r.foreign += log.foreign;
        let d = log.devices_per_user;
        let first = log.me / d * d;
        for slot in 0..d {
            let origin = first + slot;
            if origin == log.me {
                continue;
            }
            let acked: &[u64] = publishers
                .get(origin as usize)
                .map_or(&[], |p| p.acked.as_slice());
            let got = &log.by_slot[slot as usize];
            for c in 0..acked.len().max(got.len()) {
                let want = acked.get(c).copied().unwrap_or(0);
                let have = got.get(c).copied().unwrap_or(0);
                match (want, have) {
                    (0, 0) => {}
                    (0, _) => {
                        r.unexpected += 1;
                        r.received += 1;
                    }
                    (_, 0) => {
                        r.expected += 1;
                        r.missing += 1;
                    }
                    (w, h) => {
                        r.expected += 1;
                        r.received += 1;
                        if w != h {
                            r.seq_mismatches += 1;
                        }
                    }
                }
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(origin: u32, counter: u64) -> Option<Header> {
        Some(Header {
            origin,
            counter,
            sent_ns: 0,
        })
    }

    /// One user with devices 0, 1, 2 (devices_per_user = 3); each publishes
    /// `n` events; the user's log interleaves them round robin. Returns the
    /// publishers' logs and, for each device, the (seq, header) it should receive.
    /// What each device receives: (seq, header) in arrival order.
    type Feeds = Vec<Vec<(u64, Option<Header>)>>;

    fn perfect(n: u64) -> (Vec<PublisherLog>, Feeds) {
        let mut pubs = vec![PublisherLog::default(); 3];
        let mut feeds = vec![Vec::new(); 3];
        let mut seq = 0;
        for c in 0..n {
            for origin in 0..3u32 {
                seq += 1;
                assert!(pubs[origin as usize].ack(c, seq));
                for (rx, feed) in feeds.iter_mut().enumerate() {
                    if rx as u32 != origin {
                        feed.push((seq, h(origin, c)));
                    }
                }
            }
        }
        (pubs, feeds)
    }

    fn run(pubs: &[PublisherLog], feeds: &Feeds) -> CheckReport {
        let logs: Vec<ReceiverLog> = feeds
            .iter()
            .enumerate()
            .map(|(me, feed)| {
                let mut log = ReceiverLog::new(me as u32, 3);
                for &(seq, hd) in feed {
                    log.record(seq, hd);
                }
                log
            })
            .collect();
        check(pubs, &logs)
    }

    #[test]
    fn header_round_trips_through_b64u() {
        let hd = Header {
            origin: 7,
            counter: 123_456,
            sent_ns: 987_654_321,
        };
        let mut payload = vec![0xAB; 256];
        hd.write(&mut payload);
        assert_eq!(Header::read(&payload), Some(hd));
        let text = ferry_proto::b64u::encode(&payload);
        assert_eq!(Header::read_b64u(&text), Some(hd));
        assert_eq!(Header::read(&payload[..20]), None);
        assert_eq!(Header::read(&[0u8; 24]), None);
        assert_eq!(Header::read_b64u("AAAA"), None);
    }

    #[test]
    fn a_perfect_run_passes() {
        let (pubs, feeds) = perfect(50);
        let r = run(&pubs, &feeds);
        assert!(r.ok(), "{}", r.line());
        assert_eq!(r.receivers, 3);
        assert_eq!(r.expected, 3 * 2 * 50);
        assert_eq!(r.received, r.expected);
        assert!(r.line().starts_with("PASS"));
    }

    #[test]
    fn a_missing_event_fails() {
        let (pubs, mut feeds) = perfect(10);
        feeds[1].remove(4);
        let r = run(&pubs, &feeds);
        assert!(!r.ok());
        assert_eq!((r.missing, r.duplicates, r.order_violations), (1, 0, 0));
        assert!(r.line().starts_with("FAIL"));
    }

    #[test]
    fn a_duplicate_fails_even_with_a_fresh_seq() {
        let (pubs, mut feeds) = perfect(10);
        // The same (origin, counter) again, later, with a higher seq: in order, but twice.
        let again = feeds[2][3].1;
        feeds[2].push((10_000, again));
        let r = run(&pubs, &feeds);
        assert_eq!((r.duplicates, r.order_violations, r.missing), (1, 0, 0));
        assert!(!r.ok());
    }

    #[test]
    fn reordering_fails() {
        let (pubs, mut feeds) = perfect(10);
        feeds[0].swap(5, 6);
        let r = run(&pubs, &feeds);
        assert_eq!(r.order_violations, 1);
        // Each event still carries its own seq: only the order is wrong.
        assert_eq!((r.missing, r.duplicates, r.seq_mismatches), (0, 0, 0));
        assert!(!r.ok());
        // A repeated seq is out of order too.
        let (pubs, mut feeds) = perfect(3);
        let (seq, _) = feeds[0][1];
        feeds[0][2].0 = seq;
        assert!(run(&pubs, &feeds).order_violations >= 1);
    }

    #[test]
    fn unacked_self_and_foreign_deliveries_fail() {
        // Delivered but its origin never got an ack.
        let (pubs, mut feeds) = perfect(5);
        feeds[0].push((1_000, h(1, 99)));
        let r = run(&pubs, &feeds);
        assert_eq!(r.unexpected, 1);
        assert!(!r.ok());
        // Its own event echoed back.
        let (pubs, mut feeds) = perfect(5);
        feeds[0].push((1_000, h(0, 0)));
        assert_eq!(run(&pubs, &feeds).foreign, 1);
        // Another user's event (device 3 is user 1's first device).
        let (pubs, mut feeds) = perfect(5);
        feeds[0].push((1_000, h(3, 0)));
        assert_eq!(run(&pubs, &feeds).foreign, 1);
        // Not one of our payloads.
        let (pubs, mut feeds) = perfect(5);
        feeds[0].push((1_000, None));
        assert_eq!(run(&pubs, &feeds).foreign, 1);
    }

    #[test]
    fn seq_must_match_the_origins_ack() {
        let (mut pubs, feeds) = perfect(5);
        pubs[1].acked[2] += 1_000;
        let r = run(&pubs, &feeds);
        // Devices 0 and 2 both received it with the old seq.
        assert_eq!(r.seq_mismatches, 2);
        assert!(!r.ok());
    }

    #[test]
    fn failed_publishes_are_not_expected() {
        // Device 2's counter 3 was refused (no ack) and never delivered: fine.
        let (mut pubs, mut feeds) = perfect(5);
        let dropped = h(2, 3);
        pubs[2].acked[3] = 0;
        for feed in &mut feeds {
            feed.retain(|&(_, hd)| hd != dropped);
        }
        let r = run(&pubs, &feeds);
        assert!(r.ok(), "{}", r.line());
        assert_eq!(r.expected, 3 * 2 * 5 - 2);
        assert!(!pubs[0].clone().ack(0, 1), "a second ack is refused");
        assert_eq!(pubs[2].acked(), 4);
    }

    #[test]
    fn receiver_counts_distinct_events() {
        let mut log = ReceiverLog::new(4, 3); // user 1, slot 1
        log.record(1, h(3, 0));
        log.record(2, h(5, 0));
        log.record(3, h(5, 0));
        assert_eq!(log.received(), 2);
        assert_eq!(log.duplicates, 1);
        log.record(4, h(3, MAX_COUNTER));
        assert_eq!(log.foreign, 1);
    }
}
