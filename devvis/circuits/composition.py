"""Compositionality over training: does a feature form after the features it is built from?

For one target channel, :func:`composition` finds its strongest upstream
channels in a source layer at the final checkpoint (by influence on probe
images), renders the target and each upstream channel at every checkpoint,
measures when each feature *settles* with the longitudinal module's metrics
(:func:`~devvis.longitudinal.feature_change`: similarity of each checkpoint's
visualization to the final one, judged by the final model; the settle step is
the first from which it stays above a threshold), and draws one figure:

* top row: the target's visualization at each checkpoint, then its similarity curve;
* one row per upstream channel: its visualizations, its expanded-weight kernel
  into the target at the final checkpoint (red positive, blue negative,
  symmetric scale shared by the rows), and its influence on the target over training.

A JSON file beside the figure holds the numbers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from devvis import io as dio
from devvis.circuits.expanded import expanded_weights
from devvis.circuits.influence import InfluenceTrajectory, influence_trajectory
from devvis.errors import ConfigError
from devvis.typing import PathLike, PreprocessLike, SeriesLike

if TYPE_CHECKING:  # pragma: no cover - names for type checkers only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from devvis.longitudinal import FeatureChange, SeriesResult

#: Render settings of :func:`composition` unless ``render_kwargs`` says otherwise: small, for the CPU.
DEFAULT_RENDER: dict[str, int] = {"steps": 64, "image_size": 48}


@dataclass
class UpstreamChannel:
    """One of the target's top upstream channels.

    ``influence``: its influence on the target at the final checkpoint; ``trajectory``:
    at every checkpoint (aligned with the result's ``steps``); ``expanded_weight``:
    float32 ``[crop, crop]`` kernel into the target channel at the final checkpoint;
    ``settle_step``: when its feature settles (None: see ``settle_status``, ``"settled"``,
    ``"not settled"`` or ``"not comparable"``, from :func:`devvis.longitudinal.settle`);
    ``earlier``: it settles strictly before the target (a feature that never
    settles counts as settling after the last step, so ``earlier`` is False when
    neither settles); ``similarity``: its similarity to its final feature per step.
    """

    channel: int
    influence: float
    trajectory: list[float]
    expanded_weight: torch.Tensor
    settle_step: int | None
    earlier: bool
    similarity: list[float]
    settle_status: str = "settled"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {"channel": self.channel, "influence": self.influence, "trajectory": self.trajectory,
                "settle_step": self.settle_step, "settle_status": self.settle_status, "earlier": self.earlier,
                "similarity": self.similarity,
                "expanded_weight": self.expanded_weight.tolist()}


@dataclass
class CompositionResult:
    """What :func:`composition` returns: the target, its upstream channels and where the files went.

    ``target``/``sources``: the longitudinal :class:`~devvis.longitudinal.FeatureChange` of the target and
    of each upstream channel (same order as ``upstream``); ``renders``: the
    :class:`~devvis.longitudinal.SeriesResult` of the target (``"target"``) and of the upstream channels
    (``"sources"``, one ``channels()`` render, image ``i`` for ``upstream[i]``).
    """

    target_layer: str
    target_channel: int
    source_layer: str
    steps: list[int]
    target_settle_step: int | None
    target_similarity: list[float]
    upstream: list[UpstreamChannel]
    trajectory: InfluenceTrajectory
    threshold: float
    settings: dict[str, Any]
    target: FeatureChange | None = None
    sources: list[FeatureChange] = field(default_factory=list)
    renders: dict[str, SeriesResult] = field(default_factory=dict)
    figure_path: Path | None = None
    json_path: Path | None = None

    @property
    def channels(self) -> list[int]:
        """The upstream channels, strongest |influence| first."""
        return [u.channel for u in self.upstream]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record in devvis's metadata schema."""
        return dio.metadata(
            "circuits_composition", target_layer=self.target_layer, target_channel=self.target_channel,
            source_layer=self.source_layer, steps=self.steps, threshold=self.threshold,
            target={"settle_step": self.target_settle_step, "similarity": self.target_similarity,
                    "settle_status": self.target.settle_status if self.target is not None else None},
            upstream=[u.to_dict() for u in self.upstream], influence=self.trajectory.to_dict(),
            settings=self.settings,
            figure=self.figure_path.name if self.figure_path is not None else None,
            definitions={
                "influence": "gradient x activation (or integrated gradients) of the target channel's mean over "
                             "positions with respect to the source channel, summed over positions, averaged over "
                             "the probe images",
                "expanded_weight": "gradient of the target channel at the centre of its map with respect to the "
                                   "source channel around the matching position, through a linearized copy of the "
                                   "final model (ReLU -> identity, max-pool -> avg-pool)",
                "similarity": "the final model's feature-driven response (minus its baseline) to each checkpoint's "
                              "visualization / to the final visualization (devvis.longitudinal.feature_change)",
                "settle_step": "first step from which similarity stays within [threshold, 1 + tolerance]; null "
                               "with settle_status 'not settled' or 'not comparable'",
                "earlier": "the upstream channel settles strictly before the target"})


def _settles_before(a: int | None, b: int | None) -> bool:
    if a is None:
        return False
    return b is None or a < b


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._\-]", "_", text)


