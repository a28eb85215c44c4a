//! Where the transport hands what it receives: the NIF implements [`Sink`]
//! to deliver messages with `enif_send` and to turn events into Erlang
//! messages; tests implement it with channels.

use std::any::Any;
use weft_core::{DownReason, LaneKey, Level, Refusal};

/// Memory that a large frame body is read into, provided by the sink so
/// that the body lands where the sink wants it (the NIF: a buffer that
/// becomes the binary that the decoded message then shares) rather than in
/// a buffer that is copied once more.
pub trait FrameBuffer: Send {
    /// The whole buffer, to be filled.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// The filled buffer.
    fn bytes(&self) -> &[u8];
    /// Make the buffer `len` bytes long, keeping its bytes; `false` when
    /// there is no memory (the buffer is then as it was).
    fn grow(&mut self, len: usize) -> bool;
    /// For the sink to get its own type back.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl FrameBuffer for Vec<u8> {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
    fn bytes(&self) -> &[u8] {
        self
    }
    fn grow(&mut self, len: usize) -> bool {
        if self
            .try_reserve_exact(len.saturating_sub(self.len()))
            .is_err()
        {
            return false;
        }
        self.resize(len, 0);
        true
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// What became of an application frame handed to [`Sink::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to its destination.
    Delivered,
    /// Well formed, but nothing has the destination it names (counted as
    /// dropped, `no_destination`).
    NoDestination,
    /// Well formed, but decoding it would create atoms this node does not
    /// have while its atom table is near its limit (a full table ends the
    /// VM). Counted as dropped (`atom_limit`); the connection stays.
    AtomLimit,
    /// Not a message at all (not a `{Dest, Msg}` term): the peer is broken
    /// or hostile. Counted as dropped (`malformed`), and the connection is
    /// closed with a logged reason, as Distributed Erlang does with invalid
    /// data on a distribution channel.
    Malformed,
}

/// Receiver of deliveries and events. Called from the transport's threads,
/// concurrently: implementations must be cheap and must not block.
pub trait Sink: Send + Sync + 'static {
    /// An application frame from `peer`; `body` is opaque to the transport.
    /// Returns what became of it. The sink may hold the message back until
    /// [`Sink::flush_deliveries`], keeping the order of what it holds.
    fn deliver(&self, peer: &str, body: &[u8]) -> Delivery;
    /// Hand over the messages [`Sink::deliver`] held back on this thread.
    /// Returns how many of them found no destination after all (the
    /// process ended in between). The pollers call it at the end of each
    /// round and before each large frame. The default holds nothing back.
    fn flush_deliveries(&self) -> u64 {
        0
    }
    /// A buffer of `len` bytes for (the start of) an application frame of
    /// at least [`crate::frame_reader::LARGE_FRAME`] bytes, or `None` when
    /// there is no memory for it (the connection is then closed, never the
    /// process). The default is a vector.
    fn frame_buffer(&self, len: usize) -> Option<Box<dyn FrameBuffer>> {
        let mut v = Vec::new();
        v.grow(len).then(|| Box::new(v) as Box<dyn FrameBuffer>)
    }
    /// A large application frame, read into a buffer from
    /// [`Sink::frame_buffer`]. The default passes its bytes to `deliver`.
    fn deliver_buffer(&self, peer: &str, body: Box<dyn FrameBuffer>) -> Delivery {
        self.deliver(peer, body.bytes())
    }
    /// Poller `index` has work and its driver is waiting (scheduler mode;
    /// the whole protocol is in [`crate::wake`]): wake it. Called from any thread, often from
    /// inside a send; must be cheap.
    fn wake_poller(&self, _index: usize) {}
    /// A send-queue bound that someone watches for room (the senders that
    /// wait, `overload => wait`; see [`crate::Transport::park`]) has
    /// some again. Called from any thread that gave bytes back (a writer,
    /// a send that dropped older messages, the driver); must be cheap.
    fn room(&self) {}
    /// `peer` became reachable.
    fn peer_up(&self, peer: &str);
    /// `peer` stopped being reachable.
    fn peer_down(&self, peer: &str, reason: &DownReason);
    /// A dial of `peer` was refused (by either side); whoever waits for it
    /// to come up may stop waiting.
    fn refused(&self, _peer: &str, _refusal: &Refusal) {}
    /// `peer`, a contact a user asked to join, has confirmed this node's
    /// current incarnation as a member (the full mesh's join check):
    /// whoever waits for that join may stop waiting.
    fn joined(&self, _peer: &str) {}
    /// This node left the cluster or was removed from it, and is a new
    /// incarnation now: whoever waits for a join may make it again.
    fn this_node_left(&self) {}
    /// A log line, with the peer and lane it concerns.
    fn log(&self, level: Level, text: &str, peer: Option<&str>, lane: Option<&LaneKey>);
    /// What happened, for a membership written outside the core (the
    /// `callback` overlay; see `weft_core::membership::callback`), in
    /// order. The default drops it.
    fn membership(&self, _notice: &weft_core::membership::Notice) {}
}
