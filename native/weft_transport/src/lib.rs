//! # weft_transport
//!
//! The I/O around [`weft_core`]. A tokio runtime (one thread) runs the
//! listener, the dials and handshakes, and the driver task that owns the
//! core and carries out its actions. Established connections belong to
//! [`poller`]s, which read them and flush their lanes without tokio: on the
//! BEAM's schedulers (driven by Erlang processes) or on threads of their
//! own. Callers (NIF functions) only write or enqueue, and return.
//!
//! - [`config`]: settings; [`sink`]: where deliveries and events go (the
//!   NIF implements it in `weft_nif/src/events.rs`);
//! - [`conn`]: an established connection; [`backlog`]: its control events
//!   on their way to the driver, bounded; [`frame_reader`]: frames from a
//!   non-blocking socket; [`poller`]: who reads and flushes, and when;
//!   [`poller_set`]: which poller serves a lane; [`wake`]: the whole
//!   wake-up protocol of idle pollers (the idle flag, the watcher thread);
//! - [`body`]: frame bodies, owned or pinned by their owner (no copy);
//!   [`recv_pool`]: buffers of received large frames, kept for reuse;
//! - [`log_limit`]: warnings that a remote party can repeat, at most one
//!   per source (address, peer) per window; [`refusals`]: refused
//!   incoming connections, counted and logged through it;
//! - [`handshake_io`]: the handshake over a fresh socket (the hello and the
//!   cookie proofs, framed with async reads and writes);
//!   [`lane_writer`]: a lane's writer around the core's send queue;
//! - [`routes`]: the send path (node, channel, hash -> lane queue);
//! - `driver`: the core's event loop and handshakes; [`info`]: snapshots
//!   for `weft:info()`.
//!
//! Module dependencies go one way (`scripts/deps.py` checks it, run by
//! `make test`): `config`, `sink`, `body`, `counters`, `wake`, `backlog` <-
//! `conn` <- `frame_reader`, `lane_writer` <- `handshake_io`, `info`,
//! `poller` <- `poller_set` <- `routes`; `driver` uses `conn`,
//! `handshake_io` and `info`. The connection and the lane reach their poller through traits
//! they define ([`conn::ConnPoller`], [`lane_writer::LanePoller`]), and a
//! poller reports to the driver with [`conn::ConnEvent`], so that nothing
//! low in the graph names what is above it. This root composes them all.

pub mod backlog;
pub mod body;
pub mod config;
pub mod conn;
pub mod counters;
mod driver;
pub mod frame_reader;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake_io;
pub mod info;
pub mod lane_writer;
pub mod log_limit;
pub mod poller;
pub mod poller_set;
pub mod pressure;
pub mod recv_pool;
pub mod refusals;
pub mod routes;
pub mod sink;
pub mod wake;

pub use body::Body;
pub use config::{IoMode, Overlay, TransportConfig};
pub use driver::MAX_PENDING_HANDSHAKES;
pub use info::{Info, LaneInfo, LaneState, PeerInfo};
pub use lane_writer::Sender;
pub use lane_writer::SmallMessages;
pub use poller::{Outcome, Poller};
use routes::Routes;
pub use routes::{Overload, SendError};
pub use sink::{Delivery, FrameBuffer, Sink};

use conn::Conn;
use parking_lot::{Mutex, RwLock};
use poller_set::PollerSet;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use wake::Watcher;
pub use weft_core::lane::Choice;
use weft_core::membership::callback::Callback;
use weft_core::membership::client_server::{ClientServer, Role};
use weft_core::membership::full_mesh::FullMesh;
use weft_core::membership::static_list::StaticList;
use weft_core::membership::Membership;
pub use weft_core::stage::{DropReason, Envelope, Stage, Verdict};
use weft_core::{LaneKey, Node, NodeSpec};

