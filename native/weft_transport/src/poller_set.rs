//! The pollers of a transport, and which of them serves a lane.
//!
//! Lanes are spread over the pollers of a kind by a hash of the peer and the
//! lane key, so that the connections of one peer do not all land on one
//! poller. In [`IoMode::Auto`] a lane starts on a driven poller
//! ([`PollerSet::home`]) and moves to a threaded one while it carries bulk
//! data ([`PollerSet::bulk`]).

use crate::poller::{IoMode, Poller};
use crate::pressure::CpuPressure;
use std::sync::Arc;
use std::time::Duration;
use weft_core::LaneKey;

/// The pollers of a transport, by kind.
pub struct PollerSet {
    pub mode: IoMode,
    /// Driven by the embedding program (Schedulers, Auto).
    pub driven: Vec<Arc<Poller>>,
    /// On threads of their own (Threads, Auto).
    pub threaded: Vec<Arc<Poller>>,
    /// What tells them the CPUs are contended, if their linger adapts.
    pressure: Option<Arc<CpuPressure>>,
}

impl PollerSet {
    /// `count` pollers of each kind that `mode` uses, lingering `linger`
    /// after light work, or `busy` while the CPUs are contended (one
    /// [`CpuPressure`] for all, if `busy` is shorter).
    pub(crate) fn new(
        mode: IoMode,
        count: usize,
        linger: Duration,
        busy: Duration,
    ) -> std::io::Result<PollerSet> {
        let count = count.max(1);
        let pressure = (busy < linger).then(|| Arc::new(CpuPressure::new()));
        let make = |from: usize, threaded: bool| {
            (from..from + count)
                .map(|i| Poller::new(i, threaded, linger, busy, pressure.clone()))
                .collect::<std::io::Result<Vec<_>>>()
        };
        let driven = match mode {
            IoMode::Threads => Vec::new(),
            _ => make(0, false)?,
        };
        let threaded = match mode {
            IoMode::Schedulers => Vec::new(),
            _ => make(driven.len(), true)?,
        };
        Ok(PollerSet {
            mode,
            driven,
            threaded,
            pressure,
        })
    }

    /// Whether the CPUs count as contended now (as last sampled); `None`
    /// if the linger does not adapt or the machine does not say.
    pub fn cpu_contended(&self) -> Option<bool> {
        let p = self.pressure.as_ref().filter(|p| p.available())?;
        Some(p.contended(std::time::Instant::now()))
    }

    /// Every poller looks at the connections it set aside (a fence came,
    /// or a connection others follow ended: see [`crate::poller`]).
    pub(crate) fn resume_reads(&self) {
        for p in self.all() {
            p.resume_reads();
        }
    }

    /// Every poller.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Poller>> {
        self.driven.iter().chain(self.threaded.iter())
    }

    /// Where the lane `key` to `peer` starts.
    pub fn home(&self, peer: &str, key: &LaneKey) -> Arc<Poller> {
        if self.driven.is_empty() {
            pick(&self.threaded, peer, key)
        } else {
            pick(&self.driven, peer, key)
        }
    }

    /// Where it goes while it carries bulk data.
    pub fn bulk(&self, peer: &str, key: &LaneKey) -> Arc<Poller> {
        if self.threaded.is_empty() {
            self.home(peer, key)
        } else {
            pick(&self.threaded, peer, key)
        }
    }
}

/// Which of `pollers` serves the lane `key` to `peer`: the lanes of one
/// channel to one peer go to consecutive pollers from one that a hash of
/// the peer and the channel picks, so that they spread evenly. (A hash of
/// each lane split the 16 bulk lanes of a channel over two threaded
/// pollers unevenly, differently on each start of a node: one poller
/// thread took as little as two thirds of the other's CPU time in the
/// 512 KB echo with 128 clients. No change of throughput was seen in that
/// cell, which the latency proxy's CPU bounds; `bench/RESULTS.md`,
/// 2026-12-07 05:46-06:50.)
fn pick(pollers: &[Arc<Poller>], peer: &str, key: &LaneKey) -> Arc<Poller> {
    pollers[spread(pollers.len(), peer, key)].clone()
}

/// The index of the poller of `n` that serves the lane `key` to `peer`.
fn spread(n: usize, peer: &str, key: &LaneKey) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    peer.hash(&mut h);
    key.channel.hash(&mut h);
    let n = n as u64;
    ((h.finish() % n + u64::from(key.index)) % n) as usize
}

#[cfg(test)]
mod tests {
    use super::spread;
    use weft_core::LaneKey;

    /// The lanes of a channel to a peer are spread evenly over the
    /// pollers, whatever the peer's name: at most one lane more on one
    /// poller than on another.
    #[test]
    fn a_channels_lanes_spread_evenly_over_the_pollers() {
        for pollers in [1, 2, 3, 4, 7] {
            for peer in (0..200).map(|i| format!("bench_b{i}@host")) {
                for lanes in [1u16, 2, 16, 17, 100] {
                    let mut on = vec![0; pollers];
                    for index in 0..lanes {
                        let key = LaneKey {
                            channel: "vnode".into(),
                            index,
                        };
                        on[spread(pollers, &peer, &key)] += 1;
                    }
                    let (min, max) = (on.iter().min().unwrap(), on.iter().max().unwrap());
                    assert!(
                        max - min <= 1,
                        "{peer}, {lanes} lanes over {pollers}: {on:?}"
                    );
                }
            }
        }
    }
}
