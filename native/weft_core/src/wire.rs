//! The messages inside control and handshake frames, and their encoding.
//!
//! The encoding is written by hand so that every length is checked against
//! the bytes actually present before anything is allocated: a claimed count
//! of `n` elements is accepted only if the rest of the frame could hold `n`
//! elements of the smallest possible size, and strings are read as slices of
//! the frame. Whatever the bytes, decoding allocates at most a small multiple
//! of the frame's size and never panics (the fuzz targets in `fuzz/` and the
//! corpus replay test check this).
//!
//! Layout (all integers big-endian):
//! - string: `len: u8 | UTF-8 bytes` (names are at most 255 bytes);
//! - address: `family: u8 (4 | 6) | 4 or 16 bytes | port: u16`;
//! - node spec: `name | incarnation: u64 | max_frame: u32 | n: u8 | n addresses
//!   | m: u16 | m × (name | parallelism: u16)`;
//! - lane: `channel | index: u16`;
//! - control: `0` heartbeat | `1 | payload` a membership message, whose
//!   payload (the rest of the frame) the membership encodes and decodes
//!   itself (see [`crate::membership`]);
//! - handshake: `"WEFT" | version: u16 | tag: u8 | fields` (see [`Handshake`]):
//!   - hello (tag 0): `nonce: 32 bytes | n: u8 (1..=32) | n × version: u16 |
//!     capabilities: u64`, in version 3 (the dialer's versions and
//!     capabilities);
//!   - challenge (tag 1): `nonce: 32 bytes`; its version field is the version
//!     the acceptor chose (the highest both speak);
//!   - auth (tag 2): `spec | to: name | lane | proof: 32 bytes`;
//!   - welcome (tag 3): `spec | capabilities: u64 | proof: 32 bytes`;
//!   - refuse (tag 4): a refusal.
//!
//!   A handshake whose version field is `0xFFFF` lists the versions the
//!   sender speaks (`n: u16 | n × u16`): this one layout never changes, so a
//!   dialer of any version learns what the acceptor speaks.

use crate::frame::Capabilities;
use crate::frame::{FrameError, MAGIC, PROTOCOL_VERSION, SUPPORTED_VERSIONS};
use crate::lane::LaneKey;
use crate::spec::{ChannelSpec, NodeSpec};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version field of a frame that lists supported versions.
pub const VERSIONS_MARK: u16 = 0xFFFF;

/// Most versions a version list may name (in a `0xFFFF` frame or a
/// version refusal); a longer one is refused.
pub const MAX_VERSIONS_LISTED: usize = 255;

/// Most versions a hello may list.
pub const MAX_HELLO_VERSIONS: usize = 32;

/// Messages of the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// "I am alive": sent every heartbeat interval on the control lane.
    Heartbeat,
    /// A message of the membership, in its own encoding (opaque here).
    Membership(Vec<u8>),
    /// "I am stopping" (`weft:stop/0`): the last frame a stopping node
    /// sends on each control lane, so that its peers report it down as
    /// `stopped` rather than as a failure.
    Stopping,
    /// A fence of lane `index` of the connection's channel (capability
    /// `share`, see [`crate::share`]): sent on a data lane, after the
    /// lane's last frame on that connection. The receiver delivers what it
    /// read before it, then answers with [`Control::Fenced`] on the control
    /// lane.
    Fence {
        /// The lane that changes connection.
        index: u16,
        /// What the answer repeats.
        token: u64,
    },
    /// A wait for the fence `token` of the lane whose connection carries it
    /// (capability `share_wait`, see [`crate::share`]): the receiver reads
    /// nothing more of that lane's connections until it has delivered that
    /// fence from the channel's shared lane. Never on the shared lane or
    /// the control lane.
    Wait {
        /// The fence's token.
        token: u64,
    },
    /// The answer to a [`Control::Fence`]: everything before the fence on
    /// its connection was delivered. Control lane only.
    Fenced {
        /// The lane that sent the fence.
        lane: LaneKey,
        /// The fence's token.
        token: u64,
    },
}

