//! The order in which senders that wait for room in a full send queue
//! (channels with `overload => wait`) get their messages in. Pure: the
//! time and the random draws are arguments.
//!
//! A sender whose message did not fit parks it here, under the route its
//! messages take (the peer's own, or on a client of the client-server
//! overlay, its server's: the bound it waits for) and a [`Key`]: the
//! 20 ms bucket ([`BUCKET_MS`]) in which it began to wait, then a random
//! draw. A pass ([`Queues::pass`]) admits parked messages in key order
//! over all routes: the oldest bucket first, in a random order within a
//! bucket. So a waiting sender is never passed by one that began to wait
//! a bucket later, nor (while anyone waits on its route) by a new send on
//! a waiting channel, which parks too (the transport's part); and two
//! replicas that got the same requests in the same order do not answer
//! them in the same order (as the processes that Distributed Erlang
//! resumes when a busy connection drains race each other; measured in
//! `bench/RESULTS.md`, 2026-12-07 19:37).
//!
//! A route whose own bound has no room for its oldest message is passed
//! over for the rest of the pass (its younger messages wait behind it:
//! per-route order); when the transport's total bound has no room, the
//! pass ends (the total is every route's, and the oldest message goes
//! first). Each step costs O(log n): no pass looks at a message that it
//! does not admit, but for one per route.

use crate::types::FastMap;
use std::collections::{BTreeMap, BTreeSet};

/// The span of a wait-start bucket, in milliseconds.
pub const BUCKET_MS: u64 = 20;

/// Where a parked message stands: its wait-start bucket, a random draw,
/// and its id (unique).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    bucket: u64,
    draw: u64,
    id: u64,
}

impl Key {
    /// A message parked at `now_ms` (any monotonic clock), with a random
    /// `draw` and a unique `id`.
    pub fn new(now_ms: u64, draw: u64, id: u64) -> Key {
        Key {
            bucket: now_ms / BUCKET_MS,
            draw,
            id,
        }
    }

    /// Its id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// What became of a message a pass tried to admit.
#[derive(Debug, PartialEq, Eq)]
pub enum Tried<T> {
    /// It went (or was dropped and counted, as a send would have).
    Admitted,
    /// Its route's own bound has no room for it.
    RouteFull(T),
    /// The total bound has no room for it.
    TotalFull(T),
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Messages admitted.
    pub admitted: usize,
    /// It ended because the total bound had no room.
    pub total_full: bool,
    /// It ended at its limit with messages still to try.
    pub more: bool,
}

/// Parked messages, by route.
#[derive(Debug)]
pub struct Queues<T> {
    /// Per route, in key order.
    queues: FastMap<String, BTreeMap<Key, T>>,
    /// Each route's oldest key.
    heads: BTreeSet<(Key, String)>,
    /// Each parked message's route and key, by id.
    ids: FastMap<u64, (String, Key)>,
}

impl<T> Default for Queues<T> {
    fn default() -> Self {
        Queues {
            queues: FastMap::default(),
            heads: BTreeSet::new(),
            ids: FastMap::default(),
        }
    }
}

impl<T> Queues<T> {
    /// None parked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages parked.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether none is parked.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether messages are parked on `route`.
    pub fn waiting_on(&self, route: &str) -> bool {
        self.queues.contains_key(route)
    }

    /// Park `entry` on `route` at `key` (whose id is new).
    pub fn park(&mut self, route: &str, key: Key, entry: T) {
        let q = self.queues.entry(route.to_string()).or_default();
        if let Some((&head, _)) = q.first_key_value() {
            if key < head {
                self.heads.remove(&(head, route.to_string()));
                self.heads.insert((key, route.to_string()));
            }
        } else {
            self.heads.insert((key, route.to_string()));
        }
        q.insert(key, entry);
        self.ids.insert(key.id, (route.to_string(), key));
    }

