//! What happened to messages that did not arrive, and how much memory the
//! send queues hold.
//!
//! Every message that `send` accepted is either written to its connection
//! or counted here under the reason it was dropped; every message `send`
//! refused is counted under the error it returned. The send queues are
//! bounded per peer and in total ([`Budget`]): a message that would pass a
//! bound is refused (or, on a channel that asks for it, the oldest queued
//! messages make room).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use weft_core::stage::DropReason;

/// Messages accepted by `send` and then lost, by reason.
#[derive(Debug, Default)]
pub struct Dropped {
    /// The destination node is not a member (never joined, or forgotten).
    pub not_member: AtomicU64,
    /// The destination node does not have the channel.
    pub no_channel: AtomicU64,
    /// Queued when the destination went down, left or restarted.
    pub node_down: AtomicU64,
    /// Being written when the connection failed.
    pub connection_lost: AtomicU64,
    /// Over the destination's frame limit, learnt after it was queued.
    pub too_large: AtomicU64,
    /// The oldest queued message of a channel with `overload => drop_oldest`.
    pub overflow: AtomicU64,
    /// Received, but no process has the destination name or pid.
    pub no_destination: AtomicU64,
    /// Received, but decoding it would have created atoms while the VM's
    /// atom table was near its limit.
    pub atom_limit: AtomicU64,
    /// Received, but not a message (not a `{Dest, Msg}` term); the
    /// connection it came on is closed.
    pub malformed: AtomicU64,
    /// Being received when no memory could be had for it (the connection
    /// it came on is closed).
    pub no_memory: AtomicU64,
    /// Received to be relayed (client-server overlay) to a node this one
    /// has no connection to, or whose send queues are full.
    pub no_route: AtomicU64,
    /// Dropped by the per-message stage as a fault (interposition, fault
    /// injection), on send or on receive.
    pub fault: AtomicU64,
    /// Dropped by the per-message stage as filtered, on send or on receive.
    pub filtered: AtomicU64,
}

impl Dropped {
    /// Each counter with its reason's name, as `weft:info()` shows them.
    pub fn by_reason(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("not_member", self.not_member.load(Relaxed)),
            ("no_channel", self.no_channel.load(Relaxed)),
            ("node_down", self.node_down.load(Relaxed)),
            ("connection_lost", self.connection_lost.load(Relaxed)),
            ("too_large", self.too_large.load(Relaxed)),
            ("overflow", self.overflow.load(Relaxed)),
            ("no_destination", self.no_destination.load(Relaxed)),
            ("atom_limit", self.atom_limit.load(Relaxed)),
            ("malformed", self.malformed.load(Relaxed)),
            ("no_memory", self.no_memory.load(Relaxed)),
            ("no_route", self.no_route.load(Relaxed)),
            (DropReason::Fault.name(), self.fault.load(Relaxed)),
            (DropReason::Filtered.name(), self.filtered.load(Relaxed)),
        ]
    }

    /// All of them, whatever the reason.
    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, n)| n).sum()
    }

    /// The counter of messages a stage dropped for `reason`.
    pub fn by_stage(&self, reason: DropReason) -> &AtomicU64 {
        match reason {
            DropReason::Fault => &self.fault,
            DropReason::Filtered => &self.filtered,
        }
    }
}

/// Calls to `send` that returned an error, by error.
#[derive(Debug, Default)]
pub struct Refused {
    /// [`crate::SendError::UnknownChannel`].
    pub unknown_channel: AtomicU64,
    /// [`crate::SendError::TooLarge`].
    pub too_large: AtomicU64,
    /// [`crate::SendError::Overloaded`].
    pub overloaded: AtomicU64,
}

/// All the counters of a transport.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages accepted, then lost.
    pub dropped: Dropped,
    /// Sends refused.
    pub refused: Refused,
    /// Messages relayed: sent through a server for a node without a
    /// connection (a client), or passed on for others (a server).
    pub relayed: AtomicU64,
    /// Sends on an `overload => wait` channel that found a queue full and
    /// waited for room (counted once per send, by the Erlang side).
    pub waited: AtomicU64,
}

