//! The handshake of a new connection as two sans-IO state machines, and the
//! cookie proofs they exchange (HMAC-SHA256 keyed by the shared cookie, so
//! the cookie never crosses the wire).
//!
//! ```text
//! dialer                                   acceptor
//!   Hello { nonce_d, versions,
//!           caps_d }             ------>   picks the highest common version
//!                                <------   Challenge { nonce_a, version }
//!                                          | Versions (none in common)
//!   Auth { spec, to, lane,
//!          proof_d }             ------>   checks proof_d: only now does it
//!                                          say anything about itself
//!                                <------   Welcome { spec, caps_a, proof_a }
//!                                          | SignedRefuse { reason, proof_r }
//!                                          | Refuse
//! ```
//!
//! **Negotiation.** The dialer's hello lists every protocol version it
//! speaks and its capabilities ([`Capabilities`]: which header extensions
//! it understands). The acceptor picks the highest version both speak and
//! says it in the challenge; with none in common it answers with the
//! versions it speaks ([`Handshake::Versions`]) and both sides fail with
//! [`HandshakeError::Version`], whose text names both lists (a hello of a
//! version this node cannot read at all, such as protocol 2's, is answered
//! the same way). The acceptor states its capabilities in the welcome, after
//! the dialer's proof, so before authentication it reveals nothing about
//! itself but the version. Both ends then use the intersection of the two
//! capability sets: [`DialerStep::Done`] and [`AcceptorStep::Authenticated`]
//! carry the [`Negotiated`] version and capabilities.
//!
//! The dialer proves knowledge of the cookie first, as in Distributed
//! Erlang: the acceptor reveals no proof, no name and no reason before that
//! proof checks out, so whoever can reach the port cannot test cookie
//! guesses offline or learn who listens there. A refusal before
//! authentication is [`Refusal::Refused`] on the wire; the full reason is the
//! caller's to log. A dialer of another protocol version is told the
//! versions the acceptor speaks.
//!
//! **Refusals.** Only an authenticated peer says why it refuses. A refusal
//! that changes membership ([`Refusal::Left`]: the dialer was removed, and
//! leaves; [`Refusal::Detached`]: the acceptor left, and is forgotten)
//! would otherwise let whoever answers at an address the node dials make it
//! leave its cluster. So when both sides offer
//! [`Capabilities::SIGNED_REFUSAL`], the acceptor signs every refusal made
//! after the dialer's proof (`SignedRefuse`), and the dialer takes `left`
//! and `detached` only signed: unsigned, they are
//! [`HandshakeError::Unsigned`], a failed dial that is retried. Other
//! reasons (`duplicate`, `unavailable`, `full`, ...) change only when the
//! dialer tries again, and are taken unsigned from an acceptor of an
//! earlier build. A reason before the challenge (no honest acceptor gives
//! one) is a protocol error.
//!
//! `proof_d` covers both nonces, the hello and the challenge as the dialer
//! saw them (so a version or capability downgrade in transit fails the
//! proof) and everything in `Auth` before it (the dialer's spec, the name
//! it expects, the lane); `proof_a` covers both nonces, `proof_d` and
//! everything in `Welcome` before it (the acceptor's capabilities too);
//! `proof_r` covers both nonces, `proof_d` and the refusal, under a label
//! of its own.
//! Proofs are bound to the role (a proof cannot be reflected), to fresh
//! nonces (no replay) and to the lane and both descriptions (no splicing
//! into another connection). Randomness (the nonces) is an argument, as time is elsewhere
//! in the core.

use crate::frame::{Capabilities, Negotiated};
use crate::frame::{FrameError, SUPPORTED_VERSIONS};
use crate::lane::LaneKey;
use crate::spec::NodeSpec;
use crate::wire::{decode_handshake, encode_handshake, signed_part, Handshake, Refusal};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const DIALER: &[u8; 16] = b"weft-dialer-v3\0\0";
const ACCEPTOR: &[u8; 16] = b"weft-acceptor-v3";
const REFUSAL: &[u8; 16] = b"weft-refusal-v3\0";

/// The cookie as an HMAC-SHA256 key, prepared once: the key schedule (two
/// SHA-256 blocks) is run here, and every proof starts from a copy of the
/// prepared state. A node makes one for its cookie and hands it to each
/// [`Dialer`] and [`Acceptor`] ([`Dialer::with_key`], [`Acceptor::with_key`]).
#[derive(Clone)]
pub struct CookieKey(HmacSha256);

impl CookieKey {
    /// The key for `cookie`.
    pub fn new(cookie: &[u8]) -> CookieKey {
        CookieKey(HmacSha256::new_from_slice(cookie).expect("HMAC takes keys of any length"))
    }
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.write_str("CookieKey(..)")
    }
}

fn mac(
    key: &CookieKey,
    label: &[u8; 16],
    nd: &[u8; 32],
    na: &[u8; 32],
    parts: &[&[u8]],
) -> HmacSha256 {
    let mut m = key.0.clone();
    m.update(label);
    m.update(nd);
    m.update(na);
    for p in parts {
        m.update(&(p.len() as u32).to_be_bytes());
        m.update(p);
    }
    m
}

fn prove(
    key: &CookieKey,
    label: &[u8; 16],
    nd: &[u8; 32],
    na: &[u8; 32],
    parts: &[&[u8]],
) -> [u8; 32] {
    mac(key, label, nd, na, parts)
        .finalize()
        .into_bytes()
        .into()
}

/// Check a proof in constant time.
fn verify(
    key: &CookieKey,
    label: &[u8; 16],
    nd: &[u8; 32],
    na: &[u8; 32],
    parts: &[&[u8]],
    proof: &[u8; 32],
) -> bool {
    mac(key, label, nd, na, parts).verify_slice(proof).is_ok()
}

/// Encode a message whose last 32 bytes are a proof over the rest.
fn signed(h: Handshake, sign: impl FnOnce(&[u8]) -> [u8; 32]) -> (Vec<u8>, [u8; 32]) {
    let mut body = encode_handshake(&h);
    let proof = sign(signed_part(&body));
    let n = body.len();
    body[n - 32..].copy_from_slice(&proof);
    (body, proof)
}

/// Why a handshake ended without a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The other side refused and said why (after authentication), or said
    /// only "refused" (before).
    #[error("refused by peer: {0}")]
    Refused(Refusal),
    /// The acceptor refused with a reason that changes membership
    /// ([`Refusal::Left`], [`Refusal::Detached`]) without signing it: a
    /// node of a build before [`Capabilities::SIGNED_REFUSAL`], or someone
    /// without the cookie. Not taken: [`HandshakeError::refusal`] is
    /// `None`, so the dial counts as failed and is retried.
    #[error("refused by peer: {0} (unsigned: not taken)")]
    Unsigned(Refusal),
    /// This side refuses: `reason` is for the local log; send `tell` first.
    #[error("refused: {reason}")]
    Refusing {
        /// Why, in full.
        reason: Refusal,
        /// What to send the peer before closing.
        tell: Vec<u8>,
    },
    /// The other side speaks none of our versions; `tell` (if any) says which
    /// ones we speak.
    #[error("peer speaks protocol versions {theirs:?}, this node {SUPPORTED_VERSIONS:?}")]
    Version {
        /// The versions the peer speaks.
        theirs: Vec<u16>,
        /// What to send the peer before closing, if anything.
        tell: Option<Vec<u8>>,
    },
    /// Not a weft handshake: malformed or out of order.
    #[error("{0}")]
    Protocol(String),
}

impl From<FrameError> for HandshakeError {
    fn from(e: FrameError) -> Self {
        HandshakeError::Protocol(e.to_string())
    }
}

impl HandshakeError {
    /// What to send before closing, if anything.
    pub fn tell(&self) -> Option<&[u8]> {
        match self {
            HandshakeError::Refusing { tell, .. } => Some(tell),
            HandshakeError::Version { tell, .. } => tell.as_deref(),
            _ => None,
        }
    }

    /// The refusal, whichever side made it.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            HandshakeError::Refused(r) | HandshakeError::Refusing { reason: r, .. } => Some(r),
            _ => None,
        }
    }
}

fn refusing(reason: Refusal, wire: Refusal) -> HandshakeError {
    HandshakeError::Refusing {
        reason,
        tell: encode_handshake(&Handshake::Refuse(wire)),
    }
}

fn unexpected(h: &Handshake) -> HandshakeError {
    HandshakeError::Protocol(format!("unexpected handshake message {}", name(h)))
}

fn name(h: &Handshake) -> &'static str {
    match h {
        Handshake::Hello { .. } => "hello",
        Handshake::Challenge { .. } => "challenge",
        Handshake::Auth { .. } => "auth",
        Handshake::Welcome { .. } => "welcome",
        Handshake::Refuse(_) => "refuse",
        Handshake::SignedRefuse { .. } => "signed refuse",
        Handshake::Versions(_) => "versions",
    }
}

// ------------------------------------------------------------------ dialer

/// What the dialer does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialerStep {
    /// Send this handshake body and wait for the next message.
    Send(Vec<u8>),
    /// Authenticated both ways: the acceptor is this node, and this is
    /// what the two agreed on.
    Done(NodeSpec, Negotiated),
}

enum DialerState {
    SentHello,
    SentAuth {
        acceptor_nonce: [u8; 32],
        proof: [u8; 32],
        version: u16,
    },
    Over,
}

/// The dialing side of one handshake.
pub struct Dialer {
    key: CookieKey,
    local: NodeSpec,
    to: String,
    lane: LaneKey,
    nonce: [u8; 32],
    caps: Capabilities,
    /// The hello as sent (the proof covers it).
    hello: Vec<u8>,
    state: DialerState,
}

impl Dialer {
    /// Start dialing `to` for `lane` as `local`, offering `caps`; returns
    /// the machine and the hello to send. `nonce` must be fresh randomness.
    pub fn new(
        cookie: &[u8],
        local: NodeSpec,
        to: &str,
        lane: LaneKey,
        caps: Capabilities,
        nonce: [u8; 32],
    ) -> (Dialer, Vec<u8>) {
        Dialer::with_key(&CookieKey::new(cookie), local, to, lane, caps, nonce)
    }

    /// As [`Dialer::new`], with the cookie's key prepared once
    /// ([`CookieKey`]).
    pub fn with_key(
        key: &CookieKey,
        local: NodeSpec,
        to: &str,
        lane: LaneKey,
        caps: Capabilities,
        nonce: [u8; 32],
    ) -> (Dialer, Vec<u8>) {
        let hello = encode_handshake(&Handshake::Hello {
            nonce,
            versions: SUPPORTED_VERSIONS.to_vec(),
            caps,
        });
        let d = Dialer {
            key: key.clone(),
            local,
            to: to.to_string(),
            lane,
            nonce,
            caps,
            hello: hello.clone(),
            state: DialerState::SentHello,
        };
        (d, hello)
    }

    /// Whether `proof`, of the acceptor's message `body` under `label`,
    /// proves the cookie: it covers both nonces, our proof `mine` and the
    /// message before the proof.
    fn acceptor_proved(
        &self,
        label: &[u8; 16],
        acceptor_nonce: &[u8; 32],
        mine: &[u8; 32],
        body: &[u8],
        proof: &[u8; 32],
    ) -> bool {
        let parts: [&[u8]; 2] = [mine, signed_part(body)];
        verify(&self.key, label, &self.nonce, acceptor_nonce, &parts, proof)
    }

