//! The handshake, from someone who does not know the cookie: arbitrary
//! frames (`len: u16 | bytes`, each) through `weft_core::wire::
//! decode_handshake` and into an acceptor and a dialer machine. No panic,
//! no authentication, and nothing but "refused" or the version list told
//! before authentication. The body is `weft_core::handshake::fuzzing::
//! handshake`, which `cargo test` also runs over the corpus.
//!
//! fuzz-options: -max_len=4096
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_core::handshake::fuzzing::handshake(data));
