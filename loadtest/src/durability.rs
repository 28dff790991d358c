//! The crash campaign's verdict: after every restart, is each acked event in its
//! user's log exactly once, at the seq its ack carried, and is each log gap-free?
//!
//! Publishers are numbered globally (device `i` belongs to user `i / devices`) and
//! stamp every payload with the [`Header`] of `check.rs` (origin, counter). The
//! logs are read back with `sync` from 0.

use serde::Serialize;

use crate::check::Header;

/// The acks one publishing device received: the seq for each counter (0 = none).
#[derive(Clone, Debug, Default)]
pub(crate) struct Acks {
    seqs: Vec<u64>,
}

impl Acks {
    /// Records the ack of `counter` with `seq`; `false` when it was acked already.
    pub(crate) fn ack(&mut self, counter: u64, seq: u64) -> bool {
        let c = counter as usize;
        if self.seqs.len() <= c {
            self.seqs.resize(c + 1, 0);
        }
        if self.seqs[c] != 0 {
            return false;
        }
        self.seqs[c] = seq.max(1);
        true
    }

    /// How many publishes were acked.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.seqs.iter().filter(|&&s| s != 0).count() as u64
    }
}

/// One user's log as `sync` returned it: (seq, header) in the order served, and
/// the head of the last page.
#[derive(Clone, Debug, Default)]
pub(crate) struct UserLog {
    /// The events, in the order served.
    pub(crate) events: Vec<(u64, Option<Header>)>,
    /// `head` of the last page.
    pub(crate) head: u64,
}

/// The verdict over all users.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct DurabilityReport {
    /// Users whose log was read.
    pub(crate) users: u64,
    /// Events in the logs.
    pub(crate) stored: u64,
    /// Acked events checked.
    pub(crate) acked: u64,
    /// Acked but not in the log.
    pub(crate) lost: u64,
    /// Extra copies of an event in the log (an event twice counts 1).
    pub(crate) duplicates: u64,
    /// In the log at another seq than its ack said.
    pub(crate) seq_mismatches: u64,
    /// Seqs in `1..=head` that no event holds.
    pub(crate) gaps: u64,
    /// An event whose seq is not above the one before it.
    pub(crate) order_violations: u64,
    /// In the log but never acked.
    pub(crate) unacked: u64,
    /// Not one of this campaign's payloads, or from another user's device.
    pub(crate) foreign: u64,
}

impl DurabilityReport {
    /// Whether every acked event is there once, at its seq, in gap-free logs.
    pub(crate) fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.seq_mismatches == 0
            && self.gaps == 0
            && self.order_violations == 0
            && self.unacked == 0
            && self.foreign == 0
    }

    /// One line for humans.
    pub(crate) fn line(&self) -> String {
        format!(
            "{}: {} acked events checked in {} users' logs ({} stored); lost {}, duplicates {}, \
             seq mismatches {}, gaps {}, out of order {}, unacked {}, foreign {}",
            if self.ok() { "PASS" } else { "FAIL" },
            self.acked,
            self.users,
            self.stored,
            self.lost,
            self.duplicates,
            self.seq_mismatches,
            self.gaps,
            self.order_violations,
            self.unacked,
            self.foreign
        )
    }
}