/// State shared by the driver, the connection tasks and the callers.
pub(crate) struct Shared {
    config: TransportConfig,
    routes: Routes,
    local: RwLock<NodeSpec>,
    up: RwLock<Vec<String>>,
    sink: Arc<dyn Sink>,
    driver: driver::Inbox,
    next_conn: AtomicU64,
    conns: Mutex<ConnTable>,
    pollers: Arc<PollerSet>,
    refusals: refusals::Refusals,
    /// Established connections closed for what their peer sent (a bad
    /// frame, a read error): one warning per peer per window
    /// ([`poller::log_close`]).
    closes: log_limit::Limiter<String>,
    /// `accept` failing (out of file descriptors): one warning per window.
    accept_failures: log_limit::Limiter<()>,
    /// Lines of the core about a peer, by peer and line (its digits
    /// aside): a peer that reconnects without end repeats its node up and
    /// node down lines.
    peer_lines: log_limit::Limiter<(String, String)>,
    runtime: tokio::runtime::Handle,
    /// Permits for incoming handshakes in progress.
    handshakes: Arc<tokio::sync::Semaphore>,
    /// Incoming handshakes in progress, oldest first, so that a full set
    /// can make room ([`driver::listen`]).
    pending: Mutex<driver::Pending>,
    /// What the headers of large frames being received claimed and got
    /// whole, over all connections.
    claims: Arc<frame_reader::Claims>,
    /// The connections being read, by peer and lane, over every poller and
    /// route ([`poller::Reading`]).
    reading: poller::Reading,
    /// Control events on their way to the driver ([`backlog`]).
    driver_queued: Arc<backlog::Queued>,
}

/// Established connections, for the driver to close them.
#[derive(Default)]
struct ConnTable {
    live: HashMap<weft_core::ConnId, Arc<Conn>>,
    /// Closed by the driver before their handshake task handed them over.
    closed_early: HashSet<weft_core::ConnId>,
    /// The transport is stopping: a connection handed over now closes at
    /// once (its handshake ended as the driver shut down).
    stopping: bool,
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the pollers: {0}")]
    Pollers(std::io::Error),
    #[error("cannot advertise {0}: other nodes could not dial it (set advertise)")]
    Advertise(SocketAddr),
}

