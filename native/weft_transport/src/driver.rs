//! The driver: one task that owns the sans-IO [`Node`] and carries out its
//! actions with tokio. Connection tasks report to it over a channel; it
//! answers the two questions that need the membership (may this connection
//! stay? is this dial still wanted?) and keeps the routing table current.
//!
//! It sleeps until the core's next deadline ([`Node::next_deadline`]) or
//! the next message, whichever comes first: no fixed tick. A deadline that
//! has come goes before the next message, so that no stream of messages
//! postpones heartbeats and timeouts by more than one message; and the core
//! is told when the oldest message still waiting was sent, so that a
//! heartbeat waiting behind a slow message is not taken for silence
//! ([`Node::on_timeout_behind`]).
//!
//! The send path never goes through here: senders read the routing table.

use crate::conn::{Conn, ConnEvent};
use crate::frame_reader::ReadError;
use crate::handshake_io::{self, HandshakeError};
use crate::Shared;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use weft_core::handshake::HandshakeError as Failure;
use weft_core::wire::encode_control;
use weft_core::{
    Action, Capabilities, ConnId, LaneKey, Level, Negotiated, Node, NodeSpec, Refusal,
};

/// Largest control frame accepted: a gossiped view of the largest
/// membership allowed (65536 members of a few hundred bytes each) fits.
const MAX_CONTROL_FRAME: u64 = 32 << 20;

/// How often held-back refusal log lines are flushed (see
/// [`crate::refusals`]); far finer than its window.
const REFUSALS_FLUSH: Duration = Duration::from_secs(1);

/// What the driver is told.
pub enum Msg {
    Join(NodeSpec),
    Leave,
    Remove(String),
    Hello {
        conn: ConnId,
        spec: NodeSpec,
        lane: LaneKey,
        /// What the handshake agreed on.
        caps: Capabilities,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    Dialed {
        conn: ConnId,
        spec: NodeSpec,
        lane: LaneKey,
        attempt: u64,
        /// What the handshake agreed on.
        caps: Capabilities,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    DialFailed {
        peer: String,
        lane: LaneKey,
        attempt: u64,
        refusal: Option<Refusal>,
        reason: String,
    },
    /// What an established connection (its poller) reports.
    Conn(ConnEvent),
    Info(std::sync::mpsc::SyncSender<crate::Info>),
    /// A decision of a membership written outside the core.
    Decision {
        members: Vec<NodeSpec>,
        messages: Vec<(String, Vec<u8>)>,
    },
    /// Stop: no more dials, timers or membership; every data lane takes
    /// no more frames and writes out what it has. Answers with the lanes
    /// and the goodbyes to say once they are written.
    Shutdown(oneshot::Sender<Stopped>),
}

/// What a stopping driver hands the transport.
#[derive(Default)]
pub struct Stopped {
    /// Every lane: the data lanes are stopped (they write out what they
    /// have); the control lanes are not, they still carry the goodbyes.
    pub lanes: Vec<Arc<crate::lane_writer::Lane>>,
    /// The goodbye (an encoded [`Control::Stopping`]) for each peer that is
    /// up, with its control lane: to push, then stop the lane, once the
    /// data lanes are written, so that a peer hears of the stop after it
    /// has read what this node had queued for it.
    pub goodbyes: Vec<(Arc<crate::lane_writer::Lane>, Vec<u8>)>,
}

impl From<ConnEvent> for Msg {
    fn from(e: ConnEvent) -> Msg {
        Msg::Conn(e)
    }
}

/// The driver's inbox, for any thread: each message goes with the instant
/// it was sent, so that the driver knows how long its oldest waiting
/// input has waited ([`Driver::run`]).
#[derive(Clone)]
pub(crate) struct Inbox(mpsc::UnboundedSender<(Instant, Msg)>);

/// The driver has ended: a message sent now is not taken.
#[derive(Debug)]
pub(crate) struct DriverGone;

impl Inbox {
    pub(crate) fn send(&self, m: Msg) -> Result<(), DriverGone> {
        self.0.send((Instant::now(), m)).map_err(|_| DriverGone)
    }
}

/// The driver's inbox, and its end for [`Driver::run`].
pub(crate) fn inbox() -> (Inbox, mpsc::UnboundedReceiver<(Instant, Msg)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Inbox(tx), rx)
}

pub struct Driver {
    core: Node,
    shared: Arc<Shared>,
    start: Instant,
}

impl Driver {
    pub fn new(core: Node, shared: Arc<Shared>) -> Self {
        Driver {
            core,
            shared,
            start: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.millis(Instant::now())
    }

    /// `at` in the core's time: milliseconds since the driver started.
    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_millis() as u64
    }