/// Why a connection was turned down. Before the dialer has proved that it
/// knows the cookie, only [`Refusal::Refused`] goes on the wire (the full
/// reason stays in the local log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Refused before authentication: no reason is given.
    Refused,
    /// The dialer expected another node at this address.
    UnexpectedNode {
        /// The node the dialer wanted.
        expected: String,
        /// The node that answered.
        actual: String,
    },
    /// A cookie proof did not verify (local reason; the wire says `Refused`).
    BadCookie,
    /// The channel is not one of the acceptor's, or the lane is out of range.
    UnknownLane,
    /// This incarnation of the dialer has left (or was removed).
    Left,
    /// Both sides dialed the same lane; the other connection wins.
    Duplicate,
    /// The acceptor is shutting down or has no room for the peer.
    Unavailable,
    /// The acceptor has left the cluster and joins again only when asked to.
    Detached,
    /// What the peer said about itself is not acceptable.
    BadSpec(String),
    /// The peer speaks only these protocol versions (local reason; the
    /// wire carries it as a [`Handshake::Versions`] message).
    Version(Vec<u16>),
    /// The acceptor has `max_members` members, all of them up: no room
    /// for another until one goes down.
    Full,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Refused => write!(f, "refused"),
            Refusal::UnexpectedNode { expected, actual } => {
                write!(
                    f,
                    "unexpected node: expected {}, reached {}",
                    expected.escape_debug(),
                    actual.escape_debug()
                )
            }
            Refusal::BadCookie => write!(f, "cookie mismatch"),
            Refusal::UnknownLane => write!(f, "unknown channel or lane"),
            Refusal::Left => write!(f, "this incarnation has left the cluster"),
            Refusal::Duplicate => write!(f, "duplicate connection for this lane"),
            Refusal::Unavailable => write!(f, "node unavailable"),
            Refusal::Detached => write!(f, "node does not accept this node as a member"),
            // The text comes from the peer: escaped, so that it cannot
            // forge log lines.
            Refusal::BadSpec(why) => write!(f, "bad node description: {}", why.escape_debug()),
            Refusal::Version(vs) => write!(f, "peer speaks protocol versions {vs:?}"),
            Refusal::Full => write!(f, "no room: max_members members, all up"),
        }
    }
}

/// Messages of the handshake, in order: the dialer's `Hello` (a nonce, the
/// protocol versions and capabilities it has), the acceptor's `Challenge`
/// (its nonce, and the version it chose), the dialer's `Auth` (who it is,
/// whom it wants, the lane, and its proof), the acceptor's `Welcome` (who it
/// is, its capabilities and its proof) or `Refuse`. See
/// [`crate::handshake`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// The dialer's first message.
    Hello {
        /// The dialer's fresh nonce.
        nonce: [u8; 32],
        /// Every protocol version the dialer speaks.
        versions: Vec<u16>,
        /// The capabilities the dialer offers.
        caps: Capabilities,
    },
    /// The acceptor's answer to a hello.
    Challenge {
        /// The acceptor's fresh nonce.
        nonce: [u8; 32],
        /// The version the acceptor chose (the message's version field).
        version: u16,
    },
    /// The dialer proves the cookie first, and says who it is.
    Auth {
        /// The dialer's description.
        from: NodeSpec,
        /// The node it wants to reach.
        to: String,
        /// The lane the connection is for.
        lane: LaneKey,
        /// Its cookie proof over both nonces, the hello and the challenge.
        proof: [u8; 32],
    },
    /// The acceptor accepts, says who it is and proves the cookie back.
    Welcome {
        /// The acceptor's description.
        from: NodeSpec,
        /// The capabilities the acceptor offers.
        caps: Capabilities,
        /// Its cookie proof.
        proof: [u8; 32],
    },
    /// Either side refuses (before authentication: only `Refused`).
    Refuse(Refusal),
    /// The acceptor refuses an authenticated dialer and proves the cookie
    /// (when both offered [`Capabilities::SIGNED_REFUSAL`]).
    SignedRefuse {
        /// Why.
        refusal: Refusal,
        /// Its cookie proof over both nonces, the dialer's proof and the
        /// refusal.
        proof: [u8; 32],
    },
    /// The sender does not speak the version it was addressed in; these are
    /// the versions it does speak.
    Versions(Vec<u16>),
}

// ------------------------------------------------------------------ reader

