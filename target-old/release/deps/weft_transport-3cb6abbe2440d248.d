/work/main/target-old/release/deps/weft_transport-3cb6abbe2440d248.d: native/weft_transport/src/lib.rs native/weft_transport/src/body.rs native/weft_transport/src/config.rs native/weft_transport/src/conn.rs native/weft_transport/src/counters.rs native/weft_transport/src/driver.rs native/weft_transport/src/frame_reader.rs native/weft_transport/src/fuzzing.rs native/weft_transport/src/handshake_io.rs native/weft_transport/src/info.rs native/weft_transport/src/lane_writer.rs native/weft_transport/src/poller.rs native/weft_transport/src/poller_set.rs native/weft_transport/src/refusals.rs native/weft_transport/src/routes.rs native/weft_transport/src/sink.rs native/weft_transport/src/wake.rs

/work/main/target-old/release/deps/libweft_transport-3cb6abbe2440d248.rlib: native/weft_transport/src/lib.rs native/weft_transport/src/body.rs native/weft_transport/src/config.rs native/weft_transport/src/conn.rs native/weft_transport/src/counters.rs native/weft_transport/src/driver.rs native/weft_transport/src/frame_reader.rs native/weft_transport/src/fuzzing.rs native/weft_transport/src/handshake_io.rs native/weft_transport/src/info.rs native/weft_transport/src/lane_writer.rs native/weft_transport/src/poller.rs native/weft_transport/src/poller_set.rs native/weft_transport/src/refusals.rs native/weft_transport/src/routes.rs native/weft_transport/src/sink.rs native/weft_transport/src/wake.rs

/work/main/target-old/release/deps/libweft_transport-3cb6abbe2440d248.rmeta: native/weft_transport/src/lib.rs native/weft_transport/src/body.rs native/weft_transport/src/config.rs native/weft_transport/src/conn.rs native/weft_transport/src/counters.rs native/weft_transport/src/driver.rs native/weft_transport/src/frame_reader.rs native/weft_transport/src/fuzzing.rs native/weft_transport/src/handshake_io.rs native/weft_transport/src/info.rs native/weft_transport/src/lane_writer.rs native/weft_transport/src/poller.rs native/weft_transport/src/poller_set.rs native/weft_transport/src/refusals.rs native/weft_transport/src/routes.rs native/weft_transport/src/sink.rs native/weft_transport/src/wake.rs

native/weft_transport/src/lib.rs:
native/weft_transport/src/body.rs:
native/weft_transport/src/config.rs:
native/weft_transport/src/conn.rs:
native/weft_transport/src/counters.rs:
native/weft_transport/src/driver.rs:
native/weft_transport/src/frame_reader.rs:
native/weft_transport/src/fuzzing.rs:
native/weft_transport/src/handshake_io.rs:
native/weft_transport/src/info.rs:
native/weft_transport/src/lane_writer.rs:
native/weft_transport/src/poller.rs:
native/weft_transport/src/poller_set.rs:
native/weft_transport/src/refusals.rs:
native/weft_transport/src/routes.rs:
native/weft_transport/src/sink.rs:
native/weft_transport/src/wake.rs:
