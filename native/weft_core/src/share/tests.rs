use super::*;
use crate::rng::Rng;
use std::collections::VecDeque;

/// A router on the shared lane.
fn shared() -> Router {
    let mut r = Router::new();
    let f = r.idle(0).unwrap();
    assert_eq!(r.answered(f.token), Answered::Now(Mode::Shared));
    r
}

#[test]
fn a_lane_moves_to_the_shared_lane_when_first_idle_and_back_for_an_unshareable_frame() {
    let mut r = Router::new();
    assert_eq!(r.mode(), Mode::Own);
    assert_eq!(r.push(0, true), (Route::Own, None));
    let f = r.idle(1).unwrap();
    assert_eq!(f.on, Mode::Own);
    assert_eq!(r.push(2, true), (Route::Held, None));
    assert_eq!(r.answered(f.token), Answered::Now(Mode::Shared));
    assert_eq!(r.push(3, true), (Route::Shared, None));
    let (route, fence) = r.push(10, false);
    assert_eq!(route, Route::Held);
    let fence = fence.unwrap();
    assert_eq!(fence.on, Mode::Shared);
    // everything waits for the answer, shareable or not
    assert_eq!(r.push(20, true), (Route::Held, None));
    assert_eq!(r.answered(fence.token + 1), Answered::Stale);
    assert_eq!(r.answered(fence.token), Answered::Now(Mode::Own));
    assert_eq!(r.answered(fence.token), Answered::Stale);
    assert_eq!(r.push(30, true), (Route::Own, None));
    assert_eq!(r.mode(), Mode::Own);
}

#[test]
fn a_quiet_lane_goes_back_and_an_unshareable_frame_cancels_that() {
    let mut r = shared();
    let (_, f) = r.push(0, false);
    r.answered(f.unwrap().token);
    assert_eq!(r.idle(QUIET_US - 1), None, "not quiet for long enough");
    let f = r.idle(QUIET_US).unwrap();
    assert_eq!(f.on, Mode::Own);
    assert_eq!(r.idle(QUIET_US + 1), None, "one fence at a time");
    assert_eq!(r.push(QUIET_US + 2, true), (Route::Held, None));
    assert_eq!(r.answered(f.token), Answered::Now(Mode::Shared));
    assert_eq!(r.push(QUIET_US + 3, true), (Route::Shared, None));

    // going back, then an unshareable frame: the lane keeps its connection
    let (_, f) = r.push(2 * QUIET_US, false);
    r.answered(f.unwrap().token);
    let f = r.idle(4 * QUIET_US).unwrap();
    assert_eq!(r.push(4 * QUIET_US + 1, true), (Route::Held, None));
    assert_eq!(r.push(4 * QUIET_US + 2, false), (Route::Own, None));
    assert!(!r.is_holding());
    assert_eq!(r.answered(f.token), Answered::Stale);
    assert_eq!(r.mode(), Mode::Own);
}

#[test]
fn a_lane_with_more_than_the_bound_waiting_may_not_share() {
    // Small frames, while the lane's backlog stays within the bound.
    assert!(may_share(true, 0, 100));
    assert!(may_share(true, BACKLOG_MAX - 100, 100));
    assert!(may_share(true, 0, SHARE_MAX));
    // Past it: a flooding lane leaves the shared lane.
    assert!(!may_share(true, BACKLOG_MAX - 99, 100));
    assert!(!may_share(true, usize::MAX, 1));
    // Never a large frame, nor one with extensions.
    assert!(!may_share(true, 0, SHARE_MAX + 1));
    assert!(!may_share(false, 0, 100));
    // A flood leaves as a large frame does, and comes back once quiet.
    let mut r = shared();
    let (route, fence) = r.push(10, may_share(true, BACKLOG_MAX, 100));
    assert_eq!(route, Route::Held);
    assert_eq!(fence.map(|f| f.on), Some(Mode::Shared));
    assert_eq!(r.answered(fence.unwrap().token), Answered::Now(Mode::Own));
    assert_eq!(r.idle(10 + QUIET_US - 1), None);
    assert_eq!(r.idle(10 + QUIET_US).map(|f| f.on), Some(Mode::Own));
}

