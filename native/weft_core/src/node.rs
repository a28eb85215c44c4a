//! The peer service of one node as a pure state machine: full-mesh
//! membership, the connection plan (which lanes to which peers), dialing with
//! backoff, collision settlement, heartbeats and failure detection.
//!
//! Nothing here touches a socket or a clock. The driver (tokio in the NIF, or
//! the simulator in tests) calls the `on_*` methods when something happens,
//! calls [`Node::tick`] with the current time in milliseconds, and carries out
//! the [`Action`]s it drains with [`Node::poll_action`].
//!
//! Invariants kept here:
//! - every peer has at most one connection per lane; when both sides dial the
//!   same lane, the connection dialed by the node with the smaller name wins,
//!   and both sides reach the same verdict without talking about it;
//! - a peer is `Up` exactly while its control lane is connected and heard
//!   from within the heartbeat timeout;
//! - only the node with the smaller name dials data lanes (so data lanes never
//!   collide); both sides dial the control lane;
//! - incarnations are random, not ordered: an authenticated handshake with a
//!   node is the truth about which incarnation of it is alive, and replaces
//!   the one known before; gossip about another incarnation is taken only
//!   for a peer that is not up (a dial then finds out which one answers);
//! - a tombstone `(name, incarnation)` keeps that incarnation out of the
//!   membership until it expires: late gossip cannot undo a leave, and a
//!   restarted node (a new incarnation) is never refused because of it.

use crate::lane::{plan, plan_keys, LaneKey};
use crate::peer::{settle, LaneState, Peer, Settle};
pub use crate::peer::{PeerStatus, PeerView, Slot};
use crate::rng::Rng;
use crate::spec::NodeSpec;
use crate::wire::{Control, Refusal, Tombstone, View};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

/// Identifies one TCP connection; assigned by the driver.
pub type ConnId = u64;

/// Timing of the peer service, in milliseconds.
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat_interval: u64,
    pub heartbeat_timeout: u64,
    pub reconnect_min_backoff: u64,
    pub reconnect_max_backoff: u64,
    pub gossip_interval: u64,
    /// A member down this long is forgotten (no more redials); `None`: never.
    pub forget_after: Option<u64>,
    /// How long a tombstone keeps a departed incarnation out.
    pub tombstone_ttl: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_interval: 1000,
            heartbeat_timeout: 5000,
            reconnect_min_backoff: 100,
            reconnect_max_backoff: 5000,
            gossip_interval: 1000,
            forget_after: None,
            tombstone_ttl: 600_000,
        }
    }
}

/// Most tombstones kept; past this the ones closest to expiry go first.
pub const MAX_TOMBSTONES: usize = 4096;

/// Members a node keeps by default (see [`Node::with_max_members`]).
pub const DEFAULT_MAX_MEMBERS: usize = 1024;

/// Severity of a log line the core asks the driver to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
}

/// Why a peer stopped being reachable (`nodedown`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// Its control connection closed or failed.
    ConnectionClosed(String),
    /// Nothing heard from it within the heartbeat timeout.
    HeartbeatTimeout,
    /// It left the cluster.
    Left,
    /// It was removed from the cluster (`leave(Node)`).
    Removed,
    /// A new incarnation of it took its place.
    Restarted,
    /// This node left the cluster (or was removed).
    ThisNodeLeft,
    /// It stayed down longer than `forget_after` and was forgotten.
    Forgotten,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::ConnectionClosed(why) => write!(f, "control connection closed: {why}"),
            DownReason::HeartbeatTimeout => write!(f, "no heartbeat within the timeout"),
            DownReason::Left => write!(f, "left the cluster"),
            DownReason::Removed => write!(f, "removed from the cluster"),
            DownReason::Restarted => write!(f, "restarted (new incarnation)"),
            DownReason::ThisNodeLeft => write!(f, "this node left the cluster"),
            DownReason::Forgotten => write!(f, "down too long; forgotten"),
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a connection for `lane` to `peer`, trying `addrs` in order, run
    /// the handshake, then report [`Node::on_dialed`] or
    /// [`Node::on_dial_failed`] with the same `attempt`.
    Dial {
        peer: String,
        addrs: Vec<SocketAddr>,
        lane: LaneKey,
        attempt: u64,
    },
    /// Close a connection now; frames still queued for it are not sent.
    Close { conn: ConnId, reason: String },
    /// Send a control message to `peer` on its control lane.
    Send { peer: String, msg: Control },
    /// Create (or update to) the send queues of `peer`'s lanes, so that
    /// messages to it queue until its lanes connect. `lanes` is the plan:
    /// `(channel, lane count)`, control channel first; `None` while the
    /// peer's channels are not known yet (messages wait unplanned).
    /// `max_frame` is the largest frame body the peer accepts, if known.
    Route {
        peer: String,
        lanes: Option<Vec<(String, u16)>>,
        max_frame: Option<u64>,
    },
    /// Drop `peer`'s send queues: frames already queued on connected lanes
    /// are written first, then the connections are shut down; frames on
    /// unconnected lanes are dropped (and counted).
    Unroute { peer: String },
    /// `peer` became reachable.
    PeerUp { peer: String },
    /// `peer` is no longer reachable (or left).
    PeerDown { peer: String, reason: DownReason },
    /// A dial of `peer`'s control lane was refused (by either side), for
    /// whoever waits for it to come up.
    Refused { peer: String, refusal: Refusal },
    /// Something worth a log line.
    Log {
        level: Level,
        peer: Option<String>,
        lane: Option<LaneKey>,
        text: String,
    },
}