    /// The instant of the core's next deadline (a day away if it has none).
    fn deadline(&self) -> Instant {
        match self.core.next_deadline() {
            Some(ms) => self.start + Duration::from_millis(ms),
            None => Instant::now() + Duration::from_secs(86_400),
        }
    }

    /// Take messages and carry out the core's deadlines until shut down.
    ///
    /// Deadlines come first: before each message, the driver looks at the
    /// clock, and runs the core's timeout if its deadline has come. With
    /// only a `select!` between a sleep and the inbox, a stream of
    /// messages that each hold the driver postponed heartbeats for as long
    /// as it lasted: the sleep was one branch among ready ones, and tokio
    /// fires a timer only once its clock has moved on, which the runtime's
    /// one thread, busy with the driver, delays. Ten views at the bounds
    /// from a raw peer, back to back (185 ms each in a debug build), had a
    /// real peer declare this node down (`heartbeat_timeout` 1 s,
    /// `heartbeat_interval` 100 ms) while this node took every heartbeat
    /// of it (`tests/loopback.rs`). The core is told when the oldest
    /// message that waits was sent, so that it declares no peer down for a
    /// silence that is only the driver being behind
    /// ([`Node::on_timeout_behind`]).
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<(Instant, Msg)>) {
        let mut next_flush = Instant::now() + REFUSALS_FLUSH;
        // The next message, taken from the channel and not handled yet.
        let mut waiting: Option<(Instant, Msg)> = None;
        loop {
            if waiting.is_none() {
                match rx.try_recv() {
                    Ok(m) => waiting = Some(m),
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            if now >= next_flush {
                self.flush_held_lines(now);
                next_flush = now + REFUSALS_FLUSH;
            }
            if now >= self.deadline() {
                let since = waiting.as_ref().map(|(at, _)| self.millis(*at));
                self.core.on_timeout_behind(self.millis(now), since);
                self.apply();
            }
            let m = match waiting.take() {
                Some((_, m)) => m,
                None => {
                    let wake = tokio::time::Instant::from_std(self.deadline().min(next_flush));
                    tokio::select! {
                        _ = tokio::time::sleep_until(wake) => continue,
                        m = rx.recv() => match m {
                            Some((_, m)) => m,
                            None => return,
                        },
                    }
                }
            };
            if let Msg::Shutdown(done) = m {
                let _ = done.send(self.shutdown());
                return;
            }
            self.handle(m);
            // (the listener, the dials and the handshakes share the
            // runtime's thread: a stream of messages must not hold it)
            tokio::task::consume_budget().await;
        }
    }

    /// The summaries of the rate-limited warnings whose window ended
    /// (refusals, closes for bad frames, accept failures).
    fn flush_held_lines(&self, now: Instant) {
        let sink = &self.shared.sink;
        for line in self.shared.refusals.flush(now) {
            sink.log(Level::Warning, &line, None, None);
        }
        for (peer, held) in self.shared.closes.flush(now) {
            let line = crate::poller::close_summary(peer.as_deref(), held);
            sink.log(Level::Warning, &line, peer.as_deref(), None);
        }
        for (_, held) in self.shared.accept_failures.flush(now) {
            sink.log(Level::Warning, &accept_summary(held), None, None);
        }
        for (peer, line) in peer_summaries(self.shared.peer_lines.flush(now)) {
            sink.log(Level::Notice, &line, peer.as_deref(), None);
        }
    }

    fn handle(&mut self, m: Msg) {
        let now = self.now();
        match m {
            Msg::Join(spec) => self.core.join(now, spec),
            Msg::Leave => self.core.leave(now),
            Msg::Remove(name) => self.core.remove(now, &name),
            Msg::Hello {
                conn,
                spec,
                lane,
                caps,
                reply,
            } => {
                let r = self.core.on_hello_agreed(now, conn, &spec, &lane, caps);
                // Routes must exist before the connection attaches to them.
                self.apply();
                let _ = reply.send(r);
            }
            Msg::Dialed {
                conn,
                spec,
                lane,
                attempt,
                caps,
                reply,
            } => {
                let r = self.core.on_dialed_agreed(now, conn, &spec, &lane, caps);
                if let Err(refusal) = &r {
                    let why = format!("connection not kept: {refusal}");
                    self.core
                        .on_dial_failed(now, &spec.name, &lane, attempt, None, &why);
                }
                self.apply();
                let _ = reply.send(r);
            }
            Msg::DialFailed {
                peer,
                lane,
                attempt,
                refusal,
                reason,
            } => self
                .core
                .on_dial_failed(now, &peer, &lane, attempt, refusal, &reason),
            Msg::Conn(ConnEvent::Closed { conn, reason }) => {
                let mut table = self.shared.conns.lock();
                table.live.remove(&conn);
                table.closed_early.remove(&conn);
                drop(table);
                self.core.on_closed(now, conn, &reason);
            }
            Msg::Conn(ConnEvent::Control {
                from,
                conn,
                msg,
                ticket,
            }) => {
                // (taken: its poller may read on while the core runs)
                drop(ticket);
                self.core.on_control(now, &from, conn, msg)
            }
            Msg::Decision { members, messages } => {
                self.core.membership_decision(now, members, messages)
            }
            Msg::Info(reply) => {
                let _ = reply.send(crate::info::snapshot(&self.core, &self.shared));
            }
            Msg::Shutdown(_) => unreachable!("handled in run"),
        }
        self.apply();
    }

    /// Carry out every action the core has queued.
    fn apply(&mut self) {
        let mut membership_changed = false;
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::Dial {
                    peer,
                    addrs,
                    lane,
                    attempt,
                } => {
                    let shared = self.shared.clone();
                    let local = self.core.local().clone();
                    tokio::spawn(dial(shared, local, peer.to_string(), addrs, lane, attempt));
                }
                Action::Close {
                    conn,
                    reason,
                    malformed,
                } => {
                    if malformed {
                        self.shared
                            .routes
                            .counters
                            .dropped
                            .malformed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    self.shared.sink.log(
                        Level::Debug,
                        &format!("closing connection: {reason}"),
                        None,
                        None,
                    );
                    let mut table = self.shared.conns.lock();
                    match table.live.get(&conn).cloned() {
                        Some(c) => {
                            drop(table);
                            c.close();
                        }
                        // Accepted but not handed to its poller yet.
                        None => {
                            table.closed_early.insert(conn);
                        }
                    }
                }
                Action::Send { peer, msg } => {
                    if !self.shared.routes.send_control(&peer, &msg) {
                        log_about_peer(
                            &self.shared,
                            Level::Warning,
                            "membership message not sent: the peer's control lane has over 1 MiB queued (it reads too slowly, or not at all, or the views are that large)",
                            Some(&peer),
                            None,
                        );
                    }
                }
                Action::Route {
                    peer,
                    lanes,
                    max_frame,
                } => self.shared.routes.route(&peer, lanes.as_deref(), max_frame),
                Action::Unroute { peer } => self.shared.routes.unroute(&peer),
                Action::PeerUp { peer } => {
                    membership_changed = true;
                    self.publish_up();
                    self.shared.sink.peer_up(&peer);
                }
                Action::PeerDown { peer, reason } => {
                    membership_changed = true;
                    self.publish_up();
                    self.shared.sink.peer_down(&peer, &reason);
                }
                Action::Refused { peer, refusal } => self.shared.sink.refused(&peer, &refusal),
                Action::Joined { peer } => self.shared.sink.joined(&peer),
                Action::ThisNodeLeft => {
                    // The new incarnation first: whoever hears of the
                    // leave and asks for this node's description gets it.
                    *self.shared.local.write() = self.core.local().clone();
                    self.shared.sink.this_node_left()
                }
                Action::Membership(notice) => self.shared.sink.membership(&notice),
                Action::Log {
                    level,
                    peer,
                    lane,
                    text,
                } => log_about_peer(&self.shared, level, &text, peer.as_deref(), lane.as_ref()),
            }
        }
        if membership_changed || *self.shared.local.read() != *self.core.local() {
            *self.shared.local.write() = self.core.local().clone();
        }
    }

    fn publish_up(&self) {
        let up = self.core.up_peers();
        self.shared.routes.set_up(&up);
        *self.shared.up.write() = up;
    }

    /// Stop every lane (each writes out what it has queued, then takes
    /// no more) and return them; connections handed over from now on
    /// close at once. The transport closes the others once the lanes are
    /// written ([`crate::Transport::stop`]).
    fn shutdown(&mut self) -> Stopped {
        self.shared.conns.lock().stopping = true;
        let lanes = self
            .shared
            .routes
            .all()
            .iter()
            .flat_map(|(_, r)| r.lanes().cloned().collect::<Vec<_>>())
            .collect();
        let mut controls: HashMap<String, _> =
            self.shared.routes.clear_but_control().into_iter().collect();
        self.shared.up.write().clear();
        // The core says whom to tell; nothing else is carried out now.
        self.core.stop();
        let mut goodbyes = Vec::new();
        while let Some(a) = self.core.poll_action() {
            if let Action::Send { peer, msg } = a {
                if let Some(lane) = controls.remove(&*peer) {
                    goodbyes.push((lane, encode_control(&msg)));
                }
            }
        }
        // A control lane with no goodbye (its peer is not up) stops now.
        for lane in controls.values() {
            lane.stop();
        }
        Stopped { lanes, goodbyes }
    }
}

/// Lines about peers (notice and above) per [`crate::log_limit::WINDOW`]
/// over all peers; past it they are summed up. Large enough that a real
/// node's line is not hidden by a peer cycling through made-up names (each
/// needs a handshake), small enough for OTP's logger (100 lines a second).
pub const PEER_LINES: u32 = 1000;

/// Summary lines of held-back peer lines per window: past it, one line
/// sums up the rest.
const PEER_SUMMARIES: usize = 20;

/// The summary lines of peer lines held back in a window that ended (see
/// [`log_about_peer`]): one per peer and line, the [`PEER_SUMMARIES`] most
/// held, and one line for the rest. With the peer each is about.
fn peer_summaries(
    mut held: Vec<crate::log_limit::Held<(String, String)>>,
) -> Vec<(Option<String>, String)> {
    let secs = crate::log_limit::WINDOW.as_secs();
    held.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let mut out = Vec::new();
    if held.len() > PEER_SUMMARIES {
        let rest = held.split_off(PEER_SUMMARIES - 1);
        let lines: u64 = rest.iter().map(|(_, n)| n).sum();
        out.push((
            None,
            format!(
                "{lines} more lines about {} peers in the last {secs} s",
                rest.len()
            ),
        ));
    }
    for (key, n) in held {
        out.push(match key {
            Some((peer, like)) => (
                Some(peer),
                format!("{n} more lines like \"{like}\" in the last {secs} s"),
            ),
            None => (
                None,
                format!("{n} more lines about other peers in the last {secs} s"),
            ),
        });
    }
    out
}

/// Log a line of the core: one about a peer, at notice level or above, at
/// most once per peer and line (digits aside) per
/// [`crate::log_limit::WINDOW`], the rest summed up (a peer that knows the
/// cookie can reconnect without end, and each time be up and down again);
/// any other line as it comes.
fn log_about_peer(
    shared: &Shared,
    level: Level,
    text: &str,
    peer: Option<&str>,
    lane: Option<&LaneKey>,
) {
    let Some(p) = peer.filter(|_| level >= Level::Notice) else {
        return shared.sink.log(level, text, peer, lane);
    };
    let like: String = text
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    let Some(pass) = shared
        .peer_lines
        .record(Instant::now(), &(p.to_string(), like))
    else {
        return;
    };
    if pass.held == 0 {
        shared.sink.log(level, text, peer, lane);
    } else {
        let whose = if pass.others {
            "about other peers"
        } else {
            "like it"
        };
        let line = format!(
            "{text} ({} more lines {whose} in the last window)",
            pass.held
        );
        shared.sink.log(level, &line, peer, lane);
    }
}

/// The default bound on incoming handshakes in progress: past it, new
/// connections are closed at once (and counted), so that connections that
/// never finish their handshake cannot take memory without bound.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// When every handshake slot is taken, a handshake in progress is ended to
/// make room for a new connection ([`Pending::evict`]):
/// - the oldest one of the address that holds the most, if the newcomer's
///   address holds fewer (so one source cannot take every slot from the
///   others);
/// - else the oldest of all, if it began at least this long ago. A peer's
///   handshake takes a few round trips; sockets opened and left silent (or
///   stalled) to fill the slots are the old ones, so they delay a real
///   peer's handshake by about this much instead of locking it out.
pub const EVICT_AFTER: Duration = Duration::from_millis(500);

/// Incoming handshakes in progress, by start order: when each began, from
/// where, and how to end it; and how many each address has.
#[derive(Default)]
pub struct Pending {
    next: u64,
    tasks: std::collections::BTreeMap<u64, (Instant, IpAddr, tokio::task::AbortHandle)>,
    by_addr: HashMap<IpAddr, usize>,
}

impl Pending {
    fn insert(&mut self, at: Instant, ip: IpAddr, task: tokio::task::AbortHandle) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.tasks.insert(seq, (at, ip, task));
        *self.by_addr.entry(ip).or_insert(0) += 1;
        seq
    }