    /// Take the message of `id` out, if it is still parked.
    pub fn cancel(&mut self, id: u64) -> Option<T> {
        let (route, key) = self.ids.remove(&id)?;
        let q = self.queues.get_mut(&route)?;
        let was_head = q.first_key_value().is_some_and(|(k, _)| *k == key);
        let entry = q.remove(&key);
        if was_head {
            self.heads.remove(&(key, route.clone()));
            match q.first_key_value() {
                Some((&next, _)) => {
                    self.heads.insert((next, route));
                }
                None => {
                    self.queues.remove(&route);
                }
            }
        }
        entry
    }

    /// Each route's oldest message.
    pub fn heads(&self) -> impl Iterator<Item = (&str, &T)> {
        self.heads.iter().filter_map(|(key, route)| {
            let entry = self.queues.get(route)?.get(key)?;
            Some((route.as_str(), entry))
        })
    }

    /// Admit parked messages in key order, at most `max`: `try_admit`
    /// gets each route's oldest in turn and says what became of it. A
    /// route whose bound is full is passed over for the rest of the pass;
    /// a full total ends it.
    pub fn pass(&mut self, max: usize, mut try_admit: impl FnMut(&str, T) -> Tried<T>) -> Pass {
        let mut pass = Pass::default();
        let mut aside = Vec::new();
        while let Some((key, route)) = self.heads.pop_first() {
            if pass.admitted == max {
                self.heads.insert((key, route));
                pass.more = true;
                break;
            }
            let Some(q) = self.queues.get_mut(&route) else {
                continue;
            };
            let Some(entry) = q.remove(&key) else {
                continue;
            };
            match try_admit(&route, entry) {
                Tried::Admitted => {
                    pass.admitted += 1;
                    self.ids.remove(&key.id);
                    match q.first_key_value() {
                        Some((&next, _)) => {
                            self.heads.insert((next, route));
                        }
                        None => {
                            self.queues.remove(&route);
                        }
                    }
                }
                Tried::RouteFull(entry) => {
                    q.insert(key, entry);
                    aside.push((key, route));
                }
                Tried::TotalFull(entry) => {
                    q.insert(key, entry);
                    aside.push((key, route));
                    pass.total_full = true;
                    break;
                }
            }
        }
        self.heads.extend(aside);
        pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A route with room for `room` more messages.
    fn admit_while_room<'a>(
        room: &'a mut FastMap<String, usize>,
        total: &'a mut usize,
        order: &'a mut Vec<u64>,
    ) -> impl FnMut(&str, u64) -> Tried<u64> + 'a {
        move |route, id| {
            let r = room.get_mut(route).expect("known route");
            if *r == 0 {
                Tried::RouteFull(id)
            } else if *total == 0 {
                Tried::TotalFull(id)
            } else {
                *r -= 1;
                *total -= 1;
                order.push(id);
                Tried::Admitted
            }
        }
    }

    #[test]
    fn older_buckets_first_random_within_one() {
        let mut q = Queues::new();
        // ids 0..10 in bucket 0, 10..20 in bucket 1, parked in reverse
        // order of draw within each bucket.
        for id in (0..20u64).rev() {
            let now = if id < 10 { 5 } else { BUCKET_MS + 5 };
            q.park("a", Key::new(now, 100 - id, id), id);
        }
        assert_eq!(q.len(), 20);
        let mut room = FastMap::default();
        room.insert("a".to_string(), 100);
        let (mut total, mut order) = (100, Vec::new());
        let p = q.pass(100, admit_while_room(&mut room, &mut total, &mut order));
        assert_eq!(p.admitted, 20);
        assert!(q.is_empty() && !q.waiting_on("a"));
        // by draw within a bucket (higher id, lower draw), bucket 0 first
        let want: Vec<u64> = (0..10).rev().chain((10..20).rev()).collect();
        assert_eq!(order, want);
    }

