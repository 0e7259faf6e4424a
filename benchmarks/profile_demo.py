#!/usr/bin/env python
"""The demo's renders, timed side by side: one render per layer against one stacked render, and the model's floor.

    .venv/bin/python benchmarks/profile_demo.py                       # trains the demo's series into a temp folder
    .venv/bin/python benchmarks/profile_demo.py --series /tmp/h20/checkpoints --checkpoints 8 --repeats 3

On the demo's setting (``devvis.demo.DemoSettings``: a width-8 compact ResNet trained 300 steps on
16-px SyntheticShapes, 31 checkpoints, 4 channels of layer1.0 / layer2.0 / layer3.0 rendered for 96
steps at 16 px) it times, in one process, alternating, process CPU time, one thread:

* ``per-layer``: what ``longitudinal.track`` did before: ``render_series`` once per layer (3 renders of
  4 images per checkpoint);
* ``stacked``: ``longitudinal.render_layers`` (what ``track`` does now): one render of 12 images per
  checkpoint (``objectives.stacked`` over the layers, ``param.stack`` of their starts);
* ``trust-like``: one render of 12 images reading all three layers from one seed (``trust``'s batch);
* ``circuits-like``: the circuit's two renders per checkpoint (layer3.0 target, 4 layer2.0 sources)
  at 48 steps, as ``circuits.composition`` renders them; ``circuits-stacked``: the same two as one
  ``render_stacked`` per checkpoint;
* ``two-seeds``: the features' and the trust check's renders (two seeds of every unit) as one batch of 24;
* ``floor``: the model's own forward (to layer3.0) and backward for a batch of 12 at the render's
  input size (28 px after the standard transforms), channels-last as the render runs it.

Prints ms per checkpoint and render step for each, the images' largest difference between
``per-layer`` and ``stacked``, and the projected render CPU seconds of the demo's ``features``,
``trust`` and ``circuits`` stages (31 checkpoints).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build_series(folder: Path) -> Path:
    """The demo's checkpoints (``devvis.demo``'s training call with ``DemoSettings()``), into ``folder``."""
    from devvis.demo import DemoSettings
    from devvis.zoo import train_series

    s = DemoSettings()
    cur = (s.train_steps // 3, 2 * s.train_steps // 3)
    every = max(1, s.train_steps // s.checkpoints)
    train_series(folder, steps=s.train_steps, width=s.width, size=s.size, n_train=s.n_train, n_test=s.n_test,
                 batch_size=s.batch_size, optimizer="adam", lr=s.lr, curriculum=cur,
                 checkpoint_steps=list(range(0, s.train_steps + 1, every)), seed=s.seed, threads=1, progress=False)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--series", type=Path, default=None, help="the demo's checkpoint folder (default: train it)")
    p.add_argument("--checkpoints", type=int, default=6, help="checkpoints rendered per repeat (evenly spaced)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=96)
    p.add_argument("--track", action="store_true",
                   help="instead: the demo's whole track() call over all checkpoints, stacked against per-layer "
                        "renders (callbacks=() keeps track on its per-layer path), alternating")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from devvis import objectives
    from devvis.data import probe_batch
    from devvis.demo import DemoSettings, _top_channels
    from devvis.longitudinal import CheckpointSeries, render_layers, render_series, render_stacked
    from devvis.render import render
    from devvis.trust.batch import units_objective

    s = DemoSettings()
    folder = args.series or build_series(Path(tempfile.mkdtemp(prefix="devvis-demo-series-")))
    full = CheckpointSeries(folder)
    probe = probe_batch(32, size=s.size, seed=s.seed)
    by_layer = {layer: _top_channels(full, layer, s.channels_per_layer, probe) for layer in s.layers}
    pick = [round(i * (len(full) - 1) / max(1, args.checkpoints - 1)) for i in range(args.checkpoints)]
    models = {full.steps[i]: full.at(i) for i in sorted(set(pick))}
    sub = CheckpointSeries.from_models(models)
    n = len(sub)
    if args.track:
        return time_track(full, by_layer, args.repeats, s)
    kw = dict(steps=args.steps, image_size=s.image_size, seed=s.seed, progress=False)
    units = [(layer, c) for layer, chans in by_layer.items() for c in chans]
    target_layer, source_layer = s.layers[-1], s.layers[-2]

    def per_layer():
        return {layer: render_series(sub, objectives.channels(layer, chans), **kw) for layer, chans in by_layer.items()}

    def stacked():
        return render_layers(sub, by_layer, **kw)

    def trust_like():
        obj = units_objective(units, 1)
        return [render(m, obj, batch=len(units), **{**kw, "seed": s.seed + 1}) for _, m in sub]

    def circuits_like():
        ck = {**kw, "steps": s.circuit_render_steps}
        t = render_series(sub, objectives.channel(target_layer, by_layer[target_layer][0]), **ck)
        return t, render_series(sub, objectives.channels(source_layer, by_layer[source_layer]), **ck)

    def circuits_stacked():
        ck = {**kw, "steps": s.circuit_render_steps}
        return render_stacked(sub, {"target": objectives.channel(target_layer, by_layer[target_layer][0]),
                                    "sources": objectives.channels(source_layer, by_layer[source_layer])}, **ck)

    def two_seeds():
        obj = units_objective(units, 2)
        return [render(m, obj, batch=2 * len(units), **kw) for _, m in sub]

    def floor():
        for _, m in sub:
            m.eval().requires_grad_(False)
            x = torch.rand(len(units), 3, 28, 28).contiguous(memory_format=torch.channels_last).requires_grad_(True)
            for _ in range(args.steps):
                y = m.relu(m.bn1(m.conv1(x)))
                a1 = m.layer1(y)
                a2 = m.layer2(a1)
                a3 = m.layer3(a2)
                (a1[:4, 0].mean() + a2[4:8, 0].mean() + a3[8:, 0].mean()).backward()

    cases = {"per-layer": per_layer, "stacked": stacked, "trust-like": trust_like, "circuits-like": circuits_like,
             "circuits-stacked": circuits_stacked, "two-seeds": two_seeds, "floor": floor}
    steps_of = {k: args.steps for k in cases} | {"circuits-like": s.circuit_render_steps,
                                                 "circuits-stacked": s.circuit_render_steps}
    times: dict[str, list[float]] = {k: [] for k in cases}
    kept = {}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            t0 = time.process_time()
            kept[name] = fn()
            times[name].append(time.process_time() - t0)
    ms = {k: statistics.median(v) / n / steps_of[k] * 1e3 for k, v in times.items()}
    print(f"demo series {folder}: {len(full)} checkpoints; timed {n} x {args.repeats} repeats; channels {by_layer}")
    for k, v in ms.items():
        print(f"{k:16s} {v:6.2f} ms per checkpoint-step   (median CPU s {statistics.median(times[k]):.2f})")
    diff = max(float((kept["per-layer"][l][st].images - kept["stacked"][l][st].images).abs().max())
               for l in by_layer for st in sub.steps)
    print(f"ratio stacked/per-layer: {ms['stacked'] / ms['per-layer']:.3f}; largest image difference {diff:.3g}")
    print(f"ratio stacked/floor: {ms['stacked'] / ms['floor']:.3f}; circuits-stacked/circuits-like: "
          f"{ms['circuits-stacked'] / ms['circuits-like']:.3f}; two-seeds/(stacked + trust-like): "
          f"{ms['two-seeds'] / (ms['stacked'] + ms['trust-like']):.3f}")
    n_full = len(full)
    print(f"projected render CPU s over {n_full} checkpoints: features {ms['per-layer'] * n_full * args.steps / 1e3:.1f}"
          f" -> {ms['stacked'] * n_full * args.steps / 1e3:.1f}; trust {ms['trust-like'] * n_full * args.steps / 1e3:.1f};"
          f" circuits {ms['circuits-like'] * n_full * s.circuit_render_steps / 1e3:.1f}")
    return 0


def time_track(series, by_layer, repeats: int, s) -> int:
    """The demo's ``track`` call (all checkpoints, metrics, plots, files), stacked and per layer, alternating."""
    import shutil

    from devvis.longitudinal import track

    comps = [(layer, c) for layer, chans in by_layer.items() for c in chans]
    times: dict[str, list[float]] = {"per-layer": [], "stacked": []}
    for _ in range(repeats):
        for name in times:
            out = Path(tempfile.mkdtemp(prefix="devvis-track-"))
            extra = {"callbacks": ()} if name == "per-layer" else {}
            t0 = time.process_time()
            track(series, comps, out, steps=s.render_steps, image_size=s.image_size, seed=s.seed, progress=False,
                  **extra)
            times[name].append(time.process_time() - t0)
            shutil.rmtree(out, ignore_errors=True)
    for name, v in times.items():
        print(f"track {name:10s} CPU s {statistics.median(v):6.1f}  ({', '.join(f'{x:.1f}' for x in v)})")
    print(f"ratio stacked/per-layer: {statistics.median(times['stacked']) / statistics.median(times['per-layer']):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
