#!/usr/bin/python3
"""fp32 wire vs fixed16 wire (issue 4, precision.wire) in the same run: the same `orrery run` job
of examples/models/mlp.yaml, once with `precision: {wire: fp32}` and once with
`precision: {wire: fixed16}`, alternating, `--repeats` times each. Records training throughput
(images whose gradients were applied per second of training), bytes per push and per pull
(serialised Push requests and Pull responses summed over the shards, from the learners' own
counters) and the final test accuracy.

Writes RESULTS/exp_wire_fixed16_vs_fp32.json (figure: fixed16 images/s, peer: fp32 images/s of
the same run) and .md. Usage: wire_precision.py BUILD_DIR RESULTS_DIR [--repeats N] ...
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments"))
import experiment_lib as lib  # noqa: E402

NAME = "exp_wire_fixed16_vs_fp32"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("results")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--learners", type=int, default=2)
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--limit-train", type=int, default=24000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=600)
    a = ap.parse_args()
    os.makedirs(a.results, exist_ok=True)
    machine = lib.machine_details()
    command = lib.command_line(" ".join(["bench/wire/wire_precision.py"] + sys.argv[1:]))
    runs = {"fp32": [], "fixed16": []}
    errors = []
    with tempfile.TemporaryDirectory(prefix="orrery-wire-") as work:
        for rep in range(a.repeats):
            order = ["fp32", "fixed16"] if rep % 2 == 0 else ["fixed16", "fp32"]
            for wire in order:
                job = lib.job_spec(f"wire-{wire}-{rep}", "async", a.learners, a.batch, 0.05,
                                   "inverse", 0.0, a.epochs, servers=a.servers, seed=7,
                                   limit_train=a.limit_train, limit_test=2000,
                                   eval_every_seconds=30, precision={"wire": wire})
                metrics, error, info = lib.run_job(a.build, job, work, a.timeout, a.threads)
                if error:
                    errors.append(error)
                    continue
                w = metrics["wire"]
                runs[wire].append({
                    "repeat": rep, "images_per_second": metrics["images_per_second"],
                    "train_seconds": metrics["train_seconds"],
                    "test_accuracy": metrics["test_accuracy"],
                    "bytes_per_push": w["bytes_per_push"], "bytes_per_pull": w["bytes_per_pull"],
                    "pushes": w["pushes"], "pulls": w["pulls"],
                    "load_average_1m_before": info["load_average_1m_before"]})

    def median(wire, key):
        values = [r[key] for r in runs[wire]]
        return statistics.median(values) if values else None

    fx, fp = median("fixed16", "images_per_second"), median("fp32", "images_per_second")
    ratio = round(fx / fp, 3) if fx and fp else None
    details = {"job": {"model": "examples/models/mlp.yaml", "protocol": "async",
                       "lr": "0.05 inverse", "learners": a.learners, "servers": a.servers,
                       "batch": a.batch, "epochs": a.epochs, "limit_train": a.limit_train,
                       "threads_per_learner": a.threads},
               "runs": runs, "errors": errors, **machine}
    for key in ("bytes_per_push", "bytes_per_pull", "test_accuracy"):
        details[key] = {wire: median(wire, key) for wire in runs}
    if details["bytes_per_push"]["fp32"] and details["bytes_per_push"]["fixed16"]:
        details["push_bytes_ratio"] = round(
            details["bytes_per_push"]["fixed16"] / details["bytes_per_push"]["fp32"], 4)
        details["pull_bytes_ratio"] = round(
            details["bytes_per_pull"]["fixed16"] / details["bytes_per_pull"]["fp32"], 4)
    r = lib.result(NAME, round(fx, 1) if fx else None, "images/s", command, details,
                   peer="fp32 wire (same job, same run)",
                   peer_figure=round(fp, 1) if fp else None, ratio=ratio)
    if errors:
        r["details"]["error"] = "; ".join(errors)
    lib.write_json(a.results, r)

    rows = []
    for wire in ("fp32", "fixed16"):
        for x in runs[wire]:
            rows.append([wire, x["repeat"], f"{x['images_per_second']:.0f}",
                         f"{x['train_seconds']:.1f}", f"{x['bytes_per_push']:.0f}",
                         f"{x['bytes_per_pull']:.0f}", f"{100 * x['test_accuracy']:.2f}%",
                         x["load_average_1m_before"]])
    def whole(v):
        return "" if v is None else f"{v:.0f}"

    def spread(wire):
        v = [r["images_per_second"] for r in runs[wire]]
        return f"{min(v):.0f}-{max(v):.0f}" if v else ""

    details["images_per_second_range"] = {
        wire: [min(r["images_per_second"] for r in runs[wire]),
               max(r["images_per_second"] for r in runs[wire])] if runs[wire] else None
        for wire in runs}
    summary = [[wire, whole(median(wire, "images_per_second")), spread(wire),
                whole(details["bytes_per_push"][wire]), whole(details["bytes_per_pull"][wire]),
                "" if median(wire, "test_accuracy") is None
                else f"{100 * median(wire, 'test_accuracy'):.2f}%"]
               for wire in ("fp32", "fixed16")]
    lib.write_markdown(
        a.results, NAME, "Wire encoding: fixed16 vs fp32 (issue 4)", command,
        f"The same async job (mlp.yaml, {a.learners} learners, {a.servers} shards, batch "
        f"{a.batch}, {a.epochs} epoch(s) of the first {a.limit_train} training images) run with "
        "`precision.wire` fp32 and fixed16, alternating, on local processes. Bytes are the "
        "serialised Push requests and Pull responses summed over the shards (gRPC framing "
        "excluded), per push or pull of the whole model.",
        ["Medians:\n\n" + lib.markdown_table(
            ["wire", "images/s", "range", "bytes per push", "bytes per pull", "test accuracy"],
            summary),
         "Runs:\n\n" + lib.markdown_table(
            ["wire", "repeat", "images/s", "train s", "bytes/push", "bytes/pull",
             "test accuracy", "load before"], rows)],
        [f"images/s ratio fixed16/fp32: {ratio}; push bytes ratio "
         f"{details.get('push_bytes_ratio')}, pull bytes ratio {details.get('pull_bytes_ratio')}.",
         "All processes (learners, shards, evaluator) share the machine's cores and talk over "
         "127.0.0.1, where moving bytes costs little; FIXED16 adds CPU work per push and pull "
         "(range scan, finiteness check, stochastic rounding, conversion back), so this figure "
         "measures that cost, not a network's bandwidth. The byte counts are what a real "
         "network would carry.",
         "The machine was shared with another engineer's builds: see the load column; "
         "single runs vary by tens of percent."] + [f"error: {e}" for e in errors])
    print(f"{NAME}: fixed16 {fx} images/s vs fp32 {fp} (ratio {ratio}); bytes/push "
          f"{details['bytes_per_push']}, bytes/pull {details['bytes_per_pull']}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
