//! A deterministic simulator: many [`Node`]s over a virtual network.
//!
//! One seed fixes everything: link latencies, the order of simultaneous
//! events, every node's jitter. Connections deliver in order per direction;
//! a crash either resets the peer's connections (as a killed process does) or
//! leaves them silent (as a cut cable does), so both failure paths of the
//! failure detector are exercised. The handshake is modelled by its outcome:
//! cookie check, expected-name check, then [`Node::on_hello`] at the acceptor
//! and [`Node::on_dialed`] at the dialer, one latency apart.

use crate::lane::LaneKey;
use crate::node::{Action, ConnId, Node, PeerStatus, Slot, Timing};
use crate::rng::Rng;
use crate::spec::{ChannelSpec, NodeSpec};
use crate::wire::{Control, Refusal};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;

/// Milliseconds between two ticks of each node.
const TICK: u64 = 10;

#[derive(Debug, Clone)]
enum Ev {
    Tick,
    Arrive {
        conn: ConnId,
        from: usize,
        from_inc: u64,
        spec: NodeSpec,
        to_name: String,
        lane: LaneKey,
        attempt: u64,
    },
    Dialed {
        conn: ConnId,
        acceptor: NodeSpec,
        lane: LaneKey,
        attempt: u64,
    },
    DialFailed {
        peer: String,
        lane: LaneKey,
        attempt: u64,
        refusal: Option<Refusal>,
    },
    Closed {
        conn: ConnId,
    },
    Control {
        conn: ConnId,
        from: String,
        msg: Control,
    },
}

struct SimNode {
    name: String,
    addr: SocketAddr,
    cookie: String,
    channels: Vec<ChannelSpec>,
    inc: u64,
    node: Option<Node>,
}

#[derive(Debug, Clone, Copy)]
struct SimConn {
    ends: [(usize, u64); 2],
    control: bool,
    open: bool,
    last: [u64; 2],
}

/// A membership event seen by a node, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub at: u64,
    pub node: String,
    pub up: bool,
    pub peer: String,
}

/// The simulated cluster.
pub struct Sim {
    now: u64,
    seq: u64,
    rng: Rng,
    timing: Timing,
    latency: (u64, u64),
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(u64, u64, usize, u64)>>,
    pending: BTreeMap<u64, Ev>,
    conns: BTreeMap<ConnId, SimConn>,
    next_conn: ConnId,
    /// Every PeerUp / PeerDown, in order.
    pub seen: Vec<Seen>,
    /// A line per processed event, to compare runs.
    pub trace: Vec<String>,
    refused: Vec<(String, String, Refusal)>,
}

