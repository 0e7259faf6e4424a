"""Seconds per render step with and without the early exit of the forward pass, side by side.

resnet18 (random weights), one channel of ``layer2.1``, 224-px model input (128-px image resized),
standard transforms, 64 steps; the two variants alternate (A B A B ...) after a warm-up and the
median of the rounds is reported.

    python benchmarks/early_stop.py [--rounds 5] [--steps 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

import importlib

R = importlib.import_module("devvis.render.loop")  # the module whose ActivationRecorder render() uses
from devvis import objectives, render


def run(model: torch.nn.Module, steps: int, early: bool) -> float:
    original = R.ActivationRecorder
    if not early:  # the same recorder, told never to stop the forward pass (render passes stop_early=True)

        class FullForward(original):  # type: ignore[misc, valid-type]
            def __init__(self, *a, **k):
                k["stop_early"] = False
                super().__init__(*a, **k)

        R.ActivationRecorder = FullForward
    try:
        t0 = time.perf_counter()
        render(model, objectives.channel("layer2.1", 5), steps=steps, image_size=128, input_size=224,
               progress=False, seed=0)
        return (time.perf_counter() - t0) / steps
    finally:
        R.ActivationRecorder = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=64)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    run(model, 4, True), run(model, 4, False)  # warm-up
    with_stop, without = [], []
    for _ in range(args.rounds):
        with_stop.append(run(model, args.steps, True))
        without.append(run(model, args.steps, False))
    a, b = statistics.median(with_stop), statistics.median(without)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, {args.rounds} rounds")
    print(f"{'variant':<22}{'s/step (median)':>16}{'rounds':>40}")
    print(f"{'early stop (default)':<22}{a:>16.4f}{str([round(x, 4) for x in with_stop]):>40}")
    print(f"{'full forward':<22}{b:>16.4f}{str([round(x, 4) for x in without]):>40}")
    print(f"ratio early/full: {a / b:.3f}")


if __name__ == "__main__":
    main()