/// Reads primitives from a frame body, checking every length first.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader of `buf`; `what` names it in errors.
    pub fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0, what }
    }

    /// A [`FrameError::Malformed`] of what this reader reads.
    pub fn err(&self, detail: impl Into<String>) -> FrameError {
        FrameError::Malformed {
            what: self.what,
            detail: detail.into(),
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes not read yet, as they lie in the buffer.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// The next `n` bytes, if present.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if n > self.remaining() {
            return Err(self.err(format!("{n} bytes claimed, {} present", self.remaining())));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The next `N` bytes, if present.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    /// The next big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// The next big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// The next big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A string of at most 255 bytes.
    pub fn str8(&mut self) -> Result<String, FrameError> {
        self.str8_ref().map(str::to_string)
    }

    /// A string of at most 255 bytes, as it lies in the buffer.
    pub fn str8_ref(&mut self) -> Result<&'a str, FrameError> {
        let n = self.u8()? as usize;
        let b = self.bytes(n)?;
        std::str::from_utf8(b).map_err(|_| self.err("string is not UTF-8"))
    }

    /// A count of elements of at least `min_size` bytes each: refused unless
    /// the rest of the frame could hold that many.
    pub fn count(&mut self, n: usize, min_size: usize) -> Result<usize, FrameError> {
        if n.saturating_mul(min_size.max(1)) > self.remaining() {
            return Err(self.err(format!(
                "{n} elements claimed, {} bytes present",
                self.remaining()
            )));
        }
        Ok(n)
    }

    /// Fail unless every byte was read.
    pub fn end(&self) -> Result<(), FrameError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(self.err(format!("{n} trailing bytes"))),
        }
    }
}

// ------------------------------------------------------------------ writer

/// Append `s` with a one-byte length (at most 255 bytes of it).
pub fn put_str8(out: &mut Vec<u8>, s: &str) {
    // Names are validated to 255 bytes; anything longer is cut at a
    // character boundary rather than written with a wrong length.
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn get_addr(r: &mut Reader<'_>) -> Result<SocketAddr, FrameError> {
    let ip = match r.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        f => return Err(r.err(format!("address family {f}"))),
    };
    Ok(SocketAddr::new(ip, r.u16()?))
}

/// Smallest encoded address and channel.
const MIN_ADDR: usize = 1 + 4 + 2;
const MIN_CHANNEL: usize = 1 + 2;

/// Append the encoding of `s`.
pub fn put_spec(out: &mut Vec<u8>, s: &NodeSpec) {
    put_str8(out, &s.name);
    out.extend_from_slice(&s.incarnation.to_be_bytes());
    out.extend_from_slice(&u32::try_from(s.max_frame).unwrap_or(u32::MAX).to_be_bytes());
    let addrs = &s.addrs[..s.addrs.len().min(255)];
    out.push(addrs.len() as u8);
    for a in addrs {
        put_addr(out, a);
    }
    let channels = &s.channels[..s.channels.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(channels.len() as u16).to_be_bytes());
    for c in channels {
        put_str8(out, &c.name);
        out.extend_from_slice(&c.parallelism.to_be_bytes());
    }
}

/// Read a spec (structure only: [`NodeSpec::validate`] checks the values).
pub fn get_spec(r: &mut Reader<'_>) -> Result<NodeSpec, FrameError> {
    let name = r.str8()?;
    let incarnation = r.u64()?;
    let max_frame = u64::from(r.u32()?);
    let n = r.u8()? as usize;
    let n = r.count(n, MIN_ADDR)?;
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        addrs.push(get_addr(r)?);
    }
    let m = r.u16()? as usize;
    let m = r.count(m, MIN_CHANNEL)?;
    let mut channels = Vec::with_capacity(m);
    for _ in 0..m {
        let name = r.str8()?;
        let parallelism = r.u16()?;
        channels.push(ChannelSpec { name, parallelism });
    }
    Ok(NodeSpec {
        name,
        incarnation,
        addrs,
        channels,
        max_frame,
    })
}

