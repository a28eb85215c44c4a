//! Membership: who the members are, and what membership messages to send.
//!
//! A [`Membership`] decides which nodes this node keeps connections to
//! ([`Effect::Keep`], [`Effect::Drop`]) and talks to its counterparts on
//! other nodes with messages it encodes and decodes itself
//! ([`Effect::Send`], [`Membership::on_message`]): the control channel
//! carries them as opaque payloads ([`crate::wire::Control::Membership`]), so
//! the core knows nothing of their format. The rest of the core (the peer
//! table: dialing, backoff, collision settlement, lanes, node up and down
//! events; the failure detector) maintains connections to whatever set the
//! membership wants, and tells it when peers come up or go down.
//!
//! [`full_mesh::FullMesh`] is the first implementation: every member
//! connects to every other, and the view (members and tombstones) spreads
//! by anti-entropy gossip (Demers et al., "Epidemic Algorithms for
//! Replicated Database Maintenance", 1987). Others fit as one new file each:
//! - a static list keeps the configured nodes and sends nothing
//!   ([`static_list::StaticList`], the whole overlay in one file);
//! - client-server keeps only the servers on a client, everyone on a server;
//! - HyParView (Leitão, Pereira, Rodrigues, "HyParView: a membership
//!   protocol for reliable gossip-based broadcast", DSN 2007) keeps its
//!   active view with [`Effect::Keep`] / [`Effect::Drop`], holds its
//!   passive view to itself, and runs JOIN, FORWARDJOIN, NEIGHBOR and
//!   SHUFFLE as its own messages; [`Membership::on_peer_down`] is its
//!   failure signal to promote a passive node;
//! - Partisan's peer service managers (Meiklejohn et al., "Partisan",
//!   USENIX ATC 2019) map the same way: a manager's membership state and
//!   its protocol messages live behind this trait, the connections in the
//!   peer table;
//! - a bridge to a membership written in Erlang would forward the calls as
//!   messages and turn the answers into effects.
//!
//! Every method takes a [`Cx`]: the time, this node's description, a
//! read-only look at the peer table, a seeded random generator, and the
//! effects to push. Nothing here owns a socket, a thread or a clock.

pub mod callback;
pub mod client_server;
pub mod full_mesh;
pub mod static_list;

use crate::peers::PeerTable;
use crate::rng::Rng;
use crate::spec::NodeSpec;
use crate::types::{DownReason, Level, Millis};
use crate::wire::Refusal;

/// What a membership asks of the rest of the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Keep connections to this node: add it to the peer table, or update
    /// what is known of it (its real description once authenticated, a new
    /// incarnation in place of the old one, new addresses).
    Keep(NodeSpec),
    /// [`Effect::Keep`] for a node learned from another member's gossip,
    /// which has most likely told that node of this one at the same time:
    /// if its name is smaller than this node's, it is first dialed one
    /// `reconnect_min_backoff` from now, so that the pair makes one
    /// handshake rather than two and a collision (see [`crate::peers`]).
    Learned(NodeSpec),
    /// Keep connections to this contact a user asked to join through, and
    /// dial it now if it is known and not up.
    Contact(NodeSpec),
    /// Stop keeping connections to this node.
    Drop {
        /// The node.
        name: String,
        /// Why (reported with its `nodedown` if it was up).
        reason: DownReason,
    },
    /// Send this membership message to that peer (on its control lane).
    Send {
        /// The destination.
        to: String,
        /// The message, in the membership's own encoding.
        payload: Vec<u8>,
    },
    /// This node leaves: drop every peer and start a new incarnation.
    Leave,
    /// This contact (by name), which a user asked to join, has confirmed
    /// this node's current incarnation as a member (see the join check of
    /// [`full_mesh`]).
    Joined(String),
    /// A message from this peer could not be read: the peer is broken or
    /// hostile, and its control connection is closed (it reconnects), as a
    /// malformed control frame closes it.
    Malformed {
        /// The peer.
        from: String,
        /// What was wrong, for the log.
        reason: String,
    },
    /// Tell the membership's outside half (a protocol written in Erlang,
    /// see [`callback`]) what happened.
    Notify(Notice),
    /// A log line.
    Log {
        /// Severity.
        level: Level,
        /// The peer it is about, if any.
        peer: Option<String>,
        /// The line.
        text: String,
    },
}

pub use crate::action::Notice;

