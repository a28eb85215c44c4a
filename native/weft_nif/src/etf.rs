//! Decoding a received message without copying its large binaries.
//!
//! `enif_binary_to_term` copies every binary out of the encoded bytes. For a
//! large frame, weft reads the body straight into a buffer that becomes a
//! binary (from its pool of receive buffers, or a refc binary) and decodes
//! it here instead: a binary of at least `share_min` bytes becomes a
//! sub-binary of the frame, so an 8 MB payload reaches its process without
//! another 8 MB copy. The parser is [`weft_etf::decode`] (pure Rust,
//! unit-tested and fuzzed without a VM); this module is its [`Builder`]
//! of VM terms. Everything else is built with the `enif_make_*` functions,
//! and the kinds of terms that a NIF cannot build from their parts (pids,
//! ports, references, funs, big integers, bitstrings, atoms outside ASCII)
//! are handed, one subterm at a time, to `enif_binary_to_term`.
//!
//! A sub-binary keeps the whole frame alive. So that a small binary kept
//! for long does not pin a large frame, only binaries that are a large share
//! of the frame are shared (see [`share_threshold`]).
//!
//! [`decode`] returns `None` for input it does not handle (compressed terms,
//! nesting deeper than [`weft_etf::MAX_DEPTH`], atoms the node does not have
//! yet, malformed bytes); the caller then decodes the whole frame with
//! `enif_binary_to_term` ([`crate::messages`]), which also reports truly
//! malformed input and creates new atoms only while the table has room.

use rustler::types::tuple::make_tuple;
use rustler::{Atom, Binary, Encoder, Env, NewBinary, Term};
use weft_etf::{Builder, VERSION};

/// The smallest binary of a `frame_len`-byte frame that is shared rather
/// than copied: at least 64 KiB, and at least an eighth of the frame.
pub fn share_threshold(frame_len: usize) -> usize {
    (64 * 1024).max(frame_len / 8)
}

/// Decode the term encoded in `frame` (starting with the version byte),
/// sharing binaries of `share_min` bytes or more with `frame`.
pub fn decode<'a>(env: Env<'a>, frame: Binary<'a>, share_min: usize) -> Option<Term<'a>> {
    let mut b = TermBuilder {
        env,
        frame,
        share_min,
    };
    weft_etf::decode(frame.as_slice(), &mut b)
}

/// Builds VM terms in `env`; binaries are shared with `frame`, the input.
struct TermBuilder<'a> {
    env: Env<'a>,
    frame: Binary<'a>,
    share_min: usize,
}

impl<'a> Builder for TermBuilder<'a> {
    type Term = Term<'a>;

    #[inline]
    fn int(&mut self, i: i64) -> Option<Term<'a>> {
        Some(i.encode(self.env))
    }

    #[inline]
    fn float(&mut self, f: f64) -> Option<Term<'a>> {
        Some(f.encode(self.env))
    }

    /// Only an atom the node has: a new one makes the whole frame go to
    /// [`crate::messages`]' decoder, which creates atoms only while the atom
    /// table has room.
    #[inline]
    fn atom(&mut self, name: &[u8]) -> Option<Term<'a>> {
        Atom::existing_from_bytes(self.env, name)
            .ok()
            .map(|a| a.encode(self.env))
    }

    #[inline]
    fn nil(&mut self) -> Option<Term<'a>> {
        Some(Term::list_new_empty(self.env))
    }

    #[inline]
    fn string(&mut self, bytes: &[u8]) -> Option<Term<'a>> {
        let mut list = Term::list_new_empty(self.env);
        for b in bytes.iter().rev() {
            list = list.list_prepend(*b as i64);
        }
        Some(list)
    }

    #[inline]
    fn tuple(&mut self, items: Vec<Term<'a>>) -> Option<Term<'a>> {
        Some(make_tuple(self.env, &items))
    }

    #[inline]
    fn list(&mut self, items: Vec<Term<'a>>, tail: Term<'a>) -> Option<Term<'a>> {
        let mut list = tail;
        for t in items.into_iter().rev() {
            list = list.list_prepend(t);
        }
        Some(list)
    }

    #[inline]
    fn binary(&mut self, at: usize, bytes: &[u8]) -> Option<Term<'a>> {
        let n = bytes.len();
        if n >= self.share_min {
            Some(self.frame.make_subbinary(at, n).ok()?.to_term(self.env))
        } else {
            let mut b = NewBinary::new(self.env, n);
            b.as_mut_slice().copy_from_slice(bytes);
            Some(Binary::from(b).to_term(self.env))
        }
    }

    #[inline]
    fn map(&mut self, keys: Vec<Term<'a>>, values: Vec<Term<'a>>) -> Option<Term<'a>> {
        Term::map_from_arrays(self.env, &keys, &values).ok()
    }

    /// Decode one subterm with `enif_binary_to_term`, creating no atom
    /// (as for [`Builder::atom`]).
    fn foreign(&mut self, encoded: &[u8]) -> Option<Term<'a>> {
        let mut buf = Vec::with_capacity(1 + encoded.len());
        buf.push(VERSION);
        buf.extend_from_slice(encoded);
        let (t, used) = self.env.binary_to_term(&buf)?;
        (used == buf.len()).then_some(t)
    }
}
