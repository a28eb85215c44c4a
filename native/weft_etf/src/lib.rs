//! # weft_etf
//!
//! The decoder of the Erlang external term format that weft runs on large
//! received frames, without the VM: it walks the bytes and asks a
//! [`Builder`] to make each term. The NIF's builder (`weft_nif::etf`) makes
//! VM terms with the `enif_make_*` functions, sharing large binaries with
//! the frame; the [`value`] builder makes plain Rust values, for unit tests
//! and fuzzing.
//!
//! Everything it reads is bounded by the bytes present: a length is checked
//! against what is left before anything is allocated for it (each element of
//! a tuple, list or map takes at least one byte, and so does each element
//! still to come of the terms around it, so all the vectors open at once
//! hold at most one slot per input byte), nesting deeper than [`MAX_DEPTH`]
//! is refused, and trailing bytes are refused.
//!
//! [`decode`] returns `None` for input it does not handle (compressed terms,
//! atom cache references, nesting deeper than [`MAX_DEPTH`], malformed
//! bytes, or a builder that refused a term); the NIF then falls back to
//! `enif_binary_to_term` on the whole frame, which also reports truly
//! malformed input. The kinds of terms that a NIF cannot build from their
//! parts (pids, ports, references, funs, big integers, bitstrings, old
//! floats, atoms outside ASCII) are skipped and handed whole, one subterm at
//! a time, to [`Builder::foreign`].

pub mod room;
pub mod value;

#[doc(hidden)]
pub mod fuzzing;

/// Version byte that starts every encoded term.
pub const VERSION: u8 = 131;
/// Deeper nesting than this is refused (the VM's `binary_to_term` does not
/// recurse on the C stack; this decoder does).
pub const MAX_DEPTH: usize = 200;

/// Tags of the external term format.
pub mod tag {
    pub const NEW_FLOAT: u8 = 70;
    pub const BIT_BINARY: u8 = 77;
    pub const NEW_PID: u8 = 88;
    pub const NEW_PORT: u8 = 89;
    pub const NEWER_REFERENCE: u8 = 90;
    pub const SMALL_INTEGER: u8 = 97;
    pub const INTEGER: u8 = 98;
    pub const FLOAT: u8 = 99;
    pub const ATOM: u8 = 100;
    pub const REFERENCE: u8 = 101;
    pub const PORT: u8 = 102;
    pub const PID: u8 = 103;
    pub const SMALL_TUPLE: u8 = 104;
    pub const LARGE_TUPLE: u8 = 105;
    pub const NIL: u8 = 106;
    pub const STRING: u8 = 107;
    pub const LIST: u8 = 108;
    pub const BINARY: u8 = 109;
    pub const SMALL_BIG: u8 = 110;
    pub const LARGE_BIG: u8 = 111;
    pub const NEW_FUN: u8 = 112;
    pub const EXPORT: u8 = 113;
    pub const NEW_REFERENCE: u8 = 114;
    pub const SMALL_ATOM: u8 = 115;
    pub const MAP: u8 = 116;
    pub const ATOM_UTF8: u8 = 118;
    pub const SMALL_ATOM_UTF8: u8 = 119;
    pub const V4_PORT: u8 = 120;
}

use tag::*;

/// Makes the terms that [`decode`] finds. Each method returns `None` to
/// refuse a term; [`decode`] then returns `None` as a whole.
pub trait Builder {
    /// A built term.
    type Term;

