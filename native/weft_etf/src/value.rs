//! A [`Builder`] of plain Rust values, and an encoder back to the external
//! format: for tests and fuzzing, where there is no VM.

use crate::tag::*;
use crate::{Builder, VERSION};

/// A decoded term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    /// The bits of the float (so that NaN equals itself).
    Float(u64),
    /// An ASCII atom.
    Atom(Vec<u8>),
    Nil,
    Tuple(Vec<Value>),
    /// A non-empty list and its tail.
    List(Vec<Value>, Box<Value>),
    /// A binary, and whether the builder shared it (see [`ValueBuilder`]).
    Binary(Vec<u8>, bool),
    Map(Vec<(Value, Value)>),
    /// A subterm only the VM builds: its encoding without the version byte.
    Foreign(Vec<u8>),
}

/// Builds [`Value`]s from the input given to [`crate::decode`], and checks
/// what the decoder promises a builder: a binary is the input's bytes at the
/// offset it names, a list has items, keys and values pair up.
pub struct ValueBuilder<'a> {
    input: &'a [u8],
    /// Binaries of at least this many bytes are marked shared.
    pub share_min: usize,
}

impl<'a> ValueBuilder<'a> {
    /// A builder for `input`, the whole slice passed to [`crate::decode`].
    pub fn new(input: &'a [u8], share_min: usize) -> Self {
        ValueBuilder { input, share_min }
    }
}

impl Builder for ValueBuilder<'_> {
    type Term = Value;

    fn int(&mut self, i: i64) -> Option<Value> {
        Some(Value::Int(i))
    }

    fn float(&mut self, f: f64) -> Option<Value> {
        Some(Value::Float(f.to_bits()))
    }

    fn atom(&mut self, name: &[u8]) -> Option<Value> {
        assert!(name.is_ascii(), "atom handed to the builder is not ASCII");
        Some(Value::Atom(name.to_vec()))
    }

    fn nil(&mut self) -> Option<Value> {
        Some(Value::Nil)
    }

    fn string(&mut self, bytes: &[u8]) -> Option<Value> {
        if bytes.is_empty() {
            return Some(Value::Nil);
        }
        let items = bytes.iter().map(|b| Value::Int(*b as i64)).collect();
        Some(Value::List(items, Box::new(Value::Nil)))
    }

    fn tuple(&mut self, items: Vec<Value>) -> Option<Value> {
        Some(Value::Tuple(items))
    }

    fn list(&mut self, items: Vec<Value>, tail: Value) -> Option<Value> {
        // LIST_EXT with no elements is the tail itself.
        if items.is_empty() {
            return Some(tail);
        }
        Some(Value::List(items, Box::new(tail)))
    }

    fn binary(&mut self, at: usize, bytes: &[u8]) -> Option<Value> {
        let end = at
            .checked_add(bytes.len())
            .expect("binary offset overflows");
        assert_eq!(
            self.input.get(at..end),
            Some(bytes),
            "binary at {at} is not the input's bytes there"
        );
        Some(Value::Binary(bytes.to_vec(), bytes.len() >= self.share_min))
    }

    fn map(&mut self, keys: Vec<Value>, values: Vec<Value>) -> Option<Value> {
        assert_eq!(keys.len(), values.len(), "map keys and values do not pair");
        Some(Value::Map(keys.into_iter().zip(values).collect()))
    }

    fn foreign(&mut self, encoded: &[u8]) -> Option<Value> {
        assert!(!encoded.is_empty(), "empty foreign term");
        Some(Value::Foreign(encoded.to_vec()))
    }
}

/// Encode `v` with the version byte, in the encodings this crate decodes
/// (foreign terms as they came).
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = vec![VERSION];
    encode_into(v, &mut out);
    out
}

/// Encode `v` without the version byte onto `out`.
pub fn encode_into(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Int(i) => {
            if (0..=255).contains(i) {
                out.extend([SMALL_INTEGER, *i as u8]);
            } else if let Ok(i) = i32::try_from(*i) {
                out.push(INTEGER);
                out.extend(i.to_be_bytes());
            } else {
                // A big integer: SMALL_BIG_EXT, little-endian magnitude.
                let sign = u8::from(*i < 0);
                let mag = i.unsigned_abs().to_le_bytes();
                let n = 8 - mag.iter().rev().take_while(|b| **b == 0).count();
                out.extend([SMALL_BIG, n as u8, sign]);
                out.extend(&mag[..n]);
            }
        }
        Value::Float(bits) => {
            out.push(NEW_FLOAT);
            out.extend(bits.to_be_bytes());
        }
        Value::Atom(name) => {
            if name.len() <= 255 {
                out.extend([SMALL_ATOM_UTF8, name.len() as u8]);
            } else {
                out.push(ATOM_UTF8);
                out.extend((name.len() as u16).to_be_bytes());
            }
            out.extend(name);
        }
        Value::Nil => out.push(NIL),
        Value::Tuple(items) => {
            if items.len() <= 255 {
                out.extend([SMALL_TUPLE, items.len() as u8]);
            } else {
                out.push(LARGE_TUPLE);
                out.extend((items.len() as u32).to_be_bytes());
            }
            items.iter().for_each(|t| encode_into(t, out));
        }
        Value::List(items, tail) => {
            out.push(LIST);
            out.extend((items.len() as u32).to_be_bytes());
            items.iter().for_each(|t| encode_into(t, out));
            encode_into(tail, out);
        }
        Value::Binary(bytes, _) => {
            out.push(BINARY);
            out.extend((bytes.len() as u32).to_be_bytes());
            out.extend(bytes);
        }
        Value::Map(pairs) => {
            out.push(MAP);
            out.extend((pairs.len() as u32).to_be_bytes());
            for (k, v) in pairs {
                encode_into(k, out);
                encode_into(v, out);
            }
        }
        Value::Foreign(bytes) => out.extend(bytes),
    }
}
