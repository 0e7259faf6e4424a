"""Benchmark: ``render_series`` against rendering each checkpoint separately, and whether batching pays.

    python benchmarks/bench_series.py            # 8 checkpoints x 8 channels of a compact ResNet
    python benchmarks/bench_series.py --tiny     # 2 x 2, a few steps: a smoke run (used by the tests)

A: ``render_series(CheckpointSeries(folder), channels(layer, [0..7]))``
B: for each checkpoint file: ``load_model(...)`` then ``render(model, channels(layer, [0..7]))``
Both load every checkpoint from disk and render all channels in one batch per checkpoint,
with the same seed. Runs alternate A, B, A, B, ... and the medians are compared.

Then the batching question: can several checkpoints be rendered in *one* pass? The model
forward + backward that dominates a render step is timed for the checkpoints one after
another (what render_series does) and for all of them at once with
``torch.func.vmap(functional_call)`` over stacked weights.

Prints lines ``ratio render_series/separate: X`` and ``ratio vmap/sequential: Y``
(< 1 means the first is faster).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn


def make_checkpoints(folder: Path, n: int, width: int) -> None:
    from devvis.models import save_checkpoint
    from devvis.zoo import compact_resnet

    cfg = {"name": "compact_resnet", "kwargs": {"num_classes": 12, "width": width, "blocks": [1, 1, 1]}}
    for k in range(n):
        torch.manual_seed(k)
        save_checkpoint(compact_resnet(**cfg["kwargs"]), folder / f"step_{100 * k:06d}.safetensors", step=100 * k,
                        model_config=cfg)


def time_renders(folder: Path, layer: str, channels: list[int], render_kw: dict, repeats: int) -> tuple[list, list]:
    from devvis import objectives, render
    from devvis.longitudinal import CheckpointSeries, render_series
    from devvis.models import find_checkpoints, load_model

    obj = objectives.channels(layer, channels)

    def a() -> None:
        render_series(CheckpointSeries(folder), obj, seed=0, progress=False, **render_kw)

    def b() -> None:
        for ref in find_checkpoints(folder):
            render(load_model(None, checkpoint=ref.path), obj, seed=0, progress=False, **render_kw)

    a(), b()  # warm-up: imports, kernel selection
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return ta, tb


def truncated(model: nn.Module, stages: int) -> nn.Module:
    """The compact ResNet up to (and including) ``layer{stages}``: the part a render of that layer runs."""
    parts = [model.conv1, model.bn1, model.relu] + [getattr(model, f"layer{i + 1}") for i in range(stages)]
    return nn.Sequential(*parts).eval()


def time_batching(folder: Path, stages: int, batch: int, size: int, repeats: int) -> tuple[list, list]:
    from torch.func import functional_call, stack_module_state, vmap

    from devvis.models import find_checkpoints, load_model

    models = [truncated(load_model(None, checkpoint=r.path), stages) for r in find_checkpoints(folder)]
    for m in models:
        m.requires_grad_(False)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    k = len(models)
    x = torch.rand(k, batch, 3, size, size, requires_grad=True)

    def sequential() -> None:
        sum(models[i](x[i]).mean() for i in range(k)).backward()

    def batched() -> None:
        vmap(lambda p, b, xi: functional_call(base, (p, b), (xi,)))(params, buffers, x).mean().backward()

    sequential(), batched()
    ts, tv = [], []
    for _ in range(repeats):
        for fn, out in ((sequential, ts), (batched, tv)):
            t0 = time.perf_counter()
            for _ in range(5):
                fn()
            out.append((time.perf_counter() - t0) / 5)
    return ts, tv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="2 checkpoints x 2 channels, 2 steps: a smoke run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each side (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        n, chans, width, steps, size = 2, 2, 4, 2, 16
    else:
        n, chans, width, steps, size = 8, 8, 16, 32, 64
    layer = "layer2.0"
    render_kw = {"steps": steps, "image_size": size, "preprocess": "none"}
    print(f"{n} checkpoints x {chans} channels of compact_resnet(width={width}) at {layer}, {steps} steps, "
          f"{size}px, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    with tempfile.TemporaryDirectory(prefix="devvis_bench_series_") as tmp:
        folder = Path(tmp)
        make_checkpoints(folder, n, width)
        ta, tb = time_renders(folder, layer, list(range(chans)), render_kw, args.repeats)
        ma, mb = statistics.median(ta), statistics.median(tb)
        print(f"render_series: median {ma:.3f} s  (runs {', '.join(f'{t:.3f}' for t in ta)})")
        print(f"separate:      median {mb:.3f} s  (runs {', '.join(f'{t:.3f}' for t in tb)})")
        print(f"ratio render_series/separate: {ma / mb:.3f}")
        ts, tv = time_batching(folder, 2, chans, size, args.repeats)
        ms, mv = statistics.median(ts), statistics.median(tv)
        print(f"forward+backward, {n} models one after another: median {ms * 1e3:.1f} ms; "
              f"all at once (vmap over stacked weights): median {mv * 1e3:.1f} ms")
        print(f"ratio vmap/sequential: {mv / ms:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
