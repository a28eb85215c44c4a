//! Reading frames from a non-blocking socket, a bounded amount at a time.
//!
//! [`FrameReader`] keeps what a connection has received but not yet
//! delivered: a read buffer for small frames, and the partly filled buffer of
//! a large frame. Each call to [`FrameReader::read`] reads until the socket
//! has nothing more (`Drained`) or the byte budget is used up (`Budget`: call
//! again later, the socket may hold more), handing each complete frame to a
//! callback as it goes, with the extensions of its header. Small frames are
//! handed as slices of the read buffer (no allocation); a data frame of
//! [`LARGE_FRAME`] bytes or more is read into a buffer from the allocator,
//! straight from the socket. A header, extensions included, is decoded whole
//! ([`decode_header`]) before its body is read: the buffer of a large frame
//! is allocated knowing exactly what the frame is, and a malformed header
//! ends the read before anything is allocated for it.
//!
//! What a header claims is not trusted with memory: a large frame's buffer
//! is allocated whole only while the claims of all large frames in
//! progress stay under a bound ([`Claims`]); past it, the buffer starts at
//! [`GROW_FROM`] bytes and doubles as the bytes come, so the memory a peer
//! holds follows what it has sent, not what it announced. A control frame
//! bigger than the read buffer grows that buffer the same way (and the
//! buffer shrinks back once the frame is handed out). An allocation that
//! fails ends the read ([`ReadError::NoMemory`]), never the process.

use crate::sink::FrameBuffer;
use std::any::Any;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use weft_core::frame::{
    decode_header, Extensions, FrameError, FrameKind, Parted, HEADER_LEN, PARTED_BODY,
};

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Eof,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// A whole frame that the callback refused (not a message, or not
    /// allowed on this connection).
    #[error("{0}")]
    Refused(String),
    /// No memory could be had for a frame of this many bytes.
    #[error("no memory for a frame of {0} bytes")]
    NoMemory(usize),
}

impl ReadError {
    /// A frame came that was not one: its header could not be read, or the
    /// callback refused it (as opposed to the socket failing or closing).
    pub fn is_bad_frame(&self) -> bool {
        matches!(self, ReadError::Frame(_) | ReadError::Refused(_))
    }
}

/// Application frames of at least this many bytes are read into a buffer
/// that the sink provides ([`Sink::frame_buffer`]) (see the module documentation).
///
/// [`Sink::frame_buffer`]: crate::sink::Sink::frame_buffer
pub const LARGE_FRAME: usize = 64 * 1024;

/// Size of the read buffer; a control frame larger than this grows it.
const BUFFER: usize = 64 * 1024;

/// The first size of a large frame's buffer that is not allocated whole
/// (see [`Claims`]); it doubles as the bytes come. Small: a peer that
/// announces frames and sends a byte of each must not make the node hold
/// much more than it sent (about what the kernel holds per connection).
pub const GROW_FROM: usize = 16 * 1024;

/// The default bound of [`Claims`]: bytes of large frames in progress, over
/// all connections, whose buffers are allocated whole when their header
/// comes.
pub const CLAIMS_LIMIT: u64 = 256 * 1024 * 1024;

/// The bytes that the headers of large frames in progress claimed and got
/// whole, over all connections of a transport, and their bound. A buffer
/// allocated whole at the header saves copies, but the header is only a
/// claim: without a bound, peers could announce frames that they never
/// send and have the node reserve the sum. Past the bound a frame still
/// comes in, into a buffer that grows with what arrives.
#[derive(Debug)]
pub struct Claims {
    claimed: AtomicU64,
    limit: u64,
    /// Large frames being received now (buffers handed out and not yet
    /// handed on or dropped).
    in_progress: AtomicU64,
}

impl Claims {
    /// Claims bounded by `limit` bytes.
    pub fn new(limit: u64) -> Arc<Claims> {
        Arc::new(Claims {
            claimed: AtomicU64::new(0),
            limit,
            in_progress: AtomicU64::new(0),
        })
    }

    /// Bytes claimed now.
    pub fn claimed(&self) -> u64 {
        self.claimed.load(Ordering::Relaxed)
    }

    /// The bound of the claims.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Large frames being received now, claimed or not.
    pub fn in_progress(&self) -> u64 {
        self.in_progress.load(Ordering::Relaxed)
    }

    /// The buffer for a large frame of `len` bytes, from `alloc` (which
    /// allocates the bytes it is asked for, or answers `None`): all `len`
    /// bytes if they fit under the bound with the other claims (released
    /// when the buffer is handed on or dropped), else the first
    /// [`GROW_FROM`] of them. `None` when there is no memory.
    pub fn buffer(
        self: &Arc<Self>,
        len: usize,
        alloc: impl FnOnce(usize) -> Option<Box<dyn FrameBuffer>>,
    ) -> Option<Box<dyn FrameBuffer>> {
        let n = len as u64;
        let claimed = self
            .claimed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c.saturating_add(n) <= self.limit).then_some(c + n)
            })
            .is_ok();
        let (size, n) = if claimed {
            (len, n)
        } else {
            (len.min(GROW_FROM), 0)
        };
        match alloc(size) {
            Some(inner) => {
                self.in_progress.fetch_add(1, Ordering::AcqRel);
                Some(Box::new(Claimed {
                    inner: Some(inner),
                    claims: self.clone(),
                    n,
                }))
            }
            None => {
                self.claimed.fetch_sub(n, Ordering::AcqRel);
                None
            }
        }
    }
}