    /// The next handshake frame body from the acceptor.
    pub fn on_frame(&mut self, body: &[u8]) -> Result<DialerStep, HandshakeError> {
        let h = decode_handshake(body)?;
        match (std::mem::replace(&mut self.state, DialerState::Over), h) {
            (
                DialerState::SentAuth {
                    acceptor_nonce,
                    proof: mine,
                    ..
                },
                Handshake::SignedRefuse { refusal, proof },
            ) => {
                if !self.acceptor_proved(REFUSAL, &acceptor_nonce, &mine, body, &proof) {
                    return Err(HandshakeError::Protocol(
                        "a signed refusal whose proof does not verify".into(),
                    ));
                }
                Err(HandshakeError::Refused(refusal))
            }
            // After our proof an acceptor may say why; one that changes
            // membership is taken only signed (above).
            (DialerState::SentAuth { .. }, Handshake::Refuse(r)) => Err(match r {
                Refusal::Left | Refusal::Detached => HandshakeError::Unsigned(r),
                r => HandshakeError::Refused(r),
            }),
            // Before it, an acceptor of any build says only "refused".
            (_, Handshake::Refuse(Refusal::Refused)) => {
                Err(HandshakeError::Refused(Refusal::Refused))
            }
            (_, Handshake::Refuse(r)) => Err(HandshakeError::Protocol(format!(
                "a refusal with a reason before authentication ({r})"
            ))),
            (_, Handshake::Versions(theirs)) => Err(HandshakeError::Version { theirs, tell: None }),
            (DialerState::SentHello, Handshake::Challenge { nonce, version }) => {
                // (decoding checked that this node speaks `version`)
                let (nd, na) = (self.nonce, nonce);
                let hello = &self.hello;
                // The description and the lane are not needed after this
                // message (this branch runs once): moved, not copied.
                let from = std::mem::replace(
                    &mut self.local,
                    NodeSpec {
                        name: String::new(),
                        incarnation: 0,
                        max_frame: 0,
                        addrs: Vec::new(),
                        channels: Vec::new(),
                    },
                );
                let lane = std::mem::replace(
                    &mut self.lane,
                    LaneKey {
                        channel: String::new(),
                        index: 0,
                    },
                );
                let (auth, proof) = signed(
                    Handshake::Auth {
                        from,
                        to: self.to.clone(),
                        lane,
                        proof: [0; 32],
                    },
                    |part| prove(&self.key, DIALER, &nd, &na, &[hello, body, part]),
                );
                self.state = DialerState::SentAuth {
                    acceptor_nonce: na,
                    proof,
                    version,
                };
                Ok(DialerStep::Send(auth))
            }
            (
                DialerState::SentAuth {
                    acceptor_nonce,
                    proof: mine,
                    version,
                },
                Handshake::Welcome { from, caps, proof },
            ) => {
                if !self.acceptor_proved(ACCEPTOR, &acceptor_nonce, &mine, body, &proof) {
                    return Err(refusing(Refusal::BadCookie, Refusal::Refused));
                }
                if let Err(e) = from.validate(false) {
                    let r = Refusal::BadSpec(e.to_string());
                    return Err(refusing(r.clone(), r));
                }
                if from.name != self.to {
                    let r = Refusal::UnexpectedNode {
                        expected: self.to.clone(),
                        actual: from.name,
                    };
                    return Err(refusing(r.clone(), r));
                }
                let negotiated = Negotiated {
                    version,
                    caps: self.caps.intersect(caps),
                };
                Ok(DialerStep::Done(from, negotiated))
            }
            (_, other) => Err(unexpected(&other)),
        }
    }
}

// ---------------------------------------------------------------- acceptor

/// What the acceptor does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptorStep {
    /// Send this handshake body and wait for the next message.
    Send(Vec<u8>),
    /// The dialer proved the cookie: it is this node, for this lane, and
    /// the connection will use what was negotiated. Answer with
    /// [`Acceptor::welcome`] or [`Acceptor::refuse`].
    Authenticated {
        /// The dialer, as it describes itself.
        dialer: NodeSpec,
        /// The lane the connection is for.
        lane: LaneKey,
        /// What the two ends agreed on.
        negotiated: Negotiated,
    },
}

enum AcceptorState {
    Start,
    Challenged {
        dialer_nonce: [u8; 32],
        /// The hello and the challenge, as the proof covers them.
        hello: Vec<u8>,
        challenge: Vec<u8>,
        negotiated: Negotiated,
    },
    Authenticated {
        dialer_nonce: [u8; 32],
        proof: [u8; 32],
        /// Whether refusals are signed ([`Capabilities::SIGNED_REFUSAL`]).
        sign: bool,
    },
    Over,
}

/// The accepting side of one handshake.
pub struct Acceptor {
    key: CookieKey,
    caps: Capabilities,
    nonce: [u8; 32],
    state: AcceptorState,
}

impl Acceptor {
    /// A fresh acceptor offering `caps`; `nonce` must be fresh randomness.
    pub fn new(cookie: &[u8], caps: Capabilities, nonce: [u8; 32]) -> Acceptor {
        Acceptor::with_key(&CookieKey::new(cookie), caps, nonce)
    }

    /// As [`Acceptor::new`], with the cookie's key prepared once
    /// ([`CookieKey`]).
    pub fn with_key(key: &CookieKey, caps: Capabilities, nonce: [u8; 32]) -> Acceptor {
        Acceptor {
            key: key.clone(),
            caps,
            nonce,
            state: AcceptorState::Start,
        }
    }

