//! Buffers for received large frames, kept for reuse.
//!
//! A large frame is read straight into the buffer its message is then
//! delivered in (see [`crate::frame_reader`]). A fresh buffer of a frame's
//! size costs more than its bytes: an allocation that large is memory the
//! process maps anew and the kernel zeroes and faults in page by page (the
//! VM's allocators give a binary over their single-block threshold, 512 KiB
//! by default, a carrier of its own), and unmaps again when the message is
//! freed. A [`BufferPool`] keeps the buffers of freed frames, by size
//! class, and hands them to later frames of the same class; the buffers it
//! keeps idle are bounded in bytes (past the bound, a freed buffer goes back
//! to the allocator), and buffers in use are what the application holds, as
//! for any binary.
//!
//! Size classes: eight per doubling (a frame of `n` bytes gets a buffer of
//! at most `n * 9 / 8` rounded up to a multiple of 8 bytes), so a buffer of
//! one class fits every frame of that class.

use crate::sink::FrameBuffer;
use parking_lot::Mutex;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Buffers kept idle, by size class, and their bound.
#[derive(Debug)]
pub struct BufferPool {
    idle: Mutex<Idle>,
    /// Bytes of idle buffers kept at most.
    limit: AtomicUsize,
    stats: Stats,
}

#[derive(Debug)]
struct Idle {
    by_class: BTreeMap<usize, Vec<Vec<u8>>>,
    bytes: usize,
    /// The bound, as `BufferPool::limit` (read here under the lock, so
    /// that a buffer given back while the bound is lowered is held to the
    /// new one).
    limit: usize,
}

impl Idle {
    /// Whether a buffer of `size` bytes (a size class) may be kept now: at
    /// most a quarter of the bound, and under it with the others.
    fn keeps(&self, size: usize) -> bool {
        size > 0 && size <= self.limit / 4 && self.bytes + size <= self.limit
    }
}

#[derive(Debug)]
struct Stats {
    allocated: AtomicU64,
    reused: AtomicU64,
    in_use_bytes: AtomicU64,
}

/// What a pool holds and has done (all counts since it was made).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Buffers taken from the allocator.
    pub allocated: u64,
    /// Buffers handed out again from the idle ones.
    pub reused: u64,
    /// Bytes of buffers handed out and not yet returned (frames being read,
    /// and messages the application still holds).
    pub in_use_bytes: u64,
    /// Bytes of buffers kept idle (at most [`BufferPool::limit`]).
    pub idle_bytes: u64,
}

/// The size of the buffer for a frame of `len` bytes: `len` rounded up to
/// one of eight steps per doubling (and to a multiple of 8 bytes).
pub fn size_class(len: usize) -> usize {
    if len <= 64 {
        return len.div_ceil(8).max(1) * 8;
    }
    // The step: an eighth of the power of two below `len`.
    let top = usize::BITS - 1 - (len - 1).leading_zeros();
    let step = 1usize << (top - 3);
    len.div_ceil(step).saturating_mul(step)
}

impl BufferPool {
    /// A pool that keeps at most `limit` bytes of idle buffers.
    pub const fn new(limit: usize) -> BufferPool {
        BufferPool {
            idle: Mutex::new(Idle {
                by_class: BTreeMap::new(),
                bytes: 0,
                limit,
            }),
            limit: AtomicUsize::new(limit),
            stats: Stats {
                allocated: AtomicU64::new(0),
                reused: AtomicU64::new(0),
                in_use_bytes: AtomicU64::new(0),
            },
        }
    }

    /// Bytes of idle buffers kept at most.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Keep at most `limit` bytes of idle buffers from now on: idle ones
    /// over a quarter of it are freed, then the largest until the rest
    /// fit (0 frees them all).
    pub fn set_limit(&self, limit: usize) {
        let freed = {
            let mut idle = self.idle.lock();
            idle.limit = limit;
            self.limit.store(limit, Ordering::Relaxed);
            let too_large = idle.by_class.split_off(&(limit / 4).saturating_add(1));
            idle.bytes -= too_large.iter().map(|(c, v)| c * v.len()).sum::<usize>();
            let mut freed: Vec<Vec<u8>> = too_large.into_values().flatten().collect();
            while idle.bytes > limit {
                let Some(mut last) = idle.by_class.last_entry() else {
                    break;
                };
                let class = *last.key();
                match last.get_mut().pop() {
                    Some(b) => {
                        idle.bytes -= class;
                        freed.push(b);
                    }
                    None => {
                        last.remove();
                    }
                }
            }
            freed
        };
        // (freed here, outside the lock)
        drop(freed);
    }

