//! Where the transport hands what it receives: the NIF implements [`Sink`]
//! to deliver messages with `enif_send` and to turn events into Erlang
//! messages; tests implement it with channels.

use weft_core::{LaneKey, Level};

/// Receiver of deliveries and events. Called from the transport's threads,
/// concurrently: implementations must be cheap and must not block.
pub trait Sink: Send + Sync + 'static {
    /// An application frame from `peer`; `body` is opaque to the transport.
    /// Returns `false` when it had no destination (counted as dropped).
    fn deliver(&self, peer: &str, body: &[u8]) -> bool;
    /// `peer` became reachable.
    fn peer_up(&self, peer: &str);
    /// `peer` stopped being reachable.
    fn peer_down(&self, peer: &str, reason: &str);
    /// A log line, with the peer and lane it concerns.
    fn log(&self, level: Level, text: &str, peer: Option<&str>, lane: Option<&LaneKey>);
}