/// What a membership sees and does in one call.
pub struct Cx<'a> {
    /// The time of the call.
    pub now: Millis,
    /// This node (its incarnation changes when it leaves).
    pub local: &'a NodeSpec,
    /// The peer table, as it stands before this call's effects.
    pub peers: &'a PeerTable,
    /// Seeded randomness (gossip targets and the like).
    pub rng: &'a mut Rng,
    /// The effects, carried out in order after the call.
    pub out: &'a mut Vec<Effect>,
}

impl Cx<'_> {
    /// Push an effect.
    pub fn push(&mut self, e: Effect) {
        self.out.push(e);
    }

    /// `from` sent a message that cannot be read (see
    /// [`Effect::Malformed`]).
    pub fn malformed(&mut self, from: &str, reason: impl ToString) {
        self.out.push(Effect::Malformed {
            from: from.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Push a log line.
    pub fn log(&mut self, level: Level, peer: Option<&str>, text: String) {
        self.out.push(Effect::Log {
            level,
            peer: peer.map(str::to_string),
            text,
        });
    }
}

/// Who the members are and what membership messages to send.
pub trait Membership: std::fmt::Debug + Send {
    /// A user asked to join the cluster `contact` belongs to (its
    /// incarnation may be 0: not known yet).
    fn join(&mut self, cx: &mut Cx<'_>, contact: NodeSpec);

    /// A user asked this node to leave the cluster.
    fn leave(&mut self, cx: &mut Cx<'_>);

    /// A user asked to remove `name` from the cluster.
    fn remove(&mut self, cx: &mut Cx<'_>, name: &str);

    /// A handshake with `spec` authenticated it (`inbound`: it dialed us;
    /// else we dialed it). `Ok` admits it (push [`Effect::Keep`] for it if
    /// it is not kept yet); `Err` refuses the connection with that reason.
    fn admit(&mut self, cx: &mut Cx<'_>, spec: &NodeSpec, inbound: bool) -> Result<(), Refusal>;

    /// A dial of `peer` was refused with `refusal` (`control`: on its
    /// control lane; `reason`: the failure as the driver described it).
    /// Returns `true` if the membership took it as final (it dropped the
    /// peer, or left): the core then stops there.
    fn on_dial_refused(
        &mut self,
        cx: &mut Cx<'_>,
        peer: &str,
        refusal: &Refusal,
        control: bool,
        reason: &str,
    ) -> bool;

    /// `peer`'s control lane came up.
    fn on_peer_up(&mut self, cx: &mut Cx<'_>, peer: &str);

    /// `peer` went down (it was up and failed, or could not be reached).
    fn on_peer_down(&mut self, cx: &mut Cx<'_>, peer: &str);

    /// A membership message from `from`, on its current control connection.
    /// The payload is untrusted bytes: decode with a bound.
    fn on_message(&mut self, cx: &mut Cx<'_>, from: &str, payload: &[u8]);

    /// Time passed: `cx.now` reached (or passed) [`Membership::next_deadline`].
    fn on_timeout(&mut self, cx: &mut Cx<'_>);

    /// When [`Membership::on_timeout`] is next needed. Early is allowed;
    /// late is not.
    fn next_deadline(&self) -> Option<Millis>;

    /// The overlay's name, and the byte that starts each of its messages
    /// on the wire (the node adds and checks it, so that a node of another
    /// overlay is told apart from a broken one): `full_mesh` 1, `static` 2,
    /// `client_server` 3, `callback` 4.
    fn overlay(&self) -> (&'static str, u8);

    /// `name` runs another overlay: stop keeping connections to it. The
    /// default drops it from the peer table; memberships that keep their
    /// own list of members drop it from there too.
    fn forget(&mut self, cx: &mut Cx<'_>, name: &str) {
        cx.push(Effect::Drop {
            name: name.to_string(),
            reason: DownReason::other_overlay(),
        });
    }

    /// Tombstones held (for `info`); 0 for memberships without them.
    fn tombstone_count(&self) -> usize {
        0
    }

    /// A decision taken outside the core (a membership written in Erlang,
    /// [`callback::Callback`]): keep connections to exactly `members` (as
    /// far as this node's own choice goes), and send `messages`. Other
    /// memberships ignore it.
    fn on_decision(
        &mut self,
        _cx: &mut Cx<'_>,
        _members: Vec<NodeSpec>,
        _messages: Vec<(String, Vec<u8>)>,
    ) {
    }
}
