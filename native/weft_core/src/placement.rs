//! Bulk detection: when a connection carries bulk data, when it is quiet
//! again, and when a poller keeps polling after a round. Pure policy, fed
//! the bytes and frames a poller moved and the time (an argument).
//!
//! With `io => auto` a connection starts on a poller driven by the
//! embedding program (the BEAM's schedulers), where small messages go
//! fastest. While it carries bulk (frames of more than
//! [`crate::lane::DIRECT_MAX`] bytes, whose copies would keep a scheduler
//! long) it is served by a poller on a thread of its own
//! ([`Place::Bulk`]); after [`QUIET`] without bulk it goes back
//! ([`Place::Home`]). Many small frames are not bulk, however many bytes
//! they add up to: each is a delivery to a process, which costs a thread
//! far more than a scheduler (it must wake a scheduler for it; measured
//! in `bench/RESULTS.md`, "Which connections go to a thread"). A poller whose round moved a few small
//! frames lingers (polls again instead of waiting to be woken: the next
//! frame is likely close behind), but not during bulk transfers, where
//! polling would only take CPU from the copying ([`Linger`]). A lingering
//! poller that finds nothing [`EMPTY_LOOKS_PER_YIELD`] times in a row gives
//! its CPU to the other threads of the machine once before it looks again
//! ([`Linger::give_way`]), as the VM's schedulers do while they spin before
//! sleeping: where another program (or another node) shares the cores,
//! polling must not keep it from the CPU that would produce the next frame.
//!
//! **Fairness.** A poller serves its ready connections in turn
//! ([`ServiceOrder`]): round robin, each at most a per-connection budget
//! per round and all at most a round budget, and a connection the round's
//! budget did not reach goes first in the next round. So with `n` ready
//! connections, a per-connection budget `per` and a round budget `round`,
//! a ready connection waits at most `ceil(n * per / round)` rounds, and
//! behind at most `(n - 1) * per` bytes of other connections, whatever
//! order they became ready in (the property test
//! `service_order_is_round_robin_with_bounded_waits` checks it).

use crate::lane::Micros;
use std::collections::VecDeque;

/// A round that moved more than this does not make the poller linger.
pub const LINGER_MAX_BYTES: usize = 64 * 1024;

/// Empty looks in a row after which a lingering poller yields its CPU
/// ([`Linger::give_way`]). Measured in `bench/RESULTS.md` ("a lingering
/// poller gives way"): 100-byte round trips with 16 pairs on 16 lanes went
/// from 0.70-0.79x Distributed Erlang's rate to 0.90-0.98x with 4, and one
/// pair kept its rate; yielding after every empty look cost one pair a
/// quarter of its rate.
pub const EMPTY_LOOKS_PER_YIELD: u32 = 4;

/// How long a connection served on a thread goes without bulk before it
/// moves back.
pub const QUIET: Micros = 200_000;

/// Where a connection should be served from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Where it is.
    Stay,
    /// On a poller of its own thread: it carries bulk.
    Bulk,
    /// Back on a driven poller: it has been quiet for [`QUIET`].
    Home,
}

/// What one connection carried lately.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// When it last carried bulk (0: never), on its poller's clock.
    bulk_at: Micros,
    /// It carried bulk in the current round.
    bulk_now: bool,
}

impl Traffic {
    /// A connection that has carried nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A flush of its lane wrote (part of) a large frame this round.
    pub fn wrote_large(&mut self) {
        self.bulk_now = true;
    }

    /// A read of it this round completed `large_frames` large frames;
    /// `in_large`: it is inside one now. Returns whether that is bulk
    /// (then [`Traffic::place`] is due at the end of the round).
    pub fn read(&mut self, large_frames: usize, in_large: bool) -> bool {
        let bulk = large_frames > 0 || in_large;
        self.bulk_now |= bulk;
        bulk
    }

