//! The peer table and the connection plan: for every node the membership
//! wants connections to, its status, the slot of each lane of the plan
//! (idle, dialing, connected), dialing with jittered exponential backoff,
//! and collision settlement ([`collision`]).
//!
//! The table does not decide who is a member: the membership
//! ([`crate::membership`]) tells it which nodes to keep ([`PeerTable::keep`])
//! and which to drop ([`PeerTable::forget`]). It reports the status changes
//! it makes ([`PeerEvent`]) so that the failure detector and the membership
//! can follow.
//!
//! Invariants kept here:
//! - every peer has at most one connection per lane; when both sides dial the
//!   same lane, the connection dialed by the node with the smaller name wins,
//!   and both sides reach the same verdict without talking about it;
//! - a peer is `Up` exactly while its control lane is connected (the failure
//!   detector takes it down when it goes silent);
//! - only the node with the smaller name dials data lanes (so data lanes never
//!   collide); both sides dial the control lane, but a node that learns of a
//!   peer with a smaller name from gossip ([`PeerTable::keep`] with `defer`)
//!   waits one `reconnect_min_backoff` before its first dial, since that
//!   peer has most likely learned of it from the same gossip and is
//!   dialing: when a whole cluster meets a new node, one handshake per pair
//!   is made instead of two and a collision;
//! - a lane waiting to be redialed has an entry in the dial queue, so the
//!   table knows its next deadline without scanning every lane;
//! - every peer has a number ([`PeerId`]) for as long as it is in the
//!   table; a forgotten peer's number is reused only once its
//!   [`PeerEvent::Gone`] was taken ([`PeerTable::take_events`]).

pub mod collision;
pub mod peer;

use crate::action::{Action, Actions};
use crate::frame::Capabilities;
use crate::lane::{plan, plan_keys, shared_lane, LaneKey};
use crate::spec::NodeSpec;
use crate::types::{ConnId, DownReason, FastMap, Level, Millis, Name, PeerId};
use crate::wire::Refusal;
use collision::{settle, Settle};
use peer::{LaneState, Lanes, Peer};
pub use peer::{PeerStatus, PeerView, Slot};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A status change the table made, for the failure detector and the
/// membership: the peer's number and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The peer's control lane connected: it is up.
    Up(PeerId, Name),
    /// The peer went down (it was up, or it could not be reached).
    Down(PeerId, Name),
    /// The peer was dropped from the table (its number is free once this
    /// event is taken).
    Gone(PeerId, Name),
}

/// What a connection carries: a lane of a peer.
#[derive(Debug)]
struct Attached {
    /// The peer's number, and its name (held in place: every control
    /// message compares it).
    id: PeerId,
    peer: Name,
    /// The lane; `None` for the control lane (the first of every plan),
    /// which is what nearly every connection carries, so that it costs no
    /// allocation.
    lane: Option<Box<LaneKey>>,
}

impl Attached {
    fn control(&self) -> bool {
        self.lane.is_none()
    }
}

/// Every peer and its lanes.
#[derive(Debug)]
pub struct PeerTable {
    min_backoff: u64,
    max_backoff: u64,
    /// Peer numbers by name; sorted where order shows
    /// ([`PeerTable::up_peers`], [`PeerTable::views`]), else in this map's
    /// order (reproducible: it depends only on what was inserted).
    ids: FastMap<Name, PeerId>,
    /// Peers by number; `None`: a free number.
    slots: Vec<Option<Peer>>,
    /// Free numbers, reused last freed first.
    free: Vec<PeerId>,
    /// Numbers of peers forgotten since the last
    /// [`PeerTable::take_events`]: free once their `Gone` is taken.
    released: Vec<PeerId>,
    /// Every connection a lane holds: its peer and lane (a connection is
    /// here exactly while a slot holds it).
    conns: FastMap<ConnId, Attached>,
    /// `(retry_at, peer)` for lanes set idle: may hold stale entries (a
    /// spurious wake-up costs a look at one peer), never misses one.
    due: BinaryHeap<Reverse<(Millis, Name)>>,
    next_attempt: u64,
    events: Vec<PeerEvent>,
}

