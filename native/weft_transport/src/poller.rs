//! Pollers: where established connections are read and lanes are flushed.
//!
//! A poller owns an epoll set (through `mio`) of the connections assigned to
//! it. One call to [`Poller::poll`] is one bounded round, in steps: it
//! takes new connections and close requests (`commands`), collects
//! readiness (`readiness`), flushes the lanes that asked for it or whose
//! socket became writable again (`flushes`), reads the readable
//! connections, handing each frame to the sink (application data, through
//! the per-message stage if one is installed) or to the driver (control
//! frames, a bounded backlog per connection: see [`crate::backlog`])
//! (`reads`), forgets the connections that ended (`forget`), moves
//! connections between pollers (`placement`), and says whether more is
//! waiting ([`Outcome::Busy`]), whether to keep polling
//! ([`Outcome::Linger`]) or not ([`Outcome::Idle`]) (`outcome`). When a
//! connection counts as bulk and when a poller lingers is decided by
//! [`weft_core::placement`].
//!
//! Who calls `poll` depends on the I/O mode:
//! - [`IoMode::Schedulers`]: one Erlang process per
//!   poller calls it on a normal scheduler, as the VM runs port I/O, so a
//!   busy node reads and writes without waking any other thread. An idle
//!   poller's process waits for a message; the transport's watcher thread
//!   sends it one ([`crate::Sink::wake_poller`]) when a socket becomes
//!   ready, and senders do when they queue frames.
//! - [`IoMode::Threads`]: one thread per poller blocks in `epoll_wait`.
//! - [`IoMode::Auto`] (the NIF's default): both kinds. A connection starts
//!   on a driven poller, where small messages go fastest (no thread
//!   hand-off, and a lingering poller finds the next frame without being
//!   woken). While it carries bulk data (large frames) it moves to a
//!   threaded poller: copying large frames on a thread of its own leaves
//!   the schedulers to the processes, and on a busy machine the schedulers'
//!   own busy-waiting between bursts of I/O would cost more than the
//!   hand-off. After [`QUIET`] without bulk it moves back.
//!
//! Waking follows one protocol in both modes, described end to end in
//! [`crate::wake`] (the idle flag, the watcher, the NIF and `weft_poller`):
//! a poller about to wait marks itself idle, then looks once more for work;
//! whoever adds work wakes it only if it takes the idle mark.

pub use crate::config::IoMode;
use crate::conn::{Conn, ConnEvent, ConnPoller, Ticket};
use crate::frame_reader::{Flow, Frame, FrameReader, ReadError, ReadStatus};
use crate::lane_writer::{Flush, Lane, LanePoller};
use crate::log_limit;
use crate::pressure::CpuPressure;
use crate::sink::Delivery;
use crate::wake::{Notify, Wakeup, Watcher};
use crate::Shared;
use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use parking_lot::Mutex;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use weft_core::lane::Micros;
use weft_core::placement::{self, Linger, Place, Round, Served, ServiceOrder, Traffic};
use weft_core::stage::{DropReason, Envelope, Verdict};
use weft_core::types::FastMap;
use weft_core::wire::{decode_control, Control};
use weft_core::{Capabilities, ConnId, Extensions, FrameKind, LaneKey, Level};

/// Bytes one connection may read in one round of a driven poller.
const READ_BUDGET: usize = 64 * 1024;
/// Bytes all connections of a driven poller may read in one round, and of
/// any poller write. On a scheduler a round should take about a timeslice
/// (1 ms): 256 KiB of 100-byte messages is some 2,000 deliveries.
const ROUND_BUDGET: usize = 256 * 1024;
/// What a threaded poller, whose round holds no scheduler, may read:
/// four times as much, so that a 512 KB frame takes two reads rather than
/// eight (and a round one `epoll_wait` per 1 MiB rather than per 256
/// KiB). Measured against the driven poller's budgets, same runs, 512 KB
/// echo with 128 clients on 16 lanes: the pollers took 5-10 % less CPU
/// per round trip, the rate was ahead in 19 of 26 passes, means +2.4 to
/// +8.9 % (`bench/RESULTS.md`, 2026-12-07 12:57-13:16).
const THREAD_READ_BUDGET: usize = 4 * READ_BUDGET;
const THREAD_ROUND_BUDGET: usize = 4 * ROUND_BUDGET;
/// Events taken from the epoll set per round.
const EVENTS: usize = 256;
/// How long a connection on a threaded poller goes without bulk before it
/// moves back to a driven poller ([`IoMode::Auto`]; the policy is
/// [`weft_core::placement`]).
pub const QUIET: Duration = Duration::from_micros(placement::QUIET);
/// How often an idle threaded poller looks for quiet connections.
const QUIET_CHECK: Duration = Duration::from_millis(100);
/// How long a connection closed locally is still read, so that what the
/// peer sent before it saw the close (already in the socket buffers) is
/// delivered rather than lost uncounted. Its write side is shut at once.
pub const DRAIN: Duration = Duration::from_secs(2);
/// Token of the waker (threads mode).
const WAKER: Token = Token(usize::MAX);

/// What a round found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// More work is waiting: call `poll` again (after letting others run).
    Busy,
    /// Nothing now, but there was a moment ago: poll again once others
    /// have run, rather than go to sleep and need waking.
    Linger,
    /// Nothing to do: wait to be woken.
    Idle,
}

/// A connection as the poller sees it.
struct Entry {
    conn: Arc<Conn>,
    reader: FrameReader,
    peer: String,
    lane: Arc<Lane>,
    /// The socket may have bytes to read.
    readable: bool,
    /// What it carried lately, on the poller's clock (`io => auto`).
    traffic: Traffic,
    /// Closed locally, read until the peer closes too or [`DRAIN`] ends;
    /// the reason to report then.
    draining: Option<String>,
    /// An older connection of the same peer and lane was still read when
    /// this one came ([`Reading`]): this one is not read until none is.
    older: bool,
    /// A wait for the fence of this token, read on this connection: what
    /// follows it is not read until that fence came on the shared lane
    /// (see [`weft_core::share`]).
    waits_for: Option<u64>,
}

/// The connections being read, by peer, over every poller and every route
/// of the peer. A connection is read only once every connection it must
/// follow has ended:
/// - an older one of the same lane: the peer sent its frames on that one
///   first, so one sender's frames on a lane arrive in order across a
///   replacement, also when the older connection belongs to an earlier
///   route of the peer (it went down and up: new lanes) or is served by
///   another poller;
/// - for a data lane, every connection older than a control connection
///   that is older than it: a new control connection starts a new life of
///   the link to the peer (the peer gave up on this node, or the reverse,
///   and connected again), and what the peer sent in the earlier life, on
///   any lane or the shared lane, is read before what it sent since.
///
/// The wait is bounded. An older connection of the same lane was closed
/// when the newer one took the lane, and is read until the peer closes it
/// too, or for [`DRAIN`]. A new life makes data connections wait for
/// at most [`LIFE_WAIT`]: after a give-up, the earlier life's connections
/// end within it (the side that gave up closed them; the other closes its
/// lanes once they are written out, or within
/// [`crate::lane_writer::WRITE_OUT_STALL`] of writing nothing, and
/// [`DRAIN`]); a peer that
/// replaces its control connection and keeps its old data connections
/// open (a peer of its own making) only delays its own new ones by that
/// much.
#[derive(Default)]
pub(crate) struct Reading {
    peers: Mutex<FastMap<String, PeerReads>>,
}

