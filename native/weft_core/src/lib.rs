//! # weft_core
//!
//! The sans-IO heart of weft: everything that decides, nothing that waits.
//!
//! - [`spec`]: who a node is (name, epoch, addresses, channels);
//! - [`lane`]: the lane plan between two nodes and how a message picks a lane;
//! - [`frame`]: the frame header and its extensions;
//! - [`capability`]: what each side understands, and what a connection agreed on;
//! - [`wire`]: the control and handshake messages and their bounded codec;
//! - [`handshake`]: the handshake state machines and their cookie proofs;
//! - [`node`]: the peer service state machine (membership, dialing, collision
//!   settlement, heartbeats, failure detection), fed events, returning actions;
//! - [`peer`]: a peer's status and lane slots, and the collision rule;
//! - [`send_queue`]: a lane's send queue policy (per-sender order, small
//!   passes large, direct write or batch, partial writes, drop oldest);
//! - [`placement`]: bulk detection (`io => auto`) and poller lingering;
//! - [`stage`]: the per-message stage on send and receive (interposition,
//!   fault injection; later tracing, reliable and causal delivery);
//! - [`sim`]: a deterministic, seeded simulator that runs many [`node::Node`]s
//!   over a virtual network, used by the tests.
//!
//! Time is an argument (milliseconds from any origin), randomness a seed:
//! the same inputs always give the same actions.

pub mod capability;
pub mod frame;
pub mod handshake;
pub mod lane;
pub mod node;
pub mod peer;
pub mod placement;
pub mod rng;
pub mod send_queue;
pub mod sim;
pub mod spec;
pub mod stage;
pub mod wire;

pub use capability::{Capabilities, Negotiated};
pub use frame::{Extensions, FrameError, FrameKind};
pub use lane::LaneKey;
pub use node::{Action, ConnId, DownReason, Level, Node, PeerStatus, Slot, Timing};
pub use spec::{ChannelSpec, NodeSpec, CONTROL_CHANNEL};
pub use wire::{Control, Handshake, Refusal, Tombstone, View};
