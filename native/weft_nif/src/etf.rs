//! Decoding a received message without copying its large binaries.
//!
//! `enif_binary_to_term` copies every binary out of the encoded bytes. For a
//! large frame, weft reads the body straight into a refc binary and decodes
//! it here instead: a binary of at least [`Decoder::share_min`] bytes
//! becomes a sub-binary of the frame, so an 8 MB payload reaches its process
//! without another 8 MB copy. Everything else is built with the `enif_make_*`
//! functions, and the kinds of terms that a NIF cannot build from their parts
//! (pids, ports, references, funs, big integers, bitstrings, atoms outside
//! ASCII) are handed, one subterm at a time, to `enif_binary_to_term`.
//!
//! A sub-binary keeps the whole frame alive. So that a small binary kept
//! for long does not pin a large frame, only binaries that are a large share
//! of the frame are shared (see [`share_threshold`]).
//!
//! [`decode`] returns `None` for input it does not handle (compressed terms,
//! nesting deeper than [`MAX_DEPTH`], malformed bytes); the caller then
//! falls back to `enif_binary_to_term` on the whole frame, which also
//! reports truly malformed input.

use rustler::types::tuple::make_tuple;
use rustler::{Atom, Binary, Encoder, Env, NewBinary, Term};

/// Version byte that starts every encoded term.
const VERSION: u8 = 131;
/// Deeper nesting than this goes to `enif_binary_to_term` (which does not
/// recurse on the C stack).
pub const MAX_DEPTH: usize = 200;

const NEW_FLOAT: u8 = 70;
const BIT_BINARY: u8 = 77;
const NEW_PID: u8 = 88;
const NEW_PORT: u8 = 89;
const NEWER_REFERENCE: u8 = 90;
const SMALL_INTEGER: u8 = 97;
const INTEGER: u8 = 98;
const FLOAT: u8 = 99;
const ATOM: u8 = 100;
const REFERENCE: u8 = 101;
const PORT: u8 = 102;
const PID: u8 = 103;
const SMALL_TUPLE: u8 = 104;
const LARGE_TUPLE: u8 = 105;
const NIL: u8 = 106;
const STRING: u8 = 107;
const LIST: u8 = 108;
const BINARY: u8 = 109;
const SMALL_BIG: u8 = 110;
const LARGE_BIG: u8 = 111;
const NEW_FUN: u8 = 112;
const EXPORT: u8 = 113;
const NEW_REFERENCE: u8 = 114;
const SMALL_ATOM: u8 = 115;
const MAP: u8 = 116;
const ATOM_UTF8: u8 = 118;
const SMALL_ATOM_UTF8: u8 = 119;
const V4_PORT: u8 = 120;

/// The smallest binary of a `frame_len`-byte frame that is shared rather
/// than copied: at least 64 KiB, and at least an eighth of the frame.
pub fn share_threshold(frame_len: usize) -> usize {
    (64 * 1024).max(frame_len / 8)
}

/// Decode the term encoded in `frame` (starting with the version byte),
/// sharing binaries of `share_min` bytes or more with `frame`.
pub fn decode<'a>(env: Env<'a>, frame: Binary<'a>, share_min: usize) -> Option<Term<'a>> {
    let data = frame.as_slice();
    if data.first() != Some(&VERSION) {
        return None;
    }
    let mut d = Decoder {
        env,
        frame,
        data,
        pos: 1,
        share_min,
    };
    let t = d.term(0)?;
    (d.pos == data.len()).then_some(t)
}

