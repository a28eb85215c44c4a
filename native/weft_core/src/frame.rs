//! The wire format: length-prefixed frames, their header and its optional
//! extensions (sequence number, ack, relay origin and destination, trace
//! id, and room for more).
//!
//! # Layout (protocol version 3; all integers big-endian)
//!
//! ```text
//! len: u32 | type: u8 | [extensions, if X] | body
//!
//! type:        X | F F F | K K K K
//!              bit 7 X: an extension block follows
//!              bits 4-6 F: header format, 0 (any other: refused)
//!              bits 0-3 K: frame kind, 0 handshake | 1 data | 2 control
//!                          | 3 parted | 4 part (capability `parts`)
//! extensions:  ext_len: u16 | entries (exactly ext_len bytes, 2..=MAX_EXTENSIONS)
//! entry:       id: u8 | n: 1 or 2 bytes | value (n bytes)
//!              n < 128: one byte n; else two bytes 0x80 | (n & 0x7f), n >> 7
//!              (the second byte 1..=127, so n <= 16383 and there is one
//!              encoding of each n)
//! ```
//!
//! `len` counts everything after itself: the type byte, the extension block
//! and the body. A frame without extensions is therefore exactly the frame
//! of protocol version 2 (`len | kind | body`, 5 bytes of header): plain
//! data frames, most of the traffic, cost nothing more, and the hello keeps
//! its framing, so a node of any version can read a hello and answer with
//! the versions it speaks. With extensions the header is `5 + 2 + ext_len`
//! bytes (a sequence number alone: 10 to 17).
//!
//! Extension entries (ids in strictly increasing order, each at most once):
//!
//! | id | name | value | capability |
//! |---|---|---|---|
//! | `0x01` | sequence number | unsigned, 1..=8 bytes, minimal | [`Capabilities::SEQ_ACK`] |
//! | `0x02` | ack | unsigned, 1..=8 bytes, minimal | [`Capabilities::SEQ_ACK`] |
//! | `0x03` | trace id | 16 bytes | [`Capabilities::TRACE`] |
//! | `0x81` | origin node | node name | [`Capabilities::RELAY`] |
//! | `0x82` | destination node | node name | [`Capabilities::RELAY`] |
//!
//! "Minimal" unsigned: big-endian without leading zero bytes (zero is one
//! byte `0`). Node names are as [`crate::spec::valid_node_name`] checks them:
//! `name@host`, printable ASCII, at most 255 bytes.
//!
//! **Unknown extensions.** Bit 7 of an id marks the extension *critical*: a
//! receiver that does not know a critical id refuses the frame
//! ([`FrameError::UnknownExtension`]), because misreading it would be wrong
//! (a relayed frame taken for a local one). An unknown id without that bit
//! is skipped (counted in [`Extensions::skipped`]): a causal clock, say, can
//! be added later as a new id without another format change, and old
//! receivers ignore it. A sender only sends the extensions of capabilities
//! both ends agreed on in the handshake ([`crate::handshake`]); the
//! transport refuses a frame that carries an extension of a capability not
//! agreed on.
//!
//! **The header is hostile input.** [`decode_header`] checks every length
//! against the bytes present and against the frame (`len`) before anything
//! is allocated, the body length against the caller's limit as soon as the
//! fixed part is there, and it needs the whole header, extensions
//! included, before the body: a receiver knows what a frame is before it
//! reads or allocates its body (large frames are read straight into a
//! buffer of the right size). The header is at most [`MAX_HEADER_LEN`]
//! bytes. Control and handshake bodies are encoded and decoded by
//! [`crate::wire`]; application data bodies are opaque here (the Erlang
//! external term format of `{Destination, Message}`).
//!
//! The decoder is fuzzed (`fuzz/fuzz_targets/frame_header.rs`, body
//! [`fuzzing::header`]; `make fuzz FUZZ_TARGETS=frame_header`) and checked
//! by a seeded generator of valid and mutated headers ([`fuzzing::case`]):
//! valid ones must decode to what was encoded and be
//! [`FrameError::Truncated`] at every shorter length, mutated ones must
//! not panic and hold to what [`fuzzing::header`] checks. The normal
//! `cargo test` runs 20,000 cases; the big run is 1,000,000:
//!
//! ```sh
//! make fuzz-cases     # = cargo test --release -p weft_core --lib \
//!                     #   frame::tests::header_cases_million -- --ignored --nocapture
//! WEFT_HEADER_CASES=10000000 make fuzz-cases                # another count
//! ```
//!
//! # Parted frames (capability `parts`)
//!
//! A data frame whose body is larger than [`PART_BYTES`] may go out in
//! parts (this version parts frames without extensions; a frame with
//! extensions goes whole), so that small frames can go between them on
//! the same connection
//! (as Distributed Erlang fragments large messages since OTP 22): a frame
//! on a shared lane then waits behind at most one part of a large frame in
//! progress, not the whole frame.
//!
//! ```text
//! parted:  len | type 3 | total: u64      the data frame's header; total:
//!                                          its body's length (> PART_BYTES)
//! part:    len | type 4 | bytes           the next 1..=PART_BYTES bytes
//!                                          of the body
//! ```
//!
//! The parts follow the `parted` frame in order, and the message is whole
//! when they have brought `total` bytes. Between them only whole data
//! frames of at most [`INTERLEAVE_MAX`] bytes of body may come; one
//! parted frame at a time per connection, on data lanes only. The
//! extensions of the `parted` frame are the message's; a `part` has none.
//! A receiver refuses anything else ([`Parted`] checks it), and a `parted`
//! or `part` frame from a peer that did not agree on `parts` or on the
//! control lane.
//!
//! # Capabilities
//!
//! What a node understands beyond the plain frame (which header
//! extensions), stated by each side in the
//! handshake, and what the two ends of a connection agreed on
//! ([`Negotiated`]), so that a sender can ask "may I send a relay header to
//! this peer?".

