#!/usr/bin/python3
"""Prints one table of every benchmark result JSON (the shape DESIGN.md gives).

Usage: tabulate.py [RESULTS_DIR_OR_FILE ...]      (default: bench/results)
Columns: name, figure, unit, peer, peer figure, ratio, target ratio, mark, and the oneDNN
primitive share when a result's details carry one. Marks: PASS (ratio >= target), FAIL (below),
ERR (a figure is missing; details.error says why), "-" (no target). A share below
details.primitive_share_target is flagged "low"; a result gets a note when more than half the CPU
was busy in the second before it started (details.cpu_busy_before, which the experiments record)
or, without that figure, when details.load_average_1m_before exceeds 1.5 x details.cores (a
benchmark's own 2-thread runs alone bring the load near the core count), and a result measured
against further peers (details.zmq_ps, details.grpc_ps) gets a note with each peer's figure, and
one that carries details.paired_ratio_median a note with it. Unreadable files are listed, not
fatal.
Exit status 0 whatever the marks: this prints, it does not judge. Stdlib only.
"""

import glob
import json
import os
import sys

COLUMNS = ["name", "figure", "unit", "peer", "peer figure", "ratio", "target", "mark", "prim. share"]


def fmt_number(v):
    if v is None:
        return "-"
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return str(v)
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def mark(r):
    target, ratio = r.get("target_ratio"), r.get("ratio")
    if r.get("figure") is None or (r.get("peer") and r.get("peer_figure") is None):
        return "ERR"
    if target is None or ratio is None:
        return "-"
    return "PASS" if ratio >= target else "FAIL"


def share(r):
    d = r.get("details")
    if not isinstance(d, dict) or not isinstance(d.get("primitive_share"), (int, float)):
        return ""
    s = d["primitive_share"]
    text = f"{100 * s:.0f}%"
    t = d.get("primitive_share_target")
    if isinstance(t, (int, float)):
        text += " ok" if s >= t else f" low (<{100 * t:.0f}%)"
    return text


def row(r):
    return [str(r.get("name", "?")), fmt_number(r.get("figure")), str(r.get("unit", "")),
            str(r.get("peer") or "-"), fmt_number(r.get("peer_figure")),
            fmt_number(r.get("ratio")) + ("x" if r.get("ratio") is not None else ""),
            (f">= {r['target_ratio']:g}x" if r.get("target_ratio") is not None else "-"),
            mark(r), share(r)]


def collect(args):
    paths = []
    for a in args or [os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")]:
        paths += sorted(glob.glob(os.path.join(a, "*.json"))) if os.path.isdir(a) else [a]
    return paths


def main(argv):
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    rows, bad, notes = [], [], set()
    for path in collect(argv):
        try:
            with open(path) as f:
                r = json.load(f)
            if not isinstance(r, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            bad.append(f"{path}: {e}")
            continue
        rows.append(row(r))
        d = r.get("details") if isinstance(r.get("details"), dict) else {}
        if d.get("error"):
            notes.add(f"{r.get('name', path)}: {d['error']}")
        notes.add(f"measured {r.get('date', '?')} on {r.get('cpu', '?')}")
        for key, what in (("zmq_ps", "a minimal ZeroMQ parameter server"),
                          ("grpc_ps", "the same over bare gRPC")):
            peer = d.get(key)
            if isinstance(peer, dict) and isinstance(peer.get("round_trip_gbps"), (int, float)):
                ours = peer.get(f"ours_over_{key}")
                notes.add(f"{r.get('name', path)}: peer {what} (bench/peers/{key}.cc): "
                          f"{fmt_number(peer['round_trip_gbps'])} GB/s"
                          + (f"; ours {fmt_number(ours)}x of it" if isinstance(ours, (int, float))
                             else ""))
        paired = d.get("paired_ratio_median")
        if isinstance(paired, (int, float)):
            notes.add(f"{r.get('name', path)}: paired by round (each round against its own "
                      f"peer), median {fmt_number(paired)}x")
        load, cores = d.get("load_average_1m_before"), d.get("cores")
        busy = d.get("cpu_busy_before")
        if isinstance(busy, (int, float)):
            # What ran just before it, unlike the load average (which still counts an
            # experiment's own earlier jobs for minutes).
            if busy > 0.5:
                notes.add(f"{r.get('name', path)}: {busy:.0%} of the CPU was busy just before it "
                          "started; other processes disturbed it, rerun on a quiet machine")
        elif isinstance(load, (int, float)) and isinstance(cores, int) and load > 1.5 * cores:
            notes.add(f"{r.get('name', path)}: measured under load {load:g} on {cores} cores; "
                      "other processes disturbed it, rerun on a quiet machine")
    if not rows and not bad:
        print("no benchmark results (bench/results/*.json); run `make bench`")
        return 0
    show = [i for i, c in enumerate(COLUMNS) if c != "prim. share" or any(x[i] for x in rows)]
    widths = [max([len(COLUMNS[i])] + [len(x[i]) for x in rows]) for i in show]
    numeric = {"figure", "peer figure", "ratio"}

    def line(cells):
        return "  ".join(c.rjust(w) if COLUMNS[i] in numeric else c.ljust(w)
                         for i, c, w in zip(show, cells, widths)).rstrip()

    print(line(COLUMNS[i] for i in show))
    print("  ".join("-" * w for w in widths))
    for x in rows:
        print(line(x[i] for i in show))
    for n in sorted(notes):
        print(f"  {n}")
    for b in bad:
        print(f"  unreadable: {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
