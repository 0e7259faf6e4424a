"""How often the curable checks flag simulated chains, with and without ``estimate_llc(..., max_draws=...)``.

Two chains of AR(1) noise (standard deviation 0.1, autocorrelation time 24) about a loss 0.3 above L(w*),
like the demo's draws, with a planted defect: none (stationary), a relaxation from 3 standard deviations
below with time constant 150 or 400 steps (both chains), one chain drifting 1 standard deviation per 300
steps forever, one chain jumping by 2 standard deviations at step 500. The checks that longer chains can
cure (``trending``, ``chains_disagree``, ``burnin_short``) read the draws of 2 × (200 + 400) steps (one look),
of 2 × (400 + 800) (one look at the longer layout), and as the extension does: the longer layout only where
the shorter one failed (:func:`devvis.slt.diagnostics.longer_chains_may_cure`). Results: benchmarks/LLC_RESULTS.md,
round 7.

    OMP_NUM_THREADS=1 python benchmarks/llc_extension_rates.py --seeds 300
"""

from __future__ import annotations

import argparse

import numpy as np

from devvis.slt import diagnostics as D

KINDS = ("stationary", "relax150", "relax400", "drift1", "jump")


def ar1(rng: np.random.Generator, chains: int, n: int, tau: float) -> np.ndarray:
    """Stationary AR(1) draws ``(chains, n)`` of unit variance and integrated autocorrelation time ``tau``."""
    phi = (tau - 1) / (tau + 1)
    x = np.zeros((chains, n))
    x[:, 0] = rng.standard_normal(chains)
    e = rng.standard_normal((chains, n)) * np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def traces(kind: str, rng: np.random.Generator, steps: int = 1200, tau: float = 24.0) -> np.ndarray:
    """Two chains' losses ``(2, steps)`` with L(w*) = 1.0 and the defect ``kind`` planted."""
    x = 1.3 + 0.1 * ar1(rng, 2, steps, tau)
    t = np.arange(steps)
    if kind == "relax150":
        x -= 0.3 * np.exp(-t / 150)
    elif kind == "relax400":
        x -= 0.3 * np.exp(-t / 400)
    elif kind == "drift1":
        x[0] += 0.1 * t / 300
    elif kind == "jump":
        x[0, 500:] += 0.2
    elif kind != "stationary":
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    return x


def failed(x: np.ndarray, burnin: int, init_loss: float = 1.0) -> list[str]:
    """The curable checks that fail on the draws after ``burnin`` (as :func:`devvis.slt.llc.estimate_llc` runs them)."""
    d = x[:, burnin:]
    tau = D.chains_tau(d)
    out = ["trending"] if any(D.trending(c, d[c], init_loss, tau) for c in range(len(d))) else []
    out += ["chains_disagree"] if D.chains_disagree(d) else []
    out += ["burnin_short"] if D.burnin_short(d, init_loss) else []
    return out


def rates(kind: str, seeds: int) -> dict[str, float]:
    """Fraction of seeds flagged by one look at each layout, and with the extension (and how often it extends)."""
    short = long = extended = flagged = 0
    for s in range(seeds):
        x = traces(kind, np.random.default_rng(s))
        f_short = failed(x[:, :600], 200)
        f_long = failed(x, 400)
        grow = D.longer_chains_may_cure(f_short)
        short += bool(f_short)
        long += bool(f_long)
        extended += grow
        flagged += bool(f_long) if grow else bool(f_short)
    return {"short": short / seeds, "long": long / seeds, "extension": flagged / seeds, "extended": extended / seeds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=300)
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    args = p.parse_args()
    print("| planted | flagged: one look at 2 × (200 + 400) | one look at 2 × (400 + 800) | with the extension | extended |")
    print("|---|---|---|---|---|")
    for kind in args.kinds:
        r = rates(kind, args.seeds)
        print(f"| {kind} | {r['short']:.1%} | {r['long']:.1%} | {r['extension']:.1%} | {r['extended']:.0%} |", flush=True)


if __name__ == "__main__":
    main()
