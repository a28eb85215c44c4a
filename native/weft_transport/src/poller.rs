//! Pollers: where established connections are read and lanes are flushed.
//!
//! A poller owns an epoll set (through `mio`) of the connections assigned to
//! it. One call to [`Poller::poll`] is one bounded round: it takes new
//! connections and close requests, collects readiness, flushes the lanes
//! that asked for it (or whose socket became writable again), and reads the
//! readable connections, handing each frame to the sink (application data)
//! or to the driver (control frames). A round does a bounded amount of work
//! and says whether more is waiting ([`Outcome::Busy`]) or not
//! ([`Outcome::Idle`]).
//!
//! Who calls `poll` depends on the I/O mode:
//! - [`IoMode::Schedulers`] (the NIF's default): one Erlang process per
//!   poller calls it on a normal scheduler, as the VM runs port I/O, so a
//!   busy node reads and writes without waking any other thread. An idle
//!   poller's process waits for a message; the transport's watcher thread
//!   sends it one ([`crate::Sink::wake_poller`]) when a socket becomes
//!   ready, and senders do when they queue frames.
//! - [`IoMode::Threads`]: one thread per poller blocks in `epoll_wait`.
//!
//! Waking follows one protocol in both modes: a poller about to wait marks
//! itself idle, then looks once more for work; whoever adds work (a frame to
//! flush, a connection, a socket event seen by the watcher) wakes it only if
//! it takes the idle mark. So no wake-up is lost, and a busy poller costs its
//! senders nothing but a queue push.

use crate::conn::Conn;
use crate::driver::Msg;
use crate::lane::{Flush, Lane};
use crate::reader::{Frame, FrameReader, ReadStatus};
use crate::Shared;
use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use weft_core::frame::decode_control;
use weft_core::{ConnId, FrameKind, LaneKey, Level};

/// Where pollers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// Driven by the embedding program (the BEAM's schedulers), woken
    /// through [`crate::Sink::wake_poller`].
    Schedulers,
    /// Each poller on a thread of its own.
    Threads,
}

/// Bytes one connection may read in one round.
const READ_BUDGET: usize = 256 * 1024;
/// Bytes all connections of a poller may read in one round.
const ROUND_BUDGET: usize = 1024 * 1024;
/// Events taken from the epoll set per round.
const EVENTS: usize = 256;
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
}

enum Cmd {
    Attach(Entry),
    Close(ConnId, String),
}

struct State {
    poll: mio::Poll,
    events: Events,
    conns: HashMap<ConnId, Entry>,
    /// Lanes that wrote a batch and have more queued.
    again: Vec<Arc<Lane>>,
    /// Events that a blocking wait collected, for the next round.
    stashed: Vec<(Token, bool, bool)>,
}

/// One poller. Shared by the lanes and connections it serves.
pub struct Poller {
    index: usize,
    state: Mutex<State>,
    inbox: Mutex<Vec<Cmd>>,
    flush: Mutex<Vec<Arc<Lane>>>,
    idle: AtomicBool,
    waker: Option<mio::Waker>,
    fd: RawFd,
    shared: OnceLock<Weak<Shared>>,
    watcher: OnceLock<Arc<Watcher>>,
    stopped: AtomicBool,
    /// How long to keep polling after the last work ([`Outcome::Linger`]).
    linger: Duration,
    origin: Instant,
    /// When the last round that did work ended, in µs since `origin`.
    last_work: AtomicU64,
}

impl Poller {
    /// A poller with an empty epoll set.
    pub(crate) fn new(
        index: usize,
        mode: IoMode,
        linger: Duration,
    ) -> std::io::Result<Arc<Poller>> {
        let poll = mio::Poll::new()?;
        let waker = match mode {
            IoMode::Threads => Some(mio::Waker::new(poll.registry(), WAKER)?),
            IoMode::Schedulers => None,
        };
        let fd = poll.as_raw_fd();
        Ok(Arc::new(Poller {
            index,
            state: Mutex::new(State {
                poll,
                events: Events::with_capacity(EVENTS),
                conns: HashMap::new(),
                again: Vec::new(),
                stashed: Vec::new(),
            }),
            inbox: Mutex::new(Vec::new()),
            flush: Mutex::new(Vec::new()),
            idle: AtomicBool::new(false),
            waker,
            fd,
            shared: OnceLock::new(),
            watcher: OnceLock::new(),
            stopped: AtomicBool::new(false),
            linger,
            origin: Instant::now(),
            last_work: AtomicU64::new(0),
        }))
    }

