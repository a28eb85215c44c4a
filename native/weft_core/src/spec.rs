//! Who a node is: its name, incarnation, addresses, channels and limits.
//!
//! A [`NodeSpec`] travels in every handshake and in membership gossip, so
//! that a node learns how to dial a peer, which lanes the two of them share,
//! and the largest frame the peer accepts. Everything in a spec that came
//! from the network is checked with [`NodeSpec::validate`] before it is used.

use std::net::SocketAddr;

/// Name of the internal channel that carries membership, gossip and
/// heartbeats. It has exactly one lane and never carries application data,
/// so the control plane never queues behind user traffic.
pub const CONTROL_CHANNEL: &str = "$control";

/// Longest node or channel name, in bytes (an Erlang atom holds at most 255
/// characters; bytes are the stricter bound).
pub const MAX_NAME_LEN: usize = 255;
/// Most addresses a node may advertise.
pub const MAX_ADDRS: usize = 16;
/// Most channels a node may have.
pub const MAX_CHANNELS: usize = 256;
/// Most lanes per channel.
pub const MAX_PARALLELISM: u16 = 256;
/// Largest frame body the 32-bit length field can describe (it counts the
/// kind byte too).
pub const MAX_FRAME_LIMIT: u64 = u32::MAX as u64 - 1;

/// A named channel and how many parallel connections (lanes) it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// The channel's name.
    pub name: String,
    /// How many lanes it wants.
    pub parallelism: u16,
}

/// What a node tells others about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The BEAM node name (`node()`), as text.
    pub name: String,
    /// Incarnation: a random number drawn at every start and every `leave`,
    /// so that an earlier life of the node can be told apart from this one
    /// whatever the clocks say. `0` means "not yet known" (a spec a user
    /// typed in, before the first handshake).
    pub incarnation: u64,
    /// Where to dial the node, in order of preference.
    pub addrs: Vec<SocketAddr>,
    /// The node's application channels (never includes the control channel).
    pub channels: Vec<ChannelSpec>,
    /// Largest frame body the node accepts, in bytes; a sender refuses
    /// larger messages rather than send what would be refused.
    pub max_frame: u64,
}

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The node name is not `name@host` of printable ASCII.
    #[error("bad node name {0:?}")]
    Name(String),
    /// Incarnation 0 where a known one is needed.
    #[error("incarnation 0")]
    Incarnation,
    /// No address, or too many.
    #[error("no address, or more than {MAX_ADDRS}")]
    AddrCount,
    /// An address that cannot be dialed.
    #[error("address {0} cannot be dialed")]
    Addr(SocketAddr),
    /// Too many channels.
    #[error("more than {MAX_CHANNELS} channels")]
    ChannelCount,
    /// A bad channel name.
    #[error("bad channel {0:?}")]
    Channel(String),
    /// A channel listed twice.
    #[error("channel {0:?} listed twice")]
    DuplicateChannel(String),
    /// A parallelism out of range.
    #[error("parallelism {1} of channel {0:?} is outside 1..={MAX_PARALLELISM}")]
    Parallelism(String, u16),
    /// A frame limit out of range.
    #[error("frame limit {0} is outside 1..={MAX_FRAME_LIMIT}")]
    MaxFrame(u64),
}

/// Whether `name` looks like a node name: `name@host`, at most
/// [`MAX_NAME_LEN`] bytes of printable ASCII. (Names become atoms on the
/// receiving node, and a NIF makes atoms from Latin-1 only: ASCII is what
/// round-trips through every side unchanged.)
pub fn valid_node_name(name: &str) -> bool {
    let ok_chars = name.bytes().all(|c| c.is_ascii_graphic());
    match name.split_once('@') {
        Some((n, h)) => {
            !n.is_empty()
                && !h.is_empty()
                && !h.contains('@')
                && name.len() <= MAX_NAME_LEN
                && ok_chars
        }
        None => false,
    }
}

/// Whether `name` may name an application channel (printable ASCII, as
/// node names).
pub fn valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != CONTROL_CHANNEL
        && name.bytes().all(|c| c.is_ascii_graphic())
}

/// Whether another node could dial `a`.
pub fn dialable(a: &SocketAddr) -> bool {
    let ip = a.ip();
    a.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && ip != std::net::Ipv4Addr::BROADCAST
}

impl NodeSpec {
    /// Parallelism of `channel` on this node, if it has that channel.
    pub fn parallelism(&self, channel: &str) -> Option<u16> {
        self.channels
            .iter()
            .find(|c| c.name == channel)
            .map(|c| c.parallelism)
    }

