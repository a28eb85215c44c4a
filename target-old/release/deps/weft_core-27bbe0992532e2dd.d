/work/main/target-old/release/deps/weft_core-27bbe0992532e2dd.d: native/weft_core/src/lib.rs native/weft_core/src/action.rs native/weft_core/src/failure/mod.rs native/weft_core/src/failure/heartbeat.rs native/weft_core/src/frame.rs native/weft_core/src/frame/fuzzing.rs native/weft_core/src/handshake.rs native/weft_core/src/lane.rs native/weft_core/src/membership/mod.rs native/weft_core/src/membership/callback.rs native/weft_core/src/membership/client_server.rs native/weft_core/src/membership/full_mesh.rs native/weft_core/src/membership/static_list.rs native/weft_core/src/node.rs native/weft_core/src/peers/mod.rs native/weft_core/src/peers/collision.rs native/weft_core/src/peers/peer.rs native/weft_core/src/placement.rs native/weft_core/src/rng.rs native/weft_core/src/spec.rs native/weft_core/src/stage.rs native/weft_core/src/types.rs native/weft_core/src/wire.rs

/work/main/target-old/release/deps/libweft_core-27bbe0992532e2dd.rlib: native/weft_core/src/lib.rs native/weft_core/src/action.rs native/weft_core/src/failure/mod.rs native/weft_core/src/failure/heartbeat.rs native/weft_core/src/frame.rs native/weft_core/src/frame/fuzzing.rs native/weft_core/src/handshake.rs native/weft_core/src/lane.rs native/weft_core/src/membership/mod.rs native/weft_core/src/membership/callback.rs native/weft_core/src/membership/client_server.rs native/weft_core/src/membership/full_mesh.rs native/weft_core/src/membership/static_list.rs native/weft_core/src/node.rs native/weft_core/src/peers/mod.rs native/weft_core/src/peers/collision.rs native/weft_core/src/peers/peer.rs native/weft_core/src/placement.rs native/weft_core/src/rng.rs native/weft_core/src/spec.rs native/weft_core/src/stage.rs native/weft_core/src/types.rs native/weft_core/src/wire.rs

/work/main/target-old/release/deps/libweft_core-27bbe0992532e2dd.rmeta: native/weft_core/src/lib.rs native/weft_core/src/action.rs native/weft_core/src/failure/mod.rs native/weft_core/src/failure/heartbeat.rs native/weft_core/src/frame.rs native/weft_core/src/frame/fuzzing.rs native/weft_core/src/handshake.rs native/weft_core/src/lane.rs native/weft_core/src/membership/mod.rs native/weft_core/src/membership/callback.rs native/weft_core/src/membership/client_server.rs native/weft_core/src/membership/full_mesh.rs native/weft_core/src/membership/static_list.rs native/weft_core/src/node.rs native/weft_core/src/peers/mod.rs native/weft_core/src/peers/collision.rs native/weft_core/src/peers/peer.rs native/weft_core/src/placement.rs native/weft_core/src/rng.rs native/weft_core/src/spec.rs native/weft_core/src/stage.rs native/weft_core/src/types.rs native/weft_core/src/wire.rs

native/weft_core/src/lib.rs:
native/weft_core/src/action.rs:
native/weft_core/src/failure/mod.rs:
native/weft_core/src/failure/heartbeat.rs:
native/weft_core/src/frame.rs:
native/weft_core/src/frame/fuzzing.rs:
native/weft_core/src/handshake.rs:
native/weft_core/src/lane.rs:
native/weft_core/src/membership/mod.rs:
native/weft_core/src/membership/callback.rs:
native/weft_core/src/membership/client_server.rs:
native/weft_core/src/membership/full_mesh.rs:
native/weft_core/src/membership/static_list.rs:
native/weft_core/src/node.rs:
native/weft_core/src/peers/mod.rs:
native/weft_core/src/peers/collision.rs:
native/weft_core/src/peers/peer.rs:
native/weft_core/src/placement.rs:
native/weft_core/src/rng.rs:
native/weft_core/src/spec.rs:
native/weft_core/src/stage.rs:
native/weft_core/src/types.rs:
native/weft_core/src/wire.rs:
