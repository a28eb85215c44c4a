//! Heap use of the decoder stays linear in its input, whatever lengths the
//! input claims: inputs that the `etf` fuzz target found
//! (`tests/regressions/`) and the worst cases built by hand, through the
//! fuzz target's body with the allocation bound checked. (One test in this
//! binary: the allocation counter is process-wide.)

use std::path::Path;
use weft_etf::fuzzing::{alloc_bound, etf, measure, PeakAlloc};
use weft_etf::value::ValueBuilder;
use weft_etf::MAX_DEPTH;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// `depth` nested terms, each announcing as many elements as there are
/// bytes left, then `filler` bytes.
fn greedy(depth: usize, filler: usize) -> Vec<u8> {
    let mut b = vec![131];
    let total = 1 + 5 * depth + filler;
    for _ in 0..depth {
        let left = (total - b.len() - 5) as u32;
        b.push(105); // LARGE_TUPLE
        b.extend(left.to_be_bytes());
    }
    b.resize(total, 106);
    b
}

#[test]
fn heap_use_is_linear_in_the_input() {
    // what the fuzzer found
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| etf(&data));
        assert!(r.is_ok(), "{}", path.display());
    }
    // nested tuples of 255 and of every byte left, lists and maps too
    let mut small = vec![131];
    for _ in 0..MAX_DEPTH {
        small.extend([104, 255]);
    }
    small.resize(4096, 106);
    etf(&small);
    for depth in [2, 10, MAX_DEPTH] {
        for filler in [100, 100_000] {
            let input = greedy(depth, filler);
            let (v, peak) = measure(|| weft_etf::decode(&input, &mut ValueBuilder::new(&input, 8)));
            assert_eq!(v, None);
            assert!(
                peak <= alloc_bound(input.len()),
                "depth {depth}: {peak} bytes for {} of input",
                input.len()
            );
            // the same with lists and maps at every level
            for tag in [108, 116] {
                let mut other = input.clone();
                for level in 0..depth {
                    other[1 + 5 * level] = tag;
                }
                etf(&other);
            }
        }
    }
}
