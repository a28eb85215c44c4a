//! The collision rule: when both nodes dial the same lane, or a dialer
//! redials a lane it holds for dead, which connection the lane keeps. Both
//! sides apply it to the same pair of connections and reach the same
//! verdict without another message (the connection dialed by the node with
//! the smaller name wins).

use super::peer::Slot;
use crate::types::ConnId;

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
