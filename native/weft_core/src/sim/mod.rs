//! A deterministic simulator: many [`Node`]s over a virtual network.
//!
//! One seed fixes everything: link latencies, the order of simultaneous
//! events, every node's jitter, every handshake nonce. Connections deliver
//! in order per direction; a crash either resets the peer's connections (as
//! a killed process does) or leaves them silent (as a cut cable does), so
//! both failure paths of the failure detector are exercised.
//!
//! Connections carry the real handshake: the frames of
//! [`crate::handshake::Dialer`] and [`crate::handshake::Acceptor`] (nonces,
//! cookie proofs, refusals), then control frames in the real encoding
//! ([`crate::wire::encode_control`]). A bug in the handshake rules shows
//! here as it would between real nodes. A handshake that gets no answer
//! fails after [`HANDSHAKE_TIMEOUT`], as the transport's does.
//!
//! Time jumps from event to event: each node is woken at its own
//! [`Node::next_deadline`], never on a fixed tick. Data lanes are simulated
//! as connections that carry nothing (only the control plane matters here);
//! a node with no channels has only its control lane.

use crate::action::Action;
use crate::handshake::{Acceptor, AcceptorStep, CookieKey, Dialer, DialerStep, HandshakeError};
use crate::lane::LaneKey;
use crate::membership::Membership;
use crate::node::Node;
use crate::peers::{PeerStatus, Slot};
use crate::rng::Rng;
use crate::spec::{ChannelSpec, NodeSpec};
use crate::types::BuildFastHasher;
use crate::types::{ConnId, Millis, Name, Timing};
use crate::wire::{decode_control, encode_control, Control, Refusal};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;

/// How long a dialer waits for the rest of a handshake.
pub const HANDSHAKE_TIMEOUT: Millis = 5000;

#[derive(Debug)]
enum Ev {
    /// The node's deadline (valid if `gen` is the node's current one).
    Timeout {
        gen: u64,
    },
    /// A frame on `conn`: a handshake body until the receiving end is
    /// established, then a control body.
    Frame {
        conn: ConnId,
        body: Vec<u8>,
    },
    /// A heartbeat on an established connection (its encoding is one byte;
    /// a million of them a second are not worth an allocation each).
    Heartbeat {
        conn: ConnId,
    },
    /// A dial reached no running node: `(peer, lane, attempt)`.
    Unreachable(Box<(Name, LaneKey, u64)>),
    /// The dialer's handshake timer.
    HandshakeTimeout {
        conn: ConnId,
    },
    Closed {
        conn: ConnId,
    },
}

struct Entry {
    node: usize,
    inc: u64,
    ev: Ev,
}

struct SimNode {
    name: String,
    addr: SocketAddr,
    /// Its cookie, as the handshake's key (prepared once).
    key: CookieKey,
    channels: Vec<ChannelSpec>,
    inc: u64,
    node: Option<Node>,
    /// The deadline a `Timeout` is scheduled for, and its generation.
    timer: Option<Millis>,
    timer_gen: u64,
    /// Open connections with an end here.
    conns: HashSet<ConnId, BuildFastHasher>,
    /// The membership of each of its lives (`None`: the full mesh).
    membership: Option<MakeMembership>,
    /// The capabilities it states in handshakes (all of this build's,
    /// unless a test makes it a node of an earlier build).
    caps: crate::Capabilities,
}

/// Makes a node's membership for each of its lives (a restart starts a
/// fresh one).
pub type MakeMembership = std::sync::Arc<dyn Fn(&Timing) -> Box<dyn Membership>>;

/// A dial under way.
struct Dialing {
    dialer: Dialer,
    peer: Name,
    lane: LaneKey,
    attempt: u64,
}

/// The handshake state of one end of a connection.
enum End {
    /// Boxed, as the acceptor: a million connections stay small.
    Dialing(Box<Dialing>),
    Accepting(Box<Acceptor>),
    /// Authenticated (the core knows the connection), or refused and
    /// about to close.
    Done,
}

