//! A lane: one send queue and, while connected, one TCP connection.
//!
//! The queue outlives connections: a lane that is reconnecting keeps what was
//! queued and sends it once a new connection attaches, so a message sent
//! right after `join` is not lost while the lanes come up.
//!
//! Sending takes the short way when it can: if the lane is connected,
//! nothing is queued or being written, the frame is small, and the previous
//! frame was not pushed a moment ago (a stream is better served by
//! batching), the caller (a BEAM scheduler, inside the send NIF) writes the
//! frame itself with one non-blocking `writev`. Otherwise the frame is
//! queued and the lane asks its [`Poller`] for a flush; the poller writes
//! the queue in batches ([`Lane::flush`]) and, when the socket is full,
//! again once it becomes writable. While a flush holds frames (`busy`) or
//! frames wait, new frames queue behind them, so frames leave in the order
//! they were pushed.
//!
//! Small frames need not wait for large ones that other processes queued
//! before them: a frame of at most [`DIRECT_MAX`] bytes whose sender is
//! known goes ahead of the large frames at the end of the queue that other
//! senders pushed and that have not started on the wire (each of those
//! at most [`MAX_PASSES`] times, so a large frame is not held back for
//! ever). Frames of one
//! sender keep their order, and so do frames of unknown senders (control
//! frames), which nothing passes. The promise is Erlang's: order holds per
//! sender and destination, not across senders.

use crate::body::Body;
use crate::conn::Conn;
use crate::counters::{Budget, Counters};
use crate::poller::Poller;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_core::frame::{encode_header, header, Extensions, FrameError, HeaderBytes};
use weft_core::{ConnId, FrameKind, LaneKey, Negotiated};

/// Frames taken for one `writev` by a flush.
const BATCH_FRAMES: usize = 64;

/// Bytes one flush offers to one `writev`, so that a flush (on a scheduler,
/// in the default mode) stays short even with a large frame queued.
const BATCH_BYTES: usize = 1 << 20;

/// Frames larger than this are never written by the sender itself: the
/// copy into the socket buffer would run long on the sender's scheduler.
const DIRECT_MAX: usize = 64 * 1024;

/// How long a stopped lane's connection stays open after its last frame,
/// so that the peer reads everything and closes first.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Slices in one `writev` (Linux's `IOV_MAX` is 1024).
const MAX_SLICES: usize = 1024;

/// Slices a direct write offers: a frame with more parts than this goes out
/// in several writes, the rest by the writer.
const DIRECT_SLICES: usize = 16;

/// How many small frames may go ahead of one large frame, so that a steady
/// stream of small frames cannot hold a large one back for ever.
const MAX_PASSES: u32 = 64;

/// A push this soon after the previous one is part of a stream: it queues,
/// so the writer batches many frames per system call, instead of paying one
/// `writev` per frame on the sender's thread. Sparse sends (request and
/// reply, heartbeats) stay on the direct path, which saves a thread wake-up.
const STREAM_GAP: Duration = Duration::from_micros(40);

/// Who pushed a frame, as far as ordering goes: frames with the same
/// sender leave in the order they were pushed. Two senders that share a
/// value only lose the chance to pass each other.
pub type Sender = u64;

/// A frame waiting in a lane's queue; `sent` bytes of it (header first) are
/// already on the wire.
struct Outgoing {
    header: HeaderBytes,
    body: Body,
    sent: usize,
    sender: Option<Sender>,
    /// How many frames went ahead of this one.
    passed: u32,
}

impl Outgoing {
    fn new(kind: FrameKind, body: Body, sender: Option<Sender>) -> Self {
        Self::with_header(HeaderBytes::Plain(header(kind, body.len())), body, sender)
    }

    fn with_header(header: HeaderBytes, body: Body, sender: Option<Sender>) -> Self {
        Outgoing {
            header,
            body,
            sent: 0,
            sender,
            passed: 0,
        }
    }

    /// May a small frame from `sender` go ahead of this one?
    fn passable_by(&self, sender: Sender) -> bool {
        self.sent == 0
            && self.body.len() > DIRECT_MAX
            && self.passed < MAX_PASSES
            && self.sender.is_some_and(|s| s != sender)
    }

