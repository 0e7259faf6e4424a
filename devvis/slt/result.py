"""What an LLC estimate returns: :class:`LLCResult` (numbers, traces, settings, findings) and its plot.

>>> import numpy as np
>>> res = LLCResult(llc_mean=2.0, llc_std=0.1, llc_per_chain=[1.9, 2.1], loss_traces=np.ones((2, 5)),
...                 num_burnin_steps=1, init_loss=0.9, nbeta=10.0, hyperparameters={})
>>> res.ok, res.draw_traces.shape, res.health
(True, (2, 4), 'healthy')
>>> res.flags["pull_dominates"] = [0]
>>> res.ok, res.health
(False, 'unhealthy: pull_dominates')
>>> off = LLCResult(llc_mean=-4.0, llc_std=0.3, llc_per_chain=[-4.2, -3.8], loss_traces=np.ones((2, 5)),
...                 num_burnin_steps=1, init_loss=0.9, nbeta=10.0, hyperparameters={},
...                 flags={"below_init": [0, 1], "negative": [0, 1]})
>>> off.at_minimum, off.llc, off.llc_mean, off.health
(False, nan, -4.0, 'not a minimum: below_init, negative')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from devvis.slt.diagnostics import FAILING, not_a_minimum
from devvis.typing import PathLike

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from matplotlib.axes import Axes

__all__ = ["LLCResult", "plot_traces_on", "format_estimate"]


@dataclass
class LLCResult:
    """Outcome of :func:`~devvis.slt.estimate_llc`.

    The learning coefficient exists at a local minimum only: where the chains find lower loss around w* than at
    it (:data:`~devvis.slt.diagnostics.NOT_A_MINIMUM`), :attr:`llc` is NaN and the verdict reads
    ``"not a minimum: ..."``; ``llc_mean`` keeps the sampler's number (negative, as a rule) for inspection.

    Attributes:
        llc_mean: mean of the per-chain estimates over the finite chains (NaN if none): the sampler's number,
            whatever the verdict (:attr:`llc` is the LLC, NaN where there is none).
        llc_std: sample standard deviation (ddof=1) over the finite chains; NaN with
            fewer than two finite chains.
        llc_per_chain: one estimate per chain, NaN for chains stopped by a NaN/inf loss.
        loss_traces: float64 array ``(num_chains, num_burnin_steps + num_draws)``: the
            minibatch loss at every burn-in step, then at every draw. Columns before
            ``num_burnin_steps`` are burn-in (not used in the estimate). A chain stopped
            early is NaN from the step that failed onwards.
        num_burnin_steps: number of leading burn-in columns in ``loss_traces``.
        init_loss: ``L_n(w*)``, the mean loss over the loader at the given weights.
        nbeta: the inverse temperature ``nβ`` used.
        hyperparameters: every setting (sampler, lr, localization, nbeta and its
            source, chains, draws, burn-in, thinning, seed, mode, sampled parameters).
        diagnostics: human-readable findings, one string each (empty when all is well).
        flags: ``{name: [chain indices]}`` for every check of :mod:`devvis.slt.diagnostics`
            (``nan``, ``diverged``, ``trending``, ``spreading``, ``low_acceptance``, ``pull_dominates``,
            ``below_init``, ``negative``, ``chains_disagree``, ``burnin_short``, ``uncalibrated``,
            ``mode``); an estimate-wide flag lists every chain.
        time_s: wall time of the whole estimate.
        acceptance: mean MALA acceptance probability per chain (NaN where not measured).
        pull_ratio: ``E[γ(w − w*)·∇L] / E[nβ|∇L|²]`` over the draws, per chain (the localization's share
            of the loss curvature against the loss's own; :func:`devvis.slt.diagnostics.pull_dominates`).
        init_loss_other_mode: L(w*) in the mode not sampled, on the first ``MODE_BATCHES`` batches (models
            with BatchNorm/dropout), else None.
        distance_traces: ``|w − w*|²`` at the same steps as ``loss_traces`` (None when not recorded).
        extensions: how often the chains were run longer (``estimate_llc(..., max_draws=...)``), each time to
            twice the burn-in and draws; ``num_burnin_steps`` and ``loss_traces`` are those of the final layout.
    """

    llc_mean: float
    llc_std: float
    llc_per_chain: list[float]
    loss_traces: np.ndarray
    num_burnin_steps: int
    init_loss: float
    nbeta: float
    hyperparameters: dict[str, Any]
    diagnostics: list[str] = field(default_factory=list)
    flags: dict[str, list[int]] = field(default_factory=dict)
    time_s: float = 0.0
    acceptance: list[float] = field(default_factory=list)
    pull_ratio: list[float] = field(default_factory=list)
    init_loss_other_mode: float | None = None
    distance_traces: np.ndarray | None = field(default=None, repr=False)
    extensions: int = 0

    @property
    def failed_checks(self) -> list[str]:
        """Names of the failing checks (:data:`devvis.slt.diagnostics.FAILING` that fired)."""
        out = [k for k in FAILING if self.flags.get(k)]
        return out if math.isfinite(self.llc_mean) else ["nan"] + out

    @property
    def ok(self) -> bool:
        """True when the estimate is finite and no failing check fired (see :attr:`reasons`)."""
        return not self.failed_checks

    @property
    def reasons(self) -> list[str]:
        """The findings that make the estimate not ok (empty when ``ok``)."""
        if self.ok:
            return []
        notes = [d for d in self.diagnostics if not d.startswith("the loss at w* is")]
        return notes or list(self.failed_checks)

    @property
    def at_minimum(self) -> bool:
        """False when the draws say w* is not a local minimum of the sampled loss
        (:func:`devvis.slt.diagnostics.not_a_minimum`): there is no LLC to estimate there."""
        return not not_a_minimum(self.failed_checks + (["nan"] if self.flags.get("nan") else []))

    @property
    def llc(self) -> float:
        """The LLC: ``llc_mean`` at a local minimum, NaN where the weights are not one (:attr:`at_minimum`) or
        no chain finished. Healthy or not is :attr:`ok`; an unhealthy number at a minimum is kept (and flagged)."""
        return float(self.llc_mean) if self.at_minimum else math.nan

    @property
    def health(self) -> str:
        """The verdict shown by the CLI, in JSON and in the report: ``"healthy"``, ``"not a minimum: check, ..."``
        (no LLC at these weights) or ``"unhealthy: check, check, ..."``."""
        if self.ok:
            return "healthy"
        return ("unhealthy: " if self.at_minimum else "not a minimum: ") + ", ".join(self.failed_checks)

    @property
    def draw_traces(self) -> np.ndarray:
        """The loss at the draws only (burn-in removed): ``(num_chains, num_draws)``."""
        return self.loss_traces[:, self.num_burnin_steps :]

    def to_dict(self, include_traces: bool = True) -> dict[str, Any]:
        """JSON-ready dictionary (NaN stays NaN here; :func:`devvis.io.write_json` writes null)."""
        out: dict[str, Any] = {
            "llc": self.llc,
            "at_minimum": self.at_minimum,
            "llc_mean": float(self.llc_mean),
            "llc_std": float(self.llc_std),
            "llc_per_chain": [float(v) for v in self.llc_per_chain],
            "init_loss": float(self.init_loss),
            "nbeta": float(self.nbeta),
            "ok": self.ok,
            "health": self.health,
            "reasons": self.reasons,
            "acceptance": [float(v) for v in self.acceptance],
            "pull_ratio": [float(v) for v in self.pull_ratio],
            "init_loss_other_mode": self.init_loss_other_mode,
            "hyperparameters": dict(self.hyperparameters),
            "diagnostics": list(self.diagnostics),
            "flags": {k: list(v) for k, v in self.flags.items()},
            "time_s": float(self.time_s),
            "num_burnin_steps": int(self.num_burnin_steps),
            "num_draws": int(self.loss_traces.shape[1] - self.num_burnin_steps),
            "extensions": int(self.extensions),
        }
        if include_traces:
            out["loss_traces"] = self.loss_traces.tolist()
        return out

    def plot_traces(self, output_path: PathLike, title: str | None = None) -> None:
        """Write a PNG of the loss traces to ``output_path`` (one line per chain; burn-in shaded; L(w*) dashed)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from devvis.io import write_figure

        fig, ax = plt.subplots(figsize=(7, 4))
        plot_traces_on(ax, self)
        ax.set_title(title or (f"LLC = {format_estimate(self.llc_mean)} ± {format_estimate(self.llc_std)}  "
                               f"(nβ = {self.nbeta:.4g})" if self.at_minimum else
                               f"no LLC: not a local minimum (the draws fall below L(w*); nβ = {self.nbeta:.4g})"))
        ax.legend(loc="best", fontsize=7)
        write_figure(output_path, fig)


def plot_traces_on(ax: "Axes", result: LLCResult) -> None:
    """Draw ``result``'s loss traces on a matplotlib axis (used by the sweep grid too)."""
    steps = np.arange(result.loss_traces.shape[1])
    for c, trace in enumerate(result.loss_traces):
        ax.plot(steps, trace, lw=0.8, label=f"chain {c}")
    if result.num_burnin_steps:
        ax.axvspan(0, result.num_burnin_steps, color="0.9", label="burn-in")
    ax.axhline(result.init_loss, color="k", ls="--", lw=0.8, label="L(w*)")
    ax.set_xlabel("step (burn-in, then draws)")
    ax.set_ylabel("minibatch loss")


def format_estimate(v: float) -> str:
    """Three significant digits, or ``"nan"``.

    >>> format_estimate(2.34567), format_estimate(float("nan"))
    ('2.35', 'nan')
    """
    return f"{v:.3g}" if math.isfinite(v) else "nan"
