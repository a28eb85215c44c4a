//! Replays the committed fuzz corpus of the `etf` target
//! (`fuzz/seeds/etf/` and
//! `fuzz/corpus/etf/`) through the target's own body, with the allocation
//! bound checked, so that `cargo test` checks it on the stable toolchain.
//! Passes when a directory is missing. (One test in this binary:
//! the allocation counter is process-wide.)

use std::path::Path;
use weft_etf::fuzzing::PeakAlloc;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

#[test]
fn etf_corpus_replays() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    for dir in [root.join("seeds/etf"), root.join("corpus/etf")] {
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
            let r = std::panic::catch_unwind(|| weft_etf::fuzzing::etf(&data));
            assert!(r.is_ok(), "fuzz input {} fails", path.display());
            n += 1;
        }
        eprintln!("{n} inputs of {} replayed", dir.display());
    }
}