/// One peer's connections being read, and where its control connections
/// started a new life of the link (ids of control connections that an
/// open connection is older than).
#[derive(Default)]
struct PeerReads {
    open: Vec<(LaneKey, ConnId)>,
    /// Control connections and when they came.
    lives: Vec<(ConnId, Instant)>,
}

/// How long, at most, a data connection of a new life of the link waits
/// for the connections of the earlier one ([`Reading`]): 5 s, past the
/// 2 s [`DRAIN`] of a stopped lane's connection.
pub const LIFE_WAIT: Duration = Duration::from_secs(5);

impl PeerReads {
    /// Whether connection `id` of lane `key` must wait for another, at
    /// `now`.
    fn follows(&self, key: &LaneKey, id: ConnId, now: Instant) -> bool {
        self.open.iter().any(|(k, o)| {
            *o < id
                && (k == key
                    || (!key.is_control()
                        && self.lives.iter().any(|(c, at)| {
                            *o < *c && *c < id && now.duration_since(*at) < LIFE_WAIT
                        })))
        })
    }
}

impl Reading {
    /// Connection `id` of `peer`'s lane `key` is read from now on. Whether
    /// it must wait for another.
    fn open(&self, peer: &str, key: &LaneKey, id: ConnId, now: Instant) -> bool {
        let mut m = self.peers.lock();
        let p = m.entry(peer.to_string()).or_default();
        p.open.push((key.clone(), id));
        if key.is_control() {
            p.lives.push((id, now));
        }
        p.follows(key, id, now)
    }

    /// Whether connection `id` of `peer`'s lane `key` must still wait for
    /// another.
    fn older(&self, peer: &str, key: &LaneKey, id: ConnId, now: Instant) -> bool {
        self.peers
            .lock()
            .get(peer)
            .is_some_and(|p| p.follows(key, id, now))
    }

    /// Connection `id` of `peer`'s lane `key` ended. Whether a newer
    /// connection of the peer may wait for it.
    fn close(&self, peer: &str, key: &LaneKey, id: ConnId) -> bool {
        let mut m = self.peers.lock();
        let Some(p) = m.get_mut(peer) else {
            return false;
        };
        p.open.retain(|(k, o)| !(*o == id && k == key));
        let newer = p.open.iter().any(|(_, o)| *o > id);
        // (a life matters while a connection older than it is read)
        let open = &p.open;
        p.lives.retain(|(c, _)| open.iter().any(|(_, o)| o < c));
        if p.open.is_empty() {
            m.remove(peer);
        }
        newer
    }
}

enum Cmd {
    Attach(Box<Entry>),
    /// Stop writing, read until the peer closes (or [`DRAIN`] ends).
    Close(ConnId, String),
    /// End a drain now.
    Abort(ConnId),
    /// A lane whose reads waited for a fence may be read again (the round
    /// looks at every connection that waits).
    Recheck,
    /// Move a connection to another poller now, as `io => auto` does
    /// (tests drive moves with it).
    #[cfg(test)]
    HandOver(ConnId, Arc<Poller>),
}

struct State {
    poll: mio::Poll,
    events: Events,
    conns: FastMap<ConnId, Box<Entry>>,
    /// Lanes that wrote a batch and have more queued.
    again: Vec<Arc<Lane>>,
    /// Events that a blocking wait collected, for the next round.
    stashed: Vec<(Token, Readiness)>,
    /// Whether to keep polling after a round ([`Outcome::Linger`]).
    linger: Linger,
    /// The readable connections, in the order they are read: round robin
    /// (each at most [`Budget::per_conn`] per round, all [`Budget::round`]).
    order: ServiceOrder<ConnId>,
    /// Connections whose lane's reads wait for a fence (see
    /// [`weft_core::share`]): not read until it comes; rare, looked at in
    /// every round while there are any.
    waiting: Vec<ConnId>,
    /// Connections that carried bulk this round (`io => auto`): the only
    /// ones whose place can change, but for the quiet check.
    bulk: Vec<ConnId>,
    /// When a threaded poller next looks for quiet connections to send
    /// home (`io => auto`), on its clock.
    quiet_check_at: Micros,
}

/// One poller. Shared by the lanes and connections it serves.
pub struct Poller {
    index: usize,
    /// This poller, for a lane that must follow a connection here.
    me: Weak<Poller>,
    state: Mutex<State>,
    inbox: Mutex<Vec<Cmd>>,
    flush: Mutex<Vec<Arc<Lane>>>,
    /// The idle flag and how to wake this poller (see [`crate::wake`]).
    wakeup: Arc<Wakeup>,
    fd: RawFd,
    shared: OnceLock<Weak<Shared>>,
    stopped: AtomicBool,
    /// Connections this poller holds (served, draining, or handed to it
    /// and not yet taken): [`Poller::open_connections`].
    open: AtomicUsize,
    /// The origin of the poller's clock.
    origin: Instant,
    /// Whether the CPUs are contended (lingering less then), if the
    /// linger adapts.
    pressure: Option<Arc<CpuPressure>>,
}

/// Bytes a poller's round may read, in all and per connection (a round
/// writes up to [`ROUND_BUDGET`] whatever the poller's kind). With `io =>
/// threads` every connection is on a threaded poller, so a ready one waits
/// behind up to `(n - 1) * 256 KiB` of others (see
/// [`weft_core::placement`], "Fairness"); with `io => auto` only bulk
/// connections are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Budget {
    round: usize,
    per_conn: usize,
}

impl Budget {
    fn of(threaded: bool) -> Budget {
        if threaded {
            Budget {
                round: THREAD_ROUND_BUDGET,
                per_conn: THREAD_READ_BUDGET,
            }
        } else {
            Budget {
                round: ROUND_BUDGET,
                per_conn: READ_BUDGET,
            }
        }
    }
}

