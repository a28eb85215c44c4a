//! `weft_core::wire::decode_control` (membership gossip and heartbeats,
//! from authenticated peers) on arbitrary bytes: no panic, allocation
//! bounded by the input, and whatever decodes encodes back to the same
//! bytes. The body is `weft_core::wire::fuzzing::control`, which
//! `cargo test` also runs over the corpus.
//!
//! fuzz-options: -max_len=8192
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_core::wire::fuzzing::control(data));