#[test]
fn an_unanswered_fence_is_sent_again_with_a_new_token() {
    let mut r = shared();
    let (_, f) = r.push(0, false);
    let f = f.unwrap();
    assert_eq!(r.retry(RETRY_US - 1), None);
    let g = r.retry(RETRY_US).unwrap();
    assert_eq!(g.on, Mode::Shared);
    assert_ne!(g.token, f.token);
    assert_eq!(r.answered(g.token + 1), Answered::Stale);
    assert_eq!(r.answered(g.token), Answered::Now(Mode::Own));
    assert_eq!(r.retry(10 * RETRY_US), None);
    // an answer to an earlier change's fence does not end a later one
    let f = r.idle(20 * RETRY_US).unwrap();
    assert_eq!(r.answered(g.token), Answered::Stale);
    assert_eq!(r.answered(f.token), Answered::Now(Mode::Shared));
}

/// A connection so slow that every answer comes after the fence was sent
/// again: the answer to the first fence still ends the change, one round
/// trip after it began.
#[test]
fn an_answer_slower_than_the_retry_still_ends_the_change() {
    let delay = 3 * RETRY_US;
    let mut r = shared();
    let (_, f) = r.push(0, false);
    let first = f.unwrap();
    let mut now = 0;
    while now < delay {
        now += RETRY_US / 10;
        if let Some(again) = r.retry(now) {
            assert_eq!(again.on, Mode::Shared);
        }
        assert!(r.is_holding());
    }
    assert_eq!(r.answered(first.token), Answered::Now(Mode::Own));
}

#[test]
fn release_ends_a_change_on_the_connection_being_left() {
    // leaving the shared lane: what was held goes on the shared lane
    let mut r = shared();
    r.push(0, false);
    assert_eq!(r.release(), Mode::Shared);
    assert!(!r.is_holding());
    assert_eq!(r.push(1, true), (Route::Shared, None));
    // leaving the lane's own connection: there
    let mut r = Router::new();
    r.idle(0).unwrap();
    assert_eq!(r.release(), Mode::Own);
    assert_eq!(r.mode(), Mode::Own);
}

/// A one-way connection with a delay: what is sent arrives in order, no
/// earlier than `delay` later; `cut` loses what is on the way.
struct Wire<T> {
    on_way: VecDeque<(Micros, T)>,
}

impl<T> Default for Wire<T> {
    fn default() -> Self {
        Wire {
            on_way: VecDeque::new(),
        }
    }
}