impl Poller {
    /// A poller with an empty epoll set: `threaded` for a thread of its own
    /// (woken through an eventfd), else driven by the embedding program.
    /// It lingers `linger` after light work, and `busy` while `pressure`
    /// says the CPUs are contended.
    pub(crate) fn new(
        index: usize,
        threaded: bool,
        linger: Duration,
        busy: Duration,
        pressure: Option<Arc<CpuPressure>>,
    ) -> std::io::Result<Arc<Poller>> {
        let poll = mio::Poll::new()?;
        let waker = if threaded {
            Some(mio::Waker::new(poll.registry(), WAKER)?)
        } else {
            None
        };
        let fd = poll.as_raw_fd();
        Ok(Arc::new_cyclic(|me| Poller {
            index,
            me: me.clone(),
            state: Mutex::new(State {
                poll,
                events: Events::with_capacity(EVENTS),
                conns: FastMap::default(),
                again: Vec::new(),
                stashed: Vec::new(),
                linger: Linger::new(linger.as_micros() as Micros, busy.as_micros() as Micros),
                order: ServiceOrder::new(),
                waiting: Vec::new(),
                bulk: Vec::new(),
                quiet_check_at: 0,
            }),
            inbox: Mutex::new(Vec::new()),
            flush: Mutex::new(Vec::new()),
            wakeup: Wakeup::new(index, fd, waker),
            fd,
            shared: OnceLock::new(),
            stopped: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            origin: Instant::now(),
            pressure,
        }))
    }

    pub(crate) fn set_shared(&self, shared: &Arc<Shared>) {
        let _ = self.shared.set(Arc::downgrade(shared));
        let notify: Weak<dyn Notify> = Arc::downgrade(shared) as Weak<Shared>;
        self.wakeup.set_notify(notify);
    }

    /// Scheduler mode: the watcher that wakes this poller on socket events.
    pub(crate) fn set_watcher(&self, w: Arc<Watcher>) -> std::io::Result<()> {
        self.wakeup.set_watcher(w)
    }

    /// The poller's wake-up state (for the watcher thread).
    pub(crate) fn wakeup(&self) -> &Arc<Wakeup> {
        &self.wakeup
    }

    /// Whether the transport stopped this poller.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Whether this poller runs on a thread of its own.
    pub fn is_threaded(&self) -> bool {
        self.wakeup.is_threaded()
    }

    /// How many connections this poller holds: served, draining after a
    /// close, or handed to it and not yet taken. A stopping transport
    /// waits for this to reach 0 (every drain ended).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Which poller of the transport this is.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The epoll set's descriptor: readable when a socket of this poller
    /// has an event (the watcher waits on it).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Serve `conn` (a connection of `lane` to `peer`) from now on.
    pub(crate) fn attach(&self, conn: Arc<Conn>, peer: String, lane: Arc<Lane>, max_frame: u64) {
        self.open.fetch_add(1, Ordering::AcqRel);
        // (frames in parts are data: never on the control lane)
        let parts = conn
            .negotiated
            .caps
            .contains(weft_core::Capabilities::PARTS)
            && !lane.key.is_control();
        let reader = if parts {
            FrameReader::with_parts(max_frame)
        } else {
            FrameReader::new(max_frame)
        };
        let shared = self.shared.get().and_then(Weak::upgrade);
        let older = shared
            .as_ref()
            .is_some_and(|s| s.reading.open(&peer, &lane.key, conn.id, Instant::now()));
        if let Some(s) = shared.filter(|_| older) {
            // (a wait for a new life ends in time: look again then)
            let pollers = s.pollers.clone();
            s.runtime.spawn(async move {
                tokio::time::sleep(LIFE_WAIT).await;
                pollers.resume_reads();
            });
        }
        self.inbox.lock().push(Cmd::Attach(Box::new(Entry {
            conn,
            reader,
            peer,
            lane,
            readable: true,
            traffic: Traffic::new(),
            draining: None,
            older,
            waits_for: None,
        })));
        self.wake();
    }

    /// Close connection `id` (see [`Conn::close`]).
    pub(crate) fn close(&self, id: ConnId) {
        self.inbox
            .lock()
            .push(Cmd::Close(id, "closed locally".into()));
        self.wake();
    }

    /// End the drain of connection `id` (see [`DRAIN`]).
    pub(crate) fn abort(&self, id: ConnId) {
        self.inbox.lock().push(Cmd::Abort(id));
        self.wake();
    }

    /// `lane` has frames to write.
    pub(crate) fn flush_later(&self, lane: Arc<Lane>) {
        self.flush.lock().push(lane);
        self.wake();
    }

    /// Look at the connections set aside: one may be read now (see
    /// [`Reading`] and [`weft_core::share`]).
    pub(crate) fn resume_reads(&self) {
        // (in the inbox, so that a poller going idle sees it: see
        // `crate::wake`)
        self.inbox.lock().push(Cmd::Recheck);
        self.wake();
    }

    /// Wake the poller if it is idle (or about to be); see [`crate::wake`].
    pub fn wake(&self) {
        self.wakeup.wake();
    }

    /// Mark the poller idle if there is really nothing to do; `false` means
    /// work arrived meanwhile (poll again). After `true`, whoever adds work
    /// wakes the poller (see [`crate::wake`]).
    pub fn try_idle(&self) -> bool {
        self.wakeup.try_idle(|| {
            let pending = !self.inbox.lock().is_empty() || !self.flush.lock().is_empty();
            pending || self.is_stopped()
        })
    }

    /// Stop serving: drop every connection (their sockets close when the
    /// lanes let go of them too). Further rounds do nothing.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // A thread parked in `park` holds the state: wake it first.
        self.wake();
        let mut st = self.state.lock();
        let conns: Vec<Box<Entry>> = st.conns.drain().map(|(_, e)| e).collect();
        for e in conns {
            let _ = st
                .poll
                .registry()
                .deregister(&mut SourceFd(&e.conn.stream().as_raw_fd()));
            e.lane.detach(e.conn.id);
        }
        st.again.clear();
        self.inbox.lock().clear();
        self.flush.lock().clear();
        self.open.store(0, Ordering::Release);
    }

    /// Threads mode: wait until there may be work (events or a wake-up).
    pub fn park(&self, timeout: Option<Duration>) {
        // `stop` sets the flag, then wakes an idle poller: either it sees
        // this poller idle, or this poller sees the flag here.
        if !self.try_idle() || self.is_stopped() {
            self.wakeup.busy();
            return;
        }
        let mut st = self.state.lock();
        let st = &mut *st;
        if st.poll.poll(&mut st.events, timeout).is_ok() {
            for ev in st.events.iter() {
                st.stashed.push((ev.token(), Readiness::of(ev)));
            }
        }
        self.wakeup.busy();
    }

    /// Now, on the poller's clock.
    fn now(&self) -> Micros {
        self.at(Instant::now())
    }

    /// `at`, on the poller's clock.
    fn at(&self, at: Instant) -> Micros {
        at.saturating_duration_since(self.origin).as_micros() as Micros
    }

    /// One round of work; see the module documentation.
    pub fn poll(&self) -> Outcome {
        if self.stopped.load(Ordering::Acquire) {
            return Outcome::Idle;
        }
        // Without a transport (a lane's own tests) there is nobody to
        // deliver to: flushes only.
        let shared = self.shared.get().and_then(Weak::upgrade);
        let shared = shared.as_deref();
        self.wakeup.busy();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let mut closes = Vec::new();
        self.commands(st, shared, &mut closes);
        if !st.waiting.is_empty() {
            resume_waiting(st, shared);
        }
        let writable = readiness(st);
        let written = self.flushes(st, writable);
        let mut round = reads(st, shared, &mut closes, Budget::of(self.is_threaded()));
        if let Some(shared) = shared {
            flush_deliveries(shared);
        }
        round.written = written;
        forget(st, shared, closes, &self.open);
        let instant = Instant::now();
        let now = self.at(instant);
        self.placement(st, shared, now);
        let contended = self.pressure.as_ref().is_some_and(|p| p.contended(instant));
        let outcome = outcome(st, now, round, contended);
        // (a threaded poller yields after every lingering round already)
        let give_way = outcome == Outcome::Linger && st.linger.give_way() && !self.is_threaded();
        drop(guard);
        if give_way {
            std::thread::yield_now();
        }
        outcome
    }

    /// New connections and close requests. A connection closed locally
    /// drains: no more writes, and what the peer sent before it heard of
    /// the close is still read (for [`DRAIN`] at most).
    fn commands(&self, st: &mut State, shared: Option<&Shared>, closes: &mut Closes) {
        let mut drains: Closes = Vec::new();
        #[cfg(test)]
        let mut hand_overs = Vec::new();
        let inbox = std::mem::take(&mut *self.inbox.lock());
        for cmd in inbox {
            match cmd {
                Cmd::Attach(mut e) => {
                    let fd = e.conn.stream().as_raw_fd();
                    let id = e.conn.id;
                    e.readable = true;
                    st.order.ready(id);
                    let closing = e.conn.is_closing();
                    if let Err(err) = st.poll.registry().register(
                        &mut SourceFd(&fd),
                        Token(id as usize),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        closes.push((id, format!("cannot poll the socket: {err}")));
                    }
                    // The lane's newest connection comes here while the
                    // lane moved to another poller (the driver read the
                    // lane's poller before a move of the connection this one
                    // replaces): the lane follows its connection, whose
                    // readiness comes here, so that one poller writes it
                    // and sees its bulk.
                    if !closing && !e.lane.served_by(self) && e.lane.socket().conn == Some(id) {
                        if let Some(me) = self.me.upgrade() {
                            e.lane.move_to(me.clone());
                            e.conn.move_to(me);
                            e.lane.reflush();
                        }
                    }
                    st.conns.insert(id, e);
                    if closing {
                        drains.push((id, "closed locally".into()));
                    }
                }
                Cmd::Close(id, reason) => drains.push((id, reason)),
                // (the round looks at the waiting connections)
                Cmd::Recheck => {}
                #[cfg(test)]
                Cmd::HandOver(id, target) => hand_overs.push((id, target)),
                Cmd::Abort(id) => {
                    if let Some(e) = st.conns.get(&id) {
                        let why = e
                            .draining
                            .clone()
                            .unwrap_or_else(|| "closed locally".into());
                        closes.push((id, why));
                    }
                }
            }
        }
        #[cfg(test)]
        for (id, target) in hand_overs {
            self.hand_over(st, id, target);
        }
        for (id, reason) in drains {
            let Some(e) = st.conns.get_mut(&id) else {
                continue;
            };
            if e.draining.is_some() {
                continue;
            }
            let Some(shared) = shared else {
                closes.push((id, reason));
                continue;
            };
            // No more writes; what the peer sent before it heard of the
            // close is still read and delivered.
            e.draining = Some(reason);
            if !e.readable {
                e.readable = true;
                st.order.ready(id);
            }
            e.lane.detach(id);
            let _ = e.conn.stream().shutdown(std::net::Shutdown::Write);
            let conn = e.conn.clone();
            shared.runtime.spawn(async move {
                tokio::time::sleep(DRAIN).await;
                conn.poller().abort(conn.id);
            });
        }
    }

    /// Flushes: lanes with more to write from earlier rounds first, then
    /// those whose socket has room again (`writable`), then those senders
    /// asked for since; so a lane that the round's budget did not reach
    /// goes before newer ones next time. Returns the bytes written.
    fn flushes(&self, st: &mut State, mut writable: Vec<Arc<Lane>>) -> usize {
        let mut lanes = std::mem::take(&mut st.again);
        lanes.append(&mut writable);
        lanes.append(&mut *self.flush.lock());
        let mut written = 0;
        for lane in lanes {
            // Only the poller that serves a lane now flushes it, where its
            // socket's readiness comes: a request that came here before or
            // while the lane moved away (a flush again, one asked meanwhile,
            // a fence written on the shared lane) goes on to that poller.
            // Two pollers writing one lane would each take the other's
            // readiness for their own (see `SendQueue::put_back`).
            if !lane.served_by(self) {
                lane.poller().flush_later(lane);
                continue;
            }
            // A round writes about as much as it may read: lanes past that
            // wait for the next round, so that one call stays short (on a
            // scheduler, a long call is a long schedule).
            if written >= ROUND_BUDGET {
                if !st.again.iter().any(|l| Arc::ptr_eq(l, &lane)) {
                    st.again.push(lane);
                }
                continue;
            }
            let (state, n, large) = lane.flush();
            written += n;
            // (finding the connection takes the lane's lock: only when it
            // matters)
            if large {
                if let Some((id, e)) = lane
                    .socket()
                    .conn
                    .and_then(|c| st.conns.get_mut(&c).map(|e| (c, e)))
                {
                    e.traffic.wrote_large();
                    st.bulk.push(id);
                }
            }
            if state == Flush::More && !st.again.iter().any(|l| Arc::ptr_eq(l, &lane)) {
                st.again.push(lane);
            }
        }
        written
    }

    /// Auto mode: bulk connections to a threaded poller, quiet ones back
    /// (the policy is [`Traffic::place`]).
    fn placement(&self, st: &mut State, shared: Option<&Shared>, now: Micros) {
        // (taken in every mode: the rounds note bulk whatever the mode)
        let mut candidates = std::mem::take(&mut st.bulk);
        let Some(set) = shared
            .map(|s| &s.pollers)
            .filter(|p| p.mode == IoMode::Auto)
        else {
            return;
        };
        let threaded = self.is_threaded();
        // Only a connection that carried bulk this round can move, except
        // that a threaded poller sends quiet ones home: it looks at all of
        // them every QUIET_CHECK.
        if threaded && now >= st.quiet_check_at {
            st.quiet_check_at = now + QUIET_CHECK.as_micros() as Micros;
            candidates = st.conns.keys().copied().collect();
        }
        let mut moves: Vec<(ConnId, Arc<Poller>)> = Vec::new();
        for id in candidates {
            let Some(e) = st.conns.get_mut(&id) else {
                continue;
            };
            // A draining connection, or one that may wait for an older one
            // ([`Reading`]), stays here until that ends.
            let held = e.draining.is_some() || e.older;
            let target = match e.traffic.place(now, threaded, held) {
                Place::Stay => continue,
                Place::Bulk => set.bulk(&e.peer, &e.lane.key),
                Place::Home => set.home(&e.peer, &e.lane.key),
            };
            if !std::ptr::eq(Arc::as_ptr(&target), self) {
                moves.push((id, target));
            }
        }
        for (id, target) in moves {
            self.hand_over(st, id, target);
        }
    }

    /// Move connection `id` (and its lane) from this poller to `target`.
    fn hand_over(&self, st: &mut State, id: ConnId, target: Arc<Poller>) {
        st.order.remove(id);
        if let Some(mut e) = st.conns.remove(&id) {
            let _ = st
                .poll
                .registry()
                .deregister(&mut SourceFd(&e.conn.stream().as_raw_fd()));
            // The entry keeps its reader state; its traffic is on the new
            // poller's clock from now on.
            e.traffic.moved(target.now(), target.is_threaded());
            e.lane.move_to(target.clone());
            e.conn.move_to(target.clone());
            let lane = e.lane.clone();
            target.open.fetch_add(1, Ordering::AcqRel);
            self.open.fetch_sub(1, Ordering::AcqRel);
            target.inbox.lock().push(Cmd::Attach(e));
            target.wake();
            lane.reflush();
        }
    }

    /// The connections noted as carrying bulk and not yet looked at by
    /// [`Poller::placement`] (tests: none are left after a round).
    #[cfg(test)]
    pub(crate) fn bulk_noted(&self) -> usize {
        self.state.lock().bulk.len()
    }

    /// Move connection `id` to `target` at this poller's next round (tests:
    /// `io => auto` moves connections in [`Poller::placement`]).
    #[cfg(test)]
    pub(crate) fn hand_over_later(&self, id: ConnId, target: Arc<Poller>) {
        self.inbox.lock().push(Cmd::HandOver(id, target));
        self.wake();
    }
}