/// Checks `logs[u]` (user `u`) against the acks of its devices, `acks[u * devices
/// + slot]`.
pub(crate) fn check(devices: u32, acks: &[Acks], logs: &[UserLog]) -> DurabilityReport {
    let d = devices.max(1) as usize;
    let mut r = DurabilityReport::default();
    for (u, log) in logs.iter().enumerate() {
        r.users += 1;
        r.stored += log.events.len() as u64;
        // Where each of this user's (slot, counter) sits in the log: seqs seen.
        let mut found: Vec<Vec<Vec<u64>>> = vec![Vec::new(); d];
        let mut held = vec![false; log.head as usize + 1];
        let mut last = 0;
        for &(seq, header) in &log.events {
            if seq <= last {
                r.order_violations += 1;
            }
            last = last.max(seq);
            if let Some(slot) = held.get_mut(seq as usize) {
                *slot = true;
            }
            let Some(h) = header else {
                r.foreign += 1;
                continue;
            };
            let origin = h.origin as usize;
            if origin / d != u {
                r.foreign += 1;
                continue;
            }
            let at = &mut found[origin % d];
            let c = h.counter as usize;
            if c > (1 << 28) {
                r.foreign += 1;
                continue;
            }
            if at.len() <= c {
                at.resize(c + 1, Vec::new());
            }
            at[c].push(seq);
        }
        r.gaps += held.iter().skip(1).filter(|&&h| !h).count() as u64;
        for (slot, seen) in found.iter().enumerate() {
            let acked: &[u64] = acks.get(u * d + slot).map_or(&[], |a| a.seqs.as_slice());
            for c in 0..acked.len().max(seen.len()) {
                let want = acked.get(c).copied().unwrap_or(0);
                let have: &[u64] = seen.get(c).map_or(&[], Vec::as_slice);
                r.duplicates += have.len().saturating_sub(1) as u64;
                match (want, have.first()) {
                    (0, None) => {}
                    (0, Some(_)) => r.unacked += 1,
                    (_, None) => {
                        r.acked += 1;
                        r.lost += 1;
                    }
                    (w, Some(_)) => {
                        r.acked += 1;
                        if !have.contains(&w) {
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

    /// Two users with two devices each; each device published `n` events, all
    /// acked and stored round robin per user.
    fn perfect(n: u64) -> (Vec<Acks>, Vec<UserLog>) {
        let mut acks = vec![Acks::default(); 4];
        let mut logs = vec![UserLog::default(); 2];
        for (u, log) in logs.iter_mut().enumerate() {
            for c in 0..n {
                for slot in 0..2u32 {
                    let origin = u as u32 * 2 + slot;
                    let seq = log.events.len() as u64 + 1;
                    assert!(acks[origin as usize].ack(c, seq));
                    log.events.push((seq, h(origin, c)));
                    log.head = seq;
                }
            }
        }
        (acks, logs)
    }

    #[test]
    fn a_clean_campaign_passes() {
        let (acks, logs) = perfect(20);
        let r = check(2, &acks, &logs);
        assert!(r.ok(), "{}", r.line());
        assert_eq!((r.users, r.acked, r.stored), (2, 80, 80));
        assert_eq!(acks[3].count(), 20);
        assert!(r.line().starts_with("PASS"));
    }

    #[test]
    fn a_lost_acked_event_fails() {
        // The fault an ack before the commit makes: the event is gone, and the next
        // one took its seq.
        let (acks, mut logs) = perfect(5);
        logs[1].events.remove(3);
        for (seq, _) in logs[1].events.iter_mut().skip(3) {
            *seq -= 1;
        }
        logs[1].head -= 1;
        let r = check(2, &acks, &logs);
        assert_eq!(r.lost, 1);
        assert_eq!(r.seq_mismatches, 6);
        assert_eq!((r.gaps, r.duplicates, r.unacked), (0, 0, 0));
        assert!(!r.ok());
        assert!(r.line().starts_with("FAIL"));
    }

    #[test]
    fn a_gap_fails() {
        let (acks, mut logs) = perfect(5);
        logs[0].head += 1;
        let r = check(2, &acks, &logs);
        assert_eq!((r.gaps, r.lost), (1, 0));
        assert!(!r.ok());
    }

    #[test]
    fn a_second_copy_fails() {
        let (acks, mut logs) = perfect(5);
        let head = logs[0].head;
        logs[0].events.push((head + 1, h(1, 2)));
        logs[0].head = head + 1;
        let r = check(2, &acks, &logs);
        assert_eq!(
            (r.duplicates, r.lost, r.gaps, r.seq_mismatches),
            (1, 0, 0, 0)
        );
        assert!(!r.ok());
    }

    #[test]
    fn unacked_foreign_and_reordered_events_fail() {
        let (acks, mut logs) = perfect(3);
        let head = logs[0].head;
        logs[0].events.push((head + 1, h(0, 99)));
        logs[0].head = head + 1;
        assert_eq!(check(2, &acks, &logs).unacked, 1);

        let (acks, mut logs) = perfect(3);
        let head = logs[0].head;
        logs[0].events.push((head + 1, h(2, 0)));
        logs[0].events.push((head + 2, None));
        logs[0].head = head + 2;
        assert_eq!(check(2, &acks, &logs).foreign, 2);

        let (acks, mut logs) = perfect(3);
        logs[1].events.swap(0, 1);
        let r = check(2, &acks, &logs);
        assert_eq!(r.order_violations, 1);
        assert!(!r.ok());
    }

    #[test]
    fn a_retried_publish_acked_once_passes() {
        // A retry's second ack (duplicate) is not recorded twice.
        let (mut acks, logs) = perfect(3);
        assert!(!acks[0].ack(1, 3));
        assert!(check(2, &acks, &logs).ok());
    }
}
