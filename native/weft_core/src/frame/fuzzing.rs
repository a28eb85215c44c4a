//! The body of the `frame_header` fuzz target and a seeded generator of
//! valid and mutated headers (see [`crate::frame`]).

use super::*;
use crate::rng::Rng;

/// The largest body the fuzzed decoder accepts.
pub const MAX: u64 = 1 << 20;

/// Decode `data` as a header, and check what holds of any input: no
/// panic; a header that decodes is within its bounds, is no header when
/// cut by a byte, and (unless it skipped unknown entries) encodes back to
/// exactly the bytes it was read from; [`FrameError::Truncated`] asks for
/// more bytes than `data` has, and no more than a header can take.
pub fn header(data: &[u8]) {
    match decode_header(data, MAX) {
        Ok(h) => {
            assert!(h.header_len <= data.len() && h.header_len <= MAX_HEADER_LEN);
            assert!(h.body_len as u64 <= MAX);
            // a prefix of a header is never a header
            if h.header_len > HEADER_LEN {
                assert!(matches!(
                    decode_header(&data[..h.header_len - 1], MAX),
                    Err(FrameError::Truncated { .. })
                ));
            }
            if h.ext.skipped == 0 {
                let again =
                    encode_header(h.kind, h.body_len, &h.ext).expect("what decodes encodes");
                assert_eq!(&*again, &data[..h.header_len], "{h:?}");
            }
        }
        Err(FrameError::Truncated { need }) => {
            assert!(need > data.len() && need <= MAX_HEADER_LEN);
        }
        Err(_) => {}
    }
}

/// Random extensions (each field present or not).
pub fn extensions(r: &mut Rng) -> Extensions {
    let mut e = Extensions::default();
    let uint = |r: &mut Rng| match r.below(4) {
        0 => r.below(256),
        1 => u64::MAX - r.below(3),
        _ => r.next_u64() >> r.below(64),
    };
    if r.below(2) == 0 {
        e.seq = Some(uint(r));
    }
    if r.below(2) == 0 {
        e.ack = Some(uint(r));
    }
    if r.below(3) == 0 {
        let mut t = [0u8; 16];
        t.iter_mut().for_each(|b| *b = r.next_u64() as u8);
        e.trace = Some(t);
    }
    let name = |r: &mut Rng| {
        let long = r.below(4) == 0;
        let n = 1 + r.below(if long { 253 } else { 12 }) as usize;
        let h = 1 + r.below((254 - n as u64).min(8)) as usize;
        let c = |r: &mut Rng| (b'!' + r.below(94) as u8) as char;
        let mut s: String = (0..n).map(|_| c(r)).filter(|&c| c != '@').collect();
        if s.is_empty() {
            s.push('a');
        }
        s.push('@');
        s.extend((0..h).map(|_| c(r)).filter(|&c| c != '@'));
        if s.ends_with('@') {
            s.push('h');
        }
        s
    };
    if r.below(3) == 0 {
        e.origin = Some(name(r));
    }
    if r.below(3) == 0 {
        e.destination = Some(name(r));
    }
    e
}

/// One generated case, numbered `i` (a pure function of it): a valid
/// header (must decode to what was encoded, every prefix truncated), or
/// one mutated (a byte changed, inserted, removed; unknown entries; a
/// length off; random bytes), checked by [`header`]. Returns whether
/// the case was a valid header.
pub fn case(i: u64) -> bool {
    let mut r = Rng::new(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5EED);
    let kind = [FrameKind::Handshake, FrameKind::Data, FrameKind::Control][r.below(3) as usize];
    let ext = if r.below(8) == 0 {
        Extensions::default()
    } else {
        extensions(&mut r)
    };
    let body = match r.below(4) {
        0 => 0,
        1 => r.below(200) as usize,
        2 => r.below(MAX + 1) as usize,
        _ => (MAX - r.below(4)) as usize,
    };
    let h = encode_header(kind, body, &ext).expect("valid extensions encode");
    let mut b = h.to_vec();
    let valid = r.below(4) == 0;
    if valid {
        let got = decode_header(&b, MAX).expect("a valid header decodes");
        assert_eq!(
            (got.kind, got.body_len, got.header_len, &got.ext),
            (kind, body, b.len(), &ext)
        );
        for cut in 0..b.len() {
            assert!(
                matches!(
                    decode_header(&b[..cut], MAX),
                    Err(FrameError::Truncated { .. })
                ),
                "{ext:?} cut at {cut}"
            );
        }
        b.extend_from_slice(&[0xAB; 3]);
        assert_eq!(decode_header(&b, MAX).map(|h| h.header_len), Ok(h.len()));
        return true;
    }
    match r.below(8) {
        0 => {
            let at = r.below(b.len() as u64) as usize;
            b[at] ^= 1 << r.below(8);
        }
        1 => {
            let at = r.below(b.len() as u64) as usize;
            b[at] = r.next_u64() as u8;
        }
        2 => {
            let at = r.below(b.len() as u64 + 1) as usize;
            b.insert(at, r.next_u64() as u8);
        }
        3 => {
            let at = r.below(b.len() as u64) as usize;
            b.remove(at);
        }
        4 if b.len() > HEADER_LEN => {
            // an unknown entry at the end, critical or not, and the
            // lengths made to fit
            let critical = if r.below(2) == 0 { CRITICAL } else { 0 };
            let id = (0x04 + r.below(0x7c) as u8) | critical;
            let n = r.below(300) as usize;
            let mut e = vec![id];
            put_len(&mut e, n);
            e.extend((0..n).map(|_| r.next_u64() as u8));
            let ext_len = u16::from_be_bytes([b[5], b[6]]) as usize + e.len();
            b[5..7].copy_from_slice(&(ext_len as u16).to_be_bytes());
            let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) + e.len() as u32;
            b[..4].copy_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&e);
            let ok = decode_header(&b, MAX);
            if id & CRITICAL != 0 && id != ext_id::ORIGIN && id != ext_id::DESTINATION {
                assert_eq!(ok, Err(FrameError::UnknownExtension(id)));
            } else if let Ok(h) = ok {
                assert_eq!(h.ext.skipped, 1);
            }
        }
        5 => {
            let at = r.below(7.min(b.len() as u64)) as usize;
            b[at] = b[at].wrapping_add(1 + r.below(3) as u8);
        }
        6 => b.truncate(r.below(b.len() as u64) as usize),
        _ => {
            let n = r.below(64) as usize;
            b = (0..n).map(|_| r.next_u64() as u8).collect();
            if n > 4 && r.below(2) == 0 {
                b[4] = (b[4] & 0x83) % 0x83;
            }
        }
    }
    header(&b);
    false
}

/// Run cases `0..n`; returns how many were valid headers.
pub fn cases(n: u64) -> u64 {
    (0..n).filter(|&i| case(i)).count() as u64
}
