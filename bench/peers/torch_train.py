#!/usr/bin/python3
"""PyTorch peer for `orrery train`: trains the network an Orrery model spec describes and reports
steady-state training throughput.

The network is built layer for layer from the same YAML spec `orrery train --model` reads
(schema: examples/models/README.md), trained with the same batch, plain SGD with momentum (PyTorch's
rule, v = m*v + g; w -= lr*v, which is Orrery's) and the same number of compute threads, on the first
N real Fashion-MNIST training images (pixels / 255, shuffled with --seed). Throughput is measured
after --warmup steps, so one-time costs (allocations, oneDNN primitive creation) are excluded.

Run with Debian's interpreter, which is the one that sees python3-torch:
  /usr/bin/python3 bench/peers/torch_train.py --model examples/models/cnn.yaml --batch 64 \
      --threads 1 --images 2000 [--json-out FILE]
Prints one JSON object (also written to --json-out when given). Exit status 2 on a bad spec or
bad data, with one line on stderr naming the problem.
"""

import argparse
import gzip
import json
import os
import struct
import sys
import time

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


class SpecError(Exception):
    pass


def load_idx_images(data_dir, limit):
    """First `limit` training images as float32 in [0, 1] (N, 1, 28, 28) and int64 labels."""
    import torch

    def open_idx(stem):
        for name in (stem + ".gz", stem):
            path = os.path.join(data_dir, name)
            if os.path.exists(path):
                return path, (gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb"))
        raise SpecError(f"{data_dir}: no {stem}[.gz] (install dataset-fashion-mnist or pass --data)")

    path, f = open_idx("train-images-idx3-ubyte")
    with f:
        head = f.read(16)
        if len(head) != 16:
            raise SpecError(f"{path}: truncated header")
        magic, count, rows, cols = struct.unpack(">IIII", head)
        if magic != 2051:
            raise SpecError(f"{path}: bad magic {magic} (expected 2051)")
        n = count if limit <= 0 else min(limit, count)
        pixels = f.read(n * rows * cols)
        if len(pixels) != n * rows * cols:
            raise SpecError(f"{path}: truncated (wanted {n} images)")
    path, f = open_idx("train-labels-idx1-ubyte")
    with f:
        head = f.read(8)
        if len(head) != 8:
            raise SpecError(f"{path}: truncated header")
        magic, lcount = struct.unpack(">II", head)
        if magic != 2049 or lcount != count:
            raise SpecError(f"{path}: bad magic {magic} or count {lcount} (expected 2049, {count})")
        labels = f.read(n)
        if len(labels) != n:
            raise SpecError(f"{path}: truncated (wanted {n} labels)")
    images = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).reshape(n, 1, rows, cols)
    return images.float().div_(255.0), torch.frombuffer(bytearray(labels), dtype=torch.uint8).long()


