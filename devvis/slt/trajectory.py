"""The LLC at every checkpoint of a training run, plotted beside other developmental curves.

>>> import torch
>>> from torch import nn
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch...>
>>> x = torch.randn(64, 2); y = x.sum(1, keepdim=True)
>>> series = [(step, nn.Linear(2, 1)) for step in (0, 10, 100)]
>>> traj = llc_trajectory(series, [(x, y)], nn.functional.mse_loss, lr=1e-4,
...                       num_chains=1, num_draws=10, progress=False)
>>> traj.steps
[0, 10, 100]
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from torch import nn

from devvis.errors import ConfigError
from devvis.longitudinal.plots import set_step_axis
from devvis.slt.batches import Criterion, Loader
from devvis.slt.calibrate import Calibration, calibrate as run_calibration
from devvis.parallel import check_workers
from devvis.slt.llc import estimate_llc
from devvis.slt.pool import EstimatePool, Task, rewarn, run_estimates
from devvis.slt.result import LLCResult
from devvis.typing import PathLike

__all__ = ["LLCTrajectory", "llc_trajectory", "plot_trajectory", "display_range"]

FeatureCurves = Mapping[str, tuple[Sequence[float], Sequence[float]]]
"""``{label: (steps, values)}``: curves drawn beside the LLC on the same step axis."""


@dataclass
class LLCTrajectory:
    """LLC estimates per checkpoint.

    Attributes:
        steps: training step of each checkpoint, in the order given.
        llc_mean, llc_std: the LLC per step and its spread over chains, NaN where there is none: no chain
            finished, or the weights are not a local minimum (``results[i].at_minimum``; the sampler's own
            number stays in ``results[i].llc_mean``).
        results: the full :class:`~devvis.slt.LLCResult` per step.
        hyperparameters: the settings shared by every estimate.
        calibration: the :class:`~devvis.slt.Calibration` that chose the settings, if any.
    """

    steps: list[int]
    llc_mean: list[float]
    llc_std: list[float]
    results: list[LLCResult] = field(repr=False)
    hyperparameters: dict[str, Any]
    calibration: Calibration | None = field(default=None, repr=False)

    @classmethod
    def join(cls, parts: Sequence["LLCTrajectory"], labels: Sequence[str] | None = None) -> "LLCTrajectory":
        """One trajectory from ``parts`` made with the same settings on consecutive parts of a series, e.g.
        each on the data its checkpoints were trained on (a curriculum: one loader per phase).

        ``labels`` (one per part) say what each part sampled; they are kept, with each part's steps and
        calibration verdict, in ``hyperparameters["parts"]``. Raises :class:`~devvis.errors.ConfigError`
        when the parts' settings differ or their steps do not increase.
        """
        parts = list(parts)
        if not parts:
            raise ConfigError("join needs at least one trajectory")
        names = [str(v) for v in labels] if labels is not None else [f"part {k}" for k in range(len(parts))]
        if len(names) != len(parts):
            raise ConfigError(f"{len(names)} labels for {len(parts)} trajectories; give one label per part")
        keys = ("sampler", "lr", "localization", "nbeta", "num_chains", "num_draws", "num_burnin_steps", "seed",
                "train_mode")
        first = {k: parts[0].hyperparameters.get(k) for k in keys}
        for name, part in zip(names, parts):
            got = {k: part.hyperparameters.get(k) for k in keys}
            if got != first:
                diff = {k: (first[k], got[k]) for k in keys if first[k] != got[k]}
                raise ConfigError(f"cannot join trajectories made with different settings: {name} differs in {diff}")
        steps = [s for part in parts for s in part.steps]
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ConfigError(f"the parts' steps must increase from one part to the next, got {steps}")
        shared = dict(parts[0].hyperparameters)
        shared["calibrated"] = all(p.hyperparameters.get("calibrated") for p in parts)
        shared["parts"] = [{"label": name, "steps": [p.steps[0], p.steps[-1]],
                            "calibrated": bool(p.hyperparameters.get("calibrated")),
                            "calibration": None if p.calibration is None else p.calibration.reason}
                           for name, p in zip(names, parts)]
        return cls(steps=steps, llc_mean=[v for p in parts for v in p.llc_mean],
                   llc_std=[v for p in parts for v in p.llc_std], results=[r for p in parts for r in p.results],
                   hyperparameters=shared, calibration=None)

    @property
    def health(self) -> list[str]:
        """The verdict of each estimate (``"healthy"``, ``"not a minimum: ..."`` or ``"unhealthy: ..."``)."""
        return [r.health for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers: steps, mean/std, hyperparameters, per-step details and diagnostics."""
        return {
            "steps": list(self.steps),
            "llc_mean": list(self.llc_mean),
            "llc_std": list(self.llc_std),
            "hyperparameters": dict(self.hyperparameters),
            "health": self.health,
            "calibration": None if self.calibration is None else {
                "settings": self.calibration.settings, "reason": self.calibration.reason},
            "per_step": [
                {"step": s, **r.to_dict(include_traces=False)} for s, r in zip(self.steps, self.results)
            ],
        }

    def save(self, output_dir: PathLike, feature_curves: FeatureCurves | None = None) -> None:
        """Write ``llc_trajectory.json`` and ``llc_trajectory.png`` into ``output_dir``."""
        from devvis.io import metadata, write_json

        out = Path(output_dir)
        write_json(out / "llc_trajectory.json", metadata("llc_trajectory", **self.to_dict()))
        plot_trajectory(self, out / "llc_trajectory.png", feature_curves=feature_curves)
        if self.calibration is not None:
            self.calibration.save(out)