/// A running transport. Dropping it stops it.
pub struct Transport {
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    /// The task accepting connections: ended first when stopping.
    listener: tokio::task::AbortHandle,
    watcher: Option<Arc<Watcher>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// How long [`Transport::stop`] takes at most to close gracefully: for the
/// lanes to write out what they had queued, then for each peer to read the
/// close, stop writing and close its end, so that what it wrote before is
/// read and delivered, not dropped unread. It takes milliseconds when little
/// is queued, hundreds of them for a backlog of some hundred megabytes on
/// loopback, and all of it with a frozen peer.
pub const STOP_DRAIN: Duration = Duration::from_secs(1);

impl Transport {
    /// Bind the listener, start the runtime threads and the driver.
    pub fn start(config: TransportConfig, sink: Arc<dyn Sink>) -> Result<Transport, StartError> {
        // Handshakes, timers and the membership need little: one thread.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weft-io")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let pollers = Arc::new(
            PollerSet::new(
                config.io,
                config.pollers,
                config.poll_linger,
                config.poll_linger_busy,
            )
            .map_err(StartError::Pollers)?,
        );
        // Driven pollers sleep in the embedding program; a watcher thread
        // wakes them on socket events.
        let watcher = if pollers.driven.is_empty() {
            None
        } else {
            let w = Watcher::new().map_err(StartError::Pollers)?;
            for p in &pollers.driven {
                p.set_watcher(w.clone()).map_err(StartError::Pollers)?;
            }
            Some(w)
        };
        let std_listener = std::net::TcpListener::bind(config.listen)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|e| StartError::Listen(config.listen, e))?;
        let bound = std_listener
            .local_addr()
            .map_err(|e| StartError::Listen(config.listen, e))?;
        let addrs: Vec<SocketAddr> = if config.advertise.is_empty() {
            vec![bound]
        } else {
            // Port 0: the port actually bound.
            config
                .advertise
                .iter()
                .map(|a| match a.port() {
                    0 => SocketAddr::new(a.ip(), bound.port()),
                    _ => *a,
                })
                .collect()
        };
        if let Some(a) = addrs.iter().find(|a| !weft_core::spec::dialable(a)) {
            return Err(StartError::Advertise(*a));
        }
        // Identity never depends on a clock: a random incarnation, so that
        // a restart is a new incarnation whatever the time says.
        let random = || {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b).expect("OS randomness");
            u64::from_ne_bytes(b)
        };
        let mut incarnation = 0;
        while incarnation == 0 {
            incarnation = random();
        }
        let local = NodeSpec {
            name: config.node.clone(),
            incarnation,
            addrs,
            channels: config.channels.clone(),
            max_frame: config.max_frame_size,
        };
        let mesh = || FullMesh::new(&config.timing).with_max_members(config.max_members);
        let membership: Box<dyn Membership> = match &config.overlay {
            Overlay::FullMesh => Box::new(mesh()),
            Overlay::Static(members) => Box::new(StaticList::new(members.clone())),
            Overlay::Callback { protocol } => {
                Box::new(Callback::with_protocol(protocol).with_max_members(config.max_members))
            }
            Overlay::ClientServer { server } => {
                let role = if *server { Role::Server } else { Role::Client };
                Box::new(ClientServer::new(role, mesh()))
            }
        };
        let core = Node::with_overlay(local.clone(), config.timing.clone(), random(), membership);
        let (tx, rx) = driver::inbox();
        let routes = Routes::new(
            config
                .channels
                .iter()
                .map(|c| {
                    let o = if config.drop_oldest.contains(&c.name) {
                        Overload::DropOldest
                    } else if config.wait.contains(&c.name) {
                        Overload::Wait
                    } else {
                        Overload::Refuse
                    };
                    (c.name.clone(), o)
                })
                .collect(),
            config.affinity,
            routes::Limits {
                max_frame: config.max_frame_size,
                peer_queue: config.send_queue_limit,
                total_queue: config.send_queue_total_limit,
            },
            pollers.clone(),
            runtime.handle().clone(),
            config.stage.clone(),
        );
        // (weak: the queues do not keep the sink alive)
        let bell_sink = Arc::downgrade(&sink);
        let routes = routes.with_room_bell(Arc::new(move || {
            if let Some(sink) = bell_sink.upgrade() {
                sink.room();
            }
        }));
        let routes = match config.overlay {
            Overlay::ClientServer { server } => {
                routes.with_relay(routes::Relay::new(config.node.clone(), !server, server))
            }
            _ => routes,
        };
        let handshakes = Arc::new(tokio::sync::Semaphore::new(
            config.max_pending_handshakes.max(1),
        ));
        let pending = Mutex::new(driver::Pending::default());
        let claims = frame_reader::Claims::new(config.large_frame_claims);
        let shared = Arc::new(Shared {
            config,
            routes,
            local: RwLock::new(local),
            up: RwLock::new(Vec::new()),
            sink,
            driver: tx,
            next_conn: AtomicU64::new(1),
            conns: Mutex::new(ConnTable::default()),
            pollers: pollers.clone(),
            refusals: refusals::Refusals::default(),
            closes: log_limit::Limiter::default(),
            accept_failures: log_limit::Limiter::default(),
            peer_lines: log_limit::Limiter::with_max_lines(driver::PEER_LINES),
            runtime: runtime.handle().clone(),
            handshakes,
            pending,
            claims,
            reading: poller::Reading::default(),
            driver_queued: Arc::default(),
        });
        for p in pollers.all() {
            p.set_shared(&shared);
        }
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(StartError::Pollers)
        };
        if let Some(w) = &watcher {
            let w = w.clone();
            let ps = pollers.driven.iter().map(|p| p.wakeup().clone()).collect();
            threads.push(spawn("weft-watch".into(), Box::new(move || w.run(ps)))?);
        }
        for p in &pollers.threaded {
            let p = p.clone();
            let name = format!("weft-poll-{}", p.index());
            threads.push(spawn(name, Box::new(move || poller::run_thread(p)))?);
        }
        let listener = {
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(std_listener)
                .map_err(|e| StartError::Listen(bound, e))?;
            let listener = tokio::spawn(driver::listen(shared.clone(), listener));
            tokio::spawn(driver::Driver::new(core, shared.clone()).run(rx));
            listener.abort_handle()
        };
        Ok(Transport {
            shared,
            runtime: Mutex::new(Some(runtime)),
            listener,
            watcher,
            threads: Mutex::new(threads),
        })
    }

    /// The pollers that the embedding program must drive, calling
    /// [`Poller::poll`] on each (see [`poller`]); none in
    /// [`IoMode::Threads`] (threads of the transport drive them all).
    pub fn pollers(&self) -> &[Arc<Poller>] {
        &self.shared.pollers.driven
    }

    /// Queue `body` for `peer` on `channel`; `choice` (a hash, or an index)
    /// picks the lane when affinity is on. Never waits for the socket (see
    /// [`lane_writer::Lane::push`]). With a `sender`,
    /// its small frames may go ahead of large frames that other senders
    /// queued on the same lane and that have not started (see [`lane_writer`]);
    /// frames of one sender, and frames without one, keep their order.
    pub fn send(
        &self,
        sender: Option<Sender>,
        peer: &str,
        channel: &str,
        choice: impl Into<Choice>,
        body: impl Into<Body>,
    ) -> Result<(), SendError> {
        self.shared
            .routes
            .send(peer, channel, choice.into(), body.into(), sender)
    }

    /// Park a message that found no room, on a channel with `overload =>
    /// wait` (see [`routes::Routes::park`]); `ticket`: its id (unique, never
    /// reused), the time in ms and a random draw.
    #[allow(clippy::too_many_arguments)]
    pub fn park(
        &self,
        sender: Option<Sender>,
        peer: &str,
        channel: &str,
        choice: impl Into<Choice>,
        body: impl Into<Body>,
        waiter: routes::Waiter,
        ticket: (u64, u64, u64),
    ) -> Result<routes::Parking, SendError> {
        self.shared.routes.park(
            peer,
            channel,
            choice.into(),
            body.into(),
            sender,
            waiter,
            ticket,
        )
    }

    /// Send parked messages that fit now (see [`routes::Routes::admit`]).
    pub fn admit(
        &self,
        max: usize,
        notify: impl FnMut(&routes::Waiter, Result<(), SendError>),
    ) -> (usize, usize, bool) {
        self.shared.routes.admit(max, notify)
    }

    /// Take a parked message out (see [`routes::Routes::unpark`]).
    pub fn unpark(&self, id: u64) -> bool {
        self.shared.routes.unpark(id)
    }

    /// Control events that the pollers handed to the driver and it has not
    /// taken yet, and the most at once so far (see [`backlog`]). For tests
    /// and measurements.
    #[doc(hidden)]
    pub fn driver_queued(&self) -> backlog::QueuedNow {
        self.shared.driver_queued.now()
    }

    /// The counters of dropped and refused messages.
    pub fn counters(&self) -> &counters::Counters {
        &self.shared.routes.counters
    }

    /// Join the cluster of the node `spec` describes (asynchronous).
    /// Messages sent to that node from now on wait for it to come up (or
    /// are dropped and counted when it is given up on).
    pub fn join(&self, spec: NodeSpec) {
        if spec.name != self.shared.config.node {
            self.shared.routes.ensure(&spec.name);
        }
        let _ = self.shared.driver.send(driver::Msg::Join(spec));
    }

    /// Leave the cluster (asynchronous).
    pub fn leave(&self) {
        let _ = self.shared.driver.send(driver::Msg::Leave);
    }

    /// The `callback` overlay: the protocol (written outside the core)
    /// wants connections to `members` and sends `messages` (asynchronous).
    pub fn membership_decision(&self, members: Vec<NodeSpec>, messages: Vec<(String, Vec<u8>)>) {
        let _ = self
            .shared
            .driver
            .send(driver::Msg::Decision { members, messages });
    }

    /// Remove `name` from the cluster (asynchronous).
    pub fn remove(&self, name: &str) {
        let _ = self
            .shared
            .driver
            .send(driver::Msg::Remove(name.to_string()));
    }

    /// Peers that are up, sorted.
    pub fn up_peers(&self) -> Vec<String> {
        self.shared.up.read().clone()
    }

    /// What the handshake of `peer`'s connection for `lane` negotiated
    /// (protocol version, common capabilities), while it is connected: what
    /// a frame on that lane may carry.
    pub fn negotiated(&self, peer: &str, lane: &LaneKey) -> Option<weft_core::Negotiated> {
        self.shared
            .routes
            .get(peer)?
            .lane(lane)?
            .socket()
            .negotiated
    }

    /// The lane `lane` to `peer`, if the peer has a route: for features
    /// built on the transport that write frames themselves (such as
    /// [`Lane::push_extended`]) and for tests.
    pub fn lane(&self, peer: &str, lane: &LaneKey) -> Option<Arc<lane_writer::Lane>> {
        self.shared.routes.get(peer)?.lane(lane).cloned()
    }

    /// This node's spec as it is now.
    pub fn local_spec(&self) -> NodeSpec {
        self.shared.local.read().clone()
    }

    /// Whether the `stop` has not been called yet.
    pub fn is_running(&self) -> bool {
        self.runtime.lock().is_some()
    }

    /// A snapshot of members, lanes and counters. Waits for the driver (at
    /// most a second): call it off the BEAM's normal schedulers.
    pub fn info(&self) -> Option<Info> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.shared.driver.send(driver::Msg::Info(tx)).ok()?;
        rx.recv_timeout(Duration::from_secs(1)).ok()
    }

    /// Close the listener and every connection, and stop the threads.
    ///
    /// Connections close gracefully, within [`STOP_DRAIN`] in all:
    /// 1. every lane takes no more frames and writes out what it has
    ///    queued;
    /// 2. then every connection closes its sending side, and is read on
    ///    until the peer closes its end, so that what the peer wrote
    ///    before it heard of the close is delivered. A peer that hears of
    ///    it writes no more and counts what it had queued.
    ///
    /// So with responsive peers every message accepted on either side is
    /// delivered or counted. What is left at the deadline (a frozen peer,
    /// or more queued than the peers read in time) is dropped, and a
    /// warning through the sink says how much. The pollers must keep being
    /// driven meanwhile. Blocks for up to about three seconds; idempotent.
    pub fn stop(&self) {
        let Some(rt) = self.runtime.lock().take() else {
            return;
        };
        self.listener.abort();
        let deadline = std::time::Instant::now() + STOP_DRAIN;
        let wait = |done: &dyn Fn() -> bool| {
            while !done() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let before = self.shared.routes.counters.dropped.total();
        let (tx, rx) = oneshot::channel();
        if self.shared.driver.send(driver::Msg::Shutdown(tx)).is_ok() {
            let driver::Stopped { lanes, goodbyes } = rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(1), rx).await })
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            wait(&|| lanes.iter().all(|l| l.is_written()));
            // Only now the goodbyes: a peer that hears of the stop closes
            // its end, and what it has not read by then would be lost.
            for (lane, body) in goodbyes {
                lane.push(weft_core::FrameKind::Control, body.into());
                lane.stop();
            }
            wait(&|| lanes.iter().all(|l| l.is_written()));
            self.report_dropped_at_stop(&lanes, before);
        }
        let conns: Vec<_> = self
            .shared
            .conns
            .lock()
            .live
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in conns {
            c.close();
        }
        wait(&|| self.shared.pollers.all().all(|p| p.open_connections() == 0));
        rt.shutdown_timeout(Duration::from_secs(1));
        for p in self.shared.pollers.all() {
            p.stop();
        }
        if let Some(w) = &self.watcher {
            w.shutdown();
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }

    /// The counters go with the transport: say what the stop dropped. What
    /// the peers could not take in time (`lanes` still hold it, not counted
    /// yet), and what was counted since `before` (the dropped total when
    /// the stop began): messages waiting for a node or a connection, and
    /// sends that came meanwhile.
    fn report_dropped_at_stop(&self, lanes: &[Arc<lane_writer::Lane>], before: u64) {
        let mut left = weft_core::lane::Counts::default();
        for c in lanes
            .iter()
            .filter(|l| !l.key.is_control())
            .map(|l| l.queued())
        {
            left.frames += c.frames;
            left.bytes += c.bytes;
        }
        let counted = self
            .shared
            .routes
            .counters
            .dropped
            .total()
            .saturating_sub(before);
        if left.frames + counted > 0 {
            let text = format!(
                "stopping: {} messages accepted for peers were dropped: {} ({} bytes) queued and not written within {} ms, {} waiting for a node or a connection or sent while stopping",
                left.frames + counted,
                left.frames,
                left.bytes,
                STOP_DRAIN.as_millis(),
                counted
            );
            self.shared
                .sink
                .log(weft_core::Level::Warning, &text, None, None);
        }
    }
}

/// Wake-ups of driven pollers go to the sink (the NIF sends
/// `{weft_poll, wake}` to the poller's process); see [`wake`].
impl wake::Notify for Shared {
    fn wake_poller(&self, index: usize) {
        self.sink.wake_poller(index);
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop();
    }
}
