//! The send path: from (node, channel, choice) to a lane queue, without
//! going through the driver. The driver keeps the table current; senders
//! only read it.
//!
//! A peer whose channels are not known yet (a node `join` was called for,
//! before its first handshake) has an *unplanned* route: its messages wait
//! in one queue, in order, and move to their lanes when the plan is known,
//! before any later message. So a message sent right after `join` waits for
//! the node instead of being dropped. Every byte queued counts against the
//! peer's and the transport's send-queue bounds ([`Budget`]).

use crate::body::Body;
use crate::counters::{Bell, Budget, Counters, Full, Room, Total, PER_MESSAGE};
use crate::lane_writer::{Lane, Sender};
use crate::poller_set::PollerSet;
use parking_lot::{Mutex, RwLock};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use weft_core::admission::{Key, Queues, Tried};
use weft_core::lane::{pick, shared_lane, Choice};
use weft_core::stage::{Envelope, Stage, Verdict};
use weft_core::types::FastMap;
use weft_core::wire::{encode_control, Control};
use weft_core::{Extensions, FrameKind, LaneKey};

/// Bytes a peer's control lane may have queued (counted as the send-queue
/// bounds count them) for a fence to be answered on it (see
/// [`Routes::answer_fence`]), or a membership message to be queued on it
/// (see [`Routes::send_control`]).
pub const ANSWERS_QUEUED_MAX: u64 = 1 << 20;

/// Rounds over a `drop_oldest` channel's lanes that a send makes to find
/// room, before it is refused (see [`Routes::send`]).
const DROP_ROUNDS: usize = 4;

/// What to do when a send would pass a queue bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overload {
    /// Refuse the message: `send` returns [`SendError::Overloaded`].
    #[default]
    Refuse,
    /// Drop the oldest unstarted messages of the lane to make room.
    DropOldest,
    /// Refuse the message without counting it: the caller waits for room
    /// and sends again (`overload => wait`; the Erlang side counts the
    /// wait, and a refusal when it gives up).
    Wait,
}

/// Whether a control lane with `q` queued has at most
/// [`ANSWERS_QUEUED_MAX`] bytes queued (as the send-queue bounds count:
/// each frame's entry too).
fn room_for_answers(q: weft_core::lane::Counts) -> bool {
    q.bytes + q.frames * crate::counters::PER_MESSAGE <= ANSWERS_QUEUED_MAX
}

/// A membership message this small ([`Routes::send_control`]) is queued
/// past [`ANSWERS_QUEUED_MAX`] while the control lane has fewer than
/// [`SMALL_ANSWERS`] frames queued: behind a view of a large membership
/// (over a megabyte), a join check's answer still goes.
pub const SMALL_ANSWER: usize = 1024;

/// See [`SMALL_ANSWER`].
pub const SMALL_ANSWERS: u64 = 64;

/// A message that waits for its peer's plan.
struct Waiting {
    channel: String,
    choice: Choice,
    body: Body,
    sender: Option<Sender>,
    /// The header of a message relayed through the peer (client-server).
    ext: Option<Extensions>,
}

/// Whom to tell that a parked message went: opaque here (the NIF's handle
/// on the waiting process).
pub type Waiter = Arc<dyn std::any::Any + Send + Sync>;

/// A message parked for room ([`Routes::park`]).
struct Parked {
    peer: String,
    channel: String,
    choice: Choice,
    body: Body,
    /// Its length (the body is gone once sent).
    body_len: u64,
    sender: Option<Sender>,
    waiter: Waiter,
    /// The budget it counts in as parked.
    budget: Arc<Budget>,
}

/// What [`Routes::park`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parking {
    /// The message went (or was dropped and counted, as a send would).
    Sent,
    /// It waits; its waiter is told when it goes.
    Parked,
}

/// The lanes to one peer.
pub struct PeerRoute {
    /// The control lane.
    pub control: Arc<Lane>,
    /// Channel name -> its lanes, in index order.
    pub channels: FastMap<String, Vec<Arc<Lane>>>,
    /// Channel name -> its shared lane, for a channel of two lanes or more
    /// (see [`weft_core::share`]).
    pub shared: FastMap<String, Arc<Lane>>,
    /// Unplanned routes only: the messages waiting for the plan; `None`
    /// once they moved on (senders then look the route up again).
    waiting: Option<Mutex<Option<VecDeque<Waiting>>>>,
    /// The peer's frame limit, once known.
    pub max_frame: Option<u64>,
    /// The peer's send-queue budget, shared by its lanes.
    pub budget: Arc<Budget>,
}

