//! The peer service of one node as a pure state machine: the composition of
//! a [`Membership`] (who the members are), the [`PeerTable`] (connections to
//! them: lanes, dialing with backoff, collision settlement) and a
//! [`FailureDetector`] (when a silent peer is down), plus the heartbeats
//! that feed the detector.
//!
//! Nothing here touches a socket or a clock. The driver (tokio in the NIF, or
//! the simulator in tests) calls the `on_*` methods when something happens,
//! calls [`Node::on_timeout`] once the time it got from
//! [`Node::next_deadline`] has come (as quinn-proto's `poll_timeout` /
//! `handle_timeout`), and carries out the [`Action`]s it drains with
//! [`Node::poll_action`]. Time is an argument; randomness a seed.

use crate::action::{Action, Actions};
use crate::failure::heartbeat::HeartbeatTimeout;
use crate::failure::FailureDetector;
use crate::frame::Capabilities;
use crate::lane::LaneKey;
use crate::membership::full_mesh::FullMesh;
use crate::membership::{Cx, Effect, Membership};
use crate::peers::{PeerEvent, PeerStatus, PeerTable, PeerView};
use crate::rng::Rng;
use crate::spec::NodeSpec;
use crate::types::{ConnId, DownReason, Level, Millis, Name, Timing};
use crate::wire::{Control, Refusal};

/// The peer service of one node.
#[derive(Debug)]
pub struct Node {
    local: NodeSpec,
    timing: Timing,
    rng: Rng,
    peers: PeerTable,
    membership: Box<dyn Membership>,
    detector: Box<dyn FailureDetector>,
    actions: Actions,
    next_heartbeat: Millis,
}

impl Node {
    /// A node that knows only itself, with the full-mesh membership and the
    /// heartbeat-timeout failure detector. `local.incarnation` must be
    /// non-zero (the driver draws it at random); `seed` drives backoff
    /// jitter, gossip targets and the incarnations of later lives (after
    /// `leave`).
    pub fn new(local: NodeSpec, timing: Timing, seed: u64) -> Self {
        let membership = Box::new(FullMesh::new(&timing));
        Node::with_overlay(local, timing, seed, membership)
    }

    /// A node with the given membership and the heartbeat-timeout failure
    /// detector.
    pub fn with_overlay(
        local: NodeSpec,
        timing: Timing,
        seed: u64,
        membership: Box<dyn Membership>,
    ) -> Self {
        let detector = Box::new(HeartbeatTimeout::new(timing.heartbeat_timeout));
        Node::with_parts(local, timing, seed, membership, detector)
    }

    /// A node with the given membership and failure detector.
    pub fn with_parts(
        local: NodeSpec,
        timing: Timing,
        seed: u64,
        membership: Box<dyn Membership>,
        detector: Box<dyn FailureDetector>,
    ) -> Self {
        assert!(local.incarnation > 0, "a node's own incarnation is never 0");
        Node {
            local,
            peers: PeerTable::new(timing.reconnect_min_backoff, timing.reconnect_max_backoff),
            timing,
            rng: Rng::new(seed),
            membership,
            detector,
            actions: Actions::default(),
            next_heartbeat: 0,
        }
    }

    /// Use a full mesh of at most `n` members (other than this node): past
    /// that, joins are refused, handshakes of unknown nodes are refused as
    /// unavailable and gossiped newcomers are skipped (and logged).
    pub fn with_max_members(mut self, n: usize) -> Self {
        self.membership = Box::new(FullMesh::new(&self.timing).with_max_members(n));
        self
    }

    /// This node's spec (its incarnation changes on `leave`).
    pub fn local(&self) -> &NodeSpec {
        &self.local
    }

