//! The control events of one connection on their way to the driver: what
//! its poller handed over and the driver has not taken yet, bounded.
//!
//! Pollers read control frames far faster than the driver (one task, which
//! runs the core for every frame) takes them: a peer that knows the cookie
//! and floods its control connection would otherwise grow the driver's
//! channel without bound (before this bound, 3 million heartbeats from a
//! raw peer on loopback had 1.9 million events in flight at once, and the
//! process's resident memory went from 7 to 348 MiB). So:
//!
//! - *backpressure*: past [`EVENTS_MAX`] events or [`BYTES_MAX`] bytes of
//!   frame bodies in flight, the poller stops reading the connection (as it
//!   stops at a fence wait: what is read stays in the reader, the rest in
//!   the socket, and the peer's sends block on TCP's window); once the
//!   driver has taken it down to half of both, the driver asks the poller
//!   to read again ([`Backlog::taken`]). The poller never waits: it reads
//!   its other connections meanwhile. The driver never waits for a poller.
//!   No frame is dropped.
//! - *coalescing*: a heartbeat only says "heard from"; while one of the
//!   connection's heartbeats is in flight, another adds nothing (the driver
//!   takes the one in flight after this one came) and is not handed over.
//!
//! So a connection has at most [`EVENTS_MAX`] events (plus one heartbeat)
//! and [`BYTES_MAX`] bytes (plus one frame, at most the largest control
//! frame) in the driver's channel, whatever its peer sends; the transport
//! at most that per control connection being read. [`Queued`] counts them
//! over all connections.
//!
//! The stall is a handshake between one poller (the only one that adds,
//! and that marks the connection stalled) and whoever takes events out
//! (the driver, or whoever drops them): the poller marks, then looks at the
//! counts; the taker lowers the counts, then looks at the mark. With
//! sequentially consistent operations on both sides, one of the two sees
//! the other, so a stalled connection is always read again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

/// Events of one connection in flight to the driver past which its poller
/// stops reading it. Some 50 KB of events; enough that the driver does not
/// wait for the poller to be woken: 3 million membership messages from a
/// raw peer were taken in 11.8 s with this bound and with none, in 13.5 s
/// and 22.6 s with 64 (`tests/loopback.rs`, debug build, 2 cores).
pub const EVENTS_MAX: u64 = 256;

/// Bytes of control frame bodies of one connection in flight to the driver
/// past which its poller stops reading it: as much as a peer's control lane
/// may have queued for membership messages
/// ([`crate::routes::ANSWERS_QUEUED_MAX`]).
pub const BYTES_MAX: u64 = 1 << 20;

/// One connection's events in flight to the driver.
#[derive(Debug, Default)]
pub struct Backlog {
    events: AtomicU64,
    bytes: AtomicU64,
    /// Its poller stopped reading the connection: the one who brings the
    /// counts down to half clears this and has it read again.
    stalled: AtomicBool,
    /// One of its heartbeats is in flight.
    heartbeat: AtomicBool,
}

impl Backlog {
    /// Whether a heartbeat should be handed over (none is in flight); if
    /// so, one is in flight from now on. Poller only.
    pub fn heartbeat_wanted(&self) -> bool {
        !self.heartbeat.swap(true, SeqCst)
    }

    /// An event of `bytes` is handed over (for a heartbeat, after
    /// [`Backlog::heartbeat_wanted`]). Whether the backlog is full now:
    /// read no more of the connection ([`Backlog::holds_reads`]). Poller
    /// only.
    pub fn add(&self, bytes: u64, totals: &Queued) -> bool {
        let events = self.events.fetch_add(1, SeqCst) + 1;
        let all = self.bytes.fetch_add(bytes, SeqCst) + bytes;
        // (counted here first, in the totals first when taken: the totals
        // never count more than the connections have)
        totals.add(bytes);
        events >= EVENTS_MAX || all >= BYTES_MAX
    }

    /// The driver took (or someone dropped) an event of `bytes`, a
    /// heartbeat or not. Whether the connection's reads must resume now
    /// (it was stalled, and is down to half).
    pub fn taken(&self, bytes: u64, heartbeat: bool, totals: &Queued) -> bool {
        totals.take(bytes);
        if heartbeat {
            self.heartbeat.store(false, SeqCst);
        }
        self.events.fetch_sub(1, SeqCst);
        self.bytes.fetch_sub(bytes, SeqCst);
        self.low() && self.stalled.load(SeqCst) && self.stalled.swap(false, SeqCst)
    }

    /// Whether the connection must not be read now: its backlog filled up
    /// and has not come down to half yet. Poller only.
    pub fn holds_reads(&self) -> bool {
        if self.stalled.load(SeqCst) {
            if !self.low() {
                return true;
            }
            self.stalled.store(false, SeqCst);
            return false;
        }
        if !self.full() {
            return false;
        }
        self.stalled.store(true, SeqCst);
        // (the driver may have brought it down before it saw the mark)
        if self.low() {
            self.stalled.store(false, SeqCst);
            return false;
        }
        true
    }