use thiserror::Error;

/// Bytes in a frame header without extensions (and the fixed part of any).
pub const HEADER_LEN: usize = 5;

/// Most bytes of extension entries in one header.
pub const MAX_EXTENSIONS: usize = 16383;

/// Most bytes in a header: the fixed part, the extension length, entries.
pub const MAX_HEADER_LEN: usize = HEADER_LEN + 2 + MAX_EXTENSIONS;

/// Protocol version this node speaks (and writes its hello in). Bump on any
/// wire change.
pub const PROTOCOL_VERSION: u16 = 3;

/// Every protocol version this node speaks, lowest first; the dialer lists
/// them in its hello and a dialer of another version is told this list.
pub const SUPPORTED_VERSIONS: &[u16] = &[PROTOCOL_VERSION];

/// First bytes of every hello, so a stray client is refused at once.
pub const MAGIC: &[u8; 4] = b"WEFT";

/// Bit of the type byte: an extension block follows.
const EXT_BIT: u8 = 0x80;
/// Bits of the type byte that hold the header format.
const FORMAT_BITS: u8 = 0x70;
/// Bits of the type byte that hold the frame kind.
const KIND_BITS: u8 = 0x0f;
/// Bit of an extension id: a receiver that does not know it refuses the
/// frame.
pub const CRITICAL: u8 = 0x80;

/// Extension ids (see the module documentation).
pub mod ext_id {
    /// Sequence number (unsigned, 1-8 bytes).
    pub const SEQ: u8 = 0x01;
    /// Acknowledgement (unsigned, 1-8 bytes).
    pub const ACK: u8 = 0x02;
    /// Trace id (16 bytes).
    pub const TRACE: u8 = 0x03;
    /// Origin node of a relayed frame (a node name; critical).
    pub const ORIGIN: u8 = 0x81;
    /// Destination node of a relayed frame (a node name; critical).
    pub const DESTINATION: u8 = 0x82;
}

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
    /// The header of a data frame whose body follows in parts (capability
    /// `parts`; see the module documentation).
    Parted = 3,
    /// A part of the body of the parted frame in progress.
    Part = 4,
}

/// Why a frame could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The frame claims more bytes than the receiver accepts.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Bytes claimed.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A frame with no type byte.
    #[error("empty frame")]
    Empty,
    /// A kind this version does not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A header format other than 0.
    #[error("unknown frame header format {0}")]
    HeaderFormat(u8),
    /// An extension id with the critical bit that this version does not
    /// know.
    #[error("unknown critical header extension {0:#04x}")]
    UnknownExtension(u8),
    /// Not enough bytes yet: the header needs at least `need` bytes (a
    /// reader waits for them; a whole frame that ends here is malformed).
    #[error("frame header cut short: {need} bytes needed")]
    Truncated {
        /// Bytes the header needs in all.
        need: usize,
    },
    /// A length, count or value out of place.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A handshake of a protocol version this node does not speak.
    #[error("protocol version {theirs} is not supported (this node speaks {ours})")]
    Version {
        /// The version the peer sent.
        theirs: u16,
        /// This node's version.
        ours: u16,
    },
    /// A first frame without the `WEFT` magic: not a weft connection.
    #[error("not a weft connection (bad magic)")]
    BadMagic,
}

fn bad(detail: impl Into<String>) -> FrameError {
    FrameError::Malformed {
        what: "frame header",
        detail: detail.into(),
    }
}

// -------------------------------------------------------------- extensions

/// The extension fields of one frame header; all absent by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// A sequence number (capability `seq_ack`).
    pub seq: Option<u64>,
    /// An acknowledgement (capability `seq_ack`).
    pub ack: Option<u64>,
    /// A trace id (capability `trace`).
    pub trace: Option<[u8; 16]>,
    /// The node that first sent a relayed frame.
    pub origin: Option<String>,
    /// The node a relayed frame is for.
    pub destination: Option<String>,
    /// Unknown, non-critical entries skipped when decoding (never encoded).
    pub skipped: u16,
}