/// The peer service of one node.
#[derive(Debug)]
pub struct Node {
    local: NodeSpec,
    timing: Timing,
    rng: Rng,
    peers: BTreeMap<String, Peer>,
    /// `(name, incarnation)` -> when it expires.
    tombstones: BTreeMap<(String, u64), u64>,
    conns: HashMap<ConnId, (String, LaneKey)>,
    actions: VecDeque<Action>,
    next_attempt: u64,
    next_heartbeat: u64,
    next_gossip: u64,
    gossip_dirty: bool,
    /// Set by leaving (or being removed) until the next explicit `join`:
    /// while set, hellos from nodes we do not know are refused, so that a
    /// peer that has not yet heard of the leave cannot pull us back in.
    detached: bool,
    /// Most members kept: memory stays bounded whatever a peer gossips.
    max_members: usize,
}

impl Node {
    /// A node that knows only itself. `local.incarnation` must be non-zero
    /// (the driver draws it at random); `seed` drives backoff jitter and the
    /// incarnations of later lives (after `leave`).
    pub fn new(local: NodeSpec, timing: Timing, seed: u64) -> Self {
        assert!(local.incarnation > 0, "a node's own incarnation is never 0");
        Node {
            local,
            timing,
            rng: Rng::new(seed),
            peers: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            conns: HashMap::new(),
            actions: VecDeque::new(),
            next_attempt: 1,
            next_heartbeat: 0,
            next_gossip: 0,
            gossip_dirty: false,
            detached: false,
            max_members: DEFAULT_MAX_MEMBERS,
        }
    }

    /// Keep at most `n` members (other than this node): past that, joins are
    /// refused, handshakes of unknown nodes are refused as unavailable and
    /// gossiped newcomers are skipped (and logged).
    pub fn with_max_members(mut self, n: usize) -> Self {
        self.max_members = n;
        self
    }

    fn has_room(&self) -> bool {
        self.peers.len() < self.max_members
    }

    /// This node's spec (its incarnation changes on `leave`).
    pub fn local(&self) -> &NodeSpec {
        &self.local
    }

