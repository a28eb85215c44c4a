//! The pollers of a transport, and which of them serves a lane.
//!
//! Lanes are spread over the pollers of a kind by a hash of the peer and the
//! lane key, so that the connections of one peer do not all land on one
//! poller. In [`IoMode::Auto`] a lane starts on a driven poller
//! ([`PollerSet::home`]) and moves to a threaded one while it carries bulk
//! data ([`PollerSet::bulk`]).

use crate::poller::{IoMode, Poller};
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
}

impl PollerSet {
    /// `count` pollers of each kind that `mode` uses.
    pub(crate) fn new(mode: IoMode, count: usize, linger: Duration) -> std::io::Result<PollerSet> {
        let count = count.max(1);
        let make = |from: usize, threaded: bool| {
            (from..from + count)
                .map(|i| Poller::new(i, threaded, linger))
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
        })
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

/// Which of `pollers` serves the lane `key` to `peer`: spread over all.
fn pick(pollers: &[Arc<Poller>], peer: &str, key: &LaneKey) -> Arc<Poller> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    peer.hash(&mut h);
    key.hash(&mut h);
    pollers[(h.finish() % pollers.len() as u64) as usize].clone()
}
