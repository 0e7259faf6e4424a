"""LLC settings for the demo's checkpoints: health, estimate, MALA acceptance and CPU time per checkpoint.

Runs :func:`devvis.slt.estimate_llc` at chosen checkpoints of the demo's series (``demo_output/checkpoints``,
written by ``devvis demo``) on the demo's LLC data (step 4 of ``devvis/demo.py``: 16 batches of 32 images of
the classes the curriculum trains on) with one or more settings, and prints one row per (setting,
checkpoint): ok, failing flags, LLC ± std over chains, the chains' MALA acceptance, the pull ratio, the loss
rise E[L] − L(w*) over the draws, the mean |w − w*|² per coordinate over the draws, and the process CPU
seconds of the estimate (one torch thread). Settings are ``key=value,...`` strings (keys: sampler, lr, gamma,
nbeta, delta, alpha, warm, chains, burnin, draws, batch).

Example (round 5 in ``benchmarks/LLC_RESULTS.md``; ``--data step`` samples each checkpoint on the classes it
had been trained on by its step, ``--seed`` changes the chains' seed)::

    OMP_NUM_THREADS=1 python benchmarks/llc_demo_settings.py --steps 0,50,80,110,150,200,210,250,300 \\
        "sampler=rmsprop_sgld,lr=2.5e-5,gamma=40,nbeta=40,delta=1e-2,warm=1,chains=2,burnin=200,draws=400"
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch

KEYS = {"sampler": str, "lr": float, "gamma": float, "nbeta": float, "delta": float, "alpha": float, "warm": int,
        "chains": int, "burnin": int, "draws": int, "batch": int}
DEFAULT = dict(sampler="rmsprop_sgld", lr=1e-4, gamma=9.23, nbeta=9.23, delta=1e-2, alpha=0.99, warm=1, chains=2,
               burnin=100, draws=200, batch=32)
STEPS = (0, 50, 80, 110, 150, 200, 210, 250, 300)


def parse(text: str) -> dict:
    """``"lr=1e-4,gamma=10"`` -> the settings dict over :data:`DEFAULT`.

    >>> parse("lr=3e-5,warm=0")["lr"], parse("lr=3e-5,warm=0")["warm"]
    (3e-05, 0)
    """
    out = dict(DEFAULT)
    for part in filter(None, text.split(",")):
        key, value = part.split("=")
        out[key.strip()] = KEYS[key.strip()](value)
    return out


def demo_loader(batch_size: int = 32, batches: int = 16, step: int | None = None):
    """The LLC data of the demo's step 4 (``devvis/demo.py``), for the default ``DemoSettings``: the classes
    the run trains on (``step`` None), or those the checkpoint at ``step`` had been trained on."""
    from devvis.data import SyntheticShapes
    from devvis.data.synthetic import Curriculum
    from devvis.demo import DemoSettings

    s = DemoSettings()
    cur = (s.train_steps // 3, 2 * s.train_steps // 3)
    n = batches * batch_size
    x, y = SyntheticShapes(2 * n if step is None else 6 * n, size=s.size, seed=s.seed, split="train").tensors()
    # the checkpoint at step k has taken the optimizer steps 0 … k − 1: the classes of step k − 1
    keep = Curriculum.build(s.train_steps, cur).pool(s.train_steps if step is None else max(step - 1, 0), y)[:n]
    assert len(keep) == n, f"{len(keep)} images of the classes of step {step}, {n} wanted"
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[keep], y[keep]), batch_size=batch_size,
                                       shuffle=False)


def measure(model, loader, st: dict, seed: int = 0) -> dict:
    """One estimate with settings ``st``; the row's numbers."""
    from devvis.slt import estimate_llc
    from devvis.slt.diagnostics import FAILING

    kw = dict(rmsprop_alpha=st["alpha"], rmsprop_eps=st["delta"], rmsprop_warm_start=bool(st["warm"])) \
        if st["sampler"] == "rmsprop_sgld" else {}
    c0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = estimate_llc(model, loader, torch.nn.CrossEntropyLoss(), sampler=st["sampler"], lr=st["lr"],
                         localization=st["gamma"], nbeta=st["nbeta"], num_chains=st["chains"],
                         num_burnin_steps=st["burnin"], num_draws=st["draws"], seed=seed, progress=False, **kw)
    cpu = time.process_time() - c0
    dim = sum(p.numel() for p in model.parameters())
    draws = r.loss_traces[:, r.num_burnin_steps:]
    dist = r.distance_traces[:, r.num_burnin_steps:]
    return dict(ok=r.ok, flags=[k for k in FAILING if r.flags.get(k)], llc=r.llc_mean, std=r.llc_std,
                acc=r.acceptance, pull=r.pull_ratio, rise=float(np.nanmean(draws) - r.init_loss),
                dist=float(np.nanmean(dist)) / dim, init=r.init_loss, cpu=cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("settings", nargs="+", help="key=value,... (see the module docstring)")
    ap.add_argument("--steps", default=",".join(map(str, STEPS)), help="checkpoint steps, comma-separated")
    ap.add_argument("--checkpoints", default="demo_output/checkpoints")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", choices=("trained", "step"), default="trained",
                    help="trained: the classes the run trains on (the demo's data); step: the classes each "
                         "checkpoint had been trained on by its step")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from devvis.longitudinal import CheckpointSeries

    series = CheckpointSeries(args.checkpoints)
    steps = [int(v) for v in args.steps.split(",")]
    index = {s: i for i, s in enumerate(series.steps)}
    print("| setting | step | ok | failing | LLC | MALA acc. | pull | E[L]−L(w*) | |w−w*|²/d | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    loaders: dict[tuple, object] = {}
    for text in args.settings:
        st = parse(text)
        for step in steps:
            key = (st["batch"], step if args.data == "step" else None)
            loader = loaders.setdefault(key, demo_loader(st["batch"], 512 // st["batch"], key[1]))
            m = measure(series.at(index[step]), loader, st, seed=args.seed)
            acc = "/".join(f"{a:.2f}" for a in m["acc"])
            pull = "/".join(f"{p:.2f}" for p in m["pull"])
            print(f"| {text} | {step} | {'yes' if m['ok'] else 'no'} | {', '.join(m['flags']) or '—'} | "
                  f"{m['llc']:.2f} ± {m['std']:.2f} | {acc} | {pull} | {m['rise']:.3f} | {m['dist']:.2e} | "
                  f"{m['cpu']:.1f} |", flush=True)
            if not math.isfinite(m["llc"]):
                break


if __name__ == "__main__":
    main()
