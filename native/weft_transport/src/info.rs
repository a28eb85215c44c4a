//! A snapshot of the transport for `weft:info()`.

use crate::Shared;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use weft_core::{LaneKey, Node, PeerStatus, Slot};

/// Connection state of a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneState {
    Connected,
    Connecting,
    Down,
}

/// One lane.
#[derive(Debug, Clone)]
pub struct LaneInfo {
    pub key: LaneKey,
    pub state: LaneState,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub queued_frames: u64,
    pub queued_bytes: u64,
    pub sent_frames: u64,
    pub sent_bytes: u64,
    pub recv_frames: u64,
    pub recv_bytes: u64,
    /// Whether a poller on a thread of its own serves the lane now (else a
    /// poller driven by the schedulers).
    pub on_thread: bool,
}

/// One member.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub name: String,
    pub epoch: u64,
    pub status: PeerStatus,
    pub lanes: Vec<LaneInfo>,
}

/// The whole transport.
#[derive(Debug, Clone)]
pub struct Info {
    pub node: String,
    pub epoch: u64,
    pub listen_addrs: Vec<SocketAddr>,
    pub dropped_not_member: u64,
    pub dropped_unknown_channel: u64,
    pub dropped_too_large: u64,
    pub dropped_no_destination: u64,
    pub peers: Vec<PeerInfo>,
}

pub(crate) fn snapshot(core: &Node, shared: &Shared) -> Info {
    let d = &shared.routes.dropped;
    let mut peers = Vec::new();
    for pv in core.peers() {
        let route = shared.routes.get(&pv.spec.name);
        let lanes = pv
            .lanes
            .iter()
            .map(|(key, slot)| {
                let lane = route.as_ref().and_then(|r| r.lane(key));
                let sock = lane.map(|l| l.socket()).unwrap_or_default();
                let stat = |f: fn(&crate::lane::LaneStats) -> &std::sync::atomic::AtomicU64| {
                    lane.map(|l| f(&l.stats).load(Relaxed)).unwrap_or(0)
                };
                LaneInfo {
                    key: (*key).clone(),
                    state: match slot {
                        Slot::Connected { .. } => LaneState::Connected,
                        Slot::Dialing { .. } => LaneState::Connecting,
                        Slot::Idle { .. } => LaneState::Down,
                    },
                    local: sock.local,
                    remote: sock.remote,
                    queued_frames: stat(|s| &s.queued_frames),
                    queued_bytes: stat(|s| &s.queued_bytes),
                    sent_frames: stat(|s| &s.sent_frames),
                    sent_bytes: stat(|s| &s.sent_bytes),
                    recv_frames: stat(|s| &s.recv_frames),
                    recv_bytes: stat(|s| &s.recv_bytes),
                    on_thread: lane.is_some_and(|l| l.poller().is_threaded()),
                }
            })
            .collect();
        peers.push(PeerInfo {
            name: pv.spec.name.clone(),
            epoch: pv.spec.epoch,
            status: pv.status,
            lanes,
        });
    }
    Info {
        node: core.local().name.clone(),
        epoch: core.local().epoch,
        listen_addrs: core.local().addrs.clone(),
        dropped_not_member: d.not_member.load(Relaxed),
        dropped_unknown_channel: d.unknown_channel.load(Relaxed),
        dropped_too_large: d.too_large.load(Relaxed),
        dropped_no_destination: d.no_destination.load(Relaxed),
        peers,
    }
}