    fn len(&self) -> usize {
        self.header.len() + self.body.len()
    }

    /// Fill `out` with the unsent part; returns how many slices it used.
    fn fill<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        self.fill_at_most(out, usize::MAX)
    }

    /// As `fill`, with at most `max` bytes in the slices.
    fn fill_at_most<'a>(&'a self, out: &mut [IoSlice<'a>], max: usize) -> usize {
        if out.is_empty() || max == 0 {
            return 0;
        }
        let header_len = self.header.len();
        if self.sent < header_len {
            let h = &self.header[self.sent..];
            let take = h.len().min(max);
            out[0] = IoSlice::new(&h[..take]);
            1 + self.body.fill_max(0, &mut out[1..], max - take)
        } else {
            self.body.fill_max(self.sent - header_len, out, max)
        }
    }
}

/// Counters of a lane (frames and bytes of frame bodies).
#[derive(Debug, Default)]
pub struct LaneStats {
    pub queued_frames: AtomicU64,
    pub queued_bytes: AtomicU64,
    pub sent_frames: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub recv_frames: AtomicU64,
    pub recv_bytes: AtomicU64,
    pub dropped_frames: AtomicU64,
}

/// Which socket a lane is on, for `info`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Socket {
    pub conn: Option<ConnId>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// What the connection's handshake agreed on.
    pub negotiated: Option<Negotiated>,
}

#[derive(Default)]
struct Out {
    queue: VecDeque<Outgoing>,
    socket: Option<Arc<Conn>>,
    /// A flush holds frames taken off the queue and is writing them.
    busy: bool,
    stopped: bool,
    /// A flush was asked of the poller and has not started yet.
    flush_asked: bool,
    /// When the previous frame was pushed.
    last_push: Option<Instant>,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Nothing left to write for now.
    Done,
    /// The socket is full: flush again once it is writable.
    Blocked,
    /// A batch went out and more is queued: flush again soon.
    More,
}

/// One lane to one peer.
pub struct Lane {
    pub key: LaneKey,
    pub stats: LaneStats,
    out: Mutex<Out>,
    poller: parking_lot::RwLock<Arc<Poller>>,
    runtime: tokio::runtime::Handle,
    budget: Arc<Budget>,
    counters: Arc<Counters>,
}

impl Lane {
    /// A lane whose connections `poller` serves; `runtime` runs its timers.
    /// Its frames are reserved in `budget` by whoever pushes them, and
    /// released here when written or dropped (counted in `counters`).
    pub fn new(
        key: LaneKey,
        poller: Arc<Poller>,
        runtime: tokio::runtime::Handle,
        budget: Arc<Budget>,
        counters: Arc<Counters>,
    ) -> Arc<Lane> {
        Arc::new(Lane {
            key,
            stats: LaneStats::default(),
            out: Mutex::new(Out::default()),
            poller: parking_lot::RwLock::new(poller),
            runtime,
            budget,
            counters,
        })
    }

    /// The poller that serves this lane's connections now.
    pub fn poller(&self) -> Arc<Poller> {
        self.poller.read().clone()
    }

    /// From now on `poller` serves this lane (its connection moves with it).
    pub fn move_to(&self, poller: &Arc<Poller>) {
        *self.poller.write() = poller.clone();
    }

    /// Ask the current poller for a flush if frames wait (after a move: a
    /// flush asked of the previous poller may have been for nothing).
    pub fn reflush(self: &Arc<Self>) {
        let mut out = self.out.lock();
        if !out.queue.is_empty() || out.stopped {
            out.flush_asked = false;
            self.ask_flush(out);
        }
    }

    /// Send a frame of an unknown sender: written at once when the lane is
    /// idle, else queued behind every frame already queued. Never blocks;
    /// callable from any thread.
    pub fn push(self: &Arc<Self>, kind: FrameKind, body: Body) {
        self.push_from(kind, body, None)
    }

