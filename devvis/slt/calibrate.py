"""Choosing the step size ε, the localization γ and nβ of an LLC estimate automatically.

:func:`calibrate` runs short estimates over a grid (ε × γ × nβ, in the spirit of devinterp's
``EpsilonBetaAnalyzer``) at one model or at several checkpoints of a series, and keeps the settings that are

* healthy at *every* model given: every check of :mod:`devvis.slt.diagnostics` passes (no divergence,
  no trend, burn-in long enough, chains agree, not significantly below L(w*), the localization not
  outweighing the loss) and the MALA acceptance is ≥ :data:`TARGET_ACCEPTANCE`;
* *stable* in ε at the reference model (the last one given): the estimate at the next smaller ε of the
  same (γ, nβ) is healthy too and within :data:`STABLE_RTOL` of it (plus its noise). A chain too short for
  its ε and γ samples a transient whose estimate grows with ε (measured: 0.25, 0.67, 2.2, 6.8 for
  ε = 1, 3, 10, 30·10⁻⁶ on the demo's ResNet at γ = 1), while the localized posterior's does not.

It picks, for each (γ, nβ), the *largest* such ε (fastest mixing while the discretization stays
accurate), then the (γ, nβ) whose chains are least held by the localization (smallest pull ratio, see
:func:`~devvis.slt.diagnostics.pull_dominates`). The sweep is recorded (``calibration.json``) and plotted
(``calibration.png``: the estimate against ε, one line per γ × nβ, unhealthy settings hollow, the
choice starred). When no setting qualifies, ``settings`` is empty and :attr:`Calibration.fallback_settings`
names the grid point with the fewest failures at the reference model: :func:`~devvis.slt.llc_trajectory`
uses it, every estimate flagged ``uncalibrated``, rather than the defaults (which can lie far outside the
grid: γ = 100 and nβ = m/log m gave estimates down to −9.9 on the demo's curriculum run).

>>> import math, torch
>>> from torch import nn
>>> model = nn.Linear(3, 1)
>>> x = torch.randn(512, 3, generator=torch.Generator().manual_seed(0)); y = model(x).detach()
>>> nll = lambda o, t: ((o - t) ** 2).sum(-1).mean() / 2
>>> cal = calibrate(model, [(x, y)], nll, lrs=[1e-3, 3e-3, 3e-2], localizations=[1.0], nbetas=[100.0],
...                 num_draws=400, num_burnin_steps=100, progress=False)
>>> cal.settings["lr"], cal.healthy[-1]   # ε = 0.03 fails the MALA acceptance target
(0.003, False)
>>> cal.stable   # the smallest ε has no smaller neighbour to be compared with
[False, True, False]
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from devvis.errors import ConfigError
from devvis.slt import diagnostics
from devvis.slt.batches import Criterion, Loader, batch_size_of
from devvis.slt.diagnostics import FAILING
from devvis.slt.llc import default_nbeta
from devvis.parallel import check_workers
from devvis.slt.pool import EstimatePool, Task, run_estimates
from devvis.slt.result import LLCResult
from devvis.typing import PathLike

__all__ = ["Calibration", "calibrate", "TARGET_ACCEPTANCE", "STABLE_RTOL", "DEFAULT_LRS", "DEFAULT_LOCALIZATIONS"]

#: A calibrated step size keeps every chain's mean MALA acceptance at least this high (Furman & Lau 2024).
TARGET_ACCEPTANCE = 0.9
#: The estimate at ε and at the next smaller ε differ by at most this fraction (beyond 2 standard errors).
STABLE_RTOL = 0.3
#: Step sizes tried by default: 10⁻⁶ … 10⁻², half a decade apart.
DEFAULT_LRS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-6, -2, 9))
#: Localizations tried by default.
DEFAULT_LOCALIZATIONS: tuple[float, ...] = (1.0, 10.0, 100.0)


def _healthy(res: LLCResult) -> bool:
    """Every failing check passes (calibration itself aside) and every chain's MALA acceptance is on target."""
    checks = [k for k in FAILING if k != "uncalibrated" and res.flags.get(k)]
    acc = [a for a in res.acceptance if math.isfinite(a)]
    return (not checks and math.isfinite(res.llc_mean) and bool(acc) and min(acc) >= TARGET_ACCEPTANCE)


