//! The body of the `etf` fuzz target (`fuzz/fuzz_targets/etf.rs`), shared
//! with the corpus replay test (`tests/corpus.rs`) so that `cargo test`
//! checks the committed corpus with the same code, without nightly.
//!
//! [`PeakAlloc`] is a global allocator that records the peak of live heap
//! bytes; a binary that installs it (the fuzz target, the replay test) gets
//! the allocation bound checked too.

use crate::value::{encode, Value, ValueBuilder};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// Binaries of at least this many bytes are marked shared in the fuzz runs.
pub const SHARE_MIN: usize = 8;

/// The allocation bound: peak live heap bytes while decoding `len` bytes.
pub fn alloc_bound(len: usize) -> usize {
    4 * std::mem::size_of::<Value>() * len + 64 * 1024
}

/// Decode `data` with the [`ValueBuilder`], checking what must hold for any
/// input: no panic, heap use linear in the input, and a decoded term
/// re-encodes to bytes that decode to the same term.
pub fn etf(data: &[u8]) {
    let (v, peak) = measure(|| crate::decode(data, &mut ValueBuilder::new(data, SHARE_MIN)));
    assert!(
        peak <= alloc_bound(data.len()),
        "decoding {} bytes used {peak} bytes of heap (bound {})",
        data.len(),
        alloc_bound(data.len())
    );
    let Some(v) = v else { return };
    let again = encode(&v);
    let w = crate::decode(&again, &mut ValueBuilder::new(&again, SHARE_MIN));
    assert_eq!(w.as_ref(), Some(&v), "re-encoded term decodes differently");
}

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A global allocator (the system's) that counts live bytes and their peak.
pub struct PeakAlloc;

impl PeakAlloc {
    fn grew(by: usize) {
        let live = LIVE.fetch_add(by, Relaxed) + by;
        PEAK.fetch_max(live, Relaxed);
    }
}

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Relaxed);
        let p = System.alloc(layout);
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Relaxed);
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                Self::grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

/// Run `f`; with [`PeakAlloc`] installed, also the peak of heap bytes it
/// held above what was live when it started (0 without it).
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let r = f();
    let peak = PEAK.load(Relaxed).saturating_sub(base);
    if INSTALLED.load(Relaxed) {
        (r, peak)
    } else {
        (r, 0)
    }
}
