"""Units over training from their responses to the probe images: the features signal, settle steps, examples.

A unit is one channel of a layer. Its **response profile** at a checkpoint is its mean activation
(over positions) on each of the ``N`` probe images, ``(N,)``.

* **Response similarity** of checkpoint ``i``: the Pearson correlation between the unit's profile at
  ``i`` and at the final checkpoint (1 at the end; NaN when a profile is constant).
* **Response settle step**: :func:`devvis.longitudinal.settle` on that similarity (the first step
  from which it stays in ``[threshold, 1 + tolerance]``; ``threshold`` 0.8 by default). This is the
  cheap, data-based companion of the feature-visualization settle step of
  :func:`devvis.longitudinal.feature_change` (pass those as ``changes=`` to :func:`devvis.stages.stages`
  to use them instead).
* **Features signal**: the trajectory of all units' standardized profiles (each profile centred and
  scaled to unit norm, concatenated over units), reduced to its top principal components as for the
  essential dynamics; it turns where many units change what they respond to at once.
* **Response change** of a unit between checkpoints ``i`` and ``i + 1``: ``‖q_{i+1} − q_i‖``, where ``q``
  is its **class profile** — the mean of its standardized profile ``p̂`` (centred, unit norm, as in the
  features signal) over each class's probe images, ``(K,)`` — when the probe has labels, and ``p̂``
  itself (0 unchanged, 2 reversed) when it has none. On class means, a change in *which classes* the
  unit responds to counts, and the churn from image to image within a class (large from a random
  initialization) does not. Its **change share** in a stage is the part of the sum over the run that
  falls in the stage's intervals: the stage in which the unit's response changed most is the one it
  *formed in*.
* **Top examples**: the ``k`` probe images that drive a unit most in the final checkpoint, and their
  labels (so a unit can be checked against the stage it is assigned to).
* **Group response**: with probe labels and class groups (default on the SyntheticShapes probe: the
  curriculum's phases ``colour``, ``shape``, ``texture``), the mean of the unit's final profile,
  standardized over the probe images (mean 0, standard deviation 1), on each group's images. A unit
  with ``shape`` 0.8 and ``colour`` −0.5 responds 1.3 of its standard deviations more to the shape
  images than to the colour images.

>>> import torch
>>> from torch import nn
>>> nets = {s: nn.Sequential(nn.Conv2d(3, 2, 1)) for s in (0, 1, 2)}
>>> u = unit_responses(nets, torch.rand(5, 3, 4, 4), ["0"])
>>> tuple(u.profiles["0"].shape)
(3, 2, 5)
>>> tuple(response_change(u, labels=[0, 0, 1, 1, 2])["0"].shape)  # (checkpoints - 1, channels)
(2, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from devvis.errors import ConfigError
from devvis.hooks import ActivationRecorder
from devvis.longitudinal import as_series, settle
from devvis.render.pipeline import ModelInput
from devvis.stages.dynamics import pooled
from devvis.stages.dynamics import pca
from devvis.state import frozen
from devvis.typing import ImageBatch, PreprocessLike, SeriesLike


@dataclass
class UnitResponses:
    """``profiles[layer]``: float64 ``(n_checkpoints, C, N)`` mean activation of each channel on each probe image."""

    steps: list[int]
    profiles: dict[str, np.ndarray]

    def units(self) -> list[tuple[str, int]]:
        return [(layer, c) for layer, p in self.profiles.items() for c in range(p.shape[1])]


@torch.no_grad()
def unit_responses(series: SeriesLike, inputs: ImageBatch, layers: Sequence[str], *,
                   preprocess: PreprocessLike = "auto", batch_size: int = 128) -> UnitResponses:
    """Every channel's response profile on ``inputs`` ``(N, C, H, W)`` in [0, 1] at every checkpoint."""
    if not layers:
        raise ConfigError("unit_responses needs at least one layer name")
    s = as_series(series)
    rows: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    for _, model in s:
        feed = ModelInput(model, preprocess=preprocess)
        with frozen(model, mode="eval") as m:
            dev = next((p.device for p in m.parameters()), torch.device("cpu"))
            got: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
            with ActivationRecorder(m, list(layers)) as rec:
                for i in range(0, len(inputs), batch_size):
                    acts = rec.run(feed(inputs[i:i + batch_size].to(dev)))
                    for layer in layers:
                        got[layer].append(pooled(acts[layer].detach().float()).cpu())
        for layer in layers:
            rows[layer].append(torch.cat(got[layer]).T.double().numpy())  # (C, N)
    return UnitResponses(list(s.steps), {layer: np.stack(r) for layer, r in rows.items()})


def _standardized(p: np.ndarray) -> np.ndarray:
    """Profiles ``(..., N)`` centred and scaled to unit norm along N (constant profiles -> 0)."""
    c = p - p.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(c, axis=-1, keepdims=True)
    return np.divide(c, norm, out=np.zeros_like(c), where=norm > 1e-12)


def response_similarity(responses: UnitResponses, layer: str) -> np.ndarray:
    """Pearson correlation of each unit's profile with its final one, ``(n_checkpoints, C)`` (NaN: constant)."""
    z = _standardized(responses.profiles[layer])
    sim = (z * z[-1:]).sum(axis=-1)
    const = np.linalg.norm(z, axis=-1) < 0.5
    sim[const] = np.nan
    return sim


