//! `weft_transport::frame_reader::FrameReader` on an arbitrary byte stream cut
//! into arbitrary reads, budgets and would-blocks, checked against a plain
//! parse of the stream. The body is `weft_transport::fuzzing::frame_reader`
//! (the input format is documented there), which `cargo test` also runs
//! over the corpus.
//!
//! fuzz-options: -max_len=4096
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_transport::fuzzing::frame_reader(data));
