//! Failure detection: which peers that are up should be declared down
//! because they went silent.
//!
//! The peer table reports when a peer comes up and when it is gone; the
//! node reports everything heard on a peer's current control connection
//! (heartbeats and membership messages alike). A detector answers with the
//! peers to take down now ([`FailureDetector::poll_down`]) and the time it
//! next needs to be asked ([`FailureDetector::next_deadline`]).
//!
//! [`heartbeat::HeartbeatTimeout`] is the fixed timeout weft has always
//! used. Others fit the same trait as one new file each: a phi-accrual
//! detector (Hayashibara et al., "The φ Accrual Failure Detector", 2004)
//! keeps the arrival intervals seen in `on_heard` and suspects when φ
//! crosses a threshold; a Lifeguard-style one (Dadgar et al., "Lifeguard:
//! Local Health Awareness for More Accurate Failure Detection", 2018) adapts
//! its timeout to how late this node's own timers run.

pub mod heartbeat;

use crate::types::{Millis, PeerId};

/// Decides when a silent peer is down.
///
/// Peers are named by their [`PeerId`] in the peer table (a small integer:
/// a detector may keep its state in a table indexed by it). A number is
/// reused for another peer only after [`FailureDetector::on_gone`] was
/// called for the one that had it.
pub trait FailureDetector: std::fmt::Debug + Send {
    /// `peer` came up at `now`: start watching it.
    fn on_up(&mut self, now: Millis, peer: PeerId);
    /// Something arrived from `peer` on its current control connection.
    fn on_heard(&mut self, now: Millis, peer: PeerId);
    /// `peer` is down or gone for another reason: stop watching it.
    fn on_gone(&mut self, peer: PeerId);
    /// The peers to declare down at `now`, everything heard until then
    /// having been told (each reported once). `now` may be earlier than
    /// an earlier call's (see [`crate::node::Node::on_timeout_behind`]).
    fn poll_down(&mut self, now: Millis) -> Vec<PeerId>;
    /// When [`FailureDetector::poll_down`] may next have something to say.
    /// Early is allowed (a wake-up that finds nothing); late is not.
    fn next_deadline(&self) -> Option<Millis>;
}
