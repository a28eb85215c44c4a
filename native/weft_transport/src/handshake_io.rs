//! The handshake over a fresh socket, both roles: the I/O around the
//! sans-IO machines of [`weft_core::handshake`].
//!
//! Dialer: `Hello` -> `Challenge` -> `Auth` (our proof) -> `Welcome` (their
//! proof) | `Refuse`. Acceptor: `Hello` -> `Challenge` -> `Auth` (checked:
//! only then does it say who it is) -> the driver decides (membership,
//! collisions) and the caller answers with [`Accepted::answer`]. No
//! application frame is read before both proofs check out, so a wrong cookie
//! never delivers anything. Both sides come out with what the handshake
//! [`Negotiated`] (protocol version and common capabilities), which the
//! connection keeps ([`crate::conn::Conn::negotiated`]).
//!
//! The handshake reads and writes whole frames with the async
//! [`read_frame`] and [`write_frame`] (on a tokio socket, before the
//! connection is handed to a poller). Reads check the frame size limit on
//! the header, before allocating, so an oversized frame costs nothing but
//! the connection it came on. Established connections are read by
//! [`crate::frame_reader`] instead.

use crate::frame_reader::ReadError;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use weft_core::frame::{decode_header, header, FrameError, Header, HEADER_LEN};
pub use weft_core::handshake::HandshakeError as Failure;
use weft_core::handshake::{Acceptor, AcceptorStep, Dialer, DialerStep};
use weft_core::{Capabilities, FrameKind, LaneKey, Negotiated, NodeSpec, Refusal};

/// How long each step of a handshake may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshake frames are small (a node spec with at most 256 channels);
/// anything bigger is not a weft peer.
pub const MAX_HANDSHAKE_FRAME: u64 = 128 * 1024;
/// The first frame of an incoming connection (a hello: magic, version, a
/// nonce, at most 32 versions and the capabilities: at most 112 bytes, with
/// room for later versions) is far smaller still.
pub const MAX_FIRST_FRAME: u64 = 256;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("cannot connect to any of {0:?}: {1}")]
    Connect(Vec<SocketAddr>, String),
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Handshake(Failure),
    #[error("not a handshake frame")]
    NotHandshake,
}

impl HandshakeError {
    /// The refusal, whichever side made it.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            HandshakeError::Handshake(f) => f.refusal(),
            _ => None,
        }
    }
}

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

async fn send(s: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    write_frame(s, FrameKind::Handshake, body).await?;
    s.flush().await
}

async fn recv(s: &mut TcpStream) -> Result<Vec<u8>, HandshakeError> {
    recv_at_most(s, MAX_HANDSHAKE_FRAME).await
}

async fn recv_at_most(s: &mut TcpStream, max: u64) -> Result<Vec<u8>, HandshakeError> {
    let (header, body) = timeout(STEP_TIMEOUT, read_frame(s, max))
        .await
        .map_err(|_| HandshakeError::Timeout)??;
    // Nothing was negotiated yet: a handshake frame carries no extensions.
    if header.kind != FrameKind::Handshake || header.header_len != HEADER_LEN {
        return Err(HandshakeError::NotHandshake);
    }
    Ok(body)
}

/// Send what a failed machine wants said, then report the failure.
async fn fail(s: &mut TcpStream, f: Failure) -> HandshakeError {
    if let Some(t) = f.tell() {
        let _ = timeout(STEP_TIMEOUT, send(s, t)).await;
    }
    HandshakeError::Handshake(f)
}

/// 32 bytes from the OS.
pub fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    getrandom::getrandom(&mut n).expect("OS randomness");
    n
}

/// Connect to the first reachable of `addrs`.
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, HandshakeError> {
    let mut last = String::from("no address");
    for a in addrs {
        match timeout(STEP_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "connect timed out".into(),
        }
    }
    Err(HandshakeError::Connect(addrs.to_vec(), last))
}

/// Dial `peer` for `lane` and authenticate, offering `caps`. Returns the
/// socket, the acceptor's spec and what the two negotiated once it said
/// welcome and proved the cookie.
pub async fn dial(
    local: &NodeSpec,
    cookie: &[u8],
    caps: Capabilities,
    peer: &str,
    addrs: &[SocketAddr],
    lane: &LaneKey,
) -> Result<(TcpStream, NodeSpec, Negotiated), HandshakeError> {
    let mut s = connect(addrs).await?;
    let (mut d, hello) = Dialer::new(cookie, local.clone(), peer, lane.clone(), caps, nonce());
    send(&mut s, &hello).await?;
    loop {
        let body = recv(&mut s).await?;
        match d.on_frame(&body) {
            Ok(DialerStep::Send(b)) => send(&mut s, &b).await?,
            Ok(DialerStep::Done(acceptor, negotiated)) => return Ok((s, acceptor, negotiated)),
            Err(f) => return Err(fail(&mut s, f).await),
        }
    }
}

/// An incoming connection whose dialer proved the cookie.
pub struct Accepted {
    pub socket: TcpStream,
    pub dialer: NodeSpec,
    pub lane: LaneKey,
    pub negotiated: Negotiated,
    acceptor: Acceptor,
}

impl Accepted {
    /// Tell the dialer the verdict: welcome (with our proof) or the reason.
    pub async fn answer(
        &mut self,
        local: &NodeSpec,
        verdict: &Result<(), Refusal>,
    ) -> std::io::Result<()> {
        let body = match verdict {
            Ok(()) => self.acceptor.welcome(local),
            Err(r) => self.acceptor.refuse(r.clone()),
        };
        timeout(STEP_TIMEOUT, send(&mut self.socket, &body))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }
}

/// Acceptor side up to the verified proof, offering `caps`. `lane_ok` says
/// whether a lane exists on this node. On error the dialer has been told
/// what it may know.
pub async fn accept(
    mut s: TcpStream,
    local: &NodeSpec,
    cookie: &[u8],
    caps: Capabilities,
    lane_ok: impl Fn(&LaneKey) -> bool,
) -> Result<Accepted, HandshakeError> {
    let mut a = Acceptor::new(cookie, caps, nonce());
    let mut first = true;
    loop {
        let max = if first {
            MAX_FIRST_FRAME
        } else {
            MAX_HANDSHAKE_FRAME
        };
        first = false;
        let body = recv_at_most(&mut s, max).await?;
        match a.on_frame(&body, local, &lane_ok) {
            Ok(AcceptorStep::Send(b)) => send(&mut s, &b).await?,
            Ok(AcceptorStep::Authenticated {
                dialer,
                lane,
                negotiated,
            }) => {
                return Ok(Accepted {
                    socket: s,
                    dialer,
                    lane,
                    negotiated,
                    acceptor: a,
                })
            }
            Err(f) => return Err(fail(&mut s, f).await),
        }
    }
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
