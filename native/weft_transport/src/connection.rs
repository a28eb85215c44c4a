//! Framing over a socket: read and write whole frames.
//!
//! Reads check the frame size limit on the header, before allocating, so an
//! oversized frame costs nothing but the connection it came on. The header
//! (with its extensions, if any) is decoded by [`weft_core::frame`].

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weft_core::frame::{decode_header, header, FrameError, FrameKind, Header, HEADER_LEN};

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

/// Read a header: the fixed part, then as many more bytes as the decoder
/// asks for (each request checked by it first, at most
/// [`weft_core::frame::MAX_HEADER_LEN`] in all).
async fn read_header<R: AsyncRead + Unpin>(r: &mut R, max: u64) -> Result<Header, ReadError> {
    let mut h = vec![0u8; HEADER_LEN];
    let mut at = 0;
    loop {
        if let Err(e) = r.read_exact(&mut h[at..]).await {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                ReadError::Eof
            } else {
                ReadError::Io(e)
            });
        }
        match decode_header(&h, max) {
            Err(FrameError::Truncated { need }) => {
                at = h.len();
                h.resize(need, 0);
            }
            other => return Ok(other?),
        }
    }
}

/// Read one frame; `max` bounds its body. The body's memory grows with the
/// bytes that actually arrive, not with the length the header claims, so a
/// peer that announces a large frame and sends little costs little.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u64,
) -> Result<(Header, Vec<u8>), ReadError> {
    let h = read_header(r, max).await?;
    let len = h.body_len;
    let mut body = Vec::with_capacity(len.min(4096));
    (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(ReadError::Eof);
    }
    Ok((h, body))
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
        let (h, body) = read_frame(&mut b, 1000).await.unwrap();
        assert_eq!((h.kind, body.as_slice()), (FrameKind::Data, &b"hello"[..]));
        let (h, body) = read_frame(&mut b, 1000).await.unwrap();
        assert_eq!((h.kind, body.len()), (FrameKind::Control, 0));
        match read_frame(&mut b, 50).await {
            Err(ReadError::Frame(FrameError::TooLarge { size: 100, max: 50 })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn headers_with_extensions_are_read_whole() {
        use tokio::io::AsyncWriteExt;
        use weft_core::frame::{encode_header, Extensions};
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let ext = Extensions {
            seq: Some(1 << 40),
            origin: Some("a@h".into()),
            ..Default::default()
        };
        let h = encode_header(FrameKind::Data, 3, &ext).unwrap();
        a.write_all(&h).await.unwrap();
        a.write_all(b"abc").await.unwrap();
        // a header claiming more extensions than its frame holds
        a.write_all(&[0, 0, 0, 4, 0x81, 0, 9]).await.unwrap();
        drop(a);
        let (got, body) = read_frame(&mut b, 1000).await.unwrap();
        assert_eq!(
            (got.ext, got.header_len, body),
            (ext, h.len(), b"abc".to_vec())
        );
        assert!(matches!(
            read_frame(&mut b, 1000).await,
            Err(ReadError::Frame(FrameError::Malformed { .. }))
        ));
    }

    #[tokio::test]
    async fn eof_is_reported_as_such() {
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(matches!(read_frame(&mut b, 10).await, Err(ReadError::Eof)));
    }
}