    fn full(&self) -> bool {
        self.events.load(SeqCst) >= EVENTS_MAX || self.bytes.load(SeqCst) >= BYTES_MAX
    }

    fn low(&self) -> bool {
        self.events.load(SeqCst) <= EVENTS_MAX / 2 && self.bytes.load(SeqCst) <= BYTES_MAX / 2
    }

    /// Events in flight now.
    pub fn events(&self) -> u64 {
        self.events.load(SeqCst)
    }
}

/// Control events in flight to the driver over all connections, and the
/// most there were at once.
#[derive(Debug, Default)]
pub struct Queued {
    events: AtomicU64,
    bytes: AtomicU64,
    most_events: AtomicU64,
    most_bytes: AtomicU64,
}

/// A snapshot of [`Queued`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueuedNow {
    /// Events in flight now.
    pub events: u64,
    /// Their frame bodies' bytes.
    pub bytes: u64,
    /// The most events in flight at once so far.
    pub most_events: u64,
    /// The most bytes in flight at once so far.
    pub most_bytes: u64,
}

impl Queued {
    fn add(&self, bytes: u64) {
        let events = self.events.fetch_add(1, SeqCst) + 1;
        let bytes = self.bytes.fetch_add(bytes, SeqCst) + bytes;
        self.most_events.fetch_max(events, SeqCst);
        self.most_bytes.fetch_max(bytes, SeqCst);
    }

    fn take(&self, bytes: u64) {
        self.events.fetch_sub(1, SeqCst);
        self.bytes.fetch_sub(bytes, SeqCst);
    }

    /// What is in flight now, and the most so far.
    pub fn now(&self) -> QueuedNow {
        QueuedNow {
            events: self.events.load(SeqCst),
            bytes: self.bytes.load(SeqCst),
            most_events: self.most_events.load(SeqCst),
            most_bytes: self.most_bytes.load(SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full at EVENTS_MAX events, read again at half; a stall that the
    /// taker brought down before the poller marked it is not kept.
    #[test]
    fn reads_stop_when_full_and_resume_at_half() {
        let (b, q) = (Backlog::default(), Queued::default());
        for i in 1..EVENTS_MAX {
            assert!(!b.add(1, &q), "{i}");
            assert!(!b.holds_reads());
        }
        assert!(b.add(1, &q));
        assert_eq!(q.now().most_bytes, EVENTS_MAX);
        assert!(b.holds_reads());
        for _ in 0..EVENTS_MAX / 2 - 1 {
            assert!(!b.taken(1, false, &q));
            assert!(b.holds_reads(), "still above half");
        }
        assert!(b.taken(1, false, &q), "down to half: resume");
        assert!(!b.holds_reads());
        assert_eq!(q.now().events, EVENTS_MAX / 2);
        assert_eq!(q.now().most_events, EVENTS_MAX);
        // filled, and brought down before the poller looked: not stalled
        while !b.add(1, &q) {}
        while b.events() > EVENTS_MAX / 2 {
            assert!(!b.taken(1, false, &q), "nobody stalled it");
        }
        assert!(!b.holds_reads());
    }

    /// One frame of BYTES_MAX stalls on its own; one heartbeat at a time.
    #[test]
    fn bytes_stall_too_and_heartbeats_coalesce() {
        let (b, q) = (Backlog::default(), Queued::default());
        assert!(b.add(BYTES_MAX, &q));
        assert!(b.holds_reads());
        assert!(b.taken(BYTES_MAX, false, &q));
        assert_eq!(q.now().most_bytes, BYTES_MAX);
        assert!(b.heartbeat_wanted());
        assert!(!b.heartbeat_wanted());
        b.add(1, &q);
        b.taken(1, true, &q);
        assert!(b.heartbeat_wanted());
    }

    /// The poller's stall and the driver's takes racing on two threads:
    /// the connection is always read again, and never more than
    /// EVENTS_MAX are in flight.
    #[test]
    fn a_stall_is_never_lost() {
        use std::sync::mpsc::channel;
        use std::sync::Arc;
        use std::time::Duration;
        let b = Arc::new(Backlog::default());
        let q = Arc::new(Queued::default());
        let (tx, rx) = channel::<()>();
        let (resume_tx, resume_rx) = channel::<()>();
        let taker = {
            let (b, q) = (b.clone(), q.clone());
            std::thread::spawn(move || {
                for () in rx {
                    if b.taken(1, false, &q) {
                        let _ = resume_tx.send(());
                    }
                }
            })
        };
        let mut sent = 0;
        while sent < 200_000 {
            if b.holds_reads() {
                // (stalled: only the taker's resume lets it go on; one
                // that came for an earlier stall makes it look again)
                resume_rx
                    .recv_timeout(Duration::from_secs(30))
                    .expect("a stalled connection was never read again");
                continue;
            }
            b.add(1, &q);
            tx.send(()).unwrap();
            sent += 1;
        }
        drop(tx);
        taker.join().unwrap();
        assert_eq!(q.now().events, 0);
        assert!(q.now().most_events <= EVENTS_MAX);
    }
}