    /// A buffer of `len` bytes: an idle one of its size class, or a new
    /// one; `None` when the allocator has no memory for it.
    pub fn take(&'static self, len: usize) -> Option<PooledBuffer> {
        let class = size_class(len);
        let reused = {
            let mut idle = self.idle.lock();
            let found = idle.by_class.get_mut(&class).and_then(|v| v.pop());
            if found.is_some() {
                idle.bytes -= class;
            }
            found
        };
        let buf = match reused {
            Some(b) => {
                self.stats.reused.fetch_add(1, Ordering::Relaxed);
                b
            }
            None => {
                let b = zeroed(class)?;
                self.stats.allocated.fetch_add(1, Ordering::Relaxed);
                b
            }
        };
        self.stats
            .in_use_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Some(PooledBuffer {
            buf,
            len,
            pool: self,
        })
    }

    /// Keep `buf` (no longer in use) if it fits under the bound and is at
    /// most a quarter of it, else free it.
    fn give_back(&self, buf: Vec<u8>) {
        let size = buf.len();
        self.stats
            .in_use_bytes
            .fetch_sub(size as u64, Ordering::Relaxed);
        if size != size_class(size) {
            return;
        }
        let mut idle = self.idle.lock();
        if !idle.keeps(size) {
            return;
        }
        idle.bytes += size;
        idle.by_class.entry(size).or_default().push(buf);
    }

    /// What the pool holds and has done.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            allocated: self.stats.allocated.load(Ordering::Relaxed),
            reused: self.stats.reused.load(Ordering::Relaxed),
            in_use_bytes: self.stats.in_use_bytes.load(Ordering::Relaxed),
            idle_bytes: self.idle.lock().bytes as u64,
        }
    }
}

/// `n` zero bytes, or `None` when the allocator has none. Zeroed by the
/// allocator (`calloc`): a large allocation is fresh pages that the
/// kernel zeroes as they are first touched, so a new buffer whose frame
/// never comes costs address space, not memory (an idle one reused for it
/// costs what it already held).
fn zeroed(n: usize) -> Option<Vec<u8>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u8>(n).ok()?;
    // SAFETY: `layout` has a non-zero size; a non-null result is `n`
    // initialised (zero) bytes from the global allocator with that layout,
    // which is what `Vec::from_raw_parts` takes for a `Vec<u8>` of length
    // and capacity `n`.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout);
        if ptr.is_null() {
            return None;
        }
        Some(Vec::from_raw_parts(ptr, n, n))
    }
}

/// A buffer of a [`BufferPool`], `len` bytes of it in use; back to the pool
/// when dropped.
#[derive(Debug)]
pub struct PooledBuffer {
    /// The whole buffer (its size class; all of it initialised).
    buf: Vec<u8>,
    len: usize,
    pool: &'static BufferPool,
}

impl FrameBuffer for PooledBuffer {
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// A buffer past its class moves to a new one of the larger class
    /// (zeroed by the allocator, so only the bytes copied and those read
    /// later are touched); the old one goes back to the pool.
    fn grow(&mut self, len: usize) -> bool {
        if len > self.buf.len() {
            let Some(mut larger) = zeroed(size_class(len)) else {
                return false;
            };
            larger[..self.len].copy_from_slice(&self.buf[..self.len]);
            self.pool
                .stats
                .in_use_bytes
                .fetch_add(larger.len() as u64, Ordering::Relaxed);
            let old = std::mem::replace(&mut self.buf, larger);
            self.pool.give_back(old);
        }
        self.len = len;
        true
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(limit: usize) -> &'static BufferPool {
        Box::leak(Box::new(BufferPool::new(limit)))
    }

    /// Every length fits its class, the class wastes at most an eighth,
    /// and a class is its own class.
    #[test]
    fn size_classes() {
        for len in (1..5000).chain([65_536, 65_537, 524_288, 524_388, 8 << 20, (8 << 20) + 1]) {
            let c = size_class(len);
            assert!(c >= len, "{len} -> {c}");
            assert!(c <= len + len / 8 + 8, "{len} -> {c}");
            assert_eq!(size_class(c), c, "{len} -> {c}");
            assert_eq!(c % 8, 0);
        }
        assert_eq!(size_class(524_288), 524_288);
        assert_eq!(size_class(524_289), 524_288 + 65_536);
    }

    /// A freed buffer is handed to the next frame of its class, not to one
    /// of another class; the counts say so.
    #[test]
    fn reuses_by_class() {
        let p = pool(64 << 20);
        let a = p.take(600_000).unwrap();
        assert_eq!(a.bytes().len(), 600_000);
        let ptr = a.buf.as_ptr();
        drop(a);
        let s = p.stats();
        assert_eq!((s.allocated, s.reused, s.in_use_bytes), (1, 0, 0));
        assert_eq!(s.idle_bytes, size_class(600_000) as u64);
        let b = p.take(100_000).unwrap();
        assert_ne!(b.buf.as_ptr(), ptr);
        let c = p.take(590_000).unwrap();
        assert_eq!(c.buf.as_ptr(), ptr);
        assert_eq!(c.bytes().len(), 590_000);
        let s = p.stats();
        assert_eq!((s.allocated, s.reused, s.idle_bytes), (2, 1, 0));
        assert_eq!(
            s.in_use_bytes,
            (size_class(100_000) + size_class(600_000)) as u64
        );
    }

    /// Idle buffers stay under the bound; a buffer over a quarter of it is
    /// never kept; a lower bound frees idle ones down to it, 0 all of
    /// them and keeps none.
    #[test]
    fn idle_bytes_are_bounded() {
        let p = pool(4 << 20);
        let bufs: Vec<_> = (0..10).map(|_| p.take(1 << 20).unwrap()).collect();
        drop(bufs);
        assert_eq!(p.stats().idle_bytes, 4 << 20);
        assert_eq!(p.stats().in_use_bytes, 0);
        drop(p.take(2 << 20).unwrap());
        assert_eq!(p.stats().idle_bytes, 4 << 20);
        // (a quarter of 3 MiB is under 1 MiB: none of them is kept)
        p.set_limit(3 << 20);
        assert_eq!(p.stats().idle_bytes, 0);
        let bufs: Vec<_> = (0..10).map(|_| p.take(512 * 1024).unwrap()).collect();
        drop(bufs);
        assert_eq!(p.stats().idle_bytes, 3 << 20);
        p.set_limit(2 << 20);
        assert_eq!(p.stats().idle_bytes, 2 << 20);
        p.set_limit(0);
        assert_eq!(p.stats().idle_bytes, 0);
        drop(p.take(100_000).unwrap());
        assert_eq!(p.stats().idle_bytes, 0);
        p.set_limit(8 << 20);
        drop(p.take((1 << 20) + 1).unwrap());
        assert_eq!(p.stats().idle_bytes, size_class((1 << 20) + 1) as u64);
    }

    /// A buffer grows past its class (a frame whose buffer was not
    /// allocated whole), keeping its bytes, and counts what it took.
    #[test]
    fn grows_keeping_bytes() {
        let p = pool(64 << 20);
        let mut b = p.take(16 * 1024).unwrap();
        b.bytes_mut().fill(7);
        assert!(b.grow(100_000));
        assert_eq!(b.bytes().len(), 100_000);
        assert!(b.bytes()[..16 * 1024].iter().all(|&x| x == 7));
        // (the 16 KiB buffer it left is idle again)
        assert_eq!(p.stats().in_use_bytes, size_class(100_000) as u64);
        assert_eq!(p.stats().idle_bytes, 16 * 1024);
        drop(b);
        assert_eq!(p.stats().in_use_bytes, 0);
        assert_eq!(
            p.stats().idle_bytes,
            (size_class(100_000) + 16 * 1024) as u64
        );
    }
}
