//! An established connection: the socket after its handshake, shared by the
//! lane that writes to it and the poller that reads from it.
//!
//! The socket is non-blocking. Writes happen on whatever thread sends (a
//! scheduler, inside the send NIF) or on the poller that flushes the lane;
//! reads happen only on the poller. Closing is a request: the poller drops
//! its registration and reports the end to the driver, once.

use crate::backlog::{Backlog, Queued};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use weft_core::{ConnId, Control, Negotiated};

/// What an established connection reports to the driver (through its
/// poller): its end, and the control frames it carried. Defined here, with
/// the connection, so that the poller does not depend on the driver; the
/// driver wraps it in its own message type.
#[derive(Debug)]
pub enum ConnEvent {
    /// The connection ended, for `reason`.
    Closed { conn: ConnId, reason: String },
    /// A control frame from `from` on connection `conn`, and its place in
    /// the connection's backlog: the driver drops `ticket` as it takes it.
    Control {
        from: String,
        conn: ConnId,
        msg: Control,
        ticket: Ticket,
    },
}

/// A control event's place in its connection's [`Backlog`] and in the
/// transport's [`Queued`]: given back when dropped (by the driver as it
/// takes the event, or with the event if it never gets there). Giving back
/// the place that brings a stalled connection down to half has its poller
/// read it again.
pub struct Ticket {
    conn: Arc<Conn>,
    bytes: u64,
    heartbeat: bool,
    totals: Arc<Queued>,
}

impl Ticket {
    /// A place for an event of `bytes` (a heartbeat or not) of `conn`, and
    /// whether the connection's backlog is full now (see [`Backlog::add`]).
    pub fn new(
        conn: &Arc<Conn>,
        bytes: u64,
        heartbeat: bool,
        totals: &Arc<Queued>,
    ) -> (Self, bool) {
        let full = conn.backlog.add(bytes, totals);
        let ticket = Ticket {
            conn: conn.clone(),
            bytes,
            heartbeat,
            totals: totals.clone(),
        };
        (ticket, full)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let c = &self.conn;
        if c.backlog.taken(self.bytes, self.heartbeat, &self.totals) {
            c.poller().resume_reads();
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Ticket({} bytes of connection {})",
            self.bytes, self.conn.id
        )
    }
}

/// The poller that serves a connection, as the connection sees it:
/// implemented by [`crate::poller::Poller`]. A trait, so that the
/// connection sits below the poller in the module graph (the poller holds
/// connections; a connection only asks its poller to close it).
pub trait ConnPoller: Send + Sync {
    /// Close connection `id`: stop writing, read until the peer closes
    /// (see [`Conn::close`]).
    fn close(&self, id: ConnId);
    /// End the drain of connection `id` now.
    fn abort(&self, id: ConnId);
    /// Look again at the connections not read for now: one may be read
    /// (its backlog came down, see [`Backlog`]).
    fn resume_reads(&self);
}

/// One TCP connection of one lane.
pub struct Conn {
    pub id: ConnId,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// What the handshake agreed on (protocol version, capabilities): what
    /// may be sent to the peer on this connection, and what it may send.
    pub negotiated: Negotiated,
    stream: TcpStream,
    poller: parking_lot::RwLock<Arc<dyn ConnPoller>>,
    closing: AtomicBool,
    /// Its control events on their way to the driver.
    pub backlog: Backlog,
}

impl Conn {
    /// Wrap a connected, non-blocking socket that `poller` will serve,
    /// whose handshake agreed on `negotiated`.
    pub fn new(
        id: ConnId,
        stream: TcpStream,
        negotiated: Negotiated,
        poller: Arc<dyn ConnPoller>,
    ) -> Arc<Conn> {
        Arc::new(Conn {
            id,
            local: stream.local_addr().ok(),
            remote: stream.peer_addr().ok(),
            negotiated,
            stream,
            poller: parking_lot::RwLock::new(poller),
            closing: AtomicBool::new(false),
            backlog: Backlog::default(),
        })
    }

    /// The socket, for non-blocking reads and writes.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The poller that reads this connection now.
    pub fn poller(&self) -> Arc<dyn ConnPoller> {
        self.poller.read().clone()
    }

    /// From now on `poller` reads this connection.
    pub fn move_to(&self, poller: Arc<dyn ConnPoller>) {
        *self.poller.write() = poller;
    }

    /// Ask for the connection to close; idempotent. Frames not yet written
    /// are not sent.
    pub fn close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            // If the connection is moving, the poller it lands on sees the
            // closing flag when it takes it.
            self.poller().close(self.id);
        }
    }

    /// Whether `close` was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}
