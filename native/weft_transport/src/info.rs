//! A snapshot of the transport for `weft:info()`.

use crate::lane_writer::SmallMessages;
use crate::Shared;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use weft_core::{LaneKey, Node, PeerStatus, Slot};

/// Connection state of a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneState {
    /// It has a connection.
    Connected,
    /// It is being dialed.
    Connecting,
    /// Neither.
    Down,
}

/// One lane.
#[derive(Debug, Clone)]
pub struct LaneInfo {
    /// Which lane.
    pub key: LaneKey,
    /// Its connection state.
    pub state: LaneState,
    /// The local end of its connection.
    pub local: Option<SocketAddr>,
    /// The remote end of its connection.
    pub remote: Option<SocketAddr>,
    /// Frames queued now.
    pub queued_frames: u64,
    /// Their body bytes.
    pub queued_bytes: u64,
    /// Frames written.
    pub sent_frames: u64,
    /// Their body bytes.
    pub sent_bytes: u64,
    /// Frames read.
    pub recv_frames: u64,
    /// Their body bytes.
    pub recv_bytes: u64,
    /// Waits for a fence that stopped the lane's reads (see
    /// [`weft_core::share`]).
    pub recv_waits: u64,
    /// Frames dropped from this lane's queue (any reason).
    pub dropped_frames: u64,
    /// Whether a poller on a thread of its own serves the lane now (else a
    /// poller driven by the schedulers).
    pub on_thread: bool,
    /// What the handshake of its connection agreed on, while connected.
    pub negotiated: Option<weft_core::Negotiated>,
    /// Whether this is its channel's shared lane (see [`weft_core::share`]).
    pub shared_lane: bool,
    /// Where the lane's small messages go now.
    pub small_messages: SmallMessages,
}

/// One member.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its node name.
    pub name: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// Up, connecting or down.
    pub status: PeerStatus,
    /// Bytes queued for this peer.
    pub queued_bytes: u64,
    /// Messages waiting for its plan (its channels, right after `join`).
    pub waiting: u64,
    /// The largest message body it accepts, once known.
    pub max_frame: Option<u64>,
    /// Its lanes.
    pub lanes: Vec<LaneInfo>,
}

/// The whole transport.
#[derive(Debug, Clone)]
pub struct Info {
    /// This node's name.
    pub node: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// The addresses it advertises.
    pub listen_addrs: Vec<SocketAddr>,
    /// Messages accepted and then lost, by reason (see [`crate::counters`]).
    pub dropped: Vec<(&'static str, u64)>,
    /// Sends that returned an error, by error.
    pub refused: Vec<(&'static str, u64)>,
    /// Incoming connections refused, by reason.
    pub refused_connections: Vec<(&'static str, u64)>,
    /// Bytes queued in all send queues, and the bounds.
    pub queued_bytes: u64,
    /// The bound of one peer's queues.
    pub send_queue_limit: u64,
    /// The bound of all queues.
    pub send_queue_total_limit: u64,
    /// Sends that waited for room (`overload => wait`).
    pub waited: u64,
    /// Messages parked for room now (see [`crate::routes::Routes::park`]).
    pub parked: u64,
    /// Large frames being received now (partly read).
    pub receiving_frames: u64,
    /// Bytes their headers claimed and got allocated whole (see
    /// [`crate::frame_reader::Claims`]), and the bound of that.
    pub receiving_claimed: u64,
    /// The bound of `receiving_claimed`.
    pub receiving_claim_limit: u64,
    /// Nodes remembered as removed.
    pub tombstones: u64,
    /// Messages relayed (client-server overlay).
    pub relayed: u64,
    /// The membership overlay (`full_mesh`, `static`, `client_server`).
    pub overlay: &'static str,
    /// Whether the machine's CPUs count as contended, so that pollers
    /// linger less (see [`crate::pressure`]); `None` when not read.
    pub cpu_contended: Option<bool>,
    /// Every member.
    pub peers: Vec<PeerInfo>,
}

pub(crate) fn snapshot(core: &Node, shared: &Shared) -> Info {
    let mut peers = Vec::new();
    for pv in core.peers() {
        let route = shared.routes.get(&pv.spec.name);
        let lanes = pv
            .lanes
            .iter()
            .map(|(key, slot)| {
                let lane = route.as_ref().and_then(|r| r.lane(key));
                let shared_lane = route
                    .as_ref()
                    .and_then(|r| r.shared.get(&key.channel))
                    .is_some_and(|s| s.key == **key);
                let sock = lane.map(|l| l.socket()).unwrap_or_default();
                let queued = lane.map(|l| l.queued()).unwrap_or_default();
                let stat =
                    |f: fn(&crate::lane_writer::LaneStats) -> &std::sync::atomic::AtomicU64| {
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
                    // (with what a lane holds back behind a fence)
                    queued_frames: queued.frames,
                    queued_bytes: queued.bytes,
                    sent_frames: stat(|s| &s.sent_frames),
                    sent_bytes: stat(|s| &s.sent_bytes),
                    recv_frames: stat(|s| &s.recv_frames),
                    recv_bytes: stat(|s| &s.recv_bytes),
                    recv_waits: stat(|s| &s.recv_waits),
                    dropped_frames: stat(|s| &s.dropped_frames),
                    on_thread: lane.is_some_and(|l| l.poller().is_threaded()),
                    negotiated: sock.negotiated,
                    shared_lane,
                    small_messages: if shared_lane {
                        // (the shared lane carries them if its connection
                        // agreed on `share`)
                        if lane.is_some_and(|l| l.shares()) {
                            SmallMessages::SharedLane
                        } else {
                            SmallMessages::Own
                        }
                    } else {
                        lane.map_or(SmallMessages::Own, |l| l.small_messages())
                    },
                }
            })
            .collect();
        peers.push(PeerInfo {
            name: pv.spec.name.clone(),
            incarnation: pv.spec.incarnation,
            status: pv.status,
            queued_bytes: route.as_ref().map(|r| r.budget.queued()).unwrap_or(0),
            waiting: route.as_ref().map(|r| r.waiting() as u64).unwrap_or(0),
            max_frame: route.as_ref().and_then(|r| r.max_frame),
            lanes,
        });
    }
    let c = &shared.routes.counters;
    let d = &c.dropped;
    let r = &c.refused;
    let limits = shared.routes.limits();
    Info {
        node: core.local().name.clone(),
        incarnation: core.local().incarnation,
        listen_addrs: core.local().addrs.clone(),
        dropped: d.by_reason(),
        refused: vec![
            ("unknown_channel", r.unknown_channel.load(Relaxed)),
            ("too_large", r.too_large.load(Relaxed)),
            ("overloaded", r.overloaded.load(Relaxed)),
        ],
        refused_connections: shared.refusals.counts(),
        relayed: c.relayed.load(Relaxed),
        overlay: shared.config.overlay.name(),
        cpu_contended: shared.pollers.cpu_contended(),
        queued_bytes: shared.routes.queued(),
        waited: c.waited.load(Relaxed),
        parked: shared.routes.parked() as u64,
        send_queue_limit: limits.peer_queue,
        send_queue_total_limit: limits.total_queue,
        receiving_frames: shared.claims.in_progress(),
        receiving_claimed: shared.claims.claimed(),
        receiving_claim_limit: shared.claims.limit(),
        tombstones: core.tombstone_count() as u64,
        peers,
    }
}