    /// Send a frame on behalf of `sender`; a small one may go ahead of large
    /// frames of other senders that wait unstarted (see the module doc).
    /// Its bytes count against the lane's budget whatever the bound (the
    /// send path checks bounds first, see [`Lane::push_reserved`]).
    pub fn push_from(self: &Arc<Self>, kind: FrameKind, body: Body, sender: Option<Sender>) {
        self.budget.force(body.len() as u64);
        self.push_reserved(kind, body, sender)
    }

    /// As [`Lane::push_from`], for a frame whose header carries `ext`.
    /// Only for extensions the peer agreed to: the caller checks
    /// [`crate::Transport::negotiated`] (a peer refuses a frame with
    /// extensions it did not agree to, and closes the connection).
    pub fn push_extended(
        self: &Arc<Self>,
        kind: FrameKind,
        ext: &Extensions,
        body: Body,
        sender: Option<Sender>,
    ) -> Result<(), FrameError> {
        let header = encode_header(kind, body.len(), ext)?;
        self.budget.force(body.len() as u64);
        self.push_frame(Outgoing::with_header(header, body, sender));
        Ok(())
    }

    /// As [`Lane::push_from`], for a frame whose bytes the caller already
    /// reserved in the lane's budget.
    pub(crate) fn push_reserved(
        self: &Arc<Self>,
        kind: FrameKind,
        body: Body,
        sender: Option<Sender>,
    ) {
        self.push_frame(Outgoing::new(kind, body, sender))
    }

    fn push_frame(self: &Arc<Self>, mut f: Outgoing) {
        let mut out = self.out.lock();
        if out.stopped {
            drop(out);
            self.dropped(f.body.len(), &self.counters.dropped.node_down);
            return;
        }
        let now = Instant::now();
        let streaming = out
            .last_push
            .is_some_and(|t| now.duration_since(t) < STREAM_GAP);
        out.last_push = Some(now);
        if !out.busy && out.queue.is_empty() && !streaming && f.body.len() <= DIRECT_MAX {
            if let Some(conn) = out.socket.clone().filter(|c| !c.is_closing()) {
                // Write it ourselves, without holding the lane: `busy` keeps
                // other writers out meanwhile, and their frames queue.
                out.busy = true;
                drop(out);
                let mut slices = [IoSlice::new(&[]); DIRECT_SLICES];
                let n = f.fill(&mut slices);
                let written = conn.stream().write_vectored(&slices[..n]);
                out = self.out.lock();
                out.busy = false;
                // A stream counts from the end of this write: a write that
                // took long (the thread was preempted) is not followed by
                // another direct one at once.
                out.last_push = Some(Instant::now());
                match written {
                    Ok(n) if n == f.len() => {
                        let more = !out.queue.is_empty() || out.stopped;
                        self.sent(f.body.len());
                        if more {
                            self.ask_flush(out);
                        }
                        return;
                    }
                    Ok(n) => {
                        // Partly written: it goes first, before anything
                        // queued meanwhile.
                        f.sent = n;
                        self.queued(f.body.len() as i64);
                        out.queue.push_front(f);
                        self.ask_flush(out);
                        return;
                    }
                    // WouldBlock: the flush waits for room. Another error:
                    // the poller sees it too and reports the connection lost.
                    Err(_) => {}
                }
            }
        }
        self.queued(f.body.len() as i64);
        let at = match f.sender {
            Some(s) if f.body.len() <= DIRECT_MAX => {
                let mut at = out.queue.len();
                while at > 0 && out.queue[at - 1].passable_by(s) {
                    at -= 1;
                    out.queue[at].passed += 1;
                }
                at
            }
            _ => out.queue.len(),
        };
        out.queue.insert(at, f);
        self.ask_flush(out);
    }

