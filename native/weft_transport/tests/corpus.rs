//! Replays the committed fuzz corpus of the `frame_reader` target
//! (`fuzz/seeds/frame_reader/` and
//! `fuzz/corpus/frame_reader/`) through the target's own body, so that
//! `cargo test` checks it on the stable toolchain. Passes when a directory is missing.

use std::path::Path;

#[test]
fn frame_reader_corpus_replays() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for dir in [
        root.join("seeds/frame_reader"),
        root.join("corpus/frame_reader"),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("no inputs at {}", dir.display());
            continue;
        };
        let mut n = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| weft_transport::fuzzing::frame_reader(&data));
            assert!(r.is_ok(), "fuzz input {} fails", path.display());
            n += 1;
        }
        eprintln!("{n} inputs of {} replayed", dir.display());
    }
}
