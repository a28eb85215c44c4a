//! The handshake over a fresh socket, both roles.
//!
//! Dialer: `Hello` -> (`Challenge`: check the acceptor's name and proof) ->
//! `Auth` -> `Welcome` | `Refuse`. Acceptor: read `Hello` (magic, version,
//! addressed to us, known lane) -> `Challenge` -> read `Auth` (check proof);
//! then the driver decides (membership, collisions) and the caller answers
//! `Welcome` or `Refuse`. No application frame is read before the proofs
//! check out, so a wrong cookie never delivers anything.

use crate::connection::{read_frame, write_frame, ReadError};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use weft_core::frame::{decode_handshake, encode_handshake};
use weft_core::handshake::{prove, verify, Role, Transcript};
use weft_core::{FrameKind, Handshake, LaneKey, NodeSpec, Refusal};

/// How long each step of a handshake may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshake frames are small; anything bigger is not a weft peer.
const MAX_HANDSHAKE_FRAME: u64 = 64 * 1024;

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
    #[error("unexpected handshake message")]
    Protocol,
    #[error("refused by peer: {0}")]
    Refused(Refusal),
    #[error("refused: {0}")]
    Refusing(Refusal),
}

async fn send(s: &mut TcpStream, h: &Handshake) -> std::io::Result<()> {
    write_frame(s, FrameKind::Handshake, &encode_handshake(h)).await?;
    s.flush().await
}

async fn recv(s: &mut TcpStream) -> Result<Handshake, HandshakeError> {
    let (kind, body) = timeout(STEP_TIMEOUT, read_frame(s, MAX_HANDSHAKE_FRAME))
        .await
        .map_err(|_| HandshakeError::Timeout)??;
    if kind != FrameKind::Handshake {
        return Err(HandshakeError::Protocol);
    }
    decode_handshake(&body).map_err(|e| HandshakeError::Read(ReadError::Frame(e)))
}

fn nonce() -> [u8; 32] {
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

/// Dial `peer` for `lane` and authenticate. Returns the socket and the
/// acceptor's spec once it said welcome.
pub async fn dial(
    local: &NodeSpec,
    cookie: &[u8],
    peer: &str,
    addrs: &[SocketAddr],
    lane: &LaneKey,
) -> Result<(TcpStream, NodeSpec), HandshakeError> {
    let mut s = connect(addrs).await?;
    let mine = nonce();
    send(
        &mut s,
        &Handshake::Hello {
            from: local.clone(),
            to: peer.to_string(),
            lane: lane.clone(),
            nonce: mine,
        },
    )
    .await?;
    let (acceptor, theirs) = match recv(&mut s).await? {
        Handshake::Challenge { from, nonce, proof } => {
            if from.name != peer {
                let r = Refusal::UnexpectedNode {
                    expected: peer.to_string(),
                    actual: from.name,
                };
                let _ = send(&mut s, &Handshake::Refuse(r.clone())).await;
                return Err(HandshakeError::Refusing(r));
            }
            let t = Transcript {
                dialer: &local.name,
                acceptor: peer,
                lane,
                dialer_nonce: &mine,
                acceptor_nonce: &nonce,
            };
            if !verify(cookie, Role::Acceptor, &t, &proof) {
                let _ = send(&mut s, &Handshake::Refuse(Refusal::BadCookie)).await;
                return Err(HandshakeError::Refusing(Refusal::BadCookie));
            }
            (from, nonce)
        }
        Handshake::Refuse(r) => return Err(HandshakeError::Refused(r)),
        _ => return Err(HandshakeError::Protocol),
    };
    let t = Transcript {
        dialer: &local.name,
        acceptor: peer,
        lane,
        dialer_nonce: &mine,
        acceptor_nonce: &theirs,
    };
    send(
        &mut s,
        &Handshake::Auth {
            proof: prove(cookie, Role::Dialer, &t),
        },
    )
    .await?;
    match recv(&mut s).await? {
        Handshake::Welcome => Ok((s, acceptor)),
        Handshake::Refuse(r) => Err(HandshakeError::Refused(r)),
        _ => Err(HandshakeError::Protocol),
    }
}

/// Acceptor side up to the verified proof. `lanes_ok` says whether a lane
/// exists on this node. On error the dialer has been told why, when it
/// could be.
pub async fn accept(
    s: &mut TcpStream,
    local: &NodeSpec,
    cookie: &[u8],
    lane_ok: impl Fn(&LaneKey) -> bool,
) -> Result<(NodeSpec, LaneKey), HandshakeError> {
    let (from, to, lane, theirs) = match recv(s).await? {
        Handshake::Hello {
            from,
            to,
            lane,
            nonce,
        } => (from, to, lane, nonce),
        _ => return Err(HandshakeError::Protocol),
    };
    let refusal = if to != local.name {
        Some(Refusal::UnexpectedNode {
            expected: to,
            actual: local.name.clone(),
        })
    } else if !lane_ok(&lane) {
        Some(Refusal::UnknownLane)
    } else {
        None
    };
    if let Some(r) = refusal {
        let _ = send(s, &Handshake::Refuse(r.clone())).await;
        return Err(HandshakeError::Refusing(r));
    }
    let mine = nonce();
    let t = Transcript {
        dialer: &from.name,
        acceptor: &local.name,
        lane: &lane,
        dialer_nonce: &theirs,
        acceptor_nonce: &mine,
    };
    send(
        s,
        &Handshake::Challenge {
            from: local.clone(),
            nonce: mine,
            proof: prove(cookie, Role::Acceptor, &t),
        },
    )
    .await?;
    match recv(s).await? {
        Handshake::Auth { proof } if verify(cookie, Role::Dialer, &t, &proof) => Ok((from, lane)),
        Handshake::Auth { .. } => {
            let _ = send(s, &Handshake::Refuse(Refusal::BadCookie)).await;
            Err(HandshakeError::Refusing(Refusal::BadCookie))
        }
        Handshake::Refuse(r) => Err(HandshakeError::Refused(r)),
        _ => Err(HandshakeError::Protocol),
    }
}

/// Tell the dialer the verdict.
pub async fn answer(s: &mut TcpStream, verdict: &Result<(), Refusal>) -> std::io::Result<()> {
    match verdict {
        Ok(()) => send(s, &Handshake::Welcome).await,
        Err(r) => send(s, &Handshake::Refuse(r.clone())).await,
    }
}