/// How connections and lanes reach their poller (see [`ConnPoller`]).
impl ConnPoller for Poller {
    fn close(&self, id: ConnId) {
        Poller::close(self, id);
    }
    fn abort(&self, id: ConnId) {
        Poller::abort(self, id);
    }
    fn resume_reads(&self) {
        Poller::resume_reads(self);
    }
}

/// How lanes and the driver reach a lane's poller (see [`LanePoller`]).
impl LanePoller for Poller {
    fn flush_later(&self, lane: Arc<Lane>) {
        Poller::flush_later(self, lane);
    }
    fn is_threaded(&self) -> bool {
        Poller::is_threaded(self)
    }
    fn attach(&self, conn: Arc<Conn>, peer: String, lane: Arc<Lane>, max_frame: u64) {
        Poller::attach(self, conn, peer, lane, max_frame);
    }
}

/// The waiting connections that may be read now (their lane's fence
/// came, or their older connections ended) are read again (they may have
/// bytes buffered, in their reader or their socket).
fn resume_waiting(st: &mut State, shared: Option<&Shared>) {
    let State {
        conns,
        order,
        waiting,
        ..
    } = st;
    waiting.retain(|id| match conns.get_mut(id) {
        None => false,
        Some(e) => {
            if blocked(e, shared) {
                return true;
            }
            e.readable = true;
            order.ready(*id);
            false
        }
    });
}

/// `e` (connection `id`) is not read until it may be: its lane's fence
/// comes, or the connections it follows end ([`resume_waiting`] looks at
/// it again when a poller is told so).
fn set_aside(e: &mut Entry, waiting: &mut Vec<ConnId>, id: ConnId) {
    e.readable = false;
    if !waiting.contains(&id) {
        waiting.push(id);
    }
}

/// Whether `e` may not be read now: it stopped at a wait whose fence has
/// not come, an older connection of its peer and lane is still read
/// ([`Reading`]), or (a control connection) the driver has not taken
/// enough of what it carried ([`crate::backlog`]).
fn blocked(e: &mut Entry, shared: Option<&Shared>) -> bool {
    if let Some(token) = e.waits_for {
        if !e.lane.fence_passed(token) {
            return true;
        }
        e.waits_for = None;
        e.lane.unwait(token);
    }
    if e.older {
        let still = shared.is_some_and(|s| {
            s.reading
                .older(&e.peer, &e.lane.key, e.conn.id, Instant::now())
        });
        if still {
            return true;
        }
        // (ids grow: once none is older, none ever will be)
        e.older = false;
    }
    e.lane.key.is_control() && e.conn.backlog.holds_reads()
}

/// Bytes came on `e`, a control connection that is not read yet (it waits
/// for an older one of its peer to end, [`Reading`]): the peer is alive.
/// It counts as a heartbeat on that connection, so a peer whose heartbeats
/// wait there (up to [`DRAIN`]) is not declared down meanwhile. (Only for
/// the peer's current control connection, as every heartbeat; at most
/// once per readiness event: when it is attached, when bytes arrive
/// (several arrivals between two rounds make one), when it closes; and
/// not while one of the connection's heartbeats is on its way.)
fn heard(shared: &Shared, e: &Entry) {
    to_driver(shared, &e.peer, &e.conn, Control::Heartbeat, 1);
}

/// Hand control message `msg` (a frame body of `len` bytes) of `peer`'s
/// connection `conn` to the driver, counted in the connection's backlog
/// (see [`crate::backlog`]); a heartbeat only if none of the connection's
/// is on its way already. [`Flow::Pause`]: the backlog is full, read no
/// more of the connection for now ([`blocked`]).
fn to_driver(shared: &Shared, peer: &str, conn: &Arc<Conn>, msg: Control, len: usize) -> Flow {
    let heartbeat = matches!(msg, Control::Heartbeat);
    if heartbeat && !conn.backlog.heartbeat_wanted() {
        return Flow::Go;
    }
    let (ticket, full) = Ticket::new(conn, len as u64, heartbeat, &shared.driver_queued);
    let event = ConnEvent::Control {
        from: peer.to_string(),
        conn: conn.id,
        msg,
        ticket,
    };
    let _ = shared.driver.send(event.into());
    if full {
        Flow::Pause
    } else {
        Flow::Go
    }
}

/// Connections to forget, and why.
type Closes = Vec<(ConnId, String)>;

/// Readiness: what a blocking wait stashed, and what is new. Marks the
/// readable connections; returns the lanes whose socket is writable.
fn readiness(st: &mut State) -> Vec<Arc<Lane>> {
    let mut writable: Vec<Arc<Lane>> = Vec::new();
    let mut events = std::mem::take(&mut st.stashed);
    if st.poll.poll(&mut st.events, Some(Duration::ZERO)).is_ok() {
        for ev in st.events.iter() {
            events.push((ev.token(), Readiness::of(ev)));
        }
    }
    for (token, ready) in events {
        if token == WAKER {
            continue;
        }
        if let Some(e) = st.conns.get_mut(&(token.0 as ConnId)) {
            if ready.closed {
                e.reader.peer_closed();
            }
            if ready.readable && !e.readable {
                e.readable = true;
                st.order.ready(token.0 as ConnId);
            }
            if ready.writable {
                writable.push(e.lane.clone());
            }
        }
    }
    writable
}

