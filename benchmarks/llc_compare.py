"""LLC: devvis against devinterp 1.3.2 and theory, and the time per draw (loop, vmap, devinterp), in one run.

    benchmarks/setup_devinterp.sh            # optional: devinterp 1.3.2 into benchmarks/.deps
    .venv/bin/python benchmarks/llc_compare.py [--quick]    # writes benchmarks/LLC_RESULTS.md

Cases (same model, data, settings and chain layout for both libraries):
* DLN 6-2-6 at its most singular minimum (zero weights, zero targets, n = 1024, batch 64): λ = 5.5.
* Reduced-rank regression (5, 4, 5) trained on noise targets (devinterp's own test): λ = 8.
* A BatchNorm CNN (compact_resnet, width 8) trained 300 steps on SyntheticShapes: no closed form;
  devvis in train mode (default) and eval mode, devinterp (train mode). This is the measurement behind
  devvis's default ``train_mode=True``.
Speed: time per draw (all chains) of the CNN with 4 chains, devvis loop vs vmap vs devinterp.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / ".deps"))

from devvis.slt import estimate_llc  # noqa: E402


def devinterp_llc(model, loader, criterion, *, sampler, lr, localization, nbeta, chains, draws, burnin, seed=0):
    """devinterp 1.3.2's estimate with the same settings, or None when it is not installed."""
    try:
        from devinterp.optim import SGLD, SGMCMC
        from devinterp.slt.llc import LLCEstimator
        from devinterp.slt.sampler import sample
        from devinterp.utils import get_init_loss_multi_batch
    except ImportError:
        return None

    def evaluate(m, data):
        return criterion(m(data[0]), data[1])

    init = get_init_loss_multi_batch(loader, len(loader), model, evaluate, device="cpu")
    est = LLCEstimator(num_chains=chains, num_draws=draws, nbeta=nbeta, init_loss=init)
    method = SGLD if sampler == "sgld" else SGMCMC.rmsprop_sgld
    t0 = time.perf_counter()
    sample(model, loader, evaluate=evaluate, callbacks=[est], sampling_method=method,
           optimizer_kwargs=dict(lr=lr, localization=localization, nbeta=nbeta), num_chains=chains, num_draws=draws,
           num_burnin_steps=burnin, seed=seed, verbose=False, cores=1)
    out = est.get_results()
    return float(out["llc/mean"]), float(out["llc/std"]), time.perf_counter() - t0


def mse_nll(out, t):
    return ((out - t) ** 2).sum(-1).mean() / 2


def dln_case():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 2, bias=False), nn.Linear(2, 6, bias=False))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x = torch.randn(1024, 6, generator=g)
    ds = torch.utils.data.TensorDataset(x, torch.zeros(1024, 6))
    return model, torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))


def rrr_case():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1000, 5, generator=g), torch.randn(1000, 5, generator=g)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Linear(4, 5, bias=False))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2000):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    ds = torch.utils.data.TensorDataset(x, y)
    return model, torch.utils.data.DataLoader(ds, batch_size=1000, shuffle=True, generator=torch.Generator().manual_seed(0))