@dataclass
class Calibration:
    """Outcome of :func:`calibrate`.

    Attributes:
        settings: the chosen ``{"lr", "localization", "nbeta"}``, to pass to ``estimate_llc(**settings)``
            (empty when no setting was healthy).
        results: one short :class:`~devvis.slt.LLCResult` per grid point (lr-major, then γ, then nβ), at
            the reference model (the last one given).
        healthy: whether each grid point passed every check (at every model, for the candidates run there).
        chosen: index of the chosen grid point in ``results``, or None.
        reason: how the choice was made, or why none could be.
        stable: whether each grid point's estimate agrees with the next smaller ε (see :data:`STABLE_RTOL`).
        model_results: ``model_results[k][i]``: grid point i at model k (the last row is ``results``); None
            where it was not run (a model other than the reference is run only for the candidates, best first).
        labels: one label per model (e.g. its training step).
        fallback: when none was chosen, the index of the grid point with the fewest failures at the
            reference model (see :attr:`fallback_settings`); None when one was chosen.
    """

    settings: dict[str, float]
    results: list[LLCResult] = field(repr=False)
    healthy: list[bool] = field(repr=False)
    chosen: int | None
    reason: str
    stable: list[bool] = field(default_factory=list, repr=False)
    model_results: list[list[LLCResult | None]] = field(default_factory=list, repr=False)
    labels: list[str] = field(default_factory=list)
    fallback: int | None = None

    @property
    def fallback_settings(self) -> dict[str, float]:
        """When no setting was chosen: the grid point with the fewest failures at the reference model (see
        :func:`_fallback`), to be used *flagged* ``uncalibrated``; ``{}`` when one was chosen or the grid is empty."""
        if self.chosen is not None or self.fallback is None:
            return {}
        h = self.results[self.fallback].hyperparameters
        return {"lr": h["lr"], "localization": h["localization"], "nbeta": h["nbeta"]}

    @property
    def ok(self) -> bool:
        """True when a healthy setting was found."""
        return self.chosen is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the choice, the reason and every grid point's numbers and findings (no traces)."""
        per_model = self.model_results or [self.results]
        labels = self.labels or [str(k) for k in range(len(per_model))]
        grid = []
        for i, (r, h) in enumerate(zip(self.results, self.healthy)):
            entry = {**r.to_dict(include_traces=False), "healthy": h,
                     "stable": bool(self.stable[i]) if self.stable else None}
            entry["at_models"] = {lab: {"llc_mean": float(rs[i].llc_mean), "health": rs[i].health}
                                  for lab, rs in zip(labels, per_model) if rs[i] is not None}
            grid.append(entry)
        return {"settings": dict(self.settings), "chosen": self.chosen, "reason": self.reason, "ok": self.ok,
                "fallback": self.fallback, "fallback_settings": self.fallback_settings, "models": labels, "grid": grid}

    def save(self, output_dir: PathLike) -> None:
        """Write ``calibration.json`` and ``calibration.png`` into ``output_dir``."""
        from devvis.io import metadata, write_json

        out = Path(output_dir)
        write_json(out / "calibration.json", metadata("llc_calibration", **self.to_dict()))
        self.plot(out / "calibration.png")

    def plot(self, output_path: PathLike) -> None:
        """Estimate against ε (log axis), one line per (γ, nβ); hollow markers: unhealthy; star: the choice."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from devvis.io import write_figure

        fig, ax = plt.subplots(figsize=(7, 4))
        groups: dict[tuple[float, float], list[int]] = {}
        for i, r in enumerate(self.results):
            h = r.hyperparameters
            groups.setdefault((h["localization"], h["nbeta"]), []).append(i)
        for (gamma, nbeta), idx in groups.items():
            lrs = [self.results[i].hyperparameters["lr"] for i in idx]
            vals = [self.results[i].llc_mean for i in idx]
            (line,) = ax.plot(lrs, vals, lw=1, label=f"γ={gamma:g}, nβ={nbeta:.3g}")
            for i, lr, v in zip(idx, lrs, vals):
                ax.plot([lr], [v], "o", ms=5, color=line.get_color(),
                        mfc=line.get_color() if self.healthy[i] else "none")
        if self.chosen is not None:
            r = self.results[self.chosen]
            ax.plot([r.hyperparameters["lr"]], [r.llc_mean], "*", ms=16, color="k", label="chosen")
        ax.set_xscale("log")
        ax.set_xlabel("step size ε")
        ax.set_ylabel("LLC estimate (short chains)")
        ax.set_title("LLC calibration: filled = healthy, hollow = a check failed", fontsize=9)
        ax.legend(fontsize=7)
        write_figure(output_path, fig)


def _data_size(loader: Loader) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def _stability(results: list[LLCResult], healthy_ref: list[bool]) -> list[bool]:
    """Per grid point: healthy at the reference model, and its estimate within :data:`STABLE_RTOL` (plus two
    standard errors) of the next smaller ε's on the same (γ, nβ) line, which is healthy too. With a single
    ε in the grid there is nothing to compare, and every healthy point counts as stable."""
    lines: dict[tuple[float, float], list[int]] = {}
    for i, r in enumerate(results):
        lines.setdefault((r.hyperparameters["localization"], r.hyperparameters["nbeta"]), []).append(i)
    stable = [False] * len(results)
    for idx in lines.values():
        idx = sorted(idx, key=lambda i: results[i].hyperparameters["lr"])
        if len(idx) == 1:
            stable[idx[0]] = healthy_ref[idx[0]]
        for lo, hi in zip(idx, idx[1:]):
            a, b = results[lo], results[hi]
            se = [diagnostics.estimate_se(r.draw_traces, r.nbeta) for r in (a, b)]
            noise = 2 * math.sqrt(sum(v * v for v in se if math.isfinite(v)))
            close = abs(a.llc_mean - b.llc_mean) <= STABLE_RTOL * max(abs(a.llc_mean), abs(b.llc_mean)) + noise
            stable[hi] = healthy_ref[lo] and healthy_ref[hi] and close
    return stable


def _fallback(results: list[LLCResult], stable: list[bool]) -> int | None:
    """The grid point with the fewest failures at the reference model: failed checks, acceptance below
    :data:`TARGET_ACCEPTANCE` and instability in ε count one each; ties go to the smaller pull ratio."""
    def score(i: int) -> tuple[int, float]:
        r = results[i]
        acc = [a for a in r.acceptance if math.isfinite(a)]
        fails = len([k for k in r.failed_checks if k != "uncalibrated"])
        fails += int(not acc or min(acc) < TARGET_ACCEPTANCE) + int(not stable[i])
        pull = float(np.nanmean(r.pull_ratio)) if np.isfinite(r.pull_ratio).any() else math.inf
        return fails, pull

    return min(range(len(results)), key=score) if results else None


def calibrate(
    model: nn.Module | Sequence[nn.Module],
    loader: Loader,
    criterion: Criterion,
    *,
    lrs: Sequence[float] = DEFAULT_LRS,
    localizations: Sequence[float] = DEFAULT_LOCALIZATIONS,
    nbetas: Sequence[float] | None = None,
    num_chains: int = 2,
    num_draws: int = 400,
    num_burnin_steps: int = 200,
    output_dir: PathLike | None = None,
    progress: bool = True,
    labels: Sequence[str] | None = None,
    workers: "int | EstimatePool" = 1,
    threads: int | None = None,
    **llc_kwargs: Any,
) -> Calibration:
    """Sweep ε × γ × nβ with short estimates and pick settings in the stable region (module docstring).

    Args:
        model: the model, or several (checkpoints of one series, e.g. the first, a middle and the last):
            a setting must be healthy at every one; ε-stability is judged at the last (the reference).
        loader, criterion: as for :func:`~devvis.slt.estimate_llc`.
        lrs, localizations: the grid of ε and γ.
        nbetas: nβ values; default ``m/log m`` (m the batch size) and, when the loader has a
            ``dataset`` of n samples with n > m, also ``n/log n``.
        num_chains, num_draws, num_burnin_steps: the short chains of each grid point. Shorter chains
            cannot show that a slowly mixing setting is stationary, which pushes the choice to larger γ:
            on the 6-2-6 deep linear network (λ = 5.5), 400 draws after 200 burn-in choose ε = 10⁻³,
            γ = 1 (estimate 5.78); 200 after 100 choose γ = 10 (estimate 4.36).
        output_dir: when given, writes ``calibration.json`` and ``calibration.png`` there.
        labels: one label per model for the record (default: their positions).
        workers, threads: estimates at once in ``workers`` spawned processes of ``threads`` torch threads
            (:mod:`devvis.slt.pool`; the same numbers as ``workers=1``), or in an open
            :class:`~devvis.slt.pool.EstimatePool`; the loader and criterion must pickle.
        **llc_kwargs: other :func:`estimate_llc` keywords (sampler, seed, train_mode, params, ...).

    Returns:
        :class:`Calibration`; ``settings`` goes straight into :func:`estimate_llc`. When no grid point
        is healthy and stable, ``settings`` is empty, ``ok`` False and ``reason`` says what failed most.
    """
    for name in ("lr", "localization", "nbeta", "warn"):
        if name in llc_kwargs:
            raise ConfigError(f"calibrate chooses {name}; give the grid (lrs=, localizations=, nbetas=) instead")
    if not lrs or not localizations:
        raise ConfigError("lrs and localizations must list at least one value each")
    models = [model] if isinstance(model, nn.Module) else list(model)
    if not models:
        raise ConfigError("calibrate needs at least one model")
    names = [str(v) for v in labels] if labels is not None else [str(k) for k in range(len(models))]
    if len(names) != len(models):
        raise ConfigError(f"{len(names)} labels for {len(models)} models; give one label per model")
    if nbetas is None:
        m = batch_size_of(loader)
        nbetas = [default_nbeta(m)]
        n = _data_size(loader)
        if n is not None and n > m:
            nbetas.append(default_nbeta(n))
    grid = list(itertools.product(lrs, localizations, nbetas))
    parallel = isinstance(workers, EstimatePool) or check_workers(workers) > 1
    per_model: list[list[LLCResult | None]] = [[None] * len(grid) for _ in models]

    def fill(pairs: Sequence[tuple[int, int]]) -> None:
        """Estimate the (model, grid point) pairs not estimated yet, in ``workers`` processes."""
        todo = [(k, i) for k, i in dict.fromkeys(pairs) if per_model[k][i] is None]
        tasks = [Task(model=models[k], kwargs=dict(lr=float(grid[i][0]), localization=float(grid[i][1]),
                                                   nbeta=float(grid[i][2]), num_chains=num_chains, num_draws=num_draws,
                                                   num_burnin_steps=num_burnin_steps, **llc_kwargs))
                 for k, i in todo]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            done = run_estimates(tasks, loader, criterion, workers=workers, threads=threads, progress=progress,
                                 desc="calibration")
        for (k, i), res in zip(todo, done):
            per_model[k][i] = res

    def run(k: int, i: int) -> LLCResult:
        fill([(k, i)])
        return per_model[k][i]  # type: ignore[return-value]

    # the whole grid at the reference model; the other models only for the candidates, best first
    fill([(len(models) - 1, i) for i in range(len(grid))])
    results = [run(len(models) - 1, i) for i in range(len(grid))]
    healthy_ref = [_healthy(r) for r in results]
    stable = _stability(results, healthy_ref)
    remaining = {i for i in range(len(grid)) if healthy_ref[i] and stable[i]}
    healthy = [False] * len(grid)
    chosen: int | None = None
    while remaining and chosen is None:
        best: dict[tuple[float, float], int] = {}
        for i in remaining:
            h = results[i].hyperparameters
            key = (h["localization"], h["nbeta"])
            if key not in best or h["lr"] > results[best[key]].hyperparameters["lr"]:
                best[key] = i
        candidate = min(best.values(), key=lambda i: float(np.nanmean(results[i].pull_ratio)))
        if parallel:  # in parallel, all at once; in this process, stop at the first unhealthy model
            fill([(k, candidate) for k in range(len(models))])
        healthy[candidate] = all(_healthy(run(k, candidate)) for k in range(len(models)))
        if healthy[candidate]:
            chosen = candidate
        remaining.discard(candidate)
    where = f" at all {len(models)} models" if len(models) > 1 else ""
    n_ok = sum(a and b for a, b in zip(healthy_ref, stable))
    if chosen is not None:
        h = results[chosen].hyperparameters
        settings = {"lr": h["lr"], "localization": h["localization"], "nbeta": h["nbeta"]}
        reason = (f"{sum(healthy_ref)} of {len(results)} settings healthy at the reference model, {n_ok} of them "
                  f"stable in ε; the largest such ε for each (γ, nβ), then the one least held by the localization "
                  f"(pull ratio {float(np.nanmean(results[chosen].pull_ratio)):.3g}), healthy{where or ''}")
    else:
        settings = {}
        counts: dict[str, int] = {}
        for rs in per_model:
            for r in rs:
                if r is None:
                    continue
                for k in r.failed_checks:
                    if k != "uncalibrated":
                        counts[k] = counts.get(k, 0) + 1
                if any(a < TARGET_ACCEPTANCE for a in r.acceptance if math.isfinite(a)):
                    counts["acceptance below target"] = counts.get("acceptance below target", 0) + 1
        counts["not stable in ε"] = sum(h and not st for h, st in zip(healthy_ref, stable))
        counts["unhealthy at another model"] = n_ok
        common = ", ".join(f"{k} ({v})" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v)
        reason = (f"no healthy and stable setting among {len(results)}{where}; failed checks: "
                  f"{common or 'none recorded'}")
    if len(models) == 1:
        healthy = healthy_ref
    fallback = None if chosen is not None else _fallback(results, stable)
    if fallback is not None:
        h = results[fallback].hyperparameters
        reason += (f"; fewest failures at the reference model: lr {h['lr']:.3g}, localization {h['localization']:.3g}, "
                   f"nbeta {h['nbeta']:.4g} ({results[fallback].health})")
    cal = Calibration(settings=settings, results=results, healthy=healthy, chosen=chosen, reason=reason,
                      stable=stable, model_results=per_model, labels=names, fallback=fallback)
    if output_dir is not None:
        cal.save(output_dir)
    return cal
