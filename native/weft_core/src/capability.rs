//! Capabilities: what a node understands beyond the plain frame (which
//! header extensions, see [`crate::frame`]), stated by each side in the
//! handshake, and what the two ends of a connection agreed on
//! ([`Negotiated`]), so that a sender can ask "may I send a relay header to
//! this peer?".

use crate::frame::Extensions;

/// What a node understands beyond the plain frame: a set of bits, stated by
/// each side in the handshake; a connection may use the intersection.
/// Unknown bits (from a newer peer) are kept as they are and simply never
/// in the intersection with this node's set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// Nothing beyond plain frames.
    pub const NONE: Capabilities = Capabilities(0);
    /// Sequence number and ack extensions.
    pub const SEQ_ACK: Capabilities = Capabilities(1);
    /// Origin and destination extensions (frames relayed through a node).
    pub const RELAY: Capabilities = Capabilities(2);
    /// Trace id extension.
    pub const TRACE: Capabilities = Capabilities(4);
    /// What this node understands.
    pub const SUPPORTED: Capabilities = Capabilities(1 | 2 | 4);

    const NAMES: [(Capabilities, &'static str); 3] = [
        (Capabilities::SEQ_ACK, "seq_ack"),
        (Capabilities::RELAY, "relay"),
        (Capabilities::TRACE, "trace"),
    ];

    /// Both sets.
    pub fn intersect(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }

    /// Whether every capability of `other` is in this set.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the known capabilities in the set.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(c, _)| self.contains(*c))
            .map(|(_, n)| *n)
            .collect()
    }
}

impl std::fmt::Display for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self.names().iter().map(|s| s.to_string()).collect();
        let unknown = self.0 & !Capabilities::SUPPORTED.0;
        if unknown != 0 {
            parts.push(format!("{unknown:#x}"));
        }
        write!(f, "[{}]", parts.join(","))
    }
}

/// What the two ends of a connection agreed on in the handshake: the
/// highest protocol version both speak and the capabilities both have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The protocol version.
    pub version: u16,
    /// The capabilities both ends have.
    pub caps: Capabilities,
}

impl Negotiated {
    /// May a frame with these extensions go to this peer?
    pub fn allows(&self, ext: &Extensions) -> bool {
        self.caps.contains(ext.needs())
    }
}

/// Which capabilities a header's extensions need: the method lives here,
/// with the capabilities, so that the frame format does not depend on them
/// (capability -> frame, never back).
impl Extensions {
    /// The capabilities a peer needs to read these fields.
    pub fn needs(&self) -> Capabilities {
        let mut c = 0;
        if self.seq.is_some() || self.ack.is_some() {
            c |= Capabilities::SEQ_ACK.0;
        }
        if self.origin.is_some() || self.destination.is_some() {
            c |= Capabilities::RELAY.0;
        }
        if self.trace.is_some() {
            c |= Capabilities::TRACE.0;
        }
        Capabilities(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_intersect_and_print() {
        let c = Capabilities::SEQ_ACK.intersect(Capabilities(3 | 0x100));
        assert_eq!(c, Capabilities::SEQ_ACK);
        assert_eq!(
            Capabilities(7 | 0x100).to_string(),
            "[seq_ack,relay,trace,0x100]"
        );
        assert_eq!(Capabilities::NONE.to_string(), "[]");
        let n = Negotiated {
            version: 3,
            caps: Capabilities::TRACE,
        };
        assert!(n.allows(&Extensions::default()));
        let traced = Extensions {
            trace: Some([1; 16]),
            ..Default::default()
        };
        assert!(n.allows(&traced));
        let relayed = Extensions {
            origin: Some("a@h".into()),
            ..traced
        };
        assert!(!n.allows(&relayed));
        assert_eq!(relayed.needs().names(), ["relay", "trace"]);
    }
}