    /// Check everything a peer says about itself. `contact` allows what a
    /// user-typed spec may lack (incarnation 0, no frame limit).
    pub fn validate(&self, contact: bool) -> Result<(), SpecError> {
        if !valid_node_name(&self.name) {
            return Err(SpecError::Name(self.name.clone()));
        }
        if self.incarnation == 0 && !contact {
            return Err(SpecError::Incarnation);
        }
        if self.addrs.is_empty() || self.addrs.len() > MAX_ADDRS {
            return Err(SpecError::AddrCount);
        }
        if let Some(a) = self.addrs.iter().find(|a| !dialable(a)) {
            return Err(SpecError::Addr(*a));
        }
        if self.channels.len() > MAX_CHANNELS {
            return Err(SpecError::ChannelCount);
        }
        for c in &self.channels {
            if !valid_channel_name(&c.name) {
                return Err(SpecError::Channel(c.name.clone()));
            }
            if !(1..=MAX_PARALLELISM).contains(&c.parallelism) {
                return Err(SpecError::Parallelism(c.name.clone(), c.parallelism));
            }
        }
        // (sorted, not each against those before it: 256 channels were
        // 32,640 comparisons, and a peer may send a spec to check with
        // every member of a view)
        let mut names: Vec<&str> = self.channels.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(SpecError::DuplicateChannel(w[0].to_string()));
        }
        let unknown = contact && self.max_frame == 0;
        if !unknown && !(1..=MAX_FRAME_LIMIT).contains(&self.max_frame) {
            return Err(SpecError::MaxFrame(self.max_frame));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            incarnation: 7,
            addrs: vec!["127.0.0.1:9000".parse().unwrap()],
            channels: vec![ChannelSpec {
                name: "default".into(),
                parallelism: 2,
            }],
            max_frame: 1 << 20,
        }
    }

    #[test]
    fn good_specs_pass() {
        assert_eq!(spec("a@h").validate(false), Ok(()));
        assert_eq!(spec("weft_1@127.0.0.1").validate(false), Ok(()));
        let mut c = spec("a@h");
        c.incarnation = 0;
        c.max_frame = 0;
        assert_eq!(c.validate(true), Ok(()));
        assert!(c.validate(false).is_err());
    }

    #[test]
    fn everything_a_peer_says_is_checked() {
        let long = format!("{}@h", "x".repeat(300));
        for name in [
            "",
            "nohost",
            "a@",
            "@h",
            "a@b@c",
            "a b@h",
            "a\n@h",
            "€€@vm",
            "ä@h",
            long.as_str(),
        ] {
            assert!(spec(name).validate(false).is_err(), "{name:?}");
        }
        let bad = |f: &dyn Fn(&mut NodeSpec)| {
            let mut s = spec("a@h");
            f(&mut s);
            s.validate(false)
        };
        assert_eq!(bad(&|s| s.addrs.clear()), Err(SpecError::AddrCount));
        assert!(bad(&|s| s.addrs = vec!["0.0.0.0:9000".parse().unwrap()]).is_err());
        assert!(bad(&|s| s.addrs = vec!["127.0.0.1:0".parse().unwrap()]).is_err());
        assert!(bad(&|s| s.addrs = vec!["[::]:1".parse().unwrap()]).is_err());
        assert!(bad(&|s| s.addrs = vec!["224.0.0.1:1".parse().unwrap()]).is_err());
        assert_eq!(
            bad(&|s| s.addrs = vec!["127.0.0.1:1".parse().unwrap(); 17]),
            Err(SpecError::AddrCount)
        );
        assert!(bad(&|s| s.channels[0].parallelism = 0).is_err());
        assert!(bad(&|s| s.channels[0].parallelism = 257).is_err());
        assert!(bad(&|s| s.channels[0].name = CONTROL_CHANNEL.into()).is_err());
        assert!(bad(&|s| s.channels[0].name = String::new()).is_err());
        assert!(bad(&|s| s.channels[0].name = "c".repeat(256)).is_err());
        assert!(bad(&|s| s.channels[0].name = "ça".into()).is_err());
        assert_eq!(
            bad(&|s| s.channels.push(s.channels[0].clone())),
            Err(SpecError::DuplicateChannel("default".into()))
        );
        assert_eq!(
            bad(&|s| s.channels = (0..256)
                .map(|i| ChannelSpec {
                    name: format!("c{}", i % 255),
                    parallelism: 1
                })
                .collect()),
            Err(SpecError::DuplicateChannel("c0".into()))
        );
        assert_eq!(
            bad(&|s| s.channels = (0..257)
                .map(|i| ChannelSpec {
                    name: format!("c{i}"),
                    parallelism: 1
                })
                .collect()),
            Err(SpecError::ChannelCount)
        );
        assert!(bad(&|s| s.max_frame = 0).is_err());
        assert!(bad(&|s| s.max_frame = u64::from(u32::MAX)).is_err());
        assert!(bad(&|s| s.incarnation = 0).is_err());
    }
}