impl PeerTable {
    /// An empty table redialing with backoff in `min_backoff..=max_backoff`.
    pub fn new(min_backoff: u64, max_backoff: u64) -> Self {
        PeerTable {
            min_backoff,
            max_backoff,
            ids: FastMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            released: Vec::new(),
            conns: FastMap::default(),
            due: BinaryHeap::new(),
            next_attempt: 1,
            events: Vec::new(),
        }
    }

    // ------------------------------------------------------------ queries

    fn get(&self, name: &str) -> Option<&Peer> {
        let id = *self.ids.get(name)?;
        self.slots[id as usize].as_ref()
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Peer> {
        let id = *self.ids.get(name)?;
        self.slots[id as usize].as_mut()
    }

    /// Every peer, in the table's (reproducible) order, with its name.
    fn iter(&self) -> impl Iterator<Item = (&Name, &Peer)> {
        self.ids.iter().map(|(n, id)| {
            let p = self.slots[*id as usize].as_ref().expect("a number in use");
            (n, p)
        })
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `name` is in the table.
    pub fn contains(&self, name: &str) -> bool {
        self.ids.contains_key(name)
    }

    /// `name`'s number, while it is in the table.
    pub fn id(&self, name: &str) -> Option<PeerId> {
        self.ids.get(name).copied()
    }

    /// The name of the peer numbered `id`, if that number is in use.
    pub fn name_of(&self, id: PeerId) -> Option<&str> {
        let p = self.slots.get(id as usize)?.as_ref()?;
        Some(&p.spec.name)
    }

    /// `name`'s status.
    pub fn status(&self, name: &str) -> Option<PeerStatus> {
        self.get(name).map(|p| p.status)
    }

    /// `name`'s status and when it last changed.
    pub fn status_since(&self, name: &str) -> Option<(PeerStatus, Millis)> {
        self.get(name).map(|p| (p.status, p.since))
    }

    /// What is known of `name`.
    pub fn spec(&self, name: &str) -> Option<&NodeSpec> {
        self.get(name).map(|p| &p.spec)
    }

    /// Peers that are up, sorted by name.
    pub fn up_peers(&self) -> Vec<String> {
        let mut v = self.up_peers_unsorted();
        v.sort_unstable();
        v
    }

    /// Peers that are up, in no particular (but a reproducible) order.
    pub fn up_peers_unsorted(&self) -> Vec<String> {
        self.up_names().map(str::to_string).collect()
    }

    /// Names of the peers that are up, in the order of
    /// [`PeerTable::up_peers_unsorted`], without copying them.
    pub fn up_names(&self) -> impl Iterator<Item = &str> {
        self.iter()
            .filter(|(_, p)| p.status == PeerStatus::Up)
            .map(|(n, _)| n.as_str())
    }

    /// How many peers are up.
    pub fn up_count(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|p| p.status == PeerStatus::Up)
            .count()
    }

    /// Every peer (any status), sorted by name, for `info`.
    pub fn views(&self) -> impl Iterator<Item = PeerView<'_>> {
        let mut ps: Vec<&Peer> = self.slots.iter().flatten().collect();
        ps.sort_unstable_by(|a, b| a.spec.name.cmp(&b.spec.name));
        ps.into_iter().map(|p| PeerView {
            spec: &p.spec,
            status: p.status,
            lanes: p.lanes.iter().map(|l| (&l.key, l.slot)).collect(),
        })
    }

    /// The connection currently carrying `lane` to `peer`.
    pub fn lane_conn(&self, peer: &str, lane: &LaneKey) -> Option<ConnId> {
        let p = self.get(peer)?;
        p.lanes.find(lane).and_then(|l| match l.slot {
            Slot::Connected { conn, .. } => Some(conn),
            _ => None,
        })
    }

