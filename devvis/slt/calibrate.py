"""Choosing the step size ε, the localization γ and nβ of an LLC estimate automatically.

:func:`calibrate` runs short estimates over a grid (ε × γ × nβ, in the spirit of devinterp's
``EpsilonBetaAnalyzer``), keeps the settings whose estimate passes every health check of
:mod:`devvis.slt.diagnostics` (no divergence, no trend, burn-in long enough, chains agree, MALA
acceptance ≥ :data:`TARGET_ACCEPTANCE`, the localization not outweighing the loss gradient), and
picks, for each (γ, nβ), the *largest* healthy ε (fastest mixing while the discretization stays
accurate), then the (γ, nβ) whose chains are least held by the localization (smallest mean
``|γ(w − w*)| / |nβ∇L|``). The sweep is recorded (``calibration.json``) and plotted
(``calibration.png``: the estimate against ε, one line per γ × nβ, unhealthy settings hollow, the
choice starred).

>>> import math, torch
>>> from torch import nn
>>> model = nn.Linear(3, 1)
>>> x = torch.randn(512, 3, generator=torch.Generator().manual_seed(0)); y = model(x).detach()
>>> nll = lambda o, t: ((o - t) ** 2).sum(-1).mean() / 2
>>> cal = calibrate(model, [(x, y)], nll, lrs=[1e-3, 3e-3, 3e-2], localizations=[1.0], nbetas=[100.0],
...                 num_draws=400, num_burnin_steps=100, progress=False)
>>> cal.settings["lr"], cal.healthy[-1]   # ε = 0.03 fails the MALA acceptance target
(0.003, False)
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
from devvis.slt.batches import Criterion, Loader, batch_size_of
from devvis.slt.diagnostics import FAILING
from devvis.slt.llc import default_nbeta, estimate_llc
from devvis.slt.result import LLCResult
from devvis.typing import PathLike

__all__ = ["Calibration", "calibrate", "TARGET_ACCEPTANCE", "DEFAULT_LRS", "DEFAULT_LOCALIZATIONS"]

#: A calibrated step size keeps every chain's mean MALA acceptance at least this high (Furman & Lau 2024).
TARGET_ACCEPTANCE = 0.9
#: Step sizes tried by default: 10⁻⁶ … 10⁻², half a decade apart.
DEFAULT_LRS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-6, -2, 9))
#: Localizations tried by default.
DEFAULT_LOCALIZATIONS: tuple[float, ...] = (1.0, 10.0, 100.0)


def _healthy(res: LLCResult) -> bool:
    checks = [k for k in FAILING if k != "uncalibrated" and res.flags.get(k)]
    acc = [a for a in res.acceptance if math.isfinite(a)]
    return (not checks and math.isfinite(res.llc_mean) and bool(acc) and min(acc) >= TARGET_ACCEPTANCE)


@dataclass
class Calibration:
    """Outcome of :func:`calibrate`.

    Attributes:
        settings: the chosen ``{"lr", "localization", "nbeta"}``, to pass to ``estimate_llc(**settings)``
            (empty when no setting was healthy).
        results: one short :class:`~devvis.slt.LLCResult` per grid point (lr-major, then γ, then nβ).
        healthy: whether each grid point passed every check.
        chosen: index of the chosen grid point in ``results``, or None.
        reason: how the choice was made, or why none could be.
    """

    settings: dict[str, float]
    results: list[LLCResult] = field(repr=False)
    healthy: list[bool] = field(repr=False)
    chosen: int | None
    reason: str

    @property
    def ok(self) -> bool:
        """True when a healthy setting was found."""
        return self.chosen is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the choice, the reason and every grid point's numbers and findings (no traces)."""
        return {"settings": dict(self.settings), "chosen": self.chosen, "reason": self.reason, "ok": self.ok,
                "grid": [{**r.to_dict(include_traces=False), "healthy": h} for r, h in zip(self.results, self.healthy)]}

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