    /// The next handshake frame body from the dialer. `local` is this node;
    /// `lane_ok` says whether a lane exists here (asked only after the
    /// dialer's proof checked out).
    pub fn on_frame(
        &mut self,
        body: &[u8],
        local: &NodeSpec,
        lane_ok: impl Fn(&LaneKey) -> bool,
    ) -> Result<AcceptorStep, HandshakeError> {
        let h = match decode_handshake(body) {
            Ok(h) => h,
            Err(FrameError::Version { theirs, .. }) => {
                return Err(HandshakeError::Version {
                    theirs: vec![theirs],
                    tell: Some(encode_handshake(&Handshake::Versions(
                        SUPPORTED_VERSIONS.to_vec(),
                    ))),
                })
            }
            Err(e) => return Err(e.into()),
        };
        match (std::mem::replace(&mut self.state, AcceptorState::Over), h) {
            (
                AcceptorState::Start,
                Handshake::Hello {
                    nonce,
                    versions,
                    caps,
                },
            ) => {
                let common = versions
                    .iter()
                    .copied()
                    .filter(|v| SUPPORTED_VERSIONS.contains(v))
                    .max();
                let Some(version) = common else {
                    return Err(HandshakeError::Version {
                        theirs: versions,
                        tell: Some(encode_handshake(&Handshake::Versions(
                            SUPPORTED_VERSIONS.to_vec(),
                        ))),
                    });
                };
                let challenge = encode_handshake(&Handshake::Challenge {
                    nonce: self.nonce,
                    version,
                });
                self.state = AcceptorState::Challenged {
                    dialer_nonce: nonce,
                    hello: body.to_vec(),
                    challenge: challenge.clone(),
                    negotiated: Negotiated {
                        version,
                        caps: self.caps.intersect(caps),
                    },
                };
                Ok(AcceptorStep::Send(challenge))
            }
            (
                AcceptorState::Challenged {
                    dialer_nonce,
                    hello,
                    challenge,
                    negotiated,
                },
                Handshake::Auth {
                    from,
                    to,
                    lane,
                    proof,
                },
            ) => {
                let part = signed_part(body);
                if !verify(
                    &self.key,
                    DIALER,
                    &dialer_nonce,
                    &self.nonce,
                    &[&hello, &challenge, part],
                    &proof,
                ) {
                    return Err(refusing(Refusal::BadCookie, Refusal::Refused));
                }
                // Authenticated from here on: refusals may say why.
                self.state = AcceptorState::Authenticated {
                    dialer_nonce,
                    proof,
                    sign: negotiated.caps.contains(Capabilities::SIGNED_REFUSAL),
                };
                let refusal = if to != local.name {
                    Some(Refusal::UnexpectedNode {
                        expected: to,
                        actual: local.name.clone(),
                    })
                } else if let Err(e) = from.validate(false) {
                    Some(Refusal::BadSpec(e.to_string()))
                } else if !lane_ok(&lane) {
                    Some(Refusal::UnknownLane)
                } else {
                    None
                };
                match refusal {
                    Some(r) => Err(HandshakeError::Refusing {
                        tell: self.refuse(r.clone()),
                        reason: r,
                    }),
                    None => Ok(AcceptorStep::Authenticated {
                        dialer: from,
                        lane,
                        negotiated,
                    }),
                }
            }
            // Only an authenticated dialer's refusal is believed; before
            // that, whatever reason it claims is a protocol error (so that
            // nobody without the cookie picks what the counters and the
            // log say).
            (AcceptorState::Authenticated { .. }, Handshake::Refuse(r)) => {
                Err(HandshakeError::Refused(r))
            }
            (_, other) => Err(unexpected(&other)),
        }
    }

    /// The welcome for an authenticated dialer, proving the cookie back.
    pub fn welcome(&self, local: &NodeSpec) -> Vec<u8> {
        let AcceptorState::Authenticated {
            dialer_nonce,
            proof: theirs,
            ..
        } = &self.state
        else {
            // Never welcome an unauthenticated dialer.
            return encode_handshake(&Handshake::Refuse(Refusal::Refused));
        };
        let (nd, na) = (*dialer_nonce, self.nonce);
        signed(
            Handshake::Welcome {
                from: local.clone(),
                caps: self.caps,
                proof: [0; 32],
            },
            |part| prove(&self.key, ACCEPTOR, &nd, &na, &[theirs, part]),
        )
        .0
    }

    /// A refusal for the dialer: the reason itself once it is authenticated
    /// (signed with the cookie when both offered
    /// [`Capabilities::SIGNED_REFUSAL`]), only "refused" before.
    pub fn refuse(&self, reason: Refusal) -> Vec<u8> {
        match &self.state {
            AcceptorState::Authenticated {
                dialer_nonce,
                proof: theirs,
                sign: true,
            } => {
                let (nd, na) = (*dialer_nonce, self.nonce);
                signed(
                    Handshake::SignedRefuse {
                        refusal: reason,
                        proof: [0; 32],
                    },
                    |part| prove(&self.key, REFUSAL, &nd, &na, &[theirs, part]),
                )
                .0
            }
            AcceptorState::Authenticated { .. } => encode_handshake(&Handshake::Refuse(reason)),
            _ => encode_handshake(&Handshake::Refuse(Refusal::Refused)),
        }
    }
}