impl PeerRoute {
    /// Every lane, control first.
    pub fn lanes(&self) -> impl Iterator<Item = &Arc<Lane>> {
        std::iter::once(&self.control)
            .chain(self.channels.values().flatten())
            .chain(self.shared.values())
    }

    /// The lane for `key`, if planned.
    pub fn lane(&self, key: &LaneKey) -> Option<&Arc<Lane>> {
        if key.is_control() {
            return Some(&self.control);
        }
        let lanes = self.channels.get(&key.channel)?;
        lanes
            .get(key.index as usize)
            .or_else(|| self.shared.get(&key.channel).filter(|s| s.key == *key))
    }

    /// Whether the peer's channels are not known yet.
    pub fn is_unplanned(&self) -> bool {
        self.waiting.is_some()
    }

    /// Messages waiting for the plan.
    pub fn waiting(&self) -> usize {
        self.waiting
            .as_ref()
            .and_then(|w| w.lock().as_ref().map(|q| q.len()))
            .unwrap_or(0)
    }
}

/// Why a send was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No channel of that name here.
    #[error("unknown channel {0}")]
    UnknownChannel(String),
    /// The body is over this node's or the peer's frame limit.
    #[error("message of {size} bytes exceeds max_frame_size {max}")]
    TooLarge {
        /// The body's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A send-queue bound would be passed.
    #[error("send queue full")]
    Overloaded,
}

/// Limits of the send path.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message body this node sends or accepts.
    pub max_frame: u64,
    /// Bytes queued for one peer.
    pub peer_queue: u64,
    /// Bytes queued for all peers.
    pub total_queue: u64,
}

/// Relaying, in the client-server overlay (see
/// `weft_core::membership::client_server`): a client sends a message for a
/// node it has no connection to through a server, in a frame whose header
/// names the destination and the origin (extensions of capability `relay`);
/// a server passes such frames on to their destination.
#[derive(Debug)]
pub struct Relay {
    /// This node's name: the origin of the frames it sends through a server.
    pub local: String,
    /// A client: send messages for nodes without a route through a peer.
    pub via_peers: bool,
    /// A server: pass on frames for other nodes.
    pub passes_on: bool,
    /// The peers up now, sorted (kept by the driver).
    up: RwLock<Vec<String>>,
}

impl Relay {
    /// Relaying for node `local`.
    pub fn new(local: String, via_peers: bool, passes_on: bool) -> Self {
        Relay {
            local,
            via_peers,
            passes_on,
            up: RwLock::new(Vec::new()),
        }
    }

    /// The peer a message for `dest` goes through: one of those up, the
    /// same one for the same destination while they stay up (so messages
    /// to one node keep their order), another when it goes down.
    fn via(&self, dest: &str) -> Option<String> {
        use std::hash::{Hash, Hasher};
        let up = self.up.read();
        if up.is_empty() {
            return None;
        }
        // (SipHash with fixed keys: the same choice on every call)
        let mut h = std::collections::hash_map::DefaultHasher::new();
        dest.hash(&mut h);
        Some(up[(h.finish() % up.len() as u64) as usize].clone())
    }
}

/// The routing table.
pub struct Routes {
    peers: RwLock<FastMap<String, Arc<PeerRoute>>>,
    pollers: Arc<PollerSet>,
    runtime: tokio::runtime::Handle,
    channels: FastMap<String, Overload>,
    affinity: bool,
    limits: Limits,
    total: Arc<Total>,
    round_robin: AtomicU64,
    /// Dropped and refused messages.
    pub counters: Arc<Counters>,
    /// The per-message stage, if one is installed.
    stage: Option<Arc<dyn Stage>>,
    /// Relaying (client-server overlay), if this node relays.
    relay: Option<Relay>,
    /// Messages parked for room, by route ([`Routes::park`]).
    parked: Mutex<Queues<Parked>>,
}

impl Routes {
    /// An empty table for `channels` (and what each does when a queue is
    /// full), picking lanes by key (`affinity`) or in turn; new lanes are
    /// served by `pollers`, their timers run on `runtime`, and every
    /// application message goes through `stage` if there is one.
    pub fn new(
        channels: Vec<(String, Overload)>,
        affinity: bool,
        limits: Limits,
        pollers: Arc<PollerSet>,
        runtime: tokio::runtime::Handle,
        stage: Option<Arc<dyn Stage>>,
    ) -> Self {
        Routes {
            peers: RwLock::new(FastMap::default()),
            pollers,
            runtime,
            channels: channels.into_iter().collect(),
            affinity,
            total: Total::new(limits.total_queue, None),
            limits,
            round_robin: AtomicU64::new(0),
            counters: Arc::new(Counters::default()),
            stage,
            relay: None,
            parked: Mutex::new(Queues::new()),
        }
    }

    /// Ring `bell` when a watched send-queue bound has room again (see
    /// [`Routes::park`]). Before any route is made.
    pub fn with_room_bell(mut self, bell: Bell) -> Self {
        // (a route made before would keep the old total)
        assert!(
            self.peers.get_mut().is_empty(),
            "the room bell comes before any route"
        );
        self.total = Total::new(self.limits.total_queue, Some(bell));
        self
    }

    /// Relay as `relay` says (client-server overlay).
    pub fn with_relay(mut self, relay: Relay) -> Self {
        self.relay = Some(relay);
        self
    }

    /// The peers up now, sorted (for relaying through them).
    pub fn set_up(&self, up: &[String]) {
        if let Some(r) = &self.relay {
            *r.up.write() = up.to_vec();
        }
    }

    /// The per-message stage, if one is installed.
    pub fn stage(&self) -> Option<&dyn Stage> {
        self.stage.as_deref()
    }