    pub(crate) fn set_shared(&self, shared: &Arc<Shared>) {
        let _ = self.shared.set(Arc::downgrade(shared));
    }

    /// Scheduler mode: the watcher that wakes this poller on socket events.
    pub(crate) fn set_watcher(&self, w: Arc<Watcher>) -> std::io::Result<()> {
        w.add(self)?;
        let _ = self.watcher.set(w);
        Ok(())
    }

    /// Whether the transport stopped this poller.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
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
        self.inbox.lock().push(Cmd::Attach(Entry {
            conn,
            reader: FrameReader::new(max_frame),
            peer,
            lane,
            readable: true,
        }));
        self.wake();
    }

    /// Close connection `id` (see [`Conn::close`]).
    pub(crate) fn close(&self, id: ConnId) {
        self.inbox
            .lock()
            .push(Cmd::Close(id, "closed locally".into()));
        self.wake();
    }

    /// `lane` has frames to write.
    pub(crate) fn flush_later(&self, lane: Arc<Lane>) {
        self.flush.lock().push(lane);
        self.wake();
    }

    /// Wake the poller if it is idle (or about to be).
    pub fn wake(&self) {
        if self.idle.swap(false, Ordering::AcqRel) {
            self.notify();
        }
    }

    fn notify(&self) {
        match &self.waker {
            Some(w) => {
                let _ = w.wake();
            }
            None => {
                if let Some(shared) = self.shared.get().and_then(Weak::upgrade) {
                    shared.sink.wake_poller(self.index);
                }
            }
        }
    }

    /// Mark the poller idle if there is really nothing to do; `false` means
    /// work arrived meanwhile (poll again). After `true`, whoever adds work
    /// wakes the poller.
    pub fn try_idle(&self) -> bool {
        self.idle.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.get() {
            // Re-arming looks at the set as it is now: an event that came
            // since the last round is reported at once.
            w.arm(self);
        }
        let pending = !self.inbox.lock().is_empty() || !self.flush.lock().is_empty();
        if pending && self.idle.swap(false, Ordering::AcqRel) {
            return false;
        }
        true
    }

    /// Stop serving: drop every connection (their sockets close when the
    /// lanes let go of them too). Further rounds do nothing.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // A thread parked in `park` holds the state: wake it first.
        self.wake();
        let mut st = self.state.lock();
        let conns: Vec<Entry> = st.conns.drain().map(|(_, e)| e).collect();
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
    }

    /// Threads mode: wait until there may be work (events or a wake-up).
    pub fn park(&self, timeout: Option<Duration>) {
        if !self.try_idle() {
            return;
        }
        let mut st = self.state.lock();
        let st = &mut *st;
        if st.poll.poll(&mut st.events, timeout).is_ok() {
            for ev in st.events.iter() {
                st.stashed
                    .push((ev.token(), readable(ev), ev.is_writable()));
            }
        }
        self.idle.store(false, Ordering::SeqCst);
    }

    /// One round of work; see the module documentation.
    pub fn poll(&self) -> Outcome {
        if self.stopped.load(Ordering::Acquire) {
            return Outcome::Idle;
        }
        // Without a transport (a lane's own tests) there is nobody to
        // deliver to: flushes only.
        let shared = self.shared.get().and_then(Weak::upgrade);
        self.idle.store(false, Ordering::SeqCst);
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let mut closes: Vec<(ConnId, String)> = Vec::new();

        // New connections and close requests.
        let inbox = std::mem::take(&mut *self.inbox.lock());
        for cmd in inbox {
            match cmd {
                Cmd::Attach(e) => {
                    let fd = e.conn.stream().as_raw_fd();
                    let id = e.conn.id;
                    let closing = e.conn.is_closing();
                    if let Err(err) = st.poll.registry().register(
                        &mut SourceFd(&fd),
                        Token(id as usize),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        closes.push((id, format!("cannot poll the socket: {err}")));
                    }
                    st.conns.insert(id, e);
                    if closing {
                        closes.push((id, "closed locally".into()));
                    }
                }
                Cmd::Close(id, reason) => closes.push((id, reason)),
            }
        }

        // Readiness: what a blocking wait stashed, and what is new.
        let mut writable: Vec<Arc<Lane>> = Vec::new();
        let mut events = std::mem::take(&mut st.stashed);
        if st.poll.poll(&mut st.events, Some(Duration::ZERO)).is_ok() {
            for ev in st.events.iter() {
                events.push((ev.token(), readable(ev), ev.is_writable()));
            }
        }
        for (token, r, w) in events {
            if token == WAKER {
                continue;
            }
            if let Some(e) = st.conns.get_mut(&(token.0 as ConnId)) {
                e.readable |= r;
                if w {
                    writable.push(e.lane.clone());
                }
            }
        }

        // Flushes: asked for by senders, more to write, or room again.
        let mut lanes = std::mem::take(&mut *self.flush.lock());
        lanes.append(&mut st.again);
        lanes.append(&mut writable);
        let flushed_any = !lanes.is_empty();
        for lane in lanes {
            if lane.flush() == Flush::More && !st.again.iter().any(|l| Arc::ptr_eq(l, &lane)) {
                st.again.push(lane);
            }
        }

        // Reads, within the round's budget.
        let mut budget = ROUND_BUDGET;
        for e in st.conns.values_mut() {
            let Some(shared) = &shared else {
                e.readable = false;
                continue;
            };
            if !e.readable || budget == 0 {
                continue;
            }
            let alloc = |len: usize| shared.sink.frame_buffer(len);
            let before = e.reader.bytes_read();
            let conn_id = e.conn.id;
            let status = {
                let mut on_frame = |f: Frame<'_>| inbound(shared, &e.peer, &e.lane, conn_id, f);
                e.reader.read(
                    e.conn.stream(),
                    READ_BUDGET.min(budget),
                    &alloc,
                    &mut on_frame,
                )
            };
            let used = e.reader.bytes_read() - before;
            budget = budget.saturating_sub((used as usize).max(1));
            match status {
                Ok(ReadStatus::Drained) => e.readable = false,
                Ok(ReadStatus::Budget) => {}
                Ok(ReadStatus::Closed) => closes.push((conn_id, "closed by peer".into())),
                Err(err) => {
                    let reason = format!("closing connection: {err}");
                    shared
                        .sink
                        .log(Level::Warning, &reason, Some(&e.peer), Some(&e.lane.key));
                    closes.push((conn_id, reason));
                }
            }
        }

        // Connections that ended: forget them and tell the driver.
        for (id, reason) in closes {
            if let Some(e) = st.conns.remove(&id) {
                let _ = st
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&e.conn.stream().as_raw_fd()));
                e.lane.detach(id);
                let _ = e.conn.stream().shutdown(std::net::Shutdown::Both);
                if let Some(shared) = &shared {
                    let _ = shared.driver.send(Msg::Closed { conn: id, reason });
                }
            }
        }

        let busy = !st.again.is_empty() || st.conns.values().any(|e| e.readable);
        // A round that moved bytes keeps the poller lingering a while: the
        // next frame is likely close behind (a reply, the next request),
        // and finding it by polling is much cheaper than being woken.
        let worked = budget < ROUND_BUDGET || flushed_any;
        let now = self.origin.elapsed().as_micros() as u64;
        if worked {
            self.last_work.store(now, Ordering::Relaxed);
        }
        let lingering = now.saturating_sub(self.last_work.load(Ordering::Relaxed))
            < self.linger.as_micros() as u64;
        if busy {
            Outcome::Busy
        } else if lingering {
            Outcome::Linger
        } else {
            Outcome::Idle
        }
    }
}

fn readable(ev: &mio::event::Event) -> bool {
    ev.is_readable() || ev.is_read_closed() || ev.is_error()
}

/// One frame from `peer` on `lane`: application data to the sink, control
/// frames (only on the control lane) to the driver.
fn inbound(
    shared: &Shared,
    peer: &str,
    lane: &Lane,
    conn: ConnId,
    frame: Frame<'_>,
) -> Result<(), String> {
    let control = lane.key.is_control();
    let (len, delivered) = match frame {
        Frame::Large(buf) if !control => {
            let len = buf.bytes().len();
            (len, shared.sink.deliver_buffer(peer, buf))
        }
        Frame::Small(FrameKind::Data, body) if !control => {
            (body.len(), shared.sink.deliver(peer, body))
        }
        Frame::Small(FrameKind::Control, body) if control => {
            let msg = decode_control(body).map_err(|e| format!("bad control frame: {e}"))?;
            let _ = shared.driver.send(Msg::Control {
                from: peer.to_string(),
                conn,
                msg,
            });
            (body.len(), true)
        }
        Frame::Small(kind, _) => return Err(format!("unexpected {kind:?} frame on this lane")),
        Frame::Large(_) => return Err("unexpected data frame on this lane".into()),
    };
    lane.stats.recv_frames.fetch_add(1, Ordering::Relaxed);
    lane.stats
        .recv_bytes
        .fetch_add(len as u64, Ordering::Relaxed);
    if !delivered {
        shared
            .routes
            .dropped
            .no_destination
            .fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Scheduler mode: one thread waits for socket events on idle pollers and
/// wakes them, as the VM's own poll thread does for `enif_select`. Each
/// poller's epoll set is in the watcher's set with `EPOLLONESHOT`, armed
/// again only when the poller goes idle: a busy poller costs the watcher
/// nothing.
pub(crate) struct Watcher {
    epfd: RawFd,
    stop_fd: RawFd,
    stop: AtomicBool,
}

/// Token of the watcher's stop event.
const STOP: u64 = u64::MAX;

impl Watcher {
    pub(crate) fn new() -> std::io::Result<Arc<Watcher>> {
        // SAFETY: plain system calls; the descriptors are owned by the watcher.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stop_fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop_fd < 0 {
            let e = std::io::Error::last_os_error();
            unsafe { libc::close(epfd) };
            return Err(e);
        }
        let w = Arc::new(Watcher {
            epfd,
            stop_fd,
            stop: AtomicBool::new(false),
        });
        w.ctl(libc::EPOLL_CTL_ADD, stop_fd, STOP, libc::EPOLLIN as u32)?;
        Ok(w)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> std::io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: valid descriptors and event.
        if unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Add a poller's epoll set, disarmed (its poller arms it when idle).
    pub(crate) fn add(&self, p: &Poller) -> std::io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_ADD,
            p.fd,
            p.index as u64,
            libc::EPOLLONESHOT as u32,
        )
    }

    /// Report the next event of `p`'s set (once).
    fn arm(&self, p: &Poller) {
        let _ = self.ctl(
            libc::EPOLL_CTL_MOD,
            p.fd,
            p.index as u64,
            (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        );
    }

    /// End the thread that runs `run`.
    pub(crate) fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd.
        unsafe { libc::write(self.stop_fd, (&one as *const u64).cast(), 8) };
    }

    pub(crate) fn run(&self, pollers: Vec<Arc<Poller>>) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        while !self.stop.load(Ordering::Acquire) {
            // SAFETY: a buffer of 64 events.
            let n = unsafe { libc::epoll_wait(self.epfd, events.as_mut_ptr(), 64, -1) };
            for ev in events.iter().take(n.max(0) as usize) {
                let token = ev.u64;
                if token != STOP {
                    if let Some(p) = pollers.get(token as usize) {
                        p.wake();
                    }
                }
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // SAFETY: our own descriptors, closed once.
        unsafe {
            libc::close(self.stop_fd);
            libc::close(self.epfd);
        }
    }
}

/// Threads mode: the loop of one poller's thread.
pub(crate) fn run_thread(poller: Arc<Poller>) {
    while !poller.stopped.load(Ordering::Acquire) {
        match poller.poll() {
            Outcome::Idle => poller.park(None),
            Outcome::Linger => std::thread::yield_now(),
            Outcome::Busy => {}
        }
    }
}

/// Which poller serves the lanes of `key` to `peer`: spread over all.
pub(crate) fn pick(pollers: &[Arc<Poller>], peer: &str, key: &LaneKey) -> Arc<Poller> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    peer.hash(&mut h);
    key.hash(&mut h);
    pollers[(h.finish() % pollers.len() as u64) as usize].clone()
}
