//! The order in which one live session receives its user's stored events: by
//! `seq`, each once, none missed — whatever path brought them (this instance's
//! group commit, another instance over the bus, a catch-up from the store).
//!
//! [`Order`] is the session's bookkeeping, without IO. It knows `through`: every
//! event with a seq up to it was sent to the device, acked to it as its own, or
//! was already in the head its greeting carried. A relayed event at `through + 1`
//! goes out; one at or below `through` is a duplicate and is dropped; one further
//! ahead means events were missed in between (they took a slower path, or a bus
//! message was lost): the session reads them from the store first
//! ([`Next::Fill`]), leaving out the device's own events, then sends this one.
//!
//! The device's own events are never relayed to it, so its acks advance `through`
//! too ([`Order::own`]); an ack that arrives before the events below it is kept
//! aside until they do. Events that are not in the store (expired, compacted)
//! leave holes that a fill steps over.

use std::collections::BTreeSet;

/// The most own acks kept aside; past it the oldest is forgotten (a fill then reads
/// a little more from the store, and still never sends the device its own events).
const MAX_OWN_AHEAD: usize = 1024;

/// What to do with a relayed stored event (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send it now.
    Send,
    /// Already sent (or known to the device): drop it.
    Drop,
    /// Events in `(after, before)` were missed: read them from the store and send
    /// them first, then this one, then call [`Order::filled`] with `before`.
    Fill {
        /// The last seq the session is sure of.
        after: u64,
        /// The relayed event's seq.
        before: u64,
    },
}

/// One session's position in its user's log (see the module docs).
#[derive(Debug, Default)]
pub struct Order {
    through: u64,
    own_ahead: BTreeSet<u64>,
}

impl Order {
    /// A session greeted with `head`: everything up to it is the device's to sync.
    pub fn new(head: u64) -> Self {
        Self {
            through: head,
            own_ahead: BTreeSet::new(),
        }
    }

    /// Every seq up to this one is accounted for.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// The device's own event `seq` was acked to it.
    pub fn own(&mut self, seq: u64) {
        if seq <= self.through {
            return;
        }
        if seq == self.through + 1 {
            self.advance(seq);
            return;
        }
        self.own_ahead.insert(seq);
        if self.own_ahead.len() > MAX_OWN_AHEAD {
            self.own_ahead.pop_first();
        }
    }

    /// A stored event `seq` arrived for the session.
    pub fn relayed(&mut self, seq: u64) -> Next {
        if seq <= self.through || self.own_ahead.contains(&seq) {
            return Next::Drop;
        }
        // Everything in between is the device's own: nothing was missed.
        let between = self.through + 1..seq;
        if self.own_ahead.range(between.clone()).count() as u64 == seq - self.through - 1 {
            self.advance(seq);
            return Next::Send;
        }
        Next::Fill {
            after: self.through,
            before: seq,
        }
    }

    /// Everything up to `seq` was sent (a fill or a catch-up from the store read
    /// that far).
    pub fn filled(&mut self, seq: u64) {
        if seq > self.through {
            self.advance(seq);
        }
    }

    fn advance(&mut self, seq: u64) {
        self.through = seq;
        self.own_ahead.retain(|s| *s > seq);
        while self.own_ahead.first() == Some(&(self.through + 1)) {
            self.own_ahead.pop_first();
            self.through += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_events_go_out_and_duplicates_are_dropped() {
        let mut o = Order::new(4);
        // Up to the greeting's head the device syncs by itself.
        assert_eq!(o.relayed(3), Next::Drop);
        assert_eq!(o.relayed(4), Next::Drop);
        assert_eq!(o.relayed(5), Next::Send);
        assert_eq!(o.relayed(6), Next::Send);
        assert_eq!(o.relayed(6), Next::Drop);
        assert_eq!(o.through(), 6);
    }

    #[test]
    fn own_acks_fill_the_stream_in_either_order() {
        let mut o = Order::new(0);
        // The ack of the device's own event 2 comes before the relayed 1.
        o.own(2);
        assert_eq!(o.through(), 0);
        assert_eq!(o.relayed(1), Next::Send);
        assert_eq!(o.through(), 2);
        // The relayed 4 comes after the ack of 3.
        o.own(3);
        assert_eq!(o.relayed(4), Next::Send);
        // Own events 5 and 6 acked, then the relayed 7: nothing was missed.
        o.own(5);
        o.own(6);
        assert_eq!(o.relayed(7), Next::Send);
        assert_eq!(o.through(), 7);
        // An ack of an event already accounted for changes nothing.
        o.own(7);
        assert_eq!(o.through(), 7);
    }

    #[test]
    fn a_gap_asks_for_a_fill_and_the_fill_moves_through() {
        let mut o = Order::new(10);
        o.own(12);
        // 11 and 13 are missing (12 is the device's own).
        assert_eq!(
            o.relayed(14),
            Next::Fill {
                after: 10,
                before: 14
            }
        );
        // Not advanced until the fill is done.
        assert_eq!(o.through(), 10);
        o.filled(14);
        assert_eq!(o.through(), 14);
        // The missed events arriving late are duplicates now.
        assert_eq!(o.relayed(11), Next::Drop);
        assert_eq!(o.relayed(13), Next::Drop);
        // A catch-up that read further moves it too, and never back.
        o.filled(20);
        o.filled(15);
        assert_eq!(o.through(), 20);
        assert_eq!(o.relayed(21), Next::Send);
    }

    #[test]
    fn own_acks_kept_aside_are_bounded() {
        let mut o = Order::new(0);
        for s in (2..).step_by(2).take(MAX_OWN_AHEAD + 10) {
            o.own(s);
        }
        assert_eq!(o.own_ahead.len(), MAX_OWN_AHEAD);
        // The forgotten ones are read from the store instead (never sent: they are
        // the device's own).
        assert!(matches!(
            o.relayed(3),
            Next::Fill {
                after: 0,
                before: 3
            }
        ));
        o.filled(3);
        assert_eq!(o.through(), 3);
    }
}