    /// The next action to carry out, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop()
    }

    /// Peers that are up, by name.
    pub fn up_peers(&self) -> Vec<String> {
        self.peers.up_peers()
    }

    /// `peer`'s status, if it is a member.
    pub fn status(&self, peer: &str) -> Option<PeerStatus> {
        self.peers.status(peer)
    }

    /// How many peers are up.
    pub fn up_count(&self) -> usize {
        self.peers.up_count()
    }

    /// Every member (any status), for `info`.
    pub fn peers(&self) -> impl Iterator<Item = PeerView<'_>> {
        self.peers.views()
    }

    /// Tombstones held now, for `info` and tests.
    pub fn tombstone_count(&self) -> usize {
        self.membership.tombstone_count()
    }

    /// The connection currently carrying `lane` to `peer`.
    pub fn lane_conn(&self, peer: &str, lane: &LaneKey) -> Option<ConnId> {
        self.peers.lane_conn(peer, lane)
    }

    /// The connection currently carrying `peer`'s control lane.
    pub fn control_conn(&self, peer: &str) -> Option<ConnId> {
        self.peers.control_conn(peer)
    }

    /// When [`Node::on_timeout`] is next needed: a heartbeat, a failure
    /// detector or membership deadline, or a redial. Calling it earlier does
    /// no harm; later delays those.
    pub fn next_deadline(&self) -> Option<Millis> {
        [
            Some(self.next_heartbeat),
            self.detector.next_deadline(),
            self.membership.next_deadline(),
            self.peers.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---------------------------------------------------------------- API

    /// Join the cluster that `spec`'s node belongs to: make it a member and
    /// dial it. Its incarnation may be 0 (unknown); the handshake tells it.
    pub fn join(&mut self, now: Millis, spec: NodeSpec) {
        self.with_membership(now, |m, cx| m.join(cx, spec));
        self.dial_due(now);
    }

    /// A membership decided outside the core (written in Erlang) wants
    /// connections to `members` and sends `messages` (see
    /// [`crate::membership::callback`]).
    pub fn membership_decision(
        &mut self,
        now: Millis,
        members: Vec<NodeSpec>,
        messages: Vec<(String, Vec<u8>)>,
    ) {
        self.with_membership(now, |m, cx| m.on_decision(cx, members, messages));
        self.dial_due(now);
    }

    /// Leave the cluster: tell every peer, let queued frames drain, forget
    /// every peer, and start a new incarnation that may join again.
    pub fn leave(&mut self, now: Millis) {
        self.with_membership(now, |m, cx| m.leave(cx));
    }

    /// Remove `name` from the cluster (`leave(Node)`): it is tombstoned here,
    /// the tombstone goes to everyone including the node itself (which then
    /// leaves), and its lanes drain and close.
    pub fn remove(&mut self, now: Millis, name: &str) {
        self.with_membership(now, |m, cx| m.remove(cx, name));
    }

    // ---------------------------------------------------------- connections

    /// An authenticated hello arrived on connection `conn` for `lane`.
    /// `Ok` means: answer welcome and attach the connection to the lane.
    /// (As [`Node::on_hello_agreed`] for a connection that agreed on every
    /// capability of this build.)
    pub fn on_hello(
        &mut self,
        now: Millis,
        conn: ConnId,
        from: &NodeSpec,
        lane: &LaneKey,
    ) -> Result<(), Refusal> {
        self.connected(now, conn, from, lane, false, Capabilities::SUPPORTED)
    }

    /// [`Node::on_hello`] for a connection whose handshake agreed on `caps`
    /// (what the membership may ask of the peer on its control lane, see
    /// [`PeerTable::control_caps`]).
    pub fn on_hello_agreed(
        &mut self,
        now: Millis,
        conn: ConnId,
        from: &NodeSpec,
        lane: &LaneKey,
        caps: Capabilities,
    ) -> Result<(), Refusal> {
        self.connected(now, conn, from, lane, false, caps)
    }

    /// A dial for `lane` completed its handshake with the node described by
    /// `acceptor`. `Err` means: close it. Which attempt it was does not
    /// matter: a connection that got through is kept whenever the lane
    /// still wants one (collision rules apply as for incoming ones). (As
    /// [`Node::on_dialed_agreed`] for a connection that agreed on every
    /// capability of this build.)
    pub fn on_dialed(
        &mut self,
        now: Millis,
        conn: ConnId,
        acceptor: &NodeSpec,
        lane: &LaneKey,
    ) -> Result<(), Refusal> {
        self.connected(now, conn, acceptor, lane, true, Capabilities::SUPPORTED)
    }

    /// [`Node::on_dialed`] for a connection whose handshake agreed on
    /// `caps`.
    pub fn on_dialed_agreed(
        &mut self,
        now: Millis,
        conn: ConnId,
        acceptor: &NodeSpec,
        lane: &LaneKey,
        caps: Capabilities,
    ) -> Result<(), Refusal> {
        self.connected(now, conn, acceptor, lane, true, caps)
    }

    fn connected(
        &mut self,
        now: Millis,
        conn: ConnId,
        spec: &NodeSpec,
        lane: &LaneKey,
        dialed_by_me: bool,
        caps: Capabilities,
    ) -> Result<(), Refusal> {
        if lane.is_control() && lane.index != 0 {
            // (the control channel has one lane)
            return Err(Refusal::UnknownLane);
        }
        if !dialed_by_me && spec.name == self.local.name {
            // Not a passing state (as `unavailable` would say): the dialer
            // is configured with this node's name.
            return Err(Refusal::BadSpec(format!(
                "name {} is this node's",
                spec.name
            )));
        }
        let admitted = self.with_membership(now, |m, cx| m.admit(cx, spec, !dialed_by_me));
        admitted?;
        let up_before = self.peers.status(&spec.name);
        let r = self.peers.install(
            now,
            &self.local,
            conn,
            &spec.name,
            lane,
            dialed_by_me,
            caps,
            &mut self.actions,
        );
        if r.is_ok() && lane.is_control() && up_before == Some(PeerStatus::Up) {
            // A replacement control connection: heard from just now.
            if let Some(id) = self.peers.id(&spec.name) {
                self.detector.on_heard(now, id);
            }
        }
        self.settle_events(now);
        self.dial_due(now);
        r
    }

    /// Our dial `attempt` failed: no connection, a handshake error, or a
    /// refusal by either side (`refusal`).
    pub fn on_dial_failed(
        &mut self,
        now: Millis,
        peer: &str,
        lane: &LaneKey,
        attempt: u64,
        refusal: Option<Refusal>,
        reason: &str,
    ) {
        if !self.peers.is_dialing(peer, lane, attempt) {
            // A dial made before this node forgot the peer (it left, or was
            // removed, or the peer was dropped) or dialed the lane again:
            // what it met was said to what this node was then (perhaps an
            // incarnation that left), not to what it is now.
            return;
        }
        if let Some(r) = &refusal {
            let control = lane.is_control();
            let (done, effects) =
                self.call_membership(now, |m, cx| m.on_dial_refused(cx, peer, r, control, reason));
            if done {
                if control {
                    self.actions.push(Action::Refused {
                        peer: Name::new(peer),
                        refusal: r.clone(),
                    });
                }
                self.apply(now, effects);
                return;
            }
            self.apply(now, effects);
        }
        let jitter = self.rng.next_u64();
        self.peers.dial_failed(
            now,
            peer,
            lane,
            attempt,
            refusal,
            reason,
            jitter,
            &mut self.actions,
        );
        self.settle_events(now);
    }

    /// Connection `conn` closed (by either side, or on error).
    pub fn on_closed(&mut self, now: Millis, conn: ConnId, reason: &str) {
        if let Some(peer) = self.peers.closed(now, conn, reason, &mut self.actions) {
            self.peers.down(
                now,
                &peer,
                DownReason::ConnectionClosed(reason.to_string()),
                &mut self.actions,
            );
        }
        self.settle_events(now);
        self.dial_due(now);
    }

    /// A control message arrived from `from` on connection `conn`.
    pub fn on_control(&mut self, now: Millis, from: &str, conn: ConnId, msg: Control) {
        let current = self.peers.control_peer(from, conn);
        if let Some(id) = current {
            self.detector.on_heard(now, id);
        }
        match msg {
            Control::Heartbeat => {}
            // Membership messages count only from a peer's current control
            // connection. A connection we no longer track (the peer was
            // forgotten by a leave or a removal, or the lane was replaced)
            // may still carry frames sent before the other side heard of it;
            // taking those would pull the forgotten members back in.
            // Gossip is periodic, so a view dropped here comes again.
            Control::Membership(payload) if current.is_some() => {
                let (ours, tag) = self.membership.overlay();
                match payload.split_first() {
                    Some((t, body)) if *t == tag => {
                        self.with_membership(now, |m, cx| m.on_message(cx, from, body));
                    }
                    Some((t @ 1..=4, rest)) => {
                        // A node of another overlay: refused for good, not
                        // a broken peer to reconnect to. It is told which
                        // overlay runs here (a message of our tag alone)
                        // unless its message was that already: an overlay
                        // that sends nothing on its own (a callback
                        // protocol whose view does not hold it) would
                        // otherwise only see the connection close, and
                        // redial.
                        if !rest.is_empty() {
                            self.actions.push(Action::Send {
                                peer: Name::new(from),
                                msg: Control::Membership(vec![tag]),
                            });
                        }
                        let theirs = ["full_mesh", "static", "client_server", "callback"]
                            [usize::from(*t) - 1];
                        let why = format!("it runs {theirs}, this node {ours}");
                        self.actions.log(
                            Level::Warning,
                            Some(from),
                            None,
                            format!("not a member: {why} (every node of a cluster runs the same overlay)"),
                        );
                        self.actions.push(Action::Refused {
                            peer: Name::new(from),
                            refusal: Refusal::BadSpec(format!("overlay: {why}")),
                        });
                        self.with_membership(now, |m, cx| m.forget(cx, from));
                    }
                    _ => {
                        let reason = "no overlay tag".to_string();
                        let from = from.to_string();
                        self.apply(now, vec![Effect::Malformed { from, reason }]);
                    }
                }
            }
            Control::Membership(_) => {}
            // (only from its current control connection: an old one may
            // still carry the goodbye of a previous run)
            Control::Stopping if current.is_some() => {
                self.peers
                    .down(now, from, DownReason::Stopped, &mut self.actions);
                self.settle_events(now);
            }
            Control::Stopping => {}
            // (answered and taken by the transport, see `crate::share`)
            Control::Fence { .. } | Control::Wait { .. } | Control::Fenced { .. } => {}
        }
        self.dial_due(now);
    }

    /// This node is stopping (`weft:stop/0`): tell every peer that is up,
    /// on its control lane, before the lanes are written out and closed.
    /// The peers report this node down as `stopped`, not as a failure.
    pub fn stop(&mut self) {
        for name in self.peers.up_names() {
            self.actions.push(Action::Send {
                peer: Name::new(name),
                msg: Control::Stopping,
            });
        }
    }

    /// Time has come (see [`Node::next_deadline`]): heartbeats, failure
    /// detection, membership timers (gossip, forgetting long-down members,
    /// expired tombstones), redials.
    pub fn on_timeout(&mut self, now: Millis) {
        self.on_timeout_behind(now, None);
    }

    /// [`Node::on_timeout`] for a driver that has input it has not given
    /// to the node yet, the oldest of it received at `waiting_since` (`None`:
    /// none waits). Everything is done as at `now`, but a peer is declared
    /// down only for a silence before `waiting_since`: what waits may be
    /// its heartbeat, which came in time and must not count late because
    /// the driver was busy with something else (a slow message, a
    /// stalled callback). A peer whose deadline passed since is not
    /// decided: its deadline stays due, for the next call once the
    /// driver has taken some of its input. The allowance is at most one
    /// more `heartbeat_timeout`: a driver that stays behind longer (a
    /// flood that keeps its inbox full) declares a silent peer down at
    /// most twice `heartbeat_timeout` after its last heartbeat taken, not
    /// never (a review measured 15-20 s with no bound).
    pub fn on_timeout_behind(&mut self, now: Millis, waiting_since: Option<Millis>) {
        let floor = now.saturating_sub(self.timing.heartbeat_timeout);
        let heard_until = waiting_since.map_or(now, |t| t.clamp(floor, now));
        for id in self.detector.poll_down(heard_until) {
            let Some(name) = self.peers.name_of(id).map(Name::new) else {
                continue;
            };
            self.peers
                .down(now, &name, DownReason::HeartbeatTimeout, &mut self.actions);
        }
        self.settle_events(now);
        self.with_membership(now, |m, cx| m.on_timeout(cx));
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.timing.heartbeat_interval;
            for name in self.peers.up_names() {
                self.actions.push(Action::Send {
                    peer: Name::new(name),
                    msg: Control::Heartbeat,
                });
            }
        }
        self.dial_due(now);
    }

    // ------------------------------------------------------------ internals

    fn dial_due(&mut self, now: Millis) {
        self.peers.dial_due(now, &self.local, &mut self.actions);
    }

    /// Run one membership call, then carry out its effects.
    fn with_membership<R>(
        &mut self,
        now: Millis,
        f: impl FnOnce(&mut dyn Membership, &mut Cx<'_>) -> R,
    ) -> R {
        let (r, effects) = self.call_membership(now, f);
        self.apply(now, effects);
        r
    }

    /// Run one membership call; its effects are for the caller to apply.
    fn call_membership<R>(
        &mut self,
        now: Millis,
        f: impl FnOnce(&mut dyn Membership, &mut Cx<'_>) -> R,
    ) -> (R, Vec<Effect>) {
        let mut effects = Vec::new();
        let mut cx = Cx {
            now,
            local: &self.local,
            peers: &self.peers,
            rng: &mut self.rng,
            out: &mut effects,
        };
        let r = f(self.membership.as_mut(), &mut cx);
        (r, effects)
    }

    fn apply(&mut self, now: Millis, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Keep(spec) => {
                    self.peers
                        .keep(now, &self.local, spec, false, &mut self.actions)
                }
                Effect::Learned(spec) => {
                    self.peers
                        .keep(now, &self.local, spec, true, &mut self.actions)
                }
                Effect::Contact(spec) => {
                    self.peers
                        .contact(now, &self.local, spec, &mut self.actions)
                }
                Effect::Drop { name, reason } => {
                    self.peers.forget(&name, reason, &mut self.actions)
                }
                Effect::Send { to, payload }
                    if self.peers.spec(&to).is_some_and(|s| {
                        s.max_frame != 0 && payload.len() as u64 + 1 > s.max_frame
                    }) =>
                {
                    // Sent, the peer would close the connection (over its
                    // frame limit) and the two would flap: not sent.
                    self.actions.log(
                        Level::Warning,
                        Some(&to),
                        None,
                        format!(
                            "membership message of {} bytes not sent: over the peer's max_frame_size",
                            payload.len() + 1
                        ),
                    );
                }
                Effect::Send { to, payload } => {
                    let mut tagged = Vec::with_capacity(1 + payload.len());
                    tagged.push(self.membership.overlay().1);
                    tagged.extend_from_slice(&payload);
                    self.actions.push(Action::Send {
                        peer: Name::new(&to),
                        msg: Control::Membership(tagged),
                    })
                }
                Effect::Leave => {
                    self.peers
                        .forget_all(DownReason::ThisNodeLeft, &mut self.actions);
                    self.new_incarnation();
                    self.actions.push(Action::ThisNodeLeft);
                }
                Effect::Joined(peer) => self.actions.push(Action::Joined {
                    peer: Name::new(&peer),
                }),
                Effect::Notify(n) => self.actions.push(Action::Membership(n)),
                Effect::Log { level, peer, text } => {
                    self.actions.log(level, peer.as_deref(), None, text)
                }
                Effect::Malformed { from, reason } => {
                    self.actions.log(
                        Level::Warning,
                        Some(&from),
                        None,
                        format!("closing its control connection: bad membership message: {reason}"),
                    );
                    if let Some(conn) = self.peers.control_conn(&from) {
                        self.actions.push(Action::Close {
                            conn,
                            reason: format!("bad membership message: {reason}"),
                            malformed: true,
                        });
                    }
                }
            }
        }
        self.settle_events(now);
    }

    /// Tell the failure detector and the membership what the peer table
    /// changed, until nothing more changes.
    fn settle_events(&mut self, now: Millis) {
        loop {
            let events = self.peers.take_events();
            if events.is_empty() {
                return;
            }
            for ev in events {
                match ev {
                    PeerEvent::Up(id, name) => {
                        self.detector.on_up(now, id);
                        self.with_membership(now, |m, cx| m.on_peer_up(cx, &name));
                    }
                    PeerEvent::Down(id, name) => {
                        self.detector.on_gone(id);
                        self.with_membership(now, |m, cx| m.on_peer_down(cx, &name));
                    }
                    PeerEvent::Gone(id, _) => self.detector.on_gone(id),
                }
            }
        }
    }

    fn new_incarnation(&mut self) {
        let old = self.local.incarnation;
        let mut inc = 0;
        while inc == 0 || inc == old {
            inc = self.rng.next_u64();
        }
        self.local.incarnation = inc;
    }
}

