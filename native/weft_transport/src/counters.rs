//! What happened to messages that did not arrive, and how much memory the
//! send queues hold.
//!
//! Every message that `send` accepted is either written to its connection
//! or counted here under the reason it was dropped; every message `send`
//! refused is counted under the error it returned. The send queues are
//! bounded per peer and in total ([`Budget`]): a message that would pass a
//! bound is refused (or, on a channel that asks for it, the oldest queued
//! messages make room).

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
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

/// Rung when a bound that someone watches has room again (see
/// [`Budget::watch_room`]); called from whichever thread gave the bytes
/// back, so it must be cheap and must not block.
pub type Bell = Arc<dyn Fn() + Send + Sync>;

/// Bytes queued for sending, against their limits.
pub struct Total {
    /// Bytes queued for all peers now (with [`PER_MESSAGE`] each).
    pub queued: AtomicU64,
    /// Their bound.
    pub limit: u64,
    /// Watched: ring [`Total::bell`] once `queued` is below this (0: not
    /// watched).
    wake_below: AtomicU64,
    /// What a watched bound rings.
    bell: Option<Bell>,
    /// Bytes of the messages parked for room (`overload => wait`; see
    /// [`crate::routes::Routes::park`]), with [`PER_MESSAGE`] each: held
    /// for them, new sends on waiting channels do not take them.
    pub parked: AtomicU64,
}

impl std::fmt::Debug for Total {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Total")
            .field("queued", &self.queued)
            .field("limit", &self.limit)
            .field("wake_below", &self.wake_below)
            .finish()
    }
}

impl Total {
    /// An empty total of `limit` bytes; a watched bound (its own or a
    /// peer's) rings `bell` when it has room again.
    pub fn new(limit: u64, bell: Option<Bell>) -> Arc<Total> {
        Arc::new(Total {
            queued: AtomicU64::new(0),
            limit,
            wake_below: AtomicU64::new(0),
            bell,
            parked: AtomicU64::new(0),
        })
    }

    /// Ring the bell (if any).
    pub fn ring(&self) {
        if let Some(bell) = &self.bell {
            bell();
        }
    }
}

/// What [`Budget::watch_room`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// The message fits both bounds now; nothing is watched for it.
    Fits,
    /// It does not: the bell rings once a bound it did not fit has room.
    Watched,
}

/// Below how many queued bytes a message that costs `n` (with
/// [`PER_MESSAGE`]) fits a bound of `limit`: as [`Budget::try_reserve`]
/// counts, when the queue is empty or has room for all of it.
fn fits_below(n: u64, limit: u64) -> u64 {
    if n <= limit {
        limit - n + 1
    } else {
        1
    }
}

/// Clear `wake_below` and say so if `left` bytes are below it (once: a
/// concurrent release that also saw it gets `false`).
fn crossed(wake_below: &AtomicU64, left: u64) -> bool {
    let w = wake_below.load(SeqCst);
    w != 0 && left < w && wake_below.swap(0, SeqCst) != 0
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
    /// Watched: ring the total's bell once `queued` is below this (0: not
    /// watched).
    wake_below: AtomicU64,
    /// Bytes of the messages parked for room on this route (`overload =>
    /// wait`; see [`crate::routes::Routes::park`]), with [`PER_MESSAGE`]
    /// each: held for them, new sends on waiting channels do not take
    /// them ([`Budget::try_reserve_behind_parked`]).
    pub parked: AtomicU64,
}

/// Which bound a message did not fit ([`Budget::try_reserve_or`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The peer's own.
    Peer,
    /// The transport's total.
    Total,
}

impl Budget {
    /// An empty budget of `limit` bytes, counted in `total` too.
    pub fn new(limit: u64, total: Arc<Total>) -> Arc<Budget> {
        Arc::new(Budget {
            queued: AtomicU64::new(0),
            limit,
            total,
            wake_below: AtomicU64::new(0),
            parked: AtomicU64::new(0),
        })
    }