impl Counters {
    /// Count `n` more in `c`.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

/// Bytes queued for sending, against their limits.
#[derive(Debug)]
pub struct Total {
    /// Bytes queued for all peers now (with [`PER_MESSAGE`] each).
    pub queued: AtomicU64,
    /// Their bound.
    pub limit: u64,
}

/// What a queued message costs besides its body (its queue entry and
/// header, as measured: about 100 bytes), counted against the bounds so
/// that a flood of tiny messages is bounded as large ones are.
pub const PER_MESSAGE: u64 = 128;

/// The send-queue budget of one peer, and the transport's total. Every
/// amount passed in is a message body's length; [`PER_MESSAGE`] is added.
#[derive(Debug)]
pub struct Budget {
    /// Bytes queued for this peer now (with [`PER_MESSAGE`] each).
    pub queued: AtomicU64,
    /// Their bound.
    pub limit: u64,
    /// The transport's total, which this budget also counts in.
    pub total: Arc<Total>,
}

impl Budget {
    /// An empty budget of `limit` bytes, counted in `total` too.
    pub fn new(limit: u64, total: Arc<Total>) -> Arc<Budget> {
        Arc::new(Budget {
            queued: AtomicU64::new(0),
            limit,
            total,
        })
    }

    /// Take `n` bytes if both bounds allow it. A message always fits into a
    /// peer queue that is empty, so that no message is refused for ever.
    pub fn try_reserve(&self, n: u64) -> bool {
        let n = n + PER_MESSAGE;
        let before = self.queued.fetch_add(n, Relaxed);
        if before > 0 && before + n > self.limit {
            self.queued.fetch_sub(n, Relaxed);
            return false;
        }
        let before_total = self.total.queued.fetch_add(n, Relaxed);
        if before_total > 0 && before_total + n > self.total.limit {
            self.total.queued.fetch_sub(n, Relaxed);
            self.queued.fetch_sub(n, Relaxed);
            return false;
        }
        true
    }

    /// Take `n` bytes whatever the bounds (control frames).
    pub fn force(&self, n: u64) {
        let n = n + PER_MESSAGE;
        self.queued.fetch_add(n, Relaxed);
        self.total.queued.fetch_add(n, Relaxed);
    }

    /// Give back `n` bytes (written or dropped).
    pub fn release(&self, n: u64) {
        let n = n + PER_MESSAGE;
        self.queued.fetch_sub(n, Relaxed);
        self.total.queued.fetch_sub(n, Relaxed);
    }

    /// Give back `frames` messages of `bytes` in all (written or dropped).
    pub fn release_many(&self, frames: u64, bytes: u64) {
        let n = bytes + frames * PER_MESSAGE;
        self.queued.fetch_sub(n, Relaxed);
        self.total.queued.fetch_sub(n, Relaxed);
    }

    /// Whether a message of `n` bytes fits this peer's bound now.
    pub fn fits(&self, n: u64) -> bool {
        self.queued() + n + PER_MESSAGE <= self.limit
    }

    /// Bytes queued for this peer now.
    pub fn queued(&self) -> u64 {
        self.queued.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_per_peer_and_in_total() {
        let m = PER_MESSAGE;
        let total = Arc::new(Total {
            queued: AtomicU64::new(0),
            limit: 150 + 3 * m,
        });
        let a = Budget::new(100 + 2 * m, total.clone());
        let b = Budget::new(100 + 2 * m, total.clone());
        assert!(a.try_reserve(60));
        assert!(a.try_reserve(40));
        assert!(!a.try_reserve(0), "a message costs more than its body");
        assert!(b.try_reserve(50));
        assert!(!b.try_reserve(1), "total bound");
        a.release(60);
        a.release(40);
        assert!(b.try_reserve(50));
        assert_eq!(total.queued.load(Relaxed), 100 + 2 * m);
        // an empty queue takes one message of any size
        let c = Budget::new(
            10,
            Arc::new(Total {
                queued: AtomicU64::new(0),
                limit: 10,
            }),
        );
        assert!(c.try_reserve(1000));
        assert!(!c.try_reserve(1));
    }
}