/// Helpers of the core's unit tests that drive a [`Node`].
#[cfg(test)]
pub(crate) mod testing {
    use super::{Action, Node};
    use crate::spec::NodeSpec;

    /// A node description on 127.0.0.1:`port`, without channels.
    pub(crate) fn spec(name: &str, incarnation: u64, port: u16) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            incarnation,
            max_frame: 1 << 20,
            addrs: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
            channels: vec![],
        }
    }

    /// Every action the node has queued.
    pub(crate) fn drain(n: &mut Node) -> Vec<Action> {
        std::iter::from_fn(|| n.poll_action()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::full_mesh::{encode, Message, View};
    use crate::peers::Slot;
    use crate::spec::ChannelSpec;
    use crate::types::DownReason;
    use std::net::SocketAddr;

    fn gossip(view: View) -> Control {
        let mut m = vec![1];
        m.extend(encode(&Message::View { view, reply: false }));
        Control::Membership(m)
    }

    fn spec(name: &str, incarnation: u64, port: u16) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            incarnation,
            max_frame: 1 << 20,
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            channels: vec![ChannelSpec {
                name: "default".into(),
                parallelism: 1,
            }],
        }
    }

    fn drain(n: &mut Node) -> Vec<Action> {
        std::iter::from_fn(|| n.poll_action()).collect()
    }

    fn dial_attempt(actions: &[Action], lane: &LaneKey) -> u64 {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Dial {
                    lane: l, attempt, ..
                } if l == lane => Some(*attempt),
                _ => None,
            })
            .expect("a dial for the lane")
    }

    /// A member gossiped with a new incarnation in every view, never
    /// reached, is not dialed again at once each time: its redial
    /// schedule (with its backoff) carries over, so made-up members whose
    /// incarnations change cost at most one dial each per backoff.
    #[test]
    fn a_member_never_reached_is_not_redialed_for_each_new_incarnation() {
        let timing = Timing {
            reconnect_min_backoff: 100,
            reconnect_max_backoff: 5000,
            ..Timing::default()
        };
        let mut b = Node::new(spec("b@h", 7, 2), timing, 1);
        b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        drain(&mut b);
        let mut dials = Vec::new();
        for t in 10..1010 {
            let view = View {
                members: vec![spec("a@h", 5, 1), spec("b@h", 7, 2), spec("c@h", 3 + t, 3)],
                tombstones: vec![],
            };
            b.on_control(t, "a@h", 1, gossip(view));
            b.on_timeout(t);
            let n = drain(&mut b)
                .iter()
                .filter(|a| matches!(a, Action::Dial { peer, .. } if peer == "c@h"))
                .count();
            dials.extend(std::iter::repeat_n(t, n));
        }
        assert_eq!(dials.first(), Some(&10), "the first is dialed at once");
        // (and the queue of due dials holds a few entries, not one per view)
        assert!(b.peers.queued_dials() < 10, "{}", b.peers.queued_dials());
        // (backoff 100, 200, 400 ms...: a handful in a second, not 1,000)
        assert!(dials.len() <= 5, "{dials:?}");
        assert!(dials.windows(2).all(|w| w[1] - w[0] >= 100), "{dials:?}");
    }

    #[test]
    fn gossip_on_a_forgotten_connection_is_ignored() {
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
        b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        assert_eq!(b.up_peers(), ["a@h"]);
        b.leave(5);
        drain(&mut b);
        // a's gossip, sent before it heard of the leave, still arrives on
        // the old control connection.
        let view = View {
            members: vec![spec("a@h", 5, 1), spec("b@h", 7, 2), spec("c@h", 3, 3)],
            tombstones: vec![],
        };
        b.on_control(10, "a@h", 1, gossip(view));
        assert!(b.peers().next().is_none());
        assert!(!drain(&mut b)
            .iter()
            .any(|a| matches!(a, Action::Dial { .. } | Action::Route { .. })));
    }

    #[test]
    fn gossip_on_the_current_control_connection_is_merged() {
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
        b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        let view = View {
            members: vec![spec("a@h", 5, 1), spec("c@h", 3, 3)],
            tombstones: vec![],
        };
        b.on_control(10, "a@h", 1, gossip(view));
        let known: Vec<&str> = b.peers().map(|p| p.spec.name.as_str()).collect();
        assert_eq!(known, ["a@h", "c@h"]);
    }

    /// A hello for a control lane other than 0 (the control channel has
    /// one lane) is refused as an unknown lane, and one from a node that
    /// claims this node's own name as a bad description, a refusal for
    /// good (not `unavailable`, which a dialer waits out).
    #[test]
    fn hellos_for_other_control_lanes_or_this_nodes_name_are_refused() {
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
        for index in [1, 65535] {
            let lane = LaneKey {
                index,
                ..LaneKey::control()
            };
            assert_eq!(
                b.on_hello(0, 1, &spec("a@h", 5, 1), &lane),
                Err(Refusal::UnknownLane)
            );
        }
        assert!(matches!(
            b.on_hello(0, 2, &spec("b@h", 5, 1), &LaneKey::control()),
            Err(Refusal::BadSpec(_))
        ));
        assert!(b.peers().next().is_none());
        assert!(b
            .on_hello(0, 3, &spec("a@h", 5, 1), &LaneKey::control())
            .is_ok());
    }

    /// A stopping node says goodbye to every peer that is up; a peer that
    /// hears it reports the node down as `stopped`, at notice level (not
    /// as a failure), keeps it a member and redials it. A goodbye on a
    /// connection that is not the current one counts for nothing.
    #[test]
    fn a_node_that_says_it_stops_is_down_as_stopped_not_failed() {
        let mut a = Node::new(spec("a@h", 5, 1), Timing::default(), 1);
        a.on_hello(0, 1, &spec("b@h", 7, 2), &LaneKey::control())
            .unwrap();
        drain(&mut a);
        a.stop();
        let said = drain(&mut a);
        assert!(
            matches!(&said[..], [Action::Send { peer, msg: Control::Stopping }] if peer == "b@h"),
            "{said:?}"
        );

        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
        b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        drain(&mut b);
        b.on_control(10, "a@h", 2, Control::Stopping);
        assert_eq!(b.up_peers(), ["a@h"], "not its current connection");
        b.on_control(10, "a@h", 1, Control::Stopping);
        let actions = drain(&mut b);
        assert!(b.up_peers().is_empty());
        assert!(actions.iter().any(|a| matches!(a,
            Action::PeerDown { peer, reason: DownReason::Stopped } if peer == "a@h")));
        assert!(actions.iter().any(|a| matches!(a,
            Action::Log { level: Level::Notice, text, .. } if text.contains("node down: it stopped"))));
        assert!(!actions.iter().any(|a| matches!(
            a,
            Action::Log {
                level: Level::Warning,
                ..
            }
        )));
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Close { conn: 1, .. })));
        // still a member, redialed
        assert!(b.peers().any(|p| p.spec.name == "a@h"));
        b.on_timeout(60_000);
        assert!(drain(&mut b)
            .iter()
            .any(|a| matches!(a, Action::Dial { peer, .. } if peer == "a@h")));
    }

    /// A driver that was busy tells the node when its oldest waiting
    /// input came: a peer is declared down only for a silence before
    /// then (its heartbeat may be what waits), and is looked at again
    /// once the input is taken; everything else is done as at `now`.
    #[test]
    fn a_peer_is_not_down_for_a_silence_that_is_the_drivers_backlog() {
        let timing = Timing {
            heartbeat_interval: 100,
            heartbeat_timeout: 1000,
            ..Timing::default()
        };
        let mut b = Node::new(spec("b@h", 7, 2), timing.clone(), 1);
        b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        drain(&mut b);
        // busy from 50 to 1500; a's heartbeat came at 900 and waits
        b.on_timeout_behind(1500, Some(900));
        assert_eq!(b.up_peers(), ["a@h"]);
        let heartbeats = drain(&mut b)
            .into_iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::Send {
                        msg: Control::Heartbeat,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(heartbeats, 1, "heartbeats are sent as at now");
        assert!(b.next_deadline() <= Some(1500), "a is looked at again");
        b.on_control(1500, "a@h", 1, Control::Heartbeat);
        b.on_timeout(1501);
        assert_eq!(b.up_peers(), ["a@h"]);
        // silent since, with nothing waiting: down
        b.on_timeout_behind(2501, None);
        assert!(b.up_peers().is_empty());
        // a driver behind by more than heartbeat_timeout: the allowance
        // is one more heartbeat_timeout (a heard at 0, input waiting
        // since 100: up at 1900, down at 2002)
        let mut b2 = Node::new(spec("b@h", 7, 2), timing.clone(), 1);
        b2.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        drain(&mut b2);
        b2.on_timeout_behind(1900, Some(100));
        assert_eq!(b2.up_peers(), ["a@h"], "within the allowance");
        b2.on_timeout_behind(2002, Some(100));
        assert!(b2.up_peers().is_empty(), "past the allowance");
        // and as before, without the backlog: down at 1001
        let mut c = Node::new(spec("c@h", 8, 3), timing, 1);
        c.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        c.on_timeout(1001);
        assert!(c.up_peers().is_empty());
    }

    /// A membership message that cannot be read closes the control
    /// connection it came on, with a warning naming the peer.
    #[test]
    fn a_malformed_membership_message_closes_the_control_connection() {
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
        b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        drain(&mut b);
        b.on_control(10, "a@h", 1, Control::Membership(vec![0xff, 1, 2]));
        let actions = drain(&mut b);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Close { conn: 1, .. })),
            "{actions:?}"
        );
        assert!(actions.iter().any(|a| matches!(a,
            Action::Log { level: Level::Warning, peer: Some(p), text, .. }
                if p == "a@h" && text.contains("bad membership message"))));
    }

    /// A membership message over the peer's frame limit is not sent (the
    /// peer would close the connection, and the two would flap).
    #[test]
    fn a_membership_message_over_the_peers_limit_is_not_sent() {
        use crate::membership::callback::Callback;
        let t = Timing::default();
        let mut a = Node::with_overlay(spec("a@h", 5, 1), t.clone(), 1, Box::new(Callback::new()));
        let mut b = spec("b@h", 7, 2);
        b.max_frame = 1000;
        a.on_hello(0, 1, &b, &LaneKey::control()).unwrap();
        drain(&mut a);
        // (+1 byte: the callback's protocol name length, the name being
        // empty; +1: the overlay's tag)
        a.membership_decision(
            1,
            vec![],
            vec![("b@h".into(), vec![0; 998]), ("b@h".into(), vec![0; 999])],
        );
        let actions = drain(&mut a);
        let sent: Vec<usize> = actions
            .iter()
            .filter_map(|x| match x {
                Action::Send {
                    msg: Control::Membership(m),
                    ..
                } => Some(m.len()),
                _ => None,
            })
            .collect();
        assert_eq!(sent, [1000]);
        assert!(actions.iter().any(|x| matches!(x,
            Action::Log { level: Level::Warning, text, .. } if text.contains("max_frame_size"))));
    }

    /// The same for a full-mesh message that cannot be read; a message of
    /// another overlay instead refuses its node for good (no redial loop).
    #[test]
    fn a_node_of_another_overlay_is_refused_and_forgotten() {
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
        b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        drain(&mut b);
        b.on_control(10, "a@h", 1, Control::Membership(vec![1, 0xff, 0xff]));
        assert!(drain(&mut b)
            .iter()
            .any(|a| matches!(a, Action::Close { conn: 1, .. })));
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
        b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        drain(&mut b);
        // a client-server message (tag 3)
        b.on_control(10, "a@h", 1, Control::Membership(vec![3, 1, 0, 0]));
        let actions = drain(&mut b);
        assert!(
            actions.iter().any(|a| matches!(a,
            Action::Refused { peer, refusal: Refusal::BadSpec(why) }
                if peer == "a@h" && why.contains("client_server"))),
            "{actions:?}"
        );
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Unroute { peer } if peer == "a@h")));
        // ...and told which overlay runs here (full mesh: tag 1), before the
        // connection goes, so that it refuses this node too
        let told = actions.iter().position(|a| {
            matches!(a, Action::Send { peer, msg: Control::Membership(m) }
                if peer == "a@h" && m == &vec![1])
        });
        let unrouted = actions
            .iter()
            .position(|a| matches!(a, Action::Unroute { .. }));
        assert!(told.is_some() && told < unrouted, "{actions:?}");
        assert!(b.peers().next().is_none());
        b.on_timeout(60_000);
        assert!(!drain(&mut b)
            .iter()
            .any(|a| matches!(a, Action::Dial { .. })));
        // A node told so (a message of the other overlay's tag alone)
        // refuses too, and answers nothing.
        let mut c = Node::new(spec("c@h", 9, 3), Timing::default(), 1);
        c.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        drain(&mut c);
        c.on_control(10, "a@h", 1, Control::Membership(vec![4]));
        let actions = drain(&mut c);
        assert!(actions.iter().any(|a| matches!(a,
            Action::Refused { refusal: Refusal::BadSpec(why), .. } if why.contains("callback"))));
        assert!(!actions.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: Control::Membership(_),
                ..
            }
        )));
        assert!(c.peers().next().is_none());
    }

    #[test]
    fn a_member_that_refuses_as_detached_is_forgotten() {
        let mut a = Node::new(spec("a@h", 5, 1), Timing::default(), 1);
        a.join(0, spec("b@h", 0, 2));
        let attempt = dial_attempt(&drain(&mut a), &LaneKey::control());
        a.on_dial_failed(
            1,
            "b@h",
            &LaneKey::control(),
            attempt,
            Some(Refusal::Detached),
            "refused",
        );
        assert!(a.peers().next().is_none());
        a.on_timeout(10_000);
        assert!(!drain(&mut a)
            .iter()
            .any(|x| matches!(x, Action::Dial { .. })));
    }

    #[test]
    fn redial_waits_stay_within_the_documented_bounds() {
        let t = Timing {
            reconnect_min_backoff: 100,
            reconnect_max_backoff: 5000,
            ..Timing::default()
        };
        let mut a = Node::new(spec("a@h", 5, 1), t, 1);
        a.join(0, spec("b@h", 0, 2));
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..200 {
            let attempt = drain(&mut a).iter().find_map(|x| match x {
                Action::Dial { attempt, .. } => Some(*attempt),
                _ => None,
            });
            let Some(attempt) = attempt else {
                now += 1;
                a.on_timeout(now);
                continue;
            };
            a.on_dial_failed(now, "b@h", &LaneKey::control(), attempt, None, "refused");
            let Some(Slot::Idle { retry_at }) = a.peers().next().map(|p| p.lanes[0].1) else {
                panic!()
            };
            waits.push(retry_at - now);
            now = retry_at;
            a.on_timeout(now);
        }
        assert!(waits.len() > 10);
        assert!(waits.iter().all(|w| (50..=5000).contains(w)), "{waits:?}");
        assert!(waits.iter().rev().take(5).all(|w| *w >= 2500), "{waits:?}");
        // and failures are logged at 1, 2, 4, 8... only
        let logs = drain(&mut a).len();
        assert!(logs < 20);
    }

    #[test]
    fn another_incarnation_replaces_the_known_one_whatever_its_number() {
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
        b.on_hello(0, 1, &spec("a@h", 500, 1), &LaneKey::control())
            .unwrap();
        drain(&mut b);
        // a restarted with a smaller number: taken, the old one is down
        b.on_hello(10, 2, &spec("a@h", 3, 1), &LaneKey::control())
            .unwrap();
        let acts = drain(&mut b);
        assert!(acts.iter().any(|x| matches!(
            x,
            Action::PeerDown {
                reason: DownReason::Restarted,
                ..
            }
        )));
        assert!(acts.iter().any(|x| matches!(x, Action::PeerUp { .. })));
        assert_eq!(b.peers().next().unwrap().spec.incarnation, 3);
        // gossip about the old one, while the new one is up, changes nothing
        let view = View {
            members: vec![spec("a@h", 3, 1), spec("a@h", 500, 1)],
            tombstones: vec![],
        };
        b.on_control(20, "a@h", 2, gossip(view));
        assert_eq!(b.peers().next().unwrap().spec.incarnation, 3);
    }

    #[test]
    fn one_bad_member_in_gossip_is_skipped_not_the_view() {
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
        b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        let mut long = spec("c@h", 3, 3);
        long.name = format!("{}@h", "c".repeat(300));
        let view = View {
            members: vec![spec("a@h", 5, 1), long, spec("d@h", 4, 4)],
            tombstones: vec![],
        };
        b.on_control(10, "a@h", 1, gossip(view));
        let known: Vec<String> = b.peers().map(|p| p.spec.name.clone()).collect();
        assert_eq!(known, ["a@h", "d@h"]);
    }

    #[test]
    fn members_are_bounded_whatever_a_peer_gossips() {
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1).with_max_members(3);
        b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        let view = View {
            members: (0..1000).map(|i| spec(&format!("m{i}@h"), 9, 3)).collect(),
            tombstones: vec![],
        };
        b.on_control(10, "a@h", 1, gossip(view));
        assert_eq!(b.peers().count(), 3);
        // A node that proves the cookie takes the place of a member only
        // heard of (made-up members must not lock real nodes out).
        let control = LaneKey::control();
        assert!(b.on_hello(20, 2, &spec("new@h", 4, 4), &control).is_ok());
        assert_eq!(b.peers().count(), 3);
        let heard_of: Vec<String> = b
            .peers()
            .map(|p| p.spec.name.clone())
            .filter(|n| n != "a@h" && n != "new@h")
            .collect();
        assert_eq!(heard_of.len(), 1);
        // Once every member is up, a newcomer is refused (`full`, not
        // waited out), and a known member is not.
        // (b dials it: its name is the smaller)
        drain(&mut b);
        b.on_timeout(100);
        drain(&mut b);
        let r = b.on_dialed(100, 3, &spec(&heard_of[0], 9, 3), &control);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(
            b.on_hello(110, 4, &spec("late@h", 4, 5), &control),
            Err(Refusal::Full)
        );
        assert!(b.on_hello(110, 5, &spec("a@h", 5, 1), &control).is_ok());
        // One that was reached and went down gives its place too (names
        // that dialed in and left must not lock real nodes out either).
        b.on_closed(120, 3, "gone");
        drain(&mut b);
        assert!(b.on_hello(130, 6, &spec("late@h", 4, 5), &control).is_ok());
        assert_eq!(b.peers().count(), 3);
        assert!(!b.peers().any(|p| p.spec.name == heard_of[0]));
    }

    /// When a newcomer takes the place of a member that is down, the
    /// newest member goes, not one the cluster has had for long: names a
    /// peer makes up and cycles are always the newest.
    #[test]
    fn the_newest_down_member_gives_its_place() {
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1).with_max_members(3);
        let control = LaneKey::control();
        assert!(b.on_hello(0, 1, &spec("a@h", 5, 1), &control).is_ok());
        assert!(b.on_hello(100, 2, &spec("f1@h", 5, 3), &control).is_ok());
        assert!(b.on_hello(200, 3, &spec("f2@h", 5, 4), &control).is_ok());
        // a went down first (it has been down the longest), f2 later
        b.on_closed(300, 1, "gone");
        b.on_closed(400, 3, "gone");
        drain(&mut b);
        assert!(b.on_hello(500, 4, &spec("new@h", 5, 5), &control).is_ok());
        let mut known: Vec<String> = b.peers().map(|p| p.spec.name.clone()).collect();
        known.sort();
        assert_eq!(known, ["a@h", "f1@h", "new@h"]);
    }

    /// A node gossips only the members it has reached: made-up members
    /// pushed to it go no further, and are forgotten once they stayed
    /// unreached for `UNREACHED_FOR`.
    #[test]
    fn members_only_heard_of_are_not_passed_on_and_are_forgotten() {
        use crate::membership::full_mesh::{decode, Message, UNREACHED_FOR};
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
        b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        b.on_hello(0, 2, &spec("c@h", 6, 3), &LaneKey::control())
            .unwrap();
        let view = View {
            members: (0..50).map(|i| spec(&format!("fake{i}@h"), 9, 3)).collect(),
            tombstones: vec![],
        };
        b.on_control(10, "a@h", 1, gossip(view));
        assert_eq!(b.peers().count(), 52);
        drain(&mut b);
        // the views b sends name only a, c and itself
        let mut t = 10;
        let mut views = 0;
        while views == 0 && t < 10_000 {
            t += 100;
            b.on_timeout(t);
            for a in drain(&mut b) {
                if let Action::Send {
                    msg: Control::Membership(p),
                    ..
                } = a
                {
                    if let Ok(Message::View { view, .. }) = decode(&p[1..]) {
                        let mut names: Vec<String> =
                            view.members.iter().map(|s| s.name.clone()).collect();
                        names.sort();
                        assert_eq!(names, ["a@h", "b@h", "c@h"]);
                        views += 1;
                    }
                }
            }
        }
        assert!(views > 0, "no view sent");
        b.on_timeout(10 + UNREACHED_FOR + 1);
        let left: Vec<String> = b.peers().map(|p| p.spec.name.clone()).collect();
        assert_eq!(left, ["a@h", "c@h"]);
    }

    /// A peer of a build before the shared lane refuses it as an unknown
    /// lane: it is not dialed again (the lanes then keep to their own
    /// connections), while the channel's other lanes are.
    #[test]
    fn a_shared_lane_the_peer_does_not_know_is_not_redialed() {
        let with_lanes = |name: &str, inc, port| NodeSpec {
            channels: vec![ChannelSpec {
                name: "vnode".into(),
                parallelism: 2,
            }],
            ..spec(name, inc, port)
        };
        let mut a = Node::new(with_lanes("a@h", 5, 1), Timing::default(), 1);
        a.join(0, with_lanes("b@h", 0, 2));
        dial_attempt(&drain(&mut a), &LaneKey::control());
        a.on_dialed(1, 1, &with_lanes("b@h", 7, 2), &LaneKey::control())
            .unwrap();
        let key = |index| LaneKey {
            channel: "vnode".into(),
            index,
        };
        let acts = drain(&mut a);
        let (lane1, shared) = (dial_attempt(&acts, &key(1)), dial_attempt(&acts, &key(2)));
        a.on_dial_failed(
            2,
            "b@h",
            &key(2),
            shared,
            Some(Refusal::UnknownLane),
            "unknown",
        );
        a.on_dial_failed(
            2,
            "b@h",
            &key(1),
            lane1,
            Some(Refusal::UnknownLane),
            "unknown",
        );
        for t in [1_000, 2_000] {
            a.on_timeout(t);
            let acts = drain(&mut a);
            let dials = |k: &LaneKey| {
                acts.iter()
                    .filter(|x| matches!(x, Action::Dial { lane, .. } if lane == k))
                    .count()
            };
            assert_eq!(dials(&key(2)), 0, "the shared lane is redialed");
            assert_eq!(dials(&key(1)), 1, "a lane refused so is redialed");
            let attempt = dial_attempt(&acts, &key(1));
            a.on_dial_failed(t, "b@h", &key(1), attempt, Some(Refusal::UnknownLane), "x");
        }
        let p = a.peers().next().unwrap();
        assert!(!p.lanes.iter().any(|(k, _)| **k == key(2)));
    }

    #[test]
    fn a_node_never_reached_that_refuses_for_good_is_forgotten() {
        for r in [
            Refusal::BadCookie,
            Refusal::UnexpectedNode {
                expected: "b@h".into(),
                actual: "c@h".into(),
            },
            Refusal::Version(vec![3]),
        ] {
            let mut a = Node::new(spec("a@h", 5, 1), Timing::default(), 1);
            a.join(0, spec("b@h", 0, 2));
            let attempt = dial_attempt(&drain(&mut a), &LaneKey::control());
            a.on_dial_failed(1, "b@h", &LaneKey::control(), attempt, Some(r.clone()), "x");
            let acts = drain(&mut a);
            assert!(acts
                .iter()
                .any(|x| matches!(x, Action::Refused { refusal, .. } if *refusal == r)));
            assert!(acts.iter().any(|x| matches!(x, Action::Unroute { .. })));
            assert!(a.peers().next().is_none());
        }
    }

    /// A refusal met by a dial made before this node left (the
    /// incarnation that dialed is tombstoned there) is not taken for
    /// the new incarnation: it does not make it leave again.
    #[test]
    fn a_refusal_of_a_dial_made_before_leaving_is_not_taken() {
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
        b.join(0, spec("a@h", 0, 1));
        let control = LaneKey::control();
        let old = dial_attempt(&drain(&mut b), &control);
        b.leave(10);
        b.join(20, spec("a@h", 0, 1));
        let current = dial_attempt(&drain(&mut b), &control);
        let inc = b.local().incarnation;
        b.on_dial_failed(30, "a@h", &control, old, Some(Refusal::Left), "x");
        let acts = drain(&mut b);
        assert!(
            !acts.iter().any(|a| matches!(a, Action::Refused { .. })),
            "{acts:?}"
        );
        assert_eq!(b.local().incarnation, inc);
        assert!(b.peers().any(|p| p.spec.name == "a@h"));
        // the dial of the current incarnation is taken: it leaves
        b.on_dial_failed(40, "a@h", &control, current, Some(Refusal::Left), "x");
        let acts = drain(&mut b);
        assert!(
            acts.iter().any(|a| matches!(a, Action::Refused { .. })),
            "{acts:?}"
        );
        assert_ne!(b.local().incarnation, inc);
    }
}
