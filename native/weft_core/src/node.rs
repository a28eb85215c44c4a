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
//! - a tombstone `(name, epoch)` keeps that incarnation, and every older one,
//!   out of the membership for good: late gossip cannot undo a leave.

use crate::frame::{Control, Refusal, View};
use crate::lane::{plan, plan_keys, LaneKey};
use crate::peer::{settle, LaneState, Peer, Settle};
pub use crate::peer::{PeerStatus, PeerView, Slot};
use crate::rng::Rng;
use crate::spec::NodeSpec;
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
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_interval: 1000,
            heartbeat_timeout: 5000,
            reconnect_min_backoff: 100,
            reconnect_max_backoff: 5000,
            gossip_interval: 1000,
        }
    }
}

/// Severity of a log line the core asks the driver to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
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
    /// `(channel, lane count)`, control channel first.
    Route {
        peer: String,
        lanes: Vec<(String, u16)>,
    },
    /// Drop `peer`'s send queues: frames already queued on connected lanes
    /// are written first, then the connections are shut down; frames on
    /// unconnected lanes are dropped.
    Unroute { peer: String },
    /// `peer` became reachable.
    PeerUp { peer: String },
    /// `peer` is no longer reachable (or left).
    PeerDown { peer: String, reason: String },
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
    tombstones: BTreeMap<String, u64>,
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
}

