//! An established connection: the socket after its handshake, shared by the
//! lane that writes to it and the poller that reads from it.
//!
//! The socket is non-blocking. Writes happen on whatever thread sends (a
//! scheduler, inside the send NIF) or on the poller that flushes the lane;
//! reads happen only on the poller. Closing is a request: the poller drops
//! its registration and reports the end to the driver, once.

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
    /// A control frame from `from` on connection `conn`.
    Control {
        from: String,
        conn: ConnId,
        msg: Control,
    },
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