def cnn_case(steps=300):
    from devvis.data import SyntheticShapes
    from devvis.zoo.resnet import compact_resnet

    x, y = SyntheticShapes(512, size=32, seed=0, split="train").tensors()
    torch.manual_seed(0)
    model = compact_resnet(width=8, blocks=(1, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for i in range(steps):
        j = (i * 64) % 512
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[j : j + 64]), y[j : j + 64]).backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    ds = torch.utils.data.TensorDataset(x, y)
    return model, torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer draws (a smoke run)")
    ap.add_argument("--output", default=str(HERE / "LLC_RESULTS.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    k = 4 if args.quick else 1
    rows, speed = [], []

    def run(name, theory, model, loader, crit, **kw):
        s = dict(kw)
        t0 = time.perf_counter()
        r = estimate_llc(model, loader, crit, progress=False, warn=False, **s)
        dv = (r.llc_mean, r.llc_std, time.perf_counter() - t0, r.health)
        di = devinterp_llc(model, loader, crit, sampler=s.get("sampler", "sgld"), lr=s["lr"],
                           localization=s["localization"], nbeta=s["nbeta"], chains=s["num_chains"],
                           draws=s["num_draws"], burnin=s["num_burnin_steps"]) if s.get("train_mode", True) else None
        rows.append((name, dv, di, theory, s))
        print(name, dv, di, flush=True)

    model, loader = dln_case()
    base = dict(lr=1e-3, localization=1.0, nbeta=1024 / math.log(1024), num_chains=4, num_draws=400 // k,
                num_burnin_steps=200 // k)
    run("DLN 6-2-6, zero minimum, SGLD", 5.5, model, loader, mse_nll, **base)
    run("DLN 6-2-6, zero minimum, RMSProp-SGLD", 5.5, model, loader, mse_nll, **{**base, "lr": 1e-4,
        "sampler": "rmsprop_sgld"})
    model, loader = rrr_case()
    rbase = dict(lr=6e-4, localization=1.0, nbeta=1000 / math.log(1000), num_chains=3, num_draws=2000 // k,
                 num_burnin_steps=0)
    run("RRR (5,4,5) on noise, SGLD", 8.0, model, loader, nn.functional.mse_loss, **rbase)
    run("RRR (5,4,5) on noise, RMSProp-SGLD", 8.0, model, loader, nn.functional.mse_loss,
        **{**rbase, "lr": 6e-5, "sampler": "rmsprop_sgld"})
    model, loader = cnn_case()
    cbase = dict(lr=1e-5, localization=100.0, nbeta=64 / math.log(64), num_chains=4, num_draws=100 // k,
                 num_burnin_steps=50 // k)
    run("BatchNorm CNN (trained), SGLD, train mode", None, model, loader, nn.functional.cross_entropy, **cbase)
    run("BatchNorm CNN (trained), SGLD, eval mode", None, model, loader, nn.functional.cross_entropy,
        **{**cbase, "train_mode": False})

    # time per draw: process CPU time, one thread, the two libraries alternating (REPS rounds; the median)
    draws, reps = 40 // k, 3 if args.quick else 5
    spd = dict(cbase, num_draws=draws, num_burnin_steps=0)
    times: dict[str, list[float]] = {}
    engines: dict[str, str] = {}
    for _ in range(reps):
        for label, vec in (("devvis, chains in a loop", False), ("devvis, chains vectorised (torch.func.vmap)", True)):
            t0 = time.process_time()
            r = estimate_llc(model, loader, nn.functional.cross_entropy, progress=False, warn=False, vectorize=vec,
                             **spd)
            times.setdefault(label, []).append((time.process_time() - t0) / draws)
            engines[label] = r.hyperparameters["engine"]
        t0 = time.process_time()
        di = devinterp_llc(model, loader, nn.functional.cross_entropy, sampler="sgld", lr=cbase["lr"],
                           localization=cbase["localization"], nbeta=cbase["nbeta"], chains=4, draws=draws, burnin=0)
        if di is not None:
            times.setdefault("devinterp 1.3.2 (cores=1)", []).append((time.process_time() - t0) / draws)
            engines["devinterp 1.3.2 (cores=1)"] = "loop"
    ref = statistics.median(times["devinterp 1.3.2 (cores=1)"]) if "devinterp 1.3.2 (cores=1)" in times else None
    for label, ts in times.items():
        med = statistics.median(ts)
        speed.append((label, med, engines[label], None if ref is None else med / ref))

    fmt = lambda v: "—" if v is None else f"{v[0]:.2f} ± {v[1]:.2f}"  # noqa: E731
    lines = ["# LLC: devvis vs devinterp 1.3.2 vs theory", "",
             f"Measured in one run of `benchmarks/llc_compare.py{' --quick' if args.quick else ''}` "
             f"({platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread; "
             f"devinterp {'1.3.2' if rows[0][2] is not None else 'not installed'}). Same model, data, settings and "
             "chain layout for both libraries; ± is the std over chains.", "",
             "| case | settings | devvis | devvis health | devinterp 1.3.2 | theory |", "|---|---|---|---|---|---|"]
    for name, dv, di, theory, s in rows:
        st = (f"{s.get('sampler', 'sgld')}, ε={s['lr']:g}, γ={s['localization']:g}, nβ={s['nbeta']:.4g}, "
              f"{s['num_chains']}×{s['num_draws']}, burn-in {s['num_burnin_steps']}")
        lines.append(f"| {name} | {st} | {fmt(dv)} | {dv[3]} | {fmt(di)} | {'—' if theory is None else theory} |")
    lines += ["", f"Time per draw (4 chains, the CNN above, batch 64; process CPU time, one thread, median of {reps} "
              "rounds in which the samplers alternate; everything an estimate does is counted: L(w*), the other "
              "mode's loss, the MALA check and the health checks for devvis, L(w*) and the model copies for "
              "devinterp):", "", "| sampler | s / draw | engine | × devinterp |", "|---|---|---|---|"]
    lines += [f"| {label} | {t:.4f} | {eng} | {'—' if x is None else f'{x:.2f}'} |" for label, t, eng, x in speed]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