    /// Whether the stage (if any) drops a message on its way to `peer`;
    /// counted under its reason if so.
    #[inline]
    fn dropped_on_send(
        &self,
        peer: &str,
        channel: &str,
        lane: Option<u16>,
        size: u64,
        sender: Option<Sender>,
    ) -> bool {
        let Some(stage) = &self.stage else {
            return false;
        };
        let m = Envelope {
            peer,
            channel,
            lane,
            size: size as usize,
            sender,
        };
        match stage.on_send(&m) {
            Verdict::Pass => false,
            Verdict::Drop(reason) => {
                Counters::add(self.counters.dropped.by_stage(reason), 1);
                true
            }
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes queued for all peers now.
    pub fn queued(&self) -> u64 {
        self.total.queued.load(Ordering::Relaxed)
    }

    /// Queue an application message, once the per-message stage (if any)
    /// let it pass. `Ok` also when the peer is unknown or does not have the
    /// channel, or the stage dropped it: the message is dropped and
    /// counted, as `!` drops a message to an unreachable node. On a
    /// channel with `overload => wait`, the bytes of messages parked for
    /// room ([`Routes::park`]) count as queued: a message goes only if it
    /// leaves them their room.
    pub fn send(
        &self,
        peer: &str,
        channel: &str,
        choice: Choice,
        body: Body,
        sender: Option<Sender>,
    ) -> Result<(), SendError> {
        match self.send_inner(peer, channel, choice, &mut Some(body), sender, true)? {
            None => Ok(()),
            Some(_) => Err(SendError::Overloaded),
        }
    }

    /// [`Routes::send`]: `Ok(Some(bound))` when a bound has no room (the
    /// body is left in `body`); `defer`: on a waiting channel, the bytes of
    /// parked messages count as queued (a pass that sends parked messages
    /// does not defer).
    fn send_inner(
        &self,
        peer: &str,
        channel: &str,
        choice: Choice,
        body: &mut Option<Body>,
        sender: Option<Sender>,
        defer: bool,
    ) -> Result<Option<Full>, SendError> {
        let c = &self.counters;
        let Some(overload) = self.channels.get(channel).copied() else {
            Counters::add(&c.refused.unknown_channel, 1);
            return Err(SendError::UnknownChannel(channel.to_string()));
        };
        let size = body.as_ref().map_or(0, |b| b.len() as u64);
        if size > self.limits.max_frame {
            Counters::add(&c.refused.too_large, 1);
            return Err(SendError::TooLarge {
                size,
                max: self.limits.max_frame,
            });
        }
        let wait = overload == Overload::Wait;
        // (a new send on a waiting channel leaves parked messages their room)
        let reserve = |b: &Budget| {
            if defer && wait {
                b.try_reserve_behind_parked(size)
            } else {
                b.try_reserve_or(size)
            }
        };
        let full = |f: Full| {
            if !wait {
                Counters::add(&c.refused.overloaded, 1);
            }
            Ok(Some(f))
        };
        // At most a few rounds: a route replaced while we looked is looked
        // up again.
        loop {
            // The peer's route; or, on a client without one, a server's,
            // with the destination in the header.
            let route = self.peers.read().get(peer).cloned();
            let Some((route, ext)) = route.map(|r| (r, None)).or_else(|| self.relay_route(peer))
            else {
                Counters::add(&c.dropped.not_member, 1);
                return Ok(None);
            };
            if let Some(max) = route.max_frame.filter(|m| size > *m) {
                Counters::add(&c.refused.too_large, 1);
                return Err(SendError::TooLarge { size, max });
            }
            if let Some(waiting) = &route.waiting {
                let mut q = waiting.lock();
                let Some(q) = q.as_mut() else {
                    continue;
                };
                if self.dropped_on_send(peer, channel, None, size, sender) {
                    return Ok(None);
                }
                if let Err(f) = reserve(&route.budget) {
                    return full(f);
                }
                q.push_back(Waiting {
                    channel: channel.to_string(),
                    choice,
                    body: body.take().expect("body not sent yet"),
                    sender,
                    ext,
                });
                return Ok(None);
            }
            let Some(lane) = self.pick(&route, channel, choice) else {
                // The peer does not have this channel.
                Counters::add(&c.dropped.no_channel, 1);
                return Ok(None);
            };
            if self.dropped_on_send(peer, channel, Some(lane.key.index), size, sender) {
                return Ok(None);
            }
            if let Err(f) = reserve(&route.budget) {
                // drop_oldest: the channel's own oldest waiting messages
                // make room, this lane's first, then its other lanes'.
                // (the shared lane right after this lane: it holds the
                // small messages of every lane that shares it)
                let lanes = || {
                    let others = route.channels[channel]
                        .iter()
                        .filter(|l| !Arc::ptr_eq(l, lane));
                    let shared = route.shared.get(channel);
                    std::iter::once(lane).chain(shared).chain(others)
                };
                // A few rounds: other senders may take the room a round
                // made, and most of the channel's messages wait in one
                // queue, the shared lane's.
                let room = overload == Overload::DropOldest
                    && (0..DROP_ROUNDS).any(|_| {
                        lanes().any(|l| {
                            // (the writer may have made room meanwhile: try
                            // again whether or not this dropped anything)
                            l.drop_oldest(size, &route.budget);
                            route.budget.try_reserve(size)
                        })
                    });
                if !room {
                    return full(f);
                }
            }
            let body = body.take().expect("body not sent yet");
            self.push_data(lane, body, sender, ext.as_ref(), &route.budget);
            return Ok(None);
        }
    }

    /// Park a message of a channel with `overload => wait` that found no
    /// room (see [`weft_core::admission`] for the order they go in): it
    /// goes now if it fits with the bytes of the messages parked already
    /// held for them ([`Parking::Sent`]); else it waits under `id` (unique, never
    /// reused), parked at `now_ms` with the random `draw`, until
    /// [`Routes::admit`] sends it and tells `waiter`, or [`Routes::unpark`]
    /// takes it out. Errors as [`Routes::send`]'s, but never
    /// [`SendError::Overloaded`].
    #[allow(clippy::too_many_arguments)]
    pub fn park(
        &self,
        peer: &str,
        channel: &str,
        choice: Choice,
        body: Body,
        sender: Option<Sender>,
        waiter: Waiter,
        (id, now_ms, draw): (u64, u64, u64),
    ) -> Result<Parking, SendError> {
        if self.channels.get(channel) != Some(&Overload::Wait) {
            // (only a waiting channel's messages park)
            return self
                .send(peer, channel, choice, body, sender)
                .map(|()| Parking::Sent);
        }
        let mut body = Some(body);
        let mut parked = self.parked.lock();
        // (as a send: room may have come since)
        self.send_inner(peer, channel, choice, &mut body, sender, true)?;
        let (Some(body), Some((via, route))) = (body, self.route_via(peer)) else {
            return Ok(Parking::Sent);
        };
        let size = body.len() as u64;
        route.budget.park_bytes(size, true);
        let first = parked.is_empty();
        let entry = Parked {
            peer: peer.to_string(),
            channel: channel.to_string(),
            choice,
            body,
            body_len: size,
            sender,
            waiter,
            budget: route.budget.clone(),
        };
        parked.park(&via, Key::new(now_ms, draw, id), entry);
        drop(parked);
        // Rung when there is room for it; or now, if there is already, or
        // if it is the first parked (whoever admits learns that some are).
        if route.budget.watch_room(size) == Room::Fits || first {
            self.total.ring();
        }
        Ok(Parking::Parked)
    }

    /// Send parked messages while they fit, at most `max`, in their order
    /// (see [`weft_core::admission`]), telling each one's waiter what
    /// became of it (`notify`, called while no other pass runs and no
    /// [`Routes::unpark`] can take it out). Then watch for room for each
    /// route's oldest (the bell rings). Returns how many it sent, how many
    /// are still parked, and whether to look again at once (it stopped at
    /// `max`, or there is room already for a route's oldest).
    pub fn admit(
        &self,
        max: usize,
        mut notify: impl FnMut(&Waiter, Result<(), SendError>),
    ) -> (usize, usize, bool) {
        let mut parked = self.parked.lock();
        let pass = parked.pass(max, |_, mut p| {
            let mut body = Some(p.body);
            let sent = self.send_inner(&p.peer, &p.channel, p.choice, &mut body, p.sender, false);
            match (sent, body) {
                (Ok(Some(full)), Some(body)) => {
                    p.body = body;
                    match full {
                        Full::Peer => Tried::RouteFull(p),
                        Full::Total => Tried::TotalFull(p),
                    }
                }
                (sent, _) => {
                    p.budget.park_bytes(p.body_len, false);
                    notify(&p.waiter, sent.map(|_| ()));
                    Tried::Admitted
                }
            }
        });
        // Rung once a route has room for a batch: its oldest message and
        // min(its parked bytes, half its bound) (as a busy distribution port
        // stays busy until its queue is well below its limit), so that a
        // pass sends many messages, not one per message written; on the
        // route the message takes now (a client's relay may have moved
        // since it parked; without one, the next pass drops it). When the
        // total bound ended the pass, only the message it stopped at goes
        // next: watch for it alone.
        let heads = parked
            .heads()
            .take(if pass.total_full { 1 } else { usize::MAX });
        let fits = heads
            .filter(|(_, p)| {
                let Some((_, route)) = self.route_via(&p.peer) else {
                    return true;
                };
                let b = &route.budget;
                let held = b.parked.load(Ordering::Relaxed).saturating_sub(PER_MESSAGE);
                let batch = (p.body.len() as u64).max(held.min(b.limit / 2));
                b.watch_room(batch) == Room::Fits
            })
            .count();
        (pass.admitted, parked.len(), pass.more || fits > 0)
    }

    /// Messages parked now.
    pub fn parked(&self) -> usize {
        self.parked.lock().len()
    }

    /// Take the message parked as `id` out (its sender gave up, or died):
    /// `true` if it was still parked (it will not be sent), `false` if it
    /// went already (its waiter was told) or never was.
    pub fn unpark(&self, id: u64) -> bool {
        let mut parked = self.parked.lock();
        let Some(p) = parked.cancel(id) else {
            return false;
        };
        p.budget.park_bytes(p.body_len, false);
        true
    }

    /// The route a message to `peer` takes: its own, or (client-server, on
    /// a client) its server's; and the peer whose route it is.
    fn route_via(&self, peer: &str) -> Option<(String, Arc<PeerRoute>)> {
        if let Some(r) = self.peers.read().get(peer).cloned() {
            return Some((peer.to_string(), r));
        }
        self.relay_via(peer)
    }

    /// Client-server, on a client: the server a message for `dest` (a node
    /// without a route here) goes through, and its route.
    fn relay_via(&self, dest: &str) -> Option<(String, Arc<PeerRoute>)> {
        let relay = self.relay.as_ref().filter(|r| r.via_peers)?;
        let via = relay.via(dest)?;
        let route = self.peers.read().get(&via).cloned()?;
        Some((via, route))
    }

    /// Client-server, on a client: the route of the server a message for
    /// `dest` (a node without a route here) goes through, and the header
    /// that names `dest` and this node.
    fn relay_route(&self, dest: &str) -> Option<(Arc<PeerRoute>, Option<Extensions>)> {
        let (_, route) = self.relay_via(dest)?;
        let relay = self.relay.as_ref()?;
        let ext = Extensions {
            origin: Some(relay.local.clone()),
            destination: Some(dest.to_string()),
            ..Default::default()
        };
        Some((route, Some(ext)))
    }

    /// Queue a data frame on `lane`, its bytes already reserved in
    /// `budget`: plain, or with `ext` in its header (a relayed message,
    /// counted as such).
    fn push_data(
        &self,
        lane: &Arc<Lane>,
        body: Body,
        sender: Option<Sender>,
        ext: Option<&Extensions>,
        budget: &Budget,
    ) {
        let Some(ext) = ext else {
            return lane.push_reserved(FrameKind::Data, body, sender);
        };
        let size = body.len() as u64;
        match lane.push_extended_reserved(FrameKind::Data, ext, body, sender) {
            Ok(()) => Counters::add(&self.counters.relayed, 1),
            Err(_) => {
                // (node names are checked at the handshake: cannot happen)
                budget.release(size);
                Counters::add(&self.counters.dropped.no_route, 1);
            }
        }
    }

    /// A server passes on a frame for `dest` that came on lane `from` (its
    /// channel and index) with header `ext`: on `dest`'s lane of the same
    /// channel and index (modulo its lane count), so frames that came in
    /// order on one lane leave in order on one lane. `false`: this node does
    /// not relay.
    pub fn pass_on(&self, dest: &str, from: &LaneKey, ext: &Extensions, body: &[u8]) -> bool {
        let Some(relay) = self.relay.as_ref().filter(|r| r.passes_on) else {
            return false;
        };
        let c = &self.counters;
        let route = self.peers.read().get(dest).cloned();
        let lane = route.as_ref().and_then(|r| {
            let lanes = r.channels.get(&from.channel)?;
            lanes.get(from.index as usize % lanes.len().max(1))
        });
        let (Some(route), Some(lane)) = (route.as_ref(), lane) else {
            Counters::add(&c.dropped.no_route, 1);
            return true;
        };
        let size = body.len() as u64;
        if route.max_frame.is_some_and(|m| size > m) || !route.budget.try_reserve(size) {
            Counters::add(&c.dropped.no_route, 1);
            return true;
        }
        let ext = Extensions {
            origin: ext.origin.clone().or_else(|| Some(relay.local.clone())),
            destination: Some(dest.to_string()),
            ..Default::default()
        };
        self.push_data(lane, body.to_vec().into(), None, Some(&ext), &route.budget);
        true
    }

    /// This node's name, if it relays.
    pub fn relay_local(&self) -> Option<&str> {
        self.relay.as_ref().map(|r| r.local.as_str())
    }

    fn pick<'a>(
        &self,
        route: &'a PeerRoute,
        channel: &str,
        choice: Choice,
    ) -> Option<&'a Arc<Lane>> {
        let lanes = route.channels.get(channel)?;
        let rr = if self.affinity {
            0
        } else {
            self.round_robin.fetch_add(1, Ordering::Relaxed)
        };
        lanes.get(pick(lanes.len() as u16, self.affinity, choice, rr) as usize)
    }

    /// `peer` answered the fence `token` of our lane `lane` (see
    /// [`weft_core::share`]). An answer for a lane it does not have is
    /// ignored.
    pub fn fenced(&self, peer: &str, lane: &LaneKey, token: u64) {
        // (a lane without a shared lane, the shared lane itself or the
        // control lane has no fence out: the answer changes nothing)
        if let Some(l) = self.get(peer).as_deref().and_then(|r| r.lane(lane)) {
            l.fence_answered(token);
        }
    }

    /// Answer `peer`'s fence `token` of its lane `lane` (see
    /// [`weft_core::share`]), on its control lane. Not while that lane has
    /// more than [`ANSWERS_QUEUED_MAX`] bytes queued: a peer that sends
    /// fences and reads nothing cannot make this node queue answers without
    /// bound (a peer that does read sends its fence again, after a second).
    pub fn answer_fence(&self, peer: &str, lane: LaneKey, token: u64) {
        let Some(r) = self.get(peer) else {
            return;
        };
        // (as the send-queue bounds count: each frame's entry too)
        if room_for_answers(r.control.queued()) {
            let body = encode_control(&Control::Fenced { lane, token });
            r.control.push(FrameKind::Control, body.into());
        }
    }

    /// Queue control message `msg` for `peer`; dropped if it has no route.
    /// A membership message (which a peer's own messages can call for: an
    /// answer to a join check, a view for a view) only while the control
    /// lane has at most [`ANSWERS_QUEUED_MAX`] bytes queued, unless it is
    /// a small one ([`SMALL_ANSWER`] bytes at most) and fewer than
    /// [`SMALL_ANSWERS`] frames are queued. So a peer that asks and reads
    /// nothing makes this node queue at most about a megabyte, one view and
    /// 64 small frames, while a peer that reads gets a join check's answer
    /// behind the largest view. A message not queued is lost: the full
    /// mesh's gossip sends views and digests again, a join check is not
    /// (its `sync_join` times out), nor is a callback protocol's message.
    /// Returns `false` for a membership message not queued.
    ///
    /// A heartbeat only onto an empty control lane: whatever is queued
    /// shows the peer that this node is alive once it is written, and a
    /// heartbeat behind it would come no sooner. So a peer that never
    /// reads (and keeps sending, so is never given up on) makes this node
    /// queue one heartbeat, not one every `heartbeat_interval` for ever.
    pub fn send_control(&self, peer: &str, msg: &Control) -> bool {
        let peers = self.peers.read();
        let Some(r) = peers.get(peer) else {
            return true;
        };
        let body = encode_control(msg);
        match msg {
            Control::Membership(_) => {
                let q = r.control.queued();
                let small = body.len() <= SMALL_ANSWER && q.frames < SMALL_ANSWERS;
                if !(room_for_answers(q) || small) {
                    return false;
                }
            }
            Control::Heartbeat if r.control.queued().frames > 0 => return true,
            _ => {}
        }
        r.control.push(FrameKind::Control, body.into());
        true
    }