    /// Take `n` bytes if both bounds allow it. A message always fits into a
    /// peer queue that is empty, so that no message is refused for ever.
    pub fn try_reserve(&self, n: u64) -> bool {
        self.try_reserve_or(n).is_ok()
    }

    /// As [`Budget::try_reserve`], saying which bound was full.
    pub fn try_reserve_or(&self, n: u64) -> Result<(), Full> {
        self.reserve(n, 0, 0)
    }

    /// As [`Budget::try_reserve_or`], the bytes of parked messages counting
    /// as queued: a new send on a waiting channel goes only if it leaves
    /// them their room, so that it never passes them.
    pub fn try_reserve_behind_parked(&self, n: u64) -> Result<(), Full> {
        self.reserve(
            n,
            self.parked.load(Relaxed),
            self.total.parked.load(Relaxed),
        )
    }

    /// Take `n` bytes if both bounds allow it with `held` and `held_total`
    /// more queued.
    fn reserve(&self, n: u64, held: u64, held_total: u64) -> Result<(), Full> {
        let n = n + PER_MESSAGE;
        let before = self.queued.fetch_add(n, Relaxed) + held;
        if before > 0 && before + n > self.limit {
            self.queued.fetch_sub(n, Relaxed);
            return Err(Full::Peer);
        }
        let before_total = self.total.queued.fetch_add(n, Relaxed) + held_total;
        if before_total > 0 && before_total + n > self.total.limit {
            self.total.queued.fetch_sub(n, Relaxed);
            self.queued.fetch_sub(n, Relaxed);
            return Err(Full::Total);
        }
        Ok(())
    }

    /// `n` bytes (body) more parked on this route, or fewer.
    pub fn park_bytes(&self, n: u64, parked: bool) {
        let n = n + PER_MESSAGE;
        if parked {
            self.parked.fetch_add(n, Relaxed);
            self.total.parked.fetch_add(n, Relaxed);
        } else {
            self.parked.fetch_sub(n, Relaxed);
            self.total.parked.fetch_sub(n, Relaxed);
        }
    }

    /// Take `n` bytes whatever the bounds (control frames).
    pub fn force(&self, n: u64) {
        let n = n + PER_MESSAGE;
        self.queued.fetch_add(n, Relaxed);
        self.total.queued.fetch_add(n, Relaxed);
    }

    /// Give back `n` bytes (written or dropped).
    pub fn release(&self, n: u64) {
        self.give_back(n + PER_MESSAGE);
    }

    /// Give back `frames` messages of `bytes` in all (written or dropped).
    pub fn release_many(&self, frames: u64, bytes: u64) {
        self.give_back(bytes + frames * PER_MESSAGE);
    }

    /// The bytes go back to both bounds; a watched bound that now has the
    /// room watched for rings the bell. (SeqCst, here and in
    /// [`Budget::watch_room`]: a watch set while bytes go back is seen
    /// either by the release or by the watch's own look at the queue. On
    /// x86 the same instructions as Relaxed.)
    fn give_back(&self, n: u64) {
        let left = self.queued.fetch_sub(n, SeqCst) - n;
        let left_total = self.total.queued.fetch_sub(n, SeqCst) - n;
        let peer = crossed(&self.wake_below, left);
        let total = crossed(&self.total.wake_below, left_total);
        if peer || total {
            self.total.ring();
        }
    }

