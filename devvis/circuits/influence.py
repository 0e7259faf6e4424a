"""Channel-to-channel influence on real inputs, and how it changes over training.

The influence of source channel ``s`` on target channel ``t`` is how much of
``t``'s activation (its mean over positions) is owed to ``s`` on the given
images: gradient times activation, summed over the source's positions and
averaged over the images (a first-order attribution), or integrated gradients
along the straight path from a zero source activation to the actual one (exact
for the part of ``t`` that flows through the source: the influences of all
source channels add up to ``t(S) - t(S = 0)``).

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1))
>>> channel_influence(net, "1", "2", torch.rand(8, 3, 16, 16)).shape
torch.Size([5, 4])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from devvis.circuits.path import check_layer, per_channel, plan_calls, source_to_target
from devvis.errors import ChannelOutOfRangeError, ConfigError, closest
from devvis.hooks import CallPlan
from devvis.render.pipeline import ModelInput
from devvis.state import frozen, model_device
from devvis.typing import PreprocessLike, SeriesLike

#: Attribution methods of :func:`channel_influence`.
METHODS = ("grad_x_act", "integrated_gradients")


def _check_method(method: str) -> None:
    if method not in METHODS:
        close = closest(str(method), METHODS)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown influence method {method!r}{hint}; valid: {', '.join(METHODS)}")


def _check_channel(channel: int, n: int, layer: str) -> None:
    if not isinstance(channel, int) or isinstance(channel, bool) or not 0 <= channel < n:
        raise ChannelOutOfRangeError(
            f"channel {channel!r} out of range for target layer {layer!r}, which has {n} channels (valid 0..{n - 1})")


def _target_means(target: torch.Tensor) -> torch.Tensor:
    """``[B, C, *positions]`` -> the mean of each channel over positions, ``[B, C]``."""
    return per_channel(target).mean(dim=2)


def _batch_attribution(model: nn.Module, source: str, target: str, x: torch.Tensor, channels: list[int] | None,
                       method: str, steps: int, plan: CallPlan) -> torch.Tensor:
    """Attributions summed over the batch ``x``: ``[C_t, C_s]``, or ``[len(channels), C_s]``."""
    alphas = [1.0] if method == "grad_x_act" else [(i + 0.5) / steps for i in range(steps)]
    total: torch.Tensor | None = None
    for alpha in alphas:
        seen: dict[str, torch.Tensor] = {}

        def scaled(s: torch.Tensor, a: float = alpha) -> torch.Tensor:
            # Integrated gradients: the same images, with the source activation scaled by alpha
            # (Riemann midpoints of the path from 0 to the actual activation, in source space).
            seen["actual"] = s
            return s if a == 1.0 else a * s

        cut = source_to_target(model, source, target, x, transform=scaled, plan=plan)
        actual = per_channel(seen["actual"])  # [B, C_s, P]
        means = _target_means(cut.target)  # [B, C_t]
        if channels is not None:
            _check_channel(channels[0], means.shape[1], target)
        chans = list(range(means.shape[1])) if channels is None else channels
        rows = []
        for i, c in enumerate(chans):
            g = None
            if means.requires_grad:
                (g,) = torch.autograd.grad(means[:, c].sum(), cut.source, retain_graph=i < len(chans) - 1,
                                           allow_unused=True)
            if g is None:  # the target channel does not depend on the source
                rows.append(torch.zeros(actual.shape[1], dtype=actual.dtype, device=actual.device))
                continue
            # (mean over alpha of the gradient) x activation = mean over alpha of (gradient x activation),
            # so each alpha's share is reduced at once and no [B, C_t, C_s, P] tensor is ever held.
            rows.append((per_channel(g.detach()) * actual).sum(dim=(0, 2)))
        part = torch.stack(rows) / len(alphas)
        total = part if total is None else total + part
        del cut, means
    assert total is not None
    return total


def channel_influence(
    model: nn.Module,
    source_layer: str,
    target_layer: str,
    images: torch.Tensor,
    *,
    target_channel: int | None = None,
    method: str = "grad_x_act",
    steps: int = 16,
    preprocess: PreprocessLike = "auto",
    batch_size: int = 32,
) -> torch.Tensor:
    """Influence of each source channel on each target channel, float32 ``[C_target, C_source]`` (CPU).

    With ``target_channel`` the result is that row, ``[C_source]``.

    A target channel's value on an image is its activation averaged over
    positions. ``method="grad_x_act"``: influence ``[t, s]`` is
    ``sum over positions of d t / d S[s] * S[s]`` averaged over ``images``
    (``S`` is the source activation). ``method="integrated_gradients"`` replaces
    the gradient by its average along ``alpha * S`` for ``alpha`` at the
    ``steps`` midpoints of [0, 1]; then the influences of a target channel sum
    to its mean value minus its value with the source activation set to zero
    (completeness). For a model that is linear between the two layers both
    methods agree exactly.

    ``images``: images ``(N, C, H, W)`` in [0, 1]; the model sees them through
    :class:`~devvis.render.pipeline.ModelInput` (resize to the model's fixed
    input size if it has one, then ``preprocess``: ``"auto"``, the model's own
    default; ``"imagenet"``; ``None``/``"none"``, as given; or a callable).
    They go through the model in batches of ``batch_size``, borrowed with
    :func:`devvis.state.frozen` (eval mode, frozen parameters; every submodule's
    mode and ``requires_grad`` restored afterwards). Layers may be conv maps
    ``[B, C, H, W]`` or flat ``[B, C]``. A layer whose module runs several times
    in the forward pass means its last call, the tensor render records under
    that name (:mod:`devvis.hooks.calls`).

    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None)
    >>> channel_influence(m, "layer1", "layer2.0.conv1", torch.rand(2, 3, 32, 32), target_channel=3).shape
    torch.Size([64])
    """
    _check_method(method)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"steps must be a positive integer (integration points); got {steps!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] < 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"images must be a batch of images (N, C, H, W) with N >= 1; got {shape}")
    source = check_layer(model, source_layer, "source")
    target = check_layer(model, target_layer, "target")
    model_input = ModelInput(model, preprocess=preprocess)
    device = model_device(model)
    channels = None if target_channel is None else [target_channel]
    if target_channel is not None and (not isinstance(target_channel, int) or isinstance(target_channel, bool)
                                       or target_channel < 0):
        raise ChannelOutOfRangeError(f"target_channel must be a non-negative integer; got {target_channel!r}")
    total: torch.Tensor | None = None
    plan: CallPlan | None = None
    with frozen(model):
        for start in range(0, images.shape[0], batch_size):
            x = model_input(images[start:start + batch_size].to(device=device, dtype=torch.float32))
            if plan is None:  # which call each name means: counted once, on the first batch
                plan = plan_calls(model, source, target, x)
            part = _batch_attribution(model, source, target, x, channels, method, steps, plan)
            total = part if total is None else total + part
    assert total is not None
    result = (total / images.shape[0]).float().cpu()
    return result[0] if target_channel is not None else result


@dataclass
class InfluenceTrajectory:
    """Influence of every source channel on one target channel at each checkpoint.

    ``influence``: float32 ``[n_steps, C_source]``, row ``i`` at training step ``steps[i]``.
    """

    steps: list[int]
    influence: torch.Tensor
    source_layer: str
    target_layer: str
    target_channel: int
    method: str = "grad_x_act"
    n_inputs: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.steps)

    def at(self, step: int) -> torch.Tensor:
        """The influence row ``[C_source]`` at training step ``step``."""
        if step not in self.steps:
            raise ConfigError(f"step {step!r} is not in this trajectory; valid steps: {self.steps}")
        return self.influence[self.steps.index(step)]

    def top(self, k: int = 6, step: int | None = None) -> list[tuple[int, float]]:
        """The ``k`` source channels of largest ``|influence|`` at ``step`` (default: the last), as ``(channel, value)``."""
        row = self.at(self.steps[-1] if step is None else step)
        k = min(int(k), row.numel())
        order = torch.argsort(row.abs(), descending=True, stable=True)[:k]
        return [(int(c), float(row[c])) for c in order]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the settings and ``influence`` as ``{step: [value per source channel]}``."""
        return {
            "source_layer": self.source_layer, "target_layer": self.target_layer,
            "target_channel": self.target_channel, "method": self.method, "n_inputs": self.n_inputs,
            "steps": list(self.steps), "settings": dict(self.settings),
            "influence": {str(s): [float(v) for v in row] for s, row in zip(self.steps, self.influence)},
        }


