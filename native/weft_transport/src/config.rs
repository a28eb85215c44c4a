//! Settings of a running transport, already validated by the Erlang side.

use std::net::SocketAddr;
use weft_core::{ChannelSpec, Timing};

/// Everything the transport needs to start.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's name (`node()`).
    pub node: String,
    /// Where to listen; port 0 lets the OS pick.
    pub listen: SocketAddr,
    /// What to tell others to dial; empty: the bound address.
    pub advertise: Vec<SocketAddr>,
    /// Application channels (the control channel is implicit).
    pub channels: Vec<ChannelSpec>,
    /// Pick lanes by partition key / destination (true) or round robin.
    pub affinity: bool,
    /// Shared secret for the handshake proofs.
    pub cookie: Vec<u8>,
    /// Largest frame body accepted, in bytes.
    pub max_frame_size: u64,
    /// Heartbeats, failure detection, backoff and gossip timing.
    pub timing: Timing,
    /// Threads of the tokio runtime.
    pub io_threads: usize,
}