def composition(
    series: SeriesLike,
    source_layer: str,
    target_layer: str,
    target_channel: int,
    *,
    k: int = 6,
    inputs: torch.Tensor | None = None,
    output_dir: PathLike | None = None,
    render_kwargs: Mapping[str, object] | None = None,
    preprocess: PreprocessLike = "auto",
    method: str = "grad_x_act",
    threshold: float = 0.8,
    crop: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> CompositionResult:
    """The top-``k`` upstream channels of ``target_layer:target_channel`` in ``source_layer``, and when each settles.

    Parameters
    ----------
    series:
        A :class:`~devvis.longitudinal.CheckpointSeries`, a ``{step: model}`` dict, or checkpoint paths.
    inputs:
        Probe images ``(N, 3, H, W)`` in [0, 1] for the influences (default
        ``devvis.data.probe_batch(16, 32)``); ``H x W`` is also the input on which
        the expanded weights are taken.
    render_kwargs:
        Passed to :func:`~devvis.longitudinal.render_series` (default
        ``steps=64, image_size=48``; small, for the CPU).
    preprocess:
        Model-input preprocessing for influences, renders and metrics
        (:func:`~devvis.render.pipeline.resolve_preprocess`): ``"auto"``, the
        model's own default (raw [0, 1] input for devvis zoo models, ImageNet
        normalization otherwise); ``"imagenet"``; ``None``/``"none"``, as given; or a callable.
    method:
        Influence method (see :func:`~devvis.circuits.channel_influence`).
    threshold:
        Similarity above which a feature counts as settled.
    crop:
        Size of the expanded-weight kernel shown per upstream channel.
    output_dir:
        When given, write ``composition_{target}_ch{n}_from_{source}.png`` and ``.json`` there.

    Returns a :class:`CompositionResult`. Costs: one influence pass over the
    series, two series renders (the target; the ``k`` sources in one batch) and
    the feature-change evaluation of each of the ``k + 1`` components.

    >>> import torch
    >>> from torch import nn
    >>> nets = {s: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    ...         for s in (0, 10)}
    >>> res = composition(nets, "1", "2", 0, k=2, render_kwargs={"steps": 2, "image_size": 16})
    >>> len(res.upstream), tuple(res.upstream[0].expanded_weight.shape)
    (2, (5, 5))
    """
    from devvis.longitudinal import feature_change, render_series
    from devvis.longitudinal.series import as_series
    from devvis.objectives import channel as channel_objective
    from devvis.objectives import channels as channels_objective

    for role, layer in (("source_layer", source_layer), ("target_layer", target_layer)):
        if not isinstance(layer, str):
            raise ConfigError(f"{role} must be a layer name; got {layer!r}. The order is "
                              "composition(series, source_layer, target_layer, target_channel, k=...)")
    if not isinstance(target_channel, int) or isinstance(target_channel, bool):
        raise ConfigError(f"target_channel must be an integer; got {target_channel!r}. The order is "
                          "composition(series, source_layer, target_layer, target_channel, k=...)")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be a positive integer (upstream channels to show); got {k!r}")
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number; got {threshold!r}")
    s = as_series(series)
    if inputs is None:
        from devvis.data import probe_batch

        inputs = probe_batch(16, 32)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ConfigError(f"inputs must be images (N, C, H, W); got {shape}")

    traj = influence_trajectory(s, source_layer, target_layer, target_channel, inputs, method=method,
                                preprocess=preprocess, progress=progress)
    top = traj.top(k)
    chans = [c for c, _ in top]
    final_step = traj.steps[-1]
    weights = expanded_weights(s[final_step], source_layer, target_layer, crop=crop,
                               input_shape=tuple(inputs.shape[1:]), target_channels=[target_channel])[0]

    rk: dict[str, Any] = {**DEFAULT_RENDER, "preprocess": preprocess, **(render_kwargs or {})}
    for reserved in ("seed", "progress", "param"):
        if reserved in rk:
            raise ConfigError(f"render_kwargs may not set {reserved!r}; composition() takes "
                              f"{'it as its own argument' if reserved != 'param' else 'the default parameterization'}")
    target_renders = render_series(s, channel_objective(target_layer, target_channel), seed=seed,
                                   progress=progress, **rk)
    source_renders = render_series(s, channels_objective(source_layer, chans), seed=seed, progress=progress, **rk)
    target_fc = feature_change(s, target_renders, target_layer, target_channel, threshold=threshold,
                               preprocess=rk["preprocess"])
    source_fcs = [feature_change(s, source_renders, source_layer, c, threshold=threshold,
                                 preprocess=rk["preprocess"]) for c in chans]

    upstream = [
        UpstreamChannel(channel=c, influence=v, trajectory=[float(x) for x in traj.influence[:, c]],
                        expanded_weight=weights[c].clone(), settle_step=fc.settle_step, settle_status=fc.settle_status,
                        earlier=_settles_before(fc.settle_step, target_fc.settle_step), similarity=list(fc.similarity))
        for (c, v), fc in zip(top, source_fcs)
    ]
    settings = {"k": k, "method": method, "crop": crop, "seed": seed, "n_inputs": int(inputs.shape[0]),
                "input_shape": list(inputs.shape[1:]), "expanded_weights_step": final_step,
                "render": {key: (v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else repr(v))
                           for key, v in rk.items()}}
    result = CompositionResult(
        target_layer=target_layer, target_channel=int(target_channel), source_layer=source_layer, steps=traj.steps,
        target_settle_step=target_fc.settle_step, target_similarity=list(target_fc.similarity), upstream=upstream,
        trajectory=traj, threshold=float(threshold), settings=settings, target=target_fc, sources=source_fcs,
        renders={"target": target_renders, "sources": source_renders},
    )
    if output_dir is not None:
        out = Path(output_dir)
        stem = f"composition_{_stem(target_layer)}_ch{target_channel}_from_{_stem(source_layer)}"
        result.figure_path = out / f"{stem}.png"
        result.json_path = out / f"{stem}.json"
        dio.write_figure(result.figure_path, plot_composition(result))
        dio.write_json(result.json_path, result.to_dict())
    return result


def _image(ax: Axes, img: torch.Tensor) -> None:
    ax.imshow(img.detach().float().clamp(0, 1).permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def _step_axis(ax: Axes, steps: Sequence[int]) -> None:
    from devvis.longitudinal.plots import set_step_axis

    set_step_axis(ax, steps, label=False)


def _mark_settle(ax: Axes, step: int | None, **style: object) -> None:
    if step is not None:
        ax.axvline(step, **style)


def plot_composition(result: CompositionResult) -> Figure:
    """The figure of a :class:`CompositionResult` (a matplotlib ``Figure``; see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from devvis.longitudinal.metrics import component_images

    steps = result.steps
    n, rows = len(steps), 1 + len(result.upstream)
    fig = plt.figure(figsize=(1.15 * n + 1.3 + 2.8, 1.35 * rows + 0.5))
    grid = fig.add_gridspec(rows, n + 2, width_ratios=[1.0] * n + [1.1, 2.6], wspace=0.25, hspace=0.55)
    target_renders, source_renders = result.renders["target"], result.renders["sources"]
    settle_style = {"color": "tab:red", "lw": 1.0, "ls": ":"}

    for j, step in enumerate(steps):
        ax = fig.add_subplot(grid[0, j])
        _image(ax, target_renders[step].images[0])
        ax.set_title(f"step {step}", fontsize=8)
        if j == 0:
            ax.set_ylabel(f"target\n{result.target_layer}:{result.target_channel}", fontsize=8)
    ax = fig.add_subplot(grid[0, n])
    ax.axis("off")
    settled = result.target_settle_step
    status = result.target.settle_status if result.target is not None else "not settled"
    ax.text(0.0, 0.5, f"target settles\nat step {settled}" if settled is not None else f"target:\n{status}",
            fontsize=8, va="center", color="tab:red")
    ax = fig.add_subplot(grid[0, n + 1])
    sim = np.asarray([np.nan if v is None else v for v in result.target_similarity], dtype=float)
    ax.plot(steps, sim, "o-", color="tab:green", ms=3)
    ax.axhline(result.threshold, color="grey", ls="--", lw=0.8)
    _mark_settle(ax, settled, **settle_style)
    _step_axis(ax, steps)
    ax.set_title("similarity to final feature", fontsize=8)
    ax.tick_params(labelsize=7)

    vmax = max([float(u.expanded_weight.abs().max()) for u in result.upstream] + [1e-12])
    for i, up in enumerate(result.upstream, start=1):
        for j, step in enumerate(steps):
            ax = fig.add_subplot(grid[i, j])
            _image(ax, component_images(source_renders[step], result.source_layer, up.channel)[0])
            if j == 0:
                when = f"settles {up.settle_step}" if up.settle_step is not None else up.settle_status
                mark = " (earlier)" if up.earlier else ""
                ax.set_ylabel(f"{result.source_layer}:{up.channel}\n{when}{mark}", fontsize=7)
        ax = fig.add_subplot(grid[i, n])
        ax.imshow(up.expanded_weight.numpy(), cmap="bwr", vmin=-vmax, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 1:
            ax.set_title(f"expanded weight\n(±{vmax:.2g})", fontsize=8)
        ax = fig.add_subplot(grid[i, n + 1])
        ax.plot(steps, up.trajectory, "o-", color="tab:blue", ms=3)
        ax.axhline(0.0, color="grey", lw=0.6)
        _mark_settle(ax, up.settle_step, color="tab:blue", lw=1.0, ls="--")
        _mark_settle(ax, settled, **settle_style)
        _step_axis(ax, steps)
        ax.tick_params(labelsize=7)
        if i == 1:
            ax.set_title("influence on target (dashed: settles)", fontsize=8)
        if i == rows - 1:
            ax.set_xlabel("training step", fontsize=8)
    fig.suptitle(f"{result.target_layer}:{result.target_channel} and its top {len(result.upstream)} inputs in "
                 f"{result.source_layer}", fontsize=10)
    return fig