    fn remove(&mut self, seq: u64) -> Option<tokio::task::AbortHandle> {
        let (_, ip, task) = self.tasks.remove(&seq)?;
        if let Some(n) = self.by_addr.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_addr.remove(&ip);
            }
        }
        Some(task)
    }

    /// The handshake to end for a newcomer from `ip` (see [`EVICT_AFTER`]),
    /// at `now`.
    fn victim(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let (&top, &most) = self.by_addr.iter().max_by_key(|(_, n)| **n)?;
        let mine = self.by_addr.get(&ip).copied().unwrap_or(0);
        if mine + 1 < most {
            return self
                .tasks
                .iter()
                .find(|(_, (_, from, _))| *from == top)
                .map(|(seq, _)| *seq);
        }
        let (&seq, (since, _, _)) = self.tasks.iter().next()?;
        (now.saturating_duration_since(*since) >= EVICT_AFTER).then_some(seq)
    }

    /// End a handshake to make room for a newcomer from `ip`, if one may
    /// be ended. Returns whether one was.
    fn evict(&mut self, ip: IpAddr, now: Instant) -> bool {
        let Some(task) = self.victim(ip, now).and_then(|seq| self.remove(seq)) else {
            return false;
        };
        task.abort();
        true
    }
}

/// Takes a handshake out of [`Pending`] when it ends, however it ends.
struct PendingEntry(Arc<Shared>, u64);

impl Drop for PendingEntry {
    fn drop(&mut self) {
        self.0.pending.lock().remove(self.1);
    }
}

/// Accept loop: one task per incoming socket.
pub async fn listen(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let mut backoff = AcceptBackoff::default();
    loop {
        match listener.accept().await {
            Ok((s, addr)) => {
                backoff.reset();
                let permit = match shared.handshakes.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    // Full: end the oldest handshake if it is old enough;
                    // the new one waits for the slot it frees.
                    Err(_) if shared.pending.lock().evict(addr.ip(), Instant::now()) => {
                        shared.refusals.count("evicted");
                        None
                    }
                    Err(_) => {
                        refuse_too_many(&shared, addr);
                        continue;
                    }
                };
                let _ = s.set_nodelay(true);
                let task_shared = shared.clone();
                let (go, started) = oneshot::channel::<u64>();
                let task = tokio::spawn(async move {
                    let Ok(seq) = started.await else { return };
                    let _entry = PendingEntry(task_shared.clone(), seq);
                    let permit = match permit {
                        Some(p) => p,
                        None => match tokio::time::timeout(
                            Duration::from_secs(1),
                            task_shared.handshakes.clone().acquire_owned(),
                        )
                        .await
                        {
                            Ok(Ok(p)) => p,
                            _ => return refuse_too_many(&task_shared, addr),
                        },
                    };
                    incoming(task_shared, s, addr, permit).await;
                });
                let seq =
                    shared
                        .pending
                        .lock()
                        .insert(Instant::now(), addr.ip(), task.abort_handle());
                let _ = go.send(seq);
            }
            Err(e) => {
                if let Some(pass) = shared.accept_failures.record(Instant::now(), &()) {
                    let line = match pass.held {
                        0 => format!("accept failed: {e}"),
                        n => format!("accept failed: {e} ({n} more failures in the last window)"),
                    };
                    shared.sink.log(Level::Warning, &line, None, None);
                }
                match backoff.failed(&e) {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => tokio::task::yield_now().await,
                }
            }
        }
    }
}

/// The summary line of the accept failures held back in a window.
fn accept_summary(held: u64) -> String {
    format!(
        "accept failed {held} more times in the last {} s",
        crate::log_limit::WINDOW.as_secs()
    )
}

/// How long the accept loop waits after a failure. An error of the
/// connection being accepted (it was reset or aborted while it waited in
/// the backlog: a remote party can cause one per connection) is retried at
/// once. Any other (out of file descriptors or memory: the pending
/// connection stays in the backlog and the listener stays readable, so an
/// immediate retry fails again) waits, from [`ACCEPT_BACKOFF_MIN`]
/// doubling to [`ACCEPT_BACKOFF_MAX`], until an accept succeeds.
#[derive(Debug, Default)]
struct AcceptBackoff {
    next: Option<Duration>,
}

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    /// The pause after `e`, if any.
    fn failed(&mut self, e: &std::io::Error) -> Option<Duration> {
        if accept_error_is_per_connection(e) {
            return None;
        }
        let pause = self.next.unwrap_or(ACCEPT_BACKOFF_MIN);
        self.next = Some((pause * 2).min(ACCEPT_BACKOFF_MAX));
        Some(pause)
    }

    fn reset(&mut self) {
        self.next = None;
    }
}

/// An `accept` error that concerns the connection being accepted, not the
/// listener or the process: accept(2) (Linux) says to retry these as
/// EAGAIN.
fn accept_error_is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error().is_some_and(|n| {
        [
            libc::EPROTO,
            libc::ENOPROTOOPT,
            libc::EHOSTDOWN,
            libc::ENONET,
            libc::EHOSTUNREACH,
            libc::EOPNOTSUPP,
            libc::ENETUNREACH,
            libc::ENETDOWN,
        ]
        .contains(&n)
    })
}

