//! The wire format: length-prefixed frames and the messages inside them.
//!
//! Every frame is `len: u32 (big endian) | kind: u8 | body`, where `len`
//! counts the kind byte and the body. A receiver reads the 5-byte header,
//! checks `len` against its frame size limit *before* allocating, then reads
//! the body. Application data bodies are opaque here (the Erlang external
//! term format of `{Destination, Message}`); control and handshake bodies are
//! encoded and decoded by [`crate::wire`].

use thiserror::Error;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 5;

/// Protocol version carried in every hello. Bump on any wire change.
pub const PROTOCOL_VERSION: u16 = 2;

/// Every protocol version this node speaks (a dialer of another version is
/// told this list).
pub const SUPPORTED_VERSIONS: &[u16] = &[PROTOCOL_VERSION];

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
    debug_assert!(body_len as u64 <= crate::spec::MAX_FRAME_LIMIT);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