impl Sim {
    /// An empty cluster; link latency is drawn in `latency.0..=latency.1` ms.
    pub fn new(seed: u64, timing: Timing, latency: (u64, u64)) -> Self {
        Sim {
            now: 0,
            seq: 0,
            rng: Rng::new(seed),
            timing,
            latency,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            pending: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            seen: Vec::new(),
            trace: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Virtual time, in ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Add and start a node; returns its index.
    pub fn add_node(&mut self, name: &str, cookie: &str, channels: &[(&str, u16)]) -> usize {
        let i = self.nodes.len();
        let addr: SocketAddr = format!("10.0.{}.{}:9000", i / 250, i % 250 + 1)
            .parse()
            .expect("valid address");
        self.nodes.push(SimNode {
            name: name.to_string(),
            addr,
            cookie: cookie.to_string(),
            channels: channels
                .iter()
                .map(|(n, p)| ChannelSpec {
                    name: n.to_string(),
                    parallelism: *p,
                })
                .collect(),
            inc: 0,
            node: None,
        });
        self.start(i);
        i
    }

    fn start(&mut self, i: usize) {
        let incarnation = self.rng.next_u64() | 1;
        self.start_as(i, incarnation);
    }

    fn start_as(&mut self, i: usize, incarnation: u64) {
        let n = &mut self.nodes[i];
        n.inc += 1;
        let spec = NodeSpec {
            name: n.name.clone(),
            incarnation,
            addrs: vec![n.addr],
            channels: n.channels.clone(),
            max_frame: 1 << 20,
        };
        let seed = self.rng.next_u64();
        n.node = Some(Node::new(spec, self.timing.clone(), seed));
        let inc = n.inc;
        self.schedule(self.now + TICK, i, inc, Ev::Tick);
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
        if let Some(n) = self.nodes[i].node.as_mut() {
            n.leave();
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
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let c = self.conns[&id];
            if !c.open || !c.ends.iter().any(|(n, _)| *n == i) {
                continue;
            }
            self.conns.get_mut(&id).expect("conn").open = false;
            if reset {
                let (other, inc) = if c.ends[0].0 == i {
                    c.ends[1]
                } else {
                    c.ends[0]
                };
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
        while let Some(Reverse((at, seq, i, inc))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            let ev = self.pending.remove(&seq).expect("pending event");
            self.now = at;
            if self.nodes[i].inc != inc || self.nodes[i].node.is_none() {
                // Addressed to a crashed or earlier incarnation.
                if let Ev::Dialed { conn, .. } = ev {
                    self.close_conn(conn, i);
                }
                continue;
            }
            self.trace
                .push(format!("{at} {} {}", self.nodes[i].name, short(&ev)));
            self.deliver(i, ev);
            self.drain(i);
        }
        self.now = until;
    }

    /// Run for `ms` more milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let t = self.now + ms;
        self.run_until(t);
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

    fn schedule(&mut self, at: u64, node: usize, inc: u64, ev: Ev) {
        self.seq += 1;
        self.pending.insert(self.seq, ev);
        self.queue.push(Reverse((at, self.seq, node, inc)));
    }

    /// Send along `conn` from endpoint `from`, in order.
    fn send_on(&mut self, conn: ConnId, from: usize, ev: Ev) {
        let lat = self.lat();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        let dir = usize::from(c.ends[0].0 != from);
        let at = (self.now + lat).max(c.last[dir]);
        c.last[dir] = at;
        let (to, inc) = c.ends[1 - dir];
        self.schedule(at, to, inc, ev);
    }

    fn close_conn(&mut self, conn: ConnId, by: usize) {
        let Some(c) = self.conns.get(&conn).copied() else {
            return;
        };
        if !c.open {
            return;
        }
        self.send_on(conn, by, Ev::Closed { conn });
        self.conns.get_mut(&conn).expect("conn").open = false;
    }

    fn deliver(&mut self, i: usize, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Tick => {
                let inc = self.nodes[i].inc;
                self.schedule(now + TICK, i, inc, Ev::Tick);
                self.core(i).tick(now);
            }
            Ev::Arrive {
                conn,
                from,
                from_inc,
                spec,
                to_name,
                lane,
                attempt,
            } => {
                let me = &self.nodes[i];
                let refusal = if me.name != to_name {
                    Some(Refusal::UnexpectedNode {
                        expected: to_name,
                        actual: me.name.clone(),
                    })
                } else if me.cookie != self.nodes[from].cookie {
                    Some(Refusal::BadCookie)
                } else {
                    self.conns.insert(
                        conn,
                        SimConn {
                            ends: [(from, from_inc), (i, me.inc)],
                            control: lane.is_control(),
                            open: true,
                            last: [0, 0],
                        },
                    );
                    match self.core(i).on_hello(now, conn, &spec, &lane) {
                        Ok(()) => None,
                        Err(r) => {
                            self.conns.get_mut(&conn).expect("conn").open = false;
                            Some(r)
                        }
                    }
                };
                let at = now + self.lat();
                let ev = match refusal {
                    None => Ev::Dialed {
                        conn,
                        acceptor: self.core(i).local().clone(),
                        lane,
                        attempt,
                    },
                    Some(refusal) => Ev::DialFailed {
                        peer: self.nodes[i].name.clone(),
                        lane,
                        attempt,
                        refusal: Some(refusal),
                    },
                };
                self.schedule(at, from, from_inc, ev);
            }
            Ev::Dialed {
                conn,
                acceptor,
                lane,
                attempt,
            } => {
                if !self.conns.get(&conn).is_some_and(|c| c.open) {
                    // The acceptor died or closed it meanwhile.
                    let peer = acceptor.name.clone();
                    self.core(i)
                        .on_dial_failed(now, &peer, &lane, attempt, None, "reset");
                    return;
                }
                if self.core(i).on_dialed(now, conn, &acceptor, &lane).is_err() {
                    self.close_conn(conn, i);
                    let peer = acceptor.name.clone();
                    self.core(i).on_dial_failed(
                        now,
                        &peer,
                        &lane,
                        attempt,
                        None,
                        "refused locally",
                    );
                }
            }
            Ev::DialFailed {
                peer,
                lane,
                attempt,
                refusal,
            } => {
                let reason = format!("{refusal:?}");
                self.core(i)
                    .on_dial_failed(now, &peer, &lane, attempt, refusal, &reason);
            }
            Ev::Closed { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.open = false;
                }
                self.core(i).on_closed(now, conn, "closed by peer");
            }
            Ev::Control { conn, from, msg } => self.core(i).on_control(now, &from, conn, msg),
        }
    }

    fn core(&mut self, i: usize) -> &mut Node {
        self.nodes[i].node.as_mut().expect("running node")
    }

    /// Carry out every action node `i` has queued.
    fn drain(&mut self, i: usize) {
        loop {
            let Some(node) = self.nodes[i].node.as_mut() else {
                return;
            };
            let Some(action) = node.poll_action() else {
                return;
            };
            let inc = self.nodes[i].inc;
            let now = self.now;
            match action {
                Action::Dial {
                    peer,
                    addrs,
                    lane,
                    attempt,
                } => {
                    let conn = self.next_conn;
                    self.next_conn += 1;
                    let target = self
                        .nodes
                        .iter()
                        .position(|n| addrs.first() == Some(&n.addr));
                    let spec = self.core(i).local().clone();
                    let at = now + self.lat();
                    match target {
                        Some(j) if self.nodes[j].node.is_some() => {
                            let jinc = self.nodes[j].inc;
                            self.schedule(
                                at,
                                j,
                                jinc,
                                Ev::Arrive {
                                    conn,
                                    from: i,
                                    from_inc: inc,
                                    spec,
                                    to_name: peer,
                                    lane,
                                    attempt,
                                },
                            );
                        }
                        _ => self.schedule(
                            at,
                            i,
                            inc,
                            Ev::DialFailed {
                                peer,
                                lane,
                                attempt,
                                refusal: None,
                            },
                        ),
                    }
                }
                Action::Close { conn, .. } => self.close_conn(conn, i),
                Action::Send { peer, msg } => {
                    let from = self.nodes[i].name.clone();
                    // As the transport's lane queue does, this outlives the
                    // core forgetting the peer: a leave's farewell still goes.
                    let conn = self
                        .core(i)
                        .lane_conn(&peer, &LaneKey::control())
                        .or_else(|| {
                            self.conns
                                .iter()
                                .rev()
                                .find(|(_, c)| {
                                    c.open
                                        && c.control
                                        && c.ends.iter().any(|(n, _)| *n == i)
                                        && c.ends.iter().any(|(n, _)| self.nodes[*n].name == peer)
                                })
                                .map(|(id, _)| *id)
                        });
                    if let Some(conn) = conn {
                        self.send_on(conn, i, Ev::Control { conn, from, msg });
                    }
                }
                Action::Unroute { peer } => {
                    // Lanes drain, then shut down: the peer sees them close
                    // after everything already sent.
                    let ids: Vec<ConnId> = self
                        .conns
                        .iter()
                        .filter(|(_, c)| {
                            c.open
                                && c.ends.iter().any(|(n, _)| *n == i)
                                && c.ends.iter().any(|(n, _)| self.nodes[*n].name == peer)
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ids {
                        self.close_conn(id, i);
                    }
                }
                Action::Route { .. } | Action::Log { .. } => {}
                Action::Refused { peer, refusal } => {
                    let me = self.nodes[i].name.clone();
                    self.refused.push((me, peer, refusal));
                }
                Action::PeerUp { peer } => self.seen.push(Seen {
                    at: now,
                    node: self.nodes[i].name.clone(),
                    up: true,
                    peer,
                }),
                Action::PeerDown { peer, .. } => self.seen.push(Seen {
                    at: now,
                    node: self.nodes[i].name.clone(),
                    up: false,
                    peer,
                }),
            }
        }
    }
}

fn short(ev: &Ev) -> String {
    match ev {
        Ev::Tick => "tick".into(),
        Ev::Arrive { conn, lane, .. } => format!("arrive {conn} {}/{}", lane.channel, lane.index),
        Ev::Dialed { conn, .. } => format!("dialed {conn}"),
        Ev::DialFailed { peer, refusal, .. } => format!("dialfail {peer} {refusal:?}"),
        Ev::Closed { conn } => format!("closed {conn}"),
        Ev::Control { from, msg, .. } => match msg {
            Control::Heartbeat => format!("hb {from}"),
            Control::Gossip(v) => format!("gossip {from} {}", v.members.len()),
        },
    }
}
