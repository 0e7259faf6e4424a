"""The demo's LLC over training: devvis (1 and 2 worker processes) against devinterp 1.3.2 (cores 1 and 2),
wall time for equal draws on this machine, in one run.

    benchmarks/setup_devinterp.sh                    # devinterp 1.3.2 into benchmarks/.deps (never a dependency)
    .venv/bin/python benchmarks/llc_series_speed.py [--rounds 3] [--checkpoints DIR] [--every 1]

Issue 17 asks for the demo's LLC trajectory at <= 0.5x devinterp 1.3.2's time for equal draws on the
2-core CPU. Both libraries get the demo's checkpoints (trained here unless ``--checkpoints`` names a
folder), its LLC data (:func:`devvis.demo.llc_loader`), the same chains, burn-in and draws and the same
SGLD setting (the first point of the demo's calibration grid; no calibration, so the draws are equal),
train mode, one torch thread per process. Wall seconds (what a user waits for, including the worker
processes' start), tools alternating within each round; the median of the rounds is printed. Run it on an
idle machine: wall time is what it measures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / ".deps"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from devvis.demo import DemoSettings, llc_loader, train_demo_series  # noqa: E402
from devvis.longitudinal import CheckpointSeries  # noqa: E402
from devvis.slt import llc_trajectory  # noqa: E402


def devinterp_series(series: CheckpointSeries, loader, s: DemoSettings, setting: dict, cores: int) -> list[float] | None:
    """devinterp 1.3.2's LLC at every checkpoint with the same chains and setting; None when it is not installed."""
    try:
        from devinterp.optim import SGLD
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    except ImportError:
        return None
    values = []
    for k in range(len(series)):
        model = series.at(k)
        model.train()
        out = estimate_learning_coeff_with_summary(
            model, loader, evaluate=_evaluate, sampling_method=SGLD, optimizer_kwargs=dict(setting),
            num_chains=s.llc_chains, num_draws=s.llc_draws, num_burnin_steps=s.llc_burnin, cores=cores, seed=s.seed,
            device="cpu", verbose=False)
        values.append(float(out["llc/mean"]))
    return values


def _evaluate(model, data):  # top level: devinterp's cores > 1 sends it to spawned processes
    return nn.functional.cross_entropy(model(data[0]), data[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--checkpoints", default=None, help="the demo's checkpoint folder (default: train it here)")
    ap.add_argument("--every", type=int, default=1, help="use every k-th checkpoint")
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = DemoSettings()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.checkpoints) if args.checkpoints else Path(tmp) / "checkpoints"
        if not args.checkpoints:
            train_demo_series(folder, s)
        series = CheckpointSeries(folder)[:: args.every]
        loader = llc_loader(s)
        setting = dict(lr=s.llc_lrs[0], localization=s.llc_localizations[0], nbeta=s.llc_nbetas[0])
        chains = dict(num_chains=s.llc_chains, num_draws=s.llc_draws, num_burnin_steps=s.llc_burnin, seed=s.seed)
        print(f"{len(series)} checkpoints, {s.llc_chains} chains x ({s.llc_burnin} burn-in + {s.llc_draws} draws), "
              f"{s.llc_batches} batches of {s.llc_batch_size}, SGLD {setting}, train mode, 1 thread per process")

        def devvis_run(workers: int):
            return llc_trajectory(series, loader, nn.CrossEntropyLoss(), workers=workers, threads=1, progress=False,
                                  warn=False, **setting, **chains).llc_mean

        tools = {"devvis, 1 process": lambda: devvis_run(1), "devvis, 2 workers": lambda: devvis_run(2),
                 "devinterp 1.3.2, cores=1": lambda: devinterp_series(series, loader, s, setting, 1),
                 "devinterp 1.3.2, cores=2": lambda: devinterp_series(series, loader, s, setting, 2)}
        times: dict[str, list[float]] = {}
        values: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for name, fn in tools.items():
                t0 = time.perf_counter()
                try:
                    got = fn()
                except Exception as e:  # noqa: BLE001 - a peer that fails here is reported, not fatal
                    print(f"{name}: failed ({type(e).__name__}: {e})")
                    got = None
                if got is None:
                    continue
                times.setdefault(name, []).append(time.perf_counter() - t0)
                values[name] = got
    ref = statistics.median(times["devinterp 1.3.2, cores=1"]) if "devinterp 1.3.2, cores=1" in times else None
    print("\n| tool | wall s (median of %d) | × devinterp cores=1 | LLC first / last checkpoint |" % args.rounds)
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = "—" if ref is None else f"{med / ref:.2f}"
        v = values[name]
        print(f"| {name} | {med:.1f} | {ratio} | {v[0]:.3g} / {v[-1]:.3g} |")
    if ref is None:
        print("devinterp 1.3.2 is not installed: run benchmarks/setup_devinterp.sh for the comparison")


if __name__ == "__main__":
    main()