/// One connection: a cache line (every heartbeat reads one on sending and
/// one on arrival, out of a million).
#[repr(align(64))]
struct SimConn {
    /// `(node, incarnation)`: the dialer first (see [`SimConn::end`]).
    ends: [(u32, u32); 2],
    state: [End; 2],
    control: bool,
    /// Until either end closes it (or dies).
    open: bool,
    /// The ends that closed it themselves: they read nothing more. Frames
    /// already on their way to the other end still arrive (as over TCP).
    shut: [bool; 2],
    /// When the last frame sent each way arrives (virtual ms).
    last: [u32; 2],
}

const _: () = assert!(std::mem::size_of::<SimConn>() == 64);

impl SimConn {
    /// End `k` (0: the dialer): its node and incarnation.
    fn end(&self, k: usize) -> (usize, u64) {
        let (node, inc) = self.ends[k];
        (node as usize, u64::from(inc))
    }
}

/// Every connection ever opened, by id (ids are handed out in order from 1).
#[derive(Default)]
struct Conns(Vec<SimConn>);

impl Conns {
    fn get(&self, id: &ConnId) -> Option<&SimConn> {
        self.0.get((*id as usize).wrapping_sub(1))
    }

    fn get_mut(&mut self, id: &ConnId) -> Option<&mut SimConn> {
        self.0.get_mut((*id as usize).wrapping_sub(1))
    }

    fn insert(&mut self, id: ConnId, c: SimConn) {
        assert_eq!(id as usize, self.0.len() + 1, "connection ids in order");
        self.0.push(c);
    }
}

/// Counts of what the virtual connections carried.
#[derive(Debug, Clone, Copy, Default)]
pub struct Carried {
    /// Handshake frames.
    pub handshake_frames: u64,
    /// Heartbeats.
    pub heartbeats: u64,
    /// Membership messages, and their bytes.
    pub membership: u64,
    /// Bytes of membership messages.
    pub membership_bytes: u64,
}

/// A membership event seen by a node, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// When.
    pub at: u64,
    /// The node that saw it.
    pub node: String,
    /// Up or down.
    pub up: bool,
    /// The peer it is about.
    pub peer: String,
}

/// The simulated cluster.
pub struct Sim {
    now: Millis,
    rng: Rng,
    timing: Timing,
    latency: (u64, u64),
    nodes: Vec<SimNode>,
    by_addr: BTreeMap<SocketAddr, usize>,
    /// Events by time; within a millisecond, in the order they were
    /// scheduled. (A calendar of buckets: most events land a few ms ahead,
    /// and a heap of a million in-flight heartbeats costs a cache miss per
    /// level.)
    queue: BTreeMap<Millis, VecDeque<Entry>>,
    /// Emptied buckets, kept for reuse: a bucket holds up to a few
    /// thousand events, and allocating (and growing) one every millisecond
    /// would cost more than the events in it.
    spare: Vec<VecDeque<Entry>>,
    conns: Conns,
    next_conn: ConnId,
    tracing: bool,
    /// Events processed so far.
    pub events: u64,
    /// What the connections carried so far.
    pub carried: Carried,
    /// Every PeerUp / PeerDown, in order.
    pub seen: Vec<Seen>,
    /// Every join confirmed (`Action::Joined`), in order: when, the node,
    /// the contact.
    pub joined: Vec<(Millis, String, String)>,
    /// Every time a node left or was removed (`Action::ThisNodeLeft`), in
    /// order: when, the node.
    pub left: Vec<(Millis, String)>,
    /// A line per processed event, to compare runs (see [`Sim::set_trace`]).
    pub trace: Vec<String>,
    refused: Vec<(String, String, Refusal)>,
}