impl Extensions {
    /// No field present (skipped entries aside).
    pub fn is_empty(&self) -> bool {
        self.seq.is_none()
            && self.ack.is_none()
            && self.trace.is_none()
            && self.origin.is_none()
            && self.destination.is_none()
    }
}

/// A decoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// What the frame carries.
    pub kind: FrameKind,
    /// Its header extensions.
    pub ext: Extensions,
    /// Bytes the header took (fixed part and extensions); the body follows.
    pub header_len: usize,
    /// Bytes of the body.
    pub body_len: usize,
}

fn kind_of(k: u8) -> Result<FrameKind, FrameError> {
    match k {
        0 => Ok(FrameKind::Handshake),
        1 => Ok(FrameKind::Data),
        2 => Ok(FrameKind::Control),
        3 => Ok(FrameKind::Parted),
        4 => Ok(FrameKind::Part),
        k => Err(FrameError::UnknownKind(k)),
    }
}

// ----------------------------------------------------------------- encoder

/// The header of a frame of `kind` without extensions whose body has
/// `body_len` bytes: what almost every frame carries.
pub fn header(kind: FrameKind, body_len: usize) -> [u8; HEADER_LEN] {
    debug_assert!(body_len as u64 <= crate::spec::MAX_FRAME_LIMIT);
    let len = (body_len as u32).wrapping_add(1).to_be_bytes();
    [len[0], len[1], len[2], len[3], kind as u8]
}

/// An encoded header: 5 bytes on the stack, or more with extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderBytes {
    /// Without extensions: the 5-byte header.
    Plain([u8; HEADER_LEN]),
    /// With an extension block.
    Extended(Box<[u8]>),
}

impl std::ops::Deref for HeaderBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            HeaderBytes::Plain(h) => h,
            HeaderBytes::Extended(h) => h,
        }
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        out.push(0x80 | (n & 0x7f) as u8);
        out.push((n >> 7) as u8);
    }
}

fn put_entry(out: &mut Vec<u8>, id: u8, value: &[u8]) {
    out.push(id);
    put_len(out, value.len());
    out.extend_from_slice(value);
}

fn put_uint(out: &mut Vec<u8>, id: u8, v: u64) {
    let b = v.to_be_bytes();
    let skip = (v.leading_zeros() / 8).min(7) as usize;
    put_entry(out, id, &b[skip..]);
}

/// The header of a frame of `kind` with extensions `ext` whose body has
/// `body_len` bytes. Without extensions this is [`header`]. Fails on what a
/// receiver would refuse (a bad node name) or what the length field cannot
/// describe.
pub fn encode_header(
    kind: FrameKind,
    body_len: usize,
    ext: &Extensions,
) -> Result<HeaderBytes, FrameError> {
    if ext.is_empty() {
        if body_len as u64 > crate::spec::MAX_FRAME_LIMIT {
            return Err(FrameError::TooLarge {
                size: body_len as u64,
                max: crate::spec::MAX_FRAME_LIMIT,
            });
        }
        return Ok(HeaderBytes::Plain(header(kind, body_len)));
    }
    let mut entries = Vec::with_capacity(32);
    if let Some(s) = ext.seq {
        put_uint(&mut entries, ext_id::SEQ, s);
    }
    if let Some(a) = ext.ack {
        put_uint(&mut entries, ext_id::ACK, a);
    }
    if let Some(t) = &ext.trace {
        put_entry(&mut entries, ext_id::TRACE, t);
    }
    for (id, name) in [
        (ext_id::ORIGIN, &ext.origin),
        (ext_id::DESTINATION, &ext.destination),
    ] {
        if let Some(n) = name {
            if !crate::spec::valid_node_name(n) {
                return Err(bad(format!("bad node name {n:?}")));
            }
            put_entry(&mut entries, id, n.as_bytes());
        }
    }
    debug_assert!(entries.len() <= MAX_EXTENSIONS);
    let len = 1 + 2 + entries.len() as u64 + body_len as u64;
    if len > u64::from(u32::MAX) {
        return Err(FrameError::TooLarge {
            size: body_len as u64,
            max: u64::from(u32::MAX) - 3 - entries.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + 2 + entries.len());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(EXT_BIT | kind as u8);
    out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    out.extend_from_slice(&entries);
    Ok(HeaderBytes::Extended(out.into_boxed_slice()))
}

// ----------------------------------------------------------------- decoder

/// Decode the header at the start of `buf`; `max` bounds the body length
/// (in bytes). Returns the header, with how many bytes it took; the body
/// follows. [`FrameError::Truncated`] when `buf` holds only part of a
/// header that could still be valid: every check that the bytes present
/// allow is made first (length, kind, format, limit, extension length), so
/// a reader never waits for a header that cannot be.
pub fn decode_header(buf: &[u8], max: u64) -> Result<Header, FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Truncated { need: HEADER_LEN });
    }
    let len = u64::from(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let t = buf[4];
    if t & FORMAT_BITS != 0 {
        return Err(FrameError::HeaderFormat((t & FORMAT_BITS) >> 4));
    }
    let kind = kind_of(t & KIND_BITS)?;
    if t & EXT_BIT == 0 {
        let body = len - 1;
        if body > max {
            return Err(FrameError::TooLarge { size: body, max });
        }
        return Ok(Header {
            kind,
            ext: Extensions::default(),
            header_len: HEADER_LEN,
            body_len: body as usize,
        });
    }
    if len < 3 {
        return Err(bad(format!(
            "frame of {len} bytes has no room for extensions"
        )));
    }
    if buf.len() < HEADER_LEN + 2 {
        return Err(FrameError::Truncated {
            need: HEADER_LEN + 2,
        });
    }
    let ext_len = u16::from_be_bytes([buf[5], buf[6]]) as usize;
    if !(2..=MAX_EXTENSIONS).contains(&ext_len) {
        return Err(bad(format!(
            "extensions of {ext_len} bytes (2..={MAX_EXTENSIONS})"
        )));
    }
    if 3 + ext_len as u64 > len {
        return Err(bad(format!(
            "extensions of {ext_len} bytes in a frame of {len}"
        )));
    }
    let body = len - 3 - ext_len as u64;
    if body > max {
        return Err(FrameError::TooLarge { size: body, max });
    }
    let header_len = HEADER_LEN + 2 + ext_len;
    if buf.len() < header_len {
        return Err(FrameError::Truncated { need: header_len });
    }
    let ext = decode_extensions(&buf[HEADER_LEN + 2..header_len])?;
    Ok(Header {
        kind,
        ext,
        header_len,
        body_len: body as usize,
    })
}

