#!/usr/bin/python3
"""Experiment 2 of issue 3: test accuracy against protocol with μ·λ held constant.

For each (λ, μ) pair (default 4×32 and 8×16, so μ·λ = 128) it trains mlp.yaml with the same α₀
and momentum under: hardsync; softsync:1; softsync:λ with the `none` rule; softsync:λ with the
`inverse` rule (α₀ / max(1, τ) per gradient); async; ssp:2 (async and ssp with `none` too, so
only the rule differs between rows 3 and 4). The papers' finding: with a fixed α₀ and large n
accuracy degrades or diverges; with α₀/τ every protocol lands within about 1% of hardsync.
`--extra-inverse` adds async and ssp:2 with the inverse rule.

Writes, per pair, RESULTS/exp_accuracy_vs_protocol_l<λ>_b<μ>.json (figure: final accuracy of
softsync:λ with `inverse`; peer: hardsync's final accuracy in the same run; target ratio 0.99;
every configuration in details.rows), a gnuplot PNG of accuracy against time beside it, and one
RESULTS/exp_accuracy_vs_protocol.md with both tables.

Usage: accuracy_vs_protocol.py BUILD_DIR RESULTS_DIR [--pairs 4x32,8x16] [--lr 0.05]
       [--momentum 0.9] [--epochs 2] [--limit-train N] [--servers 1] [--timeout 300]
       [--extra-inverse]
Exit status 0 when every configuration produced a final accuracy (a diverged run counts when its
evaluator recorded one), 1 otherwise. Stdlib only.
"""

import argparse
import os
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import experiment_lib as lib  # noqa: E402

NAME = "exp_accuracy_vs_protocol"


def configurations(learners, extra_inverse):
    out = [("hardsync", "none"), ("softsync:1", "none"), (f"softsync:{learners}", "none"),
           (f"softsync:{learners}", "inverse"), ("async", "none"), ("ssp:2", "none")]
    if extra_inverse:
        out += [("async", "inverse"), ("ssp:2", "inverse")]
    return out


def row_from(protocol, rule, metrics, error, info):
    row = {"protocol": protocol, "staleness_rule": rule, **info}
    if metrics is not None:
        row.update({
            "final_test_accuracy": metrics["test_accuracy"],
            "best_test_accuracy": max([e["test_accuracy"] for e in metrics["evals"]] or [None]),
            "final_test_loss": metrics["test_loss"],
            "staleness_mean": round(metrics["staleness"]["mean"], 3),
            "staleness_max": metrics["staleness"]["max"],
            "updates_applied": metrics["updates_applied"],
            "gradients_applied": metrics["gradients_applied"],
            "train_seconds": round(metrics["train_seconds"], 2),
            "wall_seconds": round(metrics["wall_seconds"], 2),
            "images_per_second": round(metrics["images_per_second"], 1),
            "learners_failed": metrics["learners_failed"],
            "learner_failures": metrics["learner_failures"],
            "evals": [[round(e["seconds"], 2), e["test_accuracy"]] for e in metrics["evals"]],
        })
        if metrics["learners_failed"]:
            row["note"] = f"{metrics['learners_failed']} learner(s) failed: " + "; ".join(
                metrics["learner_failures"])[:300]
    else:
        row["error"] = error
        rec = info.get("recovered_evals") or []
        row.pop("recovered_evals", None)
        if "diverged" in (error or "") and rec:
            row["diverged"] = True
            row["final_test_accuracy"] = rec[-1]["test_accuracy"]
            row["best_test_accuracy"] = max(e["test_accuracy"] for e in rec)
            row["evals_recovered_from_evaluator_log"] = True
            row["evals"] = [[round(e["seconds"], 2), e["test_accuracy"]] for e in rec]
    return row


def label(row):
    return f"{row['protocol']} ({row['staleness_rule']})"


