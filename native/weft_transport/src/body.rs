//! Frame bodies on the send path.
//!
//! A body is either bytes the transport owns (small messages, control
//! frames), or parts of memory that an owner keeps alive and unchanged until
//! the body is dropped. The NIF uses the second form for large messages: the
//! parts are the refc binaries that `erlang:term_to_iovec/1` returned, pinned
//! by a process-independent environment, so a payload goes from the sender's
//! heap to the socket with no copy in user space.

use std::io::IoSlice;

/// One frame body, written as a sequence of parts.
pub struct Body {
    repr: Repr,
    len: usize,
}

enum Repr {
    Owned(Vec<u8>),
    Pinned {
        parts: Vec<Part>,
        // Keeps the memory the parts point into alive; dropped with the body.
        _owner: Box<dyn Send>,
    },
}

#[derive(Clone, Copy)]
struct Part {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the parts point into memory that `_owner` keeps alive and that no
// one mutates while the body exists (the contract of `Body::pinned`), so the
// body may move to another thread with its owner.
unsafe impl Send for Body {}

impl Body {
    /// A body made of `parts`, read where they are.
    ///
    /// # Safety
    ///
    /// Every part must stay valid for reads, and unchanged, for as long as
    /// `owner` is alive; `owner` is dropped when the body is (on any thread).
    pub unsafe fn pinned<'a>(
        parts: impl IntoIterator<Item = &'a [u8]>,
        owner: Box<dyn Send>,
    ) -> Body {
        let parts: Vec<Part> = parts
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(|p| Part {
                ptr: p.as_ptr(),
                len: p.len(),
            })
            .collect();
        let len = parts.iter().map(|p| p.len).sum();
        Body {
            repr: Repr::Pinned {
                parts,
                _owner: owner,
            },
            len,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many parts [`Body::parts`] yields.
    pub fn part_count(&self) -> usize {
        match &self.repr {
            Repr::Owned(_) => 1,
            Repr::Pinned { parts, .. } => parts.len(),
        }
    }

    /// The body's parts, in order.
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        let (owned, pinned): (Option<&[u8]>, &[Part]) = match &self.repr {
            Repr::Owned(v) => (Some(v.as_slice()), &[]),
            Repr::Pinned { parts, .. } => (None, parts.as_slice()),
        };
        // SAFETY: valid while `self` (and so its owner) lives; see `pinned`.
        owned.into_iter().chain(
            pinned
                .iter()
                .map(|p| unsafe { std::slice::from_raw_parts(p.ptr, p.len) }),
        )
    }

    /// Fill `out` with slices of the bytes from offset `from` on; returns how
    /// many slices it filled (at most `out.len()`).
    pub fn fill<'a>(&'a self, from: usize, out: &mut [IoSlice<'a>]) -> usize {
        self.fill_max(from, out, usize::MAX)
    }

    /// As [`Body::fill`], with at most `max` bytes in the slices.
    pub fn fill_max<'a>(&'a self, mut from: usize, out: &mut [IoSlice<'a>], max: usize) -> usize {
        let mut n = 0;
        let mut left = max;
        for part in self.parts() {
            if n == out.len() || left == 0 {
                break;
            }
            if from >= part.len() {
                from -= part.len();
                continue;
            }
            let take = (part.len() - from).min(left);
            out[n] = IoSlice::new(&part[from..from + take]);
            left -= take;
            from = 0;
            n += 1;
        }
        n
    }

    /// The bytes as one vector (a copy for pinned bodies); for tests and
    /// for paths that need contiguous bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for p in self.parts() {
            v.extend_from_slice(p);
        }
        v
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        let len = v.len();
        Body {
            repr: Repr::Owned(v),
            len,
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.repr {
            Repr::Owned(_) => "owned",
            Repr::Pinned { .. } => "pinned",
        };
        write!(f, "Body({kind}, {} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    struct Owner(Vec<Vec<u8>>, Arc<AtomicBool>);
    impl Drop for Owner {
        fn drop(&mut self) {
            self.1.store(true, Ordering::SeqCst);
        }
    }

    fn pinned(parts: Vec<Vec<u8>>, dropped: Arc<AtomicBool>) -> Body {
        let owner = Box::new(Owner(parts, dropped));
        let slices: Vec<&[u8]> = owner.0.iter().map(|p| p.as_slice()).collect();
        // The vectors' heap memory does not move when the box moves.
        let slices: Vec<&'static [u8]> = slices
            .into_iter()
            .map(|s| unsafe { std::slice::from_raw_parts(s.as_ptr(), s.len()) })
            .collect();
        unsafe { Body::pinned(slices, owner) }
    }

    #[test]
    fn fill_starts_at_any_offset_and_skips_empty_parts() {
        let dropped = Arc::new(AtomicBool::new(false));
        let b = pinned(
            vec![b"abc".to_vec(), vec![], b"de".to_vec(), b"fghij".to_vec()],
            dropped.clone(),
        );
        assert_eq!(b.len(), 10);
        assert_eq!(b.part_count(), b.parts().count());
        assert_eq!(b.to_vec(), b"abcdefghij");
        for from in 0..=10 {
            let mut out = [IoSlice::new(&[]); 8];
            let n = b.fill(from, &mut out);
            let got: Vec<u8> = out[..n].iter().flat_map(|s| s.to_vec()).collect();
            assert_eq!(got, b"abcdefghij"[from..].to_vec(), "from {from}");
        }
        // a short output array takes what fits
        let mut out = [IoSlice::new(&[]); 2];
        assert_eq!(b.fill(1, &mut out), 2);
        assert_eq!(&*out[0], b"bc");
        assert_eq!(&*out[1], b"de");
        // a byte limit cuts the last slice
        let mut out = [IoSlice::new(&[]); 8];
        assert_eq!(b.fill_max(2, &mut out, 4), 3);
        assert_eq!(&*out[0], b"c");
        assert_eq!(&*out[1], b"de");
        assert_eq!(&*out[2], b"f");
        assert_eq!(b.fill_max(0, &mut out, 0), 0);
        // the owner lives exactly as long as the body, on any thread
        std::thread::spawn(move || drop(b)).join().unwrap();
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn owned_bodies_are_one_part() {
        let b = Body::from(b"hello".to_vec());
        assert_eq!(b.parts().count(), 1);
        assert_eq!(b.part_count(), 1);
        let mut out = [IoSlice::new(&[]); 4];
        assert_eq!(b.fill(2, &mut out), 1);
        assert_eq!(&*out[0], b"llo");
        assert!(Body::from(vec![]).is_empty());
    }
}