/// Read past an encoded spec with the very reads and checks of
/// [`get_spec`] (it fails exactly where `get_spec` would), keeping only its
/// name and incarnation: nothing is allocated.
pub fn skip_spec<'a>(r: &mut Reader<'a>) -> Result<(&'a str, u64), FrameError> {
    let name = r.str8_ref()?;
    let incarnation = r.u64()?;
    r.u32()?;
    let n = r.u8()? as usize;
    let n = r.count(n, MIN_ADDR)?;
    for _ in 0..n {
        get_addr(r)?;
    }
    let m = r.u16()? as usize;
    let m = r.count(m, MIN_CHANNEL)?;
    for _ in 0..m {
        r.str8_ref()?;
        r.u16()?;
    }
    Ok((name, incarnation))
}

fn put_lane(out: &mut Vec<u8>, l: &LaneKey) {
    put_str8(out, &l.channel);
    out.extend_from_slice(&l.index.to_be_bytes());
}

fn get_lane(r: &mut Reader<'_>) -> Result<LaneKey, FrameError> {
    Ok(LaneKey {
        channel: r.str8()?,
        index: r.u16()?,
    })
}

// ----------------------------------------------------------------- control

/// Body of a control frame.
pub fn encode_control(c: &Control) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match c {
        Control::Heartbeat => out.push(0),
        Control::Membership(payload) => {
            out.push(1);
            out.extend_from_slice(payload);
        }
        Control::Stopping => out.push(2),
        Control::Fence { index, token } => {
            out.push(3);
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&token.to_be_bytes());
        }
        Control::Wait { token } => {
            out.push(5);
            out.extend_from_slice(&token.to_be_bytes());
        }
        Control::Fenced { lane, token } => {
            out.push(4);
            put_lane(&mut out, lane);
            out.extend_from_slice(&token.to_be_bytes());
        }
    }
    out
}

/// Parse the body of a control frame.
pub fn decode_control(b: &[u8]) -> Result<Control, FrameError> {
    let mut r = Reader::new("control message", b);
    let c = match r.u8()? {
        0 => Control::Heartbeat,
        1 => Control::Membership(r.bytes(r.remaining())?.to_vec()),
        2 => Control::Stopping,
        3 => Control::Fence {
            index: r.u16()?,
            token: r.u64()?,
        },
        4 => Control::Fenced {
            lane: get_lane(&mut r)?,
            token: r.u64()?,
        },
        5 => Control::Wait { token: r.u64()? },
        t => return Err(r.err(format!("unknown control tag {t}"))),
    };
    r.end()?;
    Ok(c)
}

// --------------------------------------------------------------- handshake