    /// An integer (`SMALL_INTEGER_EXT`, `INTEGER_EXT`).
    fn int(&mut self, i: i64) -> Option<Self::Term>;
    /// A float (`NEW_FLOAT_EXT`).
    fn float(&mut self, f: f64) -> Option<Self::Term>;
    /// An atom whose name is ASCII (at most 65535 bytes; the VM's limit is
    /// 255 characters, which the builder enforces if it must).
    fn atom(&mut self, name: &[u8]) -> Option<Self::Term>;
    /// The empty list.
    fn nil(&mut self) -> Option<Self::Term>;
    /// A list of small integers (`STRING_EXT`), one per byte.
    fn string(&mut self, bytes: &[u8]) -> Option<Self::Term>;
    /// A tuple of `items`.
    fn tuple(&mut self, items: Vec<Self::Term>) -> Option<Self::Term>;
    /// The list of `items` (at least one) ending in `tail`.
    fn list(&mut self, items: Vec<Self::Term>, tail: Self::Term) -> Option<Self::Term>;
    /// A binary: `bytes` is `input[at..at + bytes.len()]`, where `input` is
    /// the whole slice given to [`decode`] (so a builder may share it).
    fn binary(&mut self, at: usize, bytes: &[u8]) -> Option<Self::Term>;
    /// A map of `keys[i] => values[i]` (as many of each).
    fn map(&mut self, keys: Vec<Self::Term>, values: Vec<Self::Term>) -> Option<Self::Term>;
    /// A term of a kind only the VM builds: `encoded` is the whole subterm,
    /// from its tag on, without the version byte.
    fn foreign(&mut self, encoded: &[u8]) -> Option<Self::Term>;
}

/// Decode the term encoded in `input` (starting with the version byte).
/// `None` when the input is malformed, not handled, has trailing bytes, or
/// the builder refused a term.
pub fn decode<B: Builder>(input: &[u8], builder: &mut B) -> Option<B::Term> {
    if input.first() != Some(&VERSION) {
        return None;
    }
    let mut d = Decoder {
        builder,
        data: input,
        pos: 1,
        pending: 0,
    };
    let t = d.term(0)?;
    (d.pos == input.len()).then_some(t)
}

struct Decoder<'d, B> {
    builder: &'d mut B,
    data: &'d [u8],
    pos: usize,
    /// Elements that the terms being decoded announced and that have not
    /// started yet: each needs a byte of its own after `pos`.
    pending: usize,
}

impl<'d, B: Builder> Decoder<'d, B> {
    #[inline]
    fn take(&mut self, n: usize) -> Option<&'d [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    #[inline]
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    #[inline]
    fn u16(&mut self) -> Option<usize> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    #[inline]
    fn u32(&mut self) -> Option<usize> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// Room for `n` more elements, each of at least one byte: checked
    /// before allocating for them. Without counting those of the enclosing
    /// terms, nested terms could each claim every byte left, and allocate
    /// a vector that large at every level (up to [`MAX_DEPTH`] times the
    /// input).
    #[inline]
    fn announce(&mut self, n: usize) -> Option<()> {
        let pending = self.pending.checked_add(n)?;
        if pending > self.data.len() - self.pos {
            return None;
        }
        self.pending = pending;
        Some(())
    }

    /// The next announced element.
    #[inline]
    fn element(&mut self, depth: usize) -> Option<B::Term> {
        self.pending -= 1;
        self.term(depth + 1)
    }

