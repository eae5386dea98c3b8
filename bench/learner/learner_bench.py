#!/usr/bin/python3
"""Training throughput of `orrery train` against PyTorch, one JSON result per (model, threads).

For each model spec and thread count it runs, back to back on the same machine,
  BUILD/cli/orrery train --model M --batch B --threads T --epochs 1 --limit-train N --seed 1 ...
  /usr/bin/python3 bench/peers/torch_train.py --model M --batch B --threads T --images N ...
and writes RESULTS/learner_throughput_<model>_b<B>_t<T>.json in the shape DESIGN.md gives.
Each side runs up to --repeats times, alternating, and keeps its best run (on a shared machine the
least disturbed); no repeat starts once a configuration has taken --repeat-budget seconds.
Orrery's figure is its metrics' `images_per_second` (training images over training seconds, all
steps counted; N is large enough that the first step's setup is noise). PyTorch's figure excludes
its first few steps.

Usage: learner_bench.py BUILD_DIR RESULTS_DIR [--models mlp,cnn] [--threads 1,2] [--batch 64]
                        [--images mlp=30000,cnn=12800] [--repeats 3] [--repeat-budget 40]
Exit status: 0 if every configuration produced both figures, 1 otherwise (results are still
written, with the error in `details.error`). Stdlib only.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER = os.path.join(REPO, "bench", "peers", "torch_train.py")
PYTHON = "/usr/bin/python3"  # Debian's interpreter: the one that sees python3-torch
TARGET_RATIO = {"cnn": 1.5, "mlp": 5.0}  # issue 2
PRIMITIVE_SHARE_TARGET = 0.8  # issue 2
DEFAULT_IMAGES = {"mlp": 30000, "cnn": 12800}
LR, MOMENTUM, SEED = 0.05, 0.9, 1


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def torch_label():
    """'pytorch-1.13.1 (Debian)' from the installed package, else from torch itself."""
    try:
        v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-torch"],
                           capture_output=True, text=True, check=True).stdout.strip()
        upstream = v.split(":")[-1].split("+")[0].split("-")[0]
        if upstream:
            return f"pytorch-{upstream} (Debian)"
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        v = subprocess.run([PYTHON, "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
        return f"pytorch-{v}"
    except (OSError, subprocess.CalledProcessError):
        return "pytorch (not installed)"


def last_line(text):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1] if lines else "(no output)"


def run_orrery(build, model_path, batch, threads, images, tmp):
    metrics = os.path.join(tmp, "orrery_metrics.json")
    orrery = os.path.join(build, "cli", "orrery")
    cmd = [orrery, "train", "--model", model_path, "--batch", str(batch), "--threads", str(threads),
           "--epochs", "1", "--limit-train", str(images), "--seed", str(SEED), "--lr", str(LR),
           "--momentum", str(MOMENTUM), "--metrics-out", metrics,
           # Evaluation is outside the figure; a small test set only keeps the bench short.
           "--limit-test", "1000", "--quiet"]
    if not os.access(orrery, os.X_OK):
        return None, f"{orrery}: not built (run `make build`)"
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        return None, f"orrery train exited {p.returncode}: {last_line(p.stderr or p.stdout)}"
    try:
        with open(metrics) as f:
            return json.load(f), None
    except (OSError, ValueError) as e:
        return None, f"orrery metrics {metrics}: {e}"


def run_torch(model_path, batch, threads, images, tmp):
    out = os.path.join(tmp, "torch.json")
    cmd = [PYTHON, PEER, "--model", model_path, "--batch", str(batch), "--threads", str(threads),
           "--images", str(images), "--seed", str(SEED), "--lr", str(LR), "--momentum",
           str(MOMENTUM), "--json-out", out]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        return None, f"torch_train.py exited {p.returncode}: {last_line(p.stderr or p.stdout)}"
    with open(out) as f:
        return json.load(f), None


def parse_images(text):
    images = dict(DEFAULT_IMAGES)
    for item in filter(None, text.split(",")):
        model, _, n = item.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise SystemExit(f"learner_bench.py: --images: expected model=N, got '{item}'")
        images[model] = int(n)
    return images


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("results")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="runs per side at most (best kept)")
    ap.add_argument("--repeat-budget", type=float, default=40.0,
                    help="start no further repeat once a configuration has run this long (seconds)")
    ap.add_argument("--images", default="", help="per-model image counts, e.g. mlp=30000,cnn=12800")
    args = ap.parse_args()
    images = parse_images(args.images)
    build = os.path.abspath(args.build)
    os.makedirs(args.results, exist_ok=True)

    peer = torch_label()
    cpu = cpu_model()
    ok = True
    for model in filter(None, args.models.split(",")):
        model_path = os.path.join("examples", "models", f"{model}.yaml")
        n = images.get(model, DEFAULT_IMAGES.get(model, 12800))
        for threads in (int(t) for t in args.threads.split(",") if t):
            name = f"learner_throughput_{model}_b{args.batch}_t{threads}"
            print(f"[learner] {name}: orrery and {peer} on {n} images ...", file=sys.stderr, flush=True)
            orrery_runs, torch_runs, errors = [], [], []
            load_before = os.getloadavg()[0]
            with tempfile.TemporaryDirectory(prefix="orrery-bench-") as tmp:
                # Alternate the two sides and keep each one's best run: on a shared machine the
                # best is the least disturbed. Stop repeating once this configuration has used
                # its time budget.
                t0 = time.monotonic()
                for _ in range(args.repeats):
                    om, oerr = run_orrery(build, model_path, args.batch, threads, n, tmp)
                    tm, terr = run_torch(model_path, args.batch, threads, n, tmp)
                    errors += [e for e in (oerr, terr) if e and e not in errors]
                    orrery_runs += [om] if om else []
                    torch_runs += [tm] if tm else []
                    if errors or time.monotonic() - t0 > args.repeat_budget:
                        break
            om = max(orrery_runs, key=lambda m: m["images_per_second"], default=None)
            tm = max(torch_runs, key=lambda m: m["images_per_second"], default=None)
            figure = om["images_per_second"] if om else None
            peer_figure = tm["images_per_second"] if tm else None
            ratio = figure / peer_figure if figure and peer_figure else None
            details = {
                "primitive_share": om.get("primitive_share") if om else None,
                "primitive_share_target": PRIMITIVE_SHARE_TARGET,
                "orrery_train_loss": om.get("train_loss") if om else None,
                "torch_train_loss": tm.get("train_loss") if tm else None,
                "images": n,
                "batch": args.batch,
                "threads": threads,
                "model": model_path,
                "orrery_wall_seconds": om.get("wall_seconds") if om else None,
                "torch_warmup_steps": tm.get("warmup_steps") if tm else None,
                "orrery_runs": [round(m["images_per_second"], 1) for m in orrery_runs],
                "torch_runs": [round(m["images_per_second"], 1) for m in torch_runs],
                "load_average_1m_before": round(load_before, 2),
                "cores": os.cpu_count(),
            }
            if errors:
                details["error"] = "; ".join(errors)
                ok = False
            result = {
                "name": name,
                "figure": round(figure, 1) if figure else None,
                "unit": "images/s",
                "peer": peer,
                "peer_figure": round(peer_figure, 1) if peer_figure else None,
                "ratio": round(ratio, 3) if ratio else None,
                "target_ratio": TARGET_RATIO.get(model),
                "command": "make bench BENCH=learner",
                "date": datetime.date.today().isoformat(),
                "cpu": cpu,
                "details": details,
            }
            with open(os.path.join(args.results, name + ".json"), "w") as f:
                json.dump(result, f, indent=2)
                f.write("\n")
            summary = (f"orrery {figure:.0f} images/s" if figure else "orrery ERROR") + "  " + \
                      (f"torch {peer_figure:.0f} images/s" if peer_figure else "torch ERROR") + \
                      (f"  ratio {ratio:.2f}" if ratio else "") + \
                      f"  (best of {max(len(orrery_runs), len(torch_runs))})"
            print(f"[learner] {name}: {summary}", file=sys.stderr, flush=True)
            for e in errors:
                print(f"[learner] {name}: {e}", file=sys.stderr, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
