//! The wire format: length-prefixed frames and the messages inside them.
//!
//! Every frame is `len: u32 (big endian) | kind: u8 | body`, where `len`
//! counts the kind byte and the body. A receiver reads the 5-byte header,
//! checks `len` against its frame size limit *before* allocating, then reads
//! the body. Application data bodies are opaque here (the Erlang external
//! term format of `{Destination, Message}`); control and handshake bodies are
//! bincode-encoded enums defined below.

use crate::lane::LaneKey;
use crate::spec::NodeSpec;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 5;

/// Protocol version carried in every hello. Bump on any wire change.
pub const PROTOCOL_VERSION: u16 = 1;

/// First bytes of every hello, so a stray client is refused at once.
pub const MAGIC: &[u8; 4] = b"WEFT";

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Connection set-up: hello, challenge, auth, welcome, refuse.
    Handshake = 0,
    /// Application message (opaque bytes).
    Data = 1,
    /// Membership gossip and heartbeats; control lane only.
    Control = 2,
}

/// Why a frame could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("protocol version {theirs} is not supported (this node speaks {ours})")]
    Version { theirs: u16, ours: u16 },
    #[error("not a weft connection (bad magic)")]
    BadMagic,
}

/// The header for a frame of `kind` whose body has `body_len` bytes.
pub fn header(kind: FrameKind, body_len: usize) -> [u8; HEADER_LEN] {
    let len = (body_len as u32).wrapping_add(1).to_be_bytes();
    [len[0], len[1], len[2], len[3], kind as u8]
}

/// Parse a header; `max` bounds the body length (in bytes).
/// Returns the kind and the body length to read next.
pub fn parse_header(h: &[u8; HEADER_LEN], max: u64) -> Result<(FrameKind, usize), FrameError> {
    let len = u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let body = len - 1;
    if body > max {
        return Err(FrameError::TooLarge { size: body, max });
    }
    let kind = match h[4] {
        0 => FrameKind::Handshake,
        1 => FrameKind::Data,
        2 => FrameKind::Control,
        k => return Err(FrameError::UnknownKind(k)),
    };
    Ok((kind, body as usize))
}

/// Messages of the control channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// "I am alive": sent every heartbeat interval on the control lane.
    Heartbeat,
    /// The sender's whole membership view (full-mesh anti-entropy).
    Gossip(View),
}

/// A membership view as gossiped: live members and tombstones of nodes that
/// left (name and the last epoch that left), so late gossip cannot bring a
/// departed incarnation back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub members: Vec<NodeSpec>,
    pub tombstones: Vec<(String, u64)>,
}

/// Why an acceptor turned a connection down. Sent to the dialer and logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The dialer expected another node at this address.
    UnexpectedNode { expected: String, actual: String },
    /// The cookie proof did not verify.
    BadCookie,
    /// The channel is not one of the acceptor's, or the lane is out of range.
    UnknownLane,
    /// This incarnation of the dialer has left (or was removed).
    Left,
    /// A newer incarnation of the dialer is already known.
    Stale,
    /// Both sides dialed the same lane; the other connection wins.
    Duplicate,
    /// The acceptor is shutting down or has no room for the peer.
    Unavailable,
    /// The acceptor has left the cluster and joins again only when asked to.
    Detached,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnexpectedNode { expected, actual } => {
                write!(f, "unexpected node: expected {expected}, reached {actual}")
            }
            Refusal::BadCookie => write!(f, "cookie mismatch"),
            Refusal::UnknownLane => write!(f, "unknown channel or lane"),
            Refusal::Left => write!(f, "this incarnation has left the cluster"),
            Refusal::Stale => write!(f, "a newer incarnation of this node is known"),
            Refusal::Duplicate => write!(f, "duplicate connection for this lane"),
            Refusal::Unavailable => write!(f, "node unavailable"),
            Refusal::Detached => write!(f, "node has left the cluster"),
        }
    }
}