/// Reads, within the round's budget, the readable connections in turn
/// ([`ServiceOrder`]: round robin, bounded work each). A connection that
/// must follow another ([`Reading`]: one it replaced, whose frames were
/// sent before its own) or that stopped at a wait is set aside until it
/// may be read ([`resume_waiting`]). Returns what was read.
fn reads(st: &mut State, shared: Option<&Shared>, closes: &mut Closes, budget: Budget) -> Round {
    let mut round = Round::default();
    let State {
        conns,
        order,
        bulk,
        waiting,
        ..
    } = st;
    let Some(shared) = shared else {
        for e in conns.values_mut() {
            e.readable = false;
        }
        *order = ServiceOrder::new();
        return round;
    };
    round.read = order.round(budget.round, budget.per_conn, |conn_id, allowance| {
        let Some(e) = conns.get_mut(&conn_id) else {
            return Served::Gone;
        };
        if !e.readable {
            return Served::Gone;
        }
        if blocked(e, Some(shared)) {
            // (a full backlog: what the driver has not taken says as much)
            if e.lane.key.is_control() && e.older {
                heard(shared, e);
            }
            set_aside(e, waiting, conn_id);
            return Served::Drained(0);
        }
        let alloc = |len: usize| shared.claims.buffer(len, |n| shared.sink.frame_buffer(n));
        let before = e.reader.bytes_read();
        let large_before = round.large_frames;
        let mut wait = None;
        let status = {
            let mut on_frame = |f: Frame<'_>, ext: &Extensions| {
                match f {
                    Frame::Small(..) => round.small_frames += 1,
                    Frame::Large(_) => round.large_frames += 1,
                }
                inbound(shared, &e.peer, &e.lane, &e.conn, f, ext, &mut wait)
            };
            e.reader
                .read(e.conn.stream(), allowance, &alloc, &mut on_frame)
        };
        if wait.is_some() {
            e.waits_for = wait;
        }
        let used = (e.reader.bytes_read() - before) as usize;
        let in_large = e.reader.in_large_frame();
        round.in_large |= in_large;
        if e.traffic.read(round.large_frames - large_before, in_large) {
            bulk.push(conn_id);
        }
        match status {
            Ok(ReadStatus::Drained) => {
                e.readable = false;
                Served::Drained(used)
            }
            Ok(ReadStatus::Budget) => Served::More(used),
            // A wait: what follows it waits for its lane's fence, unless
            // that came meanwhile (then it is read on its next turn); or a
            // full backlog: what follows waits for the driver.
            Ok(ReadStatus::Paused) if blocked(e, Some(shared)) => {
                set_aside(e, waiting, conn_id);
                Served::Drained(used)
            }
            Ok(ReadStatus::Paused) => Served::More(used),
            // The peer is done sending, and this side still writes out a
            // stopped lane (the peer left or was removed, and closed its
            // end of a lane it had nothing more to write on): the peer
            // still reads (its drain), so the connection stays until the
            // lane is written out (then it closes as every stopped lane
            // does), or fails, or writes nothing for `WRITE_OUT_STALL`.
            Ok(ReadStatus::Closed) if e.draining.is_none() && e.lane.is_writing_out() => {
                e.readable = false;
                Served::Drained(used)
            }
            Ok(ReadStatus::Closed) => {
                let why = e
                    .draining
                    .clone()
                    .unwrap_or_else(|| "closed by peer".into());
                closes.push((conn_id, why));
                e.readable = false;
                Served::Drained(used)
            }
            Err(err) => {
                // A frame from the peer that is not a message (its header
                // cannot be read, or `inbound` refused it) is counted here,
                // the one place for all of them.
                let dropped = &shared.routes.counters.dropped;
                if err.is_bad_frame() {
                    dropped.malformed.fetch_add(1, Ordering::Relaxed);
                } else if let ReadError::NoMemory(_) = err {
                    dropped.no_memory.fetch_add(1, Ordering::Relaxed);
                }
                e.readable = false;
                if let Some(why) = &e.draining {
                    closes.push((conn_id, why.clone()));
                    return Served::Drained(used);
                }
                let reason = format!("closing connection: {err}");
                log_close(shared, Instant::now(), &e.peer, &e.lane.key, &reason);
                closes.push((conn_id, reason));
                Served::Drained(used)
            }
        }
    });
    round
}

/// Warn that a connection of `peer` is closed for what it sent (a bad
/// frame, a read error): the first time at once, then at most once per
/// peer per [`log_limit::WINDOW`] (and [`log_limit::MAX_LINES`] over all
/// peers). A peer that knows the cookie can reconnect and send a bad frame
/// without end; the frames are all counted (`dropped.malformed`), and what
/// is not logged is told in a summary ([`close_summary`]).
pub(crate) fn log_close(shared: &Shared, now: Instant, peer: &str, lane: &LaneKey, reason: &str) {
    let Some(pass) = shared.closes.record(now, &peer.to_string()) else {
        return;
    };
    let text = match pass.held {
        0 => reason.to_string(),
        n => {
            let whose = if pass.others {
                "other peers"
            } else {
                "this peer"
            };
            format!("{reason} ({n} more connections of {whose} closed in the last window)")
        }
    };
    shared
        .sink
        .log(Level::Warning, &text, Some(peer), Some(lane));
}

/// The summary line of the closes of `peer` (`None`: of other peers) that
/// [`log_close`] held back in a window that ended.
pub(crate) fn close_summary(peer: Option<&str>, held: u64) -> String {
    let from = match peer {
        Some(p) => format!("peer {p}"),
        None => "other peers".to_string(),
    };
    format!(
        "{held} more connections from {from} closed for bad frames or read errors in the last {} s \
         (bad frames are counted in weft:info() dropped.malformed)",
        log_limit::WINDOW.as_secs()
    )
}

/// Connections that ended: forget them and tell the driver.
fn forget(st: &mut State, shared: Option<&Shared>, closes: Closes, open: &AtomicUsize) {
    for (id, reason) in closes {
        st.order.remove(id);
        if let Some(e) = st.conns.remove(&id) {
            open.fetch_sub(1, Ordering::AcqRel);
            let _ = st
                .poll
                .registry()
                .deregister(&mut SourceFd(&e.conn.stream().as_raw_fd()));
            e.lane.detach(id);
            let _ = e.conn.stream().shutdown(std::net::Shutdown::Both);
            if let Some(shared) = shared {
                if let Some(token) = e.waits_for {
                    e.lane.unwait(token);
                }
                // (a newer connection of the lane may wait for this one:
                // every poller looks at its waiting ones; rare)
                if shared.reading.close(&e.peer, &e.lane.key, id) {
                    shared.pollers.resume_reads();
                }
                let _ = shared
                    .driver
                    .send(ConnEvent::Closed { conn: id, reason }.into());
            }
        }
    }
}