/// The entries of an extension block (exactly `b`).
fn decode_extensions(mut b: &[u8]) -> Result<Extensions, FrameError> {
    let mut ext = Extensions::default();
    let mut last: Option<u8> = None;
    while !b.is_empty() {
        let id = b[0];
        let (n, used) = match b.get(1) {
            None => return Err(bad("extension entry cut short")),
            Some(&n) if n < 0x80 => (n as usize, 2),
            Some(&lo) => match b.get(2) {
                Some(&hi) if (1..0x80).contains(&hi) => {
                    ((lo & 0x7f) as usize | (hi as usize) << 7, 3)
                }
                Some(&hi) => return Err(bad(format!("entry length byte {hi:#04x}"))),
                None => return Err(bad("extension entry cut short")),
            },
        };
        if n > b.len() - used {
            return Err(bad(format!(
                "extension {id:#04x} claims {n} bytes, {} present",
                b.len() - used
            )));
        }
        if last.is_some_and(|l| l >= id) {
            return Err(bad(format!("extension {id:#04x} out of order or repeated")));
        }
        last = Some(id);
        let v = &b[used..used + n];
        b = &b[used + n..];
        match id {
            ext_id::SEQ => ext.seq = Some(get_uint(id, v)?),
            ext_id::ACK => ext.ack = Some(get_uint(id, v)?),
            ext_id::TRACE => {
                ext.trace = Some(
                    v.try_into()
                        .map_err(|_| bad(format!("trace id of {n} bytes")))?,
                )
            }
            ext_id::ORIGIN => ext.origin = Some(get_name(v)?),
            ext_id::DESTINATION => ext.destination = Some(get_name(v)?),
            id if id & CRITICAL != 0 => return Err(FrameError::UnknownExtension(id)),
            _ => ext.skipped = ext.skipped.saturating_add(1),
        }
    }
    Ok(ext)
}

fn get_uint(id: u8, v: &[u8]) -> Result<u64, FrameError> {
    if v.is_empty() || v.len() > 8 || (v.len() > 1 && v[0] == 0) {
        return Err(bad(format!(
            "extension {id:#04x}: not a minimal integer ({} bytes)",
            v.len()
        )));
    }
    Ok(v.iter().fold(0u64, |a, &b| a << 8 | u64::from(b)))
}

fn get_name(v: &[u8]) -> Result<String, FrameError> {
    match std::str::from_utf8(v) {
        Ok(s) if crate::spec::valid_node_name(s) => Ok(s.to_string()),
        _ => Err(bad("bad node name")),
    }
}

/// Parse a header that has no extensions (handshake frames, tests): the
/// kind and the body length to read next. A header with extensions is
/// [`FrameError::Truncated`] here (more bytes needed).
pub fn parse_header(h: &[u8; HEADER_LEN], max: u64) -> Result<(FrameKind, usize), FrameError> {
    decode_header(h, max).map(|h| (h.kind, h.body_len))
}

// ---------------------------------------------------------- parted frames