fn refuse_too_many(shared: &Shared, addr: std::net::SocketAddr) {
    let text = format!(
        "refused incoming connection from {addr}: {} handshakes already in progress",
        shared.config.max_pending_handshakes
    );
    if let Some(line) =
        shared
            .refusals
            .record(Instant::now(), addr.ip(), "too_many_handshakes", &text)
    {
        shared.sink.log(Level::Warning, &line, None, None);
    }
}

async fn incoming(
    shared: Arc<Shared>,
    s: TcpStream,
    addr: std::net::SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let local = shared.local.read().clone();
    let lane_ok = |lane: &LaneKey| {
        lane.is_control()
            || local
                .parallelism(&lane.channel)
                .is_some_and(|p| weft_core::lane::index_exists(p, lane.index))
    };
    let (cookie, caps) = (&shared.config.cookie, shared.config.capabilities);
    let mut accepted = match handshake_io::accept(s, &local, cookie, caps, lane_ok).await {
        Ok(a) => a,
        Err(e) => {
            let reason = match &e {
                // Connected and went away without a word: a port scan or
                // a health check, not worth a warning.
                HandshakeError::Read(ReadError::Eof) => {
                    shared.refusals.count("closed");
                    return;
                }
                HandshakeError::Timeout => "timeout",
                HandshakeError::Handshake(f) => failure_reason(f),
                _ => "protocol",
            };
            let text = format!("refused incoming connection from {addr}: {e}");
            if let Some(line) = shared
                .refusals
                .record(Instant::now(), addr.ip(), reason, &text)
            {
                shared.sink.log(Level::Warning, &line, None, None);
            }
            return;
        }
    };
    let (spec, lane) = (accepted.dialer.clone(), accepted.lane.clone());
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    let _ = shared.driver.send(Msg::Hello {
        conn,
        spec: spec.clone(),
        lane: lane.clone(),
        caps: accepted.negotiated.caps,
        reply: tx,
    });
    let verdict = rx.await.unwrap_or(Err(Refusal::Unavailable));
    let local = shared.local.read().clone();
    let sent = accepted.answer(&local, &verdict).await;
    drop(permit);
    match verdict {
        Ok(()) if sent.is_ok() => {
            let negotiated = accepted.negotiated;
            run(shared, accepted.socket, negotiated, spec.name, lane, conn).await
        }
        Ok(()) => {
            let _ = shared.driver.send(Msg::Conn(ConnEvent::Closed {
                conn,
                reason: "handshake write failed".into(),
            }));
        }
        Err(Refusal::Duplicate) => {}
        Err(r) => {
            let text = format!("refused connection from {} ({addr}): {r}", spec.name);
            // A data lane dialed by a peer whose control lane is not up here
            // yet (its side finished the handshake first) is redialed at
            // once: not worth a warning.
            let level = if r == Refusal::Unavailable && !lane.is_control() {
                Level::Info
            } else {
                Level::Warning
            };
            if let Some(line) =
                shared
                    .refusals
                    .record(Instant::now(), addr.ip(), refusal_reason(&r), &text)
            {
                shared.sink.log(level, &line, Some(&spec.name), Some(&lane));
            }
        }
    }
}