impl Node {
    /// A node that knows only itself. `local.epoch` must be non-zero and
    /// larger than that of any earlier incarnation of the same name (the
    /// driver uses the wall clock at start); `seed` drives backoff jitter.
    pub fn new(local: NodeSpec, timing: Timing, seed: u64) -> Self {
        assert!(local.epoch > 0, "a node's own epoch is never 0");
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
        }
    }

    /// This node's spec (its epoch changes on `leave`).
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
    /// dial it. Its epoch may be 0 (unknown); the handshake tells it.
    pub fn join(&mut self, now: u64, spec: NodeSpec) {
        if spec.name == self.local.name {
            return;
        }
        self.detached = false;
        match self.peers.get_mut(&spec.name) {
            Some(p) => {
                // Known already: dial again now rather than at the next backoff.
                if p.status != PeerStatus::Up {
                    if p.spec.epoch == 0 {
                        p.spec.addrs = spec.addrs;
                    }
                    let min = self.timing.reconnect_min_backoff;
                    if let Some(l) = p.lanes.first_mut() {
                        if let Slot::Idle { .. } = l.slot {
                            l.slot = Slot::Idle { retry_at: now };
                            l.backoff = min;
                        }
                    }
                }
            }
            None => self.add_peer(now, spec),
        }
        self.dial_due(now);
    }

    /// Leave the cluster: tell every peer, let queued frames drain, forget
    /// every peer, and start a new incarnation (epoch + 1) that may join again.
    pub fn leave(&mut self) {
        let tomb = View {
            members: vec![],
            tombstones: vec![(self.local.name.clone(), self.local.epoch)],
        };
        for (name, p) in &self.peers {
            if p.status == PeerStatus::Up {
                self.actions.push_back(Action::Send {
                    peer: name.clone(),
                    msg: Control::Gossip(tomb.clone()),
                });
            }
        }
        self.forget_all("left the cluster");
        self.local.epoch += 1;
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
        if p.spec.epoch == 0 {
            // Never reached: nothing to tombstone, just forget it.
            self.forget_peer(name, "removed");
            return;
        }
        let epoch = p.spec.epoch;
        self.tombstones.insert(name.to_string(), epoch);
        if p.status == PeerStatus::Up {
            self.actions.push_back(Action::Send {
                peer: name.to_string(),
                msg: Control::Gossip(self.view()),
            });
        }
        self.forget_peer(name, "removed from the cluster");
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
    /// refusal by the other side.
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
            self.forget_peer(peer, "left the cluster");
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
        let wait = l.backoff + jitter % (l.backoff / 2 + 1);
        l.slot = Slot::Idle {
            retry_at: now + wait,
        };
        l.backoff = (l.backoff * 2).min(timing.reconnect_max_backoff);
        // A member we have never reached and cannot reach now is down: drop
        // what was queued for it rather than let it pile up while we redial.
        // (A duplicate means the other direction is connecting: not down.)
        if lane.is_control()
            && p.status == PeerStatus::Connecting
            && refusal != Some(Refusal::Duplicate)
        {
            p.status = PeerStatus::Down;
            self.actions.push_back(Action::Unroute {
                peer: peer.to_string(),
            });
        }
        // A peer that actively refuses us (cookie, name) is a configuration
        // problem worth a warning; an unreachable member is expected while
        // it is down, and redialed quietly.
        let level = match refusal {
            Some(Refusal::Duplicate) => Level::Debug,
            Some(_) => Level::Warning,
            None => Level::Info,
        };
        self.log(
            level,
            Some(peer),
            Some(lane),
            format!("dial failed ({reason}); retrying in {wait} ms"),
        );
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
            self.down(now, &peer, &format!("control connection closed: {reason}"));
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
            Control::Gossip(view) if current => self.merge(now, view),
            Control::Gossip(_) => {}
        }
        self.dial_due(now);
    }

    /// Advance time: heartbeats, failure detection, gossip, redials.
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
            self.down(now, &name, &format!("no heartbeat for {timeout} ms"));
        }
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

    fn view(&self) -> View {
        let mut members = vec![self.local.clone()];
        members.extend(
            self.peers
                .values()
                .filter(|p| p.spec.epoch != 0)
                .map(|p| p.spec.clone()),
        );
        View {
            members,
            tombstones: self
                .tombstones
                .iter()
                .map(|(n, e)| (n.clone(), *e))
                .collect(),
        }
    }

    fn flush_gossip(&mut self, now: u64) {
        if !self.gossip_dirty {
            return;
        }
        self.gossip_dirty = false;
        self.next_gossip = now + self.timing.gossip_interval;
        let view = self.view();
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
        Action::Route {
            peer: name.to_string(),
            lanes: plan(&self.local, &p.spec),
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
            },
        );
        let route = self.route_action(&name);
        self.actions.push_back(route);
        self.gossip_dirty = true;
    }

    /// Check an incarnation we are about to talk to against tombstones and
    /// what we know, and bring the membership up to date with it.
    fn admit(&mut self, now: u64, spec: &NodeSpec) -> Result<(), Refusal> {
        if spec.epoch == 0 {
            return Err(Refusal::Stale);
        }
        if self
            .tombstones
            .get(&spec.name)
            .is_some_and(|e| *e >= spec.epoch)
        {
            return Err(Refusal::Left);
        }
        match self.peers.get(&spec.name).map(|p| p.spec.epoch) {
            None => self.add_peer(now, spec.clone()),
            Some(0) => {
                // A spec typed in by a user: learn the real one, keep the state.
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
            Some(e) if e < spec.epoch => {
                // A new incarnation: the old one is gone for good.
                self.forget_peer(&spec.name, "restarted (new incarnation)");
                self.add_peer(now, spec.clone());
            }
            Some(e) if e > spec.epoch => return Err(Refusal::Stale),
            Some(_) => {}
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
                // Tell the newcomer everything we know, and everyone else
                // about the newcomer.
                self.actions.push_back(Action::Send {
                    peer: peer.to_string(),
                    msg: Control::Gossip(self.view()),
                });
                self.gossip_dirty = true;
            }
        }
        Ok(())
    }

    /// `peer` is unreachable: close its connections, drop its queues, redial
    /// its control lane with backoff.
    fn down(&mut self, now: u64, peer: &str, reason: &str) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let was_up = p.status == PeerStatus::Up;
        if p.status == PeerStatus::Down {
            return;
        }
        p.status = PeerStatus::Down;
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
            self.actions.push_back(Action::PeerDown {
                peer: peer.to_string(),
                reason: reason.to_string(),
            });
        }
        self.log(
            Level::Warning,
            Some(peer),
            None,
            format!("peer down: {reason}"),
        );
    }

    /// Drop `peer` from the membership. Its lanes drain and close; its
    /// connections are no longer ours to track.
    fn forget_peer(&mut self, peer: &str, reason: &str) {
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
            self.actions.push_back(Action::PeerDown {
                peer: peer.to_string(),
                reason: reason.to_string(),
            });
        }
        self.gossip_dirty = true;
    }

    fn forget_all(&mut self, reason: &str) {
        let names: Vec<String> = self.peers.keys().cloned().collect();
        for n in names {
            self.forget_peer(&n, reason);
        }
        self.gossip_dirty = false;
    }

    fn merge(&mut self, now: u64, view: View) {
        for (name, epoch) in view.tombstones {
            if name == self.local.name {
                if epoch >= self.local.epoch {
                    self.log(
                        Level::Notice,
                        None,
                        None,
                        "removed from the cluster by a peer".into(),
                    );
                    self.forget_all("this node was removed from the cluster");
                    self.local.epoch = epoch + 1;
                    self.detached = true;
                    return;
                }
                continue;
            }
            let known = self.tombstones.entry(name.clone()).or_insert(0);
            if epoch > *known {
                *known = epoch;
            }
            if self
                .peers
                .get(&name)
                .is_some_and(|p| p.spec.epoch != 0 && p.spec.epoch <= epoch)
            {
                self.forget_peer(&name, "left the cluster");
            }
        }
        for spec in view.members {
            if spec.name == self.local.name || spec.epoch == 0 {
                continue;
            }
            if self
                .tombstones
                .get(&spec.name)
                .is_some_and(|e| *e >= spec.epoch)
            {
                continue;
            }
            match self.peers.get(&spec.name).map(|p| p.spec.epoch) {
                None => self.add_peer(now, spec),
                Some(e) if e < spec.epoch => {
                    let _ = self.admit(now, &spec);
                }
                Some(_) => {}
            }
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

    fn spec(name: &str, epoch: u64, port: u16) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            epoch,
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
}