struct Decoder<'a> {
    env: Env<'a>,
    frame: Binary<'a>,
    data: &'a [u8],
    pos: usize,
    share_min: usize,
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<usize> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    fn u32(&mut self) -> Option<usize> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn term(&mut self, depth: usize) -> Option<Term<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        let start = self.pos;
        let tag = self.u8()?;
        let env = self.env;
        Some(match tag {
            SMALL_INTEGER => (self.u8()? as i64).encode(env),
            INTEGER => {
                let b = self.take(4)?;
                (i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64).encode(env)
            }
            NEW_FLOAT => {
                let b = self.take(8)?;
                f64::from_be_bytes(b.try_into().ok()?).encode(env)
            }
            ATOM | ATOM_UTF8 => {
                let n = self.u16()?;
                self.atom(start, n)?
            }
            SMALL_ATOM | SMALL_ATOM_UTF8 => {
                let n = self.u8()? as usize;
                self.atom(start, n)?
            }
            SMALL_TUPLE | LARGE_TUPLE => {
                let n = if tag == SMALL_TUPLE {
                    self.u8()? as usize
                } else {
                    self.u32()?
                };
                // Each element takes at least one byte: a bound before allocating.
                if n > self.data.len() - self.pos {
                    return None;
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.term(depth + 1)?);
                }
                make_tuple(env, &items)
            }
            NIL => Term::list_new_empty(env),
            STRING => {
                let n = self.u16()?;
                let bytes = self.take(n)?;
                let mut list = Term::list_new_empty(env);
                for b in bytes.iter().rev() {
                    list = list.list_prepend(*b as i64);
                }
                list
            }
            LIST => {
                let n = self.u32()?;
                if n > self.data.len() - self.pos {
                    return None;
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.term(depth + 1)?);
                }
                let mut list = self.term(depth + 1)?;
                for t in items.into_iter().rev() {
                    list = list.list_prepend(t);
                }
                list
            }
            BINARY => {
                let n = self.u32()?;
                let at = self.pos;
                let bytes = self.take(n)?;
                if n >= self.share_min {
                    self.frame.make_subbinary(at, n).ok()?.to_term(env)
                } else {
                    let mut b = NewBinary::new(env, n);
                    b.as_mut_slice().copy_from_slice(bytes);
                    Binary::from(b).to_term(env)
                }
            }
            MAP => {
                let n = self.u32()?;
                if n > (self.data.len() - self.pos) / 2 {
                    return None;
                }
                let mut keys = Vec::with_capacity(n);
                let mut values = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(self.term(depth + 1)?);
                    values.push(self.term(depth + 1)?);
                }
                Term::map_from_arrays(env, &keys, &values).ok()?
            }
            _ => {
                // A kind built only by the VM: skip it, then decode just it.
                self.pos = start;
                self.skip(0)?;
                self.foreign(start)?
            }
        })
    }

    /// An atom of `n` bytes; outside ASCII, latin-1 and UTF-8 differ, so
    /// those go to the VM's decoder.
    fn atom(&mut self, start: usize, n: usize) -> Option<Term<'a>> {
        let name = self.take(n)?;
        if name.is_ascii() {
            Atom::from_bytes(self.env, name)
                .ok()
                .map(|a| a.encode(self.env))
        } else {
            self.foreign(start)
        }
    }

    /// Decode the subterm at `start..self.pos` with `enif_binary_to_term`.
    fn foreign(&self, start: usize) -> Option<Term<'a>> {
        let mut buf = Vec::with_capacity(1 + self.pos - start);
        buf.push(VERSION);
        buf.extend_from_slice(&self.data[start..self.pos]);
        // Peers passed the cookie check: trusted, as the distribution is.
        let (t, used) = unsafe { self.env.binary_to_term_trusted(&buf) }?;
        (used == buf.len()).then_some(t)
    }

    /// Move past one term without building it.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.u8()? {
            SMALL_INTEGER => self.take(1).map(drop),
            INTEGER => self.take(4).map(drop),
            NEW_FLOAT => self.take(8).map(drop),
            FLOAT => self.take(31).map(drop),
            ATOM | ATOM_UTF8 => {
                let n = self.u16()?;
                self.take(n).map(drop)
            }
            SMALL_ATOM | SMALL_ATOM_UTF8 => {
                let n = self.u8()? as usize;
                self.take(n).map(drop)
            }
            NIL => Some(()),
            STRING => {
                let n = self.u16()?;
                self.take(n).map(drop)
            }
            BINARY => {
                let n = self.u32()?;
                self.take(n).map(drop)
            }
            BIT_BINARY => {
                let n = self.u32()?;
                self.take(1 + n).map(drop)
            }
            SMALL_BIG => {
                let n = self.u8()? as usize;
                self.take(1 + n).map(drop)
            }
            LARGE_BIG => {
                let n = self.u32()?;
                self.take(1 + n).map(drop)
            }
            SMALL_TUPLE => {
                let n = self.u8()? as usize;
                (0..n).try_for_each(|_| self.skip(depth + 1))
            }
            LARGE_TUPLE => {
                let n = self.u32()?;
                (0..n).try_for_each(|_| self.skip(depth + 1))
            }
            LIST => {
                let n = self.u32()?;
                (0..=n).try_for_each(|_| self.skip(depth + 1))
            }
            MAP => {
                let n = self.u32()?;
                (0..2 * n).try_for_each(|_| self.skip(depth + 1))
            }
            // A node atom, then fixed-size ids and creation.
            tag @ (NEW_PID | PID | NEW_PORT | PORT | V4_PORT | REFERENCE) => {
                self.skip(depth + 1)?;
                let rest = match tag {
                    NEW_PID | V4_PORT => 12,
                    PID => 9,
                    NEW_PORT => 8,
                    _ => 5,
                };
                self.take(rest).map(drop)
            }
            NEWER_REFERENCE | NEW_REFERENCE => {
                let tag = self.data[self.pos - 1];
                let n = self.u16()?;
                self.skip(depth + 1)?;
                let creation = if tag == NEWER_REFERENCE { 4 } else { 1 };
                self.take(creation + 4 * n).map(drop)
            }
            EXPORT => (0..3).try_for_each(|_| self.skip(depth + 1)),
            NEW_FUN => {
                // Size counts itself and everything after the tag.
                let size = self.u32()?;
                self.take(size.checked_sub(4)?).map(drop)
            }
            // Compressed terms, atom cache references, old funs, local
            // encodings: not in what term_to_iovec produces for a peer.
            _ => None,
        }
    }
}
