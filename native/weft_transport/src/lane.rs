//! A lane: one send queue and, while connected, one TCP connection.
//!
//! The queue outlives connections: a lane that is reconnecting keeps what was
//! queued and sends it once a new connection attaches, so a message sent
//! right after `join` is not lost while the lanes come up.
//!
//! Sending takes the short way when it can: if the lane is connected,
//! nothing is queued or being written, and the previous frame was not pushed
//! a moment ago (a stream is better served by the writer's batching), the
//! caller (a BEAM scheduler, inside the send NIF) writes the frame itself
//! with one non-blocking `writev`. No thread hand-off, no wake-up. Whatever does not fit in the socket buffer
//! is queued, and the lane's writer task (on the tokio runtime) finishes
//! it, waiting for the socket to become writable. While the writer owns
//! the stream (`busy`) or frames wait, new frames queue behind them, so
//! frames leave in the order they were pushed.

use crate::body::Body;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use weft_core::frame::{header, HEADER_LEN};
use weft_core::{ConnId, FrameKind, LaneKey};

/// Frames written with one `writev` by the writer task.
const BATCH_FRAMES: usize = 64;

/// Slices in one `writev` (Linux's `IOV_MAX` is 1024).
const MAX_SLICES: usize = 1024;

/// Slices a direct write offers: a frame with more parts than this goes out
/// in several writes, the rest by the writer.
const DIRECT_SLICES: usize = 16;

/// A push this soon after the previous one is part of a stream: it queues,
/// so the writer batches many frames per system call, instead of paying one
/// `writev` per frame on the sender's thread. Sparse sends (request and
/// reply, heartbeats) stay on the direct path, which saves a thread wake-up.
const STREAM_GAP: Duration = Duration::from_micros(40);

/// A frame waiting in a lane's queue; `sent` bytes of it (header first) are
/// already on the wire.
struct Outgoing {
    header: [u8; HEADER_LEN],
    body: Body,
    sent: usize,
}

impl Outgoing {
    fn new(kind: FrameKind, body: Body) -> Self {
        Outgoing {
            header: header(kind, body.len()),
            body,
            sent: 0,
        }
    }

    fn len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Fill `out` with the unsent part; returns how many slices it used.
    fn fill<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        if out.is_empty() {
            return 0;
        }
        if self.sent < HEADER_LEN {
            out[0] = IoSlice::new(&self.header[self.sent..]);
            1 + self.body.fill(0, &mut out[1..])
        } else {
            self.body.fill(self.sent - HEADER_LEN, out)
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
}

struct Attached {
    conn: ConnId,
    half: Arc<OwnedWriteHalf>,
    handle: Arc<ConnHandle>,
}

#[derive(Default)]
struct Out {
    queue: VecDeque<Outgoing>,
    socket: Option<Attached>,
    /// The writer task holds frames taken off the queue and is writing them.
    busy: bool,
    stopped: bool,
    /// When the previous frame was pushed.
    last_push: Option<Instant>,
}

/// One lane to one peer.
pub struct Lane {
    pub key: LaneKey,
    pub stats: LaneStats,
    out: Mutex<Out>,
    wake: Notify,
}

impl Lane {
    /// A lane with its writer task spawned on the current runtime.
    pub fn spawn(key: LaneKey) -> Arc<Lane> {
        let lane = Arc::new(Lane {
            key,
            stats: LaneStats::default(),
            out: Mutex::new(Out::default()),
            wake: Notify::new(),
        });
        tokio::spawn(writer(lane.clone()));
        lane
    }

    /// Send a frame: written at once when the lane is idle, else queued.
    /// Never blocks; callable from any thread.
    pub fn push(&self, kind: FrameKind, body: Body) {
        let mut f = Outgoing::new(kind, body);
        let mut out = self.out.lock();
        if out.stopped {
            drop(out);
            self.stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = Instant::now();
        let streaming = out
            .last_push
            .is_some_and(|t| now.duration_since(t) < STREAM_GAP);
        out.last_push = Some(now);
        if !out.busy && out.queue.is_empty() && !streaming {
            if let Some(s) = &out.socket {
                let mut slices = [IoSlice::new(&[]); DIRECT_SLICES];
                let n = f.fill(&mut slices);
                match s.half.try_write_vectored(&slices[..n]) {
                    Ok(n) if n == f.len() => {
                        drop(out);
                        self.sent(f.body.len());
                        return;
                    }
                    Ok(n) => f.sent = n,
                    // WouldBlock: the writer waits for room. Another error:
                    // the reader sees it too and reports the connection lost.
                    Err(_) => {}
                }
            }
        }
        self.queued(f.body.len() as i64);
        out.queue.push_back(f);
        let idle = !out.busy;
        drop(out);
        if idle {
            self.wake.notify_one();
        }
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
        self.stats.sent_frames.fetch_add(1, Ordering::Relaxed);
        self.stats
            .sent_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Hand the lane a connection's write half; the previous one, if any, is
    /// closed.
    pub fn attach(&self, conn: ConnId, w: OwnedWriteHalf, handle: Arc<ConnHandle>) {
        let old = self.out.lock().socket.replace(Attached {
            conn,
            half: Arc::new(w),
            handle,
        });
        if let Some(old) = old {
            old.handle.close();
        }
        self.wake.notify_one();
    }

    /// The connection `conn` is gone; stop writing to it.
    pub fn detach(&self, conn: ConnId) {
        let mut out = self.out.lock();
        if out.socket.as_ref().is_some_and(|s| s.conn == conn) {
            out.socket = None;
        }
    }

    /// Write what is queued (if connected), shut the connection down, and end
    /// the writer. Frames of an unconnected lane are dropped.
    pub fn stop(&self) {
        self.out.lock().stopped = true;
        self.wake.notify_one();
    }

    /// The socket the lane is on now.
    pub fn socket(&self) -> Socket {
        match &self.out.lock().socket {
            Some(s) => Socket {
                conn: Some(s.conn),
                local: s.handle.local,
                remote: s.handle.remote,
            },
            None => Socket::default(),
        }
    }
}

/// Lets a lane (or the driver) close a connection whose reader runs
/// elsewhere.
pub struct ConnHandle {
    pub id: ConnId,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    closed: Notify,
}

impl ConnHandle {
    pub fn new(id: ConnId, local: Option<SocketAddr>, remote: Option<SocketAddr>) -> Arc<Self> {
        Arc::new(ConnHandle {
            id,
            local,
            remote,
            closed: Notify::new(),
        })
    }

    /// Ask the reader to stop; the socket closes when both halves are gone.
    pub fn close(&self) {
        self.closed.notify_one();
    }

    /// Close after `after`, giving the peer time to close first.
    pub fn close_later(self: &Arc<Self>, after: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            me.close();
        });
    }

