//! The send path: from (node, channel, hash) to a lane queue, without going
//! through the driver. The driver keeps the table current; senders only read
//! it.

use crate::body::Body;
use crate::lane::{Lane, Sender};
use crate::pollers::PollerSet;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use weft_core::lane::{pick, Choice};
use weft_core::{FrameKind, LaneKey};

/// The lanes to one peer.
pub struct PeerRoute {
    pub control: Arc<Lane>,
    /// Channel name -> its lanes, in index order.
    pub channels: HashMap<String, Vec<Arc<Lane>>>,
}

impl PeerRoute {
    /// Every lane, control first.
    pub fn lanes(&self) -> impl Iterator<Item = &Arc<Lane>> {
        std::iter::once(&self.control).chain(self.channels.values().flatten())
    }

    /// The lane for `key`, if planned.
    pub fn lane(&self, key: &LaneKey) -> Option<&Arc<Lane>> {
        if key.is_control() {
            return Some(&self.control);
        }
        self.channels.get(&key.channel)?.get(key.index as usize)
    }
}

/// Messages dropped at send or receive, by cause.
#[derive(Debug, Default)]
pub struct Dropped {
    pub not_member: AtomicU64,
    pub unknown_channel: AtomicU64,
    pub too_large: AtomicU64,
    pub no_destination: AtomicU64,
}

/// Why a send was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("unknown channel {0}")]
    UnknownChannel(String),
    #[error("message of {size} bytes exceeds max_frame_size {max}")]
    TooLarge { size: u64, max: u64 },
}

/// The routing table.
pub struct Routes {
    peers: RwLock<HashMap<String, Arc<PeerRoute>>>,
    pollers: Arc<PollerSet>,
    runtime: tokio::runtime::Handle,
    channels: Vec<String>,
    affinity: bool,
    max_frame: u64,
    round_robin: AtomicU64,
    pub dropped: Dropped,
}

impl Routes {
    pub fn new(
        channels: Vec<String>,
        affinity: bool,
        max_frame: u64,
        pollers: Arc<PollerSet>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Routes {
            peers: RwLock::new(HashMap::new()),
            pollers,
            runtime,
            channels,
            affinity,
            max_frame,
            round_robin: AtomicU64::new(0),
            dropped: Dropped::default(),
        }
    }

    /// Queue an application message. `Ok` also when the peer is unknown or
    /// does not have the channel: the message is dropped and counted, as
    /// `!` drops a message to an unreachable node.
    pub fn send(
        &self,
        peer: &str,
        channel: &str,
        choice: Choice,
        body: Body,
        sender: Option<Sender>,
    ) -> Result<(), SendError> {
        if !self.channels.iter().any(|c| c == channel) {
            self.dropped.unknown_channel.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::UnknownChannel(channel.to_string()));
        }
        let size = body.len() as u64;
        if size > self.max_frame {
            self.dropped.too_large.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::TooLarge {
                size,
                max: self.max_frame,
            });
        }
        let route = self.peers.read().get(peer).cloned();
        let Some(route) = route else {
            self.dropped.not_member.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let Some(lanes) = route.channels.get(channel) else {
            // The peer does not have this channel.
            self.dropped.unknown_channel.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let rr = if self.affinity {
            0
        } else {
            self.round_robin.fetch_add(1, Ordering::Relaxed)
        };
        let i = pick(lanes.len() as u16, self.affinity, choice, rr) as usize;
        lanes[i].push_from(FrameKind::Data, body, sender);
        Ok(())
    }

    /// Queue a control frame for `peer`; dropped if it has no route.
    pub fn send_control(&self, peer: &str, body: Vec<u8>) {
        if let Some(r) = self.peers.read().get(peer) {
            r.control.push(FrameKind::Control, body.into());
        }
    }

    /// The route to `peer`.
    pub fn get(&self, peer: &str) -> Option<Arc<PeerRoute>> {
        self.peers.read().get(peer).cloned()
    }

    /// Make the route to `peer` follow `plan`, keeping lanes that stay.
    pub fn route(&self, peer: &str, plan: &[(String, u16)]) {
        let old = self.get(peer);
        let keep = |key: LaneKey| {
            old.as_ref()
                .and_then(|r| r.lane(&key).cloned())
                .unwrap_or_else(|| {
                    let poller = self.pollers.home(peer, &key);
                    Lane::new(key, poller, self.runtime.clone())
                })
        };
        let control = keep(LaneKey::control());
        let mut channels = HashMap::new();
        for (channel, n) in plan.iter().filter(|(c, _)| c != weft_core::CONTROL_CHANNEL) {
            let lanes = (0..*n)
                .map(|index| {
                    keep(LaneKey {
                        channel: channel.clone(),
                        index,
                    })
                })
                .collect();
            channels.insert(channel.clone(), lanes);
        }
        let new = Arc::new(PeerRoute { control, channels });
        if let Some(old) = old {
            for lane in old.lanes() {
                if !new.lanes().any(|l| Arc::ptr_eq(l, lane)) {
                    lane.stop();
                }
            }
        }
        self.peers.write().insert(peer.to_string(), new);
    }

    /// Remove the route to `peer`: its lanes drain and stop.
    pub fn unroute(&self, peer: &str) {
        if let Some(old) = self.peers.write().remove(peer) {
            for lane in old.lanes() {
                lane.stop();
            }
        }
    }

    /// Remove every route.
    pub fn clear(&self) {
        let all: Vec<_> = self.peers.write().drain().collect();
        for (_, r) in all {
            for lane in r.lanes() {
                lane.stop();
            }
        }
    }

    /// All routes, for `info`.
    pub fn all(&self) -> Vec<(String, Arc<PeerRoute>)> {
        self.peers
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