def _int(layer, where, key, default=None, minimum=1):
    if key not in layer:
        if default is None:
            raise SpecError(f"{where}.{key}: missing")
        return default
    v = layer[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise SpecError(f"{where}.{key}: must be an integer >= {minimum}, got {v!r}")
    return v


def _activation(layer, where):
    a = layer.get("activation", "none")
    if a in ("none", "linear"):
        return None
    if a in ("relu", "relu6"):
        return a
    raise SpecError(f"{where}.activation: expected none, relu or relu6, got {a!r}")


def build_model(spec):
    """An nn.Module equivalent to the spec; shapes are propagated to size dense and conv layers."""
    import torch
    from torch import nn

    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list) or not spec["layers"]:
        raise SpecError("layers: missing or empty")
    inp = spec.get("input") or {}
    shape = (inp.get("channels", 1), inp.get("height", 28), inp.get("width", 28))  # C, H, W
    classes = spec.get("classes", 10)

    shapes = {"input": shape}
    modules = nn.ModuleDict()
    plan = []  # (name, kind, [input names])
    prev = "input"
    for i, layer in enumerate(spec["layers"]):
        where = f"layers[{i}]"
        if not isinstance(layer, dict) or "type" not in layer:
            raise SpecError(f"{where}.type: missing")
        kind = layer["type"]
        name = layer.get("name", f"{kind}{i}")
        if name in shapes:
            raise SpecError(f"{where}.name: duplicate '{name}'")
        inputs = layer.get("inputs", [prev])
        if isinstance(inputs, str):
            inputs = [inputs]
        for j, src in enumerate(inputs):
            if src not in shapes:
                raise SpecError(f"{where}.inputs[{j}]: '{src}' is not 'input' or an earlier layer")
        c, h, w = shapes[inputs[0]]
        if kind == "conv":
            f = _int(layer, where, "filters")
            k = _int(layer, where, "kernel")
            s = _int(layer, where, "stride", 1)
            p = _int(layer, where, "padding", 0, minimum=0)
            g = _int(layer, where, "groups", 1)
            if c % g or f % g:
                raise SpecError(f"{where}: channels {c} and filters {f} must be multiples of groups {g}")
            act = _activation(layer, where)
            seq = [nn.Conv2d(c, f, k, stride=s, padding=p, groups=g, bias=layer.get("bias", True))]
            if act == "relu":
                seq.append(nn.ReLU(inplace=True))
            elif act == "relu6":
                seq.append(nn.ReLU6(inplace=True))
            modules[name] = nn.Sequential(*seq)
            out = (f, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        elif kind == "dense":
            u = _int(layer, where, "units")
            act = _activation(layer, where)
            seq = [nn.Flatten(), nn.Linear(c * h * w, u, bias=layer.get("bias", True))]
            if act == "relu":
                seq.append(nn.ReLU(inplace=True))
            elif act == "relu6":
                seq.append(nn.ReLU6(inplace=True))
            modules[name] = nn.Sequential(*seq)
            out = (u, 1, 1)
        elif kind in ("maxpool", "avgpool"):
            k = _int(layer, where, "kernel")
            s = _int(layer, where, "stride", k)
            p = _int(layer, where, "padding", 0, minimum=0)
            pool = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
            modules[name] = pool(k, stride=s, padding=p)
            out = (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        elif kind == "global_avgpool":
            modules[name] = nn.AdaptiveAvgPool2d(1)
            out = (c, 1, 1)
        elif kind == "flatten":
            modules[name] = nn.Flatten()
            out = (c * h * w, 1, 1)
        elif kind == "relu":
            modules[name] = nn.ReLU()
            out = (c, h, w)
        elif kind == "relu6":
            modules[name] = nn.ReLU6()
            out = (c, h, w)
        elif kind == "add":
            if len(inputs) != 2 or shapes[inputs[0]] != shapes[inputs[1]]:
                raise SpecError(f"{where}.inputs: add needs two inputs of the same shape")
            out = (c, h, w)
        else:
            raise SpecError(f"{where}.type: unknown layer type '{kind}'")
        if min(out) < 1:
            raise SpecError(f"{where}: output shape {out} is empty")
        shapes[name] = out
        plan.append((name, kind, inputs))
        prev = name
    last = shapes[prev]
    if last[0] * last[1] * last[2] != classes:
        raise SpecError(f"classes: the last layer outputs {last}, not {classes} values")

    class SpecNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = modules

        def forward(self, x):
            values = {"input": x}
            y = x
            for name, kind, inputs in plan:
                if kind == "add":
                    y = values[inputs[0]] + values[inputs[1]]
                else:
                    y = self.layers[name](values[inputs[0]])
                values[name] = y
            return torch.flatten(y, 1)

    return SpecNet()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="Orrery model spec YAML")
    ap.add_argument("--data", default=DEFAULT_DATA, help="Fashion-MNIST IDX directory")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=12800, help="training images (first N)")
    ap.add_argument("--warmup", type=int, default=5, help="steps excluded from the timing")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json-out", help="also write the result JSON here")
    args = ap.parse_args()
    if args.batch < 1 or args.threads < 1 or args.warmup < 0:
        ap.error("--batch and --threads must be >= 1, --warmup >= 0")

    import torch
    import yaml

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        with open(args.model) as f:
            spec = yaml.safe_load(f)
        model = build_model(spec)
        images, labels = load_idx_images(args.data, args.images)
    except (OSError, yaml.YAMLError, SpecError) as e:
        print(f"torch_train.py: {args.model}: {e}", file=sys.stderr)
        return 2
    steps = images.shape[0] // args.batch
    if steps <= args.warmup:
        print(f"torch_train.py: --images {args.images} gives {steps} steps of {args.batch}; "
              f"need more than --warmup {args.warmup}", file=sys.stderr)
        return 2

    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(images.shape[0], generator=gen)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    loss_fn = torch.nn.CrossEntropyLoss()

    loss_sum = 0.0
    t0 = time.perf_counter()
    for step in range(steps):
        if step == args.warmup:
            t0 = time.perf_counter()
        idx = order[step * args.batch:(step + 1) * args.batch]
        x, y = images.index_select(0, idx), labels.index_select(0, idx)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        loss_sum += loss.item()  # synchronises, as Orrery's per-step loss does
    seconds = time.perf_counter() - t0
    timed = (steps - args.warmup) * args.batch

    result = {
        "torch_version": torch.__version__,
        "model": args.model,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "images": steps * args.batch,
        "timed_images": timed,
        "warmup_steps": args.warmup,
        "seconds": seconds,
        "images_per_second": timed / seconds,
        "train_loss": loss_sum / steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
    text = json.dumps(result, indent=2)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