def llc_trajectory(
    series: Iterable[tuple[int, nn.Module]],
    loader: Loader,
    criterion: Criterion,
    *,
    feature_curves: FeatureCurves | None = None,
    output_dir: PathLike | None = None,
    progress: bool = True,
    calibrate: bool | Mapping[str, Any] = False,
    workers: "int | EstimatePool" = 1,
    threads: int | None = None,
    **llc_kwargs: Any,
) -> LLCTrajectory:
    """Estimate the LLC at each ``(step, model)`` of ``series`` with the same seed and settings.

    Args:
        series: any iterable of ``(step, model)`` pairs — a list, a generator, or a
            ``devvis.longitudinal.CheckpointSeries`` (which loads one checkpoint at a
            time; each model is released before the next is loaded).
        loader, criterion: as for :func:`~devvis.slt.estimate_llc`.
        feature_curves: ``{label: (steps, values)}`` drawn in a second panel that shares
            the step axis (e.g. feature-change curves from ``devvis.longitudinal``).
        output_dir: when given, writes ``llc_trajectory.json`` and ``llc_trajectory.png`` there.
        progress: progress bar per estimate.
        calibrate: True (or a dict of :func:`~devvis.slt.calibrate` keywords): choose lr, localization
            and nβ with :func:`~devvis.slt.calibrate` at the first, middle and last checkpoints (or at the
            positions ``calibrate["checkpoints"]``): a setting must be healthy at each, and stable in ε at
            the last (the trained model); it is then used at every checkpoint. A setting chosen on the
            trained model alone can leave the early checkpoints, far from any minimum, unhealthy. The sweep
            is written beside the trajectory. When the calibration's chains have the trajectory's layout
            (num_chains, num_draws, num_burnin_steps), its estimates at those checkpoints are reused. When
            no setting is healthy, the grid point with the fewest failures at the last calibration checkpoint
            (:attr:`~devvis.slt.Calibration.fallback_settings`: the settings the user's grid allows, not the
            uncalibrated defaults, which can lie far outside it) is used and every estimate is flagged
            ``uncalibrated`` (not ok).
        workers, threads: estimate ``workers`` checkpoints at once in spawned processes of ``threads``
            torch threads each (default: the CPUs divided among the workers), or an open
            :class:`~devvis.slt.pool.EstimatePool` to share its processes; the calibration too. Each
            estimate is seeded on its own, so the numbers are those of ``workers=1`` with the same threads per
            process (:mod:`devvis.slt.pool`). The loader and criterion must pickle; a ``CheckpointSeries``
            sends each worker its folder, and the worker loads its checkpoint itself.
        **llc_kwargs: :func:`estimate_llc` keywords, identical at every checkpoint
            (the seed too, so differences between steps are not sampling noise of
            different streams).

    Returns:
        :class:`LLCTrajectory` with one entry per checkpoint, in the series' order.
    """
    if isinstance(workers, EstimatePool):  # the caller's open pool, left open
        return _trajectory(series, loader, criterion, feature_curves, output_dir, progress, calibrate, workers,
                           llc_kwargs)
    pool = EstimatePool(workers, threads) if check_workers(workers) > 1 else None
    with pool or contextlib.nullcontext():  # one set of processes for the calibration and the estimates
        return _trajectory(series, loader, criterion, feature_curves, output_dir, progress, calibrate, pool, llc_kwargs)


