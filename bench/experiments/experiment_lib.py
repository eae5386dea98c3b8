#!/usr/bin/python3
"""Shared plumbing of the protocol experiments (issue 3): job specs, `orrery run`, result JSON,
markdown tables and gnuplot figures. Standard library only; imported by the experiment scripts
beside it, never run on its own.

A configuration is run as
  BUILD/cli/orrery run JOB.yaml --metrics-out M.json --quiet --log-dir LOGS --timeout T --threads N
with the job spec written from a dict. A failed run (non-zero exit, timeout, no metrics) yields
an error string instead of metrics; when the evaluator's log survives, its evaluations are
recovered so that a curve is still drawn.
"""

import datetime
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MLP = os.path.join(REPO, "examples", "models", "mlp.yaml")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cpu_times():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)  # total, idle + iowait


def cpu_busy_share(seconds=1.0):
    """The share of all cores' time that was busy over the next `seconds` (0..1), from
    /proc/stat; None when unreadable. Unlike the load average, which decays over minutes, it says
    what runs now: an experiment's own just-finished jobs do not count."""
    try:
        total0, idle0 = _cpu_times()
        time.sleep(seconds)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    dt = total1 - total0
    return round(1 - (idle1 - idle0) / dt, 3) if dt > 0 else None


def machine_details():
    """What bench/learner records about the machine, plus the source revision when known, and
    the share of the CPU busy (cpu_busy_before, 0..1) during the second before it starts."""
    d = {"load_average_1m_before": load_average(), "cpu_busy_before": cpu_busy_share(),
         "cores": os.cpu_count()}
    rev = os.environ.get("ORRERY_SOURCE_REVISION")
    if not rev:
        try:
            rev = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            rev = None
    d["source_revision"] = rev
    return d


