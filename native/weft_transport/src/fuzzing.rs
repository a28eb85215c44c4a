//! The body of the `frame_reader` fuzz target
//! (`fuzz/fuzz_targets/frame_reader.rs`), shared with the corpus replay test
//! (`tests/corpus.rs`) so that `cargo test` checks the committed corpus with
//! the same code, without nightly.
//!
//! The input is a small program that makes a byte stream and cuts it into
//! the reads a socket would return:
//!
//! - byte 0 picks the byte budget of each [`FrameReader::read`] call
//!   ([`BUDGETS`]);
//! - then operations, each starting with a byte `op`:
//!   - `op < 0x80`: the next `op + 1` input bytes, returned by one read (or
//!     by fewer, if the reader asks for less);
//!   - `0x80..=0xbf`: `((op & 0x3f) + 1) * 4096` copies of the next input
//!     byte, in one read (large frames without large inputs);
//!   - `0xc0..=0xfe`: the socket would block once (the reader returns and
//!     is called again);
//!   - `0xff`: the peer closes the connection (end of the program).
//!
//! The reader (maximum body [`MAX`]) is called until the stream is read, the
//! peer closed or it fails, and what it handed out is checked against a
//! plain parse of the whole stream with [`decode_header`]: the same frames,
//! with the same header extensions, whole and in order, no body over the
//! maximum, a large buffer only for
//! data frames of [`LARGE_FRAME`] bytes or more, an error exactly when the
//! stream has a bad header, and progress on every call.

use crate::frame_reader::{Flow, Frame, FrameReader, ReadError, ReadStatus, LARGE_FRAME};
use crate::sink::FrameBuffer;
use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read};
use weft_core::frame::{decode_header, Extensions, FrameError, FrameKind, PARTED_BODY, PART_BYTES};

/// The largest frame body the fuzzed reader accepts.
pub const MAX: u64 = 1 << 20;
// (every frame in parts is bad under this limit: see `expected`)
const _: () = assert!(MAX as usize <= PART_BYTES);
/// The stream never grows beyond this many bytes, nor beyond
/// [`CALLS_PER_BUDGET`] times the budget (so that a run stays quick).
pub const MAX_STREAM: usize = MAX as usize + (MAX as usize) / 4;
/// See [`MAX_STREAM`].
pub const CALLS_PER_BUDGET: usize = 1 << 16;
/// Byte budgets of one read call, picked by the first input byte.
pub const BUDGETS: [usize; 8] = [1, 5, 64, 1000, 4096, 65536, 1 << 20, usize::MAX];

/// What the socket does next.
#[derive(Debug)]
enum Event {
    Bytes(Vec<u8>),
    WouldBlock,
    Eof,
}

/// The program in `data`: the budget, the events, and the whole stream.
fn program(data: &[u8]) -> (usize, VecDeque<Event>, Vec<u8>) {
    let budget = BUDGETS[data.first().copied().unwrap_or(0) as usize % BUDGETS.len()];
    let mut events = VecDeque::new();
    let mut stream = Vec::new();
    let cap = MAX_STREAM.min(budget.saturating_mul(CALLS_PER_BUDGET));
    let mut i = 1;
    while i < data.len() {
        let op = data[i];
        i += 1;
        let bytes = match op {
            0..=0x7f => {
                let end = (i + op as usize + 1).min(data.len());
                let b = data[i..end].to_vec();
                i = end;
                b
            }
            0x80..=0xbf => {
                let Some(&v) = data.get(i) else { break };
                i += 1;
                vec![v; ((op & 0x3f) as usize + 1) * 4096]
            }
            0xc0..=0xfe => {
                events.push_back(Event::WouldBlock);
                continue;
            }
            0xff => {
                events.push_back(Event::Eof);
                break;
            }
        };
        if stream.len() + bytes.len() > cap {
            break;
        }
        if !bytes.is_empty() {
            stream.extend_from_slice(&bytes);
            events.push_back(Event::Bytes(bytes));
        }
    }
    (budget, events, stream)
}