def features_signal(responses: UnitResponses, n_components: int = 3) -> np.ndarray:
    """The features signal (module docstring): ``(n_checkpoints, k)`` principal-component scores."""
    z = np.concatenate([_standardized(p).reshape(len(p), -1) for p in responses.profiles.values()], axis=1)
    return pca(z, n_components)[0]


def class_profiles(profiles: np.ndarray, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """The mean of ``profiles`` ``(..., N)`` over each class's probe images: ``(..., K)``, classes in label order.

    >>> class_profiles(np.array([1.0, 3.0, 5.0, 6.0]), [1, 1, 0, 0]).tolist()
    [5.5, 2.0]
    """
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != profiles.shape[-1]:
        raise ConfigError(f"labels must have one entry per probe image: {lab.shape[0]} labels, {profiles.shape[-1]} images")
    return np.stack([profiles[..., lab == c].mean(axis=-1) for c in np.unique(lab)], axis=-1)


def response_change(responses: UnitResponses, labels: torch.Tensor | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``{layer: (n_checkpoints − 1, C)}``: each unit's response change between consecutive checkpoints (module
    docstring); with the probe ``labels``, the change of its class profile (the standardized profile's mean
    over each class's images), so that only a change in which classes the unit responds to counts."""
    out = {}
    for layer, p in responses.profiles.items():
        z = _standardized(p)
        out[layer] = np.linalg.norm(np.diff(class_profiles(z, labels) if labels is not None else z, axis=0), axis=-1)
    return out


def change_shares(steps: Sequence[int], change: np.ndarray, edges: Sequence[int]) -> list[float]:
    """The share of a unit's response change ``change`` ``(n − 1,)`` (between ``steps[i]`` and ``steps[i+1]``) in
    each stage ``edges[k] < step ≤ edges[k+1]`` (an interval belongs to the stage that contains its end)."""
    ends = np.asarray(list(steps)[1:])
    per = [float(change[(ends > a) & (ends <= b)].sum()) for a, b in zip(edges[:-1], edges[1:])]
    total = sum(per)
    return [v / total for v in per] if total > 1e-12 else [float("nan")] * len(per)


@dataclass
class UnitSettle:
    """A unit's settle step from its response similarity, and its top probe examples in the final checkpoint."""

    layer: str
    channel: int
    settle_step: int | None
    settle_status: str
    top_examples: list[int]
    top_labels: list[int]
    source: str = "response"
    group_response: dict[str, float] = field(default_factory=dict)
    change_share: list[float] = field(default_factory=list)
    contrast: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.layer}:{self.channel}"

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.label, "settle_step": self.settle_step, "settle_status": self.settle_status,
                "source": self.source, "top_examples": self.top_examples, "top_labels": self.top_labels,
                "group_response": {k: round(v, 4) if np.isfinite(v) else None for k, v in self.group_response.items()},
                "change_share": [round(v, 4) if np.isfinite(v) else None for v in self.change_share],
                "contrast": {k: round(v, 4) if np.isfinite(v) else None for k, v in self.contrast.items()}}


def group_responses(profile: np.ndarray, labels: torch.Tensor | np.ndarray,
                    groups: Mapping[str, Sequence[int]]) -> list[dict[str, float]]:
    """Per unit of ``profile`` ``(C, N)``, the mean of its standardized profile on each group's images
    (module docstring); ``labels`` ``(N,)``, ``groups`` ``{name: class labels}``. A group with no probe
    image, or a constant profile, gives NaN."""
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != profile.shape[1]:
        raise ConfigError(f"labels must have one entry per probe image: {lab.shape[0]} labels, {profile.shape[1]} images")
    sd = profile.std(axis=1, keepdims=True)
    z = np.divide(profile - profile.mean(axis=1, keepdims=True), sd, out=np.full_like(profile, np.nan), where=sd > 1e-12)
    masks = {g: np.isin(lab, list(cs)) for g, cs in groups.items()}
    return [{g: float(z[c, m].mean()) if m.any() else float("nan") for g, m in masks.items()} for c in range(len(z))]


def unit_settles(responses: UnitResponses, *, labels: torch.Tensor | None = None, k: int = 9,
                 threshold: float = 0.8, groups: Mapping[str, Sequence[int]] | None = None) -> list[UnitSettle]:
    """Response settle step (module docstring), top-``k`` probe examples and (with ``labels`` and
    ``groups``) the group responses of every unit."""
    out = []
    for layer, prof in responses.profiles.items():
        sim = response_similarity(responses, layer)
        per_group = group_responses(prof[-1], labels, groups) if labels is not None and groups else None
        for c in range(prof.shape[1]):
            st = settle(responses.steps, [None if np.isnan(v) else float(v) for v in sim[:, c]], threshold=threshold)
            top = np.argsort(-prof[-1, c], kind="stable")[:k].tolist()
            out.append(UnitSettle(layer, c, st.step, st.status, top,
                                  [int(labels[i]) for i in top] if labels is not None else [],
                                  group_response=per_group[c] if per_group else {}))
    return out