    /// The next action to carry out, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Peers that are up, by name.
    pub fn up_peers(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(_, p)| p.status == PeerStatus::Up)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Every member (any status), for `info`.
    pub fn peers(&self) -> impl Iterator<Item = PeerView<'_>> {
        self.peers.values().map(|p| PeerView {
            spec: &p.spec,
            status: p.status,
            lanes: p.lanes.iter().map(|l| (&l.key, l.slot)).collect(),
        })
    }

    /// Tombstones held now, for `info` and tests.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// The connection currently carrying `lane` to `peer`.
    pub fn lane_conn(&self, peer: &str, lane: &LaneKey) -> Option<ConnId> {
        let p = self.peers.get(peer)?;
        p.lanes
            .iter()
            .find(|l| &l.key == lane)
            .and_then(|l| match l.slot {
                Slot::Connected { conn, .. } => Some(conn),
                _ => None,
            })
    }

    // ---------------------------------------------------------------- API

    /// Join the cluster that `spec`'s node belongs to: make it a member and
    /// dial it. Its incarnation may be 0 (unknown); the handshake tells it.
    pub fn join(&mut self, now: u64, spec: NodeSpec) {
        if spec.name == self.local.name {
            return;
        }
        self.detached = false;
        let room = self.has_room();
        match self.peers.get_mut(&spec.name) {
            Some(p) => {
                // Known already: dial again now rather than at the next backoff.
                if p.status != PeerStatus::Up {
                    if p.spec.incarnation == 0 || p.status == PeerStatus::Down {
                        p.spec.addrs = spec.addrs;
                    }
                    p.since = now;
                    let min = self.timing.reconnect_min_backoff;
                    if let Some(l) = p.lanes.first_mut() {
                        if let Slot::Idle { .. } = l.slot {
                            l.slot = Slot::Idle { retry_at: now };
                            l.backoff = min;
                        }
                    }
                }
            }
            None if room => self.add_peer(now, spec),
            None => {
                let n = self.max_members;
                self.log(
                    Level::Warning,
                    Some(&spec.name),
                    None,
                    format!("not joined: this node already has {n} members (max_members)"),
                );
                return;
            }
        }
        self.dial_due(now);
    }

    /// Leave the cluster: tell every peer, let queued frames drain, forget
    /// every peer, and start a new incarnation that may join again.
    pub fn leave(&mut self) {
        let tomb = View {
            members: vec![],
            tombstones: vec![Tombstone {
                name: self.local.name.clone(),
                incarnation: self.local.incarnation,
                ttl: self.timing.tombstone_ttl,
            }],
        };
        for (name, p) in &self.peers {
            if p.status == PeerStatus::Up {
                self.actions.push_back(Action::Send {
                    peer: name.clone(),
                    msg: Control::Gossip(tomb.clone()),
                });
            }
        }
        self.forget_all(DownReason::ThisNodeLeft);
        self.new_incarnation();
        self.detached = true;
        self.log(Level::Notice, None, None, "left the cluster".into());
    }

    /// Remove `name` from the cluster (`leave(Node)`): it is tombstoned here,
    /// the tombstone is gossiped to everyone including the node itself (which
    /// then leaves), and its lanes drain and close.
    pub fn remove(&mut self, now: u64, name: &str) {
        if name == self.local.name {
            return self.leave();
        }
        let Some(p) = self.peers.get(name) else {
            return;
        };
        if p.spec.incarnation == 0 {
            // Never reached: nothing to tombstone, just forget it.
            self.forget_peer(name, DownReason::Removed);
            return;
        }
        let inc = p.spec.incarnation;
        let up = p.status == PeerStatus::Up;
        self.tombstone(now, name, inc, self.timing.tombstone_ttl);
        if up {
            self.actions.push_back(Action::Send {
                peer: name.to_string(),
                msg: Control::Gossip(self.view(now)),
            });
        }
        self.forget_peer(name, DownReason::Removed);
        self.gossip_dirty = true;
        self.flush_gossip(now);
    }

    // ---------------------------------------------------------- connections

    /// An authenticated hello arrived on connection `conn` for `lane`.
    /// `Ok` means: answer welcome and attach the connection to the lane.
    pub fn on_hello(
        &mut self,
        now: u64,
        conn: ConnId,
        from: &NodeSpec,
        lane: &LaneKey,
    ) -> Result<(), Refusal> {
        if from.name == self.local.name {
            return Err(Refusal::Unavailable);
        }
        if self.detached && !self.peers.contains_key(&from.name) {
            return Err(Refusal::Detached);
        }
        self.admit(now, from)?;
        let r = self.install(now, conn, &from.name, lane, false);
        self.dial_due(now);
        r
    }

    /// A dial for `lane` completed its handshake with the node described by
    /// `acceptor`. `Err` means: close it. Which attempt it was does not
    /// matter: a connection that got through is kept whenever the lane
    /// still wants one (collision rules apply as for incoming ones).
    pub fn on_dialed(
        &mut self,
        now: u64,
        conn: ConnId,
        acceptor: &NodeSpec,
        lane: &LaneKey,
    ) -> Result<(), Refusal> {
        if !self.peers.contains_key(&acceptor.name) {
            // Forgotten while dialing (left, removed).
            return Err(Refusal::Unavailable);
        }
        self.admit(now, acceptor)?;
        let r = self.install(now, conn, &acceptor.name, lane, true);
        self.dial_due(now);
        r
    }

    /// Our dial `attempt` failed: no connection, a handshake error, or a
    /// refusal by either side (`refusal`).
    pub fn on_dial_failed(
        &mut self,
        now: u64,
        peer: &str,
        lane: &LaneKey,
        attempt: u64,
        refusal: Option<Refusal>,
        reason: &str,
    ) {
        if refusal == Some(Refusal::Left) {
            // The cluster has tombstoned this incarnation: we were removed
            // while we could not hear it. Leave, as the gossip would have said.
            self.log(
                Level::Warning,
                Some(peer),
                Some(lane),
                "peer says this node was removed from the cluster; leaving".into(),
            );
            self.refused(peer, lane, Refusal::Left);
            self.leave();
            return;
        }
        if refusal == Some(Refusal::Detached) && self.peers.contains_key(peer) {
            // The peer has left and does not know us any more: its farewell
            // gossip did not reach us (the lane was being replaced, or we were
            // down). Redialing it would never succeed; drop it as the
            // tombstone would have.
            self.log(
                Level::Notice,
                Some(peer),
                Some(lane),
                "peer has left the cluster; forgetting it".into(),
            );
            self.refused(peer, lane, Refusal::Detached);
            self.forget_peer(peer, DownReason::Left);
            return;
        }
        // A node we never reached that refuses us for a reason redialing
        // cannot fix (cookie, name, version, description) was never a
        // member: forget it rather than redial it for ever. (One we did
        // reach is kept and redialed: it may be reconfigured back.)
        let permanent = matches!(
            refusal,
            Some(
                Refusal::BadCookie
                    | Refusal::Refused
                    | Refusal::UnexpectedNode { .. }
                    | Refusal::Version(_)
                    | Refusal::BadSpec(_)
            )
        );
        if permanent
            && lane.is_control()
            && self
                .peers
                .get(peer)
                .is_some_and(|p| p.spec.incarnation == 0)
        {
            let r = refusal.clone().expect("a refusal");
            self.log(
                Level::Warning,
                Some(peer),
                Some(lane),
                format!("join refused ({reason}); not a member (join again once fixed)"),
            );
            self.refused(peer, lane, r);
            self.forget_peer(peer, DownReason::Left);
            return;
        }
        let timing = self.timing.clone();
        let jitter = self.rng.next_u64();
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let Some(l) = p.lanes.iter_mut().find(|l| &l.key == lane) else {
            return;
        };
        if l.slot != (Slot::Dialing { attempt }) {
            return;
        }
        // Jitter within [backoff / 2, backoff]: never past the maximum.
        let half = l.backoff / 2;
        let wait = half + jitter % (l.backoff - half + 1);
        l.slot = Slot::Idle {
            retry_at: now + wait,
        };
        l.backoff = (l.backoff * 2).min(timing.reconnect_max_backoff);
        let mut newly_down = false;
        // A member we have never reached and cannot reach now is down: drop
        // what was queued for it rather than let it pile up while we redial.
        // (A duplicate means the other direction is connecting: not down.)
        if lane.is_control()
            && p.status == PeerStatus::Connecting
            && refusal != Some(Refusal::Duplicate)
        {
            p.status = PeerStatus::Down;
            p.since = now;
            newly_down = true;
        }
        if refusal == Some(Refusal::Duplicate) {
            return;
        }
        // Log the first failure, then only the 2nd, 4th, 8th...: a member
        // that went away is redialed for long without flooding the log.
        p.failures += 1;
        let failures = p.failures;
        if newly_down {
            self.actions.push_back(Action::Unroute {
                peer: peer.to_string(),
            });
        }
        if let Some(r) = &refusal {
            if lane.is_control() {
                self.refused(peer, lane, r.clone());
            }
        }
        if failures.is_power_of_two() {
            // A peer that actively refuses us (cookie, name) is a
            // configuration problem worth a warning; an unreachable member
            // is expected while it is down.
            let level = if refusal.is_some() {
                Level::Warning
            } else {
                Level::Info
            };
            let n = if failures > 1 {
                format!(" ({failures} failed dials in a row)")
            } else {
                String::new()
            };
            self.log(
                level,
                Some(peer),
                Some(lane),
                format!("dial failed ({reason}){n}; retrying in {wait} ms"),
            );
        }
    }

    /// Connection `conn` closed (by either side, or on error).
    pub fn on_closed(&mut self, now: u64, conn: ConnId, reason: &str) {
        let Some((peer, lane)) = self.conns.remove(&conn) else {
            return;
        };
        let min = self.timing.reconnect_min_backoff;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(l) = p.lanes.iter_mut().find(|l| l.key == lane) else {
            return;
        };
        if !matches!(l.slot, Slot::Connected { conn: c, .. } if c == conn) {
            return;
        }
        l.slot = Slot::Idle {
            retry_at: now + min,
        };
        if lane.is_control() {
            self.down(now, &peer, DownReason::ConnectionClosed(reason.to_string()));
        } else {
            self.log(
                Level::Info,
                Some(&peer),
                Some(&lane),
                format!("lane closed: {reason}"),
            );
        }
        self.dial_due(now);
    }

    /// A control message arrived from `from` on connection `conn`.
    pub fn on_control(&mut self, now: u64, from: &str, conn: ConnId, msg: Control) {
        let current = self.lane_conn(from, &LaneKey::control()) == Some(conn);
        if current {
            if let Some(p) = self.peers.get_mut(from) {
                p.last_heard = now;
            }
        }
        match msg {
            Control::Heartbeat => {}
            // Gossip counts only from a peer's current control connection.
            // A connection we no longer track (the peer was forgotten by a
            // leave or a removal, or the lane was replaced) may still carry
            // frames sent before the other side heard of it; merging those
            // would pull the forgotten members back in. Gossip is periodic,
            // so a view dropped here arrives again on the current lane.
            Control::Gossip(view) if current => self.merge(now, from, view),
            Control::Gossip(_) => {}
        }
        self.dial_due(now);
    }

    /// Advance time: heartbeats, failure detection, gossip, redials,
    /// forgetting long-down members and expired tombstones.
    pub fn tick(&mut self, now: u64) {
        let timeout = self.timing.heartbeat_timeout;
        let silent: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.status == PeerStatus::Up && now.saturating_sub(p.last_heard) > timeout
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in silent {
            self.down(now, &name, DownReason::HeartbeatTimeout);
        }
        if let Some(after) = self.timing.forget_after {
            let gone: Vec<String> = self
                .peers
                .iter()
                .filter(|(_, p)| {
                    p.status == PeerStatus::Down && now.saturating_sub(p.since) > after
                })
                .map(|(n, _)| n.clone())
                .collect();
            for name in gone {
                self.log(
                    Level::Notice,
                    Some(&name),
                    None,
                    format!(
                        "down for more than {after} ms: forgotten (join it again to bring it back)"
                    ),
                );
                self.forget_peer(&name, DownReason::Forgotten);
            }
        }
        self.tombstones.retain(|_, expires| *expires > now);
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.timing.heartbeat_interval;
            for name in self.up_peers() {
                self.actions.push_back(Action::Send {
                    peer: name,
                    msg: Control::Heartbeat,
                });
            }
        }
        if now >= self.next_gossip {
            self.gossip_dirty = true;
        }
        self.flush_gossip(now);
        self.dial_due(now);
    }

    // ------------------------------------------------------------ internals

    fn log(&mut self, level: Level, peer: Option<&str>, lane: Option<&LaneKey>, text: String) {
        self.actions.push_back(Action::Log {
            level,
            peer: peer.map(str::to_string),
            lane: lane.cloned(),
            text,
        });
    }

    fn refused(&mut self, peer: &str, lane: &LaneKey, refusal: Refusal) {
        if lane.is_control() {
            self.actions.push_back(Action::Refused {
                peer: peer.to_string(),
                refusal,
            });
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

    fn tombstone(&mut self, now: u64, name: &str, incarnation: u64, ttl: u64) {
        let key = (name.to_string(), incarnation);
        if self.tombstones.contains_key(&key) {
            // Never extended: every holder's copy expires by the first one's
            // deadline, so tombstones do not circulate for ever.
            return;
        }
        if self.tombstones.len() >= MAX_TOMBSTONES {
            let first = self
                .tombstones
                .iter()
                .min_by_key(|(_, e)| **e)
                .map(|(k, _)| k.clone());
            if let Some(k) = first {
                self.tombstones.remove(&k);
            }
        }
        self.tombstones
            .insert(key, now + ttl.min(self.timing.tombstone_ttl));
    }

    fn tombstoned(&self, name: &str, incarnation: u64) -> bool {
        self.tombstones
            .contains_key(&(name.to_string(), incarnation))
    }

    fn view(&self, now: u64) -> View {
        let mut members = vec![self.local.clone()];
        members.extend(
            self.peers
                .values()
                .filter(|p| p.spec.incarnation != 0)
                .map(|p| p.spec.clone()),
        );
        View {
            members,
            tombstones: self
                .tombstones
                .iter()
                .map(|((n, i), e)| Tombstone {
                    name: n.clone(),
                    incarnation: *i,
                    ttl: e.saturating_sub(now),
                })
                .collect(),
        }
    }

    fn flush_gossip(&mut self, now: u64) {
        if !self.gossip_dirty {
            return;
        }
        self.gossip_dirty = false;
        self.next_gossip = now + self.timing.gossip_interval;
        let view = self.view(now);
        for name in self.up_peers() {
            self.actions.push_back(Action::Send {
                peer: name,
                msg: Control::Gossip(view.clone()),
            });
        }
    }

    fn lanes_for(&self, spec: &NodeSpec, now: u64) -> Vec<LaneState> {
        plan_keys(&self.local, spec)
            .into_iter()
            .map(|key| LaneState::idle(key, now, self.timing.reconnect_min_backoff))
            .collect()
    }

    fn route_action(&self, name: &str) -> Action {
        let p = &self.peers[name];
        // A spec a user typed in does not tell the peer's channels or limit:
        // its messages wait unplanned until the handshake tells them.
        let known = p.spec.incarnation != 0;
        Action::Route {
            peer: name.to_string(),
            lanes: known.then(|| plan(&self.local, &p.spec)),
            max_frame: known.then_some(p.spec.max_frame),
        }
    }

    fn add_peer(&mut self, now: u64, spec: NodeSpec) {
        let name = spec.name.clone();
        let lanes = self.lanes_for(&spec, now);
        self.peers.insert(
            name.clone(),
            Peer {
                spec,
                status: PeerStatus::Connecting,
                lanes,
                last_heard: now,
                since: now,
                failures: 0,
            },
        );
        let route = self.route_action(&name);
        self.actions.push_back(route);
        self.gossip_dirty = true;
    }

    /// Check an incarnation we have just authenticated against tombstones
    /// and what we know, and bring the membership up to date with it.
    fn admit(&mut self, now: u64, spec: &NodeSpec) -> Result<(), Refusal> {
        if spec.incarnation == 0 {
            return Err(Refusal::BadSpec("incarnation 0".into()));
        }
        if self.tombstoned(&spec.name, spec.incarnation) {
            return Err(Refusal::Left);
        }
        match self.peers.get(&spec.name).map(|p| p.spec.incarnation) {
            None if self.has_room() => self.add_peer(now, spec.clone()),
            None => return Err(Refusal::Unavailable),
            Some(0) => {
                // A spec typed in by a user: learn the real one, keep the
                // state and what is queued.
                let lanes = self.lanes_for(spec, now);
                let p = self.peers.get_mut(&spec.name).expect("peer exists");
                p.spec = spec.clone();
                for l in lanes {
                    if !p.lanes.iter().any(|old| old.key == l.key) {
                        p.lanes.push(l);
                    }
                }
                let keep: Vec<LaneKey> = plan_keys(&self.local, spec);
                p.lanes.retain(|l| keep.contains(&l.key));
                let route = self.route_action(&spec.name);
                self.actions.push_back(route);
                self.gossip_dirty = true;
            }
            Some(known) if known != spec.incarnation => {
                // Another incarnation answered, authenticated: it is the one
                // alive now. What was queued for the old one is dropped.
                self.forget_peer(&spec.name, DownReason::Restarted);
                self.add_peer(now, spec.clone());
            }
            Some(_) => {
                // The same incarnation: it may have changed addresses.
                if let Some(p) = self.peers.get_mut(&spec.name) {
                    if p.spec.addrs != spec.addrs {
                        p.spec.addrs = spec.addrs.clone();
                        self.gossip_dirty = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Put `conn` in `peer`'s `lane` slot, settling collisions.
    fn install(
        &mut self,
        now: u64,
        conn: ConnId,
        peer: &str,
        lane: &LaneKey,
        dialed_by_me: bool,
    ) -> Result<(), Refusal> {
        let me_preferred = self.local.name.as_str() < peer;
        let min = self.timing.reconnect_min_backoff;
        let p = self.peers.get_mut(peer).ok_or(Refusal::Unavailable)?;
        if !lane.is_control() && p.status != PeerStatus::Up {
            return Err(Refusal::Unavailable);
        }
        let l = p
            .lanes
            .iter_mut()
            .find(|l| &l.key == lane)
            .ok_or(Refusal::UnknownLane)?;
        let replaced = match settle(l.slot, dialed_by_me, me_preferred) {
            Settle::Take => None,
            Settle::Replace(old) => Some(old),
            Settle::Refuse => return Err(Refusal::Duplicate),
        };
        l.slot = Slot::Connected { conn, dialed_by_me };
        l.backoff = min;
        self.conns.insert(conn, (peer.to_string(), lane.clone()));
        if let Some(old) = replaced {
            self.conns.remove(&old);
            self.actions.push_back(Action::Close {
                conn: old,
                reason: "replaced by a newer connection for the same lane".into(),
            });
        }
        if lane.is_control() {
            let p = self.peers.get_mut(peer).expect("peer exists");
            p.last_heard = now;
            if p.status != PeerStatus::Up {
                let was_down = p.status == PeerStatus::Down;
                p.status = PeerStatus::Up;
                p.since = now;
                p.failures = 0;
                for l in p.lanes.iter_mut().filter(|l| !l.key.is_control()) {
                    l.slot = Slot::Idle { retry_at: now };
                    l.backoff = min;
                }
                if was_down {
                    let route = self.route_action(peer);
                    self.actions.push_back(route);
                }
                self.actions.push_back(Action::PeerUp {
                    peer: peer.to_string(),
                });
                self.log(Level::Notice, Some(peer), None, "node up".into());
                // Tell the newcomer everything we know, and everyone else
                // about the newcomer.
                self.actions.push_back(Action::Send {
                    peer: peer.to_string(),
                    msg: Control::Gossip(self.view(now)),
                });
                self.gossip_dirty = true;
            }
        }
        Ok(())
    }

    /// `peer` is unreachable: close its connections, drop its queues, redial
    /// its control lane with backoff.
    fn down(&mut self, now: u64, peer: &str, reason: DownReason) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let was_up = p.status == PeerStatus::Up;
        if p.status == PeerStatus::Down {
            return;
        }
        p.status = PeerStatus::Down;
        p.since = now;
        let min = self.timing.reconnect_min_backoff;
        let mut closes = Vec::new();
        for l in p.lanes.iter_mut() {
            if let Slot::Connected { conn, .. } = l.slot {
                closes.push(conn);
            }
            l.slot = Slot::Idle {
                retry_at: now + min,
            };
            l.backoff = min;
        }
        for conn in closes {
            self.conns.remove(&conn);
            self.actions.push_back(Action::Close {
                conn,
                reason: format!("peer down: {reason}"),
            });
        }
        self.actions.push_back(Action::Unroute {
            peer: peer.to_string(),
        });
        if was_up {
            self.log(
                Level::Warning,
                Some(peer),
                None,
                format!("node down: {reason}"),
            );
            self.actions.push_back(Action::PeerDown {
                peer: peer.to_string(),
                reason,
            });
        }
    }

    /// Drop `peer` from the membership. Its lanes drain and close; its
    /// connections are no longer ours to track.
    fn forget_peer(&mut self, peer: &str, reason: DownReason) {
        let Some(p) = self.peers.remove(peer) else {
            return;
        };
        for l in &p.lanes {
            if let Slot::Connected { conn, .. } = l.slot {
                self.conns.remove(&conn);
            }
        }
        self.actions.push_back(Action::Unroute {
            peer: peer.to_string(),
        });
        if p.status == PeerStatus::Up {
            self.log(
                Level::Notice,
                Some(peer),
                None,
                format!("node down: {reason}"),
            );
            self.actions.push_back(Action::PeerDown {
                peer: peer.to_string(),
                reason,
            });
        }
        self.gossip_dirty = true;
    }

    fn forget_all(&mut self, reason: DownReason) {
        let names: Vec<String> = self.peers.keys().cloned().collect();
        for n in names {
            self.forget_peer(&n, reason.clone());
        }
        self.gossip_dirty = false;
    }

    fn merge(&mut self, now: u64, from: &str, view: View) {
        for t in view.tombstones {
            if t.name == self.local.name {
                if t.incarnation == self.local.incarnation {
                    self.log(
                        Level::Notice,
                        None,
                        None,
                        "removed from the cluster by a peer".into(),
                    );
                    self.forget_all(DownReason::ThisNodeLeft);
                    self.new_incarnation();
                    self.detached = true;
                    return;
                }
                continue;
            }
            self.tombstone(now, &t.name, t.incarnation, t.ttl);
            if self
                .peers
                .get(&t.name)
                .is_some_and(|p| p.spec.incarnation == t.incarnation)
            {
                let reason = if self.peers.get(&t.name).map(|p| p.status) == Some(PeerStatus::Up) {
                    DownReason::Left
                } else {
                    DownReason::Removed
                };
                self.forget_peer(&t.name, reason);
            }
        }
        let mut bad = 0;
        let mut no_room = 0;
        for spec in view.members {
            if spec.name == self.local.name {
                continue;
            }
            // One bad entry is skipped, never the whole view.
            if spec.validate(false).is_err() {
                bad += 1;
                continue;
            }
            if self.tombstoned(&spec.name, spec.incarnation) {
                continue;
            }
            match self
                .peers
                .get(&spec.name)
                .map(|p| (p.spec.incarnation, p.status))
            {
                None if self.has_room() => self.add_peer(now, spec),
                None => no_room += 1,
                // Another incarnation, heard of second hand: worth a dial
                // only if ours is not up (the dial finds out which is alive).
                Some((known, status)) if known != spec.incarnation && status != PeerStatus::Up => {
                    if known == 0 {
                        let _ = self.admit(now, &spec);
                    } else {
                        self.forget_peer(&spec.name, DownReason::Restarted);
                        self.add_peer(now, spec);
                    }
                }
                Some(_) => {}
            }
        }
        if no_room > 0 {
            let n = self.max_members;
            self.log(
                Level::Warning,
                Some(from),
                None,
                format!("gossip named {no_room} more members than max_members ({n}) allows; skipped them"),
            );
        }
        if bad > 0 {
            self.log(
                Level::Warning,
                Some(from),
                None,
                format!("gossip carried {bad} invalid member descriptions; skipped them"),
            );
        }
    }

    /// Start every dial that is due.
    fn dial_due(&mut self, now: u64) {
        let me = self.local.name.clone();
        let mut dials = Vec::new();
        for (name, p) in self.peers.iter_mut() {
            let dial_data = p.status == PeerStatus::Up && me.as_str() < name.as_str();
            for l in p.lanes.iter_mut() {
                let Slot::Idle { retry_at } = l.slot else {
                    continue;
                };
                let wanted = if l.key.is_control() {
                    p.status != PeerStatus::Up
                } else {
                    dial_data
                };
                if wanted && retry_at <= now {
                    let attempt = self.next_attempt;
                    self.next_attempt += 1;
                    l.slot = Slot::Dialing { attempt };
                    dials.push(Action::Dial {
                        peer: name.clone(),
                        addrs: p.spec.addrs.clone(),
                        lane: l.key.clone(),
                        attempt,
                    });
                }
            }
        }
        self.actions.extend(dials);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ChannelSpec;

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

    #[test]
    fn gossip_on_a_forgotten_connection_is_ignored() {
        let mut b = Node::new(spec("b@h", 7, 2), Timing::default(), 1);
        b.on_hello(0, 1, &spec("a@h", 5, 1), &LaneKey::control())
            .unwrap();
        assert_eq!(b.up_peers(), ["a@h"]);
        b.leave();
        drain(&mut b);
        // a's gossip, sent before it heard of the leave, still arrives on
        // the old control connection.
        let view = View {
            members: vec![spec("a@h", 5, 1), spec("b@h", 7, 2), spec("c@h", 3, 3)],
            tombstones: vec![],
        };
        b.on_control(10, "a@h", 1, Control::Gossip(view));
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
        b.on_control(10, "a@h", 1, Control::Gossip(view));
        let known: Vec<&str> = b.peers().map(|p| p.spec.name.as_str()).collect();
        assert_eq!(known, ["a@h", "c@h"]);
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
        a.tick(10_000);
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
                a.tick(now);
                continue;
            };
            a.on_dial_failed(now, "b@h", &LaneKey::control(), attempt, None, "refused");
            let Some(Slot::Idle { retry_at }) = a.peers().next().map(|p| p.lanes[0].1) else {
                panic!()
            };
            waits.push(retry_at - now);
            now = retry_at;
            a.tick(now);
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
        b.on_control(20, "a@h", 2, Control::Gossip(view));
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
        b.on_control(10, "a@h", 1, Control::Gossip(view));
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
        b.on_control(10, "a@h", 1, Control::Gossip(view));
        assert_eq!(b.peers().count(), 3);
        // a newcomer's handshake is refused, a known member's is not
        assert_eq!(
            b.on_hello(20, 2, &spec("new@h", 4, 4), &LaneKey::control()),
            Err(Refusal::Unavailable)
        );
        assert!(b
            .on_hello(20, 3, &spec("a@h", 5, 1), &LaneKey::control())
            .is_ok());
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
}
