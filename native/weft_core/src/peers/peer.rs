//! One peer as the peer table sees it: its status and the slot of each lane
//! (idle, dialing, connected).

use crate::lane::LaneKey;
use crate::spec::NodeSpec;
use crate::types::{ConnId, Millis};

/// Reachability of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerStatus {
    /// Member, never reached in this incarnation yet.
    Connecting,
    /// Its control lane is connected and it is heard from.
    Up,
    /// Member, unreachable; redialed with backoff.
    Down,
}

/// State of one lane to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Not connected; dial at `retry_at` if this side dials the lane.
    Idle {
        /// When the next dial may start.
        retry_at: Millis,
    },
    /// A dial is under way.
    Dialing {
        /// The attempt number the driver reports back.
        attempt: u64,
    },
    /// A connection carries the lane.
    Connected {
        /// The connection.
        conn: ConnId,
        /// Whether this node dialed it (the collision rule needs it).
        dialed_by_me: bool,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct LaneState {
    pub key: LaneKey,
    pub slot: Slot,
    /// Wait before the next redial; doubles on failure, up to the maximum.
    pub backoff: u64,
}

impl LaneState {
    /// A lane to dial at `now`.
    pub fn idle(key: LaneKey, now: Millis, backoff: u64) -> Self {
        LaneState {
            key,
            slot: Slot::Idle { retry_at: now },
            backoff,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub spec: NodeSpec,
    pub status: PeerStatus,
    pub lanes: Vec<LaneState>,
    /// When the status last changed.
    pub since: Millis,
    /// Failed dials of the control lane since it was last up.
    pub failures: u32,
}

/// A read-only view of one peer, for `info`.
#[derive(Debug, Clone)]
pub struct PeerView<'a> {
    /// What it said about itself (or what a user typed, before it answered).
    pub spec: &'a NodeSpec,
    /// Its reachability.
    pub status: PeerStatus,
    /// Every lane of the plan and its slot.
    pub lanes: Vec<(&'a LaneKey, Slot)>,
}