    /// Resolves once `close` was called.
    pub async fn closed(&self) {
        self.closed.notified().await
    }
}

/// Write `batch` (in order) to `half`, waiting for room as needed. Counts
/// each frame as it completes; on error returns how many completed.
async fn write_batch(
    lane: &Lane,
    half: &OwnedWriteHalf,
    batch: &mut VecDeque<Outgoing>,
) -> io::Result<()> {
    while !batch.is_empty() {
        let written = {
            let wanted: usize = batch.iter().map(|f| 1 + f.body.parts().count()).sum();
            let mut slices = vec![IoSlice::new(&[]); wanted.min(MAX_SLICES)];
            let mut n = 0;
            for f in batch.iter() {
                if n == slices.len() {
                    break;
                }
                n += f.fill(&mut slices[n..]);
            }
            half.writable().await?;
            match half.try_write_vectored(&slices[..n]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
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
                lane.sent(f.body.len());
            } else {
                f.sent += left;
                left = 0;
            }
        }
    }
    Ok(())
}

/// The lane's writer: finishes what direct sends could not, in order.
async fn writer(lane: Arc<Lane>) {
    loop {
        // Take the next batch, or learn there is nothing to do.
        let job = {
            let mut out = lane.out.lock();
            match (&out.socket, out.queue.is_empty(), out.stopped) {
                (_, true, true) | (None, _, true) => None,
                (Some(s), false, _) => {
                    let half = s.half.clone();
                    let handle = s.handle.clone();
                    let n = out.queue.len().min(BATCH_FRAMES);
                    let batch: VecDeque<Outgoing> = out.queue.drain(..n).collect();
                    out.busy = true;
                    Some(Some((half, handle, batch)))
                }
                _ => Some(None),
            }
        };
        match job {
            // Stopped with nothing left to write (or no socket to write to).
            None => break,
            // Nothing to write now: sleep until pushed, attached or stopped.
            Some(None) => lane.wake.notified().await,
            Some(Some((half, handle, mut batch))) => {
                for f in &batch {
                    lane.queued(-(f.body.len() as i64));
                }
                let result = write_batch(&lane, &half, &mut batch).await;
                let mut out = lane.out.lock();
                out.busy = false;
                if result.is_err() {
                    // The reader sees the failure too and reports it; what
                    // was in flight is lost with the connection.
                    handle.close();
                    if out
                        .socket
                        .as_ref()
                        .is_some_and(|s| Arc::ptr_eq(&s.half, &half))
                    {
                        out.socket = None;
                    }
                    lane.stats
                        .dropped_frames
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }
    // Stopped: let the peer read everything, then end of stream. The write
    // half shuts down when its last reference goes; the reader gets a grace
    // period to see the peer close first.
    let mut out = lane.out.lock();
    if let Some(s) = out.socket.take() {
        s.handle.close_later(Duration::from_secs(2));
    }
    for f in out.queue.drain(..) {
        lane.queued(-(f.body.len() as i64));
        lane.stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::read_frame;

    /// Frames pushed from several threads at once, some large enough to fill
    /// the socket buffer (so direct writes, partial writes and the writer
    /// task all take turns), arrive complete and in each thread's order.
    #[test]
    fn concurrent_pushes_keep_per_sender_order() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (lane, mut reader) = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let lane = Lane::spawn(LaneKey::control());
            let (_r, w) = client.into_split();
            std::mem::forget(_r);
            lane.attach(1, w, ConnHandle::new(1, None, None));
            (lane, server)
        });
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
                        lane.push(FrameKind::Data, body.into());
                    }
                })
            })
            .collect();
        let next = rt.block_on(async {
            let mut next = [0u32; THREADS as usize];
            for _ in 0..THREADS * FRAMES {
                let (_, body) = read_frame(&mut reader, 1 << 20).await.unwrap();
                let t = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
                let seq = u32::from_be_bytes(body[4..8].try_into().unwrap());
                assert_eq!(seq, next[t], "thread {t} out of order");
                next[t] += 1;
            }
            next
        });
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(next, [FRAMES; THREADS as usize]);
        assert_eq!(
            lane.stats.sent_frames.load(Ordering::Relaxed),
            u64::from(THREADS * FRAMES)
        );
        assert_eq!(lane.stats.queued_frames.load(Ordering::Relaxed), 0);
    }
}