    fn term(&mut self, depth: usize) -> Option<B::Term> {
        if depth > MAX_DEPTH {
            return None;
        }
        let start = self.pos;
        let tag = self.u8()?;
        match tag {
            SMALL_INTEGER => {
                let i = self.u8()? as i64;
                self.builder.int(i)
            }
            INTEGER => {
                let b = self.take(4)?;
                let i = i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64;
                self.builder.int(i)
            }
            NEW_FLOAT => {
                let b = self.take(8)?;
                let f = f64::from_be_bytes(b.try_into().ok()?);
                self.builder.float(f)
            }
            ATOM | ATOM_UTF8 => {
                let n = self.u16()?;
                self.atom(start, n)
            }
            SMALL_ATOM | SMALL_ATOM_UTF8 => {
                let n = self.u8()? as usize;
                self.atom(start, n)
            }
            SMALL_TUPLE | LARGE_TUPLE => {
                let n = if tag == SMALL_TUPLE {
                    self.u8()? as usize
                } else {
                    self.u32()?
                };
                self.announce(n)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.element(depth)?);
                }
                self.builder.tuple(items)
            }
            NIL => self.builder.nil(),
            STRING => {
                let n = self.u16()?;
                let bytes = self.take(n)?;
                self.builder.string(bytes)
            }
            LIST => {
                let n = self.u32()?;
                // the elements and the tail
                self.announce(n.checked_add(1)?)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.element(depth)?);
                }
                let tail = self.element(depth)?;
                self.builder.list(items, tail)
            }
            BINARY => {
                let n = self.u32()?;
                let at = self.pos;
                let bytes = self.take(n)?;
                self.builder.binary(at, bytes)
            }
            MAP => {
                let n = self.u32()?;
                self.announce(n.checked_mul(2)?)?;
                let mut keys = Vec::with_capacity(n);
                let mut values = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(self.element(depth)?);
                    values.push(self.element(depth)?);
                }
                self.builder.map(keys, values)
            }
            _ => {
                // A kind built only by the VM: skip it, then hand over just it.
                self.pos = start;
                self.skip(0)?;
                self.builder.foreign(&self.data[start..self.pos])
            }
        }
    }

    /// An atom of `n` bytes; outside ASCII, latin-1 and UTF-8 differ, so
    /// those go to the VM's decoder.
    fn atom(&mut self, start: usize, n: usize) -> Option<B::Term> {
        let name = self.take(n)?;
        if name.is_ascii() {
            self.builder.atom(name)
        } else {
            self.builder.foreign(&self.data[start..self.pos])
        }
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
            tag @ (NEWER_REFERENCE | NEW_REFERENCE) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{encode, Value, ValueBuilder};

    fn dec(bytes: &[u8]) -> Option<Value> {
        decode(bytes, &mut ValueBuilder::new(bytes, 4))
    }

    fn atom(s: &str) -> Value {
        Value::Atom(s.as_bytes().to_vec())
    }

    fn list(items: Vec<Value>) -> Value {
        Value::List(items, Box::new(Value::Nil))
    }

    /// `{self(), make_ref(), [1, 2.5, <<"abc">>, "str", #{a => b}]}` as
    /// `term_to_binary/1` wrote it on OTP 25 (pid and reference of
    /// `nonode@nohost`).
    const MIXED: &[u8] = &[
        131, 104, 3, 88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111, 115,
        116, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 90, 0, 3, 100, 0, 13, 110, 111, 110, 111, 100,
        101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 0, 0, 3, 64, 13, 169, 56, 0, 1, 105, 130,
        139, 232, 108, 0, 0, 0, 5, 97, 1, 70, 64, 4, 0, 0, 0, 0, 0, 0, 109, 0, 0, 0, 3, 97, 98, 99,
        107, 0, 3, 115, 116, 114, 116, 0, 0, 0, 1, 100, 0, 1, 97, 100, 0, 1, 98, 106,
    ];

    #[test]
    fn hand_encoded_terms_decode() {
        let old_float = [[131, 99].as_slice(), &[b'0'; 31]].concat();
        let cases: Vec<(&[u8], Value)> = vec![
            (&[131, 97, 7], Value::Int(7)),
            (&[131, 98, 255, 255, 255, 254], Value::Int(-2)),
            (
                &[131, 70, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0],
                Value::Float(1.5f64.to_bits()),
            ),
            (&[131, 100, 0, 2, b'o', b'k'], atom("ok")),
            (&[131, 115, 2, b'o', b'k'], atom("ok")),
            (&[131, 118, 0, 2, b'o', b'k'], atom("ok")),
            (&[131, 119, 2, b'o', b'k'], atom("ok")),
            (&[131, 106], Value::Nil),
            (&[131, 104, 0], Value::Tuple(vec![])),
            (&[131, 105, 0, 0, 0, 1, 106], Value::Tuple(vec![Value::Nil])),
            (
                &[131, 107, 0, 2, 1, 2],
                list(vec![Value::Int(1), Value::Int(2)]),
            ),
            (
                &[131, 108, 0, 0, 0, 1, 97, 1, 97, 2],
                Value::List(vec![Value::Int(1)], Box::new(Value::Int(2))),
            ),
            (
                &[131, 109, 0, 0, 0, 3, 1, 2, 3],
                Value::Binary(vec![1, 2, 3], false),
            ),
            (
                &[131, 109, 0, 0, 0, 4, 1, 2, 3, 4],
                Value::Binary(vec![1, 2, 3, 4], true),
            ),
            (
                &[131, 116, 0, 0, 0, 1, 97, 1, 106],
                Value::Map(vec![(Value::Int(1), Value::Nil)]),
            ),
            // A big integer (2^64) and a latin-1 atom: only the VM builds them.
            (
                &[131, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                Value::Foreign(vec![110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            ),
            (&[131, 115, 1, 0xe9], Value::Foreign(vec![115, 1, 0xe9])),
            // An old float (31 bytes of text).
            (
                &old_float,
                Value::Foreign([[99].as_slice(), &[b'0'; 31]].concat()),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(dec(bytes).as_ref(), Some(&want), "{bytes:?}");
            // and back: what this crate encodes decodes to the same value
            assert_eq!(dec(&encode(&want)), Some(want.clone()), "{want:?}");
        }
    }

    #[test]
    fn a_message_from_the_vm_decodes() {
        let v = dec(MIXED).expect("decodes");
        let Value::Tuple(items) = v else {
            panic!("not a tuple: {v:?}")
        };
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[0], Value::Foreign(b) if b[0] == NEW_PID));
        assert!(matches!(&items[1], Value::Foreign(b) if b[0] == NEWER_REFERENCE));
        assert_eq!(
            items[2],
            list(vec![
                Value::Int(1),
                Value::Float(2.5f64.to_bits()),
                Value::Binary(b"abc".to_vec(), false),
                list(vec![Value::Int(115), Value::Int(116), Value::Int(114)]),
                Value::Map(vec![(atom("a"), atom("b"))]),
            ])
        );
    }

    #[test]
    fn truncated_input_at_every_length_is_refused() {
        for n in 0..MIXED.len() {
            assert_eq!(dec(&MIXED[..n]), None, "first {n} bytes");
        }
    }

    #[test]
    fn truncated_terms_of_every_kind_are_refused() {
        let every = Value::Tuple(vec![
            Value::Int(-5),
            Value::Int(300),
            Value::Float(0.1f64.to_bits()),
            atom("ok"),
            Value::Atom(vec![b'a'; 300]),
            Value::Nil,
            list(vec![Value::Int(1), Value::Int(2)]),
            Value::List(vec![atom("h")], Box::new(atom("t"))),
            Value::Binary(vec![9; 10], true),
            Value::Map(vec![(atom("k"), Value::Tuple(vec![]))]),
            Value::Foreign(vec![110, 1, 0, 7]),
            Value::Tuple((0..300).map(Value::Int).collect()),
        ]);
        let full = encode(&every);
        assert_eq!(dec(&full), Some(every));
        for n in 0..full.len() {
            assert_eq!(dec(&full[..n]), None, "first {n} bytes");
        }
    }

    #[test]
    fn trailing_bytes_and_a_wrong_version_are_refused() {
        assert_eq!(dec(&[MIXED, &[0]].concat()), None);
        assert_eq!(dec(&[&[130], &MIXED[1..]].concat()), None);
        assert_eq!(dec(&[]), None);
        assert_eq!(dec(&[131]), None);
    }

    #[test]
    fn kinds_it_does_not_handle_are_refused() {
        // compressed, atom cache reference, an unknown tag
        assert_eq!(dec(&[131, 80, 0, 0, 0, 1, 120, 156]), None);
        assert_eq!(dec(&[131, 82, 0]), None);
        assert_eq!(dec(&[131, 1]), None);
        // a fun whose size is smaller than its own size field
        assert_eq!(dec(&[131, 112, 0, 0, 0, 3]), None);
    }

    fn nested(depth: usize, open: &[u8], leaf: &[u8]) -> Vec<u8> {
        let mut b = vec![VERSION];
        for _ in 0..depth {
            b.extend(open);
        }
        b.extend(leaf);
        b
    }

    #[test]
    fn nesting_is_bounded() {
        // {{...{[]}...}}: MAX_DEPTH levels inside the outer term decode, one more does not
        for (open, tail) in [
            (&[104u8, 1][..], &[][..]),
            (&[108, 0, 0, 0, 1][..], &[106][..]),
            (&[116, 0, 0, 0, 1, 106][..], &[][..]),
        ] {
            let mut ok = nested(MAX_DEPTH, open, &[106]);
            ok.extend(std::iter::repeat_n(tail, MAX_DEPTH).flatten());
            assert!(dec(&ok).is_some(), "{open:?} x {MAX_DEPTH}");
            let mut deep = nested(MAX_DEPTH + 1, open, &[106]);
            deep.extend(std::iter::repeat_n(tail, MAX_DEPTH + 1).flatten());
            assert_eq!(dec(&deep), None, "{open:?} x {}", MAX_DEPTH + 1);
        }
        // inside a foreign term (skipped, not built): a pid whose node is
        // nested too deep is refused, not recursed into without end
        let mut deep = vec![VERSION, 88];
        deep.extend(std::iter::repeat_n([104u8, 1], 100_000).flatten());
        assert_eq!(dec(&deep), None);
        let deep = nested(100_000, &[104, 1], &[106]);
        assert_eq!(dec(&deep), None);
    }

    #[test]
    fn huge_claimed_lengths_with_few_bytes_are_refused() {
        let cases: &[&[u8]] = &[
            &[131, 108, 255, 255, 255, 255, 106],
            &[131, 105, 255, 255, 255, 255],
            &[131, 116, 255, 255, 255, 255],
            &[131, 116, 0, 0, 0, 2, 97, 1, 97],
            &[131, 109, 0, 0, 0, 9, 1],
            &[131, 109, 255, 255, 255, 255, 1],
            &[131, 107, 255, 255, 1],
            &[131, 100, 255, 255, b'a'],
            &[131, 104, 255, 106],
            // in skipped (foreign) terms
            &[131, 77, 255, 255, 255, 255, 0],
            &[131, 111, 255, 255, 255, 255, 0],
            &[131, 112, 255, 255, 255, 255],
            &[131, 90, 255, 255, 119, 1, b'a'],
            &[131, 88, 105, 255, 255, 255, 255],
            &[131, 88, 108, 255, 255, 255, 255, 106],
            &[131, 88, 116, 255, 255, 255, 255],
        ];
        for bytes in cases {
            assert_eq!(dec(bytes), None, "{bytes:?}");
        }
    }

    /// A builder that refuses one kind of term: the whole decode is refused.
    #[test]
    fn a_builder_refusal_refuses_the_whole_term() {
        struct NoFloats<'a>(ValueBuilder<'a>);
        impl Builder for NoFloats<'_> {
            type Term = Value;
            fn int(&mut self, i: i64) -> Option<Value> {
                self.0.int(i)
            }
            fn float(&mut self, _: f64) -> Option<Value> {
                None
            }
            fn atom(&mut self, name: &[u8]) -> Option<Value> {
                self.0.atom(name)
            }
            fn nil(&mut self) -> Option<Value> {
                self.0.nil()
            }
            fn string(&mut self, bytes: &[u8]) -> Option<Value> {
                self.0.string(bytes)
            }
            fn tuple(&mut self, items: Vec<Value>) -> Option<Value> {
                self.0.tuple(items)
            }
            fn list(&mut self, items: Vec<Value>, tail: Value) -> Option<Value> {
                self.0.list(items, tail)
            }
            fn binary(&mut self, at: usize, bytes: &[u8]) -> Option<Value> {
                self.0.binary(at, bytes)
            }
            fn map(&mut self, keys: Vec<Value>, values: Vec<Value>) -> Option<Value> {
                self.0.map(keys, values)
            }
            fn foreign(&mut self, encoded: &[u8]) -> Option<Value> {
                self.0.foreign(encoded)
            }
        }
        assert_eq!(
            decode(MIXED, &mut NoFloats(ValueBuilder::new(MIXED, 4))),
            None
        );
        let no_float = [131, 104, 2, 97, 1, 106];
        assert!(decode(&no_float, &mut NoFloats(ValueBuilder::new(&no_float, 4))).is_some());
    }

    #[test]
    fn binaries_name_their_place_in_the_input() {
        // ValueBuilder asserts that the offset names the same bytes
        let b = [
            131, 104, 2, 109, 0, 0, 0, 2, 7, 8, 109, 0, 0, 0, 5, 1, 2, 3, 4, 5,
        ];
        assert_eq!(
            dec(&b),
            Some(Value::Tuple(vec![
                Value::Binary(vec![7, 8], false),
                Value::Binary(vec![1, 2, 3, 4, 5], true),
            ]))
        );
    }
}