    /// The round ended at `now`: where should the connection be served?
    /// `threaded`: it is on a poller of its own thread now. `held`: it may
    /// not move now (it is draining, or waits for its predecessor to
    /// drain); the round's bulk is then forgotten.
    pub fn place(&mut self, now: Micros, threaded: bool, held: bool) -> Place {
        let bulk = std::mem::take(&mut self.bulk_now);
        if held {
            return Place::Stay;
        }
        if bulk {
            self.bulk_at = now;
        }
        if !threaded {
            if bulk {
                Place::Bulk
            } else {
                Place::Stay
            }
        } else if now.saturating_sub(self.bulk_at) > QUIET {
            Place::Home
        } else {
            Place::Stay
        }
    }

    /// It moved to another poller, whose clock reads `now`; `threaded`: a
    /// poller of its own thread, where the quiet period starts now.
    pub fn moved(&mut self, now: Micros, threaded: bool) {
        self.bulk_at = if threaded { now } else { 0 };
    }
}

/// What serving a connection in its turn did ([`ServiceOrder::round`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// It used this much of the budget and has no more to give now: it
    /// leaves the order until it is ready again.
    Drained(usize),
    /// It used this much and may have more: back of the line.
    More(usize),
    /// It is gone (or was never there): it leaves the order.
    Gone,
}

/// The order in which a poller serves its ready connections: round robin
/// with bounded work each (see the module's "Fairness").
///
/// The caller tells it when a connection becomes ready ([`Self::ready`],
/// once per change from not ready to ready) and serves a round with
/// [`Self::round`].
#[derive(Debug, Clone)]
pub struct ServiceOrder<K> {
    ready: VecDeque<K>,
}

impl<K> Default for ServiceOrder<K> {
    fn default() -> Self {
        ServiceOrder {
            ready: VecDeque::new(),
        }
    }
}

impl<K: Copy> ServiceOrder<K> {
    /// No connection ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// `k` became ready: it is served after those already waiting.
    pub fn ready(&mut self, k: K) {
        self.ready.push_back(k);
    }

    /// `k` is gone (or moved to another poller): it leaves the order.
    pub fn remove(&mut self, k: K)
    where
        K: PartialEq,
    {
        self.ready.retain(|x| *x != k);
    }

    /// Connections waiting for their turn.
    pub fn len(&self) -> usize {
        self.ready.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// Serve one round of at most `budget`: each connection in turn, from
    /// the front, gets `min(per, what is left)` (`serve(k, allowance)`);
    /// each is served at most once per round, and each counts at least 1
    /// against the budget (so a round ends). Returns the budget used.
    pub fn round(
        &mut self,
        budget: usize,
        per: usize,
        mut serve: impl FnMut(K, usize) -> Served,
    ) -> usize {
        let mut left = budget;
        // Each connection waiting now, once: one served with more to give
        // goes to the back (behind those the budget does not reach, which
        // keep the front).
        for _ in 0..self.ready.len() {
            if left == 0 {
                break;
            }
            let Some(k) = self.ready.pop_front() else {
                break;
            };
            match serve(k, per.min(left)) {
                Served::Drained(used) => left = left.saturating_sub(used.max(1)),
                Served::More(used) => {
                    left = left.saturating_sub(used.max(1));
                    self.ready.push_back(k);
                }
                Served::Gone => {}
            }
        }
        budget - left
    }
}

/// What one poller round moved, over all its connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Bytes read.
    pub read: usize,
    /// Bytes written by flushes.
    pub written: usize,
    /// Small frames read.
    pub small_frames: usize,
    /// Large frames read.
    pub large_frames: usize,
    /// Some connection is inside a large frame.
    pub in_large: bool,
}

/// Whether a poller keeps polling after its rounds: for `linger` after
/// its last light work, or for `busy` while the machine's CPUs are
/// contended ([`Pressure`]): there, every empty look takes a CPU that
/// another thread waits for (the other node's schedulers, the process
/// that will send the next frame), and polling for long costs more than
/// the wake-up it saves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linger {
    /// How long to keep polling after the last light work.
    linger: Micros,
    /// The same while the CPUs are contended (at most `linger`).
    busy: Micros,
    /// When the last round of light work ended (0: not since bulk).
    last_work: Micros,
    /// Rounds in a row that lingered and moved nothing.
    empty: u32,
}