    /// The route to `peer`.
    pub fn get(&self, peer: &str) -> Option<Arc<PeerRoute>> {
        self.peers.read().get(peer).cloned()
    }

    fn new_lane(&self, peer: &str, key: LaneKey, budget: &Arc<Budget>) -> Arc<Lane> {
        let poller = self.pollers.home(peer, &key);
        Lane::new(
            key,
            poller,
            self.runtime.clone(),
            budget.clone(),
            self.counters.clone(),
        )
    }

    /// An unplanned route for `peer` if it has none, so that messages sent
    /// to it from now on wait for it (`join`).
    pub fn ensure(&self, peer: &str) {
        let mut peers = self.peers.write();
        if peers.contains_key(peer) {
            return;
        }
        let budget = Budget::new(self.limits.peer_queue, self.total.clone());
        let control = self.new_lane(peer, LaneKey::control(), &budget);
        peers.insert(
            peer.to_string(),
            Arc::new(PeerRoute {
                control,
                channels: FastMap::default(),
                shared: FastMap::default(),
                waiting: Some(Mutex::new(Some(VecDeque::new()))),
                max_frame: None,
                budget,
            }),
        );
    }

    /// Make the route to `peer` follow `plan` (`None`: not known yet),
    /// keeping lanes that stay and moving waiting messages to their lanes.
    pub fn route(&self, peer: &str, plan: Option<&[(String, u16)]>, max_frame: Option<u64>) {
        let Some(plan) = plan else {
            return self.ensure(peer);
        };
        let old = self.get(peer);
        let budget = old
            .as_ref()
            .map(|r| r.budget.clone())
            .unwrap_or_else(|| Budget::new(self.limits.peer_queue, self.total.clone()));
        let keep = |key: LaneKey| {
            old.as_ref()
                .and_then(|r| r.lane(&key).cloned())
                .unwrap_or_else(|| self.new_lane(peer, key, &budget))
        };
        let control = keep(LaneKey::control());
        let mut channels = FastMap::default();
        let mut shared = FastMap::default();
        for (channel, n) in plan.iter().filter(|(c, _)| c != weft_core::CONTROL_CHANNEL) {
            let key = |index| LaneKey {
                channel: channel.clone(),
                index,
            };
            let lanes: Vec<Arc<Lane>> = (0..*n).map(|index| keep(key(index))).collect();
            let share = shared_lane(*n).map(|index| keep(key(index)));
            if let Some(s) = &share {
                // (a lane of an earlier plan kept as the shared lane does
                // not share in turn)
                s.set_shared(None);
            }
            for lane in &lanes {
                lane.set_shared(share.clone());
            }
            if let Some(s) = share {
                shared.insert(channel.clone(), s);
            }
            channels.insert(channel.clone(), lanes);
        }
        let new = Arc::new(PeerRoute {
            control,
            channels,
            shared,
            waiting: None,
            max_frame,
            budget,
        });
        if let Some(old) = &old {
            for lane in old.lanes() {
                if !new.lanes().any(|l| Arc::ptr_eq(l, lane)) {
                    lane.stop();
                }
            }
        }
        // Waiting messages go to their lanes before anything sent later:
        // senders that find the old route's queue gone look again, and
        // find the new route, which is in the table before they can.
        let mut guard = old
            .as_ref()
            .and_then(|r| r.waiting.as_ref())
            .map(|w| w.lock());
        let waiting = guard.as_mut().and_then(|g| g.take()).unwrap_or_default();
        let c = &self.counters;
        for w in waiting {
            let size = w.body.len() as u64;
            if max_frame.is_some_and(|m| size > m) {
                new.budget.release(size);
                Counters::add(&c.dropped.too_large, 1);
                continue;
            }
            match self.pick(&new, &w.channel, w.choice) {
                Some(lane) => self.push_data(lane, w.body, w.sender, w.ext.as_ref(), &new.budget),
                None => {
                    new.budget.release(size);
                    Counters::add(&c.dropped.no_channel, 1);
                }
            }
        }
        self.peers.write().insert(peer.to_string(), new);
        drop(guard);
    }