/// The name a refusal is counted under in `weft:info()`.
fn refusal_reason(r: &Refusal) -> &'static str {
    match r {
        Refusal::Refused | Refusal::BadCookie => "bad_cookie",
        Refusal::UnexpectedNode { .. } => "unexpected_node",
        Refusal::UnknownLane => "unknown_lane",
        Refusal::Left => "left",
        Refusal::Duplicate => "duplicate",
        Refusal::Unavailable => "unavailable",
        Refusal::Detached => "detached",
        Refusal::BadSpec(_) => "bad_spec",
        Refusal::Version(_) => "version",
        Refusal::Full => "full",
    }
}

fn failure_reason(f: &Failure) -> &'static str {
    match f {
        Failure::Refused(r) | Failure::Refusing { reason: r, .. } => refusal_reason(r),
        Failure::Version { .. } => "version",
        // (a dialer's failure: never met when accepting)
        Failure::Protocol(_) | Failure::Unsigned(_) => "protocol",
    }
}

/// What a failed dial tells the core: the refusal, whichever side made it.
/// A bare "refused" from the acceptor comes before authentication: it did
/// not accept our proof, so the cookies differ.
fn dial_refusal(e: &HandshakeError) -> Option<Refusal> {
    match e {
        HandshakeError::Handshake(Failure::Refused(Refusal::Refused)) => Some(Refusal::BadCookie),
        HandshakeError::Handshake(Failure::Version { theirs, .. }) => {
            Some(Refusal::Version(theirs.clone()))
        }
        e => e.refusal().cloned(),
    }
}

async fn dial(
    shared: Arc<Shared>,
    local: NodeSpec,
    peer: String,
    addrs: Vec<std::net::SocketAddr>,
    lane: LaneKey,
    attempt: u64,
) {
    let failed = |refusal: Option<Refusal>, reason: String| Msg::DialFailed {
        peer: peer.clone(),
        lane: lane.clone(),
        attempt,
        refusal,
        reason,
    };
    let (cookie, caps) = (&shared.config.cookie, shared.config.capabilities);
    let (s, spec, negotiated) =
        match handshake_io::dial(&local, cookie, caps, &peer, &addrs, &lane).await {
            Ok(x) => x,
            Err(e) => {
                // (the core logs these as any failed dial, at info level)
                let why = match &e {
                    HandshakeError::Handshake(Failure::Unsigned(_)) => Some(
                        "the peer runs a build before signed refusals, or does not know the cookie",
                    ),
                    // A forged refusal, or not a weft node: worth seeing.
                    HandshakeError::Handshake(Failure::Protocol(_)) => {
                        Some("what answers there is not a weft node that knows the cookie")
                    }
                    _ => None,
                };
                if let Some(why) = why {
                    let text = format!("dial failed: {e}: {why}; dialing it again");
                    log_about_peer(&shared, Level::Warning, &text, Some(&peer), Some(&lane));
                }
                // The core logs failures (rate-limited) and reports refusals.
                let _ = shared.driver.send(failed(dial_refusal(&e), e.to_string()));
                return;
            }
        };
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    let _ = shared.driver.send(Msg::Dialed {
        conn,
        spec,
        lane: lane.clone(),
        attempt,
        caps: negotiated.caps,
        reply: tx,
    });
    if let Ok(Ok(())) = rx.await {
        run(shared, s, negotiated, peer, lane, conn).await;
    }
}