def _trajectory(series: Any, loader: Loader, criterion: Criterion, feature_curves: FeatureCurves | None,
                output_dir: PathLike | None, progress: bool, calibrate: bool | Mapping[str, Any],
                pool: EstimatePool | None, llc_kwargs: dict[str, Any]) -> LLCTrajectory:
    calibration = None
    reuse: dict[int, LLCResult] = {}
    if calibrate:
        calibration, reuse, series = _calibrate_series(series, loader, criterion, calibrate, progress, llc_kwargs,
                                                       workers=pool or 1)
        llc_kwargs = {**llc_kwargs, **(calibration.settings or calibration.fallback_settings)}
    warn = llc_kwargs.get("warn", True)
    fallback = calibration is not None and not calibration.ok and calibration.fallback is not None
    if pool is not None:
        steps, results = _estimate_in_workers(series, loader, criterion, reuse, llc_kwargs, pool, progress)
    else:
        steps, results = [], []
        for k, item in enumerate(series):
            step, model = _pair(item)
            if k in reuse:  # the calibration already ran this very estimate (same model, settings and seed)
                res = reuse[k]
            else:
                res = estimate_llc(model, loader, criterion, progress=progress, **{**llc_kwargs, "warn": False})
            steps.append(step)
            results.append(res)
            del model  # let a lazily loaded checkpoint go before the next one is loaded
    if not results:
        raise ConfigError("series yielded no (step, model) pairs")
    for k, res in enumerate(results):
        if fallback and k not in reuse:
            _flag_uncalibrated(res, calibration)  # type: ignore[arg-type]
        if warn:
            rewarn(res)
    shared = {k: v for k, v in results[0].hyperparameters.items()}
    shared["calibrated"] = bool(calibration is not None and calibration.ok)
    traj = LLCTrajectory(
        steps=steps,
        llc_mean=[r.llc for r in results],
        llc_std=[r.llc_std if r.at_minimum else math.nan for r in results],
        results=results,
        hyperparameters=shared,
        calibration=calibration,
    )
    if output_dir is not None:
        traj.save(output_dir, feature_curves=feature_curves)
    return traj


def _pair(item: Any) -> tuple[int, nn.Module]:
    try:
        step, model = item
    except (TypeError, ValueError):
        raise ConfigError(f"series must yield (step, model) pairs, got {type(item).__name__}") from None
    return int(step), model


def _is_lazy(series: Any) -> bool:
    """A series that loads its checkpoints by position (``CheckpointSeries``) rather than a list or iterable."""
    return hasattr(series, "at") and hasattr(series, "__len__") and hasattr(series, "steps")


def _estimate_in_workers(series: Any, loader: Loader, criterion: Criterion, reuse: dict[int, LLCResult],
                         llc_kwargs: dict[str, Any], pool: EstimatePool,
                         progress: bool) -> tuple[list[int], list[LLCResult]]:
    """The estimates at every checkpoint not in ``reuse``, in ``workers`` processes (:mod:`devvis.slt.pool`)."""
    kwargs = {k: v for k, v in llc_kwargs.items() if k not in ("warn", "progress")}
    if _is_lazy(series):
        steps = [int(s) for s in series.steps]
        on_disk = series[:] if steps else series
        tasks = {k: (Task(series=on_disk, position=k, kwargs=kwargs) if series.path_of(s) is not None
                     else Task(model=series.at(k), kwargs=kwargs))
                 for k, s in enumerate(steps) if k not in reuse}
    else:
        pairs = [_pair(item) for item in series]
        steps = [s for s, _ in pairs]
        tasks = {k: Task(model=m, kwargs=kwargs) for k, (_, m) in enumerate(pairs) if k not in reuse}
    done = dict(zip(tasks, run_estimates(list(tasks.values()), loader, criterion, workers=pool, progress=progress,
                                         desc="LLC per checkpoint")))
    return steps, [reuse[k] if k in reuse else done[k] for k in range(len(steps))]


def _flag_uncalibrated(res: LLCResult, calibration: Calibration) -> None:
    """Mark ``res``, made with the calibration's fallback settings, ``uncalibrated`` (a failing check)."""
    s = calibration.fallback_settings
    msg = (f"calibration found no healthy and stable setting; this estimate uses the grid point with the fewest "
           f"failures (lr={s['lr']:g}, localization={s['localization']:g}, nbeta={s['nbeta']:.4g}) and is not "
           f"calibrated")
    res.flags["uncalibrated"] = list(range(len(res.llc_per_chain)))
    res.diagnostics.append(msg)


#: Keywords of :func:`estimate_llc` that the calibration shares with the estimates of the trajectory.
_SHARED = ("sampler", "seed", "train_mode", "params", "device", "init_loss_batches", "vectorize", "num_steps_bw_draws",
           "rmsprop_alpha", "rmsprop_eps", "rmsprop_warm_start")


