//! Cookie authentication for the handshake: a challenge-response with
//! HMAC-SHA256 keyed by the shared cookie, so the cookie never crosses the
//! wire.
//!
//! The dialer sends a fresh nonce in its hello; the acceptor answers with its
//! own nonce and a proof over both nonces, both names and the lane; the
//! dialer checks it and answers with its own proof. Proofs are bound to the
//! role (a proof cannot be reflected back), to both nonces (no replay) and to
//! the lane (no splicing a proof into another connection).

use crate::lane::LaneKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Which side of the connection makes a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Acceptor,
}

/// What both sides bind a proof to.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    pub dialer: &'a str,
    pub acceptor: &'a str,
    pub lane: &'a LaneKey,
    pub dialer_nonce: &'a [u8; 32],
    pub acceptor_nonce: &'a [u8; 32],
}

fn mac(cookie: &[u8], role: Role, t: &Transcript<'_>) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(cookie).expect("HMAC takes keys of any length");
    m.update(match role {
        Role::Dialer => b"weft-dialer-v1\0",
        Role::Acceptor => b"weft-acceptor-v1",
    });
    for part in [
        t.dialer.as_bytes(),
        t.acceptor.as_bytes(),
        t.lane.channel.as_bytes(),
    ] {
        m.update(&(part.len() as u32).to_be_bytes());
        m.update(part);
    }
    m.update(&t.lane.index.to_be_bytes());
    m.update(t.dialer_nonce);
    m.update(t.acceptor_nonce);
    m
}

/// The proof `role` sends for this transcript.
pub fn prove(cookie: &[u8], role: Role, t: &Transcript<'_>) -> [u8; 32] {
    mac(cookie, role, t).finalize().into_bytes().into()
}

/// Check the other side's proof, in constant time.
pub fn verify(cookie: &[u8], role: Role, t: &Transcript<'_>, proof: &[u8; 32]) -> bool {
    mac(cookie, role, t).verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>(lane: &'a LaneKey, a: &'a [u8; 32], b: &'a [u8; 32]) -> Transcript<'a> {
        Transcript {
            dialer: "a@h",
            acceptor: "b@h",
            lane,
            dialer_nonce: a,
            acceptor_nonce: b,
        }
    }

    #[test]
    fn same_cookie_verifies_other_cookie_does_not() {
        let lane = LaneKey::control();
        let (na, nb) = ([1u8; 32], [2u8; 32]);
        let p = prove(b"secret", Role::Acceptor, &t(&lane, &na, &nb));
        assert!(verify(b"secret", Role::Acceptor, &t(&lane, &na, &nb), &p));
        assert!(!verify(b"other", Role::Acceptor, &t(&lane, &na, &nb), &p));
    }

    #[test]
    fn proofs_are_bound_to_role_nonces_and_lane() {
        let lane = LaneKey::control();
        let other_lane = LaneKey {
            channel: "vnode".into(),
            index: 3,
        };
        let (na, nb) = ([1u8; 32], [2u8; 32]);
        let p = prove(b"k", Role::Acceptor, &t(&lane, &na, &nb));
        assert!(!verify(b"k", Role::Dialer, &t(&lane, &na, &nb), &p));
        assert!(!verify(b"k", Role::Acceptor, &t(&lane, &nb, &na), &p));
        assert!(!verify(b"k", Role::Acceptor, &t(&other_lane, &na, &nb), &p));
        // the proof does not contain the cookie
        assert!(!p.windows(1).all(|w| w == b"k"));
    }
}