/// What the round found: more work, lingering (a round that moved a few
/// small frames: the next frame is likely close behind, and finding it by
/// polling is much cheaper than being woken; see [`Linger`]), or idle.
///
/// A readable connection is exactly one in the service order (one set
/// aside leaves it), so this looks at no connection.
fn outcome(st: &mut State, now: Micros, round: Round, contended: bool) -> Outcome {
    let busy = !st.again.is_empty() || !st.order.is_empty();
    let lingering = st.linger.round(now, &round, contended);
    if busy {
        Outcome::Busy
    } else if lingering {
        Outcome::Linger
    } else {
        Outcome::Idle
    }
}

/// Hand over what the sink held back; count what found no destination.
fn flush_deliveries(shared: &Shared) {
    let lost = shared.sink.flush_deliveries();
    if lost > 0 {
        let dropped = &shared.routes.counters.dropped;
        dropped.no_destination.fetch_add(lost, Ordering::Relaxed);
    }
}

/// What one event of a socket says.
#[derive(Debug, Clone, Copy)]
struct Readiness {
    /// There is something to read: data, the end of the stream, an error.
    readable: bool,
    writable: bool,
    /// The peer closed its end, or the connection failed: read to the end
    /// (see [`FrameReader::peer_closed`]).
    closed: bool,
}

impl Readiness {
    fn of(ev: &mio::event::Event) -> Readiness {
        let closed = ev.is_read_closed() || ev.is_error();
        Readiness {
            readable: ev.is_readable() || closed,
            writable: ev.is_writable(),
            closed,
        }
    }
}

/// Whether the stage (if any) drops an application message of `len`
/// bytes from `peer` on `lane`, and why.
#[inline]
fn dropped_on_receive(shared: &Shared, peer: &str, lane: &Lane, len: usize) -> Option<DropReason> {
    let stage = shared.routes.stage()?;
    let m = Envelope {
        peer,
        channel: &lane.key.channel,
        lane: Some(lane.key.index),
        size: len,
        sender: None,
    };
    match stage.on_receive(&m) {
        Verdict::Pass => None,
        Verdict::Drop(reason) => Some(reason),
    }
}

/// One frame from `peer` on `lane`, with the extensions of its header:
/// application data to the sink (unless the per-message stage drops it),
/// control frames (only on the control lane) to the driver. A frame may
/// carry only the extensions of capabilities its connection `conn`
/// negotiated; any other is a protocol error. A wait whose fence has not
/// come pauses the read, its token in `wait`. (Nothing uses the extensions beyond that
/// check yet: this is where sequence numbers, acks, relaying and traces
/// will be handled.)
fn inbound(
    shared: &Shared,
    peer: &str,
    lane: &Lane,
    conn: &Arc<Conn>,
    frame: Frame<'_>,
    ext: &Extensions,
    wait: &mut Option<u64>,
) -> Result<Flow, String> {
    let negotiated = &conn.negotiated;
    if !negotiated.allows(ext) {
        return Err(format!(
            "frame with header extensions {} not negotiated (this connection agreed on {})",
            ext.needs(),
            negotiated.caps
        ));
    }
    let control = lane.key.is_control();
    // A frame for another node (client-server overlay): a server passes it
    // on; a node that does not relay counts it as having no route.
    if let Some(dest) = ext
        .destination
        .as_deref()
        .filter(|d| !control && *d != shared.config.node)
    {
        let body = match &frame {
            Frame::Large(buf) => buf.bytes(),
            Frame::Small(FrameKind::Data, body) => body,
            Frame::Small(kind, _) => return Err(format!("unexpected {kind:?} frame on this lane")),
        };
        lane.stats.recv_frames.fetch_add(1, Ordering::Relaxed);
        lane.stats
            .recv_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        if !shared.routes.pass_on(dest, &lane.key, ext, body) {
            let no_route = &shared.routes.counters.dropped.no_route;
            no_route.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(Flow::Go);
    }
    let (len, delivered) = match frame {
        Frame::Large(buf) if !control => {
            let len = buf.bytes().len();
            match dropped_on_receive(shared, peer, lane, len) {
                Some(reason) => (len, Err(reason)),
                None => {
                    // (what the sink holds back goes first: order)
                    flush_deliveries(shared);
                    (len, Ok(shared.sink.deliver_buffer(peer, buf)))
                }
            }
        }
        Frame::Small(FrameKind::Data, body) if !control => {
            match dropped_on_receive(shared, peer, lane, body.len()) {
                Some(reason) => (body.len(), Err(reason)),
                None => (body.len(), Ok(shared.sink.deliver(peer, body))),
            }
        }
        Frame::Small(FrameKind::Control, body) if !control => {
            // A fence (capability `share`, see `weft_core::share`): what was
            // read before it is delivered, then answered.
            let (index, token) = match decode_control(body) {
                Ok(Control::Fence { index, token })
                    if negotiated.caps.contains(Capabilities::SHARE) =>
                {
                    (index, token)
                }
                // A wait (capability `share_wait`): nothing more is read
                // from this lane's connections until its fence has come on
                // the shared lane (never on the shared lane itself).
                Ok(Control::Wait { token })
                    if negotiated.caps.contains(Capabilities::SHARE)
                        && negotiated.caps.contains(Capabilities::SHARE_WAIT)
                        && !lane.is_shared_lane() =>
                {
                    if !lane.wait(token) {
                        return Ok(Flow::Go);
                    }
                    *wait = Some(token);
                    lane.stats.recv_waits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Flow::Pause);
                }
                _ => return Err("unexpected Control frame on this lane".into()),
            };
            flush_deliveries(shared);
            let key = LaneKey {
                channel: lane.key.channel.clone(),
                index,
            };
            // (on the shared lane: a wait for it on the lane's own
            // connection may go on, now that what came before it here is
            // delivered; the lane of this shared lane's route, even if a
            // newer route replaced it)
            // (rare: a connection stopped at a wait for this fence; every
            // poller looks at its waiting connections)
            if lane.sibling(index).is_some_and(|l| l.fence_read(token)) {
                shared.pollers.resume_reads();
            }
            shared.routes.answer_fence(peer, key, token);
            return Ok(Flow::Go);
        }
        Frame::Small(FrameKind::Control, body) => {
            let msg = decode_control(body).map_err(|e| format!("bad control frame: {e}"))?;
            if let Control::Fenced { lane, token } = &msg {
                shared.routes.fenced(peer, lane, *token);
                return Ok(Flow::Go);
            }
            let flow = to_driver(shared, peer, conn, msg, body.len());
            lane.stats.recv_frames.fetch_add(1, Ordering::Relaxed);
            let len = body.len() as u64;
            lane.stats.recv_bytes.fetch_add(len, Ordering::Relaxed);
            return Ok(flow);
        }
        Frame::Small(kind, _) => return Err(format!("unexpected {kind:?} frame on this lane")),
        Frame::Large(_) => return Err("unexpected data frame on this lane".into()),
    };
    lane.stats.recv_frames.fetch_add(1, Ordering::Relaxed);
    lane.stats
        .recv_bytes
        .fetch_add(len as u64, Ordering::Relaxed);
    let dropped = &shared.routes.counters.dropped;
    match delivered {
        Ok(Delivery::Delivered) => Ok(Flow::Go),
        Err(reason) => {
            dropped.by_stage(reason).fetch_add(1, Ordering::Relaxed);
            Ok(Flow::Go)
        }
        Ok(Delivery::NoDestination) => {
            dropped.no_destination.fetch_add(1, Ordering::Relaxed);
            Ok(Flow::Go)
        }
        Ok(Delivery::AtomLimit) => {
            let n = dropped.atom_limit.fetch_add(1, Ordering::Relaxed) + 1;
            // (the 1st, 10th, 100th, ... : a flood of them is a few lines)
            if is_power_of_ten(n) {
                shared.sink.log(
                    Level::Warning,
                    &format!(
                        "{n} received messages dropped so far: decoding them would create atoms \
                         while the atom table is near its limit (dropped.atom_limit)"
                    ),
                    Some(peer),
                    Some(&lane.key),
                );
            }
            Ok(Flow::Go)
        }
        // (counted by the caller, with every frame it refuses)
        Ok(Delivery::Malformed) => Err(format!(
            "malformed data frame ({len} bytes, not a {{Dest, Msg}} term)"
        )),
    }
}