    /// Drop unstarted frames from the front of the queue until `need` more
    /// bytes fit in `budget` (`overload => drop_oldest`). Returns whether
    /// anything was dropped.
    pub fn drop_oldest(&self, need: u64, budget: &Budget) -> bool {
        let mut out = self.out.lock();
        let mut any = false;
        let mut i = 0;
        while i < out.queue.len() && !budget.fits(need) {
            if out.queue[i].sent > 0 {
                i += 1;
                continue;
            }
            let f = out.queue.remove(i).expect("index in range");
            self.queued(-(f.body.len() as i64));
            self.dropped(f.body.len(), &self.counters.dropped.overflow);
            any = true;
        }
        any
    }

    /// Ask the poller for a flush, unless one is already asked for or a
    /// flush is running (it looks at the queue again when it ends).
    fn ask_flush(self: &Arc<Self>, mut out: parking_lot::MutexGuard<'_, Out>) {
        // Unconnected: `attach` asks when a connection comes.
        if out.flush_asked || out.busy || (out.socket.is_none() && !out.stopped) {
            return;
        }
        out.flush_asked = true;
        drop(out);
        self.poller().flush_later(self.clone());
    }

    fn queued(&self, bytes: i64) {
        if bytes >= 0 {
            self.stats.queued_frames.fetch_add(1, Ordering::Relaxed);
            self.stats
                .queued_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
        } else {
            self.stats.queued_frames.fetch_sub(1, Ordering::Relaxed);
            self.stats
                .queued_bytes
                .fetch_sub((-bytes) as u64, Ordering::Relaxed);
        }
    }

