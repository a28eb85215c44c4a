#!/usr/bin/env python3
"""Plot a weft benchmark CSV (bench/results/*.csv) as PNG figures.

One figure per workload and round trip, in the style of the Partisan paper:
operations per second against the number of concurrent clients, one line
per configuration (one group of bars when a run has a single concurrency),
log scale for lines, one panel per payload size.

usage: bench/plot.py RESULTS.csv [OUT_DIR]
"""
import csv
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CONFIGS = ["disterl", "weft_1", "weft_1_wait", "weft_16", "weft_16_own", "limit"]
LABELS = {"disterl": "Distributed Erlang", "weft_1": "weft N=1",
          "weft_1_wait": "weft N=1, overload => wait",
          "weft_16": "weft N=16 (affinity)", "weft_16_own": "weft N=16, no shared lane",
          "limit": "limit (plain TCP)"}


def size_label(n):
    n = int(n)
    if n >= 1 << 20:
        return f"{n >> 20} MB"
    if n >= 1 << 10:
        return f"{n >> 10} KB"
    return f"{n} B"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    src = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(src) or "."
    rows = list(csv.DictReader(open(src)))
    groups = defaultdict(list)
    for r in rows:
        groups[(r["workload"], int(r["rtt_ms"]))].append(r)
    stem = os.path.splitext(os.path.basename(src))[0]
    written = []
    for (workload, rtt), rs in sorted(groups.items()):
        payloads = sorted({int(r["payload_bytes"]) for r in rs})
        fig, axes = plt.subplots(1, len(payloads), figsize=(5 * len(payloads), 4), squeeze=False)
        for ax, payload in zip(axes[0], payloads):
            cell = [r for r in rs if int(r["payload_bytes"]) == payload]
            clients = sorted({int(r["clients"]) for r in cell})
            # Head-of-line rows are about the ping's tail latency; latency
            # rows about the time all actors take to finish (as the paper
            # plots latency against actors).
            if workload in ("hol", "keyhol"):
                ylabel, value = "ping p99 (ms)", lambda r: float(r["p99_ms"])
            elif workload == "latency":
                ylabel = "time for all to finish (s)"
                value = lambda r: int(r["clients"]) * int(r["seconds"]) / float(r["ops_per_sec"])
            else:
                ylabel, value = "operations / s", lambda r: float(r["ops_per_sec"])
            for i, config in enumerate(CONFIGS):
                pts = sorted((int(r["clients"]), value(r)) for r in cell
                             if r["config"] == config and float(r["ops_per_sec"]) > 0)
                if not pts:
                    continue
                if len(clients) > 1:
                    ax.plot([c for c, _ in pts], [o for _, o in pts], marker="o", label=LABELS[config])
                    ax.set_xscale("log", base=2)
                    ax.set_xlabel("concurrent clients")
                else:
                    ax.bar(i, pts[0][1], label=LABELS[config])
                    ax.set_xticks([])
                    ax.set_xlabel(f"{clients[0]} concurrent clients")
            if len(clients) > 1:
                ax.set_yscale("log")
            ax.set_ylabel(ylabel)
            if workload == "kvs3":
                ax.set_xlabel(ax.get_xlabel() + " (3 replicas, quorum 2)")
            cap = cell[0]["cap_mbit"]
            if not rtt:
                net = "loopback, no emulation"
            elif float(cap) == 0:
                net = f"RTT {rtt} ms, no cap"
            else:
                net = f"RTT {rtt} ms, {cap} Mbit/s per flow"
            ax.set_title(f"{workload}, {size_label(payload)} ({net})", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out, f"{stem}-{workload}-rtt{rtt}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    print("\n".join(written))


if __name__ == "__main__":
    main()