/// An established connection: hand it to the poller of its lane, which
/// reads it from now on, and to the lane, which writes to it.
async fn run(
    shared: Arc<Shared>,
    s: TcpStream,
    negotiated: Negotiated,
    peer: String,
    lane_key: LaneKey,
    conn: ConnId,
) {
    let Some(lane) = shared
        .routes
        .get(&peer)
        .and_then(|r| r.lane(&lane_key).cloned())
    else {
        let _ = shared.driver.send(Msg::Conn(ConnEvent::Closed {
            conn,
            reason: "no route for the lane".into(),
        }));
        return;
    };
    // Leave tokio's reactor: the poller has the socket from here on.
    let std = match s.into_std() {
        Ok(s) => s,
        Err(e) => {
            let _ = shared.driver.send(Msg::Conn(ConnEvent::Closed {
                conn,
                reason: format!("cannot take the socket: {e}"),
            }));
            return;
        }
    };
    let poller = lane.poller();
    let c = Conn::new(conn, std, negotiated, poller.clone());
    {
        let mut table = shared.conns.lock();
        // The driver may have asked to close it already (replaced
        // meanwhile), or shut down.
        if table.closed_early.remove(&conn) || table.stopping {
            c.close();
        }
        table.live.insert(conn, c.clone());
    }
    lane.attach(c.clone());
    // Control frames (gossip of a bounded membership) are far smaller than
    // data frames may be.
    let max = if lane_key.is_control() {
        shared.config.max_frame_size.min(MAX_CONTROL_FRAME)
    } else {
        shared.config.max_frame_size
    };
    poller.attach(c, peer, lane, max);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held-back lines about peers are summed up per peer and line, at
    /// most PEER_SUMMARIES lines in all: the most held first, the rest in
    /// one line.
    #[test]
    fn peer_summaries_are_bounded() {
        let held = |n: usize| -> Vec<crate::log_limit::Held<(String, String)>> {
            (0..n)
                .map(|i| {
                    (
                        Some((format!("p{i}@h"), "node up".to_string())),
                        i as u64 + 1,
                    )
                })
                .collect()
        };
        let few = peer_summaries(held(3));
        assert_eq!(few.len(), 3);
        assert_eq!(few[0].0.as_deref(), Some("p2@h"));
        assert!(few[0].1.starts_with("3 more lines like \"node up\""));
        let many = peer_summaries(held(400));
        assert_eq!(many.len(), PEER_SUMMARIES);
        // the rest: peers p0..p380 (381 of them), 1 + ... + 381 lines
        assert_eq!(many[0].0, None);
        assert_eq!(
            many[0].1,
            "72771 more lines about 381 peers in the last 10 s"
        );
        assert_eq!(many[1].0.as_deref(), Some("p399@h"));
    }
    use std::io::{Error, ErrorKind};

    #[test]
    fn accept_backs_off_on_lasting_errors_and_not_on_per_connection_ones() {
        let mut b = AcceptBackoff::default();
        let emfile = Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<_> = (0..8).map(|_| b.failed(&emfile).unwrap()).collect();
        assert_eq!(pauses[0], ACCEPT_BACKOFF_MIN);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().unwrap(), ACCEPT_BACKOFF_MAX);
        // a connection reset in the backlog is retried at once
        assert_eq!(b.failed(&Error::from(ErrorKind::ConnectionAborted)), None);
        assert_eq!(b.failed(&Error::from_raw_os_error(libc::EPROTO)), None);
        // an accept that succeeds starts over
        b.reset();
        assert_eq!(b.failed(&emfile), Some(ACCEPT_BACKOFF_MIN));
    }
}