/// Messages of the handshake, in order: the dialer's `Hello`, the acceptor's
/// `Challenge` (or `Refuse`), the dialer's `Auth`, the acceptor's `Welcome`
/// (or `Refuse`). See [`crate::handshake`] for the proofs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handshake {
    Hello {
        from: NodeSpec,
        to: String,
        lane: LaneKey,
        nonce: [u8; 32],
    },
    Challenge {
        from: NodeSpec,
        nonce: [u8; 32],
        proof: [u8; 32],
    },
    Auth {
        proof: [u8; 32],
    },
    Welcome,
    Refuse(Refusal),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Encoding our own plain enums into a Vec cannot fail.
    bincode::serde::encode_to_vec(v, config()).expect("bincode encoding of a plain enum")
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, b: &[u8]) -> Result<T, FrameError> {
    let (v, used) =
        bincode::serde::decode_from_slice(b, config()).map_err(|e| FrameError::Malformed {
            what,
            detail: e.to_string(),
        })?;
    if used != b.len() {
        return Err(FrameError::Malformed {
            what,
            detail: format!("{} trailing bytes", b.len() - used),
        });
    }
    Ok(v)
}

/// Body of a control frame.
pub fn encode_control(c: &Control) -> Vec<u8> {
    encode(c)
}

/// Parse the body of a control frame.
pub fn decode_control(b: &[u8]) -> Result<Control, FrameError> {
    decode("control message", b)
}

/// Body of a handshake frame: magic and version first, so that any future
/// version can still read and refuse it.
pub fn encode_handshake(h: &Handshake) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out.extend_from_slice(&encode(h));
    out
}

/// Parse the body of a handshake frame, checking magic and version.
pub fn decode_handshake(b: &[u8]) -> Result<Handshake, FrameError> {
    if b.len() < 6 || &b[..4] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let theirs = u16::from_be_bytes([b[4], b[5]]);
    if theirs != PROTOCOL_VERSION {
        return Err(FrameError::Version {
            theirs,
            ours: PROTOCOL_VERSION,
        });
    }
    decode("handshake message", &b[6..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ChannelSpec;

    #[test]
    fn header_round_trip() {
        let h = header(FrameKind::Data, 1234);
        assert_eq!(parse_header(&h, 1 << 20), Ok((FrameKind::Data, 1234)));
        let h = header(FrameKind::Control, 0);
        assert_eq!(parse_header(&h, 0), Ok((FrameKind::Control, 0)));
    }

    #[test]
    fn header_limit_is_checked_before_reading() {
        let h = header(FrameKind::Data, 2_000_000);
        assert_eq!(
            parse_header(&h, 1_000_000),
            Err(FrameError::TooLarge {
                size: 2_000_000,
                max: 1_000_000
            })
        );
        assert_eq!(parse_header(&[0, 0, 0, 0, 1], 10), Err(FrameError::Empty));
        assert_eq!(
            parse_header(&[0, 0, 0, 1, 9], 10),
            Err(FrameError::UnknownKind(9))
        );
    }

    #[test]
    fn control_round_trip() {
        let v = Control::Gossip(View {
            members: vec![NodeSpec {
                name: "a@h".into(),
                epoch: 5,
                addrs: vec!["127.0.0.1:9000".parse().unwrap()],
                channels: vec![ChannelSpec {
                    name: "default".into(),
                    parallelism: 2,
                }],
            }],
            tombstones: vec![("b@h".into(), 3)],
        });
        assert_eq!(decode_control(&encode_control(&v)).unwrap(), v);
        assert_eq!(
            decode_control(&encode_control(&Control::Heartbeat)).unwrap(),
            Control::Heartbeat
        );
        assert!(decode_control(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn handshake_checks_magic_and_version() {
        let h = Handshake::Refuse(Refusal::Duplicate);
        let mut b = encode_handshake(&h);
        assert_eq!(decode_handshake(&b).unwrap(), h);
        b[5] = b[5].wrapping_add(1);
        assert!(matches!(
            decode_handshake(&b),
            Err(FrameError::Version { .. })
        ));
        assert_eq!(decode_handshake(b"HTTP/1.1"), Err(FrameError::BadMagic));
    }
}