/// A large frame's buffer, counted in [`Claims`] (with the claim of its
/// whole length when it got one) until handed on
/// ([`FrameBuffer::into_any`]) or dropped.
struct Claimed {
    inner: Option<Box<dyn FrameBuffer>>,
    claims: Arc<Claims>,
    n: u64,
}

impl Claimed {
    fn inner(&self) -> &dyn FrameBuffer {
        self.inner.as_deref().expect("until handed on")
    }
}

impl FrameBuffer for Claimed {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.inner
            .as_deref_mut()
            .expect("until handed on")
            .bytes_mut()
    }
    fn bytes(&self) -> &[u8] {
        self.inner().bytes()
    }
    fn grow(&mut self, len: usize) -> bool {
        self.inner
            .as_deref_mut()
            .expect("until handed on")
            .grow(len)
    }
    fn into_any(mut self: Box<Self>) -> Box<dyn Any> {
        self.inner.take().expect("handed on once").into_any()
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        self.claims.claimed.fetch_sub(self.n, Ordering::AcqRel);
        self.claims.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A large frame in progress.
struct Large {
    buf: Box<dyn FrameBuffer>,
    /// Bytes of it read so far.
    filled: usize,
    /// Its body's length.
    len: usize,
    ext: Extensions,
    /// A frame in parts: bytes of the current part still to read straight
    /// into the buffer (0: between parts, frames come through the read
    /// buffer). `None`: a frame whose body follows its header whole.
    part_left: Option<usize>,
}

impl Large {
    /// Bytes to read straight into the buffer now.
    fn straight(&self) -> usize {
        self.part_left.unwrap_or(self.len - self.filled)
    }

    /// Make room in the buffer for `need` bytes in all (a buffer that was
    /// not allocated whole grows: doubling, at least to `need`).
    fn room(&mut self, need: usize) -> Result<(), ReadError> {
        let have = self.buf.bytes().len();
        if need <= have {
            return Ok(());
        }
        let to = (have * 2).max(GROW_FROM).max(need).min(self.len);
        if need > to || !self.buf.grow(to) || self.buf.bytes().len() != to {
            return Err(ReadError::NoMemory(self.len));
        }
        Ok(())
    }
}

/// A frame handed to the callback (with the extensions of its header).
pub enum Frame<'a> {
    /// A control frame, or a data frame below [`LARGE_FRAME`] bytes.
    Small(FrameKind, &'a [u8]),
    /// A large data frame, in its own buffer.
    Large(Box<dyn FrameBuffer>),
}

/// Why a read stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// The socket has nothing more to read now.
    Drained,
    /// The budget is used up; the socket may have more.
    Budget,
    /// The peer closed the connection.
    Closed,
    /// The callback paused after a frame ([`Flow::Pause`]): what came after
    /// it stays in the reader, handed out by the next read.
    Paused,
}

/// What the reader does after the callback took a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Go,
    /// Stop here, before the next frame (a wait, see
    /// [`weft_core::share`]).
    Pause,
}

/// The callback that takes each frame: an error ends the read with that
/// reason.
pub type OnFrame<'f> = dyn FnMut(Frame<'_>, &Extensions) -> Result<Flow, String> + 'f;

/// The receiving state of one connection.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A large frame in progress.
    large: Option<Large>,
    /// Frames in parts: whether the peer agreed on them, and the checks of
    /// their order.
    parts: bool,
    parted: Parted,
    max: u64,
    read: u64,
    /// The peer closed its end (the socket's event said so): a short read
    /// no longer means the socket is empty, since the end of the stream
    /// raises no event of its own once that one was taken.
    peer_closed: bool,
    /// The callback paused after the last frame it took.
    paused: bool,
}

impl FrameReader {
    /// A reader that refuses frames whose body exceeds `max` bytes.
    pub fn new(max: u64) -> Self {
        FrameReader {
            buf: vec![0; BUFFER],
            start: 0,
            end: 0,
            large: None,
            parts: false,
            parted: Parted::default(),
            max,
            read: 0,
            peer_closed: false,
            paused: false,
        }
    }

    /// A reader that also takes frames in parts (the peer agreed on
    /// `parts`; see [`weft_core::frame`]).
    pub fn with_parts(max: u64) -> Self {
        FrameReader {
            parts: true,
            ..Self::new(max)
        }
    }

    /// The socket's readiness event said the peer closed its end (or the
    /// connection failed): from now on every read goes on until the end
    /// of the stream (or an error) rather than stop at a short read, so
    /// that the close is seen. Data and the close that come together raise
    /// one edge-triggered event, which a short read would leave unseen.
    pub fn peer_closed(&mut self) {
        self.peer_closed = true;
    }

    /// Whether a large frame is partly read.
    pub fn in_large_frame(&self) -> bool {
        self.large.is_some()
    }

