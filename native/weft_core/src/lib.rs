//! # weft_core
//!
//! The sans-IO heart of weft: everything that decides, nothing that waits.
//!
//! - [`types`]: time, connection ids, log levels, down reasons, timing;
//! - [`spec`]: who a node is (name, incarnation, addresses, channels);
//! - [`lane`]: the lane plan between two nodes, how a message picks a lane,
//!   and a lane's send queue policy (per-sender order, small passes large,
//!   direct write or batch, partial writes, drop oldest);
//! - [`frame`]: the frame header and its extensions, and the capabilities
//!   that say which extensions each side reads and a connection agreed on;
//! - [`wire`]: the control and handshake messages and their bounded codec;
//! - [`handshake`]: the handshake state machines and their cookie proofs;
//! - [`action`]: what the core asks its driver to do;
//! - [`peers`]: the peer table and connection plan (status, lane slots,
//!   dialing and backoff, the collision rule);
//! - [`membership`]: the [`membership::Membership`] trait (who the members
//!   are) and its full-mesh implementation;
//! - [`failure`]: the [`failure::FailureDetector`] trait and the heartbeat
//!   timeout;
//! - [`node`]: the composition of those, fed events and deadlines,
//!   returning actions;
//! - [`share`]: which connection a lane's frame takes, its own or the
//!   channel's shared lane, and the fences that keep its order across both;
//! - [`placement`]: bulk detection (`io => auto`) and poller lingering;
//! - [`stage`]: the per-message stage on send and receive (interposition,
//!   fault injection; later tracing, reliable and causal delivery);
//! - [`rng`]: the seeded random generator;
//! - `sim` (cargo feature `sim`, on for this crate's own tests): a
//!   deterministic, seeded simulator that runs many [`node::Node`]s over a
//!   virtual network and the real handshake.
//!
//! Time is an argument (milliseconds from any origin), randomness a seed:
//! the same inputs always give the same actions. The node reports its next
//! deadline ([`Node::next_deadline`]) instead of needing a fixed tick.
//!
//! Module dependencies go one way: `types`, `spec`, `lane`, `rng` <-
//! `frame` <- `wire` <- `handshake`, `action` <- `peers` <- `membership`,
//! `failure` <- `node` <- `sim` (`lane` <- `placement`; `frame` <- `share`;
//! `stage` stands apart). `scripts/deps.py` checks that there is no
//! circle (run by `make test`).

#![warn(missing_docs)]

pub mod action;
pub mod admission;
pub mod failure;
pub mod frame;
pub mod handshake;
pub mod lane;
pub mod membership;
pub mod node;
pub mod peers;
pub mod placement;
pub mod rng;
pub mod share;
#[cfg(feature = "sim")]
pub mod sim;
pub mod spec;
pub mod stage;
pub mod types;
pub mod wire;

pub use action::Action;
pub use frame::{Capabilities, Extensions, FrameError, FrameKind, Negotiated};
pub use lane::LaneKey;
pub use membership::full_mesh::DEFAULT_MAX_MEMBERS;
pub use node::Node;
pub use peers::{PeerStatus, PeerView, Slot};
pub use spec::{ChannelSpec, NodeSpec, CONTROL_CHANNEL};
pub use types::{ConnId, DownReason, Level, Millis, Timing};
pub use wire::{Control, Handshake, Refusal};
