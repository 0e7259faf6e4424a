"""Plots of longitudinal analyses: activation trajectories, similarity curves, cross-checkpoint heat maps.

Each plot is written as PNG with a JSON of the plotted numbers beside it (same
stem), through :mod:`devvis.io` (atomic writes).

>>> import tempfile, torch
>>> from devvis.longitudinal import LongitudinalActivations, plot_longitudinal_activations
>>> acts = LongitudinalActivations("layer1", 0, [0, 10, 1000], torch.rand(3, 8))
>>> png = plot_longitudinal_activations(acts, "layer1", 0, tempfile.mkdtemp() + "/a.png")
>>> png.with_suffix(".json").exists()
True
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import torch

from devvis import io as dio
from devvis.errors import ConfigError
from devvis.longitudinal.activations import LongitudinalActivations
from devvis.typing import PathLike

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from matplotlib.axes import Axes

    from devvis.longitudinal.metrics import FeatureChange

BANDS = ("std", "iqr")


def step_scale(steps: Sequence[int]) -> str:
    """x-axis scale for training steps: ``"linear"``, ``"log"`` or ``"symlog"``.

    Logarithmic when the positive steps span at least two decades (max/min >= 100),
    because features change fastest early in training; ``"symlog"`` (linear below 1)
    when step 0 is among them, which a log axis cannot show.

    >>> step_scale([10, 20, 30]), step_scale([1, 10, 1000]), step_scale([0, 1, 10, 1000])
    ('linear', 'log', 'symlog')
    """
    pos = [s for s in steps if s > 0]
    if len(pos) < 2 or max(pos) / min(pos) < 100:
        return "linear"
    return "symlog" if any(s <= 0 for s in steps) else "log"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def set_step_axis(ax: "Axes", steps: Sequence[int], label: bool = True) -> str:
    """Give ``ax`` the x scale :func:`step_scale` picks for ``steps`` (and label it); returns the scale."""
    scale = step_scale(steps)
    if scale == "symlog":
        ax.set_xscale("symlog", linthresh=1.0)
    elif scale == "log":
        ax.set_xscale("log")
    if label:
        ax.set_xlabel(f"training step ({scale} axis)")
    return scale


def _output(path: PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"plots are written as PNG; output path {str(path)!r} should end in .png")
    return path


def plot_longitudinal_activations(activations: Union[LongitudinalActivations, torch.Tensor, np.ndarray],
                                  layer_name: str, channel: int, output_path: PathLike, *, band: str = "std",
                                  steps: Sequence[int] | None = None) -> Path:
    """Plot a channel's mean activation over checkpoints with a spread band; write PNG + JSON.

    ``activations``: a :class:`~devvis.longitudinal.LongitudinalActivations`, or values
    ``(n_checkpoints, n_inputs)`` (tensor/array) with ``steps`` (default 0, 1, 2, ...).
    ``band``: ``"std"`` (mean ± one population standard deviation over probe images) or
    ``"iqr"`` (25th-75th percentile); the legend and the JSON say which. x is the training
    step (see :func:`step_scale`). Returns the PNG path; the JSON beside it has the same stem.
    """
    if band not in BANDS:
        raise ConfigError(f"band {band!r} is not valid; choose one of {BANDS}")
    if isinstance(activations, LongitudinalActivations):
        acts = activations
    else:
        values = torch.as_tensor(np.asarray(activations, dtype=np.float32))
        if values.dim() == 1:
            values = values[:, None]
        if values.dim() != 2:
            raise ConfigError(f"activations must be (n_checkpoints, n_inputs); got shape {tuple(values.shape)}")
        st = list(steps) if steps is not None else list(range(values.shape[0]))
        if len(st) != values.shape[0]:
            raise ConfigError(f"{len(st)} steps for {values.shape[0]} rows of activations")
        acts = LongitudinalActivations(layer_name, int(channel), [int(s) for s in st], values)
    path = _output(output_path)
    mean = acts.mean.numpy()
    if band == "std":
        lo, hi = mean - acts.std.numpy(), mean + acts.std.numpy()
        band_label = "mean ± 1 std over probe images"
    else:
        q = acts.quantiles().numpy()
        lo, hi = q[0], q[1]
        band_label = "25th-75th percentile over probe images"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    x = np.asarray(acts.steps, dtype=float)
    ax.fill_between(x, lo, hi, alpha=0.25, color="tab:blue", label=band_label)
    ax.plot(x, mean, "o-", color="tab:blue", label="mean activation")
    scale = set_step_axis(ax, acts.steps)
    ax.set_ylabel("mean channel activation")
    probe = (acts.inputs or {}).get("kind", "given inputs")
    ax.set_title(f"{layer_name} channel {channel} (probe: {probe}, n={acts.values.shape[1]})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    dio.write_figure(path, fig)
    record = acts.to_dict()
    record.update(kind="longitudinal_activations_plot", plot=path.name, band=band, band_description=band_label,
                  band_low=lo.tolist(), band_high=hi.tolist(), x_scale=scale)
    dio.write_json(path.with_suffix(".json"), record)
    return path


def _settle_label(change: "FeatureChange") -> str:
    """What the plot says about the settle step: the step, or the status and no step."""
    if change.settle_step is not None:
        return f"settles at step {change.settle_step}"
    return change.settle_status


def plot_similarity(change: "FeatureChange", output_path: PathLike) -> Path:
    """Plot a :class:`~devvis.longitudinal.FeatureChange`: the similarity to the final feature on
    its feature-driven part over steps (threshold, ``1 + tolerance`` and the settle step marked, or
    the status ``not settled`` / ``not comparable``) and, when measured, the appearance distance
    below it (to the final visualization and to the next checkpoint's); write PNG + JSON (same stem)."""
    path = _output(output_path)
    plt = _pyplot()
    appearance = change.appearance
    rows = 2 if appearance is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(6.0, 3.6 * rows), sharex=True, squeeze=False)
    ax = axes[0][0]
    x = np.asarray(change.steps, dtype=float)
    sim = np.asarray([np.nan if v is None else v for v in change.similarity], dtype=float)
    ax.plot(x, sim, "o-", color="tab:green", label="similarity to final feature (baseline subtracted)")
    ax.axhline(change.threshold, color="grey", ls="--", lw=1, label=f"threshold {change.threshold:g}")
    top = 1.0 + change.tolerance
    over = sim > top
    if over.any():
        ax.axhline(top, color="tab:orange", ls=":", lw=1, label=f"1 + tolerance ({top:g})")
        ax.plot(x[over], sim[over], "x", color="tab:orange", ms=9, mew=2, label="not comparable (> 1 + tolerance)")
    label = _settle_label(change)
    if change.settle_step is not None:
        ax.axvline(change.settle_step, color="tab:red", lw=1.5, label=label)
    else:
        ax.text(0.02, 0.94, label, transform=ax.transAxes, fontsize=9, color="tab:red", va="top",
                bbox={"facecolor": "white", "edgecolor": "tab:red", "alpha": 0.85})
    scale = set_step_axis(ax, change.steps, label=rows == 1)
    ax.set_ylabel("(act. - baseline) under final model\n/ final feature's")
    baseline = change.baseline.split(":")[0]
    ax.set_title(f"{change.layer} channel {change.channel}: when the feature settles (baseline: {baseline})",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if appearance is not None:
        ax2 = axes[1][0]
        ax2.plot(x, appearance.to_final, "o-", color="tab:purple", label="to the final visualization")
        ax2.plot(x[1:], appearance.consecutive, "s--", color="tab:blue", ms=4,
                 label="to the previous checkpoint's")
        set_step_axis(ax2, change.steps)
        ax2.set_ylabel("appearance distance D")
        layers = ", ".join(appearance.layers)
        ax2.set_title(f"how different the visualization looks (final checkpoint's layers {layers})", fontsize=9)
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3)
    dio.write_figure(path, fig)
    dio.write_json(path.with_suffix(".json"), {**change.to_dict(), "plot": path.name, "x_scale": scale})
    return path


def plot_matrix(change: "FeatureChange", output_path: PathLike) -> Path:
    """Heat map of the cross-checkpoint matrix ``M[i, j]`` (activation at checkpoint ``j`` of the
    visualization made at checkpoint ``i``); write PNG + JSON (same stem)."""
    path = _output(output_path)
    m = np.asarray([[np.nan if v is None else v for v in row] for row in change.matrix], dtype=float)
    plt = _pyplot()
    n = len(change.steps)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * n + 1.5, 1.0 + 0.45 * n + 0.8))
    im = ax.imshow(m, cmap="viridis", origin="upper")
    labels = [str(s) for s in change.steps]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("model: checkpoint step j")
    ax.set_ylabel("visualization made at step i")
    ax.set_title(f"{change.layer} channel {change.channel}: activation M[i, j]", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    dio.write_figure(path, fig)
    dio.write_json(path.with_suffix(".json"), {**change.to_dict(), "plot": path.name})
    return path
