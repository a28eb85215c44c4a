//! Room for new entries in a table of the VM that decoding received terms
//! fills and that ends the VM when full (the atom table): how many entries
//! decodes may still make, as last measured, less what they took since.
//!
//! The table is measured from Erlang (`erlang:system_info(atom_count)`),
//! while decodes run on other threads. A measurement must not give out
//! again room that a decode took but whose entries the count may not
//! include yet: one still running, or one that ended between the
//! measurement and the moment it is handed here. So a measurement goes in
//! three steps:
//!
//! 1. [`Room::mark`], before counting the table;
//! 2. count the table;
//! 3. [`Room::set`] with the free entries counted and the mark: everything
//!    taken that was not over at the mark is subtracted, whether or not the
//!    count included it (at worst it is subtracted twice, until the next
//!    measurement).
//!
//! A decode takes room with [`Room::take`] before it makes any entry and
//! holds the returned [`Taken`] until it is over. The bookkeeping sits
//! under one lock: only decodes that make new entries (rare) and the
//! measurement take it.

use std::sync::{Mutex, MutexGuard};

/// See the [module](self).
#[derive(Debug)]
pub struct Room(Mutex<State>);

#[derive(Debug)]
struct State {
    /// Entries decodes may still make.
    room: i64,
    /// Entries taken since the start, in all.
    taken: i64,
    /// Of those, the entries of decodes that are over (made, failed or
    /// given back).
    over: i64,
}

/// Room taken by one decode; it counts as over when dropped (the decode
/// made its entries, or failed), or when given back (it never ran).
#[derive(Debug)]
#[must_use = "the room counts as in use until this is dropped"]
pub struct Taken<'a> {
    room: &'a Room,
    n: i64,
}

impl Room {
    /// Room for `n` entries until the first measurement.
    pub const fn new(n: i64) -> Room {
        Room(Mutex::new(State {
            room: n,
            taken: 0,
            over: 0,
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // (the lock guards plain integers: a panic cannot leave them torn)
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Step 1 of a measurement: call before counting the table.
    pub fn mark(&self) -> i64 {
        self.state().over
    }

    /// Step 3: the table had `free` entries to spare when counted after
    /// `mark`. Everything taken and not over by the mark may be missing
    /// from that count, and is subtracted.
    pub fn set(&self, free: i64, mark: i64) {
        let mut s = self.state();
        s.room = free.saturating_sub(s.taken.saturating_sub(mark));
    }

    /// Take room for `n` entries that a decode is about to make; `None` when
    /// there is not enough. Taking nothing always succeeds.
    pub fn take(&self, n: i64) -> Option<Taken<'_>> {
        let n = n.max(0);
        let mut s = self.state();
        if s.room < n {
            return None;
        }
        s.room -= n;
        s.taken += n;
        Some(Taken { room: self, n })
    }

    /// The room left now.
    pub fn left(&self) -> i64 {
        self.state().room
    }
}

impl Taken<'_> {
    /// The decode did not run: the room is free again.
    pub fn give_back(self) {
        self.room.state().room += self.n;
        // (and `drop` counts it as over)
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.room.state().over += self.n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;

    #[test]
    fn room_is_taken_and_given_back() {
        let r = Room::new(10);
        let a = r.take(6).unwrap();
        assert!(r.take(5).is_none());
        let b = r.take(4).unwrap();
        assert_eq!(r.left(), 0);
        assert!(r.take(0).is_some());
        b.give_back();
        assert_eq!(r.left(), 4);
        drop(a);
        assert_eq!(r.left(), 4, "room made into entries is not given back");
    }

    /// A measurement taken while a decode still makes its entries does not
    /// give its room out again.
    #[test]
    fn a_decode_in_flight_keeps_its_room_through_a_measurement() {
        let r = Room::new(50_000);
        let first = r.take(46_000).unwrap();
        let m = r.mark();
        // the count does not include the first decode's atoms yet
        r.set(50_000, m);
        assert!(r.take(46_000).is_none());
        drop(first);
        let m = r.mark();
        r.set(4_000, m);
        assert!(r.take(4_001).is_none());
        assert!(r.take(4_000).is_some());
    }

    /// A decode that ends between the count and the moment the count is
    /// handed over (so it is neither in flight then nor in the count) does
    /// not get its room back either.
    #[test]
    fn a_decode_that_ends_during_a_measurement_keeps_its_room() {
        let r = Room::new(50_000);
        let first = r.take(46_000).unwrap();
        let m = r.mark();
        // counted: the atoms do not exist yet
        let free = 50_000;
        drop(first); // the atoms exist now
        r.set(free, m);
        assert!(r.take(46_000).is_none());
        assert_eq!(r.left(), 4_000);
    }

    /// Decodes on several threads, each making its entries a while after it
    /// took room, and a measurer that counts the table between them: the
    /// table never passes its limit.
    #[test]
    fn the_table_never_overflows_whatever_the_interleaving() {
        const LIMIT: i64 = 20_000;
        for round in 0..20u64 {
            let room = Arc::new(Room::new(0));
            let made = Arc::new(AtomicI64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let measurer = {
                let (room, made, stop) = (room.clone(), made.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let m = room.mark();
                        let count = made.load(Ordering::SeqCst);
                        std::thread::yield_now();
                        room.set(LIMIT - count, m);
                    }
                })
            };
            let decoders: Vec<_> = (0..3u64)
                .map(|t| {
                    let (room, made) = (room.clone(), made.clone());
                    std::thread::spawn(move || {
                        let mut x = round * 31 + t * 7 + 1;
                        for _ in 0..2_000 {
                            x = x
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let n = (x >> 33) as i64 % 400 + 1;
                            if let Some(taken) = room.take(n) {
                                if x & 1 == 0 {
                                    std::thread::yield_now();
                                }
                                let now = made.fetch_add(n, Ordering::SeqCst) + n;
                                assert!(now <= LIMIT, "table at {now} of {LIMIT}");
                                drop(taken);
                            }
                        }
                    })
                })
                .collect();
            for d in decoders {
                d.join().unwrap();
            }
            stop.store(true, Ordering::SeqCst);
            measurer.join().unwrap();
            assert!(made.load(Ordering::SeqCst) <= LIMIT);
        }
    }
}