def iterate_series(series: SeriesLike) -> Iterator[tuple[int, nn.Module]]:
    """``(step, model)`` pairs of a series, in step order, one model in memory at a time.

    ``series``: a :class:`~devvis.longitudinal.CheckpointSeries`, a ``{step: model}``
    mapping, a folder or a list of checkpoint files (see :func:`devvis.longitudinal.series.as_series`).
    """
    from devvis.longitudinal.series import as_series

    yield from as_series(series)


def influence_trajectory(
    series: SeriesLike,
    source_layer: str,
    target_layer: str,
    target_channel: int,
    inputs: torch.Tensor,
    *,
    method: str = "grad_x_act",
    steps: int = 16,
    preprocess: PreprocessLike = "auto",
    batch_size: int = 32,
    progress: bool = False,
) -> InfluenceTrajectory:
    """:func:`channel_influence` of every source channel on ``target_channel`` at each checkpoint of ``series``.

    ``series``: a :class:`~devvis.longitudinal.CheckpointSeries` (iterating
    yields ``(step, model)``, one model in memory at a time), a
    ``{step: model}`` mapping, or checkpoint paths. ``inputs``: images
    ``(N, C, H, W)`` in [0, 1]. ``method``, ``steps``, ``preprocess`` and
    ``batch_size`` go to :func:`channel_influence`. Returns an
    :class:`InfluenceTrajectory` whose ``influence`` is ``[n_checkpoints, C_source]``.

    >>> import torch
    >>> from torch import nn
    >>> models = {s: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)) for s in (0, 10)}
    >>> traj = influence_trajectory(models, "0", "2", 1, torch.rand(4, 3, 12, 12))
    >>> traj.steps, tuple(traj.influence.shape)
    ([0, 10], (2, 4))
    """
    found: list[int] = []
    rows: list[torch.Tensor] = []
    for step, model in tqdm(iterate_series(series), disable=not progress, desc="influence", leave=False):
        rows.append(channel_influence(model, source_layer, target_layer, inputs, target_channel=target_channel, method=method,
                                      steps=steps, preprocess=preprocess, batch_size=batch_size))
        found.append(step)
    if not rows:
        raise ConfigError("the checkpoint series is empty; influence_trajectory needs at least one checkpoint")
    settings: dict[str, Any] = {"steps": steps, "batch_size": batch_size}
    if preprocess is None or isinstance(preprocess, str):
        settings["preprocess"] = preprocess
    return InfluenceTrajectory(found, torch.stack(rows), source_layer, target_layer, int(target_channel), method,
                               int(inputs.shape[0]), settings)