/// Whether `n` is 1, 10, 100, ...
fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// Threads mode: the loop of one poller's thread.
pub(crate) fn run_thread(poller: Arc<Poller>) {
    // In auto mode, an idle threaded poller still looks for quiet
    // connections to send back now and then.
    let auto = poller
        .shared
        .get()
        .and_then(Weak::upgrade)
        .is_some_and(|s| s.pollers.mode == IoMode::Auto);
    let timeout = auto.then_some(QUIET_CHECK);
    while !poller.stopped.load(Ordering::Acquire) {
        match poller.poll() {
            Outcome::Idle => poller.park(timeout),
            Outcome::Linger => std::thread::yield_now(),
            Outcome::Busy => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection waits for an older one of its lane, and a data lane's
    /// for every one older than a control connection older than it (a new
    /// life of the link); the control lane only for its own kind; and
    /// none once those ended.
    #[test]
    fn a_connection_follows_older_ones_of_its_lane_and_of_an_earlier_life() {
        let r = Reading::default();
        let lane = |i| LaneKey {
            channel: "c".into(),
            index: i,
        };
        let control = LaneKey::control();
        let t = Instant::now();
        // the first life: control 1, lanes 0-2 on 2, 3, 4
        assert!(!r.open("p", &control, 1, t));
        for (i, id) in [(0, 2), (1, 3), (2, 4)] {
            assert!(!r.open("p", &lane(i), id, t));
        }
        // lane 1 reconnects: it follows its older connection only
        assert!(r.open("p", &lane(1), 5, t));
        assert!(!r.older("p", &lane(2), 4, t));
        assert!(r.close("p", &lane(1), 3));
        assert!(!r.older("p", &lane(1), 5, t));
        // a new life: control 6; lane 0's new connection 7 follows every
        // data connection older than 6, the control lane's 6 only control 1
        assert!(r.open("p", &control, 6, t));
        assert!(r.open("p", &lane(0), 7, t));
        assert!(r.close("p", &control, 1));
        assert!(!r.older("p", &control, 6, t));
        for (i, id) in [(0, 2), (2, 4)] {
            assert!(r.older("p", &lane(0), 7, t));
            r.close("p", &lane(i), id);
        }
        assert!(
            r.older("p", &lane(0), 7, t),
            "lane 1's 5 is of the earlier life"
        );
        // ... for at most LIFE_WAIT: a connection of the earlier life that
        // stays open holds up the new life no longer
        assert!(!r.older("p", &lane(0), 7, t + LIFE_WAIT));
        r.close("p", &lane(1), 5);
        assert!(!r.older("p", &lane(0), 7, t));
        // another peer is another matter
        assert!(!r.open("q", &lane(0), 8, t));
    }

    /// A threaded poller reads a connection four times as far per turn as
    /// a driven one (two reads for a 512 KB frame), still in turn: with
    /// eight connections each holding 1 MiB, a round serves the first four
    /// 256 KiB each, and the next round the other four first.
    #[test]
    fn a_threaded_pollers_round_reads_more_still_in_turn() {
        assert_eq!(
            Budget::of(false),
            Budget {
                round: 256 * 1024,
                per_conn: 64 * 1024
            }
        );
        let b = Budget::of(true);
        assert_eq!((b.round, b.per_conn), (1024 * 1024, 256 * 1024));
        let mut order = ServiceOrder::new();
        let mut left = [1usize << 20; 8];
        for k in 0..8 {
            order.ready(k);
        }
        let mut served = Vec::new();
        for _ in 0..2 {
            let n = order.round(b.round, b.per_conn, |k, allowance| {
                let n = allowance.min(left[k]);
                left[k] -= n;
                served.push((k, n));
                Served::More(n)
            });
            assert_eq!(n, b.round);
        }
        let expect: Vec<_> = (0..8).map(|k| (k, 256 * 1024)).collect();
        assert_eq!(served, expect);
    }

    #[test]
    fn powers_of_ten() {
        let yes: Vec<u64> = (0..=100_000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(yes, [1, 10, 100, 1_000, 10_000, 100_000]);
        assert!(is_power_of_ten(10_000_000_000_000_000_000));
    }

    /// `stop` ends a poller's thread wherever the thread is: about to park,
    /// parked, or in a round.
    #[test]
    fn stop_always_ends_the_thread() {
        for i in 0..300 {
            let p = Poller::new(0, true, Duration::ZERO, Duration::ZERO, None).unwrap();
            let t = {
                let p = p.clone();
                std::thread::spawn(move || run_thread(p))
            };
            if i % 3 == 1 {
                std::thread::yield_now();
            } else if i % 3 == 2 {
                std::thread::sleep(Duration::from_micros(200));
            }
            p.stop();
            t.join().unwrap();
        }
    }

    /// A wake-up asked for while the poller decides to sleep is not lost.
    #[test]
    fn work_added_while_going_idle_is_seen() {
        let p = Poller::new(0, false, Duration::ZERO, Duration::ZERO, None).unwrap();
        for _ in 0..1000 {
            assert_eq!(p.poll(), Outcome::Idle);
            let other = {
                let p = p.clone();
                std::thread::spawn(move || p.close(42))
            };
            // Either the close is seen now (not idle), or the closer took the
            // idle mark and would have woken the poller.
            let idle = p.try_idle();
            other.join().unwrap();
            let woken = !p.wakeup.is_idle();
            assert!(!idle || woken, "work pending, poller idle and not woken");
            p.wakeup.busy();
            assert_eq!(p.poll(), Outcome::Idle);
        }
    }
}