    /// Watch for room for a message of `n` bytes (body): [`Room::Fits`] if
    /// it fits both bounds now, else [`Room::Watched`], and the bell rings
    /// (once) as soon as given-back bytes make room in a bound it did not
    /// fit. Whoever watches looks again when it rings (the room may have
    /// been taken since, or the other bound may still be full) and watches
    /// again if need be. Each bound keeps the watch that rings first (the
    /// smallest message's): several destinations may share a route (a
    /// client's relayed ones), and the total is everyone's. A watch set
    /// here while the message fits stays set: it may ring once for
    /// nothing.
    pub fn watch_room(&self, n: u64) -> Room {
        let n = n + PER_MESSAGE;
        let peer_below = fits_below(n, self.limit);
        let total_below = fits_below(n, self.total.limit);
        // Look; watch a full bound, then look again: a release after the
        // watch rings, one before it shows in the second look.
        let peer_full = self.queued.load(SeqCst) >= peer_below;
        if peer_full {
            self.wake_below.fetch_max(peer_below, SeqCst);
        }
        let total_full = self.total.queued.load(SeqCst) >= total_below;
        if total_full {
            self.total.wake_below.fetch_max(total_below, SeqCst);
        }
        let peer_full = peer_full && self.queued.load(SeqCst) >= peer_below;
        let total_full = total_full && self.total.queued.load(SeqCst) >= total_below;
        if peer_full || total_full {
            Room::Watched
        } else {
            Room::Fits
        }
    }

    /// The route this budget belongs to is gone (its lanes drain and stop,
    /// and may hold their bytes until the connection ends): ring if it is
    /// watched, so that whoever waits for room looks again (and finds no
    /// route).
    pub fn route_gone(&self) {
        if self.wake_below.swap(0, SeqCst) != 0 {
            self.total.ring();
        }
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
        let total = Total::new(150 + 3 * m, None);
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
        let c = Budget::new(10, Total::new(10, None));
        assert!(c.try_reserve(1000));
        assert!(!c.try_reserve(1));
    }

    #[test]
    fn new_sends_leave_parked_messages_their_room() {
        let m = PER_MESSAGE;
        let total = Total::new(1000 + 10 * m, None);
        let a = Budget::new(300 + 3 * m, total.clone());
        let b = Budget::new(1000 + 10 * m, total.clone());
        assert!(a.try_reserve(100));
        // 100 parked on a: a new send of 150 would take their room
        a.park_bytes(100, true);
        assert_eq!(a.try_reserve_behind_parked(150), Err(Full::Peer));
        assert_eq!(a.try_reserve_behind_parked(100), Ok(()), "room for both");
        // the parked one itself goes in its room (admit reserves plainly)
        assert_eq!(a.try_reserve_or(100), Ok(()));
        a.park_bytes(100, false);
        assert_eq!(a.try_reserve_behind_parked(1), Err(Full::Peer));
        // held in the total too: b, empty, is held back by a's parked bytes
        a.park_bytes(1500, true);
        assert_eq!(b.try_reserve_behind_parked(100), Err(Full::Total));
        assert_eq!(b.try_reserve_or(100), Ok(()), "a send that does not wait");
        // parked bytes alone make an empty queue count as not empty
        let c = Budget::new(10, Total::new(1 << 20, None));
        c.park_bytes(5, true);
        assert_eq!(c.try_reserve_behind_parked(1000), Err(Full::Peer));
        c.park_bytes(5, false);
        assert_eq!(c.try_reserve_behind_parked(1000), Ok(()));
    }

    /// A total whose bell counts its rings.
    fn belled(limit: u64) -> (Arc<Total>, Arc<AtomicU64>) {
        let rings = Arc::new(AtomicU64::new(0));
        let r = rings.clone();
        let bell: Bell = Arc::new(move || {
            r.fetch_add(1, Relaxed);
        });
        (Total::new(limit, Some(bell)), rings)
    }

    #[test]
    fn a_watched_peer_bound_rings_once_when_the_message_fits() {
        let m = PER_MESSAGE;
        let (total, rings) = belled(u64::MAX);
        let a = Budget::new(100 + 2 * m, total);
        assert_eq!(
            a.watch_room(60),
            Room::Fits,
            "an empty queue takes anything"
        );
        assert!(a.try_reserve(60));
        assert!(a.try_reserve(40));
        assert_eq!(a.watch_room(50), Room::Watched);
        a.release(0); // (no message, only to show that too little rings nothing)
        a.force(0);
        assert_eq!(rings.load(Relaxed), 0);
        a.release(60);
        assert_eq!(rings.load(Relaxed), 1, "40 + 50 + 2m fits 100 + 2m");
        // once only, however many bytes go back after
        a.release(40);
        assert_eq!(rings.load(Relaxed), 1);
        assert_eq!(a.watch_room(50), Room::Fits);
    }