    /// The connection currently carrying `peer`'s control lane (the first
    /// lane of every plan).
    pub fn control_conn(&self, peer: &str) -> Option<ConnId> {
        match self.get(peer)?.lanes.control().slot {
            Slot::Connected { conn, .. } => Some(conn),
            _ => None,
        }
    }

    /// Whether `attempt` is the dial under way for `peer`'s `lane` (not one
    /// made before the peer was forgotten, or before the lane was dialed
    /// again).
    pub fn is_dialing(&self, peer: &str, lane: &LaneKey, attempt: u64) -> bool {
        self.get(peer)
            .and_then(|p| p.lanes.find(lane))
            .is_some_and(|l| l.slot == Slot::Dialing { attempt })
    }

    /// What the connection carrying `peer`'s control lane now agreed on in
    /// its handshake (`None` while none does).
    pub fn control_caps(&self, peer: &str) -> Option<Capabilities> {
        let p = self.get(peer)?;
        match p.lanes.control().slot {
            Slot::Connected { .. } => Some(p.control_caps),
            _ => None,
        }
    }

    /// Whether `conn` carries `peer`'s control lane now: as
    /// `control_conn(peer) == Some(conn)`, but found by the connection (an
    /// integer key, and one entry to read), as it is for every control
    /// message.
    pub fn is_control_conn(&self, peer: &str, conn: ConnId) -> bool {
        self.control_peer(peer, conn).is_some()
    }

    /// `peer`'s number if `conn` carries its control lane now (as
    /// [`PeerTable::is_control_conn`]).
    pub fn control_peer(&self, peer: &str, conn: ConnId) -> Option<PeerId> {
        let found = self
            .conns
            .get(&conn)
            .filter(|a| a.control() && a.peer.as_str() == peer)
            .map(|a| a.id);
        debug_assert_eq!(found.is_some(), self.control_conn(peer) == Some(conn));
        debug_assert!(found.is_none() || found == self.id(peer));
        found
    }

    /// The status changes made since the last call. The numbers of the
    /// peers they report gone are free from now on.
    pub fn take_events(&mut self) -> Vec<PeerEvent> {
        self.free.append(&mut self.released);
        std::mem::take(&mut self.events)
    }

    /// When the next dial is due (possibly early: a wake-up then finds
    /// nothing to do).
    pub fn next_deadline(&self) -> Option<Millis> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    // ------------------------------------------------------------ changes

    fn idle(
        due: &mut BinaryHeap<Reverse<(Millis, Name)>>,
        name: &str,
        l: &mut LaneState,
        at: Millis,
    ) {
        l.slot = Slot::Idle { retry_at: at };
        due.push(Reverse((at, Name::new(name))));
    }

    fn lanes_for(&self, local: &NodeSpec, spec: &NodeSpec, now: Millis) -> Vec<LaneState> {
        let plan = plan(local, spec);
        plan_keys(local, spec)
            .into_iter()
            .map(|key| {
                let shared = plan
                    .iter()
                    .any(|(c, n)| *c == key.channel && shared_lane(*n) == Some(key.index));
                LaneState {
                    shared,
                    ..LaneState::idle(key, now, self.min_backoff)
                }
            })
            .collect()
    }

    fn route_action(&self, local: &NodeSpec, name: &str) -> Action {
        let p = self.get(name).expect("peer exists");
        // A spec a user typed in does not tell the peer's channels or limit:
        // its messages wait unplanned until the handshake tells them.
        let known = p.spec.incarnation != 0;
        Action::Route {
            peer: Name::new(name),
            lanes: known.then(|| plan(local, &p.spec)),
            max_frame: known.then_some(p.spec.max_frame),
        }
    }

    /// Add the peer `spec` describes, its lanes to be dialed from
    /// `first_dial` on.
    fn add(
        &mut self,
        now: Millis,
        first_dial: Millis,
        local: &NodeSpec,
        spec: NodeSpec,
        out: &mut Actions,
    ) {
        self.add_scheduled(now, first_dial, true, local, spec, out)
    }