def fmt_pct(v):
    return "-" if v is None else f"{100 * v:.2f}%"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("results")
    ap.add_argument("--pairs", default="4x32,8x16")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--servers", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extra-inverse", action="store_true")
    ap.add_argument("--only", default=None,
                    help="comma-separated protocol/rule labels to run, e.g. hardsync/none,async/none")
    a = ap.parse_args(argv)
    pairs = [tuple(int(x) for x in p.split("x")) for p in a.pairs.split(",")]
    os.makedirs(a.results, exist_ok=True)
    command = lib.command_line("/usr/bin/python3 bench/experiments/accuracy_vs_protocol.py "
                               + " ".join(argv))
    work = tempfile.mkdtemp(prefix="orrery-exp-accuracy-")
    print(f"{NAME}: pairs {pairs}, lr {a.lr}, momentum {a.momentum}, {a.epochs:g} epochs; "
          f"work files in {work}", flush=True)
    all_ok = True
    tables, notes = [], []
    for learners, batch in pairs:
        name = f"{NAME}_l{learners}_b{batch}"
        details = lib.machine_details()
        details.update({"learners": learners, "batch": batch, "servers": a.servers,
                        "epochs": a.epochs, "limit_train": a.limit_train,
                        "model": "examples/models/mlp.yaml", "lr_base": a.lr,
                        "momentum": a.momentum, "threads_per_learner": a.threads,
                        "eval_every_seconds": 2})
        rows, errors = [], []
        for protocol, rule in configurations(learners, a.extra_inverse):
            if a.only and f"{protocol}/{rule}" not in a.only.split(","):
                continue
            job = lib.job_spec(f"acc-l{learners}-{protocol.replace(':', '')}-{rule}", protocol,
                               learners, batch, a.lr, rule, a.momentum, a.epochs,
                               servers=a.servers, limit_train=a.limit_train,
                               eval_every_seconds=2)
            metrics, error, info = lib.run_job(a.build, job, work, a.timeout, a.threads)
            row = row_from(protocol, rule, metrics, error, info)
            if "final_test_accuracy" not in row:
                errors.append(error)
            rows.append(row)
        details["rows"] = rows
        by = {(r["protocol"], r["staleness_rule"]): r for r in rows}
        hard = by.get(("hardsync", "none"), {}).get("final_test_accuracy")
        inv = by.get((f"softsync:{learners}", "inverse"), {}).get("final_test_accuracy")
        for r in rows:
            if hard and r.get("final_test_accuracy") is not None:
                r["gap_to_hardsync_points"] = round(100 * (r["final_test_accuracy"] - hard), 2)
        png = os.path.join(a.results, name + ".png")
        perr = lib.gnuplot_accuracy(
            png, f"mlp.yaml, lambda = {learners}, mu = {batch}, alpha0 = {a.lr:g}, "
                 f"momentum {a.momentum:g}: test accuracy against time",
            [(label(r), [[round(t - (r.get("last_learner_joined_seconds") or 0), 2), acc]
                         for t, acc in r.get("evals", [])
                         if t - (r.get("last_learner_joined_seconds") or 0) >= -1])
             for r in rows],
            xlabel="seconds since the last learner joined (training start)")
        if perr:
            errors.append(perr)
        else:
            details["plot"] = os.path.basename(png)
        if errors:
            details["error"] = "; ".join(e for e in errors if e)
            all_ok = False
        ratio = round(inv / hard, 4) if inv is not None and hard else None
        lib.write_json(a.results, lib.result(
            name, inv, f"final test accuracy, softsync:{learners} with inverse",
            command, details, peer="hardsync, same run", peer_figure=hard, ratio=ratio,
            target_ratio=0.99))
        tables.append(f"### λ = {learners}, μ = {batch} ({name}.json, {name}.png)\n\n" +
                      lib.markdown_table(
                          ["protocol", "lr rule", "final accuracy", "best accuracy",
                           "vs hardsync (points)", "mean τ", "max τ", "updates", "train s"],
                          [[r["protocol"], r["staleness_rule"],
                            fmt_pct(r.get("final_test_accuracy"))
                            + (" (diverged)" if r.get("diverged") else "")
                            + (" (failed)" if "final_test_accuracy" not in r else ""),
                            fmt_pct(r.get("best_test_accuracy")),
                            r.get("gap_to_hardsync_points", "-"), r.get("staleness_mean", "-"),
                            r.get("staleness_max", "-"), r.get("updates_applied", "-"),
                            r.get("train_seconds", "-")] for r in rows]))
        if errors:
            notes.append(f"λ = {learners}: " + "; ".join(e for e in errors if e))
        notes.append(f"λ = {learners}: load average (1 min) {details['load_average_1m_before']} "
                     f"before, on {details['cores']} cores (shared machine).")
    notes.insert(0, f"mlp.yaml on {'all 60,000' if a.limit_train is None else a.limit_train} "
                 f"training images, {a.epochs:g} epoch(s) per learner over its slice, α₀ = {a.lr:g}, "
                 f"server-side momentum {a.momentum:g} for every row, {a.servers} shard(s), "
                 f"{a.threads} compute thread(s) per learner, evaluation on all 10,000 test images "
                 "every 2 s. The plots count time from the start of training (the last learner's "
                 "ORRERY_LEARNER_JOINED line in the run's logs); the rows' evals keep `orrery "
                 "run`'s clock (from the learners' process start) and the start-up offset "
                 "(last_learner_joined_seconds).")
    notes.insert(1, "async is softsync:λ (c = 1) under another name; its row repeats "
                 "softsync:λ (none) and shows the run-to-run noise.")
    lib.write_markdown(a.results, NAME, "Accuracy against protocol at μ·λ constant (issue 3, "
                       "experiment 2)", command,
                       "Final test accuracy (the evaluation after every learner finished) per "
                       "protocol and learning-rate rule; plots of accuracy against time beside "
                       "each JSON.", tables, notes)
    for t in tables:
        print(t)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
