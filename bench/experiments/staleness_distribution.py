#!/usr/bin/python3
"""Experiment 1 of issue 3: the staleness distribution of n-softsync with λ = 16 learners.

For each n it runs mlp.yaml on a subset of Fashion-MNIST with `protocol: softsync:n` and reads
the servers' staleness statistics from the metrics. Rudra (Gupta, Zhang, Wang, ICDM 2016)
observed mean τ ≈ n and P(τ > 2n) < 1e-4. Writes RESULTS/exp_staleness_distribution.json
(figure: the largest P(τ > 2n) over n, in percent; rows in details.rows), .md and .png (histograms).

Histogram semantics (server/staleness_stats.h, summed over shards by the client): bucket t counts
gradient applications with staleness t, each gradient once per shard; the last bucket (index 64)
counts every τ >= 64. Shares are taken over the histogram's own total, so they do not depend on
the number of shards; for n <= 16, 2n < 64 so P(τ > 2n) is exact. Mean and max come from the
servers' exact sums and maxima, not from the histogram.

Usage: staleness_distribution.py BUILD_DIR RESULTS_DIR [--ns 1,2,4,8,16] [--learners 16]
       [--limit-train 16000] [--epochs 3] [--batch 32] [--servers 1] [--timeout 240]
Exit status 0 when every n produced statistics, 1 otherwise. Stdlib only.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import experiment_lib as lib  # noqa: E402

NAME = "exp_staleness_distribution"
OVERFLOW_BUCKET = 64  # server/staleness_stats.h: kBuckets = 65, the last counts τ >= 64


def summarize(n, learners, metrics, log_dir):
    hist = metrics["staleness"]["histogram"]
    total = sum(hist)
    tail = sum(h for t, h in enumerate(hist) if t > 2 * n)
    over_n = sum(h for t, h in enumerate(hist) if t > n)
    c = max(1, learners // n)
    # Where a learner's cycle goes (summed over learners, per step): inside Pull, computing,
    # inside Push. A gradient's staleness counts the updates between the shard serving its pull
    # and applying its push; taking those two moments as the ends of the Pull and Push calls,
    # the window is (compute + push) / cycle of the cycle, inside which the other λ − 1 learners
    # push (λ − 1)·window gradients: τ ≈ (λ − 1)/c · window = n·(λ − 1)/λ · window.
    phases = metrics.get("learner_phases", {})
    steps = max(1, metrics["gradients_applied"])
    pull_ms, compute_ms, push_ms = (1e3 * phases.get(k, 0.0) / steps
                                    for k in ("pull_seconds", "compute_seconds", "push_seconds"))
    cycle_ms = pull_ms + compute_ms + push_ms
    window = (compute_ms + push_ms) / cycle_ms if cycle_ms > 0 else None
    # The servers' own measure of the window: a gradient's age, from the shard's answer to its
    # pull to its arrival there (gradient_age_seconds); see age_prediction.
    age_s = metrics.get("gradient_age_seconds", {}).get("mean", 0.0)
    return {
        "gradient_age_ms": round(1e3 * age_s, 3) if age_s else None,
        "predicted_from_age_mean_over_n": age_prediction(log_dir, age_s, n, learners),
        "pull_ms_per_step": round(pull_ms, 3),
        "compute_ms_per_step": round(compute_ms, 3),
        "push_ms_per_step": round(push_ms, 3),
        "window_share": round(window, 4) if window is not None else None,
        "predicted_mean_over_n": (round((learners - 1) / learners * window, 4)
                                  if window is not None else None),
        "n": n, "c": c,
        "mean": round(metrics["staleness"]["mean"], 4),
        "max": metrics["staleness"]["max"],
        "mean_over_n": round(metrics["staleness"]["mean"] / n, 4),
        "tail_share_gt_2n": tail / total if total else None,
        "tail_count_gt_2n": tail,
        "share_gt_n": over_n / total if total else None,
        "histogram_total": total,
        "overflow_bucket_count": hist[OVERFLOW_BUCKET] if len(hist) > OVERFLOW_BUCKET else 0,
        "histogram": hist,
        "gradients_applied": metrics["gradients_applied"],
        "updates_applied": metrics["updates_applied"],
        "test_accuracy": metrics["test_accuracy"],
        "train_seconds": round(metrics["train_seconds"], 2),
        "wall_seconds": round(metrics["wall_seconds"], 2),
        "images_per_second": round(metrics["images_per_second"], 1),
    }


def age_prediction(log_dir, age_s, n, learners):
    """τ / n predicted from the shards' mean gradient age and the learners' active stretches.

    Learner i pushes steps_i gradients over [start_i, end_i] (its ORRERY_LEARNER_DONE line: the
    line's time is the end, its `seconds` the length). A gradient of learner i sees, on average
    over i's stretch, the others' pushes at rate sum_j≠i steps_j / len_j · overlap(i, j) / len_i;
    its window (the age) holds that rate · age pushes, c of which make an update. Averaged over
    every gradient and divided by n. None when the logs or the age are missing."""
    stretches = []
    for path in glob.glob(os.path.join(log_dir, "learner-*.log")):
        with open(path, errors="replace") as f:
            for line in f:
                if "ORRERY_LEARNER_DONE " not in line:
                    continue
                end = lib.log_time(line)
                try:
                    body = json.loads(line.split("ORRERY_LEARNER_DONE ", 1)[1])
                except ValueError:
                    continue
                if end is not None and body.get("seconds", 0) > 0:
                    stretches.append((end - body["seconds"], end, body.get("steps", 0)))
    if not age_s or len(stretches) != learners:
        return None
    c = max(1, learners // n)
    tau_sum = steps_sum = 0.0
    for i, (s_i, e_i, k_i) in enumerate(stretches):
        rate = sum(k_j / (e_j - s_j) * max(0.0, min(e_i, e_j) - max(s_i, s_j)) / (e_i - s_i)
                   for j, (s_j, e_j, k_j) in enumerate(stretches) if j != i)
        tau_sum += k_i * age_s * rate / c
        steps_sum += k_i
    return round(tau_sum / steps_sum / n, 4) if steps_sum else None


def plot(png, rows, learners):
    """Per n, the share of gradients at each staleness (log scale), τ on the x axis."""
    if not shutil.which("gnuplot"):
        return "gnuplot not found"
    base = os.path.splitext(png)[0]
    files, plots = [], []
    for i, r in enumerate(rows):
        path = f"{base}.n{r['n']}.dat"
        total = r["histogram_total"]
        with open(path, "w") as f:
            for t, h in enumerate(r["histogram"]):
                if h:
                    f.write(f"{t} {h / total:.6g}\n")
        files.append(path)
        plots.append(f"'{path}' using 1:2 with linespoints pt 7 ps 0.6 lw 2 "
                     f"title \"softsync:{r['n']} (mean {r['mean']:.2f}, max {r['max']})\"")
    script = "\n".join([
        "set terminal pngcairo size 1000,640 font 'DejaVu Sans,11'",
        f"set output '{png}'",
        f"set title \"Staleness of applied gradients, {learners} learners, mlp.yaml\"",
        "set xlabel 'staleness tau (updates between pull and apply; 64 = 64 or more)'",
        "set ylabel 'share of gradients'",
        "set logscale y", "set grid", "set key top right", "set xrange [-0.5:*]",
        "plot " + ", \\\n     ".join(plots),
    ]) + "\n"
    try:
        p = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True, timeout=60)
        err = None if p.returncode == 0 else f"gnuplot: {p.stderr.strip()[-300:]}"
    except (OSError, subprocess.TimeoutExpired) as e:
        err = f"gnuplot failed: {e}"
    for path in files:
        os.remove(path)
    return err


def tail_note(good):
    """What this run can say about Rudra's tail bound, given how many gradients it saw."""
    if not good:
        return "Rudra (ICDM 2016) reports mean τ ≈ n and P(τ > 2n) < 1e-4."
    total = good[0]["histogram_total"]
    text = (f"Rudra (ICDM 2016) reports mean τ ≈ n and P(τ > 2n) < 1e-4. With about {total} "
            f"gradients per n, one gradient is a share of {1 / total:.1e}")
    if total < 10000:
        return text + ", so this run cannot resolve 1e-4."
    meet = [r["n"] for r in good if r["tail_share_gt_2n"] < 1e-4]
    miss = [r["n"] for r in good if r["tail_share_gt_2n"] >= 1e-4]
    return (text + f": P(τ > 2n) < 1e-4 holds for n = {', '.join(map(str, meet)) or 'none'}"
            f" and not for n = {', '.join(map(str, miss)) or 'none'}.")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("results")
    ap.add_argument("--ns", default="1,2,4,8,16")
    ap.add_argument("--learners", type=int, default=16)
    ap.add_argument("--limit-train", type=int, default=16000)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--servers", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--suffix", default="",
                    help="appended to the result's name, for a variant run (e.g. _b256)")
    a = ap.parse_args(argv)
    name = NAME + a.suffix
    ns = [int(x) for x in a.ns.split(",")]
    os.makedirs(a.results, exist_ok=True)
    command = lib.command_line("/usr/bin/python3 bench/experiments/staleness_distribution.py "
                               + " ".join(argv))
    details = lib.machine_details()
    # The learning rate does not shape staleness; a small, staleness-aware one keeps every
    # learner alive (a diverging learner exits and would thin the field).
    lr = {"base": 0.01, "staleness": "inverse", "momentum": 0.0}
    details.update({"learners": a.learners, "servers": a.servers, "batch": a.batch,
                    "limit_train": a.limit_train, "epochs": a.epochs, "model": "examples/models/mlp.yaml",
                    "lr": lr, "threads_per_learner": 1,
                    "histogram_semantics": "bucket t = gradient applications with staleness t, "
                    "summed over shards (each gradient once per shard); bucket 64 counts tau >= 64; "
                    "shares are over the histogram total",
                    "rudra": "mean tau ~ n, P(tau > 2n) < 1e-4 (ICDM 2016)"})
    rows, errors = [], []
    work = tempfile.mkdtemp(prefix="orrery-exp-staleness-")
    print(f"{name}: λ={a.learners}, n in {ns}; work files in {work}", flush=True)
    for n in ns:
        job = lib.job_spec(f"staleness-n{n}", f"softsync:{n}", a.learners, a.batch, lr["base"],
                           lr["staleness"], lr["momentum"], a.epochs, servers=a.servers,
                           limit_train=a.limit_train, limit_test=1000, eval_every_seconds=10)
        metrics, error, info = lib.run_job(a.build, job, work, a.timeout, threads=1)
        if error:
            errors.append(error)
            rows.append({"n": n, "error": error, **info})
            continue
        row = summarize(n, a.learners, metrics, os.path.join(work, job["name"] + ".logs"))
        row.update(info)
        rows.append(row)
    details["rows"] = rows
    good = [r for r in rows if "error" not in r]
    # In percent, so that the table of all results (two decimals) shows it.
    figure = max((100 * r["tail_share_gt_2n"] for r in good), default=None)
    if len(good) < len(rows):
        figure = None
    png = os.path.join(a.results, name + ".png")
    if good:
        perr = plot(png, good, a.learners)
        if perr:
            errors.append(perr)
        else:
            details["plot"] = os.path.basename(png)
    if errors:
        details["error"] = "; ".join(errors)
    r = lib.result(name, figure, "% of gradients with tau > 2n (worst n)", command, details)
    lib.write_json(a.results, r)

    table = lib.markdown_table(
        ["n", "c = λ/n", "gradients", "mean τ", "mean τ / n", "max τ", "P(τ > n)", "P(τ > 2n)",
         "τ ≥ 64 (overflow)", "pull / compute / push ms per step", "predicted τ / n",
         "gradient age ms", "τ / n from age", "train s"],
        [[x["n"], x["c"], x["gradients_applied"], f"{x['mean']:.2f}", f"{x['mean_over_n']:.2f}",
          x["max"], f"{x['share_gt_n']:.4f}", f"{x['tail_share_gt_2n']:.2e}"
          + f" ({x['tail_count_gt_2n']})", x["overflow_bucket_count"],
          f"{x['pull_ms_per_step']:.1f} / {x['compute_ms_per_step']:.1f} / {x['push_ms_per_step']:.1f}",
          f"{x['predicted_mean_over_n']:.2f}" if x["predicted_mean_over_n"] is not None else "-",
          f"{x['gradient_age_ms']:.1f}" if x.get("gradient_age_ms") is not None else "-",
          (f"{x['predicted_from_age_mean_over_n']:.2f}"
           if x.get("predicted_from_age_mean_over_n") is not None else "-"),
          x["train_seconds"]]
         if "error" not in x
         else [x["n"], "-", "-", "-", "-", "-", "-", "failed", "-", "-", "-", "-", "-", "-"]
         for x in rows])
    busy = (f"{details['cpu_busy_before']:.0%}" if details.get("cpu_busy_before") is not None
            else "unknown")
    notes = [f"λ = {a.learners} learner processes with 1 compute thread each, {a.servers} shard(s), "
             f"an evaluator, all on {details['cores']} cores; batch {a.batch}, the first "
             f"{a.limit_train} training images ({a.limit_train // a.learners} per learner), "
             f"{a.epochs:g} epochs; lr {lr['base']} ({lr['staleness']}), momentum {lr['momentum']}.",
             "Staleness τ of a gradient = the shard's version when it is applied minus the version "
             "it was computed on. Shares are over the histogram's total (each gradient counted once "
             "per shard); the last bucket counts every τ ≥ 64, which does not affect P(τ > 2n) for "
             "2n < 64. Mean and max are the servers' exact figures.",
             f"Load average (1 min) before the experiment: {details['load_average_1m_before']} on "
             f"{details['cores']} cores ({busy} of the CPU busy in the second before it); "
             "per-run loads are in the JSON rows. The runs load the "
             f"machine themselves ({a.learners + a.servers + 1} processes on {details['cores']} "
             "cores), and each run's load carries into the next one's starting figure.",
             tail_note(good)]
    if good:
        ratio = sum(r["mean_over_n"] for r in good) / len(good)
        timed = [r for r in good if r["predicted_mean_over_n"] is not None]
        text = (f"Measured mean τ / n averages {ratio:.2f}. Rudra's mean ≈ n assumes a learner's "
                "window from pull to push spans its whole cycle (compute-bound learners, one per "
                "node): then the other λ − 1 learners push once each inside it, (λ − 1)/c ≈ n "
                "updates. Here the window is only a part of the cycle.")
        if timed:
            share = sum(r["window_share"] for r in timed) / len(timed)
            predicted = sum(r["predicted_mean_over_n"] for r in timed) / len(timed)
            ms = [sum(r[k] for r in timed) / len(timed)
                  for k in ("pull_ms_per_step", "compute_ms_per_step", "push_ms_per_step")]
            text += (f" The learners' own clocks (metrics `learner_phases`) split a step into "
                     f"{ms[0]:.1f} ms inside Pull, {ms[1]:.1f} ms computing and {ms[2]:.1f} ms "
                     f"inside Push on average: with {a.learners + a.servers + 1} processes on "
                     f"{details['cores']} cores, {(ms[0] + ms[2]) / sum(ms):.0%} of a cycle is "
                     "spent waiting inside RPCs. Taking the pull as served and the push as applied at the "
                     "ends of their calls, the pull-to-push window is (compute + push) / cycle = "
                     f"{share:.2f} of the cycle, which predicts τ / n = (λ − 1)/λ · window = "
                     f"{predicted:.2f} (column 'predicted τ / n') against the measured {ratio:.2f}. "
                     "The estimate takes arrivals of the others' pushes as uniform over the cycle.")
            if abs(predicted - ratio) <= 0.05:
                text += (" It matches: here the window's share of the cycle accounts for τ / n.")
            else:
                text += (f" It misses by {predicted - ratio:+.2f}: the window alone does not "
                         "account for τ / n here.")
        aged = [r for r in good if r.get("predicted_from_age_mean_over_n") is not None]
        if aged:
            age_ms = sum(r["gradient_age_ms"] for r in aged) / len(aged)
            from_age = sum(r["predicted_from_age_mean_over_n"] for r in aged) / len(aged)
            text += (f" The shards' own clocks measure the window directly: a gradient's age, from "
                     f"the shard's answer to its pull to its arrival, averages {age_ms:.1f} ms "
                     f"(column 'gradient age ms')")
            if timed:
                text += (f", against {ms[1] + ms[2]:.1f} ms of compute + push on the learners' "
                         "clocks")
            text += (f". Counting the other learners' pushes inside that age at the rates and over "
                     "the stretches each was actually active (its ORRERY_LEARNER_DONE line: steps "
                     "over seconds, ending at the line's time; learners start and finish at "
                     f"different times) predicts τ / n = {from_age:.2f} (column 'τ / n from age') "
                     f"against the measured {ratio:.2f}")
            if abs(from_age - ratio) <= 0.05:
                text += (": it matches within 0.05, so the gap of the estimate above lies in its "
                         "two assumptions (the window's ends at the ends of the calls, every "
                         "learner active throughout), not in how the pushes fall in the window.")
            else:
                text += (f": it misses by {from_age - ratio:+.2f}; the rest is not accounted for "
                         "here (perhaps the others' pushes do not fall uniformly inside a window; "
                         "these figures do not show it).")
        notes.append(text)
    if errors:
        notes.append("Errors: " + "; ".join(errors))
    lib.write_markdown(a.results, name, "Staleness distribution of n-softsync (issue 3, experiment 1)",
                       command, f"Figure: {name}.png (share of gradients per staleness, log scale).",
                       [table], notes)
    print(table)
    return 0 if not errors and figure is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
