//! A lane: one send queue and, while connected, one TCP connection.
//!
//! The queue outlives connections: a lane that is reconnecting keeps what was
//! queued and sends it once a new connection attaches, so a message sent
//! right after `join` is not lost while the lanes come up. One writer task
//! per lane owns the queue's receiving end and the socket's write half;
//! frames are written in queue order, batched into one flush while more are
//! waiting.

use crate::connection::write_frame;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, Notify};
use weft_core::{ConnId, FrameKind, LaneKey};

/// Bytes buffered before a flush when many small frames wait.
const WRITE_BUFFER: usize = 64 * 1024;

/// A frame waiting in a lane's queue.
pub struct Outgoing {
    pub kind: FrameKind,
    pub body: Vec<u8>,
}

enum Command {
    Attach(ConnId, OwnedWriteHalf, Arc<ConnHandle>),
    Detach(ConnId),
    Stop,
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

/// One lane to one peer.
pub struct Lane {
    pub key: LaneKey,
    pub stats: LaneStats,
    socket: Mutex<Socket>,
    tx: mpsc::UnboundedSender<Outgoing>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Lane {
    /// A lane with its writer task spawned on the current runtime.
    pub fn spawn(key: LaneKey) -> Arc<Lane> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ctx, crx) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane {
            key,
            stats: LaneStats::default(),
            socket: Mutex::new(Socket::default()),
            tx,
            commands: ctx,
        });
        tokio::spawn(writer(lane.clone(), rx, crx));
        lane
    }

    /// Queue a frame. Never blocks; callable from any thread.
    pub fn push(&self, kind: FrameKind, body: Vec<u8>) {
        let len = body.len() as u64;
        self.stats.queued_frames.fetch_add(1, Ordering::Relaxed);
        self.stats.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if self.tx.send(Outgoing { kind, body }).is_err() {
            self.unqueue(len);
            self.stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn unqueue(&self, len: u64) {
        self.stats.queued_frames.fetch_sub(1, Ordering::Relaxed);
        self.stats.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// Hand the lane a connection's write half; the previous one, if any, is
    /// closed.
    pub fn attach(&self, conn: ConnId, w: OwnedWriteHalf, handle: Arc<ConnHandle>) {
        {
            let mut s = self.socket.lock();
            s.conn = Some(conn);
            s.local = handle.local;
            s.remote = handle.remote;
        }
        let _ = self.commands.send(Command::Attach(conn, w, handle));
    }

    /// The connection `conn` is gone; stop writing to it.
    pub fn detach(&self, conn: ConnId) {
        {
            let mut s = self.socket.lock();
            if s.conn == Some(conn) {
                *s = Socket::default();
            }
        }
        let _ = self.commands.send(Command::Detach(conn));
    }

    /// Write what is queued (if connected), shut the connection down, and end
    /// the writer. Frames of an unconnected lane are dropped.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }

    /// The socket the lane is on now.
    pub fn socket(&self) -> Socket {
        *self.socket.lock()
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

type Writer = (ConnId, BufWriter<OwnedWriteHalf>, Arc<ConnHandle>);

async fn write_one(lane: &Lane, w: &mut Writer, f: Outgoing) -> std::io::Result<()> {
    let len = f.body.len() as u64;
    lane.unqueue(len);
    write_frame(&mut w.1, f.kind, &f.body).await?;
    lane.stats.sent_frames.fetch_add(1, Ordering::Relaxed);
    lane.stats.sent_bytes.fetch_add(len, Ordering::Relaxed);
    Ok(())
}

/// Write `first` and whatever else is already queued, then flush.
async fn write_batch(
    lane: &Lane,
    w: &mut Writer,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    first: Outgoing,
) -> std::io::Result<()> {
    write_one(lane, w, first).await?;
    let mut budget = 256;
    while budget > 0 {
        match rx.try_recv() {
            Ok(f) => write_one(lane, w, f).await?,
            Err(_) => break,
        }
        budget -= 1;
    }
    w.1.flush().await
}

async fn writer(
    lane: Arc<Lane>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut current: Option<Writer> = None;
    loop {
        let Some(w) = current.as_mut() else {
            match commands.recv().await {
                Some(Command::Attach(id, half, h)) => {
                    current = Some((id, BufWriter::with_capacity(WRITE_BUFFER, half), h))
                }
                Some(Command::Detach(_)) => {}
                Some(Command::Stop) | None => break,
            }
            continue;
        };
        tokio::select! {
            biased;
            cmd = commands.recv() => match cmd {
                Some(Command::Attach(id, half, h)) => {
                    if let Some(old) = current.replace((id, BufWriter::with_capacity(WRITE_BUFFER, half), h)) {
                        old.2.close();
                    }
                }
                Some(Command::Detach(id)) => {
                    if w.0 == id {
                        current = None;
                    }
                }
                Some(Command::Stop) | None => {
                    // Drain, then shut the write side down: the peer reads
                    // everything we queued, then end of stream.
                    while let Ok(f) = rx.try_recv() {
                        if write_one(&lane, w, f).await.is_err() {
                            break;
                        }
                    }
                    let _ = w.1.flush().await;
                    let _ = w.1.get_mut().shutdown().await;
                    w.2.close_later(Duration::from_secs(2));
                    break;
                }
            },
            f = rx.recv() => match f {
                Some(f) => {
                    if write_batch(&lane, w, &mut rx, f).await.is_err() {
                        // The reader sees the failure too and reports it.
                        w.2.close();
                        current = None;
                    }
                }
                None => break,
            },
        }
    }
    // Whatever is left was never sent.
    rx.close();
    while let Ok(f) = rx.try_recv() {
        lane.unqueue(f.body.len() as u64);
        lane.stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
    }
}