/// Fuzzing entry points, shared by the fuzz target and the corpus replay
/// test (`fuzz/`, `tests/corpus.rs`).
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    fn local() -> NodeSpec {
        NodeSpec {
            name: "b@h".into(),
            incarnation: 1,
            addrs: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 1))],
            channels: vec![],
            max_frame: 1 << 20,
        }
    }

    /// Cut `data` into frames: each is `len: u16 (big endian) | len bytes`
    /// (a last, short one takes what is left).
    pub fn frames(mut data: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while data.len() >= 2 && out.len() < 16 {
            let n = (u16::from_be_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
            out.push(&data[2..2 + n]);
            data = &data[2 + n..];
        }
        out
    }

    /// Frames from someone who does not know the cookie, into an acceptor
    /// (anyone can reach it) and into a dialer (anyone can listen where we
    /// dial): no panic, no authentication, before authentication the
    /// acceptor says nothing but "refused" or its versions, the version
    /// it picks from a hello is the highest both sides speak, and the
    /// dialer takes no refusal that changes membership.
    pub fn handshake(data: &[u8]) {
        let frames = frames(data);
        for f in &frames {
            crate::wire::fuzzing::handshake(f);
        }
        let mut a = Acceptor::new(b"cookie", Capabilities::SUPPORTED, [9; 32]);
        for f in &frames {
            match a.on_frame(f, &local(), |_| true) {
                Ok(AcceptorStep::Send(c)) => {
                    if let Ok(Handshake::Hello { versions, .. }) = decode_handshake(f) {
                        let Ok(Handshake::Challenge { version, .. }) = decode_handshake(&c) else {
                            panic!("a hello answered by something else than a challenge")
                        };
                        let best = versions
                            .iter()
                            .filter(|v| SUPPORTED_VERSIONS.contains(v))
                            .max();
                        assert_eq!(Some(&version), best, "version picked from {versions:?}");
                    }
                }
                Ok(AcceptorStep::Authenticated { .. }) => {
                    panic!("acceptor: authenticated without the cookie")
                }
                Err(e) => {
                    if let Some(t) = e.tell() {
                        let h = decode_handshake(t).expect("we decode what we encode");
                        assert!(
                            matches!(
                                h,
                                Handshake::Refuse(Refusal::Refused) | Handshake::Versions(_)
                            ),
                            "acceptor told {h:?} before authentication"
                        );
                    }
                    break;
                }
            }
        }
        let (mut d, _) = Dialer::new(
            b"cookie",
            local(),
            "c@h",
            LaneKey::control(),
            Capabilities::SUPPORTED,
            [8; 32],
        );
        for f in &frames {
            match d.on_frame(f) {
                Ok(DialerStep::Send(_)) => {}
                Ok(DialerStep::Done(..)) => panic!("dialer: authenticated without the cookie"),
                Err(e) => {
                    // Without the cookie nobody makes this node leave, or
                    // forget a member.
                    assert!(
                        !matches!(e.refusal(), Some(Refusal::Left | Refusal::Detached)),
                        "dialer took {e:?} from someone without the cookie"
                    );
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PROTOCOL_VERSION;
    use crate::spec::tests::spec;

    const ALL: Capabilities = Capabilities::SUPPORTED;

    struct Run {
        dialer: Result<NodeSpec, HandshakeError>,
        acceptor: Result<(NodeSpec, LaneKey), HandshakeError>,
        wire: Vec<Handshake>,
        negotiated: (Option<Negotiated>, Option<Negotiated>),
    }

    fn run(dialer_cookie: &[u8], acceptor_cookie: &[u8], to: &str, acceptor: &NodeSpec) -> Run {
        run_with(dialer_cookie, acceptor_cookie, to, acceptor, (ALL, ALL))
    }

    /// A whole handshake between a dialer and an acceptor, in memory.
    fn run_with(
        dialer_cookie: &[u8],
        acceptor_cookie: &[u8],
        to: &str,
        acceptor: &NodeSpec,
        caps: (Capabilities, Capabilities),
    ) -> Run {
        let lane = LaneKey {
            channel: "default".into(),
            index: 1,
        };
        let (mut d, hello) = Dialer::new(dialer_cookie, spec("a@h"), to, lane, caps.0, [1; 32]);
        let mut a = Acceptor::new(acceptor_cookie, caps.1, [2; 32]);
        let mut wire = vec![decode_handshake(&hello).unwrap()];
        let lane_ok = |l: &LaneKey| l.channel == "default" && l.index < 2;
        let challenge = match a.on_frame(&hello, acceptor, lane_ok) {
            Ok(AcceptorStep::Send(c)) => c,
            other => panic!("{other:?}"),
        };
        wire.push(decode_handshake(&challenge).unwrap());
        let auth = match d.on_frame(&challenge).unwrap() {
            DialerStep::Send(b) => b,
            other => panic!("{other:?}"),
        };
        wire.push(decode_handshake(&auth).unwrap());
        let mut negotiated = (None, None);
        let (answer, acceptor_result) = match a.on_frame(&auth, acceptor, lane_ok) {
            Ok(AcceptorStep::Authenticated {
                dialer,
                lane,
                negotiated: n,
            }) => {
                negotiated.1 = Some(n);
                (a.welcome(acceptor), Ok((dialer, lane)))
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => (e.tell().unwrap().to_vec(), Err(e)),
        };
        wire.push(decode_handshake(&answer).unwrap());
        let dialer = match d.on_frame(&answer) {
            Ok(DialerStep::Done(s, n)) => {
                negotiated.0 = Some(n);
                Ok(s)
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        Run {
            dialer,
            acceptor: acceptor_result,
            wire,
            negotiated,
        }
    }

    #[test]
    fn same_cookie_authenticates_both_ways() {
        let b = spec("b@h");
        let r = run(b"secret", b"secret", "b@h", &b);
        assert_eq!(r.dialer, Ok(b.clone()));
        let (d, lane) = r.acceptor.unwrap();
        assert_eq!(d, spec("a@h"));
        assert_eq!(lane.index, 1);
    }

    #[test]
    fn a_wrong_cookie_learns_nothing_about_the_acceptor() {
        let b = spec("b@h");
        let r = run(b"guess", b"secret", "b@h", &b);
        assert!(matches!(
            r.acceptor,
            Err(HandshakeError::Refusing {
                reason: Refusal::BadCookie,
                ..
            })
        ));
        assert_eq!(r.dialer, Err(HandshakeError::Refused(Refusal::Refused)));
        // Nothing the acceptor sent names it, proves anything, or says why.
        for h in &r.wire[1..] {
            assert!(
                matches!(
                    h,
                    Handshake::Challenge { .. }
                        | Handshake::Auth { .. }
                        | Handshake::Refuse(Refusal::Refused)
                ),
                "{h:?}"
            );
        }
    }

    #[test]
    fn a_wrong_name_is_told_only_after_the_proof() {
        let b = spec("b@h");
        let r = run(b"secret", b"secret", "c@h", &b);
        let want = Refusal::UnexpectedNode {
            expected: "c@h".into(),
            actual: "b@h".into(),
        };
        assert_eq!(r.dialer, Err(HandshakeError::Refused(want.clone())));
        // with a wrong cookie as well, the name stays hidden
        let r = run(b"guess", b"secret", "c@h", &b);
        assert_eq!(r.dialer, Err(HandshakeError::Refused(Refusal::Refused)));
    }

    #[test]
    fn an_acceptor_that_cannot_prove_is_refused() {
        // The acceptor's proof is checked: a welcome forged without the
        // cookie (here: an acceptor with another cookie that skips its own
        // check) is refused by the dialer.
        let b = spec("b@h");
        let lane = LaneKey::control();
        let (mut d, hello) = Dialer::new(b"secret", spec("a@h"), "b@h", lane, ALL, [1; 32]);
        let mut a = Acceptor::new(b"other", ALL, [2; 32]);
        let AcceptorStep::Send(c) = a.on_frame(&hello, &b, |_| true).unwrap() else {
            panic!()
        };
        let DialerStep::Send(auth) = d.on_frame(&c).unwrap() else {
            panic!()
        };
        let Handshake::Auth { proof, .. } = decode_handshake(&auth).unwrap() else {
            panic!()
        };
        a.state = AcceptorState::Authenticated {
            dialer_nonce: [1; 32],
            proof,
            sign: true,
        };
        let forged = a.welcome(&b);
        assert!(matches!(
            d.on_frame(&forged),
            Err(HandshakeError::Refusing {
                reason: Refusal::BadCookie,
                ..
            })
        ));
    }

    #[test]
    fn unknown_lanes_and_bad_specs_are_refused_after_authentication() {
        let b = spec("b@h");
        let lane = LaneKey {
            channel: "nope".into(),
            index: 0,
        };
        let (mut d, hello) = Dialer::new(b"k", spec("a@h"), "b@h", lane, ALL, [1; 32]);
        let mut a = Acceptor::new(b"k", ALL, [2; 32]);
        let AcceptorStep::Send(c) = a.on_frame(&hello, &b, |l| l.channel == "default").unwrap()
        else {
            panic!()
        };
        let DialerStep::Send(auth) = d.on_frame(&c).unwrap() else {
            panic!()
        };
        let e = a
            .on_frame(&auth, &b, |l| l.channel == "default")
            .unwrap_err();
        assert_eq!(e.refusal(), Some(&Refusal::UnknownLane));

        let mut bad = spec(&format!("{}@h", "x".repeat(300)));
        bad.name.truncate(255);
        let (mut d, hello) = Dialer::new(b"k", bad, "b@h", LaneKey::control(), ALL, [1; 32]);
        let mut a = Acceptor::new(b"k", ALL, [2; 32]);
        let AcceptorStep::Send(c) = a.on_frame(&hello, &b, |_| true).unwrap() else {
            panic!()
        };
        let DialerStep::Send(auth) = d.on_frame(&c).unwrap() else {
            panic!()
        };
        let e = a.on_frame(&auth, &b, |_| true).unwrap_err();
        assert!(matches!(e.refusal(), Some(Refusal::BadSpec(_))), "{e:?}");
    }

    #[test]
    fn other_versions_are_told_ours() {
        let mut hello = encode_handshake(&Handshake::Hello {
            nonce: [0; 32],
            versions: vec![3],
            caps: ALL,
        });
        hello[5] = 1;
        let mut a = Acceptor::new(b"k", ALL, [2; 32]);
        let e = a.on_frame(&hello, &spec("b@h"), |_| true).unwrap_err();
        assert_eq!(
            decode_handshake(e.tell().unwrap()).unwrap(),
            Handshake::Versions(SUPPORTED_VERSIONS.to_vec())
        );
        // and a dialer told so reports it
        let (mut d, _) = Dialer::new(b"k", spec("a@h"), "b@h", LaneKey::control(), ALL, [1; 32]);
        assert_eq!(
            d.on_frame(e.tell().unwrap()),
            Err(HandshakeError::Version {
                theirs: SUPPORTED_VERSIONS.to_vec(),
                tell: None
            })
        );
    }

    #[test]
    fn both_ends_agree_on_the_common_capabilities() {
        let b = spec("b@h");
        let seq_trace = Capabilities(Capabilities::SEQ_ACK.0 | Capabilities::TRACE.0);
        let relay_trace = Capabilities(Capabilities::RELAY.0 | Capabilities::TRACE.0 | 1 << 40);
        let r = run_with(b"k", b"k", "b@h", &b, (seq_trace, relay_trace));
        assert!(r.dialer.is_ok() && r.acceptor.is_ok());
        let want = Negotiated {
            version: PROTOCOL_VERSION,
            caps: Capabilities::TRACE,
        };
        assert_eq!(r.negotiated, (Some(want), Some(want)));
        let r = run_with(b"k", b"k", "b@h", &b, (Capabilities::NONE, ALL));
        assert_eq!(r.negotiated.0.unwrap().caps, Capabilities::NONE);
        assert_eq!(r.negotiated.1.unwrap().caps, Capabilities::NONE);
        let r = run(b"k", b"k", "b@h", &b);
        assert_eq!(r.negotiated.0.unwrap().caps, ALL);
        // the acceptor's capabilities go out only after the dialer's proof
        assert!(matches!(r.wire[3], Handshake::Welcome { caps: ALL, .. }));
    }

    #[test]
    fn the_highest_common_version_is_chosen_or_the_dialer_is_told_ours() {
        let hello = |versions: Vec<u16>| {
            encode_handshake(&Handshake::Hello {
                nonce: [0; 32],
                versions,
                caps: ALL,
            })
        };
        let b = spec("b@h");
        let mut a = Acceptor::new(b"k", ALL, [2; 32]);
        let Ok(AcceptorStep::Send(c)) = a.on_frame(&hello(vec![1, 3, 7]), &b, |_| true) else {
            panic!()
        };
        assert_eq!(
            decode_handshake(&c),
            Ok(Handshake::Challenge {
                nonce: [2; 32],
                version: 3
            })
        );
        let mut a = Acceptor::new(b"k", ALL, [2; 32]);
        let e = a.on_frame(&hello(vec![7, 9]), &b, |_| true).unwrap_err();
        assert_eq!(
            e,
            HandshakeError::Version {
                theirs: vec![7, 9],
                tell: Some(encode_handshake(&Handshake::Versions(
                    SUPPORTED_VERSIONS.to_vec()
                )))
            }
        );
        // the reason to log names both lists
        assert_eq!(
            e.to_string(),
            format!("peer speaks protocol versions [7, 9], this node {SUPPORTED_VERSIONS:?}")
        );
    }

    /// Someone in the middle who strips capabilities or versions from the
    /// hello makes the proofs fail: the hello is part of what is proved.
    #[test]
    fn a_downgraded_hello_fails_the_proof() {
        let b = spec("b@h");
        let lane = LaneKey::control();
        let (mut d, hello) = Dialer::new(b"k", spec("a@h"), "b@h", lane, ALL, [1; 32]);
        let Handshake::Hello {
            nonce, versions, ..
        } = decode_handshake(&hello).unwrap()
        else {
            panic!()
        };
        let stripped = encode_handshake(&Handshake::Hello {
            nonce,
            versions,
            caps: Capabilities::NONE,
        });
        let mut a = Acceptor::new(b"k", ALL, [2; 32]);
        let AcceptorStep::Send(c) = a.on_frame(&stripped, &b, |_| true).unwrap() else {
            panic!()
        };
        let DialerStep::Send(auth) = d.on_frame(&c).unwrap() else {
            panic!()
        };
        let e = a.on_frame(&auth, &b, |_| true).unwrap_err();
        assert_eq!(e.refusal(), Some(&Refusal::BadCookie));
    }

    #[test]
    fn replayed_and_reflected_proofs_fail() {
        let b = spec("b@h");
        // Record a good exchange, then replay its auth to a new acceptor
        // (another nonce): refused.
        let lane = LaneKey::control();
        let (mut d, hello) = Dialer::new(b"k", spec("a@h"), "b@h", lane.clone(), ALL, [1; 32]);
        let mut a = Acceptor::new(b"k", ALL, [2; 32]);
        let AcceptorStep::Send(c) = a.on_frame(&hello, &b, |_| true).unwrap() else {
            panic!()
        };
        let DialerStep::Send(auth) = d.on_frame(&c).unwrap() else {
            panic!()
        };
        let mut a2 = Acceptor::new(b"k", ALL, [3; 32]);
        a2.on_frame(&hello, &b, |_| true).unwrap();
        assert!(a2.on_frame(&auth, &b, |_| true).is_err());
        // An auth for another lane (spliced) is refused.
        let Handshake::Auth {
            from, to, proof, ..
        } = decode_handshake(&auth).unwrap()
        else {
            panic!()
        };
        let spliced = encode_handshake(&Handshake::Auth {
            from,
            to,
            lane: LaneKey {
                channel: "default".into(),
                index: 0,
            },
            proof,
        });
        let mut a3 = Acceptor::new(b"k", ALL, [2; 32]);
        a3.on_frame(&hello, &b, |_| true).unwrap();
        assert!(a3.on_frame(&spliced, &b, |_| true).is_err());
    }

    #[test]
    fn fuzz_entry_point_holds_for_replies_of_any_shape() {
        let hello = encode_handshake(&Handshake::Hello {
            nonce: [5; 32],
            versions: vec![1, 3, 9],
            caps: ALL,
        });
        let challenge = encode_handshake(&Handshake::Challenge {
            nonce: [6; 32],
            version: 3,
        });
        let auth = encode_handshake(&Handshake::Auth {
            from: spec("a@h"),
            to: "b@h".into(),
            lane: LaneKey::control(),
            proof: [0; 32],
        });
        let welcome = encode_handshake(&Handshake::Welcome {
            from: spec("c@h"),
            caps: ALL,
            proof: [0; 32],
        });
        let input = |fs: &[&[u8]]| -> Vec<u8> {
            fs.iter()
                .flat_map(|f| {
                    let mut v = (f.len() as u16).to_be_bytes().to_vec();
                    v.extend_from_slice(f);
                    v
                })
                .collect()
        };
        let left = encode_handshake(&Handshake::Refuse(Refusal::Left));
        let signed_left = encode_handshake(&Handshake::SignedRefuse {
            refusal: Refusal::Detached,
            proof: [0; 32],
        });
        for fs in [
            vec![&hello[..], &auth[..]],
            vec![&challenge[..], &welcome[..]],
            vec![&challenge[..], &left[..]],
            vec![&challenge[..], &signed_left[..]],
            vec![&left[..]],
            vec![&hello[..], &hello[..]],
            vec![&auth[..]],
            vec![&b"garbage"[..]],
        ] {
            fuzzing::handshake(&input(&fs));
        }
        assert_eq!(
            fuzzing::frames(&[0, 1, 7, 0, 5, 1]),
            vec![&[7u8][..], &[1u8][..]]
        );
    }

    /// A refusal from a dialer that has not proved the cookie is not
    /// believed: whatever reason it names, it is a protocol error.
    #[test]
    fn an_unauthenticated_refusal_is_a_protocol_error() {
        let refuse = encode_handshake(&Handshake::Refuse(Refusal::BadSpec("x".into())));
        let mut a = Acceptor::new(b"cookie", ALL, [9; 32]);
        let r = a.on_frame(&refuse, &spec("b@h"), |_| true);
        assert!(matches!(r, Err(HandshakeError::Protocol(_))), "{r:?}");
        // after a hello too (challenged, not authenticated)
        let (_d, hello) = Dialer::new(
            b"cookie",
            spec("a@h"),
            "b@h",
            LaneKey::control(),
            ALL,
            [1; 32],
        );
        let mut a = Acceptor::new(b"cookie", ALL, [9; 32]);
        assert!(matches!(
            a.on_frame(&hello, &spec("b@h"), |_| true),
            Ok(AcceptorStep::Send(_))
        ));
        let r = a.on_frame(&refuse, &spec("b@h"), |_| true);
        assert!(matches!(r, Err(HandshakeError::Protocol(_))), "{r:?}");
    }

    /// A dialer and an acceptor with these cookies and capabilities, run
    /// up to the acceptor's verdict on the dialer's proof.
    fn to_verdict(
        cookies: (&[u8], &[u8]),
        caps: (Capabilities, Capabilities),
        nonces: ([u8; 32], [u8; 32]),
    ) -> (Dialer, Acceptor, Result<AcceptorStep, HandshakeError>) {
        let b = spec("b@h");
        let lane = LaneKey::control();
        let (mut d, hello) = Dialer::new(cookies.0, spec("a@h"), "b@h", lane, caps.0, nonces.0);
        let mut a = Acceptor::new(cookies.1, caps.1, nonces.1);
        let AcceptorStep::Send(c) = a.on_frame(&hello, &b, |_| true).unwrap() else {
            panic!()
        };
        let DialerStep::Send(auth) = d.on_frame(&c).unwrap() else {
            panic!()
        };
        let verdict = a.on_frame(&auth, &b, |_| true);
        (d, a, verdict)
    }

    fn every_refusal() -> Vec<Refusal> {
        vec![
            Refusal::Left,
            Refusal::Detached,
            Refusal::Duplicate,
            Refusal::Unavailable,
            Refusal::Full,
            Refusal::UnknownLane,
            Refusal::BadSpec("overlay".into()),
        ]
    }

    /// Refusals after the dialer's proof are signed when both offer
    /// signed refusals, and the dialer takes them, whatever the reason.
    #[test]
    fn refusals_after_the_proof_are_signed_and_taken() {
        for r in every_refusal() {
            let (mut d, a, verdict) = to_verdict((b"k", b"k"), (ALL, ALL), ([1; 32], [2; 32]));
            assert!(matches!(verdict, Ok(AcceptorStep::Authenticated { .. })));
            let body = a.refuse(r.clone());
            assert!(
                matches!(decode_handshake(&body), Ok(Handshake::SignedRefuse { .. })),
                "{r:?}"
            );
            assert_eq!(d.on_frame(&body), Err(HandshakeError::Refused(r)));
        }
        // and the acceptor's own refusals (a wrong name)
        let r = run(b"k", b"k", "c@h", &spec("b@h"));
        assert!(
            matches!(r.wire[3], Handshake::SignedRefuse { .. }),
            "{:?}",
            r.wire[3]
        );
        assert!(matches!(
            r.dialer,
            Err(HandshakeError::Refused(Refusal::UnexpectedNode { .. }))
        ));
    }

    /// An acceptor of an earlier build (no signed refusals) still says
    /// why; the dialer takes every reason but those that change
    /// membership, which are reported as unsigned and not taken.
    #[test]
    fn unsigned_left_and_detached_are_not_taken() {
        let earlier = ALL.without(Capabilities::SIGNED_REFUSAL);
        for caps in [(ALL, earlier), (earlier, ALL)] {
            for r in every_refusal() {
                let (mut d, a, verdict) = to_verdict((b"k", b"k"), caps, ([1; 32], [2; 32]));
                assert!(verdict.is_ok());
                let body = a.refuse(r.clone());
                assert_eq!(decode_handshake(&body), Ok(Handshake::Refuse(r.clone())));
                let e = d.on_frame(&body).unwrap_err();
                if matches!(r, Refusal::Left | Refusal::Detached) {
                    assert_eq!(e, HandshakeError::Unsigned(r));
                    assert_eq!(e.refusal(), None);
                    assert!(e.to_string().contains("unsigned"), "{e}");
                } else {
                    assert_eq!(e, HandshakeError::Refused(r));
                }
            }
        }
    }

    /// Whoever answers where we dial without the cookie cannot make the
    /// dialer take `left` or `detached`: not before the challenge, not
    /// after our proof unsigned, not signed with another cookie, not with
    /// a signature from another handshake, not with the reason changed.
    #[test]
    fn a_forged_refusal_is_not_taken() {
        let take = |d: &mut Dialer, body: &[u8]| d.on_frame(body).unwrap_err();
        // before the challenge: no honest acceptor says why
        for r in every_refusal() {
            let (mut d, _) =
                Dialer::new(b"k", spec("a@h"), "b@h", LaneKey::control(), ALL, [1; 32]);
            let e = take(&mut d, &encode_handshake(&Handshake::Refuse(r)));
            assert!(matches!(e, HandshakeError::Protocol(_)), "{e:?}");
        }
        let (mut d, _) = Dialer::new(b"k", spec("a@h"), "b@h", LaneKey::control(), ALL, [1; 32]);
        let e = take(
            &mut d,
            &encode_handshake(&Handshake::Refuse(Refusal::Refused)),
        );
        assert_eq!(e, HandshakeError::Refused(Refusal::Refused));
        // after our proof, unsigned
        let (mut d, _, _) = to_verdict((b"k", b"other"), (ALL, ALL), ([1; 32], [2; 32]));
        let e = take(&mut d, &encode_handshake(&Handshake::Refuse(Refusal::Left)));
        assert_eq!(e.refusal(), None);
        // signed with another cookie (an acceptor that skips its check)
        let (mut d, mut a, verdict) = to_verdict((b"k", b"other"), (ALL, ALL), ([1; 32], [2; 32]));
        assert_eq!(verdict.unwrap_err().refusal(), Some(&Refusal::BadCookie));
        let AcceptorState::Over = a.state else {
            panic!("the acceptor is done after a bad proof")
        };
        a.state = AcceptorState::Authenticated {
            dialer_nonce: [1; 32],
            proof: [0; 32],
            sign: true,
        };
        let e = take(&mut d, &a.refuse(Refusal::Left));
        assert!(matches!(e, HandshakeError::Protocol(_)), "{e:?}");
        // a good signature from another handshake (other nonces)
        let (_, a, _) = to_verdict((b"k", b"k"), (ALL, ALL), ([1; 32], [3; 32]));
        let replayed = a.refuse(Refusal::Left);
        let (mut d, _, _) = to_verdict((b"k", b"k"), (ALL, ALL), ([1; 32], [2; 32]));
        let e = take(&mut d, &replayed);
        assert!(matches!(e, HandshakeError::Protocol(_)), "{e:?}");
        // this handshake's signature on another reason (`detached` for `duplicate`)
        let (mut d, a, _) = to_verdict((b"k", b"k"), (ALL, ALL), ([1; 32], [2; 32]));
        let mut body = a.refuse(Refusal::Duplicate);
        let at = body.len() - 33;
        assert_eq!(body[at], 5, "the refusal's tag");
        body[at] = 7;
        assert!(matches!(
            decode_handshake(&body),
            Ok(Handshake::SignedRefuse {
                refusal: Refusal::Detached,
                ..
            })
        ));
        let e = take(&mut d, &body);
        assert!(matches!(e, HandshakeError::Protocol(_)), "{e:?}");
        // a signed refusal before our proof is out of order
        let (mut d, _) = Dialer::new(b"k", spec("a@h"), "b@h", LaneKey::control(), ALL, [1; 32]);
        let e = take(&mut d, &replayed);
        assert!(e.refusal().is_none(), "{e:?}");
    }
}