    #[test]
    fn two_watches_on_one_bound_ring_for_the_smaller_message() {
        // (a client's relayed destinations share their server's bound)
        let m = PER_MESSAGE;
        let (total, rings) = belled(u64::MAX);
        let a = Budget::new(1000 + 2 * m, total);
        assert!(a.try_reserve(500));
        assert!(a.try_reserve(500));
        assert_eq!(a.watch_room(100), Room::Watched);
        assert_eq!(
            a.watch_room(5000),
            Room::Watched,
            "fits only an empty queue"
        );
        a.release(500);
        assert_eq!(rings.load(Relaxed), 1, "room for 100, not for 5000");
    }

    #[test]
    fn a_watched_bound_whose_route_is_gone_rings() {
        let (total, rings) = belled(u64::MAX);
        let a = Budget::new(1000, total);
        assert!(a.try_reserve(900));
        a.route_gone();
        assert_eq!(rings.load(Relaxed), 0, "nobody watched");
        assert_eq!(a.watch_room(500), Room::Watched);
        a.route_gone();
        assert_eq!(rings.load(Relaxed), 1);
    }

    #[test]
    fn a_message_larger_than_the_bound_is_watched_until_the_queue_is_empty() {
        let (total, rings) = belled(u64::MAX);
        let a = Budget::new(1000, total);
        assert!(a.try_reserve(10));
        assert!(a.try_reserve(20));
        assert_eq!(a.watch_room(5000), Room::Watched);
        a.release(10);
        assert_eq!(rings.load(Relaxed), 0, "not empty yet");
        a.release_many(1, 20);
        assert_eq!(rings.load(Relaxed), 1, "empty: any message fits");
    }

    #[test]
    fn the_total_rings_for_any_peer_that_gives_bytes_back() {
        let m = PER_MESSAGE;
        let (total, rings) = belled(200 + 2 * m);
        let a = Budget::new(u64::MAX, total.clone());
        let b = Budget::new(u64::MAX, total);
        assert!(a.try_reserve(100));
        assert!(b.try_reserve(100));
        // a's own queue has room; the total does not
        assert_eq!(a.watch_room(50), Room::Watched);
        b.release(100);
        assert_eq!(
            rings.load(Relaxed),
            1,
            "b's bytes made the room a waits for"
        );
        assert_eq!(a.watch_room(50), Room::Fits);
        // the total keeps the watch that rings first
        assert!(b.try_reserve(100));
        assert_eq!(a.watch_room(150), Room::Watched);
        assert_eq!(b.watch_room(10), Room::Watched);
        a.release(100);
        assert_eq!(rings.load(Relaxed), 2, "room for 10, not yet for 150");
    }

    #[test]
    fn watching_while_bytes_go_back_on_other_threads_never_misses_the_room() {
        // Whatever the interleaving, once everything went back either the
        // watch saw the room (Fits) or the bell rang.
        for _ in 0..200 {
            let (total, rings) = belled(u64::MAX);
            let a = Budget::new(8 * PER_MESSAGE, total);
            for _ in 0..8 {
                assert!(a.try_reserve(0));
            }
            let giver = {
                let a = a.clone();
                std::thread::spawn(move || {
                    for _ in 0..8 {
                        a.release(0);
                    }
                })
            };
            let room = a.watch_room(2000);
            giver.join().unwrap();
            assert!(room == Room::Fits || rings.load(Relaxed) == 1);
        }
    }
}