impl<T> Wire<T> {
    fn send(&mut self, now: Micros, delay: Micros, x: T) {
        let at = self.on_way.back().map_or(0, |b| b.0).max(now + delay);
        self.on_way.push_back((at, x));
    }
    fn arrived(&mut self, now: Micros) -> Option<T> {
        if self.on_way.front().is_some_and(|f| f.0 <= now) {
            self.on_way.pop_front().map(|f| f.1)
        } else {
            None
        }
    }
    fn cut(&mut self) -> Vec<T> {
        self.on_way.drain(..).map(|f| f.1).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Frame(u64),
    Fence(u64),
    /// A wait for the fence of this token (`share_wait`).
    Wait(u64),
}

/// One lane's frames over its own connection and the shared lane, with
/// fences answered over the control lane, random delays, and connections
/// that lose what is on their way: every frame not lost is delivered, in
/// the order it was pushed. Odd seeds run with a peer that waits
/// ([`Router::set_peer_waits`]): the lane hears that its fence was written
/// (at once, or later than the answer), then sends the wait and what it
/// held on its own connection; the peer reads nothing of that connection
/// after a wait until it has read the fence from the shared lane (the wait
/// belongs to the connection: it is gone with it); and a new own
/// connection starts with the wait while it is unanswered.
#[test]
fn frames_keep_their_order_across_the_two_connections() {
    let (mut total_passed, mut total_stopped) = (0u64, 0u64);
    for seed in 0..600u64 {
        let mut rng = Rng::new(seed);
        let peer_waits = seed % 2 == 1;
        let mut r = if peer_waits {
            // (near the end of the tokens' range: they wrap)
            let mut r = Router::starting_at(u64::MAX - rng.below(50));
            r.set_peer_waits(true);
            r
        } else {
            Router::new()
        };
        let (mut shared, mut own) = (Wire::default(), Wire::default());
        let mut answers: Wire<u64> = Wire::default();
        let mut held: VecDeque<u64> = VecDeque::new();
        let mut delivered: Vec<u64> = Vec::new();
        let mut lost: Vec<u64> = Vec::new();
        // the peer: the last fence read from the shared lane, and the wait
        // its reading of the own connection stopped at
        let mut last_fence: Option<u64> = None;
        let mut waiting: Option<u64> = None;
        let (mut waits_passed, mut waits_stopped) = (0u64, 0u64);
        let mut next = 0u64;
        let mut now: Micros = 0;
        let unshareable_odds = 1 + rng.below(20);
        let cut_odds = 200 + rng.below(2000);
        // (some runs have answers slower than the retry: a congested
        // connection)
        let slow = rng.below(3) == 0;
        let delay = move |rng: &mut Rng| 1 + rng.below(if slow { 3 * RETRY_US } else { 5_000 });
        // (fences written, as the lane hears of it: token and when)
        let mut written: Vec<(u64, Micros)> = Vec::new();
        let send_fence = |f: Fence,
                          now,
                          rng: &mut Rng,
                          shared: &mut Wire<Item>,
                          own: &mut Wire<Item>,
                          written: &mut Vec<(u64, Micros)>| {
            let d = delay(rng);
            match f.on {
                Mode::Shared => shared.send(now, d, Item::Fence(f.token)),
                Mode::Own => own.send(now, d, Item::Fence(f.token)),
            }
            if f.wait {
                assert_eq!(f.on, Mode::Shared);
                let later = if rng.below(2) == 0 {
                    0
                } else {
                    rng.below(20_000)
                };
                written.push((f.token, now + later));
            }
        };
        let steps = 3_000 + rng.below(3_000);
        for step in 0..steps + 200_000 {
            now += rng.below(400);
            // (now and then a pause past the quiet time, so that the lane
            // goes back and forth between the connections many times)
            if rng.below(150) == 0 {
                now += rng.below(2 * QUIET_US);
            }
            let pushing = step < steps;
            if pushing && rng.below(3) == 0 {
                let id = next;
                next += 1;
                let shareable = rng.below(unshareable_odds) != 0;
                let (route, fence) = r.push(now, shareable);
                if let Some(f) = fence {
                    send_fence(f, now, &mut rng, &mut shared, &mut own, &mut written);
                }
                match route {
                    Route::Shared => shared.send(now, delay(&mut rng), Item::Frame(id)),
                    Route::Held => held.push_back(id),
                    Route::Own => {
                        for h in held.drain(..) {
                            own.send(now, delay(&mut rng), Item::Frame(h));
                        }
                        own.send(now, delay(&mut rng), Item::Frame(id));
                    }
                }
            }
            // the lane hears that a fence was written: the wait, then
            // what it held, on its own connection
            let mut i = 0;
            while i < written.len() {
                if written[i].1 > now {
                    i += 1;
                    continue;
                }
                let (t, _) = written.swap_remove(i);
                if r.written(t) {
                    own.send(now, delay(&mut rng), Item::Wait(t));
                    for h in held.drain(..) {
                        own.send(now, delay(&mut rng), Item::Frame(h));
                    }
                }
            }
            // the peer reads both connections and answers fences
            while let Some(x) = shared.arrived(now) {
                match x {
                    Item::Frame(id) => delivered.push(id),
                    Item::Fence(t) => {
                        last_fence = Some(t);
                        answers.send(now, delay(&mut rng), t)
                    }
                    Item::Wait(_) => panic!("seed {seed}: a wait on the shared lane"),
                }
            }
            if waiting.is_some_and(|t| wait_passes(last_fence, t)) {
                waiting = None;
                waits_passed += 1;
            }
            while waiting.is_none() {
                let Some(x) = own.arrived(now) else { break };
                match x {
                    Item::Frame(id) => delivered.push(id),
                    Item::Fence(t) => answers.send(now, delay(&mut rng), t),
                    Item::Wait(t) if wait_passes(last_fence, t) => waits_passed += 1,
                    Item::Wait(t) => {
                        waiting = Some(t);
                        waits_stopped += 1;
                    }
                }
            }
            while let Some(t) = answers.arrived(now) {
                match r.answered(t) {
                    Answered::Stale => {}
                    Answered::Now(m) => {
                        for h in held.drain(..) {
                            let w = if m == Mode::Shared {
                                &mut shared
                            } else {
                                &mut own
                            };
                            w.send(now, delay(&mut rng), Item::Frame(h));
                        }
                    }
                }
            }
            if let Some(f) = r.retry(now) {
                send_fence(f, now, &mut rng, &mut shared, &mut own, &mut written);
            }
            if held.is_empty() {
                if let Some(f) = r.idle(now) {
                    send_fence(f, now, &mut rng, &mut shared, &mut own, &mut written);
                }
            }
            if pushing && rng.below(cut_odds) == 0 {
                let which = rng.below(3);
                let w = match which {
                    0 => &mut shared,
                    1 => &mut own,
                    _ => {
                        answers.cut();
                        continue;
                    }
                };
                lost.extend(w.cut().into_iter().filter_map(|x| match x {
                    Item::Frame(id) => Some(id),
                    Item::Fence(_) | Item::Wait(_) => None,
                }));
                // (a wait belongs to the connection that carried it; a new
                // own connection starts with the wait out, if any)
                if which == 1 {
                    waiting = None;
                    if let Some(t) = r.wait_out() {
                        own.send(now, delay(&mut rng), Item::Wait(t));
                    }
                }
            }
        }
        assert!(
            delivered.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: out of order"
        );
        assert!(
            held.is_empty(),
            "seed {seed}: {} frames still held",
            held.len()
        );
        assert!(waiting.is_none(), "seed {seed}: the peer still waits");
        assert_eq!(
            delivered.len() + lost.len(),
            next as usize,
            "seed {seed}: frames neither delivered nor lost"
        );
        if peer_waits {
            total_passed += waits_passed;
            total_stopped += waits_stopped;
        }
    }
    // (the waiting runs did wait: many times, and often before the fence)
    assert!(
        total_passed > 500 && total_stopped > 200,
        "{total_passed} {total_stopped}"
    );
}

/// With a peer that waits, a change to the lane's own connection holds
/// its frames only until the fence is written: then they go on at once,
/// behind a wait for it. The fence goes again with the same token; the
/// lane goes back to the shared lane only after the answer; an answer that
/// comes before the lane hears of the write ends the hold as well.
#[test]
fn with_a_peer_that_waits_the_lane_leaves_the_shared_lane_at_once() {
    let mut r = Router::starting_at(u64::MAX);
    r.set_peer_waits(true);
    let f = r.idle(0).unwrap();
    assert_eq!((f.on, f.wait), (Mode::Own, false));
    assert_eq!(r.push(1, true), (Route::Held, None));
    assert_eq!(r.answered(f.token), Answered::Now(Mode::Shared));
    assert_eq!(r.wait_out(), None);
    // a large frame: held until its fence is written
    let (route, f) = r.push(2, false);
    let f = f.unwrap();
    assert_eq!(route, Route::Held);
    assert_eq!((f.on, f.wait, f.token), (Mode::Shared, true, 0));
    assert!(r.is_holding());
    assert_eq!(r.wait_out(), None);
    assert!(!r.written(1));
    assert!(r.written(0));
    assert!(!r.written(0));
    assert!(!r.is_holding());
    assert_eq!(r.mode(), Mode::Own);
    assert_eq!(r.fence_out(), Some(Mode::Shared));
    assert_eq!(r.wait_out(), Some(0));
    assert_eq!(r.push(3, true), (Route::Own, None));
    // no answer: the same fence again, and not back before the answer
    assert_eq!(r.retry(2 + RETRY_US - 1), None);
    let again = r.retry(2 + RETRY_US).unwrap();
    assert_eq!((again.on, again.wait, again.token), (Mode::Shared, true, 0));
    assert_eq!(r.idle(10 * QUIET_US), None);
    assert_eq!(r.answered(0), Answered::Now(Mode::Own));
    assert_eq!((r.wait_out(), r.fence_out()), (None, None));
    // back on the shared lane, and off again: the answer comes before the
    // lane hears that the fence was written, and ends the hold
    let f = r.idle(10 * QUIET_US).unwrap();
    assert_eq!(r.answered(f.token), Answered::Now(Mode::Shared));
    let (route, f) = r.push(11 * QUIET_US, false);
    assert_eq!(route, Route::Held);
    let f = f.unwrap();
    assert_eq!(r.answered(f.token), Answered::Now(Mode::Own));
    assert!(!r.written(f.token));
    assert_eq!(r.wait_out(), None);
}