    #[test]
    fn a_full_route_waits_in_order_and_does_not_hold_up_the_others() {
        let mut q = Queues::new();
        q.park("a", Key::new(0, 0, 1), 1);
        q.park("a", Key::new(0, 1, 2), 2);
        q.park("b", Key::new(0, 2, 3), 3);
        q.park("a", Key::new(BUCKET_MS, 0, 4), 4);
        let mut room: FastMap<String, usize> = [("a".to_string(), 0), ("b".to_string(), 5)]
            .into_iter()
            .collect();
        let (mut total, mut order) = (10, Vec::new());
        let p = q.pass(10, admit_while_room(&mut room, &mut total, &mut order));
        assert_eq!((p.admitted, p.total_full, p.more), (1, false, false));
        assert_eq!(order, [3]);
        assert!(q.waiting_on("a") && !q.waiting_on("b"));
        assert_eq!(
            q.heads()
                .map(|(r, e)| (r.to_string(), *e))
                .collect::<Vec<_>>(),
            [("a".to_string(), 1)]
        );
        // room for one on a: its oldest
        room.insert("a".to_string(), 1);
        let p = q.pass(10, admit_while_room(&mut room, &mut total, &mut order));
        assert_eq!(p.admitted, 1);
        assert_eq!(order, [3, 1]);
    }

    #[test]
    fn a_full_total_ends_the_pass_and_the_oldest_goes_first_across_routes() {
        let mut q = Queues::new();
        // a's messages older than b's, interleaved by bucket
        for i in 0..4u64 {
            q.park("a", Key::new(2 * i * BUCKET_MS, 0, i), i);
            q.park("b", Key::new((2 * i + 1) * BUCKET_MS, 0, 10 + i), 10 + i);
        }
        let mut room: FastMap<String, usize> = [("a".to_string(), 9), ("b".to_string(), 9)]
            .into_iter()
            .collect();
        let (mut total, mut order) = (3, Vec::new());
        let p = q.pass(10, admit_while_room(&mut room, &mut total, &mut order));
        assert_eq!((p.admitted, p.total_full), (3, true));
        assert_eq!(order, [0, 10, 1]);
        total = 10;
        let p = q.pass(2, admit_while_room(&mut room, &mut total, &mut order));
        assert_eq!((p.admitted, p.more), (2, true));
        let p = q.pass(10, admit_while_room(&mut room, &mut total, &mut order));
        assert_eq!((p.admitted, p.more, p.total_full), (3, false, false));
        assert_eq!(order, [0, 10, 1, 11, 2, 12, 3, 13]);
        assert!(q.is_empty());
    }

    #[test]
    fn cancel_takes_out_any_message_and_keeps_the_heads() {
        let mut q = Queues::new();
        for id in 0..5u64 {
            q.park("a", Key::new(0, id, id), id);
        }
        assert_eq!(q.cancel(0), Some(0), "the head");
        assert_eq!(q.cancel(3), Some(3), "one behind it");
        assert_eq!(q.cancel(3), None, "gone already");
        assert_eq!(q.cancel(99), None, "never parked");
        assert_eq!(q.heads().map(|(_, e)| *e).collect::<Vec<_>>(), [1]);
        for id in [1, 2, 4] {
            assert_eq!(q.cancel(id), Some(id));
        }
        assert!(q.is_empty() && !q.waiting_on("a") && q.heads().next().is_none());
    }

    /// Under sustained overload (room for one message per pass, new
    /// senders parking all the time) no sender waits longer than the
    /// ones parked before it in earlier buckets take: its wait is bounded
    /// by the messages parked ahead of it, whatever the draws.
    #[test]
    fn no_parked_message_is_passed_by_a_later_bucket() {
        let mut rng = Rng::new(7);
        let mut q = Queues::new();
        let mut parked_at = FastMap::default();
        let mut next = 0u64;
        let mut last_bucket_admitted = 0;
        for step in 0..20_000u64 {
            let now = step; // 1 ms a step
            for _ in 0..rng.below(3) {
                let route = if rng.below(2) == 0 { "a" } else { "b" };
                q.park(route, Key::new(now, rng.next_u64(), next), next);
                parked_at.insert(next, now);
                next += 1;
            }
            let mut admitted = Vec::new();
            let mut total = 1usize;
            q.pass(8, |_, id| {
                if total == 0 {
                    return Tried::TotalFull(id);
                }
                total -= 1;
                admitted.push(id);
                Tried::Admitted
            });
            for id in admitted {
                let bucket = parked_at[&id] / BUCKET_MS;
                assert!(
                    bucket >= last_bucket_admitted,
                    "an older bucket's message was passed"
                );
                last_bucket_admitted = bucket;
            }
        }
    }
}
