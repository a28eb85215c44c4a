//! One peer as the peer table sees it: its status and the slot of each lane
//! (idle, dialing, connected).

use crate::frame::Capabilities;
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
    /// Whether this is its channel's shared lane (see [`crate::share`]).
    pub shared: bool,
}

impl LaneState {
    /// A lane to dial at `now`.
    pub fn idle(key: LaneKey, now: Millis, backoff: u64) -> Self {
        LaneState {
            key,
            slot: Slot::Idle { retry_at: now },
            backoff,
            shared: false,
        }
    }
}

/// The lanes of one peer, in the order of the plan: the control lane
/// (first in every plan) held in place, so that what every control message
/// and every heartbeat reads is in the peer's own record, and found without
/// comparing lane names; then the data lanes.
#[derive(Debug, Clone)]
pub(crate) struct Lanes {
    control: LaneState,
    data: Vec<LaneState>,
}

impl Lanes {
    /// The lanes of a plan (whose first lane is the control lane).
    pub fn new(plan: Vec<LaneState>) -> Lanes {
        let mut lanes = plan.into_iter();
        let control = lanes.next().expect("every plan has the control lane");
        debug_assert!(control.key.is_control());
        Lanes {
            control,
            data: lanes.collect(),
        }
    }

    /// The control lane.
    pub fn control(&self) -> &LaneState {
        &self.control
    }

    /// The control lane.
    pub fn control_mut(&mut self) -> &mut LaneState {
        &mut self.control
    }

    /// The data lanes.
    pub fn data_mut(&mut self) -> std::slice::IterMut<'_, LaneState> {
        self.data.iter_mut()
    }

    /// Every lane, in the plan's order.
    pub fn iter(&self) -> impl Iterator<Item = &LaneState> {
        std::iter::once(&self.control).chain(self.data.iter())
    }

    /// Every lane, in the plan's order, and whether it is the control lane.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (bool, &mut LaneState)> {
        std::iter::once((true, &mut self.control)).chain(self.data.iter_mut().map(|l| (false, l)))
    }

    /// The lane `key`.
    pub fn find(&self, key: &LaneKey) -> Option<&LaneState> {
        if key.is_control() {
            Some(&self.control)
        } else {
            self.data.iter().find(|l| l.key == *key)
        }
    }

    /// The lane `key`.
    pub fn find_mut(&mut self, key: &LaneKey) -> Option<&mut LaneState> {
        if key.is_control() {
            Some(&mut self.control)
        } else {
            self.data.iter_mut().find(|l| l.key == *key)
        }
    }

    /// Drop the data lane `key` from the plan: no more dials.
    pub fn forget(&mut self, key: &LaneKey) {
        self.data.retain(|l| l.key != *key);
    }

    /// Add the data lanes of `plan` that are missing, and drop those not in
    /// it (a plan learnt once a typed-in contact described itself).
    pub fn replan(&mut self, plan: Vec<LaneState>) {
        let keep: Vec<LaneKey> = plan.iter().map(|l| l.key.clone()).collect();
        for l in plan {
            if !l.key.is_control() && !self.data.iter().any(|old| old.key == l.key) {
                self.data.push(l);
            }
        }
        self.data.retain(|l| keep.contains(&l.key));
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub spec: NodeSpec,
    pub status: PeerStatus,
    pub lanes: Lanes,
    /// When the status last changed.
    pub since: Millis,
    /// Failed dials of the control lane since it was last up.
    pub failures: u32,
    /// What the connection carrying the control lane agreed on (set when
    /// one is installed; read only while it is connected).
    pub control_caps: Capabilities,
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