impl Linger {
    /// Linger `linger` after light work, and `busy` (at most `linger`)
    /// while the CPUs are contended.
    pub fn new(linger: Micros, busy: Micros) -> Self {
        Linger {
            linger,
            busy: busy.min(linger),
            last_work: 0,
            empty: 0,
        }
    }

    /// A round that moved `r` ended at `now`; `contended`: the CPUs are
    /// contended now ([`Pressure::contended`]). Whether to linger.
    pub fn round(&mut self, now: Micros, r: &Round, contended: bool) -> bool {
        let bulk = r.read + r.written > LINGER_MAX_BYTES || r.large_frames > 0 || r.in_large;
        if bulk {
            self.last_work = 0;
        } else if r.small_frames > 0 || r.written > 0 {
            self.last_work = now;
        }
        let limit = if contended { self.busy } else { self.linger };
        let linger = now.saturating_sub(self.last_work) < limit;
        if linger && r.read == 0 && r.written == 0 {
            self.empty = self.empty.wrapping_add(1);
        } else {
            self.empty = 0;
        }
        linger
    }

    /// Whether the poller, lingering after its last round, should yield
    /// its thread to the OS (`sched_yield`) before it looks again: every
    /// [`EMPTY_LOOKS_PER_YIELD`]-th empty round in a row. A round that
    /// moved anything, or that did not linger, starts the count again.
    pub fn give_way(&self) -> bool {
        self.empty > 0 && self.empty.is_multiple_of(EMPTY_LOOKS_PER_YIELD)
    }
}

/// How often, at most, [`Pressure`] is sampled.
pub const PRESSURE_PERIOD: Micros = 10_000;
/// The time over which [`Pressure`] averages: a sample over this long or
/// longer replaces the average.
pub const PRESSURE_WINDOW: Micros = 300_000;
/// The share of time (per mille) in which some thread waited for a CPU,
/// on average, above which the CPUs count as contended...
pub const CONTENDED_ABOVE: u64 = 250;
/// ...and below which they count as free again.
pub const FREE_BELOW: u64 = 150;

/// Whether the machine's CPUs are contended: whether, lately, threads
/// that were ready to run often waited for a CPU. Fed samples of the
/// kernel's count of the microseconds during which at least one thread
/// waited for a CPU (Linux's pressure stall information: the `some` line
/// of `/proc/pressure/cpu`, `total=`; see the kernel's
/// `Documentation/accounting/psi.rst`), with the time.
///
/// Measured on this project's 2-core machine (`bench/RESULTS.md`,
/// 2026-12-08 "a linger that adapts"): with 16 pairs of processes making
/// 100-byte round trips between two nodes, some thread waited 23-100 % of
/// each second (mostly over 30 %); with one pair mostly 2-16 % (a few
/// seconds 22-37 %, most as the nodes start), and single 10 ms samples
/// reach 30-50 % there too. So the average is taken over [`PRESSURE_WINDOW`]; it
/// must rise above [`CONTENDED_ABOVE`] to count as contended and fall
/// below [`FREE_BELOW`] to count as free, so that a short burst does not
/// flip it back and forth (with these, one pair's runs counted as
/// contended 4-9 % of the time, the nodes' start mostly, and 16 pairs'
/// 81-94 %).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pressure {
    /// The last sample: when, and the count then.
    last: Option<(Micros, u64)>,
    /// The average share of time with a thread waiting, per million
    /// (finer than the thresholds, so that rounding down at each sample
    /// does not keep the average below a steady share).
    share: u64,
    contended: bool,
}

impl Pressure {
    /// No sample yet: not contended.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a sample is due at `now` (one per [`PRESSURE_PERIOD`]).
    pub fn due(&self, now: Micros) -> bool {
        self.last
            .is_none_or(|(at, _)| now.saturating_sub(at) >= PRESSURE_PERIOD)
    }