    /// [`PeerTable::add`]; `schedule`: whether to put the first dial in
    /// the queue of due dials (`false`: an entry for this name at
    /// `first_dial` or earlier is there already).
    fn add_scheduled(
        &mut self,
        now: Millis,
        first_dial: Millis,
        schedule: bool,
        local: &NodeSpec,
        spec: NodeSpec,
        out: &mut Actions,
    ) {
        let name = Name::new(&spec.name);
        let lanes = self.lanes_for(local, &spec, first_dial);
        let peer = Peer {
            spec,
            status: PeerStatus::Connecting,
            lanes: Lanes::new(lanes),
            since: now,
            failures: 0,
            control_caps: Capabilities::NONE,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(peer);
                id
            }
            None => {
                self.slots.push(Some(peer));
                PeerId::try_from(self.slots.len() - 1).expect("peers are bounded")
            }
        };
        self.ids.insert(name.clone(), id);
        if schedule {
            self.due.push(Reverse((first_dial, name.clone())));
        }
        out.push(self.route_action(local, &name));
    }

    /// Keep connections to the node `spec` describes: add it; or learn its
    /// real description if only a typed-in contact (incarnation 0) was
    /// known (keeping its state and what is queued); or take a new
    /// incarnation in place of the known one (what was queued for the old
    /// one is dropped); or, for the same incarnation, take its addresses.
    ///
    /// With `defer` (a node learned from gossip), a new peer whose name is
    /// smaller than this node's is first dialed one `reconnect_min_backoff`
    /// from now (it is most likely dialing this node already; see the
    /// module's invariants); any other at once.
    pub fn keep(
        &mut self,
        now: Millis,
        local: &NodeSpec,
        spec: NodeSpec,
        defer: bool,
        out: &mut Actions,
    ) {
        let first_dial = if defer && spec.name.as_str() < local.name.as_str() {
            now + self.min_backoff
        } else {
            now
        };
        match self.get(spec.name.as_str()).map(|p| p.spec.incarnation) {
            None => self.add(now, first_dial, local, spec, out),
            Some(0) if spec.incarnation != 0 => {
                let lanes = self.lanes_for(local, &spec, now);
                let id = self.id(&spec.name).expect("peer exists");
                let p = self.slots[id as usize].as_mut().expect("a number in use");
                p.lanes.replan(lanes);
                p.spec = spec;
                self.due.push(Reverse((now, Name::new(&p.spec.name))));
                let name = p.spec.name.clone();
                out.push(self.route_action(local, &name));
            }
            Some(known) if known != spec.incarnation && spec.incarnation != 0 => {
                // A member never reached in this incarnation keeps its
                // redial schedule across a new one heard of second hand
                // (as if its dial under way had failed): a peer with the
                // cookie that gossips members whose incarnations change
                // with every view made this node dial each of them at once
                // every time (a review: 1,023 dials per 30 KB view, 86,427
                // connections in 5.5 s to an address it chose). A member
                // that was up, or is down, is dialed at once as before: a
                // node that restarted comes back without waiting.
                // (an idle lane's next dial is queued already: one entry
                // per name, not one per incarnation heard of)
                let carried = self
                    .get(spec.name.as_str())
                    .filter(|p| p.status == PeerStatus::Connecting)
                    .map(|p| {
                        let l = p.lanes.control();
                        match l.slot {
                            Slot::Idle { retry_at } => (retry_at, l.backoff, true),
                            _ => (
                                now + l.backoff,
                                l.backoff.saturating_mul(2).min(self.max_backoff),
                                false,
                            ),
                        }
                    });
                self.forget(&spec.name, DownReason::Restarted, out);
                let name = Name::new(&spec.name);
                match carried {
                    Some((next, backoff, queued)) => {
                        let queued = queued && first_dial <= next;
                        self.add_scheduled(now, first_dial.max(next), !queued, local, spec, out);
                        if let Some(p) = self.get_mut(name.as_str()) {
                            p.lanes.control_mut().backoff = backoff;
                        }
                    }
                    None => self.add(now, first_dial, local, spec, out),
                }
            }
            Some(_) => {
                if let Some(p) = self.get_mut(spec.name.as_str()) {
                    p.spec.addrs = spec.addrs;
                }
            }
        }
    }

    /// A user asked to join through `contact`: keep it, and if it is known
    /// but not up, dial it now rather than at the next backoff.
    pub fn contact(&mut self, now: Millis, local: &NodeSpec, contact: NodeSpec, out: &mut Actions) {
        let min = self.min_backoff;
        let Some(id) = self.id(&contact.name) else {
            return self.add(now, now, local, contact, out);
        };
        let p = self.slots[id as usize].as_mut().expect("a number in use");
        if p.status == PeerStatus::Up {
            return;
        }
        if p.spec.incarnation == 0 || p.status == PeerStatus::Down {
            p.spec.addrs = contact.addrs;
        }
        p.since = now;
        let name = p.spec.name.clone();
        let l = p.lanes.control_mut();
        if let Slot::Idle { .. } = l.slot {
            Self::idle(&mut self.due, &name, l, now);
            l.backoff = min;
        }
    }

    /// Drop `peer`. Its lanes drain and close; its connections are no
    /// longer ours to track.
    pub fn forget(&mut self, peer: &str, reason: DownReason, out: &mut Actions) {
        let Some((name, id)) = self.ids.remove_entry(peer) else {
            return;
        };
        let p = self.slots[id as usize].take().expect("a number in use");
        self.released.push(id);
        for l in p.lanes.iter() {
            if let Slot::Connected { conn, .. } = l.slot {
                self.conns.remove(&conn);
            }
        }
        out.push(Action::Unroute {
            peer: Name::new(peer),
        });
        if p.status == PeerStatus::Up {
            node_down(out, Level::Notice, peer, reason);
        }
        self.events.push(PeerEvent::Gone(id, name));
    }

    /// Drop every peer.
    pub fn forget_all(&mut self, reason: DownReason, out: &mut Actions) {
        let mut names: Vec<Name> = self.ids.keys().cloned().collect();
        names.sort_unstable();
        for n in names {
            self.forget(&n, reason.clone(), out);
        }
    }

    /// `peer` is unreachable: close its connections, drop its queues, redial
    /// its control lane with backoff.
    pub fn down(&mut self, now: Millis, peer: &str, reason: DownReason, out: &mut Actions) {
        let Some(id) = self.id(peer) else {
            return;
        };
        let p = self.slots[id as usize].as_mut().expect("a number in use");
        let was_up = p.status == PeerStatus::Up;
        if p.status == PeerStatus::Down {
            return;
        }
        p.status = PeerStatus::Down;
        p.since = now;
        let min = self.min_backoff;
        let mut closes = Vec::new();
        for (_, l) in p.lanes.iter_mut() {
            if let Slot::Connected { conn, .. } = l.slot {
                closes.push(conn);
            }
            Self::idle(&mut self.due, peer, l, now + min);
            l.backoff = min;
        }
        for conn in closes {
            self.conns.remove(&conn);
            out.push(Action::Close {
                conn,
                reason: format!("peer down: {reason}"),
                malformed: false,
            });
        }
        out.push(Action::Unroute {
            peer: Name::new(peer),
        });
        self.events.push(PeerEvent::Down(id, Name::new(peer)));
        if was_up {
            // A peer that said it was stopping did not fail.
            let level = if reason == DownReason::Stopped {
                Level::Notice
            } else {
                Level::Warning
            };
            node_down(out, level, peer, reason);
        }
    }

    /// Put `conn` in `peer`'s `lane` slot, settling collisions. A control
    /// lane brings the peer up. `caps`: what the connection agreed on in
    /// its handshake.
    #[allow(clippy::too_many_arguments)]
    pub fn install(
        &mut self,
        now: Millis,
        local: &NodeSpec,
        conn: ConnId,
        peer: &str,
        lane: &LaneKey,
        dialed_by_me: bool,
        caps: Capabilities,
        out: &mut Actions,
    ) -> Result<(), Refusal> {
        let me_preferred = local.name.as_str() < peer;
        let min = self.min_backoff;
        let id = self.id(peer).ok_or(Refusal::Unavailable)?;
        let p = self.slots[id as usize].as_mut().expect("a number in use");
        if !lane.is_control() && p.status != PeerStatus::Up {
            return Err(Refusal::Unavailable);
        }
        let l = p.lanes.find_mut(lane).ok_or(Refusal::UnknownLane)?;
        let replaced = match settle(l.slot, dialed_by_me, me_preferred) {
            Settle::Take => None,
            Settle::Replace(old) => Some(old),
            Settle::Refuse => return Err(Refusal::Duplicate),
        };
        l.slot = Slot::Connected { conn, dialed_by_me };
        l.backoff = min;
        self.conns.insert(
            conn,
            Attached {
                id,
                peer: Name::new(peer),
                lane: (!lane.is_control()).then(|| Box::new(lane.clone())),
            },
        );
        if let Some(old) = replaced {
            self.conns.remove(&old);
            out.push(Action::Close {
                conn: old,
                reason: "replaced by a newer connection for the same lane".into(),
                malformed: false,
            });
        }
        if lane.is_control() {
            let p = self.slots[id as usize].as_mut().expect("a number in use");
            p.control_caps = caps;
            if p.status != PeerStatus::Up {
                let was_down = p.status == PeerStatus::Down;
                p.status = PeerStatus::Up;
                p.since = now;
                p.failures = 0;
                for l in p.lanes.data_mut() {
                    Self::idle(&mut self.due, peer, l, now);
                    l.backoff = min;
                }
                if was_down {
                    out.push(self.route_action(local, peer));
                }
                out.push(Action::PeerUp {
                    peer: Name::new(peer),
                });
                out.log(Level::Notice, Some(peer), None, "node up".into());
                self.events.push(PeerEvent::Up(id, Name::new(peer)));
            }
        }
        Ok(())
    }

    /// Our dial `attempt` of `peer`'s `lane` failed: back off (jittered
    /// within `[backoff / 2, backoff]` by `jitter`, doubling up to the
    /// maximum), mark a member never reached as down, report refusals of
    /// the control lane, and log the 1st, 2nd, 4th, 8th... failure.
    #[allow(clippy::too_many_arguments)]
    pub fn dial_failed(
        &mut self,
        now: Millis,
        peer: &str,
        lane: &LaneKey,
        attempt: u64,
        refusal: Option<Refusal>,
        reason: &str,
        jitter: u64,
        out: &mut Actions,
    ) {
        let max = self.max_backoff;
        let Some(id) = self.id(peer) else {
            return;
        };
        let p = self.slots[id as usize].as_mut().expect("a number in use");
        let Some(l) = p.lanes.find_mut(lane) else {
            return;
        };
        if l.slot != (Slot::Dialing { attempt }) {
            return;
        }
        // A node of a build before the shared lane does not know it: its
        // channel's lanes carry everything on their own connections (they
        // move to the shared lane only once it connects), and it is not
        // dialed again while this peer's plan stands.
        if l.shared && refusal == Some(Refusal::UnknownLane) {
            p.lanes.forget(lane);
            out.log(
                Level::Info,
                Some(peer),
                Some(lane),
                "the peer has no shared lane for this channel (an earlier build): its lanes send \
                 everything on their own connections"
                    .into(),
            );
            return;
        }
        // Jitter within [backoff / 2, backoff]: never past the maximum.
        let half = l.backoff / 2;
        let wait = half + jitter % (l.backoff - half + 1);
        Self::idle(&mut self.due, peer, l, now + wait);
        l.backoff = (l.backoff * 2).min(max);
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
        p.failures += 1;
        let failures = p.failures;
        if newly_down {
            out.push(Action::Unroute {
                peer: Name::new(peer),
            });
            self.events.push(PeerEvent::Down(id, Name::new(peer)));
        }
        if let Some(r) = &refusal {
            if lane.is_control() {
                out.push(Action::Refused {
                    peer: Name::new(peer),
                    refusal: r.clone(),
                });
            }
        }
        if failures.is_power_of_two() {
            // A peer that actively refuses us (cookie, name) is a
            // configuration problem worth a warning; an unreachable member
            // is expected while it is down, and a data lane refused as
            // unavailable is too (the peer has not seen our control lane
            // up yet, or it is stopping).
            let transient = refusal == Some(Refusal::Unavailable) && !lane.is_control();
            let level = if refusal.is_some() && !transient {
                Level::Warning
            } else {
                Level::Info
            };
            let n = if failures > 1 {
                format!(" ({failures} failed dials in a row)")
            } else {
                String::new()
            };
            out.log(
                level,
                Some(peer),
                Some(lane),
                format!("dial failed ({reason}){n}; retrying in {wait} ms"),
            );
        }
    }

    /// Connection `conn` closed. Returns its peer if it carried a control
    /// lane (the peer is then down: the caller says why).
    pub fn closed(
        &mut self,
        now: Millis,
        conn: ConnId,
        reason: &str,
        out: &mut Actions,
    ) -> Option<String> {
        let a = self.conns.remove(&conn)?;
        let min = self.min_backoff;
        let p = self.slots[a.id as usize].as_mut()?;
        if p.spec.name != a.peer.as_str() {
            // (Never: a peer's connections leave this map with it.)
            return None;
        }
        let l = match &a.lane {
            None => p.lanes.control_mut(),
            Some(k) => p.lanes.find_mut(k)?,
        };
        if !matches!(l.slot, Slot::Connected { conn: c, .. } if c == conn) {
            return None;
        }
        Self::idle(&mut self.due, &a.peer, l, now + min);
        let Some(lane) = &a.lane else {
            return Some(a.peer.to_string());
        };
        out.log(
            Level::Info,
            Some(&a.peer),
            Some(lane),
            format!("lane closed: {reason}"),
        );
        None
    }

    /// How many dials are queued (stale entries included).
    #[cfg(test)]
    pub(crate) fn queued_dials(&self) -> usize {
        self.due.len()
    }

    /// Start every dial that is due.
    pub fn dial_due(&mut self, now: Millis, local: &NodeSpec, out: &mut Actions) {
        while let Some(Reverse((at, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, name))) = self.due.pop() else {
                break;
            };
            let Some(id) = self.ids.get(name.as_str()) else {
                continue;
            };
            let p = self.slots[*id as usize].as_mut().expect("a number in use");
            let dial_data = p.status == PeerStatus::Up && local.name.as_str() < name.as_str();
            for (control, l) in p.lanes.iter_mut() {
                let Slot::Idle { retry_at } = l.slot else {
                    continue;
                };
                let wanted = if control {
                    p.status != PeerStatus::Up
                } else {
                    dial_data
                };
                if wanted && retry_at <= now {
                    let attempt = self.next_attempt;
                    self.next_attempt += 1;
                    l.slot = Slot::Dialing { attempt };
                    out.push(Action::Dial {
                        peer: name.clone(),
                        addrs: p.spec.addrs.clone(),
                        lane: l.key.clone(),
                        attempt,
                    });
                }
            }
        }
    }
}

/// Report that `peer`, which was up, is down: a log line at `level`, and
/// the `nodedown`.
fn node_down(out: &mut Actions, level: Level, peer: &str, reason: DownReason) {
    out.log(level, Some(peer), None, format!("node down: {reason}"));
    out.push(Action::PeerDown {
        peer: Name::new(peer),
        reason,
    });
}