def command_line(default):
    """The command that produced the results: run.sh passes its own invocation in the
    environment; a script run by hand names itself."""
    return os.environ.get("EXPERIMENT_COMMAND") or default


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {yaml_scalar(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(yaml_scalar(x) for x in v) + "]"
    return json.dumps(str(v))  # a double-quoted JSON string is valid YAML


def write_job(path, job):
    with open(path, "w") as f:
        for k, v in job.items():
            f.write(f"{k}: {yaml_scalar(v)}\n")


def job_spec(name, protocol, learners, batch, lr, staleness, momentum, epochs, servers=1,
             seed=1, **extra):
    """A job dict in the order examples/jobs/README.md lists the keys."""
    job = {"name": name, "model": MLP, "servers": servers, "learners": learners,
           "protocol": protocol,
           "lr": {"base": lr, "staleness": staleness, "momentum": momentum},
           "batch": batch, "epochs": epochs, "seed": seed}
    job.update({k: v for k, v in extra.items() if v is not None})
    return job


def _tail(path, n):
    try:
        with open(path, errors="replace") as f:
            lines = [l.rstrip() for l in f if l.strip()]
        return " | ".join(lines[-n:])
    except OSError:
        return ""


def _recover_evals(log_dir):
    """Evaluations from evaluator.log (seconds since the evaluator started) of a failed run."""
    evals = []
    try:
        with open(os.path.join(log_dir, "evaluator.log"), errors="replace") as f:
            for line in f:
                i = line.find("ORRERY_EVAL ")
                if i < 0:
                    continue
                try:
                    body = json.loads(line[i + len("ORRERY_EVAL "):])
                except ValueError:
                    continue
                stats = body.get("stats", {})
                evals.append({"seconds": body.get("seconds"),
                              "test_accuracy": body.get("test_accuracy"),
                              "test_loss": body.get("test_loss"),
                              "updates_applied": stats.get("updates_applied"),
                              "samples_applied": stats.get("samples_applied")})
    except OSError:
        pass
    return evals


def log_time(line):
    """Seconds since the epoch of a log line's leading timestamp (2026-11-23T01:07:55.044Z)."""
    try:
        stamp = line.split(" ", 1)[0].rstrip("Z")
        return datetime.datetime.fromisoformat(stamp).replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except (ValueError, IndexError):
        return None


def learner_start_offsets(log_dir):
    """From the per-process logs of `orrery run --log-dir`: seconds from the first learner's
    process start to the first and to the last ORRERY_LEARNER_JOINED line (learners
    registered with every shard, data loaded). (None, None) when the logs do not say."""
    starts, joins = [], []
    try:
        names = [n for n in os.listdir(log_dir) if n.startswith("learner-") and n.endswith(".log")]
    except OSError:
        return None, None
    for n in names:
        with open(os.path.join(log_dir, n), errors="replace") as f:
            for line in f:
                if " started pid " in line:
                    t = log_time(line)
                    if t is not None:
                        starts.append(t)
                elif "ORRERY_LEARNER_JOINED" in line:
                    t = log_time(line)
                    if t is not None:
                        joins.append(t)
                        break
    if not starts or not joins:
        return None, None
    t0 = min(starts)
    return round(min(joins) - t0, 2), round(max(joins) - t0, 2)


def failure_reason(stderr, stdout):
    """One line saying why `orrery run` failed: its own 'orrery run: ...' line (the job's reason),
    and the last line a process wrote to its stderr ('err| ...'), which names the cause (a
    diverged learner, a refused NaN gradient) where the process logs that follow do not."""
    lines = [l.strip() for l in (stderr + "\n" + stdout).splitlines() if l.strip()]
    if not lines:
        return "(no output)"
    head = next((l for l in lines if l.startswith("orrery run:")), lines[-1])
    cause = next((l for l in reversed(lines) if l.startswith("err|")), None)
    return head if cause is None or cause in head else f"{head} ... {cause}"


def run_job(build, job, work_dir, timeout, threads):
    """Runs one job with `orrery run`. Returns (metrics or None, error or None, info dict)."""
    orrery = os.path.join(build, "cli", "orrery")
    name = job["name"]
    spec_path = os.path.join(work_dir, name + ".yaml")
    metrics_path = os.path.join(work_dir, name + ".metrics.json")
    log_dir = os.path.join(work_dir, name + ".logs")
    write_job(spec_path, job)
    if os.path.exists(metrics_path):
        os.remove(metrics_path)
    shutil.rmtree(log_dir, ignore_errors=True)
    cmd = [orrery, "run", spec_path, "--metrics-out", metrics_path, "--quiet",
           "--log-dir", log_dir, "--timeout", str(timeout), "--threads", str(threads)]
    info = {"load_average_1m_before": load_average()}
    t0 = time.monotonic()
    error = None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
        if p.returncode != 0:
            error = f"{name}: orrery run exited {p.returncode}: {failure_reason(p.stderr, p.stdout)}"
    except subprocess.TimeoutExpired:
        error = f"{name}: orrery run did not return within {timeout + 60} s"
    except OSError as e:
        error = f"{name}: cannot start {orrery}: {e}"
    info["seconds"] = round(time.monotonic() - t0, 2)
    info["load_average_1m_after"] = load_average()
    # The evaluations' clock starts with the learner processes; their start-up (data loading,
    # registration) on a loaded machine is seconds and varies from run to run.
    info["first_learner_joined_seconds"], info["last_learner_joined_seconds"] = \
        learner_start_offsets(log_dir)
    metrics = None
    if error is None:
        try:
            with open(metrics_path) as f:
                metrics = json.load(f)
        except (OSError, ValueError) as e:
            error = f"{name}: no metrics ({e})"
    if error is not None:
        tail = _tail(os.path.join(log_dir, "evaluator.log"), 2)
        if tail:
            error += f"; evaluator log: {tail[-400:]}"
        info["recovered_evals"] = _recover_evals(log_dir)
    print(f"  {name}: {'FAILED: ' + error if error else 'ok'} ({info['seconds']} s, load "
          f"{info['load_average_1m_before']} -> {info['load_average_1m_after']})", flush=True)
    return metrics, error, info


def result(name, figure, unit, command, details, peer=None, peer_figure=None, ratio=None,
           target_ratio=None):
    return {"name": name, "figure": figure, "unit": unit, "peer": peer,
            "peer_figure": peer_figure, "ratio": ratio, "target_ratio": target_ratio,
            "command": command, "date": datetime.date.today().isoformat(), "cpu": cpu_model(),
            "details": details}


def write_json(results_dir, r):
    path = os.path.join(results_dir, r["name"] + ".json")
    with open(path, "w") as f:
        json.dump(r, f, indent=2)
        f.write("\n")
    return path


def markdown_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def hand_written_sections(path):
    """What follows the generated part of an existing results markdown: everything from its first
    line starting with "## " (the generated part uses only "#" and "###" headings). "" when there
    is no such file or section."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    if text.startswith("## "):
        return text
    at = text.find("\n## ")
    return "" if at < 0 else text[at + 1:]


def write_markdown(results_dir, name, title, command, intro, tables, notes):
    """bench/results/<name>.md: a title, what was run, the exact command, tables, notes. Sections
    written by hand under "## " headings after them in an existing file are kept, after the new
    generated part (a note on stderr asks to check they still agree with it)."""
    text = [f"# {title}\n", intro.strip() + "\n", f"Command:\n\n```\n{command}\n```\n"]
    text += [t + "\n" if not t.endswith("\n\n") else t for t in tables]
    if notes:
        text.append("Notes:\n")
        text += [f"- {n}" for n in notes]
        text.append("")
    path = os.path.join(results_dir, name + ".md")
    kept = hand_written_sections(path)
    out = "\n".join(text).rstrip() + "\n"
    if kept:
        out += "\n" + kept.rstrip() + "\n"
        count = sum(1 for line in kept.splitlines() if line.startswith("## "))
        print(f"{path}: kept its {count} hand-written section(s) after the new tables; check "
              "that they still agree with them", file=sys.stderr)
    with open(path, "w") as f:
        f.write(out)


def gnuplot_accuracy(png, title, series, xlabel="seconds since the learners started"):
    """Draws test accuracy against seconds, one line per (label, [(seconds, accuracy)]).
    Returns an error string or None."""
    if not shutil.which("gnuplot"):
        return "gnuplot not found (apt-get install gnuplot-nox)"
    png = os.path.abspath(png)  # gnuplot runs elsewhere: relative data paths would not resolve
    data_dir = os.path.dirname(png)
    base = os.path.splitext(png)[0]
    plots = []
    files = []
    for i, (label, points) in enumerate(series):
        if not points:
            continue
        path = f"{base}.series{i}.dat"
        with open(path, "w") as f:
            for s, a in points:
                f.write(f"{s:.3f} {100 * a:.3f}\n")
        files.append(path)
        plots.append(f"'{path}' using 1:2 with linespoints pt 7 ps 0.5 lw 2 title \"{label}\"")
    if not plots:
        return "nothing to plot"
    script = "\n".join([
        "set terminal pngcairo size 1000,640 font 'DejaVu Sans,11'",
        f"set output '{png}'",
        f"set title \"{title}\"",
        f"set xlabel '{xlabel}'",
        "set ylabel 'test accuracy (%)'",
        "set grid",
        "set key bottom right",
        "set yrange [0:100]",
        "plot " + ", \\\n     ".join(plots),
    ]) + "\n"
    try:
        p = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True, timeout=60,
                           cwd=data_dir)
        err = None if p.returncode == 0 else f"gnuplot exited {p.returncode}: {p.stderr.strip()[-300:]}"
    except (OSError, subprocess.TimeoutExpired) as e:
        err = f"gnuplot failed: {e}"
    finally:
        for path in files:
            try:
                os.remove(path)
            except OSError:
                pass
    return err