impl Sim {
    /// An empty cluster; link latency is drawn in `latency.0..=latency.1` ms.
    pub fn new(seed: u64, timing: Timing, latency: (u64, u64)) -> Self {
        Sim {
            now: 0,
            rng: Rng::new(seed),
            timing,
            latency,
            nodes: Vec::new(),
            by_addr: BTreeMap::new(),
            queue: BTreeMap::new(),
            spare: Vec::new(),
            conns: Conns::default(),
            next_conn: 1,
            tracing: true,
            events: 0,
            carried: Carried::default(),
            seen: Vec::new(),
            joined: Vec::new(),
            left: Vec::new(),
            trace: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Record (the default) or not a trace line per event: large runs save
    /// the time and memory.
    pub fn set_trace(&mut self, on: bool) {
        self.tracing = on;
    }

    /// Virtual time, in ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Add and start a node; returns its index.
    pub fn add_node(&mut self, name: &str, cookie: &str, channels: &[(&str, u16)]) -> usize {
        self.add_node_with(name, cookie, channels, None)
    }

    /// The address the node added `i`-th has (or will have).
    pub fn addr_of(i: usize) -> SocketAddr {
        format!("10.{}.{}.{}:9000", i / 62500, i / 250 % 250, i % 250 + 1)
            .parse()
            .expect("valid address")
    }

    /// As [`Sim::add_node`], with the membership `membership` makes
    /// (`None`: the full mesh), and the heartbeat-timeout detector.
    pub fn add_node_with(
        &mut self,
        name: &str,
        cookie: &str,
        channels: &[(&str, u16)],
        membership: Option<MakeMembership>,
    ) -> usize {
        let i = self.nodes.len();
        let addr = Self::addr_of(i);
        self.by_addr.insert(addr, i);
        self.nodes.push(SimNode {
            name: name.to_string(),
            addr,
            key: CookieKey::new(cookie.as_bytes()),
            channels: channels
                .iter()
                .map(|(n, p)| ChannelSpec {
                    name: n.to_string(),
                    parallelism: *p,
                })
                .collect(),
            inc: 0,
            node: None,
            timer: None,
            timer_gen: 0,
            conns: HashSet::default(),
            membership,
            caps: crate::Capabilities::SUPPORTED,
        });
        self.start(i);
        i
    }

    /// Make node `i` state `caps` in its handshakes from now on (a node of
    /// an earlier build lacks some of this build's).
    pub fn set_caps(&mut self, i: usize, caps: crate::Capabilities) {
        self.nodes[i].caps = caps;
    }

    fn start(&mut self, i: usize) {
        let incarnation = self.rng.next_u64() | 1;
        self.start_as(i, incarnation);
    }

    fn start_as(&mut self, i: usize, incarnation: u64) {
        let n = &mut self.nodes[i];
        n.inc += 1;
        n.timer = None;
        let spec = NodeSpec {
            name: n.name.clone(),
            incarnation,
            addrs: vec![n.addr],
            channels: n.channels.clone(),
            max_frame: 1 << 20,
        };
        let seed = self.rng.next_u64();
        n.node = Some(match &n.membership {
            None => Node::new(spec, self.timing.clone(), seed),
            Some(make) => Node::with_overlay(spec, self.timing.clone(), seed, make(&self.timing)),
        });
        self.drain(i);
    }

    /// The node at `i`, if running.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].node.as_ref()
    }

    /// Name of node `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// What a user would pass to `join`: name and address, incarnation unknown.
    pub fn contact(&self, i: usize) -> NodeSpec {
        let n = &self.nodes[i];
        NodeSpec {
            name: n.name.clone(),
            incarnation: 0,
            addrs: vec![n.addr],
            channels: n.channels.clone(),
            max_frame: 0,
        }
    }

    /// Node `i` joins the cluster of node `j`.
    pub fn join(&mut self, i: usize, j: usize) {
        let contact = self.contact(j);
        let now = self.now;
        if let Some(n) = self.nodes[i].node.as_mut() {
            n.join(now, contact);
        }
        self.drain(i);
    }

    /// Node `i` leaves.
    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        if let Some(n) = self.nodes[i].node.as_mut() {
            n.leave(now);
        }
        self.drain(i);
    }

    /// Node `i` removes node `j` from the cluster.
    pub fn remove(&mut self, i: usize, j: usize) {
        let now = self.now;
        let name = self.nodes[j].name.clone();
        if let Some(n) = self.nodes[i].node.as_mut() {
            n.remove(now, &name);
        }
        self.drain(i);
    }