    fn sent(&self, bytes: usize) {
        self.budget.release(bytes as u64);
        self.stats.sent_frames.fetch_add(1, Ordering::Relaxed);
        self.stats
            .sent_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A frame of `bytes` (not queued any more) is dropped for `reason`.
    fn dropped(&self, bytes: usize, reason: &AtomicU64) {
        self.budget.release(bytes as u64);
        self.stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
        reason.fetch_add(1, Ordering::Relaxed);
    }

    /// Hand the lane a connection; the previous one, if any, is closed.
    pub fn attach(self: &Arc<Self>, conn: Arc<Conn>) {
        let mut out = self.out.lock();
        if let Some(old) = out.socket.replace(conn) {
            old.close();
        }
        if !out.queue.is_empty() || out.stopped {
            self.ask_flush(out);
        }
    }

    /// The connection `conn` is gone; stop writing to it.
    pub fn detach(&self, conn: ConnId) {
        let mut out = self.out.lock();
        if out.socket.as_ref().is_some_and(|s| s.id == conn) {
            out.socket = None;
        }
    }

    /// Write what is queued (if connected), then close the connection and
    /// take no more frames. Frames of an unconnected lane are dropped.
    pub fn stop(self: &Arc<Self>) {
        let mut out = self.out.lock();
        out.stopped = true;
        self.ask_flush(out);
    }

    /// The socket the lane is on now.
    pub fn socket(&self) -> Socket {
        match &self.out.lock().socket {
            Some(c) => Socket {
                conn: Some(c.id),
                local: c.local,
                remote: c.remote,
                negotiated: Some(c.negotiated),
            },
            None => Socket::default(),
        }
    }

    /// Write one batch of what is queued; called by the lane's poller.
    /// Returns what it achieved and how many bytes it wrote.
    pub fn flush(self: &Arc<Self>) -> (Flush, usize) {
        let (conn, mut batch) = {
            let mut out = self.out.lock();
            out.flush_asked = false;
            if out.busy {
                return (Flush::Done, 0);
            }
            let Some(conn) = out.socket.clone().filter(|c| !c.is_closing()) else {
                if out.stopped {
                    self.drop_queue(&mut out);
                }
                // Not connected: the queue waits for `attach`.
                return (Flush::Done, 0);
            };
            if out.queue.is_empty() {
                if out.stopped {
                    // Everything went out: end of stream, after a grace
                    // period for the peer to read it and close first.
                    out.socket = None;
                    conn.close_later(&self.runtime, CLOSE_GRACE);
                }
                return (Flush::Done, 0);
            }
            // Take what one write offers, no more: frames left in the queue
            // can still be passed by small ones.
            let mut n = 0;
            let mut bytes = 0;
            while n < out.queue.len() && n < BATCH_FRAMES && bytes < BATCH_BYTES {
                bytes += out.queue[n].len() - out.queue[n].sent;
                n += 1;
            }
            let batch: VecDeque<Outgoing> = out.queue.drain(..n).collect();
            out.busy = true;
            (conn, batch)
        };
        let result = write_batch(self, conn.stream(), &mut batch);
        let mut out = self.out.lock();
        out.busy = false;
        match result {
            Ok((done, written)) => {
                // What did not go out goes back to the front, in order.
                for f in batch.into_iter().rev() {
                    out.queue.push_front(f);
                }
                let state = if !done {
                    Flush::Blocked
                } else if !out.queue.is_empty() || out.stopped {
                    Flush::More
                } else {
                    Flush::Done
                };
                (state, written)
            }
            Err(_) => {
                // The poller sees the failure too and reports it; what was
                // in flight is lost with the connection.
                for f in &batch {
                    self.queued(-(f.body.len() as i64));
                    self.dropped(f.body.len(), &self.counters.dropped.connection_lost);
                }
                if out.socket.as_ref().is_some_and(|s| s.id == conn.id) {
                    out.socket = None;
                }
                drop(out);
                conn.close();
                (Flush::Done, 0)
            }
        }
    }

    fn drop_queue(&self, out: &mut Out) {
        for f in out.queue.drain(..) {
            self.queued(-(f.body.len() as i64));
            self.dropped(f.body.len(), &self.counters.dropped.node_down);
        }
    }
}

/// Write `batch` with one `writev` of at most [`BATCH_BYTES`] bytes,
/// counting each frame that completes. `Ok((true, n))`: the socket took all
/// it was offered, `n` bytes (what is left can go at once); `Ok((false, 0))`:
/// it is full.
fn write_batch(
    lane: &Lane,
    mut stream: &std::net::TcpStream,
    batch: &mut VecDeque<Outgoing>,
) -> io::Result<(bool, usize)> {
    let wanted: usize = batch.iter().map(|f| 1 + f.body.parts().count()).sum();
    let mut slices = vec![IoSlice::new(&[]); wanted.min(MAX_SLICES)];
    let mut n = 0;
    let mut offered = 0;
    for f in batch.iter() {
        if n == slices.len() || offered == BATCH_BYTES {
            break;
        }
        let before = n;
        n += f.fill_at_most(&mut slices[n..], BATCH_BYTES - offered);
        offered += slices[before..n].iter().map(|s| s.len()).sum::<usize>();
    }
    let written = loop {
        match stream.write_vectored(&slices[..n]) {
            Ok(w) => break w,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, 0)),
            Err(e) => return Err(e),
        }
    };
    let mut left = written;
    while left > 0 {
        let f = batch.front_mut().expect("bytes written belong to a frame");
        let unsent = f.len() - f.sent;
        if left >= unsent {
            left -= unsent;
            let f = batch.pop_front().expect("front exists");
            lane.queued(-(f.body.len() as i64));
            lane.sent(f.body.len());
        } else {
            f.sent += left;
            left = 0;
        }
    }
    Ok((written == offered, written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::run_thread;
    use std::io::Read;

    /// A lane with no connection yet, its poller, and the runtime of its
    /// timers (keep it alive as long as the lane).
    fn unconnected_lane() -> (tokio::runtime::Runtime, Arc<Poller>, Arc<Lane>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let poller = Poller::new(0, true, Duration::from_micros(50)).unwrap();
        let total = Arc::new(crate::counters::Total {
            queued: AtomicU64::new(0),
            limit: u64::MAX,
        });
        let lane = Lane::new(
            LaneKey::control(),
            poller.clone(),
            rt.handle().clone(),
            Budget::new(u64::MAX, total),
            Arc::new(Counters::default()),
        );
        (rt, poller, lane)
    }

    fn negotiated() -> weft_core::Negotiated {
        weft_core::Negotiated {
            version: weft_core::frame::PROTOCOL_VERSION,
            caps: weft_core::Capabilities::SUPPORTED,
        }
    }

    /// Connect `lane` (served by `poller`, driven on a thread) to a socket;
    /// returns the other end and the driving thread.
    fn connect(
        lane: &Arc<Lane>,
        poller: &Arc<Poller>,
    ) -> (std::net::TcpStream, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        let conn = Conn::new(1, client, negotiated(), poller.clone());
        lane.attach(conn.clone());
        poller.attach(conn, "peer".into(), lane.clone(), 1 << 20);
        let p = poller.clone();
        (server, std::thread::spawn(move || run_thread(p)))
    }

    /// The body of the next frame on `server`.
    fn read_frame(server: &mut std::net::TcpStream) -> Vec<u8> {
        read_frame_ext(server).1
    }

    /// The extensions and the body of the next frame on `server`.
    fn read_frame_ext(server: &mut std::net::TcpStream) -> (Extensions, Vec<u8>) {
        let mut h = vec![0u8; weft_core::frame::HEADER_LEN];
        server.read_exact(&mut h).unwrap();
        let h = loop {
            match weft_core::frame::decode_header(&h, 1 << 20) {
                Ok(h) => break h,
                Err(FrameError::Truncated { need }) => {
                    let at = h.len();
                    h.resize(need, 0);
                    server.read_exact(&mut h[at..]).unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        };
        let mut body = vec![0u8; h.body_len];
        server.read_exact(&mut body).unwrap();
        (h.ext, body)
    }

    /// Frames pushed from several threads at once, some large enough to fill
    /// the socket buffer (so direct writes, partial writes, flushes by the
    /// poller and small frames passing large ones all take turns), arrive
    /// complete and in each thread's order.
    #[test]
    fn concurrent_pushes_keep_per_sender_order() {
        let (_rt, poller, lane) = unconnected_lane();
        let (mut server, driving) = connect(&lane, &poller);
        const THREADS: u32 = 4;
        const FRAMES: u32 = 2000;
        let senders: Vec<_> = (0..THREADS)
            .map(|t| {
                let lane = lane.clone();
                std::thread::spawn(move || {
                    for seq in 0..FRAMES {
                        let size = if seq % 97 == 0 { 300_000 } else { 16 };
                        let mut body = vec![0u8; size];
                        body[..4].copy_from_slice(&t.to_be_bytes());
                        body[4..8].copy_from_slice(&seq.to_be_bytes());
                        // Half the threads name themselves: their small
                        // frames may pass large ones of other threads.
                        let sender = (t % 2 == 0).then_some(u64::from(t));
                        lane.push_from(FrameKind::Data, body.into(), sender);
                    }
                })
            })
            .collect();
        let mut next = [0u32; THREADS as usize];
        for _ in 0..THREADS * FRAMES {
            let body = read_frame(&mut server);
            let t = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
            let seq = u32::from_be_bytes(body[4..8].try_into().unwrap());
            assert_eq!(seq, next[t], "thread {t} out of order");
            next[t] += 1;
        }
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(next, [FRAMES; THREADS as usize]);
        // The writer counts a frame after its write returns, so the reader
        // may see the last frames first: wait for the counters to settle.
        let deadline = Instant::now() + Duration::from_secs(10);
        while lane.stats.sent_frames.load(Ordering::Relaxed) < u64::from(THREADS * FRAMES)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            lane.stats.sent_frames.load(Ordering::Relaxed),
            u64::from(THREADS * FRAMES)
        );
        assert_eq!(lane.stats.queued_frames.load(Ordering::Relaxed), 0);
        assert_eq!(lane.budget.queued(), 0);
        poller.stop();
        driving.join().unwrap();
    }

    /// Queued while unconnected, then written: a small frame goes ahead of
    /// unstarted large frames of other senders, never of its own sender's
    /// or of an unknown sender's frames.
    #[test]
    fn small_frames_pass_large_ones_of_other_senders_only() {
        let (_rt, poller, lane) = unconnected_lane();
        let large = |tag: u8| Body::from(vec![tag; DIRECT_MAX + 1]);
        let small = |tag: u8| Body::from(vec![tag; 8]);
        lane.push_from(FrameKind::Data, large(b'a'), Some(1));
        lane.push_from(FrameKind::Data, large(b'b'), Some(2));
        lane.push_from(FrameKind::Data, small(b'c'), Some(3)); // passes both
        lane.push_from(FrameKind::Data, small(b'A'), Some(1)); // passes b only
        lane.push(FrameKind::Data, small(b'n')); // unknown sender: last
        lane.push_from(FrameKind::Data, small(b'C'), Some(3)); // nothing to pass
        lane.push_from(FrameKind::Data, large(b'd'), Some(4));
        lane.push_from(FrameKind::Data, large(b'e'), Some(5)); // large: never passes
        lane.push_from(FrameKind::Data, small(b'D'), Some(4)); // passes e, not d

        let (mut server, driving) = connect(&lane, &poller);
        let mut order = Vec::new();
        for _ in 0..9 {
            let body = read_frame(&mut server);
            order.push(body[0]);
        }
        assert_eq!(order, b"caAbnCdDe".to_vec());
        poller.stop();
        driving.join().unwrap();
    }

    /// A steady stream of small frames holds a large frame back by at most
    /// `MAX_PASSES` frames.
    #[test]
    fn a_large_frame_is_passed_a_bounded_number_of_times() {
        let (_rt, poller, lane) = unconnected_lane();
        lane.push_from(FrameKind::Data, vec![0xff; DIRECT_MAX + 1].into(), Some(1));
        let smalls = MAX_PASSES as usize + 10;
        for i in 0..smalls {
            lane.push_from(FrameKind::Data, vec![i as u8; 8].into(), Some(2));
        }
        let (mut server, driving) = connect(&lane, &poller);
        let order: Vec<u8> = (0..=smalls).map(|_| read_frame(&mut server)[0]).collect();
        let large_at = order.iter().position(|&b| b == 0xff).unwrap();
        assert_eq!(large_at, MAX_PASSES as usize);
        let smalls_seen: Vec<u8> = order.iter().copied().filter(|&b| b != 0xff).collect();
        assert_eq!(
            smalls_seen,
            (0..smalls).map(|i| i as u8).collect::<Vec<_>>()
        );
        poller.stop();
        driving.join().unwrap();
    }

    /// Frames whose headers carry extensions go out whole, written directly
    /// or by the poller, small or large, in order with plain frames.
    #[test]
    fn frames_with_extensions_are_written_with_their_header() {
        let (_rt, poller, lane) = unconnected_lane();
        let ext = |seq| Extensions {
            seq: Some(seq),
            origin: Some("a@h".into()),
            ..Default::default()
        };
        // queued while unconnected
        lane.push_extended(FrameKind::Data, &ext(1), vec![1; 10].into(), Some(1))
            .unwrap();
        lane.push_extended(
            FrameKind::Data,
            &ext(2),
            vec![2; 3 * DIRECT_MAX].into(),
            None,
        )
        .unwrap();
        let (mut server, driving) = connect(&lane, &poller);
        assert_eq!(read_frame_ext(&mut server), (ext(1), vec![1; 10]));
        assert_eq!(
            read_frame_ext(&mut server),
            (ext(2), vec![2; 3 * DIRECT_MAX])
        );
        // connected and idle: written by the sender itself
        std::thread::sleep(Duration::from_millis(5));
        lane.push_extended(FrameKind::Data, &ext(3), vec![3; 5].into(), Some(1))
            .unwrap();
        lane.push(FrameKind::Data, vec![4; 5].into());
        assert_eq!(read_frame_ext(&mut server), (ext(3), vec![3; 5]));
        assert_eq!(
            read_frame_ext(&mut server),
            (Extensions::default(), vec![4; 5])
        );
        // what the receiver would refuse is not sent
        let bad = Extensions {
            destination: Some("no name".into()),
            ..Default::default()
        };
        assert!(lane
            .push_extended(FrameKind::Data, &bad, vec![5].into(), None)
            .is_err());
        poller.stop();
        driving.join().unwrap();
    }
}