    /// Remove the route to `peer`: its lanes drain and stop; what waits
    /// unplanned or unconnected is dropped and counted (`node_down`).
    pub fn unroute(&self, peer: &str) {
        let old = self.peers.write().remove(peer);
        if let Some(old) = old {
            self.retire(&old);
        }
    }

    /// Remove every route: what waits for a plan is dropped and counted
    /// (`node_down`), the data lanes drain and stop; each control lane is
    /// left open (it takes frames still) and returned. The stopping
    /// transport says goodbye on them once the data lanes are written, then
    /// stops them.
    pub fn clear_but_control(&self) -> Vec<(String, Arc<Lane>)> {
        let all: Vec<_> = self.peers.write().drain().collect();
        all.into_iter()
            .map(|(peer, r)| {
                self.retire_data(&r);
                (peer, r.control.clone())
            })
            .collect()
    }

    fn retire(&self, r: &PeerRoute) {
        self.retire_data(r);
        r.control.stop();
    }

    /// Drop what waits for `r`'s plan and stop its data lanes.
    fn retire_data(&self, r: &PeerRoute) {
        if let Some(w) = &r.waiting {
            if let Some(q) = w.lock().take() {
                for m in q {
                    r.budget.release(m.body.len() as u64);
                    Counters::add(&self.counters.dropped.node_down, 1);
                }
            }
        }
        // (the shared lanes last: a lane that stops puts what it held back
        // behind a fence on the connection it was leaving, maybe the
        // shared lane)
        for lane in r.channels.values().flatten().chain(r.shared.values()) {
            lane.stop();
        }
        // (those who wait for room on it learn at once that it is gone:
        // its lanes may hold their bytes until the connection ends)
        r.budget.route_gone();
    }

    /// All routes, for `info`.
    pub fn all(&self) -> Vec<(String, Arc<PeerRoute>)> {
        self.peers
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
