//! The heartbeat timeout: a peer is down once nothing was heard from it for
//! longer than the timeout (every peer sends a heartbeat each heartbeat
//! interval, so a live peer is heard from at least that often).
//!
//! Each watched peer has exactly one live entry in a deadline queue, so the
//! next deadline is the top of the queue and a heartbeat costs one update
//! of a table indexed by the peer's number, whatever the number of peers.

use super::FailureDetector;
use crate::types::{Millis, PeerId};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Down after `timeout` ms of silence.
#[derive(Debug)]
pub struct HeartbeatTimeout {
    timeout: Millis,
    /// By peer number: (last heard, generation of its queue entry); a
    /// generation of 0 means not watched.
    last_heard: Vec<(Millis, u64)>,
    /// `(deadline, generation, peer)`; entries of an old generation are stale.
    queue: BinaryHeap<Reverse<(Millis, u64, PeerId)>>,
    generation: u64,
}

impl HeartbeatTimeout {
    /// A detector that declares a peer down once it is silent for longer
    /// than `timeout` ms.
    pub fn new(timeout: Millis) -> Self {
        HeartbeatTimeout {
            timeout,
            last_heard: Vec::new(),
            queue: BinaryHeap::new(),
            generation: 0,
        }
    }

    fn entry(&mut self, peer: PeerId) -> Option<&mut (Millis, u64)> {
        self.last_heard.get_mut(peer as usize).filter(|e| e.1 != 0)
    }
}

impl FailureDetector for HeartbeatTimeout {
    fn on_up(&mut self, now: Millis, peer: PeerId) {
        self.generation += 1;
        let g = self.generation;
        self.queue.push(Reverse((now + self.timeout + 1, g, peer)));
        let i = peer as usize;
        if self.last_heard.len() <= i {
            self.last_heard.resize(i + 1, (0, 0));
        }
        self.last_heard[i] = (now, g);
    }

    fn on_heard(&mut self, now: Millis, peer: PeerId) {
        if let Some((last, _)) = self.entry(peer) {
            *last = (*last).max(now);
        }
    }

    fn on_gone(&mut self, peer: PeerId) {
        if let Some(e) = self.entry(peer) {
            *e = (0, 0);
        }
    }

    fn poll_down(&mut self, now: Millis) -> Vec<PeerId> {
        let mut down = Vec::new();
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, g, peer))) = self.queue.pop() else {
                break;
            };
            let Some(&mut (last, live)) = self.entry(peer) else {
                continue;
            };
            if live != g {
                continue;
            }
            if now.saturating_sub(last) > self.timeout {
                self.last_heard[peer as usize] = (0, 0);
                down.push(peer);
            } else {
                self.queue.push(Reverse((last + self.timeout + 1, g, peer)));
            }
        }
        down
    }

    fn next_deadline(&self) -> Option<Millis> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_for_longer_than_the_timeout_is_down_once() {
        let mut d = HeartbeatTimeout::new(500);
        let (a, b) = (0, 1);
        d.on_up(0, a);
        d.on_up(0, b);
        assert_eq!(d.next_deadline(), Some(501));
        d.on_heard(300, a);
        assert!(d.poll_down(500).is_empty());
        assert_eq!(d.poll_down(501), vec![b]);
        assert_eq!(d.next_deadline(), Some(801));
        assert!(d.poll_down(800).is_empty());
        assert_eq!(d.poll_down(801), vec![a]);
        assert!(d.poll_down(10_000).is_empty());
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn a_peer_gone_and_up_again_is_watched_once() {
        let mut d = HeartbeatTimeout::new(100);
        let a = 3;
        d.on_up(0, a);
        d.on_gone(a);
        d.on_up(50, a);
        assert!(d.poll_down(101).is_empty());
        assert_eq!(d.poll_down(151), vec![a]);
        assert!(d.poll_down(1000).is_empty());
    }
}
