//! Who a node is: its name, incarnation, addresses and channels.
//!
//! A [`NodeSpec`] travels in every hello and in membership gossip, so that a
//! node learns how to dial a peer and which lanes the two of them share.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Name of the internal channel that carries membership, gossip and
/// heartbeats. It has exactly one lane and never carries application data,
/// so the control plane never queues behind user traffic.
pub const CONTROL_CHANNEL: &str = "$control";

/// A named channel and how many parallel connections (lanes) it wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSpec {
    pub name: String,
    pub parallelism: u16,
}

/// What a node tells others about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The BEAM node name (`node()`), as text.
    pub name: String,
    /// Incarnation: grows with every start and every `leave`, so that stale
    /// gossip about an earlier life of the node can be told apart. `0` means
    /// "not yet known" (a spec a user typed in, before the first hello).
    pub epoch: u64,
    /// Where to dial the node, in order of preference.
    pub addrs: Vec<SocketAddr>,
    /// The node's application channels (never includes the control channel).
    pub channels: Vec<ChannelSpec>,
}

impl NodeSpec {
    /// Parallelism of `channel` on this node, if it has that channel.
    pub fn parallelism(&self, channel: &str) -> Option<u16> {
        self.channels
            .iter()
            .find(|c| c.name == channel)
            .map(|c| c.parallelism)
    }
}
