//! The external term format decoder (`weft_etf`) on arbitrary bytes, with a
//! builder of plain values: never panics, heap use linear in the input,
//! decoded terms re-encode to the same term. The body is
//! `weft_etf::fuzzing::etf`, which `cargo test` also runs over the corpus.
//!
//! fuzz-options: -max_len=16384
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_etf::fuzzing::PeakAlloc;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

fuzz_target!(|data: &[u8]| weft_etf::fuzzing::etf(data));