#: Keywords of :func:`~devvis.slt.calibrate` that choose the grid or keep its record: they do not change the
#: estimate it makes at the chosen setting.
_CALIBRATION_ONLY = ("lrs", "localizations", "nbetas", "output_dir", "labels", "progress")
_LAYOUT = ("num_chains", "num_draws", "num_burnin_steps")


def _same_estimates(options: Mapping[str, Any], llc_kwargs: Mapping[str, Any]) -> bool:
    """Whether the calibration run with ``options`` makes, at its chosen setting, the estimates the trajectory
    makes with ``llc_kwargs`` (the same chain layout and shared keywords, each side's defaults filled in, and
    nothing else that could change them), so that the trajectory can reuse them."""
    def defaults(fn: Any) -> dict[str, Any]:
        return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}

    cal, est = defaults(run_calibration), defaults(estimate_llc)
    mine = {k: llc_kwargs.get(k, est.get(k)) for k in (*_LAYOUT, *_SHARED)}
    # the calibration gets the trajectory's shared keywords unless its options override them
    theirs = {**{k: options.get(k, cal.get(k)) for k in _LAYOUT}, **{k: options.get(k, mine[k]) for k in _SHARED}}
    extra_theirs = set(options) - set(_LAYOUT) - set(_SHARED) - set(_CALIBRATION_ONLY)
    extra_mine = set(llc_kwargs) - set(_LAYOUT) - set(_SHARED) - {"warn", "progress", "max_draws"}
    return theirs == mine and not extra_theirs and not extra_mine