def calibrate(
    model: nn.Module,
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
    **llc_kwargs: Any,
) -> Calibration:
    """Sweep ε × γ × nβ with short estimates and pick settings in the stable region (module docstring).

    Args:
        model, loader, criterion: as for :func:`~devvis.slt.estimate_llc`.
        lrs, localizations: the grid of ε and γ.
        nbetas: nβ values; default ``m/log m`` (m the batch size) and, when the loader has a
            ``dataset`` of n samples with n > m, also ``n/log n``.
        num_chains, num_draws, num_burnin_steps: the short chains of each grid point. Shorter chains
            cannot show that a slowly mixing setting is stationary, which pushes the choice to larger γ:
            on the 6-2-6 deep linear network (λ = 5.5), 400 draws after 200 burn-in choose ε = 10⁻³,
            γ = 1 (estimate 5.78); 200 after 100 choose γ = 10 (estimate 4.36).
        output_dir: when given, writes ``calibration.json`` and ``calibration.png`` there.
        **llc_kwargs: other :func:`estimate_llc` keywords (sampler, seed, train_mode, params, ...).

    Returns:
        :class:`Calibration`; ``settings`` goes straight into :func:`estimate_llc`. When no grid point
        is healthy, ``settings`` is empty, ``ok`` False and ``reason`` says what failed most.
    """
    for name in ("lr", "localization", "nbeta", "warn"):
        if name in llc_kwargs:
            raise ConfigError(f"calibrate chooses {name}; give the grid (lrs=, localizations=, nbetas=) instead")
    if not lrs or not localizations:
        raise ConfigError("lrs and localizations must list at least one value each")
    if nbetas is None:
        m = batch_size_of(loader)
        nbetas = [default_nbeta(m)]
        n = _data_size(loader)
        if n is not None and n > m:
            nbetas.append(default_nbeta(n))
    results: list[LLCResult] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lr, gamma, nbeta in itertools.product(lrs, localizations, nbetas):
            results.append(estimate_llc(model, loader, criterion, lr=float(lr), localization=float(gamma),
                                        nbeta=float(nbeta), num_chains=num_chains, num_draws=num_draws,
                                        num_burnin_steps=num_burnin_steps, progress=progress, warn=False,
                                        **llc_kwargs))
    healthy = [_healthy(r) for r in results]
    best: dict[tuple[float, float], int] = {}
    for i, r in enumerate(results):
        if healthy[i]:
            key = (r.hyperparameters["localization"], r.hyperparameters["nbeta"])
            if key not in best or r.hyperparameters["lr"] > results[best[key]].hyperparameters["lr"]:
                best[key] = i
    if best:
        chosen = min(best.values(), key=lambda i: float(np.nanmean(results[i].pull_ratio)))
        h = results[chosen].hyperparameters
        settings = {"lr": h["lr"], "localization": h["localization"], "nbeta": h["nbeta"]}
        reason = (f"{sum(healthy)} of {len(results)} settings healthy; the largest healthy ε for each (γ, nβ), then "
                  f"the one least held by the localization (pull ratio "
                  f"{float(np.nanmean(results[chosen].pull_ratio)):.3g})")
    else:
        chosen, settings = None, {}
        counts: dict[str, int] = {}
        for r in results:
            for k in r.failed_checks:
                if k != "uncalibrated":
                    counts[k] = counts.get(k, 0) + 1
            if any(a < TARGET_ACCEPTANCE for a in r.acceptance if math.isfinite(a)):
                counts["acceptance below target"] = counts.get("acceptance below target", 0) + 1
        common = ", ".join(f"{k} ({v})" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        reason = f"no healthy setting among {len(results)}; failed checks: {common or 'none recorded'}"
    cal = Calibration(settings=settings, results=results, healthy=healthy, chosen=chosen, reason=reason)
    if output_dir is not None:
        cal.save(output_dir)
    return cal
