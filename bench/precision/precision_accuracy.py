#!/usr/bin/python3
"""Gupta et al. (ICML 2015) on Fashion-MNIST: test accuracy per epoch of examples/models/mlp.yaml
trained by `orrery train` in float32 and in 16-bit fixed point <16-FL, FL> for each FL, under
stochastic rounding and under round-to-nearest (issue 4).

Each configuration is one process:
  BUILD/cli/orrery train --model mlp.yaml --epochs E --batch B --lr LR --momentum M --seed S
      --threads T --quiet --metrics-out M.json [--precision fixed16 --fl FL --rounding R
      --activation-fl A]
run `--parallel` at a time. Writes RESULTS/<name>.json (DESIGN.md's result shape; figure =
final accuracy of stochastic rounding at --headline-fl, peer = float32 in the same run, target
ratio 0.99, i.e. within 1%), <name>.md (table), <name>.png (gnuplot; its script <name>.gp).
Standard library only.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments"))
import experiment_lib as lib  # noqa: E402

REPO = lib.REPO


def configurations(fls, update_only_fls):
    yield {"label": "float32", "precision": "fp32"}
    for rounding in ("stochastic", "nearest"):
        for fl in fls:
            yield {"label": f"fixed16 FL={fl} {rounding}", "precision": "fixed16", "fl": fl,
                   "rounding": rounding, "update_rounding": rounding}
    # The ablation: stochastic arithmetic, round-to-nearest only in the master-weight updates.
    for fl in update_only_fls:
        yield {"label": f"fixed16 FL={fl} nearest updates only", "precision": "fixed16", "fl": fl,
               "rounding": "stochastic", "update_rounding": "nearest"}


def run_one(cfg, args, workdir):
    metrics = os.path.join(workdir, cfg["label"].replace(" ", "_").replace("=", "") + ".json")
    cmd = [os.path.join(args.build, "cli", "orrery"), "train",
           "--model", args.model, "--epochs", str(args.epochs), "--batch", str(args.batch),
           "--lr", str(args.lr), "--momentum", str(args.momentum), "--seed", str(args.seed),
           "--threads", str(args.threads), "--quiet", "--metrics-out", metrics]
    if args.limit_train:
        cmd += ["--limit-train", str(args.limit_train)]
    if cfg["precision"] == "fixed16":
        cmd += ["--precision", "fixed16", "--fl", str(cfg["fl"]), "--rounding", cfg["rounding"],
                "--update-rounding", cfg["update_rounding"],
                "--activation-fl", str(args.activation_fl)]
    row = dict(cfg)
    row["command"] = " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in cmd)
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        row["error"] = f"timed out after {args.timeout} s"
        return row
    row["seconds"] = round(time.time() - start, 1)
    if proc.returncode != 0:
        row["error"] = f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        return row
    with open(metrics) as f:
        m = json.load(f)
    row["test_accuracy_per_epoch"] = [round(e["test_accuracy"], 4) for e in m["per_epoch"]]
    row["train_loss_per_epoch"] = [round(e["train_loss"], 4) for e in m["per_epoch"]]
    row["final_test_accuracy"] = round(m["test_accuracy"], 4)
    row["images_per_second"] = round(m["images_per_second"])
    return row


def markdown(rows, args, command):
    epochs = max((len(r.get("test_accuracy_per_epoch", [])) for r in rows), default=0)
    head = ["configuration"] + [f"ep {e + 1}" for e in range(epochs)] + ["final − float", "images/s"]
    fp = next((r for r in rows if r["precision"] == "fp32" and "final_test_accuracy" in r), None)
    lines = [f"# Fashion-MNIST test accuracy (%) per epoch, {os.path.basename(args.model)}, float32 vs fixed16 <16-FL, FL>",
             "",
             f"Command: `{command}`  ",
             f"Settings: batch {args.batch}, lr {args.lr}, momentum {args.momentum}, seed {args.seed}, "
             f"{args.threads} thread(s) per run; fixed16: weights, biases, gradients and errors in "
             f"<16-FL, FL>, dense inputs/outputs in <{16 - args.activation_fl}, {args.activation_fl}>, "
             f"master weights fixed16 (velocity float). \"nearest\" rounds everything to nearest; "
             f"\"nearest updates only\" keeps stochastic arithmetic and rounds only the "
             f"master-weight updates to nearest.  ",
             f"Date {datetime.date.today().isoformat()}, CPU {lib.cpu_model()}.",
             "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | " + " | ".join(["-"] * (len(head) - 2)) + f" | error: {r['error']} |")
            continue
        acc = [f"{100 * a:.2f}" for a in r["test_accuracy_per_epoch"]]
        acc += ["-"] * (epochs - len(acc))
        delta = "-" if fp is None else f"{100 * (r['final_test_accuracy'] - fp['final_test_accuracy']):+.2f}"
        lines.append(f"| {r['label']} | " + " | ".join(acc) + f" | {delta} | {r['images_per_second']:,} |")
    return "\n".join(lines) + "\n"


def plot(rows, gp_path, png_path):
    """Writes a self-contained gnuplot script (data in inline blocks) and runs it."""
    blocks, series = [], []
    for i, r in enumerate(rows):
        if "test_accuracy_per_epoch" not in r:
            continue
        blocks.append(f"$s{i} << EOD")
        blocks += [f"{e + 1} {100 * a:.2f}" for e, a in enumerate(r["test_accuracy_per_epoch"])]
        blocks.append("EOD")
        if r["precision"] == "fp32":
            style = "lw 3 lc rgb 'black'"
        elif r.get("rounding") == "nearest":
            style = "lw 2 dt 2"
        elif r.get("update_rounding") == "nearest":
            style = "lw 2 dt 3"
        else:
            style = "lw 2 dt 1"
        series.append(f"$s{i} using 1:2 with linespoints {style} title '{r['label']}'")
    if not series:
        return "no series to plot"
    script = "\n".join([
        "# Run from bench/results: gnuplot " + os.path.basename(gp_path),
        "set terminal pngcairo size 1000,650 font 'DejaVu Sans,11'",
        f"set output '{os.path.basename(png_path)}'",
        "set title 'Fashion-MNIST: float32 vs 16-bit fixed point (solid: stochastic, dashed: nearest, dotted: nearest updates only)'",
        "set xlabel 'epoch'", "set ylabel 'test accuracy (%)'",
        "set key outside right", "set grid"] + blocks + [
        "plot " + ", \\\n     ".join(series), ""])
    with open(gp_path, "w") as f:
        f.write(script)
    proc = subprocess.run(["gnuplot", os.path.basename(gp_path)], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(gp_path)))
    return None if proc.returncode == 0 else f"gnuplot: {proc.stderr.strip()}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("build")
    p.add_argument("results")
    p.add_argument("--name", default="exp_precision_fixed16_mlp")
    p.add_argument("--model", default=os.path.join(REPO, "examples", "models", "mlp.yaml"))
    p.add_argument("--fls", default="14,12,10,8")
    p.add_argument("--update-only-fls", default="10,8",
                   help="FLs of the ablation rows: stochastic compute, nearest weight updates")
    p.add_argument("--headline-fl", type=int, default=12)
    p.add_argument("--activation-fl", type=int, default=10)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--timeout", type=int, default=900)
    args = p.parse_args()
    args.build = os.path.abspath(args.build)
    os.makedirs(args.results, exist_ok=True)
    command = os.environ.get("EXPERIMENT_COMMAND") or " ".join(["bench/precision/precision_accuracy.py"] + sys.argv[1:])
    fls = [int(x) for x in args.fls.split(",")]
    machine = lib.machine_details()
    load_before = machine["load_average_1m_before"]
    start = time.time()
    workdir = tempfile.mkdtemp(prefix="orrery-precision-")
    update_only = [int(x) for x in args.update_only_fls.split(",") if x]
    cfgs = list(configurations(fls, update_only))
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel) as pool:
        rows = list(pool.map(lambda c: run_one(c, args, workdir), cfgs))
    for r in rows:
        print(f"{r['label']:32s} " + (r.get("error") or " ".join(f"{100 * a:.2f}" for a in r["test_accuracy_per_epoch"])),
              file=sys.stderr)

    base = os.path.join(args.results, args.name)
    errors = [f"{r['label']}: {r['error']}" for r in rows if "error" in r]
    plot_error = plot(rows, base + ".gp", base + ".png")
    with open(base + ".md", "w") as f:
        f.write(markdown(rows, args, command))
    fp = next((r for r in rows if r["precision"] == "fp32"), {})
    head = next((r for r in rows if r.get("fl") == args.headline_fl and r.get("rounding") == "stochastic"), {})
    figure = head.get("final_test_accuracy")
    peer = fp.get("final_test_accuracy")
    result = {
        "name": args.name,
        "figure": figure,
        "unit": f"test accuracy, fixed16 FL={args.headline_fl} stochastic",
        "peer": "float32 (same run)",
        "peer_figure": peer,
        "ratio": round(figure / peer, 4) if figure and peer else None,
        "target_ratio": 0.99,
        "command": command,
        "date": datetime.date.today().isoformat(),
        "cpu": lib.cpu_model(),
        "details": {
            "rows": rows,
            "table": os.path.basename(base + ".md"),
            "plot": os.path.basename(base + ".png"),
            "settings": {"epochs": args.epochs, "batch": args.batch, "lr": args.lr,
                         "momentum": args.momentum, "seed": args.seed, "threads": args.threads,
                         "parallel_runs": args.parallel, "activation_fl": args.activation_fl,
                         "limit_train": args.limit_train, "fls": fls,
                         "update_only_fls": update_only},
            "load_average_1m_before": load_before,
            "cores": os.cpu_count(),
            "seconds": round(time.time() - start, 1),
            "source_revision": machine["source_revision"],
        },
    }
    if errors or plot_error:
        result["details"]["error"] = "; ".join(errors + ([plot_error] if plot_error else []))
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return 1 if errors or figure is None or peer is None else 0


if __name__ == "__main__":
    sys.exit(main())
