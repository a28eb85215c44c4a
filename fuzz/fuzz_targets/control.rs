//! `weft_core::wire::decode_control` (membership messages and heartbeats,
//! from authenticated peers) and the full-mesh membership's decoder of the
//! membership payload on arbitrary bytes: no panic, allocation bounded by
//! the input, and whatever decodes encodes back to the same bytes. The body
//! is `weft_core::wire::fuzzing::control` and
//! `weft_core::membership::full_mesh::fuzzing::message`, which `cargo test`
//! also runs over the corpus.
//!
//! fuzz-options: -max_len=8192
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_core::wire::fuzzing::control(data);
    if let Some(payload) = data.strip_prefix(&[1]) {
        weft_core::membership::full_mesh::fuzzing::message(payload);
    }
});