/// A socket that plays the events.
struct Socket {
    events: VecDeque<Event>,
    /// Bytes of the current `Bytes` event already read.
    at: usize,
    closed: bool,
}

impl Socket {
    fn exhausted(&self) -> bool {
        self.events.is_empty()
    }
}

impl Read for &mut Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(0);
        }
        match self.events.front() {
            None => Err(io::ErrorKind::WouldBlock.into()),
            Some(Event::WouldBlock) => {
                self.events.pop_front();
                Err(io::ErrorKind::WouldBlock.into())
            }
            Some(Event::Eof) => {
                self.events.pop_front();
                self.closed = true;
                Ok(0)
            }
            Some(Event::Bytes(b)) => {
                assert!(!buf.is_empty(), "a read into an empty buffer");
                let n = (b.len() - self.at).min(buf.len());
                buf[..n].copy_from_slice(&b[self.at..self.at + n]);
                self.at += n;
                if self.at == b.len() {
                    self.events.pop_front();
                    self.at = 0;
                }
                Ok(n)
            }
        }
    }
}

/// A frame as expected: kind, extensions, body.
type Expected<'a> = (FrameKind, Extensions, &'a [u8]);

/// The frames in `stream`, and whether a bad header follows them (what
/// comes after a bad header is never read).
fn expected(stream: &[u8]) -> (Vec<Expected<'_>>, bool) {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let h = match decode_header(&stream[at..], MAX) {
            Ok(h) => h,
            Err(FrameError::Truncated { .. }) => break,
            Err(_) => return (frames, true),
        };
        let body = at + h.header_len;
        // Frames in parts: every one is bad here, since a message in parts
        // is larger than a part, and a part is MAX (their good order is
        // the reader's unit tests'): a part at once (none is open), a
        // parted frame at its header or once its 8 bytes are in.
        match h.kind {
            FrameKind::Part => return (frames, true),
            FrameKind::Parted if h.body_len != PARTED_BODY => return (frames, true),
            _ => {}
        }
        if stream.len() - body < h.body_len {
            break;
        }
        if h.kind == FrameKind::Parted {
            return (frames, true);
        }
        frames.push((h.kind, h.ext, &stream[body..body + h.body_len]));
        at = body + h.body_len;
    }
    (frames, false)
}