    /// A sample: at `now` the kernel's count of stalled time was
    /// `stalled` (microseconds, never decreasing). Returns
    /// [`Pressure::contended`].
    pub fn sample(&mut self, now: Micros, stalled: u64) -> bool {
        if let Some((at, before)) = self.last {
            let dt = now.saturating_sub(at);
            if dt == 0 {
                return self.contended;
            }
            let share =
                (stalled.saturating_sub(before).saturating_mul(1_000_000) / dt).min(1_000_000);
            let w = dt.min(PRESSURE_WINDOW);
            self.share = (self.share * (PRESSURE_WINDOW - w) + share * w).div_ceil(PRESSURE_WINDOW);
            if self.share > CONTENDED_ABOVE * 1000 {
                self.contended = true;
            } else if self.share < FREE_BELOW * 1000 {
                self.contended = false;
            }
        }
        self.last = Some((now, stalled));
        self.contended
    }

    /// Whether the CPUs count as contended, as of the last sample.
    pub fn contended(&self) -> bool {
        self.contended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Micros = 1_000_000;

    #[test]
    fn a_bulk_connection_moves_to_a_thread_and_back_once_quiet() {
        let mut t = Traffic::new();
        // Small frames, however many: stays home.
        assert!(!t.read(0, false));
        assert_eq!(t.place(SEC, false, false), Place::Stay);
        // A large frame read, inside one, one written: bulk.
        for f in [
            |t: &mut Traffic| assert!(t.read(1, false)),
            |t: &mut Traffic| assert!(t.read(0, true)),
            |t: &mut Traffic| t.wrote_large(),
        ] {
            let mut t = Traffic::new();
            f(&mut t);
            assert_eq!(t.place(SEC, false, false), Place::Bulk);
            // The bulk of a round counts once.
            assert_eq!(t.place(SEC, false, false), Place::Stay);
        }
        // On a thread: stays while bulk goes on, home after QUIET without.
        t.wrote_large();
        assert_eq!(t.place(SEC, false, false), Place::Bulk);
        t.moved(5 * SEC, true);
        assert_eq!(t.place(5 * SEC + QUIET, true, false), Place::Stay);
        t.read(1, false);
        assert_eq!(t.place(5 * SEC + QUIET, true, false), Place::Stay);
        assert_eq!(t.place(5 * SEC + 2 * QUIET, true, false), Place::Stay);
        assert_eq!(t.place(5 * SEC + 2 * QUIET + 1, true, false), Place::Home);
        t.moved(7, false);
        assert_eq!(t.place(8, false, false), Place::Stay);
    }

    #[test]
    fn a_held_connection_stays_and_forgets_the_rounds_bulk() {
        let mut t = Traffic::new();
        t.read(3, false);
        assert_eq!(t.place(SEC, false, true), Place::Stay);
        assert_eq!(t.place(SEC, false, false), Place::Stay);
        t.moved(SEC, true);
        assert_eq!(t.place(10 * SEC, true, true), Place::Stay);
        assert_eq!(t.place(10 * SEC, true, false), Place::Home);
    }

    #[test]
    fn a_lingering_poller_gives_way_after_empty_looks_in_a_row() {
        let mut l = Linger::new(50, 50);
        let light = Round {
            read: 100,
            small_frames: 2,
            ..Round::default()
        };
        assert!(l.round(0, &light, false));
        assert!(!l.give_way(), "a round that moved something");
        let mut looks = Vec::new();
        for t in 1..=9 {
            assert!(l.round(t, &Round::default(), false));
            looks.push(l.give_way());
        }
        let every_fourth: Vec<bool> = (1..=9u32).map(|n| n % EMPTY_LOOKS_PER_YIELD == 0).collect();
        assert_eq!(looks, every_fourth);
        // Work starts the count again.
        assert!(l.round(10, &light, false));
        for t in 11..11 + EMPTY_LOOKS_PER_YIELD as Micros - 1 {
            assert!(l.round(t, &Round::default(), false));
            assert!(!l.give_way());
        }
        // A round that does not linger (idle) does not give way: the
        // poller is about to wait anyway.
        assert!(!l.round(1_000, &Round::default(), false));
        assert!(!l.give_way());
    }

    #[test]
    fn a_poller_lingers_after_light_work_only() {
        let mut l = Linger::new(50, 50);
        let light = Round {
            read: 100,
            small_frames: 2,
            ..Round::default()
        };
        assert!(!l.round(SEC, &Round::default(), false), "no work yet");
        assert!(l.round(SEC, &light, false));
        assert!(l.round(SEC + 49, &Round::default(), false));
        assert!(!l.round(SEC + 50, &Round::default(), false));
        // Writing counts as work too.
        let wrote = Round {
            written: 10,
            ..Round::default()
        };
        assert!(l.round(2 * SEC, &wrote, false));
        // Bulk ends lingering at once.
        for bulk in [
            Round {
                read: LINGER_MAX_BYTES,
                written: 1,
                ..Round::default()
            },
            Round {
                large_frames: 1,
                ..light
            },
            Round {
                in_large: true,
                ..light
            },
        ] {
            assert!(l.round(3 * SEC, &light, false));
            assert!(!l.round(3 * SEC + 1, &bulk, false));
        }
    }

    #[test]
    fn a_poller_lingers_less_while_the_cpus_are_contended() {
        let mut l = Linger::new(100, 30);
        let light = Round {
            read: 100,
            small_frames: 2,
            ..Round::default()
        };
        assert!(l.round(SEC, &light, false));
        assert!(l.round(SEC + 99, &Round::default(), false));
        assert!(!l.round(SEC + 100, &Round::default(), false));
        assert!(l.round(2 * SEC, &light, true));
        assert!(l.round(2 * SEC + 29, &Round::default(), true));
        assert!(!l.round(2 * SEC + 30, &Round::default(), true));
        // Free again: the whole linger counts from the last work.
        assert!(l.round(2 * SEC + 31, &Round::default(), false));
        // A busy linger longer than the linger is the linger.
        let mut l = Linger::new(10, 50);
        assert!(l.round(SEC, &light, true));
        assert!(!l.round(SEC + 10, &Round::default(), true));
    }

    /// Samples every `PRESSURE_PERIOD` from `now` for `for_us`, the count
    /// of stalled time growing `per_mille` of the time.
    fn feed(p: &mut Pressure, now: &mut Micros, stalled: &mut u64, per_mille: u64, for_us: Micros) {
        let end = *now + for_us;
        while *now < end {
            *now += PRESSURE_PERIOD;
            *stalled += PRESSURE_PERIOD * per_mille / 1000;
            assert!(p.due(*now));
            p.sample(*now, *stalled);
            assert!(!p.due(*now + PRESSURE_PERIOD - 1));
        }
    }

    #[test]
    fn cpu_pressure_has_hysteresis_and_ignores_short_bursts() {
        let mut p = Pressure::new();
        assert!(p.due(0) && !p.contended());
        let (mut now, mut stalled) = (SEC, 1_000_000_000);
        assert!(!p.sample(now, stalled), "a first sample is only a start");
        // One pair on this machine: 3-9 % stalled.
        feed(&mut p, &mut now, &mut stalled, 90, SEC);
        assert!(!p.contended());
        // A burst of one period, whole: not enough.
        feed(&mut p, &mut now, &mut stalled, 1000, PRESSURE_PERIOD);
        assert!(!p.contended());
        // 16 pairs: 16-87 %; contended within a window.
        feed(&mut p, &mut now, &mut stalled, 400, PRESSURE_WINDOW);
        assert!(p.contended());
        // Between the thresholds it stays as it was, either way.
        feed(&mut p, &mut now, &mut stalled, 200, SEC);
        assert!(p.contended());
        feed(&mut p, &mut now, &mut stalled, 0, SEC);
        assert!(!p.contended());
        feed(&mut p, &mut now, &mut stalled, 200, SEC);
        assert!(!p.contended());
        // A long gap (an idle poller samples nothing): its sample is the
        // average; a count that went backwards (never, but) counts as 0.
        now += 10 * SEC;
        stalled += 5 * SEC;
        assert!(p.sample(now, stalled));
        assert!(!p.sample(now + SEC, 0));
        // The same instant again changes nothing.
        assert!(!p.sample(now + SEC, u64::MAX));
    }

    #[test]
    fn a_steady_share_just_above_the_threshold_counts_whatever_the_sampling() {
        for period in [PRESSURE_PERIOD, 2 * PRESSURE_PERIOD, 5 * PRESSURE_PERIOD] {
            for (per_mille, contended) in
                [(CONTENDED_ABOVE + 1, true), (CONTENDED_ABOVE - 1, false)]
            {
                let mut p = Pressure::new();
                let (mut now, mut stalled) = (0, 0);
                p.sample(now, stalled);
                for _ in 0..(60 * SEC / period) {
                    now += period;
                    stalled += period * per_mille / 1000;
                    p.sample(now, stalled);
                }
                assert_eq!(
                    p.contended(),
                    contended,
                    "{per_mille} per mille every {period} us"
                );
            }
        }
    }

    #[test]
    fn service_order_serves_in_turn_and_keeps_the_unreached_first() {
        let mut o = ServiceOrder::new();
        for k in 0..6u32 {
            o.ready(k);
        }
        let mut seen = Vec::new();
        // Each uses its whole allowance of 10 and has more; 30 per round.
        for _ in 0..4 {
            let mut this = Vec::new();
            let used = o.round(30, 10, |k, a| {
                this.push(k);
                Served::More(a)
            });
            assert_eq!(used, 30);
            seen.push(this);
        }
        assert_eq!(
            seen,
            [vec![0, 1, 2], vec![3, 4, 5], vec![0, 1, 2], vec![3, 4, 5]]
        );
        // A drained connection leaves; a gone one too; a newly ready one
        // joins at the back.
        let used = o.round(100, 10, |k, _| match k {
            0 => Served::Drained(4),
            1 => Served::Gone,
            _ => Served::More(10),
        });
        assert_eq!(used, 4 + 4 * 10);
        o.ready(9);
        o.ready(7);
        o.remove(7);
        let mut order = Vec::new();
        o.round(1000, 10, |k, _| {
            order.push(k);
            Served::Drained(0)
        });
        assert_eq!(order, [2, 3, 4, 5, 9]);
        assert!(o.is_empty());
    }

    proptest::proptest! {
        /// With `n` connections always ready, nobody waits more than
        /// `ceil(n * per / budget)` rounds, or behind more than
        /// `(n - 1) * per` bytes of others, whatever each one uses.
        #[test]
        fn service_order_is_round_robin_with_bounded_waits(
            n in 1usize..40,
            per in 1usize..64,
            budget_mul in 1usize..8,
            uses in proptest::collection::vec(0usize..=64, 200),
        ) {
            let budget = per * budget_mul;
            let mut o = ServiceOrder::new();
            for k in 0..n {
                o.ready(k);
            }
            let mut waited_rounds = vec![0usize; n];
            let mut waited_bytes = vec![0usize; n];
            let mut i = 0;
            for _ in 0..50 {
                let mut served = vec![false; n];
                let mut used_by = Vec::new();
                o.round(budget, per, |k, allowance| {
                    let u = uses[i % uses.len()].min(allowance);
                    i += 1;
                    served[k] = true;
                    used_by.push((k, u.max(1)));
                    Served::More(u)
                });
                let round_bytes: usize = used_by.iter().map(|(_, u)| u).sum();
                for k in 0..n {
                    if served[k] {
                        waited_rounds[k] = 0;
                        waited_bytes[k] = 0;
                    } else {
                        waited_rounds[k] += 1;
                        waited_bytes[k] += round_bytes;
                    }
                    proptest::prop_assert!(waited_rounds[k] <= (n * per).div_ceil(budget));
                    proptest::prop_assert!(waited_bytes[k] <= (n - 1) * per);
                }
            }
        }
    }
}