    /// Stop node `i` abruptly. With `reset`, its peers see its connections
    /// close (a killed process); without, they go silent (a lost host).
    pub fn crash(&mut self, i: usize, reset: bool) {
        self.nodes[i].node = None;
        let mut ids: Vec<ConnId> = std::mem::take(&mut self.nodes[i].conns)
            .into_iter()
            .collect();
        ids.sort_unstable();
        for id in ids {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            if !c.open {
                continue;
            }
            c.open = false;
            let (other, inc) = c.end(usize::from(c.end(0).0 == i));
            self.nodes[other].conns.remove(&id);
            if reset {
                let at = self.now + self.lat();
                self.schedule(at, other, inc, Ev::Closed { conn: id });
            }
        }
    }

    /// Start node `i` again, as a new incarnation that knows nobody.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].node.is_none(), "crash it first");
        self.start(i);
    }

    /// Start node `i` again with this incarnation number (for example one
    /// smaller than the last, as a wall clock set back would have given).
    pub fn restart_as(&mut self, i: usize, incarnation: u64) {
        assert!(self.nodes[i].node.is_none(), "crash it first");
        self.start_as(i, incarnation);
    }

    /// Every refusal reported to node `i`'s waiters, in order.
    pub fn refusals(&self) -> &[(String, String, Refusal)] {
        &self.refused
    }

    /// Run until virtual time `until`.
    pub fn run_until(&mut self, until: u64) {
        while let Some(first) = self.queue.first_entry() {
            let at = *first.key();
            if at > until {
                break;
            }
            // The whole bucket, in order; events scheduled for this same
            // millisecond meanwhile go to a new bucket at `at`, which comes
            // next (so the order of scheduling is kept).
            let mut bucket = first.remove();
            self.now = at;
            while let Some(Entry { node, inc, ev }) = bucket.pop_front() {
                self.step(at, node, inc, ev);
            }
            if self.spare.len() < 16 {
                self.spare.push(bucket);
            }
        }
        self.now = until;
    }

    /// Process one event, taken from the queue at time `at`.
    fn step(&mut self, at: Millis, i: usize, inc: u64, ev: Ev) {
        if self.nodes[i].inc != inc || self.nodes[i].node.is_none() {
            // Addressed to a crashed or earlier incarnation.
            return;
        }
        if let Ev::Timeout { gen } = ev {
            if gen != self.nodes[i].timer_gen {
                return;
            }
            self.nodes[i].timer = None;
        }
        self.events += 1;
        if self.tracing {
            let line = format!("{at} {} {}", self.nodes[i].name, self.short(&ev));
            self.trace.push(line);
        }
        self.deliver(i, ev);
        self.drain(i);
    }

    /// Run for `ms` more milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let t = self.now + ms;
        self.run_until(t);
    }

    /// How many peers node `i` sees up (0 if it is not running).
    pub fn up_count(&self, i: usize) -> usize {
        self.node(i).map_or(0, |n| n.up_count())
    }

    /// Whether node `i` sees the node named `peer` up.
    pub fn sees_up(&self, i: usize, peer: &str) -> bool {
        self.node(i)
            .is_some_and(|n| n.status(peer) == Some(PeerStatus::Up))
    }

    /// Names of the peers node `i` sees up, sorted.
    pub fn up(&self, i: usize) -> Vec<String> {
        self.node(i).map(|n| n.up_peers()).unwrap_or_default()
    }

    /// Check that between every two running nodes that see each other up,
    /// every lane of the plan is connected, and by the same connection on
    /// both sides. Returns a description of the first mismatch.
    pub fn check_lanes(&self) -> Result<(), String> {
        for a in &self.nodes {
            let Some(na) = &a.node else { continue };
            for pv in na.peers() {
                if pv.status != PeerStatus::Up {
                    continue;
                }
                let j = self
                    .nodes
                    .iter()
                    .position(|n| n.name == pv.spec.name)
                    .ok_or("unknown peer")?;
                let Some(nb) = &self.nodes[j].node else {
                    return Err(format!("{} sees dead {} up", a.name, pv.spec.name));
                };
                for (lane, slot) in &pv.lanes {
                    let Slot::Connected { conn, .. } = slot else {
                        return Err(format!(
                            "{}->{} {:?} is {:?}",
                            a.name, pv.spec.name, lane, slot
                        ));
                    };
                    if nb.lane_conn(&a.name, lane) != Some(*conn) {
                        return Err(format!(
                            "{}->{} {:?}: conn {} here, {:?} there",
                            a.name,
                            pv.spec.name,
                            lane,
                            conn,
                            nb.lane_conn(&a.name, lane)
                        ));
                    }
                    if !self.conns.get(conn).is_some_and(|c| c.open) {
                        return Err(format!("{}: conn {} is closed", a.name, conn));
                    }
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ internals

    fn lat(&mut self) -> u64 {
        let (lo, hi) = self.latency;
        lo + self.rng.below(hi - lo + 1)
    }

    fn nonce(&mut self) -> [u8; 32] {
        let mut n = [0u8; 32];
        for c in n.chunks_mut(8) {
            c.copy_from_slice(&self.rng.next_u64().to_be_bytes());
        }
        n
    }

    fn schedule(&mut self, at: Millis, node: usize, inc: u64, ev: Ev) {
        let spare = &mut self.spare;
        self.queue
            .entry(at)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push_back(Entry { node, inc, ev });
    }

    /// Which end of `conn` node `i` is.
    fn side(c: &SimConn, i: usize) -> usize {
        usize::from(c.end(0).0 != i)
    }

    /// Send along `conn` from node `from`, in order.
    fn send_on(&mut self, conn: ConnId, from: usize, ev: Ev) {
        let lat = self.lat();
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        let dir = Self::side(c, from);
        let at = (now + lat).max(u64::from(c.last[dir]));
        c.last[dir] = u32::try_from(at).expect("virtual time within 49 days");
        let (to, inc) = c.end(1 - dir);
        self.schedule(at, to, inc, ev);
    }

    fn close_conn(&mut self, conn: ConnId, by: usize) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        let ends = [c.end(0), c.end(1)];
        let side = Self::side(c, by);
        self.send_on(conn, by, Ev::Closed { conn });
        let c = self.conns.get_mut(&conn).expect("conn");
        c.open = false;
        c.shut[side] = true;
        for (n, _) in ends {
            self.nodes[n].conns.remove(&conn);
        }
    }

    fn core(&mut self, i: usize) -> &mut Node {
        self.nodes[i].node.as_mut().expect("running node")
    }

    /// A dial failed at node `i` (the dialing end of `conn`, if it still
    /// dials): tell the core once.
    fn dial_failed(&mut self, i: usize, conn: ConnId, refusal: Option<Refusal>, reason: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let side = Self::side(c, i);
        let End::Dialing(d) = std::mem::replace(&mut c.state[side], End::Done) else {
            return;
        };
        let Dialing {
            peer,
            lane,
            attempt,
            ..
        } = *d;
        let now = self.now;
        self.core(i)
            .on_dial_failed(now, &peer, &lane, attempt, refusal, reason);
    }

    fn deliver(&mut self, i: usize, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Timeout { .. } => self.core(i).on_timeout(now),
            Ev::Unreachable(d) => {
                let (peer, lane, attempt) = *d;
                self.core(i)
                    .on_dial_failed(now, &peer, &lane, attempt, None, "unreachable")
            }
            Ev::HandshakeTimeout { conn } => {
                let dialing = self.conns.get(&conn).is_some_and(|c| {
                    c.open && matches!(c.state[Self::side(c, i)], End::Dialing(_))
                });
                if dialing {
                    self.dial_failed(i, conn, None, "handshake timed out");
                    self.close_conn(conn, i);
                }
            }
            Ev::Closed { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.open = false;
                    let side = Self::side(c, i);
                    c.shut[side] = true;
                    let ends = [c.end(0), c.end(1)];
                    for (n, _) in ends {
                        self.nodes[n].conns.remove(&conn);
                    }
                }
                self.dial_failed(i, conn, None, "connection reset");
                self.core(i).on_closed(now, conn, "closed by peer");
            }
            Ev::Frame { conn, body } => self.frame(i, conn, body),
            Ev::Heartbeat { conn } => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                let side = Self::side(c, i);
                if c.shut[side] || !c.state[side].is_done() {
                    return;
                }
                self.carried.heartbeats += 1;
                self.control(i, c.end(1 - side).0, conn, Control::Heartbeat);
            }
        }
    }

    fn put_state(&mut self, conn: ConnId, side: usize, state: End) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state[side] = state;
        }
    }

    /// Hand a control message from node `from` to node `i`'s core.
    fn control(&mut self, i: usize, from: usize, conn: ConnId, msg: Control) {
        let now = self.now;
        // Borrow the two nodes apart, so that neither the sender's name nor
        // the receiving core is copied.
        let (to, sender) = match i.cmp(&from) {
            std::cmp::Ordering::Less => {
                let (a, b) = self.nodes.split_at_mut(from);
                (&mut a[i], &b[0].name)
            }
            std::cmp::Ordering::Greater => {
                let (a, b) = self.nodes.split_at_mut(i);
                (&mut b[0], &a[from].name)
            }
            std::cmp::Ordering::Equal => {
                let name = self.nodes[i].name.clone();
                if let Some(node) = self.nodes[i].node.as_mut() {
                    node.on_control(now, &name, conn, msg);
                }
                return;
            }
        };
        if let Some(node) = to.node.as_mut() {
            node.on_control(now, sender, conn, msg);
        }
    }

    fn frame(&mut self, i: usize, conn: ConnId, body: Vec<u8>) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let side = Self::side(c, i);
        if c.shut[side] {
            return;
        }
        let other = c.end(1 - side).0;
        match std::mem::replace(&mut c.state[side], End::Done) {
            End::Done => {
                // Established: a control frame (data lanes carry nothing).
                match decode_control(&body) {
                    Ok(msg) => {
                        match &msg {
                            Control::Heartbeat => self.carried.heartbeats += 1,
                            Control::Membership(p) => {
                                self.carried.membership += 1;
                                self.carried.membership_bytes += p.len() as u64;
                            }
                            Control::Stopping
                            | Control::Fence { .. }
                            | Control::Wait { .. }
                            | Control::Fenced { .. } => {}
                        }
                        self.control(i, other, conn, msg);
                    }
                    Err(_) => self.close_conn(conn, i),
                }
            }
            End::Dialing(mut d) => {
                self.carried.handshake_frames += 1;
                let step = d.dialer.on_frame(&body);
                match step {
                    Ok(DialerStep::Send(b)) => {
                        self.put_state(conn, side, End::Dialing(d));
                        self.send_on(conn, i, Ev::Frame { conn, body: b });
                    }
                    Ok(DialerStep::Done(acceptor, negotiated)) => {
                        let Dialing { lane, attempt, .. } = *d;
                        let r = self.core(i).on_dialed_agreed(
                            now,
                            conn,
                            &acceptor,
                            &lane,
                            negotiated.caps,
                        );
                        if let Err(refusal) = r {
                            // As the transport's driver does.
                            let why = format!("connection not kept: {refusal}");
                            self.core(i).on_dial_failed(
                                now,
                                &acceptor.name,
                                &lane,
                                attempt,
                                None,
                                &why,
                            );
                            self.close_conn(conn, i);
                        }
                    }
                    Err(e) => {
                        if let Some(t) = e.tell() {
                            let t = t.to_vec();
                            self.send_on(conn, i, Ev::Frame { conn, body: t });
                        }
                        let reason = e.to_string();
                        let Dialing {
                            peer,
                            lane,
                            attempt,
                            ..
                        } = *d;
                        self.core(i).on_dial_failed(
                            now,
                            &peer,
                            &lane,
                            attempt,
                            dial_refusal(&e),
                            &reason,
                        );
                        self.close_conn(conn, i);
                    }
                }
            }
            End::Accepting(mut acceptor) => {
                self.carried.handshake_frames += 1;
                let local = self.core(i).local();
                let lane_ok = |lane: &LaneKey| {
                    lane.is_control()
                        || local
                            .parallelism(&lane.channel)
                            .is_some_and(|p| crate::lane::index_exists(p, lane.index))
                };
                match acceptor.on_frame(&body, local, lane_ok) {
                    Ok(AcceptorStep::Send(b)) => {
                        self.put_state(conn, side, End::Accepting(acceptor));
                        self.send_on(conn, i, Ev::Frame { conn, body: b });
                    }
                    Ok(AcceptorStep::Authenticated {
                        dialer,
                        lane,
                        negotiated,
                    }) => {
                        let verdict = self.core(i).on_hello_agreed(
                            now,
                            conn,
                            &dialer,
                            &lane,
                            negotiated.caps,
                        );
                        // Answer as what the node is now (a refusal may have
                        // made it leave and change incarnation).
                        let answer = match &verdict {
                            Ok(()) => acceptor.welcome(self.core(i).local()),
                            Err(r) => acceptor.refuse(r.clone()),
                        };
                        self.send_on(conn, i, Ev::Frame { conn, body: answer });
                        if verdict.is_err() {
                            self.close_conn(conn, i);
                        }
                    }
                    Err(e) => {
                        if let Some(t) = e.tell() {
                            let t = t.to_vec();
                            self.send_on(conn, i, Ev::Frame { conn, body: t });
                        }
                        self.close_conn(conn, i);
                    }
                }
            }
        }
    }

    /// Carry out every action node `i` has queued, then set its timer.
    fn drain(&mut self, i: usize) {
        loop {
            let Some(node) = self.nodes[i].node.as_mut() else {
                return;
            };
            let Some(action) = node.poll_action() else {
                break;
            };
            self.act(i, action);
        }
        let Some(deadline) = self.nodes[i].node.as_ref().and_then(|n| n.next_deadline()) else {
            return;
        };
        let deadline = deadline.max(self.now);
        let n = &mut self.nodes[i];
        if n.timer != Some(deadline) {
            n.timer = Some(deadline);
            n.timer_gen += 1;
            let (gen, inc) = (n.timer_gen, n.inc);
            self.schedule(deadline, i, inc, Ev::Timeout { gen });
        }
    }

    fn act(&mut self, i: usize, action: Action) {
        let inc = self.nodes[i].inc;
        let now = self.now;
        match action {
            Action::Dial {
                peer,
                addrs,
                lane,
                attempt,
            } => {
                let target = addrs.first().and_then(|a| self.by_addr.get(a)).copied();
                let at = now + self.lat();
                let Some(j) = target.filter(|j| self.nodes[*j].node.is_some()) else {
                    self.schedule(at, i, inc, Ev::Unreachable(Box::new((peer, lane, attempt))));
                    return;
                };
                let conn = self.next_conn;
                self.next_conn += 1;
                let nonce = self.nonce();
                let n = &self.nodes[i];
                let local = n.node.as_ref().expect("running node").local().clone();
                let (dialer, hello) =
                    Dialer::with_key(&n.key, local, &peer, lane.clone(), n.caps, nonce);
                let nonce = self.nonce();
                let acceptor = Acceptor::with_key(&self.nodes[j].key, self.nodes[j].caps, nonce);
                let jinc = self.nodes[j].inc;
                self.conns.insert(
                    conn,
                    SimConn {
                        ends: [(small(i), small(inc)), (small(j), small(jinc))],
                        state: [
                            End::Dialing(Box::new(Dialing {
                                dialer,
                                peer,
                                lane: lane.clone(),
                                attempt,
                            })),
                            End::Accepting(Box::new(acceptor)),
                        ],
                        control: lane.is_control(),
                        open: true,
                        shut: [false, false],
                        last: [0, 0],
                    },
                );
                self.nodes[i].conns.insert(conn);
                self.nodes[j].conns.insert(conn);
                self.send_on(conn, i, Ev::Frame { conn, body: hello });
                self.schedule(
                    now + HANDSHAKE_TIMEOUT,
                    i,
                    inc,
                    Ev::HandshakeTimeout { conn },
                );
            }
            Action::Close { conn, .. } => self.close_conn(conn, i),
            Action::Send { peer, msg } => {
                // As the transport's lane queue does, this outlives the
                // core forgetting the peer: a leave's farewell still goes.
                let conn = self
                    .core(i)
                    .control_conn(&peer)
                    .or_else(|| self.open_control_conn(i, &peer));
                if let Some(conn) = conn {
                    let ev = match msg {
                        Control::Heartbeat => Ev::Heartbeat { conn },
                        msg => Ev::Frame {
                            conn,
                            body: encode_control(&msg),
                        },
                    };
                    self.send_on(conn, i, ev);
                }
            }
            Action::Unroute { peer } => {
                // Lanes drain, then shut down: the peer sees them close
                // after everything already sent.
                let mut ids: Vec<ConnId> = self.open_conns(i, &peer, false).collect();
                ids.sort_unstable();
                for id in ids {
                    self.close_conn(id, i);
                }
            }
            Action::Route { .. } | Action::Log { .. } | Action::Membership(_) => {}
            Action::Joined { peer } => {
                let me = self.nodes[i].name.clone();
                self.joined.push((now, me, peer.to_string()));
            }
            Action::ThisNodeLeft => {
                let me = self.nodes[i].name.clone();
                self.left.push((now, me));
            }
            Action::Refused { peer, refusal } => {
                let me = self.nodes[i].name.clone();
                self.refused.push((me, peer.to_string(), refusal));
            }
            Action::PeerUp { peer } => self.seen.push(Seen {
                at: now,
                node: self.nodes[i].name.clone(),
                up: true,
                peer: peer.to_string(),
            }),
            Action::PeerDown { peer, .. } => self.seen.push(Seen {
                at: now,
                node: self.nodes[i].name.clone(),
                up: false,
                peer: peer.to_string(),
            }),
        }
    }

    /// The newest open, established control connection between node `i`
    /// and the node named `peer`.
    fn open_control_conn(&self, i: usize, peer: &str) -> Option<ConnId> {
        self.open_conns(i, peer, true).max()
    }

    /// Node `i`'s open, established connections with the node named
    /// `peer` (control ones only if `control_only`).
    fn open_conns<'a>(
        &'a self,
        i: usize,
        peer: &'a str,
        control_only: bool,
    ) -> impl Iterator<Item = ConnId> + 'a {
        self.nodes[i].conns.iter().copied().filter(move |id| {
            self.conns.get(id).is_some_and(|c| {
                c.open
                    && (c.control || !control_only)
                    && c.state[1].is_done()
                    && (0..2).any(|k| self.nodes[c.end(k).0].name == peer)
            })
        })
    }

    fn short(&self, ev: &Ev) -> String {
        match ev {
            Ev::Timeout { .. } => "timeout".into(),
            Ev::Heartbeat { conn } => format!("hb {conn}"),
            Ev::Unreachable(d) => format!("dialfail {} unreachable", d.0),
            Ev::HandshakeTimeout { conn } => format!("hs-timeout {conn}"),
            Ev::Closed { conn } => format!("closed {conn}"),
            Ev::Frame { conn, body } => match decode_control(body) {
                Ok(Control::Heartbeat) => format!("hb {conn}"),
                Ok(Control::Membership(p)) => format!("membership {conn} {}", p.len()),
                Ok(Control::Stopping) => format!("stopping {conn}"),
                Ok(Control::Fence { index, token }) => format!("fence {conn} {index} {token}"),
                Ok(Control::Wait { token }) => format!("wait {conn} {token}"),
                Ok(Control::Fenced { lane, token }) => format!("fenced {conn} {lane:?} {token}"),
                Err(_) => format!("handshake {conn} {}", body.len()),
            },
        }
    }
}

/// A node index or incarnation count as a connection holds it.
fn small<T: TryInto<u32>>(x: T) -> u32 {
    x.try_into()
        .ok()
        .expect("fewer than 2^32 nodes and restarts")
}

impl End {
    fn is_done(&self) -> bool {
        matches!(self, End::Done)
    }
}

/// What a failed dial tells the core, as the transport's driver says it: a
/// bare "refused" from the acceptor comes before authentication (it did not
/// accept our proof: the cookies differ).
fn dial_refusal(e: &HandshakeError) -> Option<Refusal> {
    match e {
        HandshakeError::Refused(Refusal::Refused) => Some(Refusal::BadCookie),
        HandshakeError::Version { theirs, .. } => Some(Refusal::Version(theirs.clone())),
        e => e.refusal().cloned(),
    }
}