/// Run the reader over the program in `data` and check it (see the module
/// documentation). Panics on any inconsistency.
pub fn frame_reader(data: &[u8]) {
    let (budget, events, stream) = program(data);
    let (want, bad_header) = expected(&stream);
    let mut socket = Socket {
        events,
        at: 0,
        closed: false,
    };
    let allocated = Cell::new(0usize);
    let alloc = |len: usize| -> Option<Box<dyn FrameBuffer>> {
        assert!(
            len >= LARGE_FRAME && len as u64 <= MAX,
            "a frame buffer of {len} bytes"
        );
        allocated.set(allocated.get() + 1);
        // Frames of odd length get a buffer of only their first bytes,
        // which the reader grows as they come (as past the claims' bound).
        let cap = if len % 2 == 1 { LARGE_FRAME } else { len };
        Some(Box::new(vec![0u8; cap]))
    };
    let mut reader = FrameReader::with_parts(MAX);
    // Frames handed out so far, each checked against `want` as it comes.
    let mut got = 0usize;
    // Every call reads at least one byte, consumes an event or hands out a
    // frame, so this many calls are enough for the whole program.
    let calls = stream.len() + socket.events.len() + want.len() + 2;
    let mut failed = false;
    for call in 0.. {
        assert!(call <= calls, "no progress after {call} calls");
        let before = (reader.bytes_read(), socket.events.len(), got);
        let status = reader.read(&mut socket, budget, &alloc, &mut |f, ext| {
            let (kind, body) = match &f {
                Frame::Small(kind, body) => {
                    assert!(
                        *kind != FrameKind::Data || body.len() < LARGE_FRAME,
                        "a large data frame handed out as a slice"
                    );
                    (*kind, *body)
                }
                Frame::Large(buf) => {
                    assert!(
                        buf.bytes().len() >= LARGE_FRAME,
                        "a small frame in a buffer"
                    );
                    (FrameKind::Data, buf.bytes())
                }
            };
            assert!(body.len() as u64 <= MAX, "a body of {} bytes", body.len());
            let Some((wk, we, wb)) = want.get(got) else {
                panic!("frame {got} handed out; the stream has {}", want.len())
            };
            assert_eq!(kind, *wk, "kind of frame {got}");
            assert_eq!(ext, we, "extensions of frame {got}");
            assert!(body == *wb, "body of frame {got} ({} bytes)", body.len());
            got += 1;
            // (every third frame pauses the read: the next read hands out
            // what follows it, from the reader's buffer)
            Ok(if got.is_multiple_of(3) {
                Flow::Pause
            } else {
                Flow::Go
            })
        });
        match status {
            Err(ReadError::Frame(_)) => {
                failed = true;
                break;
            }
            Err(e) => panic!("unexpected read error: {e}"),
            Ok(ReadStatus::Closed) => break,
            Ok(ReadStatus::Drained) if socket.exhausted() => break,
            Ok(ReadStatus::Paused) => {
                assert!(got.is_multiple_of(3), "a pause without a frame that asked")
            }
            Ok(ReadStatus::Drained | ReadStatus::Budget) => {}
        }
        assert_ne!(
            before,
            (reader.bytes_read(), socket.events.len(), got),
            "a call that read nothing"
        );
        assert!(
            reader.bytes_read() - before.0 <= budget as u64,
            "a call read beyond its budget of {budget}"
        );
    }
    assert!(reader.bytes_read() <= stream.len() as u64);
    assert!(
        allocated.get() <= want.len() + 1,
        "more buffers than frames"
    );
    if failed {
        assert!(bad_header, "a read error on a stream without a bad header");
    } else {
        // Read to the end (or to the close after it): every byte read, and
        // a bad header would have been found.
        assert_eq!(reader.bytes_read(), stream.len() as u64, "bytes read");
        assert!(!bad_header, "a bad header was not reported");
    }
    assert_eq!(got, want.len(), "frames handed out");
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::frame::{encode_header, header};

    /// A literal chunk operation for each piece of `bytes` (at most 128).
    fn literal(bytes: &[u8]) -> Vec<u8> {
        bytes
            .chunks(128)
            .flat_map(|c| [&[(c.len() - 1) as u8][..], c].concat())
            .collect()
    }

    fn frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
        [header(kind, body.len()).as_slice(), body].concat()
    }

    #[test]
    fn programs_of_every_kind_check_out() {
        let mut stream = Vec::new();
        stream.extend(frame(FrameKind::Data, b"hello"));
        stream.extend(frame(FrameKind::Control, &[1; 300]));
        let ext = Extensions {
            ack: Some(77),
            origin: Some("o@h".into()),
            ..Default::default()
        };
        stream.extend_from_slice(&encode_header(FrameKind::Data, 2, &ext).unwrap());
        stream.extend_from_slice(b"hi");
        let small = literal(&stream);
        // a large data frame: its header, then 17 * 4096 bytes of 7; and one
        // whose header has extensions
        let large = [
            literal(&header(FrameKind::Data, 17 * 4096)),
            vec![0x80 + 16, 7],
            literal(&encode_header(FrameKind::Data, 17 * 4096, &ext).unwrap()),
            vec![0x80 + 16, 8],
        ]
        .concat();
        for budget in 0..BUDGETS.len() as u8 {
            for tail in [&[][..], &[0xc0], &[0xff], &[0xc0, 0xff]] {
                let p = [&[budget][..], &small, &[0xc0], &large, &small, tail].concat();
                frame_reader(&p);
                // cut anywhere
                for n in (0..p.len()).step_by(7) {
                    frame_reader(&p[..n]);
                }
            }
        }
        // a bad header after good frames, and an oversized one
        frame_reader(&[&[3][..], &small, &literal(&[0, 0, 0, 1, 9])].concat());
        frame_reader(
            &[
                &[3][..],
                &literal(&header(FrameKind::Data, MAX as usize + 1)),
            ]
            .concat(),
        );
        frame_reader(&[]);
    }
}
