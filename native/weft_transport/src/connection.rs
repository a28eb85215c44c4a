//! Framing over a socket: read and write whole frames.
//!
//! Reads check the frame size limit on the header, before allocating, so an
//! oversized frame costs nothing but the connection it came on.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weft_core::frame::{header, parse_header, FrameError, FrameKind, HEADER_LEN};

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Eof,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Application frames of at least this many bytes are read into a buffer
/// that the sink provides ([`Sink::frame_buffer`]), see [`crate::reader`].
///
/// [`Sink::frame_buffer`]: crate::sink::Sink::frame_buffer
pub const LARGE_FRAME: usize = 64 * 1024;

async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u64,
) -> Result<(FrameKind, usize), ReadError> {
    let mut h = [0u8; HEADER_LEN];
    if let Err(e) = r.read_exact(&mut h).await {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Eof
        } else {
            ReadError::Io(e)
        });
    }
    Ok(parse_header(&h, max)?)
}

/// Read one frame; `max` bounds its body. The body's memory grows with the
/// bytes that actually arrive, not with the length the header claims, so a
/// peer that announces a large frame and sends little costs little.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u64,
) -> Result<(FrameKind, Vec<u8>), ReadError> {
    let (kind, len) = read_header(r, max).await?;
    let mut body = Vec::with_capacity(len.min(4096));
    (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(ReadError::Eof);
    }
    Ok((kind, body))
}

/// Write one frame (not flushed).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: FrameKind,
    body: &[u8],
) -> io::Result<()> {
    w.write_all(&header(kind, body.len())).await?;
    w.write_all(body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_limit_is_enforced() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, FrameKind::Data, b"hello")
            .await
            .unwrap();
        write_frame(&mut a, FrameKind::Control, b"").await.unwrap();
        write_frame(&mut a, FrameKind::Data, &[7u8; 100])
            .await
            .unwrap();
        drop(a);
        let (k, body) = read_frame(&mut b, 1000).await.unwrap();
        assert_eq!((k, body.as_slice()), (FrameKind::Data, &b"hello"[..]));
        let (k, body) = read_frame(&mut b, 1000).await.unwrap();
        assert_eq!((k, body.len()), (FrameKind::Control, 0));
        match read_frame(&mut b, 50).await {
            Err(ReadError::Frame(FrameError::TooLarge { size: 100, max: 50 })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn eof_is_reported_as_such() {
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(matches!(read_frame(&mut b, 10).await, Err(ReadError::Eof)));
    }
}
