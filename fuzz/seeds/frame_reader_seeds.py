#!/usr/bin/env python3
"""Writes the seed inputs of the frame_reader fuzz target: programs (see
native/weft_transport/src/fuzzing.rs) of frames with headers, data frames
holding the etf seeds, handshake and control frames, large frames, would-blocks,
bad headers and closes, under several budgets. From the root, after the etf
seeds: python3 fuzz/seeds/frame_reader_seeds.py"""
import glob
import os
import struct

OUT = 'fuzz/seeds/frame_reader'
DATA, HANDSHAKE, CONTROL = 1, 0, 2


def hdr(kind, n):
    return struct.pack('>IB', n + 1, kind)


def frame(kind, body):
    return hdr(kind, len(body)) + body


def ext_entry(ident, value):
    n = len(value)
    ln = bytes([n]) if n < 0x80 else bytes([0x80 | (n & 0x7f), n >> 7])
    return bytes([ident]) + ln + value


def ext_hdr(kind, n, entries):
    """A header with extensions (protocol 3, see weft_core::frame)."""
    block = b''.join(entries)
    return struct.pack('>IBH', 1 + 2 + len(block) + n, 0x80 | kind, len(block)) + block


SEQ = ext_entry(0x01, b'\x05')
TRACE = ext_entry(0x03, bytes(range(16)))
DEST = ext_entry(0x82, b'far@away')
UNKNOWN = ext_entry(0x40, b'clock')


def lit(b):
    """Literal-chunk operations for the bytes b."""
    out = b''
    for i in range(0, len(b), 128):
        c = b[i:i + 128]
        out += bytes([len(c) - 1]) + c
    return out


def fill(blocks, byte):
    """blocks * 4096 copies of byte (blocks 1..64)."""
    return bytes([0x80 + blocks - 1, byte])


WOULD_BLOCK, CLOSE = b'\xc0', b'\xff'

etf = [open(f, 'rb').read() for f in sorted(glob.glob('fuzz/seeds/etf/seed-*'))]
etf = [e for e in etf if len(e) < 600][:12]
hello = b'WEFT\x00\x01' + bytes(range(40))
progs = {
    'data-frames': lit(b''.join(frame(DATA, e) for e in etf)),
    'handshake-and-control': lit(frame(HANDSHAKE, hello) + frame(CONTROL, b'\x00')
                                 + frame(CONTROL, b'\x01' + bytes(200))),
    'empty-bodies': lit(frame(DATA, b'') + frame(CONTROL, b'') + frame(HANDSHAKE, b'')),
    'split-by-would-block': b''.join(bytes([0, c]) + WOULD_BLOCK for c in frame(DATA, etf[0])),
    'large-frame': lit(hdr(DATA, 17 * 4096)) + fill(17, 0x42) + lit(frame(DATA, b'after')),
    'large-frame-in-pieces': lit(hdr(DATA, 3 * 4096 + 10)) + fill(1, 1) + WOULD_BLOCK
                             + fill(2, 2) + lit(bytes(10)) + CLOSE,
    'large-control-frame': lit(hdr(CONTROL, 20 * 4096)) + fill(20, 3) + lit(frame(CONTROL, b'x')),
    'max-size-frame': lit(hdr(DATA, 1 << 20)) + fill(64, 9) * 4,
    'oversized-header': lit(frame(DATA, b'ok') + hdr(DATA, (1 << 20) + 1)),
    'empty-length': lit(frame(DATA, b'ok') + b'\x00\x00\x00\x00\x01'),
    'unknown-kind': lit(frame(DATA, b'ok') + b'\x00\x00\x00\x02\x07x'),
    'close-mid-frame': lit(frame(DATA, b'ok') + hdr(DATA, 100) + b'abc') + CLOSE,
    'close-mid-header': lit(frame(DATA, b'ok') + b'\x00\x00') + CLOSE,
    'extensions': lit(ext_hdr(DATA, 2, [SEQ, TRACE, DEST]) + b'ok'
                      + ext_hdr(CONTROL, 1, [SEQ, UNKNOWN]) + b'\x00' + frame(DATA, b'plain')),
    'large-frame-with-extensions': lit(ext_hdr(DATA, 17 * 4096, [SEQ, DEST])) + fill(17, 0x43)
                                   + lit(frame(DATA, b'after')),
    'bad-extensions': lit(ext_hdr(DATA, 2, [SEQ, SEQ]) + b'ok'),
    'critical-unknown-extension': lit(ext_hdr(DATA, 2, [ext_entry(0x90, b'')]) + b'ok'),
    'close-mid-extensions': lit(ext_hdr(DATA, 2, [SEQ, TRACE])[:12]) + CLOSE,
}
os.makedirs(OUT, exist_ok=True)
n = 0
for budget in range(8):
    for name, p in progs.items():
        if budget in (0, 3, 7) or name.startswith('large') or name == 'data-frames':
            with open(f'{OUT}/{name}-b{budget}', 'wb') as f:
                f.write(bytes([budget]) + p)
            n += 1
print(n, 'seeds')
