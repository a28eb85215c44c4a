//! One peer as the peer service sees it: its status, and the slot of each
//! lane (idle, dialing, connected), with the rule that settles two
//! connections for the same lane.

use crate::lane::LaneKey;
use crate::node::ConnId;
use crate::spec::NodeSpec;

/// Reachability of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerStatus {
    /// Member, never reached in this incarnation yet.
    Connecting,
    Up,
    /// Member, unreachable; redialed with backoff.
    Down,
}

/// State of one lane to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Not connected; dial at `retry_at` if this side dials the lane.
    Idle {
        retry_at: u64,
    },
    Dialing {
        attempt: u64,
    },
    Connected {
        conn: ConnId,
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
    pub fn idle(key: LaneKey, now: u64, backoff: u64) -> Self {
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
    /// When the control lane last brought anything from this peer.
    pub last_heard: u64,
    /// When the status last changed.
    pub since: u64,
    /// Failed dials of the control lane since it was last up.
    pub failures: u32,
}

/// A read-only view of one peer, for `info`.
#[derive(Debug, Clone)]
pub struct PeerView<'a> {
    pub spec: &'a NodeSpec,
    pub status: PeerStatus,
    pub lanes: Vec<(&'a LaneKey, Slot)>,
}

/// What to do with a new connection for a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// The lane is free (or only our own dial is pending): take it.
    Take,
    /// Take it, and close the connection the lane had.
    Replace(ConnId),
    /// Keep what the lane has; refuse the new one as a duplicate.
    Refuse,
}

/// The collision rule. `dialed_by_me` tells who dialed the new connection;
/// `me_preferred` is true when this node's name is the smaller one, whose
/// dials win. Both nodes apply it to the same pair of connections and reach
/// the same verdict without another message.
pub(crate) fn settle(slot: Slot, dialed_by_me: bool, me_preferred: bool) -> Settle {
    match slot {
        Slot::Idle { .. } => Settle::Take,
        // Our own dial is pending: an incoming one wins only if the other
        // side is the preferred dialer.
        Slot::Dialing { .. } if !dialed_by_me && me_preferred => Settle::Refuse,
        Slot::Dialing { .. } => Settle::Take,
        Slot::Connected {
            conn,
            dialed_by_me: old_mine,
        } => {
            // Same direction: the dialer redialed, so it holds the old
            // connection for dead. Opposite directions: the connection
            // dialed by the smaller name wins.
            if old_mine == dialed_by_me || dialed_by_me == me_preferred {
                Settle::Replace(conn)
            } else {
                Settle::Refuse
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Slot = Slot::Idle { retry_at: 0 };
    const DIALING: Slot = Slot::Dialing { attempt: 1 };

    fn connected(mine: bool) -> Slot {
        Slot::Connected {
            conn: 7,
            dialed_by_me: mine,
        }
    }

    #[test]
    fn a_free_lane_takes_any_connection() {
        for mine in [true, false] {
            for preferred in [true, false] {
                assert_eq!(settle(IDLE, mine, preferred), Settle::Take);
            }
        }
    }

    #[test]
    fn crossing_dials_keep_the_smaller_names_dial_on_both_sides() {
        // a < b, both dialing. At a (preferred), b's incoming is refused;
        // at b, a's incoming is taken.
        assert_eq!(settle(DIALING, false, true), Settle::Refuse);
        assert_eq!(settle(DIALING, false, false), Settle::Take);
        // b's dial may still complete at b before a's hello lands there:
        // then b holds its own, and a's incoming replaces it.
        assert_eq!(settle(connected(true), false, false), Settle::Replace(7));
        // a holding a's own connection refuses b's.
        assert_eq!(settle(connected(true), false, true), Settle::Refuse);
    }

    #[test]
    fn a_redial_in_the_same_direction_replaces_the_old_connection() {
        for preferred in [true, false] {
            assert_eq!(
                settle(connected(false), false, preferred),
                Settle::Replace(7)
            );
            assert_eq!(settle(connected(true), true, preferred), Settle::Replace(7));
        }
    }

    #[test]
    fn our_completed_dial_against_theirs() {
        // We dialed and they accepted; the lane already holds theirs.
        assert_eq!(settle(connected(false), true, true), Settle::Replace(7));
        assert_eq!(settle(connected(false), true, false), Settle::Refuse);
    }
}