fn put_refusal(out: &mut Vec<u8>, r: &Refusal) {
    match r {
        Refusal::Refused => out.push(0),
        Refusal::UnexpectedNode { expected, actual } => {
            out.push(1);
            put_str8(out, expected);
            put_str8(out, actual);
        }
        Refusal::BadCookie => out.push(2),
        Refusal::UnknownLane => out.push(3),
        Refusal::Left => out.push(4),
        Refusal::Duplicate => out.push(5),
        Refusal::Unavailable => out.push(6),
        Refusal::Detached => out.push(7),
        Refusal::BadSpec(why) => {
            out.push(8);
            put_str8(out, why);
        }
        Refusal::Version(vs) => {
            out.push(9);
            let vs = &vs[..vs.len().min(255)];
            out.push(vs.len() as u8);
            for v in vs {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        Refusal::Full => out.push(10),
    }
}

fn get_refusal(r: &mut Reader<'_>) -> Result<Refusal, FrameError> {
    Ok(match r.u8()? {
        0 => Refusal::Refused,
        1 => Refusal::UnexpectedNode {
            expected: r.str8()?,
            actual: r.str8()?,
        },
        2 => Refusal::BadCookie,
        3 => Refusal::UnknownLane,
        4 => Refusal::Left,
        5 => Refusal::Duplicate,
        6 => Refusal::Unavailable,
        7 => Refusal::Detached,
        8 => Refusal::BadSpec(r.str8()?),
        9 => {
            let n = r.u8()? as usize;
            let n = r.count(n, 2)?;
            Refusal::Version((0..n).map(|_| r.u16()).collect::<Result<_, _>>()?)
        }
        10 => Refusal::Full,
        t => return Err(r.err(format!("unknown refusal {t}"))),
    })
}

/// Body of a handshake frame: magic and version first, so that any version
/// can still read and refuse it.
pub fn encode_handshake(h: &Handshake) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(MAGIC);
    if let Handshake::Versions(vs) = h {
        out.extend_from_slice(&VERSIONS_MARK.to_be_bytes());
        let vs = &vs[..vs.len().min(MAX_VERSIONS_LISTED)];
        out.extend_from_slice(&(vs.len() as u16).to_be_bytes());
        for v in vs {
            out.extend_from_slice(&v.to_be_bytes());
        }
        return out;
    }
    let version = match h {
        Handshake::Challenge { version, .. } => *version,
        _ => PROTOCOL_VERSION,
    };
    out.extend_from_slice(&version.to_be_bytes());
    match h {
        Handshake::Hello {
            nonce,
            versions,
            caps,
        } => {
            out.push(0);
            out.extend_from_slice(nonce);
            let vs = &versions[..versions.len().min(MAX_HELLO_VERSIONS)];
            out.push(vs.len() as u8);
            for v in vs {
                out.extend_from_slice(&v.to_be_bytes());
            }
            out.extend_from_slice(&caps.0.to_be_bytes());
        }
        Handshake::Challenge { nonce, .. } => {
            out.push(1);
            out.extend_from_slice(nonce);
        }
        Handshake::Auth {
            from,
            to,
            lane,
            proof,
        } => {
            out.push(2);
            put_spec(&mut out, from);
            put_str8(&mut out, to);
            put_lane(&mut out, lane);
            out.extend_from_slice(proof);
        }
        Handshake::Welcome { from, caps, proof } => {
            out.push(3);
            put_spec(&mut out, from);
            out.extend_from_slice(&caps.0.to_be_bytes());
            out.extend_from_slice(proof);
        }
        Handshake::Refuse(r) => {
            out.push(4);
            put_refusal(&mut out, r);
        }
        Handshake::SignedRefuse { refusal, proof } => {
            out.push(5);
            put_refusal(&mut out, refusal);
            out.extend_from_slice(proof);
        }
        Handshake::Versions(_) => unreachable!("encoded above"),
    }
    out
}

/// Parse the body of a handshake frame, checking magic and version. A frame
/// of a version this node does not speak is [`FrameError::Version`].
pub fn decode_handshake(b: &[u8]) -> Result<Handshake, FrameError> {
    if b.len() < 6 || &b[..4] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let mut r = Reader::new("handshake message", &b[6..]);
    let theirs = u16::from_be_bytes([b[4], b[5]]);
    if theirs == VERSIONS_MARK {
        let n = r.u16()? as usize;
        // Nobody speaks more (the encoder writes at most this many): a
        // longer list is hostile, and would only fill the logs.
        if n > MAX_VERSIONS_LISTED {
            return Err(r.err(format!(
                "{n} versions listed, at most {MAX_VERSIONS_LISTED}"
            )));
        }
        let n = r.count(n, 2)?;
        let vs = (0..n).map(|_| r.u16()).collect::<Result<Vec<_>, _>>()?;
        r.end()?;
        return Ok(Handshake::Versions(vs));
    }
    if !SUPPORTED_VERSIONS.contains(&theirs) {
        return Err(FrameError::Version {
            theirs,
            ours: PROTOCOL_VERSION,
        });
    }
    let h = match r.u8()? {
        0 => {
            let nonce = r.array()?;
            let n = r.u8()? as usize;
            if !(1..=MAX_HELLO_VERSIONS).contains(&n) {
                return Err(r.err(format!("{n} versions listed")));
            }
            let n = r.count(n, 2)?;
            let versions = (0..n).map(|_| r.u16()).collect::<Result<_, _>>()?;
            Handshake::Hello {
                nonce,
                versions,
                caps: Capabilities(r.u64()?),
            }
        }
        1 => Handshake::Challenge {
            nonce: r.array()?,
            version: theirs,
        },
        2 => Handshake::Auth {
            from: get_spec(&mut r)?,
            to: r.str8()?,
            lane: get_lane(&mut r)?,
            proof: r.array()?,
        },
        3 => Handshake::Welcome {
            from: get_spec(&mut r)?,
            caps: Capabilities(r.u64()?),
            proof: r.array()?,
        },
        4 => Handshake::Refuse(get_refusal(&mut r)?),
        5 => Handshake::SignedRefuse {
            refusal: get_refusal(&mut r)?,
            proof: r.array()?,
        },
        t => return Err(r.err(format!("unknown handshake tag {t}"))),
    };
    r.end()?;
    Ok(h)
}

/// The part of an encoded `Auth`, `Welcome` or `SignedRefuse` that its
/// proof covers: everything but the proof (the last 32 bytes).
pub fn signed_part(body: &[u8]) -> &[u8] {
    &body[..body.len().saturating_sub(32)]
}

/// Fuzzing entry points: decode arbitrary bytes as each message kind and
/// check that what decodes encodes back to the same bytes. Shared by the
/// fuzz targets and the corpus replay test.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    pub fn control(data: &[u8]) {
        if let Ok(c) = decode_control(data) {
            assert_eq!(encode_control(&c), data);
        }
    }

    pub fn handshake(data: &[u8]) {
        if let Ok(h) = decode_handshake(data) {
            let again = encode_handshake(&h);
            assert_eq!(decode_handshake(&again).as_ref(), Ok(&h));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::spec;

    #[test]
    fn control_round_trip() {
        let v = Control::Membership(vec![1, 2, 3]);
        assert_eq!(decode_control(&encode_control(&v)).unwrap(), v);
        assert_eq!(
            decode_control(&encode_control(&Control::Heartbeat)).unwrap(),
            Control::Heartbeat
        );
        assert_eq!(decode_control(&[2]).unwrap(), Control::Stopping);
        assert!(decode_control(&[2, 0]).is_err());
        assert!(decode_control(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_control(&[0, 0]).is_err());
        assert!(decode_control(&[]).is_err());
        let fence = Control::Fence {
            index: 16,
            token: u64::MAX - 1,
        };
        let fenced = Control::Fenced {
            lane: LaneKey {
                channel: "vnode".into(),
                index: 3,
            },
            token: 7,
        };
        let wait = Control::Wait { token: 1 << 63 };
        for c in [fence, fenced, wait] {
            let b = encode_control(&c);
            assert_eq!(decode_control(&b).unwrap(), c);
            // every shorter body, and one byte more, is refused
            for n in 0..b.len() {
                assert!(decode_control(&b[..n]).is_err(), "{c:?} cut at {n}");
            }
            assert!(decode_control(&[&b[..], &[0]].concat()).is_err());
        }
    }

    #[test]
    fn handshake_round_trip_and_versions() {
        let all = [
            Handshake::Hello {
                nonce: [1; 32],
                versions: vec![3, 4],
                caps: Capabilities(0x8000_0000_0000_0007),
            },
            Handshake::Challenge {
                nonce: [2; 32],
                version: PROTOCOL_VERSION,
            },
            Handshake::Auth {
                from: spec("a@h"),
                to: "b@h".into(),
                lane: LaneKey::control(),
                proof: [3; 32],
            },
            Handshake::Welcome {
                from: spec("b@h"),
                caps: Capabilities::SUPPORTED,
                proof: [4; 32],
            },
            Handshake::Refuse(Refusal::UnexpectedNode {
                expected: "x@h".into(),
                actual: "y@h".into(),
            }),
            Handshake::Refuse(Refusal::BadSpec("why".into())),
            Handshake::SignedRefuse {
                refusal: Refusal::Left,
                proof: [5; 32],
            },
            Handshake::SignedRefuse {
                refusal: Refusal::BadSpec("why".into()),
                proof: [6; 32],
            },
            Handshake::Versions(vec![2, 3]),
        ];
        for h in all {
            let b = encode_handshake(&h);
            assert_eq!(decode_handshake(&b).unwrap(), h);
            // every truncation is an error, never a panic
            for cut in 0..b.len() {
                assert!(decode_handshake(&b[..cut]).is_err(), "{h:?} cut at {cut}");
            }
        }
        let mut b = encode_handshake(&hello());
        b[5] = 1;
        assert_eq!(
            decode_handshake(&b),
            Err(FrameError::Version {
                theirs: 1,
                ours: PROTOCOL_VERSION
            })
        );
        assert_eq!(decode_handshake(b"HTTP/1.1"), Err(FrameError::BadMagic));
        // a hello must list 1..=32 versions
        let mut b = encode_handshake(&hello());
        b[39] = 0;
        assert!(decode_handshake(&b).is_err());
        b[39] = 33;
        assert!(decode_handshake(&b).is_err());
    }

    fn hello() -> Handshake {
        Handshake::Hello {
            nonce: [0; 32],
            versions: SUPPORTED_VERSIONS.to_vec(),
            caps: Capabilities::SUPPORTED,
        }
    }

    /// The bytes that used to kill the VM: a hello whose name claims 2^40
    /// bytes. Claimed lengths are checked against what is present.
    #[test]
    fn claimed_lengths_are_bounded_by_the_bytes_present() {
        let attack = [
            0x57, 0x45, 0x46, 0x54, 0x00, 0x01, 0x00, 0xfd, 0, 0, 0, 0, 0, 1, 0, 0,
        ];
        assert!(decode_handshake(&attack).is_err());
        for v in [2, 3] {
            let mut again = attack;
            again[5] = v;
            assert!(decode_handshake(&again).is_err());
        }
    }

    #[test]
    fn fuzz_entry_points_accept_anything() {
        let mut rng = crate::rng::Rng::new(1);
        for len in 0..400 {
            let data = rng.bytes(len);
            fuzzing::control(&data);
            fuzzing::handshake(&data);
            let mut h = MAGIC.to_vec();
            h.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
            h.extend_from_slice(&data);
            fuzzing::handshake(&h);
        }
    }

    #[test]
    fn a_version_list_is_bounded() {
        let list = |n: u16| {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&VERSIONS_MARK.to_be_bytes());
            b.extend_from_slice(&n.to_be_bytes());
            for v in 0..n {
                b.extend_from_slice(&v.to_be_bytes());
            }
            b
        };
        assert!(decode_handshake(&list(MAX_VERSIONS_LISTED as u16)).is_ok());
        assert!(decode_handshake(&list(MAX_VERSIONS_LISTED as u16 + 1)).is_err());
        assert!(decode_handshake(&list(65_000)).is_err());
    }

    /// Text a peer sends in a refusal is escaped when shown (logs).
    #[test]
    fn refusal_text_from_a_peer_cannot_forge_log_lines() {
        let r = Refusal::BadSpec("x\n=ERROR REPORT==== fake".into());
        assert!(!r.to_string().contains('\n'));
        let r = Refusal::UnexpectedNode {
            expected: "a@h".into(),
            actual: "b@h\r\nfake".into(),
        };
        assert!(!r.to_string().contains('\n') && !r.to_string().contains('\r'));
    }

    /// `skip_spec` fails exactly where `get_spec` does, stops at the same
    /// place, and reads the same name and incarnation: on good specs and on
    /// every truncation and byte flip of them.
    #[test]
    fn skip_spec_agrees_with_get_spec() {
        let mut with = spec("a@h");
        with.addrs.push("[::1]:7".parse().unwrap());
        with.channels.push(ChannelSpec {
            name: "data".into(),
            parallelism: 3,
        });
        let mut rng = crate::rng::Rng::new(5);
        for s in [spec("b@h"), with] {
            let mut good = Vec::new();
            put_spec(&mut good, &s);
            good.extend_from_slice(&[9, 9]);
            let mut cases = vec![good.clone()];
            cases.extend((0..good.len()).map(|n| good[..n].to_vec()));
            for i in 0..good.len() {
                for _ in 0..8 {
                    let mut b = good.clone();
                    b[i] = rng.next_u64() as u8;
                    cases.push(b);
                }
            }
            for b in cases {
                let (mut r1, mut r2) = (Reader::new("t", &b), Reader::new("t", &b));
                let full = get_spec(&mut r1);
                let skip = skip_spec(&mut r2);
                match (&full, &skip) {
                    (Ok(f), Ok((name, inc))) => {
                        assert_eq!((f.name.as_str(), f.incarnation), (*name, *inc));
                        assert_eq!(r1.remaining(), r2.remaining());
                    }
                    (Err(_), Err(_)) => {}
                    _ => panic!("{b:?}: {full:?} vs {skip:?}"),
                }
            }
        }
    }
}