def _calibrate_series(series: Any, loader: Loader, criterion: Criterion, calibrate: bool | Mapping[str, Any],
                      progress: bool, llc_kwargs: dict[str, Any], *,
                      workers: "int | EstimatePool" = 1) -> tuple[Calibration, dict[int, LLCResult], Any]:
    """Calibrate at the first, middle and last checkpoints (or ``calibrate["checkpoints"]``, positions in the
    series); returns the calibration, the estimates it made that the trajectory can reuse (by position), and
    the series (a list when it was a one-pass iterable)."""
    lazy = _is_lazy(series)
    if not lazy:
        series = list(series)
    n = len(series)
    if not n:
        raise ConfigError("series yielded no (step, model) pairs")
    options = dict(calibrate) if isinstance(calibrate, Mapping) else {}
    picks = options.pop("checkpoints", None)
    positions = sorted({0, n // 2, n - 1}) if picks is None else [int(i) % n if -n <= int(i) < n else int(i)
                                                                  for i in picks]
    bad = [i for i in positions if not 0 <= i < n]
    if bad or not positions:
        raise ConfigError(f"calibrate checkpoints {picks!r}: positions must lie in 0..{n - 1}")
    models = [series.at(i) if lazy else series[i][1] for i in positions]
    labels = [f"step {series.steps[i] if lazy else series[i][0]}" for i in positions]
    shared = {k: v for k, v in llc_kwargs.items() if k in _SHARED}
    calibration = run_calibration(models, loader, criterion, progress=progress, labels=labels,
                                  **{"workers": workers, **shared, **options})
    del models
    reuse: dict[int, LLCResult] = {}
    if calibration.ok and _same_estimates(options, llc_kwargs):
        extends = llc_kwargs.get("max_draws") is not None
        for k, i in enumerate(positions):
            res = calibration.model_results[k][calibration.chosen]  # type: ignore[index]
            # max_draws extends only unsettled chains: a healthy calibration estimate is the one the trajectory makes
            if res is not None and (res.ok or not extends):
                if extends:  # the trajectory's settings, on a copy (the calibration keeps its own record)
                    res = dataclasses.replace(res, hyperparameters={**res.hyperparameters,
                                                                    "max_draws": llc_kwargs["max_draws"]})
                reuse[i] = res
    return calibration, reuse, series


def display_range(means: Sequence[float | None], stds: Sequence[float | None],
                  ok: Sequence[bool]) -> tuple[float, float] | None:
    """The y-range that shows an LLC trajectory: its healthy estimates (± std) with a quarter of their span
    either side, when some unhealthy estimate lies beyond that (one far-off value, such as that of chains that
    have not settled, would otherwise flatten every healthy one); None when every value fits
    or fewer than two estimates are healthy. Values outside are drawn at the edge with their number
    (:func:`plot_trajectory`, the report's chart).

    >>> display_range([-47.7, 9.6, 11.5, 20.0], [2.0, 0.5, 0.5, 1.0], [False, True, True, True])
    (6.125, 23.975)
    >>> display_range([9.0, 9.6, 11.5], [0.5, 0.5, 0.5], [False, True, True]) is None   # 9.0 fits in 8.375 … 12.725
    True
    """
    def finite(v: float | None) -> bool:
        return v is not None and math.isfinite(v)

    good = [(m, s if finite(s) else 0.0) for m, s, k in zip(means, stds, ok) if k and finite(m)]
    if len(good) < 2:
        return None
    lo, hi = min(m - s for m, s in good), max(m + s for m, s in good)
    pad = max(hi - lo, 1e-9) * 0.25
    lo, hi = lo - pad, hi + pad
    if all(lo <= m <= hi for m in means if finite(m)):
        return None
    return float(lo), float(hi)


def plot_trajectory(
    traj: LLCTrajectory, output_path: PathLike, *, feature_curves: FeatureCurves | None = None
) -> None:
    """Write a PNG of LLC vs step to ``output_path`` (error bars: std over chains); a second panel of
    ``feature_curves`` if given. The step axis follows :func:`devvis.longitudinal.plots.step_scale`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from devvis.io import write_figure

    panels = 2 if feature_curves else 1
    fig, axes = plt.subplots(panels, 1, figsize=(7, 3.2 * panels), sharex=True, squeeze=False)
    ax = axes[0][0]
    mean = np.asarray(traj.llc_mean, dtype=float)
    std = np.nan_to_num(np.asarray(traj.llc_std, dtype=float), nan=0.0)
    ax.errorbar(traj.steps, mean, yerr=std, marker="o", ms=4, capsize=3, lw=1.2)
    bad = [s for s, r in zip(traj.steps, traj.results) if not r.ok and r.at_minimum]
    no_minimum = [s for s, r in zip(traj.steps, traj.results) if not r.at_minimum]
    shown = display_range(list(mean), list(std), [r.ok for r in traj.results])
    if shown is not None:  # far-off (unhealthy) values at the edge, with their number
        ax.set_ylim(*shown)
        for s, m in zip(traj.steps, mean):
            if math.isfinite(m) and not shown[0] <= m <= shown[1]:
                edge = shown[0] if m < shown[0] else shown[1]
                ax.annotate(f"{m:.3g}", xy=(s, edge), xytext=(0, 12 if m < shown[0] else -12),
                            textcoords="offset points", ha="center", va="center", fontsize=7, color="r",
                            arrowprops=dict(arrowstyle="->", color="r", lw=0.8))
    if bad:
        ys = [m if shown is None else min(max(m, shown[0]), shown[1]) for s, m in zip(traj.steps, mean) if s in bad]
        ax.scatter(bad, ys, facecolors="none", edgecolors="r", s=90, label="unhealthy estimate", zorder=3,
                   clip_on=False)
    if no_minimum:  # no LLC there: a mark on the step axis, no value
        ax.scatter(no_minimum, [0.04] * len(no_minimum), marker="x", color="0.4", s=40, zorder=3, clip_on=False,
                   transform=ax.get_xaxis_transform(), label="not a local minimum: no LLC")
    if bad or no_minimum:
        ax.legend(fontsize=7)
    h = traj.hyperparameters
    ax.set_ylabel("LLC")
    ax.set_title(
        f"LLC per checkpoint ({h.get('sampler')}, ε={h.get('lr'):.2g}, γ={h.get('localization'):.3g}, "
        f"nβ={h.get('nbeta'):.3g}, {h.get('num_chains')} chains × {h.get('num_draws')} draws"
        + (f", up to {h['max_draws']} where unsettled" if h.get("max_draws") and
           any(r.extensions for r in traj.results) else "") + ")",
        fontsize=9,
    )
    all_steps = list(traj.steps)
    if feature_curves:
        fax = axes[1][0]
        for label, (xs, ys) in feature_curves.items():
            if len(xs) != len(ys):
                raise ConfigError(f"feature curve {label!r} has {len(xs)} steps but {len(ys)} values")
            fax.plot(list(xs), list(ys), marker=".", label=label)
            all_steps.extend(float(v) for v in xs)
        fax.set_ylabel("feature curves")
        fax.legend(fontsize=7)
    axes[-1][0].set_xlabel("training step")
    set_step_axis(ax, all_steps, label=False)  # shared x: setting it once applies to both panels
    if not any(math.isfinite(v) for v in mean):
        ax.text(0.5, 0.5, "no finite estimate", transform=ax.transAxes, ha="center")
    write_figure(output_path, fig)
