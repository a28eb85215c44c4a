/work/main/target-old/release/deps/weft_etf-95c4c3d3ce07dbad.d: native/weft_etf/src/lib.rs native/weft_etf/src/value.rs native/weft_etf/src/fuzzing.rs

/work/main/target-old/release/deps/libweft_etf-95c4c3d3ce07dbad.rlib: native/weft_etf/src/lib.rs native/weft_etf/src/value.rs native/weft_etf/src/fuzzing.rs

/work/main/target-old/release/deps/libweft_etf-95c4c3d3ce07dbad.rmeta: native/weft_etf/src/lib.rs native/weft_etf/src/value.rs native/weft_etf/src/fuzzing.rs

native/weft_etf/src/lib.rs:
native/weft_etf/src/value.rs:
native/weft_etf/src/fuzzing.rs:
