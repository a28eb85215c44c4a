/work/main/target-old/release/deps/weft_nif.d: native/weft_nif/src/lib.rs native/weft_nif/src/convert.rs native/weft_nif/src/etf.rs native/weft_nif/src/events.rs native/weft_nif/src/messages.rs

/work/main/target-old/release/deps/libweft_nif.so: native/weft_nif/src/lib.rs native/weft_nif/src/convert.rs native/weft_nif/src/etf.rs native/weft_nif/src/events.rs native/weft_nif/src/messages.rs

native/weft_nif/src/lib.rs:
native/weft_nif/src/convert.rs:
native/weft_nif/src/etf.rs:
native/weft_nif/src/events.rs:
native/weft_nif/src/messages.rs:
