#!/usr/bin/env python
"""Where does a render step's time go? ``torch.profiler`` over a few steps of devvis, the floor and Lucent.

    .venv/bin/python benchmarks/profile_step.py --layer layer2.1 --channels 5 --steps 6
    .venv/bin/python benchmarks/profile_step.py --layer layer3.1 --channels $(seq 0 15) --tool devvis floor

Prints, per tool, the operators with the largest self CPU time (summed over the profiled steps,
after two warm-up steps) and the total per step. Same work as ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--layer", default="layer2.1")
    p.add_argument("--channels", type=int, nargs="+", default=[5])
    p.add_argument("--steps", type=int, default=6, help="profiled steps (after 2 warm-up steps)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--transforms", default="standard", choices=["standard", "standard-fused", "standard-separate"],
                   help="devvis's form of the standard transforms")
    p.add_argument("--tool", nargs="+", default=["devvis", "floor", "lucent"], choices=["devvis", "floor", "lucent"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--top", type=int, default=18)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    import os

    if args.device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    sys.argv = [sys.argv[0]]  # run.py parses nothing when imported
    sys.path.insert(0, str(HERE))
    import torch
    from torch.profiler import ProfilerActivity, profile

    import run as bench

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = bench.build_model(device)
    case = bench.Case("profile", args.layer, list(args.channels))
    L = bench.load_lucent()[0] if "lucent" in args.tool else None
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for tool in args.tool:
        if tool == "lucent" and L is None:
            print("lucent: not installed (benchmarks/setup_lucent.sh)")
            continue
        n = args.steps + 2
        if tool == "devvis":
            def fn() -> object:
                return bench.run_devvis(model, case, seed=0, steps=n, precision=args.precision, device=device,
                                        transforms=args.transforms)
        elif tool == "floor":
            fl = bench.Floor(model, case, args.precision, device)

            def fn() -> object:
                return fl.run(n)
        else:
            def fn() -> object:
                return bench.run_lucent(L, model, case, seed=0, steps=n, device=device)
        fn()  # warm-up
        with profile(activities=acts) as prof:
            s = fn()
        print(f"\n=== {tool} ({args.precision}, {case.title}): {s.s_per_step:.4f} s/step wall")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=48))
    return 0


if __name__ == "__main__":
    sys.exit(main())
