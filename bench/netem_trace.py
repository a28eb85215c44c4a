#!/usr/bin/env python3
"""How busy each flow through the latency proxy was, per 10 ms, pass by pass.

Reads the files `weft-netem proxy` writes with WEFT_NETEM_TRACE=DIR (one per
connection and direction: `r|w MICROS BYTES` per chunk read and written) for
the connections accepted on PORT, keeps the directions that carried more
than 50 MB (the bulk lanes), splits time into passes at gaps of 500 ms
without writes, and prints per pass:
- the bytes per second written through, and per flow direction its mean
  use of the cap (bytes written per 10 ms over what the cap allows);
- the share of 10 ms bins in which a flow wrote nothing (idle, under 5 %
  of the cap) or ran at the cap (over 90 %);
- how many of the idle bins began with the proxy holding nothing of that
  flow (under 64 KiB read and not yet written): the sender gave nothing;
- how many flows were idle at once (bins counted by that number).

usage: bench/netem_trace.py DIR PORT [CAP_MBIT]   (CAP_MBIT: 500)
"""
import collections
import glob
import os
import sys

BIN_US = 10_000


def load(d, port):
    flows = {}
    for f in glob.glob(os.path.join(d, f"c*-{port}-*.txt")):
        r, w = [], []
        with open(f) as fh:
            for line in fh:
                p = line.split()
                if len(p) == 3:
                    (r if p[0] == "r" else w).append((int(p[1]), int(p[2])))
        if sum(n for _, n in w) > 50e6:
            flows[os.path.basename(f)] = (r, w)
    return flows


def bins(events):
    c = collections.Counter()
    for t, n in events:
        c[t // BIN_US] += n
    return c


def passes(written):
    active = sorted(set().union(*written.values()))
    out, start, prev = [], active[0], active[0]
    for b in active[1:]:
        if b - prev > 50:
            out.append((start, prev))
            start = b
        prev = b
    out.append((start, prev))
    # (leave out each pass's first 500 ms and last 200 ms: ramps)
    return [(s + 50, e - 20) for s, e in out if e - 20 > s + 50]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    d, port = sys.argv[1], sys.argv[2]
    cap_mbit = float(sys.argv[3]) if len(sys.argv) > 3 else 500.0
    cap = cap_mbit * 1e6 / 8 * BIN_US / 1e6
    flows = load(d, port)
    if not flows:
        sys.exit(f"no flow of more than 50 MB on port {port} in {d}")
    names = sorted(flows)
    written = {n: bins(flows[n][1]) for n in names}
    read = {n: bins(flows[n][0]) for n in names}
    print(f"{len(names)} bulk flow directions on port {port}, cap {cap_mbit:g} Mbit/s")
    for i, (s, e) in enumerate(passes(written)):
        nb = e - s
        held = {}
        for n in names:
            cum, h = 0, {}
            first = min(set(read[n]) | set(written[n]))
            for b in range(first, e):
                cum += read[n].get(b, 0) - written[n].get(b, 0)
                h[b] = cum
            held[n] = h
        use, idle, full, idle_empty, total = [], 0, 0, 0, 0
        at_once = collections.Counter()
        for b in range(s, e):
            k = 0
            for n in names:
                v = written[n].get(b, 0)
                total += v
                if v < 0.05 * cap:
                    idle += 1
                    k += 1
                    idle_empty += held[n].get(b - 1, 0) < 65536
                elif v > 0.9 * cap:
                    full += 1
            at_once[k] += 1
        for n in names:
            use.append(sum(written[n].get(b, 0) for b in range(s, e)) / (cap * nb))
        cells = nb * len(names)
        print(
            f"pass {i + 1}: {nb * 10} ms, {total / (nb * BIN_US / 1e6) / 1e6:.0f} MB/s, "
            f"use of the cap {sum(use) / len(use):.2f} ({min(use):.2f}-{max(use):.2f}), "
            f"idle bins {idle / cells:.2f} (proxy empty before {idle_empty}/{idle}), "
            f"at the cap {full / cells:.2f}"
        )
        print("   bins by flows idle at once: " + " ".join(f"{k}:{v}" for k, v in sorted(at_once.items())))


if __name__ == "__main__":
    main()
