//! `weft_core::frame::decode_header` (the protocol 3 frame header and its
//! extensions, read from every connection before anything else) on
//! arbitrary bytes: no panic, every claimed length checked, a header that
//! decodes is within its bounds, is no header when cut by a byte, and
//! encodes back to the same bytes. The body is
//! `weft_core::frame::fuzzing::header`, which `cargo test` also runs over
//! the corpus.
//!
//! fuzz-options: -max_len=1024
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_core::frame::fuzzing::header(data));