/// Body bytes in each part of a parted frame (the last may have fewer):
/// what a small frame waits behind at most, in the sender's queue, when a
/// large frame is in progress on its connection (0.8 ms on 10 Gbit/s). As
/// large as a writer's batch ([`crate::lane::BATCH_BYTES`]), so parts
/// take no more system calls than a whole frame; and the receiver copies
/// at most the 64 KiB of a part that come with its header, 6 %.
pub const PART_BYTES: usize = 1024 * 1024;

/// The largest body of a frame that may come between the parts of a
/// parted frame. Larger data frames are read into buffers of their own,
/// one at a time per connection.
pub const INTERLEAVE_MAX: usize = 64 * 1024 - 1;

/// Bytes of the body of a `parted` frame (the total, a `u64`).
pub const PARTED_BODY: usize = 8;

/// Whether a data frame of `body_len` bytes goes out in parts when the
/// peer agreed on `parts`.
pub fn is_parted(body_len: usize) -> bool {
    body_len > PART_BYTES
}

/// Where the bytes of a frame of `body_len` bytes sent in parts lie on
/// the wire, for its writer: the `parted` frame, then each part's header
/// and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartedLayout {
    /// Bytes of the message's body.
    pub body_len: usize,
}

impl PartedLayout {
    /// Bytes of the `parted` frame (header and total).
    pub const BEGIN: usize = HEADER_LEN + PARTED_BODY;
    /// Bytes of one whole part on the wire.
    const PART: usize = HEADER_LEN + PART_BYTES;

    /// How many parts.
    pub fn parts(&self) -> usize {
        self.body_len.div_ceil(PART_BYTES)
    }

    /// Every byte on the wire.
    pub fn wire_len(&self) -> usize {
        Self::BEGIN + self.body_len + self.parts() * HEADER_LEN
    }

    /// Whether wire offset `sent` (0 < sent < wire_len) is between two
    /// frames: after the `parted` frame or after a part.
    pub fn at_boundary(&self, sent: usize) -> bool {
        sent >= Self::BEGIN
            && sent < self.wire_len()
            && (sent - Self::BEGIN).is_multiple_of(Self::PART)
    }

    /// The end of the part that wire offset `sent` is in (the `parted`
    /// frame counts with the first part), or of the frame: where a writer
    /// stops so that other frames may go next.
    pub fn next_boundary(&self, sent: usize) -> usize {
        let k = sent.saturating_sub(Self::BEGIN) / Self::PART + 1;
        (Self::BEGIN + k * Self::PART).min(self.wire_len())
    }

    /// The `parted` frame: its header and the total.
    pub fn begin(&self) -> [u8; Self::BEGIN] {
        let mut b = [0; Self::BEGIN];
        b[..HEADER_LEN].copy_from_slice(&header(FrameKind::Parted, PARTED_BODY));
        b[HEADER_LEN..].copy_from_slice(&(self.body_len as u64).to_be_bytes());
        b
    }

    /// The header of a whole part.
    pub fn part_header(&self) -> [u8; HEADER_LEN] {
        header(FrameKind::Part, PART_BYTES)
    }

    /// The header of the last part.
    pub fn last_part_header(&self) -> [u8; HEADER_LEN] {
        header(
            FrameKind::Part,
            self.body_len - (self.parts() - 1) * PART_BYTES,
        )
    }

    /// Where wire offset `sent` (< [`PartedLayout::wire_len`]) lies.
    pub fn locate(&self, sent: usize) -> Located {
        if sent < Self::BEGIN {
            return Located::Begin(sent);
        }
        let rel = sent - Self::BEGIN;
        let (k, within) = (rel / Self::PART, rel % Self::PART);
        let part_len = (self.body_len - k * PART_BYTES).min(PART_BYTES);
        if within < HEADER_LEN {
            Located::PartHeader {
                last: k + 1 == self.parts(),
                at: within,
            }
        } else {
            let off = within - HEADER_LEN;
            Located::Body {
                at: k * PART_BYTES + off,
                left_in_part: part_len - off,
            }
        }
    }
}

/// Where a wire offset of a parted frame lies ([`PartedLayout::locate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located {
    /// In the `parted` frame, at this byte.
    Begin(usize),
    /// In a part's header (the last part's, or another's), at this byte.
    PartHeader {
        /// The last part.
        last: bool,
        /// Byte within the header.
        at: usize,
    },
    /// In a part's bytes: body offset, and body bytes left in this part.
    Body {
        /// Offset in the body.
        at: usize,
        /// Bytes of the body to the end of the part.
        left_in_part: usize,
    },
}

/// The receiving side of parted frames on one connection: checks that
/// parts come as the sender must send them. Pure bookkeeping; the reader
/// holds the buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parted {
    /// The parted frame in progress: body bytes expected in all, and
    /// received so far.
    open: Option<(usize, usize)>,
}

impl Parted {
    /// A `parted` frame with body `body` (exactly [`PARTED_BODY`] bytes
    /// expected) and limit `max`: the total of the message to come.
    pub fn begin(&mut self, body: &[u8], max: u64) -> Result<usize, FrameError> {
        if self.open.is_some() {
            return Err(parted_bad("a parted frame inside another"));
        }
        let total: [u8; PARTED_BODY] = body
            .try_into()
            .map_err(|_| parted_bad(format!("parted frame body of {} bytes", body.len())))?;
        let total = u64::from_be_bytes(total);
        if total > max {
            return Err(FrameError::TooLarge { size: total, max });
        }
        if total as usize <= PART_BYTES {
            return Err(parted_bad(format!("parted frame of {total} bytes")));
        }
        self.open = Some((total as usize, 0));
        Ok(total as usize)
    }

    /// A part of `len` bytes comes: `Ok(true)` when it completes the
    /// message.
    pub fn part(&mut self, len: usize) -> Result<bool, FrameError> {
        let Some((total, got)) = &mut self.open else {
            return Err(parted_bad("a part without a parted frame"));
        };
        if len == 0 || len > PART_BYTES || len > *total - *got {
            return Err(parted_bad(format!(
                "part of {len} bytes with {} of {total} to come",
                *total - *got
            )));
        }
        *got += len;
        if *got == *total {
            self.open = None;
            return Ok(true);
        }
        Ok(false)
    }

    /// A whole frame of `kind` and `len` bytes comes while a parted frame
    /// may be in progress: only a data frame of at most
    /// [`INTERLEAVE_MAX`] bytes may.
    pub fn between(&self, kind: FrameKind, len: usize) -> Result<(), FrameError> {
        if self.open.is_some() && (kind != FrameKind::Data || len > INTERLEAVE_MAX) {
            return Err(parted_bad(format!(
                "a {kind:?} frame of {len} bytes between parts"
            )));
        }
        Ok(())
    }

    /// Whether a parted frame is in progress.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }
}

fn parted_bad(detail: impl Into<String>) -> FrameError {
    FrameError::Malformed {
        what: "parted frame",
        detail: detail.into(),
    }
}

