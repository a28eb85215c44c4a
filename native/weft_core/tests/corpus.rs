//! Replays the committed inputs of the `control`, `handshake` and
//! `frame_header` fuzz targets (`fuzz/seeds/<target>/`, `fuzz/corpus/<target>/`) through the
//! same functions the targets run, so `cargo test` checks them without a
//! fuzzer. A missing directory is no failure.

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for kind in ["seeds", "corpus"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for e in dir.flatten() {
            if e.path().is_file() {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out
}

#[test]
fn control_inputs_replay() {
    for (path, data) in inputs("control") {
        let r = std::panic::catch_unwind(|| {
            weft_core::wire::fuzzing::control(&data);
            weft_core::membership::full_mesh::fuzzing::message(&data);
            if let Some(payload) = data.strip_prefix(&[1]) {
                weft_core::membership::full_mesh::fuzzing::message(payload);
            }
        });
        assert!(r.is_ok(), "{}", path.display());
    }
}

#[test]
fn handshake_inputs_replay() {
    for (path, data) in inputs("handshake") {
        let r = std::panic::catch_unwind(|| weft_core::handshake::fuzzing::handshake(&data));
        assert!(r.is_ok(), "{}", path.display());
    }
}

#[test]
fn frame_header_inputs_replay() {
    for (path, data) in inputs("frame_header") {
        let r = std::panic::catch_unwind(|| weft_core::frame::fuzzing::header(&data));
        assert!(r.is_ok(), "{}", path.display());
    }
}
