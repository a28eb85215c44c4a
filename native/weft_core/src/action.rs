//! What the core asks its driver to do. The driver (tokio in the NIF, the
//! simulator in tests) drains these with [`crate::node::Node::poll_action`]
//! and carries them out in order.
//!
//! Peers are named by [`Name`]s (held in place when short, as most node
//! names are): a node sends a heartbeat to every peer every second, and
//! naming each destination must not cost an allocation. A `Name` derefs to
//! `&str`.

use crate::lane::LaneKey;
use crate::spec::NodeSpec;
use crate::types::{ConnId, DownReason, Level, Name};
use crate::wire::{Control, Refusal};
use std::net::SocketAddr;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a connection for `lane` to `peer`, trying `addrs` in order, run
    /// the handshake, then report [`crate::Node::on_dialed`] or
    /// [`crate::Node::on_dial_failed`] with the same `attempt`.
    Dial {
        /// The node dialed.
        peer: Name,
        /// Its addresses, in order of preference.
        addrs: Vec<SocketAddr>,
        /// The lane the connection is for.
        lane: LaneKey,
        /// Identifies this dial in the reports.
        attempt: u64,
    },
    /// Close a connection now; frames still queued for it are not sent.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why, for the log.
        reason: String,
        /// Closed for a malformed message from its (authenticated) peer:
        /// counted as `malformed`, as a malformed data frame is.
        malformed: bool,
    },
    /// Send a control message to `peer` on its control lane.
    Send {
        /// The destination.
        peer: Name,
        /// The message.
        msg: Control,
    },
    /// Create (or update to) the send queues of `peer`'s lanes, so that
    /// messages to it queue until its lanes connect. `lanes` is the plan:
    /// `(channel, lane count)`, control channel first; `None` while the
    /// peer's channels are not known yet (messages wait unplanned).
    /// `max_frame` is the largest frame body the peer accepts, if known.
    Route {
        /// The peer.
        peer: Name,
        /// Its lane plan, once known.
        lanes: Option<Vec<(String, u16)>>,
        /// Its frame limit, once known.
        max_frame: Option<u64>,
    },
    /// Drop `peer`'s send queues: frames already queued on connected lanes
    /// are written first, then the connections are shut down; frames on
    /// unconnected lanes are dropped (and counted).
    Unroute {
        /// The peer.
        peer: Name,
    },
    /// `peer` became reachable.
    PeerUp {
        /// The peer.
        peer: Name,
    },
    /// `peer` is no longer reachable (or left).
    PeerDown {
        /// The peer.
        peer: Name,
        /// Why.
        reason: DownReason,
    },
    /// A dial of `peer`'s control lane was refused (by either side), for
    /// whoever waits for it to come up.
    Refused {
        /// The peer.
        peer: Name,
        /// Who refused and why.
        refusal: Refusal,
    },
    /// A contact a user asked to join has confirmed this node's current
    /// incarnation as a member (the full mesh's join check, see
    /// [`crate::membership::full_mesh`]), for whoever waits for the join.
    Joined {
        /// The contact.
        peer: Name,
    },
    /// This node left the cluster or was removed from it: it has dropped
    /// every peer and is a new incarnation now, which no tombstone of the
    /// old one covers. Whoever waits for a join may make it again.
    ThisNodeLeft,
    /// Tell the outside half of the membership (a protocol written in
    /// Erlang) what happened; see [`crate::membership::callback`].
    Membership(Notice),
    /// Something worth a log line.
    Log {
        /// Severity.
        level: Level,
        /// The peer it is about, if any.
        peer: Option<Name>,
        /// The lane it is about, if any.
        lane: Option<LaneKey>,
        /// The line.
        text: String,
    },
}

/// What happened, for a membership decided outside the core
/// ([`crate::membership::callback::Callback`]): the driver hands these to it in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A user asked to join the cluster of this contact.
    Join(NodeSpec),
    /// A user asked this node to leave.
    Leave,
    /// A peer's control lane came up (its authenticated description).
    Up(NodeSpec),
    /// A peer went down.
    Down(String),
    /// A membership message from a peer (untrusted bytes).
    Message {
        /// The peer.
        from: String,
        /// The message, in the outside half's own encoding.
        payload: Vec<u8>,
    },
}

/// The queue of actions, with a helper for log lines.
#[derive(Debug, Default)]
pub struct Actions(std::collections::VecDeque<Action>);

impl Actions {
    /// Queue `a`.
    pub fn push(&mut self, a: Action) {
        self.0.push_back(a);
    }

    /// Queue a log line.
    pub fn log(&mut self, level: Level, peer: Option<&str>, lane: Option<&LaneKey>, text: String) {
        self.0.push_back(Action::Log {
            level,
            peer: peer.map(Name::new),
            lane: lane.cloned(),
            text,
        });
    }

    /// The oldest queued action.
    pub fn pop(&mut self) -> Option<Action> {
        self.0.pop_front()
    }
}