// ------------------------------------------------------------ capabilities

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
    /// Parted frames (frame kinds 3 and 4).
    pub const PARTS: Capabilities = Capabilities(8);
    /// The shared lane: fences on data lanes (see [`crate::share`]).
    pub const SHARE: Capabilities = Capabilities(16);
    /// The shared lane's waits: a lane leaving the shared lane sends a
    /// wait on its own connection instead of holding its frames (see
    /// [`crate::share`]).
    pub const SHARE_WAIT: Capabilities = Capabilities(32);
    /// The full mesh's join check: a node answers a member's check on its
    /// control lane (see [`crate::membership::full_mesh`]). Without it
    /// (a node of an earlier build) a join counts as confirmed when the
    /// contact's control lane is up.
    pub const JOIN_CHECK: Capabilities = Capabilities(64);
    /// Signed refusals: an acceptor that refuses a dialer after the
    /// dialer's proof signs the refusal with the cookie (see
    /// [`crate::handshake`]). The dialer acts on a refusal that changes
    /// membership (`left`, `detached`) only when it is signed.
    pub const SIGNED_REFUSAL: Capabilities = Capabilities(128);
    /// What this node understands.
    pub const SUPPORTED: Capabilities = Capabilities(1 | 2 | 4 | 8 | 16 | 32 | 64 | 128);

    const NAMES: [(Capabilities, &'static str); 8] = [
        (Capabilities::SEQ_ACK, "seq_ack"),
        (Capabilities::RELAY, "relay"),
        (Capabilities::TRACE, "trace"),
        (Capabilities::PARTS, "parts"),
        (Capabilities::SHARE, "share"),
        (Capabilities::SHARE_WAIT, "share_wait"),
        (Capabilities::JOIN_CHECK, "join_check"),
        (Capabilities::SIGNED_REFUSAL, "signed_refusal"),
    ];

    /// Both sets.
    pub fn intersect(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }

    /// This set without the capabilities of `other`.
    pub fn without(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & !other.0)
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

/// Which capabilities a header's extensions need.
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

/// Fuzzing and generated cases for the header decoder, shared by the fuzz
/// target (`fuzz/fuzz_targets/frame_header.rs`), the corpus replay test
/// (`tests/corpus.rs`) and the case tests below.
#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of a frame in parts: lengths, boundaries, where each
    /// offset lies, and the bytes of the parted frame and part headers
    /// that a receiver's checks ([`Parted`]) accept.
    #[test]
    fn parted_layout_and_its_checks_agree() {
        for body_len in [PART_BYTES + 1, 2 * PART_BYTES, 3 * PART_BYTES + 7] {
            let l = PartedLayout { body_len };
            let parts = body_len.div_ceil(PART_BYTES);
            assert_eq!(l.parts(), parts);
            assert_eq!(
                l.wire_len(),
                PartedLayout::BEGIN + body_len + parts * HEADER_LEN
            );
            // boundaries: after the parted frame and after each part but
            // the last
            let bounds: Vec<usize> = (1..l.wire_len()).filter(|s| l.at_boundary(*s)).collect();
            let want: Vec<usize> = (0..parts)
                .map(|k| PartedLayout::BEGIN + k * (HEADER_LEN + PART_BYTES))
                .collect();
            assert_eq!(bounds, want);
            // a writer stops at the end of each part
            assert_eq!(
                l.next_boundary(0),
                want.get(1).copied().unwrap_or(l.wire_len())
            );
            assert_eq!(l.next_boundary(want[parts - 1]), l.wire_len());
            // the parted frame decodes as a header and an 8-byte total
            let begin = l.begin();
            let h = decode_header(&begin, 8).unwrap();
            assert_eq!(
                (h.kind, h.body_len, h.header_len),
                (FrameKind::Parted, PARTED_BODY, HEADER_LEN)
            );
            let mut p = Parted::default();
            assert_eq!(p.begin(&begin[HEADER_LEN..], u64::MAX), Ok(body_len));
            // every part header as it is laid out, and the body offsets
            let mut body_seen = 0;
            for k in 0..parts {
                let at = PartedLayout::BEGIN + k * (HEADER_LEN + PART_BYTES);
                let last = k + 1 == parts;
                assert_eq!(l.locate(at), Located::PartHeader { last, at: 0 });
                let hdr = if last {
                    l.last_part_header()
                } else {
                    l.part_header()
                };
                let (kind, len) = parse_header(&hdr, u64::MAX).unwrap();
                assert_eq!(kind, FrameKind::Part);
                assert_eq!(
                    l.locate(at + HEADER_LEN),
                    Located::Body {
                        at: body_seen,
                        left_in_part: len
                    }
                );
                body_seen += len;
                assert_eq!(p.part(len), Ok(last));
            }
            assert_eq!(body_seen, body_len);
            assert!(!p.is_open());
        }
        // what a receiver refuses
        let mut p = Parted::default();
        assert!(p.part(1).is_err());
        assert!(p
            .begin(&(PART_BYTES as u64).to_be_bytes(), u64::MAX)
            .is_err());
        assert!(p.begin(&[0; 7], u64::MAX).is_err());
        assert!(matches!(
            p.begin(&(1u64 << 40).to_be_bytes(), 1 << 30),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(
            p.begin(&(PART_BYTES as u64 + 2).to_be_bytes(), u64::MAX),
            Ok(PART_BYTES + 2)
        );
        assert!(p
            .begin(&(PART_BYTES as u64 + 2).to_be_bytes(), u64::MAX)
            .is_err());
        assert!(p.between(FrameKind::Data, INTERLEAVE_MAX).is_ok());
        assert!(p.between(FrameKind::Control, 1).is_err());
        assert!(p.between(FrameKind::Data, INTERLEAVE_MAX + 1).is_err());
        assert!(p.part(0).is_err());
        assert!(p.part(PART_BYTES + 1).is_err());
        assert_eq!(p.part(PART_BYTES), Ok(false));
        assert_eq!(p.part(2), Ok(true));
        assert!(p.between(FrameKind::Data, 1 << 20).is_ok());
    }

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
        assert_eq!(
            parse_header(&[0, 0, 0, 1, 0x31], 10),
            Err(FrameError::HeaderFormat(3))
        );
    }

    /// Protocol 2's frames are protocol 3's frames without extensions.
    #[test]
    fn plain_frames_cost_nothing_more() {
        assert_eq!(
            encode_header(FrameKind::Data, 100, &Extensions::default()).unwrap(),
            HeaderBytes::Plain([0, 0, 0, 101, 1])
        );
        let e = Extensions {
            seq: Some(5),
            ..Default::default()
        };
        let h = encode_header(FrameKind::Data, 100, &e).unwrap();
        // len (1 + 2 + 3 + 100) | X + data | ext_len 3 | seq, 1 byte, 5
        assert_eq!(&*h, &[0, 0, 0, 106, 0x81, 0, 3, 1, 1, 5]);
    }

    fn all() -> Extensions {
        Extensions {
            seq: Some(0),
            ack: Some(u64::MAX),
            trace: Some([7; 16]),
            origin: Some("a@h".into()),
            destination: Some(format!("{}@h", "d".repeat(253))),
            skipped: 0,
        }
    }

    #[test]
    fn extensions_round_trip_and_every_truncation_is_truncated() {
        let mut cases = vec![all(), Extensions::default()];
        for f in 0..5 {
            let mut e = Extensions::default();
            let a = all();
            match f {
                0 => e.seq = Some(300),
                1 => e.ack = a.ack,
                2 => e.trace = a.trace,
                3 => e.origin = a.origin,
                _ => e.destination = a.destination,
            }
            cases.push(e);
        }
        for e in cases {
            for (kind, body) in [(FrameKind::Data, 0), (FrameKind::Control, 70_000)] {
                let h = encode_header(kind, body, &e).unwrap();
                let got = decode_header(&h, 1 << 20).unwrap();
                assert_eq!(got.ext, e);
                assert_eq!(
                    (got.kind, got.body_len, got.header_len),
                    (kind, body, h.len())
                );
                for cut in 0..h.len() {
                    assert!(
                        matches!(
                            decode_header(&h[..cut], 1 << 20),
                            Err(FrameError::Truncated { need }) if need > cut
                        ),
                        "{e:?} cut at {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn entry_lengths_use_one_or_two_bytes() {
        let e = Extensions {
            destination: Some(format!("{}@h", "d".repeat(200))),
            ..Default::default()
        };
        let h = encode_header(FrameKind::Data, 0, &e).unwrap();
        // 202 bytes: 0x80 | (202 & 0x7f), 202 >> 7
        assert_eq!(&h[7..10], &[0x82, 0xca, 0x01]);
        // a non-minimal length (second byte 0) is refused
        let mut b = h.to_vec();
        b[9] = 0;
        assert!(decode_header(&b, 1 << 20).is_err());
    }

    /// The header is hostile input: no claimed length is trusted.
    #[test]
    fn hostile_headers_are_refused() {
        let refuse = |b: &[u8]| {
            let r = decode_header(b, 1 << 20);
            assert!(
                matches!(
                    r,
                    Err(FrameError::Malformed { .. }
                        | FrameError::TooLarge { .. }
                        | FrameError::UnknownExtension(_))
                ),
                "{b:?}: {r:?}"
            );
        };
        // extensions longer than the frame
        refuse(&[0, 0, 0, 4, 0x81, 0, 3, 1, 1, 5]);
        // extension block longer than the limit / empty
        refuse(&[0, 0, 0xff, 0xff, 0x81, 0xff, 0xff]);
        refuse(&[0, 0, 0, 9, 0x81, 0, 0]);
        refuse(&[0, 0, 0, 2, 0x81]);
        // an entry claiming more than the block holds
        refuse(&[0, 0, 0, 9, 0x81, 0, 3, 1, 5, 5]);
        refuse(&[0, 0, 0, 9, 0x81, 0, 3, 1, 0xff, 0x7f]);
        // a body over the limit, found from the first 7 bytes
        refuse(&[0x10, 0, 0, 0, 0x81, 0, 3]);
        // non-minimal and too long integers, a short trace id
        refuse(&[0, 0, 0, 7, 0x81, 0, 4, 1, 2, 0, 5]);
        refuse(&[0, 0, 0, 14, 0x81, 0, 11, 1, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        refuse(&[0, 0, 0, 6, 0x81, 0, 3, 3, 1, 5]);
        // repeated and out-of-order entries
        refuse(&[0, 0, 0, 9, 0x81, 0, 6, 1, 1, 5, 1, 1, 6]);
        refuse(&[0, 0, 0, 9, 0x81, 0, 6, 2, 1, 5, 1, 1, 6]);
        // node names: not name@host, not printable
        refuse(&[0, 0, 0, 8, 0x81, 0, 5, 0x81, 3, b'a', b'b', b'c']);
        refuse(&[0, 0, 0, 8, 0x81, 0, 5, 0x81, 3, b'a', b'@', 0]);
        // an unknown critical entry; an unknown other one is skipped
        refuse(&[0, 0, 0, 6, 0x81, 0, 3, 0x90, 1, 0]);
        let h = decode_header(&[0, 0, 0, 6, 0x81, 0, 3, 0x10, 1, 0], 10).unwrap();
        assert_eq!((h.ext.skipped, h.header_len, h.body_len), (1, 10, 0));
        assert!(h.ext.is_empty());
    }

    #[test]
    fn bad_names_are_not_encoded() {
        let e = Extensions {
            origin: Some("no-at-sign".into()),
            ..Default::default()
        };
        assert!(encode_header(FrameKind::Data, 1, &e).is_err());
    }

    /// Run `n` generated cases and say how long they took.
    fn run_cases(n: u64) {
        let t = std::time::Instant::now();
        let valid = fuzzing::cases(n);
        eprintln!(
            "header cases: {n} ({valid} valid headers) in {:.2?}",
            t.elapsed()
        );
        assert!(valid > n / 8, "{valid} valid headers of {n}");
    }

    /// Generated cases (see [`fuzzing::case`]), a few for every run.
    #[test]
    fn header_cases() {
        run_cases(20_000);
    }

    /// The big run, `make fuzz-cases`: 1,000,000 cases unless
    /// `WEFT_HEADER_CASES` says how many.
    #[test]
    #[ignore]
    fn header_cases_million() {
        let n = std::env::var("WEFT_HEADER_CASES")
            .ok()
            .and_then(|s| s.parse().ok());
        run_cases(n.unwrap_or(1_000_000));
    }
}

#[cfg(test)]
mod capability_tests {
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
