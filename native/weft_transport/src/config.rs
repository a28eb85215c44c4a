//! Settings of a running transport, already validated by the Erlang side.

use std::net::SocketAddr;
use std::sync::Arc;
use weft_core::stage::Stage;
use weft_core::{Capabilities, ChannelSpec, NodeSpec, Timing};

/// Where pollers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// Driven by the embedding program (the BEAM's schedulers), woken
    /// through [`crate::Sink::wake_poller`].
    Schedulers,
    /// Each poller on a thread of its own.
    Threads,
    /// Connections start on driven pollers and move to threaded ones while
    /// they carry bulk data (large frames), then back once they are quiet.
    Auto,
}

/// The membership overlay a node runs, chosen at start (see
/// `weft_core::membership`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// Every member connects to every other; members spread by gossip
    /// (`weft_core::membership::full_mesh`).
    FullMesh,
    /// Exactly these nodes (contacts: a name and addresses), redialed with
    /// backoff while down, nothing gossiped, strangers refused
    /// (`weft_core::membership::static_list`).
    Static(Vec<NodeSpec>),
    /// Servers connect to every member, clients only to the servers; a
    /// message between clients is relayed by a server
    /// (`weft_core::membership::client_server`).
    ClientServer {
        /// This node is a server (else a client).
        server: bool,
    },
    /// A membership protocol written outside the core (in Erlang, the
    /// `weft_membership` behaviour), told what happens through
    /// [`crate::Sink::membership`] and deciding through
    /// [`crate::Transport::membership_decision`]
    /// (`weft_core::membership::callback`).
    Callback {
        /// The protocol's name (the Erlang module): nodes running
        /// different protocols refuse each other.
        protocol: String,
    },
}

impl Overlay {
    /// Its name in `weft:info()`.
    pub fn name(&self) -> &'static str {
        match self {
            Overlay::FullMesh => "full_mesh",
            Overlay::Static(_) => "static",
            Overlay::ClientServer { .. } => "client_server",
            Overlay::Callback { .. } => "callback",
        }
    }
}

/// Everything the transport needs to start.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's name (`node()`).
    pub node: String,
    /// Where to listen; port 0 lets the OS pick.
    pub listen: SocketAddr,
    /// What to tell others to dial; empty: the bound address. A port of 0
    /// means the port actually bound.
    pub advertise: Vec<SocketAddr>,
    /// Application channels (the control channel is implicit).
    pub channels: Vec<ChannelSpec>,
    /// The membership overlay.
    pub overlay: Overlay,
    /// Pick lanes by partition key / destination (true) or round robin.
    pub affinity: bool,
    /// Shared secret for the handshake proofs.
    pub cookie: Vec<u8>,
    /// What this node offers in every handshake (normally
    /// [`Capabilities::SUPPORTED`]); a connection uses what both ends offer.
    pub capabilities: Capabilities,
    /// Largest frame body accepted (and sent), in bytes.
    pub max_frame_size: u64,
    /// Bytes that may wait in the send queues of one peer.
    pub send_queue_limit: u64,
    /// Bytes that may wait in the send queues of all peers.
    pub send_queue_total_limit: u64,
    /// Incoming handshakes in progress at most; past this new connections
    /// are closed at once (and counted).
    pub max_pending_handshakes: usize,
    /// Bytes of large frames being received, over all connections, whose
    /// buffers are allocated whole when their header comes; past this a
    /// buffer grows with the bytes that arrive (see
    /// [`crate::frame_reader::Claims`]). Normally
    /// [`crate::frame_reader::CLAIMS_LIMIT`].
    pub large_frame_claims: u64,
    /// Most members kept (see `weft_core::Node::with_max_members`).
    pub max_members: usize,
    /// Channels whose oldest queued messages are dropped to make room,
    /// instead of refusing new ones, when a queue is full.
    pub drop_oldest: Vec<String>,
    /// Channels whose senders wait for room when a queue is full (the
    /// Erlang side waits; here a refusal on them is not counted).
    pub wait: Vec<String>,
    /// Heartbeats, failure detection, backoff and gossip timing.
    pub timing: Timing,
    /// Where the pollers (socket reads, lane flushes) run.
    pub io: IoMode,
    /// How many pollers share the connections.
    pub pollers: usize,
    /// How long a poller keeps polling after traffic before it waits to be
    /// woken (see [`crate::poller::Outcome::Linger`]).
    pub poll_linger: std::time::Duration,
    /// The same while the machine's CPUs are contended (see
    /// [`crate::pressure`]); one at least `poll_linger` is `poll_linger`
    /// (the pressure is then not read).
    pub poll_linger_busy: std::time::Duration,
    /// The per-message stage every application message goes through on
    /// send and on receive (see [`weft_core::stage`]); `None`: none, at no
    /// cost.
    pub stage: Option<Arc<dyn Stage>>,
}