def top_inputs(
    trajectory_or_series: InfluenceTrajectory | SeriesLike,
    *args: str | int | torch.Tensor,
    k: int = 6,
    **kw: object,
) -> dict[int, list[tuple[int, float]]]:
    """The ``k`` strongest upstream channels of a target channel at each checkpoint, by ``|influence|``.

    Give an :class:`InfluenceTrajectory`, or a series followed by the
    arguments of :func:`influence_trajectory` (``source_layer, target_layer,
    target_channel, inputs``, keywords). Returns ``{step: [(channel, influence), ...]}``,
    strongest first, influences signed.

    >>> import torch
    >>> traj = InfluenceTrajectory([0, 5], torch.tensor([[0.1, -2.0, 0.5], [3.0, 0.0, -1.0]]), "a", "b", 0)
    >>> top_inputs(traj, k=2)
    {0: [(1, -2.0), (2, 0.5)], 5: [(0, 3.0), (2, -1.0)]}
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be a positive integer; got {k!r}")
    if isinstance(trajectory_or_series, InfluenceTrajectory):
        if args or kw:
            raise ConfigError("top_inputs(trajectory, k=...) takes no other arguments when given a trajectory")
        traj = trajectory_or_series
    else:
        traj = influence_trajectory(trajectory_or_series, *args, **kw)  # type: ignore[arg-type]
    return {step: traj.top(k, step) for step in traj.steps}
