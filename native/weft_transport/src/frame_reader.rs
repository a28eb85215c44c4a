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

use crate::sink::FrameBuffer;
use std::io::{self, Read};
use weft_core::frame::{decode_header, Extensions, FrameError, FrameKind, HEADER_LEN};

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
}

/// The receiving state of one connection.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A large frame in progress: its buffer, the bytes filled, and the
    /// extensions of its header.
    large: Option<(Box<dyn FrameBuffer>, usize, Extensions)>,
    max: u64,
    read: u64,
    /// The peer closed its end (the socket's event said so): a short read
    /// no longer means the socket is empty, since the end of the stream
    /// raises no event of its own once that one was taken.
    peer_closed: bool,
}

impl FrameReader {
    /// A reader that refuses frames whose body exceeds `max` bytes.
    pub fn new(max: u64) -> Self {
        FrameReader {
            buf: vec![0; BUFFER],
            start: 0,
            end: 0,
            large: None,
            max,
            read: 0,
            peer_closed: false,
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
    /// that reason.
    pub fn read<S: Read>(
        &mut self,
        mut src: S,
        budget: usize,
        alloc: &dyn Fn(usize) -> Box<dyn FrameBuffer>,
        on_frame: &mut dyn FnMut(Frame<'_>, &Extensions) -> Result<(), String>,
    ) -> Result<ReadStatus, ReadError> {
        let mut left = budget;
        loop {
            // A large frame in progress reads straight into its buffer.
            if let Some((buf, filled, _)) = &mut self.large {
                let rest = buf.bytes().len() - *filled;
                if rest > 0 {
                    if left == 0 {
                        return Ok(ReadStatus::Budget);
                    }
                    let want = rest.min(left);
                    let dst = &mut buf.bytes_mut()[*filled..*filled + want];
                    match read_some(&mut src, dst)? {
                        None => return Ok(ReadStatus::Drained),
                        Some(0) => return Ok(ReadStatus::Closed),
                        Some(n) => {
                            *filled += n;
                            self.read += n as u64;
                            left = left.saturating_sub(n);
                            if n < want && !self.peer_closed {
                                // A short read: the socket is empty now. Data
                                // that comes later raises a new event.
                                self.complete_large(on_frame)?;
                                return Ok(ReadStatus::Drained);
                            }
                        }
                    }
                }
                self.complete_large(on_frame)?;
                continue;
            }
            self.parse(alloc, on_frame)?;
            if self.large.is_some() {
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
                let need = self.frame_len();
                self.buf.resize(need.max(self.buf.len() * 2), 0);
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
                        if let Some((buf, filled, _)) = &self.large {
                            if *filled < buf.bytes().len() {
                                return Ok(ReadStatus::Drained);
                            }
                            self.complete_large(on_frame)?;
                            continue;
                        }
                        return Ok(ReadStatus::Drained);
                    }
                }
            }
        }
    }

    /// Hand out the large frame in progress if it is complete.
    fn complete_large(
        &mut self,
        on_frame: &mut dyn FnMut(Frame<'_>, &Extensions) -> Result<(), String>,
    ) -> Result<(), ReadError> {
        if let Some((buf, filled, _)) = &self.large {
            if *filled == buf.bytes().len() {
                let (buf, _, ext) = self.large.take().expect("large frame in progress");
                on_frame(Frame::Large(buf), &ext).map_err(ReadError::Refused)?;
            }
        }
        Ok(())
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
    /// one begins.
    fn parse(
        &mut self,
        alloc: &dyn Fn(usize) -> Box<dyn FrameBuffer>,
        on_frame: &mut dyn FnMut(Frame<'_>, &Extensions) -> Result<(), String>,
    ) -> Result<(), ReadError> {
        while self.end > self.start {
            let h = match decode_header(&self.buf[self.start..self.end], self.max) {
                Ok(h) => h,
                Err(FrameError::Truncated { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let (kind, len) = (h.kind, h.body_len);
            let body = self.start + h.header_len;
            if kind == FrameKind::Data && len >= LARGE_FRAME {
                let mut buf = alloc(len);
                if buf.bytes().len() != len {
                    return Err(ReadError::Io(io::Error::other(
                        "frame buffer of the wrong size",
                    )));
                }
                let have = (self.end - body).min(len);
                buf.bytes_mut()[..have].copy_from_slice(&self.buf[body..body + have]);
                self.start = body + have;
                self.large = Some((buf, have, h.ext));
                return Ok(());
            }
            if self.end - body < len {
                return Ok(());
            }
            self.start = body + len;
            on_frame(Frame::Small(kind, &self.buf[body..body + len]), &h.ext)
                .map_err(ReadError::Refused)?;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(())
    }
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

    fn alloc(n: usize) -> Box<dyn FrameBuffer> {
        Box::new(vec![0u8; n])
    }

    fn collect(
        r: &mut FrameReader,
        src: &mut Chunks,
        budget: usize,
    ) -> (ReadStatus, Vec<(FrameKind, Vec<u8>, Extensions)>) {
        let mut got = Vec::new();
        let status = r
            .read(src, budget, &alloc, &mut |f, e| {
                got.push(match f {
                    Frame::Small(k, b) => (k, b.to_vec(), e.clone()),
                    Frame::Large(b) => (FrameKind::Data, b.bytes().to_vec(), e.clone()),
                });
                Ok(())
            })
            .unwrap();
        (status, got)
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
            Ok(())
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
        let res = r.read(&mut src, 1 << 20, &alloc, &mut |_, _| Ok(()));
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
        let no_alloc = |_: usize| -> Box<dyn FrameBuffer> { panic!("allocated") };
        let mut res = Ok(ReadStatus::Drained);
        for _ in 0..100 {
            res = r.read(&mut src, 1 << 20, &no_alloc, &mut |_, _| Ok(()));
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
}