    /// Bytes read from the socket so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Read up to about `budget` bytes from `src`, handing each complete
    /// frame to `on_frame`. An error from `on_frame` ends the read with
    /// that reason; [`Flow::Pause`] ends it after that frame
    /// ([`ReadStatus::Paused`]).
    pub fn read<S: Read>(
        &mut self,
        mut src: S,
        budget: usize,
        alloc: &dyn Fn(usize) -> Option<Box<dyn FrameBuffer>>,
        on_frame: &mut OnFrame<'_>,
    ) -> Result<ReadStatus, ReadError> {
        let mut left = budget;
        loop {
            // A large frame in progress reads straight into its buffer
            // (a frame in parts: to the end of the current part).
            if let Some(l) = self.large.as_mut().filter(|l| l.straight() > 0) {
                if l.filled == l.buf.bytes().len() {
                    // (a buffer that was not allocated whole: full, so it
                    // doubles)
                    l.room(l.filled + 1)?;
                }
                let rest = (l.buf.bytes().len() - l.filled).min(l.straight());
                if left == 0 {
                    return Ok(ReadStatus::Budget);
                }
                let want = rest.min(left);
                let dst = &mut l.buf.bytes_mut()[l.filled..l.filled + want];
                match read_some(&mut src, dst)? {
                    None => return Ok(ReadStatus::Drained),
                    Some(0) => return Ok(ReadStatus::Closed),
                    Some(n) => {
                        l.filled += n;
                        if let Some(p) = &mut l.part_left {
                            *p -= n;
                        }
                        self.read += n as u64;
                        left = left.saturating_sub(n);
                        if n < want && !self.peer_closed {
                            // A short read: the socket is empty now. Data
                            // that comes later raises a new event.
                            self.complete_large(on_frame)?;
                            return Ok(self.unless_paused(ReadStatus::Drained));
                        }
                    }
                }
                // (full and not complete: it grows above)
                self.complete_large(on_frame)?;
                if std::mem::take(&mut self.paused) {
                    return Ok(ReadStatus::Paused);
                }
                continue;
            }
            self.parse(alloc, on_frame)?;
            if std::mem::take(&mut self.paused) {
                return Ok(ReadStatus::Paused);
            }
            if self.large.as_ref().is_some_and(|l| l.straight() > 0) {
                continue;
            }
            if left == 0 {
                return Ok(ReadStatus::Budget);
            }
            // Room for more: move the partial frame to the front, and grow
            // the buffer when a (control) frame is bigger than it.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                // Doubling up to the frame's length, so that its memory
                // follows the bytes that came.
                let to = self
                    .frame_len()
                    .min(self.buf.len() * 2)
                    .max(self.buf.len() + 1);
                if self.buf.try_reserve_exact(to - self.buf.len()).is_err() {
                    return Err(ReadError::NoMemory(self.frame_len()));
                }
                self.buf.resize(to, 0);
            }
            let want = (self.buf.len() - self.end).min(left);
            match read_some(&mut src, &mut self.buf[self.end..self.end + want])? {
                None => return Ok(ReadStatus::Drained),
                Some(0) => return Ok(ReadStatus::Closed),
                Some(n) => {
                    self.end += n;
                    self.read += n as u64;
                    left = left.saturating_sub(n);
                    if n < want && !self.peer_closed {
                        // Short read: empty now (see above). Hand out what
                        // came, and start any large frame it begins.
                        self.parse(alloc, on_frame)?;
                        return Ok(self.unless_paused(ReadStatus::Drained));
                    }
                }
            }
        }
    }

    /// `status`, or [`ReadStatus::Paused`] if the callback paused (and
    /// the pause is over: the next read goes on).
    fn unless_paused(&mut self, status: ReadStatus) -> ReadStatus {
        if std::mem::take(&mut self.paused) {
            ReadStatus::Paused
        } else {
            status
        }
    }

    /// Hand out the large frame in progress if it is complete; whether it
    /// was.
    fn complete_large(&mut self, on_frame: &mut OnFrame<'_>) -> Result<bool, ReadError> {
        match &self.large {
            Some(l) if l.filled == l.len => {
                let Large { buf, ext, .. } = self.large.take().expect("large frame in progress");
                let flow = on_frame(Frame::Large(buf), &ext).map_err(ReadError::Refused)?;
                self.paused |= flow == Flow::Pause;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Bytes of the frame at `start` (header and body), or as many as its
    /// header needs to be decoded, so that the buffer can grow to hold it.
    fn frame_len(&self) -> usize {
        match decode_header(&self.buf[self.start..self.end], u64::MAX) {
            Ok(h) => h.header_len + h.body_len,
            Err(FrameError::Truncated { need }) => need,
            // (parse reports the error first)
            Err(_) => self.buf.len() + HEADER_LEN,
        }
    }

    /// Hand out every complete frame in the buffer; start a large frame if
    /// one begins (or the next part of one in parts).
    fn parse(
        &mut self,
        alloc: &dyn Fn(usize) -> Option<Box<dyn FrameBuffer>>,
        on_frame: &mut OnFrame<'_>,
    ) -> Result<(), ReadError> {
        while self.end > self.start && !self.paused {
            let h = match decode_header(&self.buf[self.start..self.end], self.max) {
                Ok(h) => h,
                Err(FrameError::Truncated { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let (kind, len) = (h.kind, h.body_len);
            let body = self.start + h.header_len;
            if matches!(kind, FrameKind::Parted | FrameKind::Part) && !self.parts {
                return Err(ReadError::Refused(
                    "a frame in parts on a connection that takes none (the control lane, or a peer that did not agree on parts)".into(),
                ));
            }
            if kind == FrameKind::Part {
                // The next bytes of the frame in parts: those here now are
                // copied, the rest are read straight into its buffer.
                if h.header_len != HEADER_LEN {
                    return Err(FrameError::Malformed {
                        what: "parted frame",
                        detail: "a part with header extensions".into(),
                    }
                    .into());
                }
                let done = self.parted.part(len)?;
                let have = (self.end - body).min(len);
                let Some(l) = self.large.as_mut() else {
                    return Err(ReadError::Refused("a part without its frame".into()));
                };
                l.room(l.filled + have)?;
                l.buf.bytes_mut()[l.filled..l.filled + have]
                    .copy_from_slice(&self.buf[body..body + have]);
                l.filled += have;
                l.part_left = Some(len - have);
                self.start = body + have;
                if have < len {
                    return Ok(());
                }
                if done {
                    self.complete_large(on_frame)?;
                }
                continue;
            }
            self.parted.between(kind, len)?;
            if kind == FrameKind::Parted {
                // (a body other than the 8-byte total is refused before
                // its bytes are waited for)
                if len != PARTED_BODY {
                    return Err(FrameError::Malformed {
                        what: "parted frame",
                        detail: format!("body of {len} bytes"),
                    }
                    .into());
                }
                if self.end - body < len {
                    return Ok(());
                }
                let total = self.parted.begin(&self.buf[body..body + len], self.max)?;
                self.start = body + len;
                self.large = Some(Large {
                    buf: large_buffer(alloc, total)?,
                    filled: 0,
                    len: total,
                    ext: h.ext,
                    part_left: Some(0),
                });
                continue;
            }
            if kind == FrameKind::Data && len >= LARGE_FRAME {
                let mut buf = large_buffer(alloc, len)?;
                let have = (self.end - body).min(len);
                if have > buf.bytes().len() && (!buf.grow(have) || buf.bytes().len() != have) {
                    return Err(ReadError::NoMemory(len));
                }
                buf.bytes_mut()[..have].copy_from_slice(&self.buf[body..body + have]);
                self.start = body + have;
                self.large = Some(Large {
                    buf,
                    filled: have,
                    len,
                    ext: h.ext,
                    part_left: None,
                });
                if have < len {
                    return Ok(());
                }
                self.complete_large(on_frame)?;
                continue;
            }
            if self.end - body < len {
                return Ok(());
            }
            self.start = body + len;
            let flow = on_frame(Frame::Small(kind, &self.buf[body..body + len]), &h.ext)
                .map_err(ReadError::Refused)?;
            self.paused |= flow == Flow::Pause;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // (grown for a large control frame: not kept for the
            // connection's life)
            if self.buf.len() > BUFFER {
                self.buf = vec![0; BUFFER];
            }
        }
        Ok(())
    }
}

/// The buffer of a large frame of `len` bytes, from `alloc` (all of it,
/// or its first bytes past the claims' bound).
fn large_buffer(
    alloc: &dyn Fn(usize) -> Option<Box<dyn FrameBuffer>>,
    len: usize,
) -> Result<Box<dyn FrameBuffer>, ReadError> {
    let buf = alloc(len).ok_or(ReadError::NoMemory(len))?;
    let cap = buf.bytes().len();
    if cap == 0 || cap > len {
        return Err(ReadError::Io(io::Error::other(
            "frame buffer of the wrong size",
        )));
    }
    Ok(buf)
}

/// One read: `None` when it would block.
fn read_some<S: Read>(src: &mut S, dst: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match src.read(dst) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::frame::{encode_header, header};

    /// A source that hands out its bytes in chunks of the given sizes,
    /// then would block (or ends, if `eof`).
    struct Chunks {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        next: usize,
        eof: bool,
    }

    impl Read for &mut Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let chunk = self.sizes.get(self.next).copied().unwrap_or(usize::MAX);
            self.next += 1;
            let n = chunk.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
        [header(kind, body.len()).as_slice(), body].concat()
    }

    fn frame_ext(kind: FrameKind, ext: &Extensions, body: &[u8]) -> Vec<u8> {
        [&encode_header(kind, body.len(), ext).unwrap()[..], body].concat()
    }

    fn ext(seq: u64) -> Extensions {
        Extensions {
            seq: Some(seq),
            trace: Some([9; 16]),
            destination: Some("far@away".into()),
            ..Default::default()
        }
    }

    fn alloc(n: usize) -> Option<Box<dyn FrameBuffer>> {
        Some(Box::new(vec![0u8; n]))
    }

    type Got = Vec<(FrameKind, Vec<u8>, Extensions)>;

    /// One call to `read`: its status and the frames it handed out.
    fn try_collect(
        r: &mut FrameReader,
        src: &mut Chunks,
        budget: usize,
    ) -> Result<(ReadStatus, Got), ReadError> {
        let mut got = Vec::new();
        let status = r.read(src, budget, &alloc, &mut |f, e| {
            got.push(match f {
                Frame::Small(k, b) => (k, b.to_vec(), e.clone()),
                Frame::Large(b) => (FrameKind::Data, b.bytes().to_vec(), e.clone()),
            });
            Ok(Flow::Go)
        })?;
        Ok((status, got))
    }

    fn collect(r: &mut FrameReader, src: &mut Chunks, budget: usize) -> (ReadStatus, Got) {
        try_collect(r, src, budget).unwrap()
    }

    /// A pause after a frame ends the read there; the frames after it,
    /// already read from the socket, come out of the next read, which
    /// reads nothing more until they are out.
    #[test]
    fn a_pause_ends_the_read_after_its_frame_and_the_next_read_goes_on() {
        let big: Vec<u8> = (0..LARGE_FRAME + 10).map(|i| i as u8).collect();
        let data = [
            frame(FrameKind::Data, b"one"),
            frame(FrameKind::Control, b"wait"),
            frame(FrameKind::Data, b"two"),
            frame(FrameKind::Data, &big),
            frame(FrameKind::Data, b"three"),
        ]
        .concat();
        let len = data.len() as u64;
        let mut src = Chunks {
            data,
            pos: 0,
            sizes: vec![],
            next: 0,
            eof: false,
        };
        let mut r = FrameReader::new(1 << 20);
        let mut got: Vec<Vec<u8>> = Vec::new();
        fn read(
            r: &mut FrameReader,
            src: &mut Chunks,
            got: &mut Vec<Vec<u8>>,
            pause_on: &[u8],
        ) -> ReadStatus {
            r.read(src, 1 << 20, &alloc, &mut |f, _| {
                let b = match f {
                    Frame::Small(_, b) => b.to_vec(),
                    Frame::Large(b) => b.bytes().to_vec(),
                };
                let pause = b == pause_on;
                got.push(b);
                Ok(if pause { Flow::Pause } else { Flow::Go })
            })
            .unwrap()
        }
        assert_eq!(
            read(&mut r, &mut src, &mut got, b"wait"),
            ReadStatus::Paused
        );
        assert_eq!(got, [b"one".to_vec(), b"wait".to_vec()]);
        // (a large frame pauses too)
        assert_eq!(read(&mut r, &mut src, &mut got, &big), ReadStatus::Paused);
        assert_eq!(got.len(), 4);
        assert_eq!(read(&mut r, &mut src, &mut got, b"-"), ReadStatus::Drained);
        assert_eq!(got.last().unwrap(), b"three");
        assert_eq!(r.bytes_read(), len);
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let big: Vec<u8> = (0..LARGE_FRAME + 10).map(|i| i as u8).collect();
        let control = vec![7u8; 3 * BUFFER];
        let none = Extensions::default();
        let mut data = Vec::new();
        data.extend(frame(FrameKind::Data, b"one"));
        data.extend(frame(FrameKind::Data, &big));
        data.extend(frame(FrameKind::Control, &control));
        data.extend(frame_ext(FrameKind::Data, &ext(1), b"two"));
        data.extend(frame_ext(FrameKind::Data, &ext(2), &big));
        data.extend(frame(FrameKind::Data, b""));
        data.extend(frame_ext(FrameKind::Data, &ext(3), b""));
        data.extend(frame(FrameKind::Data, b"last"));
        let want = vec![
            (FrameKind::Data, b"one".to_vec(), none.clone()),
            (FrameKind::Data, big.clone(), none.clone()),
            (FrameKind::Control, control.clone(), none.clone()),
            (FrameKind::Data, b"two".to_vec(), ext(1)),
            (FrameKind::Data, big.clone(), ext(2)),
            (FrameKind::Data, vec![], none.clone()),
            (FrameKind::Data, vec![], ext(3)),
            (FrameKind::Data, b"last".to_vec(), none),
        ];
        for chunk in [1, 2, 3, 5, 7, 100, 4096, 70_000, usize::MAX] {
            let mut src = Chunks {
                data: data.clone(),
                pos: 0,
                sizes: vec![chunk; 1_000_000],
                next: 0,
                eof: false,
            };
            let mut r = FrameReader::new(1 << 20);
            let mut got = Vec::new();
            // A short read counts as "empty for now": the poller calls
            // again on the next event, as this loop does.
            for _ in 0..10_000_000 {
                let (status, mut g) = collect(&mut r, &mut src, 50_000);
                got.append(&mut g);
                assert_ne!(status, ReadStatus::Closed);
                if src.pos == src.data.len() && status == ReadStatus::Drained {
                    break;
                }
            }
            assert_eq!(got, want, "chunks of {chunk}");
        }
    }

    /// A message sent in parts, as a lane writer lays it out: the parted
    /// frame, then the parts, with `between[k]` (whole frames) after part
    /// `k`.
    fn in_parts(body: &[u8], between: &[(usize, Vec<u8>)]) -> Vec<u8> {
        let l = weft_core::frame::PartedLayout {
            body_len: body.len(),
        };
        let mut out = l.begin().to_vec();
        for (k, part) in body.chunks(weft_core::frame::PART_BYTES).enumerate() {
            out.extend(frame(FrameKind::Part, part));
            for (at, f) in between {
                if *at == k {
                    out.extend(f);
                }
            }
        }
        out
    }

    /// Read `data` in chunks of `chunk` bytes, with `parts` or not;
    /// what came, or the error.
    fn read_all(data: &[u8], chunk: usize, parts: bool) -> Result<Got, ReadError> {
        let mut src = Chunks {
            data: data.to_vec(),
            pos: 0,
            sizes: vec![chunk; 10_000_000],
            next: 0,
            eof: false,
        };
        let max = 1 << 27;
        let mut r = if parts {
            FrameReader::with_parts(max)
        } else {
            FrameReader::new(max)
        };
        let mut got = Vec::new();
        for _ in 0..10_000_000 {
            let (status, mut g) = try_collect(&mut r, &mut src, 300_000)?;
            got.append(&mut g);
            assert_ne!(status, ReadStatus::Closed);
            if src.pos == src.data.len() && status == ReadStatus::Drained {
                break;
            }
        }
        Ok(got)
    }

    /// Frames in parts come out whole, at their end, with the small frames
    /// that came between their parts handed out as they came; however the
    /// bytes are split.
    #[test]
    fn frames_in_parts_come_out_whole_with_small_frames_between() {
        let part = weft_core::frame::PART_BYTES;
        let body: Vec<u8> = (0..2 * part + 1000).map(|i| (i % 251) as u8).collect();
        let exact: Vec<u8> = (0..3 * part).map(|i| (i % 241) as u8).collect();
        let none = Extensions::default();
        let small = vec![9u8; weft_core::frame::INTERLEAVE_MAX];
        let mut data = frame(FrameKind::Data, b"first");
        data.extend(in_parts(
            &body,
            &[
                (0, frame(FrameKind::Data, b"between")),
                (0, frame_ext(FrameKind::Data, &ext(7), b"ext")),
                (1, frame(FrameKind::Data, &small)),
            ],
        ));
        data.extend(in_parts(&exact, &[(1, frame(FrameKind::Data, b""))]));
        data.extend(frame(FrameKind::Data, b"last"));
        let want = vec![
            (FrameKind::Data, b"first".to_vec(), none.clone()),
            (FrameKind::Data, b"between".to_vec(), none.clone()),
            (FrameKind::Data, b"ext".to_vec(), ext(7)),
            (FrameKind::Data, small.clone(), none.clone()),
            (FrameKind::Data, body.clone(), none.clone()),
            (FrameKind::Data, vec![], none.clone()),
            (FrameKind::Data, exact.clone(), none.clone()),
            (FrameKind::Data, b"last".to_vec(), none.clone()),
        ];
        for chunk in [1, 3, 4096, 65_536, 70_000, 300_000, usize::MAX] {
            assert_eq!(
                read_all(&data, chunk, true).unwrap(),
                want,
                "chunks of {chunk}"
            );
        }
    }

    /// Parts that do not come as a writer sends them end the read: from a
    /// peer that did not agree on parts, a part without its frame, a frame
    /// in parts inside another, too many bytes, an empty part, a part with
    /// extensions, a control frame or a large data frame between parts, a total that is not larger than a part or
    /// over the limit, a parted frame whose body is not the 8-byte total.
    #[test]
    fn parts_out_of_place_end_the_read() {
        let part = weft_core::frame::PART_BYTES;
        let body = vec![1u8; part + 10];
        let good = in_parts(&body, &[]);
        assert!(read_all(&good, usize::MAX, true).is_ok());
        let begin = weft_core::frame::PartedLayout {
            body_len: body.len(),
        }
        .begin()
        .to_vec();
        let total = |n: u64| [&header(FrameKind::Parted, 8)[..], &n.to_be_bytes()].concat();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not agreed", good.clone()),
            ("part alone", frame(FrameKind::Part, b"x")),
            ("parted in parted", [begin.clone(), begin.clone()].concat()),
            (
                "too many bytes",
                [
                    begin.clone(),
                    frame(FrameKind::Part, &vec![0; part]),
                    frame(FrameKind::Part, &[0; 11]),
                ]
                .concat(),
            ),
            (
                "empty part",
                [begin.clone(), frame(FrameKind::Part, b"")].concat(),
            ),
            (
                "part with extensions",
                [begin.clone(), frame_ext(FrameKind::Part, &ext(1), b"x")].concat(),
            ),
            (
                "control between",
                [begin.clone(), frame(FrameKind::Control, b"beat")].concat(),
            ),
            (
                "large between",
                [begin.clone(), frame(FrameKind::Data, &vec![0; LARGE_FRAME])].concat(),
            ),
            ("part-sized total", total(part as u64)),
            ("total over the limit", total(1 << 28)),
            ("short body", frame(FrameKind::Parted, &[0; 7])),
            ("long body", frame(FrameKind::Parted, &[0; 9])),
            ("huge body", header(FrameKind::Parted, 1 << 20).to_vec()),
        ];
        for (what, data) in cases {
            let parts = what != "not agreed";
            for chunk in [1, usize::MAX] {
                let r = read_all(&data, chunk, parts);
                assert!(
                    r.as_ref().is_err_and(|e| e.is_bad_frame()),
                    "{what}: {:?}",
                    r.map(|g| g.len())
                );
            }
        }
    }

    #[test]
    fn budget_bounds_one_call_and_eof_is_reported() {
        let mut data = Vec::new();
        for i in 0..100u8 {
            data.extend(frame(FrameKind::Data, &[i; 1000]));
        }
        let mut src = Chunks {
            data,
            pos: 0,
            sizes: vec![usize::MAX; 1000],
            next: 0,
            eof: true,
        };
        let mut r = FrameReader::new(1 << 20);
        let (status, got) = collect(&mut r, &mut src, 10_000);
        assert_eq!(status, ReadStatus::Budget);
        assert!(got.len() < 12, "{} frames in one call", got.len());
        // reads that fill the buffer do not stop early
        assert!(got.len() >= 9, "{} frames in one call", got.len());
        let mut total = got.len();
        loop {
            let (status, got) = collect(&mut r, &mut src, 10_000);
            total += got.len();
            if status == ReadStatus::Closed {
                break;
            }
        }
        assert_eq!(total, 100);
    }

    #[test]
    fn a_short_read_ends_the_call_without_another_read() {
        struct Once(Vec<u8>, usize);
        impl Read for &mut Once {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 += 1;
                assert_eq!(self.1, 1, "read again after a short read");
                let n = self.0.len().min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                Ok(n)
            }
        }
        let mut src = Once(frame(FrameKind::Data, b"ping"), 0);
        let mut r = FrameReader::new(1000);
        let mut n = 0;
        let status = r.read(&mut src, 1 << 20, &alloc, &mut |_, _| {
            n += 1;
            Ok(Flow::Go)
        });
        assert_eq!(status.unwrap(), ReadStatus::Drained);
        assert_eq!(n, 1);
    }

    #[test]
    fn once_the_peer_closed_a_short_read_goes_on_to_the_end() {
        // The last data and the close came together: one event. A short
        // read must not end the call then, or the close is never seen.
        for (small, large) in [(true, false), (false, true)] {
            let body = if large {
                vec![7; LARGE_FRAME + 5000]
            } else {
                b"last".to_vec()
            };
            let make = || Chunks {
                data: frame(FrameKind::Data, &body),
                pos: 0,
                // the large frame's body comes short of what is asked
                sizes: vec![usize::MAX, 1000],
                next: 0,
                eof: true,
            };
            // a read much bigger than what is there: short
            let budget = 4 * LARGE_FRAME;
            let mut r = FrameReader::new(1 << 20);
            let (status, got) = collect(&mut r, &mut make(), budget);
            let before = if small { 1 } else { 0 };
            assert_eq!(
                (status, got.len()),
                (ReadStatus::Drained, before),
                "small {small}"
            );
            let mut r = FrameReader::new(1 << 20);
            r.peer_closed();
            let (status, got) = collect(&mut r, &mut make(), budget);
            assert_eq!(
                (status, got.len()),
                (ReadStatus::Closed, 1),
                "small {small}"
            );
            assert_eq!(got[0].1, body);
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_reading_them() {
        let mut src = Chunks {
            data: header(FrameKind::Data, 2000).to_vec(),
            pos: 0,
            sizes: vec![],
            next: 0,
            eof: false,
        };
        let mut r = FrameReader::new(1000);
        let res = r.read(&mut src, 1 << 20, &alloc, &mut |_, _| Ok(Flow::Go));
        assert!(
            matches!(res, Err(ReadError::Frame(_))),
            "{:?}",
            res.map(|_| ())
        );
    }

    #[test]
    fn a_callback_error_ends_the_read() {
        let mut src = Chunks {
            data: frame(FrameKind::Control, b"garbage"),
            pos: 0,
            sizes: vec![],
            next: 0,
            eof: false,
        };
        let mut r = FrameReader::new(1000);
        let res = r.read(&mut src, 1 << 20, &alloc, &mut |_, _| {
            Err("bad control frame".into())
        });
        assert!(res.is_err());
    }

    /// A header whose extensions are malformed ends the read before its
    /// frame is allocated, even when it announces a large frame.
    #[test]
    fn a_bad_extension_ends_the_read_before_any_allocation() {
        let mut bad = encode_header(FrameKind::Data, LARGE_FRAME, &ext(1))
            .unwrap()
            .to_vec();
        let n = bad.len();
        bad[n - 1] = 0; // destination "far@awa\0": not a node name
        let mut src = Chunks {
            data: bad,
            pos: 0,
            sizes: vec![3; 100],
            next: 0,
            eof: false,
        };
        let mut r = FrameReader::new(1 << 20);
        let no_alloc = |_: usize| -> Option<Box<dyn FrameBuffer>> { panic!("allocated") };
        let mut res = Ok(ReadStatus::Drained);
        for _ in 0..100 {
            res = r.read(&mut src, 1 << 20, &no_alloc, &mut |_, _| Ok(Flow::Go));
            if res.is_err() {
                break;
            }
        }
        assert!(
            matches!(res, Err(ReadError::Frame(FrameError::Malformed { .. }))),
            "{:?}",
            res.map(|_| ())
        );
    }

    fn src(data: Vec<u8>) -> Chunks {
        Chunks {
            data,
            pos: 0,
            sizes: vec![],
            next: 0,
            eof: false,
        }
    }

    /// Claims: a frame gets its whole buffer while the claims stay under
    /// the bound, and gives the claim back when handed on or dropped; past
    /// the bound it gets only [`GROW_FROM`] bytes to start.
    #[test]
    fn claims_are_bounded_and_given_back() {
        let claims = Claims::new(5 << 20);
        let sizes = std::cell::RefCell::new(Vec::new());
        let alloc = |n: usize| {
            sizes.borrow_mut().push(n);
            Some(Box::new(vec![0u8; n]) as Box<dyn FrameBuffer>)
        };
        let a = claims.buffer(3 << 20, alloc).unwrap();
        assert_eq!(claims.claimed(), 3 << 20);
        let b = claims.buffer(3 << 20, alloc).unwrap();
        assert_eq!(b.bytes().len(), GROW_FROM, "past the bound");
        assert_eq!(claims.claimed(), 3 << 20);
        let c = claims.buffer(2 << 20, alloc).unwrap();
        assert_eq!(claims.claimed(), 5 << 20);
        assert_eq!(claims.in_progress(), 3);
        assert!(
            a.into_any().downcast::<Vec<u8>>().is_ok(),
            "the sink gets its own type back"
        );
        assert_eq!(claims.claimed(), 2 << 20);
        assert_eq!(claims.in_progress(), 2);
        drop(c);
        assert_eq!(claims.claimed(), 0);
        drop(b);
        assert_eq!(claims.in_progress(), 0);
        assert_eq!(*sizes.borrow(), [3 << 20, GROW_FROM, 2 << 20]);
        // no memory: nothing stays claimed
        assert!(claims.buffer(1 << 20, |_| None).is_none());
        assert_eq!(claims.claimed(), 0);
    }

    /// A header alone does not make the reader allocate what it announces:
    /// past the claims' bound a large frame's buffer follows the bytes that
    /// came (at most twice them), and the frame still arrives whole.
    #[test]
    fn past_the_claims_memory_follows_the_bytes_that_came() {
        let len = (5 << 20) + 3;
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let whole = frame(FrameKind::Data, &body);
        let claims = Claims::new(0);
        let biggest = std::cell::Cell::new(0usize);
        let alloc = |n: usize| {
            claims.buffer(n, |n| {
                biggest.set(biggest.get().max(n));
                Some(Box::new(vec![0u8; n]) as Box<dyn FrameBuffer>)
            })
        };
        let mut r = FrameReader::new(1 << 30);
        let mut got = Vec::new();
        let mut fed = 0;
        for step in [HEADER_LEN + 10, 1 << 20, 2 << 20, whole.len()] {
            let mut s = src(whole[fed..step.min(whole.len())].to_vec());
            fed = step.min(whole.len());
            r.read(&mut s, usize::MAX, &alloc, &mut |f, _| {
                if let Frame::Large(b) = f {
                    got.push(b.bytes().to_vec());
                }
                Ok(Flow::Go)
            })
            .unwrap();
            let held = r.large.as_ref().map_or(0, |l| l.buf.bytes().len());
            let came = fed - HEADER_LEN;
            assert!(
                held <= (2 * came).max(GROW_FROM),
                "{held} bytes held for {came} received"
            );
        }
        assert_eq!(biggest.get(), GROW_FROM, "never allocated whole");
        assert_eq!(got, [body]);
        assert_eq!(claims.claimed(), 0);
    }

    /// No memory for a frame ends the read with `NoMemory` (the connection
    /// closes), whether at the header or while the buffer grows; it never
    /// aborts.
    #[test]
    fn no_memory_ends_the_read() {
        let whole = frame(FrameKind::Data, &vec![1u8; 3 << 20]);
        let none = |_: usize| -> Option<Box<dyn FrameBuffer>> { None };
        let mut r = FrameReader::new(1 << 30);
        let res = r.read(&mut src(whole.clone()), usize::MAX, &none, &mut |_, _| {
            Ok(Flow::Go)
        });
        assert!(matches!(res, Err(ReadError::NoMemory(n)) if n == 3 << 20));

        /// A buffer that cannot grow.
        struct Fixed(Vec<u8>);
        impl FrameBuffer for Fixed {
            fn bytes_mut(&mut self) -> &mut [u8] {
                &mut self.0
            }
            fn bytes(&self) -> &[u8] {
                &self.0
            }
            fn grow(&mut self, _: usize) -> bool {
                false
            }
            fn into_any(self: Box<Self>) -> Box<dyn Any> {
                self
            }
        }
        let fixed = |_: usize| Some(Box::new(Fixed(vec![0; GROW_FROM])) as Box<dyn FrameBuffer>);
        let mut r = FrameReader::new(1 << 30);
        let res = r.read(&mut src(whole), usize::MAX, &fixed, &mut |_, _| {
            Ok(Flow::Go)
        });
        assert!(
            matches!(res, Err(ReadError::NoMemory(_))),
            "{:?}",
            res.map(|_| ())
        );
    }

    /// A control frame larger than the read buffer grows it with the bytes
    /// that came, not to what its header announces, and the buffer shrinks
    /// back once the frame is handed out.
    #[test]
    fn a_large_control_frame_grows_the_buffer_with_its_bytes_only() {
        let body = vec![3u8; 8 * BUFFER];
        let whole = frame(FrameKind::Control, &body);
        let mut r = FrameReader::new(1 << 30);
        let part = 2 * BUFFER;
        let (_, got) = collect(&mut r, &mut src(whole[..part].to_vec()), usize::MAX);
        assert!(got.is_empty());
        assert!(
            r.buf.len() <= 2 * part,
            "{} bytes for {part} received",
            r.buf.len()
        );
        let (_, got) = collect(&mut r, &mut src(whole[part..].to_vec()), usize::MAX);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, body);
        assert_eq!(r.buf.len(), BUFFER);
    }
}
