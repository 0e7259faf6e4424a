"""How a feature changes over training: similarity to the final feature, the cross-checkpoint
matrix, the step at which it settles, and the overlap of top dataset examples.

For one component (layer, channel), with ``viz_i`` the visualization rendered at
checkpoint ``i`` (same seed everywhere, :func:`render_series`) and ``act_j(x)`` the
channel's mean activation under checkpoint ``j``'s model:

* ``M[i, j] = act_j(viz_i)``: the cross-checkpoint matrix;
* ``similarity[i] = act_final(viz_i) / act_final(viz_final) = M[i, -1] / M[-1, -1]``: how
  well checkpoint ``i``'s feature drives the *final* channel, relative to the final
  feature itself (1 at the end; NaN when the final channel does not respond, ``M[-1, -1] <= 0``);
* ``settle_step``: the first step from which the similarity stays at or above a threshold.

Re-evaluating a render's images under other checkpoints only means something with the
preprocessing the render used, so ``preprocess="auto"`` (the default) here means *the
renders' own* preprocessing, read from their config (which records ``"auto"`` already
resolved: ``"imagenet"`` or ``"none"``). A render made with a custom callable cannot be
rebuilt from its record: pass the same callable as ``preprocess=``. ``None`` is identity.

>>> settle_step([0, 10, 100, 1000], [0.1, 0.9, 0.7, 1.0], threshold=0.8)
1000
>>> settle_step([0, 10, 100, 1000], [0.1, 0.9, 0.85, 1.0], threshold=0.8)
10
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from devvis import io as dio
from devvis.errors import ConfigError
from devvis.longitudinal.inputs import ImagesLike, images_from
from devvis.longitudinal.render_series import SeriesResult, image_labels
from devvis.longitudinal.series import CheckpointSeries, as_series
from devvis.objectives import channel as channel_objective
from devvis.objectives import evaluate
from devvis.render import RenderResult
from devvis.render.pipeline import PREPROCESS_CHOICES
from devvis.typing import PreprocessLike, SeriesLike


def settle_step(steps: Sequence[int], similarity: Sequence[float], threshold: float = 0.8) -> int | None:
    """The first step after which ``similarity`` stays ``>= threshold`` until the end; None if it never does.

    ``steps`` increasing, ``similarity`` aligned with them (NaN/None count as below the
    threshold). Returns an element of ``steps``.

    >>> settle_step([1, 2, 3], [0.9, 0.5, 0.95]), settle_step([1, 2], [0.9, 0.5])
    (3, None)
    """
    steps, sim = list(steps), list(similarity)
    if len(steps) != len(sim):
        raise ConfigError(f"settle_step got {len(steps)} steps and {len(sim)} similarity values; they must align")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ConfigError(f"settle_step needs increasing steps; got {steps}")
    settled: int | None = None
    for s, v in zip(reversed(steps), reversed(sim)):
        if v is None or not math.isfinite(float(v)) or float(v) < threshold:
            break
        settled = s
    return settled


def component_images(result: RenderResult, layer: str, channel: int) -> torch.Tensor:
    """The images of ``result`` that target ``(layer, channel)``, ``(k, 3, H, W)``.

    A ``channels(layer, [...])`` render contributes the image(s) of that channel; a render
    of any other objective contributes all its images (they are taken to be of this component).
    """
    labels = image_labels(result)
    if all(c is not None for _, c in labels):
        idx = [j for j, (lay, c) in enumerate(labels) if c == channel and _same_layer(lay, layer)]
        if not idx:
            have = sorted({f"{lay}:{c}" for lay, c in labels})
            raise ConfigError(f"the render holds no image of {layer}:{channel}; it has {', '.join(have)}")
        return result.images[idx]
    return result.images


def _same_layer(a: str, b: str) -> bool:
    return a.replace("_", ".") == b.replace("_", ".")


def render_preprocess(series_result: SeriesResult, preprocess: PreprocessLike = "auto") -> PreprocessLike:
    """The preprocessing to score ``series_result``'s images with: ``preprocess`` itself, or for
    ``"auto"`` the one the renders used (their config's ``"preprocess"``; ``"auto"`` when a render
    does not record it). :class:`~devvis.errors.ConfigError` when the renders disagree or used a
    callable (whose repr cannot be turned back into the function: pass it explicitly).
    """
    if not (isinstance(preprocess, str) and preprocess == "auto"):
        return preprocess
    used = {str(r.config.get("preprocess", "auto")) for _, r in series_result}
    if len(used) > 1:
        raise ConfigError(f"the renders used different preprocessing ({', '.join(sorted(used))}); "
                          "pass preprocess= explicitly")
    recorded = used.pop()
    if recorded not in PREPROCESS_CHOICES:
        raise ConfigError(f"the renders used a custom preprocess {recorded}; pass the same callable as preprocess= "
                          "to score their images the way the renders' models saw them")
    return recorded


def _check_order(series: Any, series_result: Any, name: str) -> tuple[Any, SeriesResult]:
    """``(series, series_result)``; the earlier order (renders first) still works, with a DeprecationWarning."""
    if isinstance(series, SeriesResult) and not isinstance(series_result, SeriesResult):
        warnings.warn(f"{name}(series_result, series, ...) is deprecated: pass the series first, "
                      f"{name}(series, series_result, ...)", DeprecationWarning, stacklevel=3)
        series, series_result = series_result, series
    if not isinstance(series_result, SeriesResult):
        raise ConfigError(f"{name} needs the renders (a SeriesResult from render_series) as its second argument, "
                          f"got {type(series_result).__name__}")
    return series, series_result


def cross_checkpoint_matrix(series: SeriesLike, series_result: SeriesResult, layer: str, channel: int, *,
                            preprocess: PreprocessLike = "auto", batch_size: int = 64) -> torch.Tensor:
    """``M`` float ``(n, n)``: ``M[i, j]`` is the channel's mean activation under checkpoint ``j``
    on the visualization made at checkpoint ``i`` (averaged over that checkpoint's images of the
    component). Each model is loaded once and evaluated on all visualizations in one batch.

    ``preprocess``: ``"auto"`` (default) the one the renders used (see :func:`render_preprocess`);
    ``None`` identity; ``"imagenet"`` or a callable. The input size is the renders' too.
    The steps are those of ``series_result``; ``series`` must hold each of them.
    """
    series, series_result = _check_order(series, series_result, "cross_checkpoint_matrix")
    s = as_series(series)
    steps = series_result.steps
    missing = [st for st in steps if st not in s]
    if missing:
        raise ConfigError(f"steps {missing} were rendered but are not in the series (steps {s.steps})")
    pre = render_preprocess(series_result, preprocess)
    input_size = series_result[steps[-1]].config.get("input_size")
    viz = [component_images(series_result[st], layer, channel) for st in steps]
    k = {v.shape[0] for v in viz}
    if len(k) != 1:
        raise ConfigError(f"checkpoints hold different numbers of images of {layer}:{channel}: {sorted(k)}")
    per = k.pop()
    batch = torch.cat(viz)
    objective = channel_objective(layer, channel)
    m = torch.empty(len(steps), len(steps))
    wanted = set(steps)
    j = 0
    for step, model in s:  # one model in memory at a time, in step order
        if step not in wanted:
            continue
        vals = evaluate(model, objective, batch, preprocess=pre, input_size=input_size, batch_size=batch_size)
        m[:, j] = vals.reshape(len(steps), per).mean(dim=1)
        j += 1
    return m


def similarity_to_final(matrix: torch.Tensor) -> torch.Tensor:
    """``M[:, -1] / M[-1, -1]``, ``(n,)``; all NaN when the final channel's own activation ``M[-1, -1] <= 0``."""
    final = matrix[-1, -1]
    if not torch.isfinite(final) or final <= 0:
        return torch.full((matrix.shape[0],), float("nan"))
    return matrix[:, -1] / final


@dataclass
class TopKExamples:
    """Top-``k`` data-set examples of a channel at each checkpoint.

    ``indices``/``values``: ``(n_checkpoints, k)`` (long / float), most activating first;
    indices are positions in the data set. ``jaccard_consecutive[i]``: overlap
    ``|A ∩ B| / |A ∪ B|`` of the top-k sets of checkpoints ``i`` and ``i + 1`` (``n - 1``
    values); ``jaccard_final[i]``: overlap of checkpoint ``i``'s set with the final one's.
    """

    steps: list[int]
    k: int
    indices: torch.Tensor
    values: torch.Tensor
    jaccard_consecutive: list[float]
    jaccard_final: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {"steps": self.steps, "k": self.k, "indices": self.indices.tolist(), "values": self.values.tolist(),
                "jaccard_consecutive": self.jaccard_consecutive, "jaccard_final": self.jaccard_final}


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def top_k_examples(series: SeriesLike, layer: str, channel: int, loader: ImagesLike, k: int = 9, *,
                   preprocess: PreprocessLike = "auto", batch_size: int = 64) -> TopKExamples:
    """Per checkpoint, the ``k`` examples of ``loader`` that activate ``(layer, channel)`` most.

    ``loader``: a DataLoader, Dataset or image tensor ``(N, C, H, W)`` in [0, 1] (read once, in
    data-set order; see :func:`~devvis.longitudinal.inputs.images_from`). Activation = the
    channel's mean over positions. ``preprocess``: ``"auto"`` (the model's own default), ``None``
    (identity), ``"imagenet"`` or a callable. Returns :class:`TopKExamples` with the Jaccard
    overlaps of the top-k sets.

    >>> import torch
    >>> from devvis.longitudinal import CheckpointSeries
    >>> nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1)) for s in (0, 1)}
    >>> top = top_k_examples(CheckpointSeries.from_models(nets), "0", 0, torch.rand(20, 3, 4, 4), k=3)
    >>> tuple(top.indices.shape), len(top.jaccard_consecutive)
    ((2, 3), 1)
    """
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    s = as_series(series)
    images = images_from(loader, batch_size)
    if k > images.shape[0]:
        raise ConfigError(f"k={k} exceeds the {images.shape[0]} examples given")
    objective = channel_objective(layer, channel)
    idx, vals = [], []
    for _step, model in s:
        a = evaluate(model, objective, images, preprocess=preprocess, batch_size=batch_size)
        v, i = torch.topk(a, k)
        idx.append(i)
        vals.append(v)
    indices, values = torch.stack(idx), torch.stack(vals)
    consecutive = [_jaccard(indices[i], indices[i + 1]) for i in range(len(indices) - 1)]
    final = [_jaccard(indices[i], indices[-1]) for i in range(len(indices))]
    return TopKExamples(s.steps, k, indices, values, consecutive, final)


@dataclass
class FeatureChange:
    """How one component's feature visualization changed across checkpoints (see the module docstring).

    ``similarity``: ``(n,)`` list; ``matrix``: ``n x n`` nested list (``M[i][j]``);
    ``final_activation``: ``M[-1][-1]``; ``settle_step``: at ``threshold``; ``top_k``:
    top data-set examples when a loader was given; ``notes``: caveats (e.g. a dead final channel).
    """

    layer: str
    channel: int
    steps: list[int]
    similarity: list[float]
    matrix: list[list[float]]
    final_activation: float
    threshold: float
    settle_step: int | None
    top_k: TopKExamples | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record in devvis's metadata schema (NaN becomes null)."""
        return dio.metadata("feature_change", layer=self.layer, channel=self.channel, steps=self.steps,
                            similarity=self.similarity, matrix=self.matrix, final_activation=self.final_activation,
                            threshold=self.threshold, settle_step=self.settle_step,
                            top_k=self.top_k.to_dict() if self.top_k is not None else None, notes=self.notes,
                            definitions={
                                "matrix": "M[i][j] = mean activation of the channel under checkpoint steps[j] on the "
                                          "visualization rendered at checkpoint steps[i]",
                                "similarity": "M[i][-1] / M[-1][-1] (activation under the final model, relative to "
                                              "the final visualization's)",
                                "settle_step": "first step from which similarity stays >= threshold"})


def feature_change(series: SeriesLike, series_result: SeriesResult, layer: str, channel: int, *,
                   threshold: float = 0.8, preprocess: PreprocessLike = "auto", loader: ImagesLike | None = None,
                   k: int = 9, batch_size: int = 64) -> FeatureChange:
    """All feature-change metrics of ``(layer, channel)`` from the series' models and their renders.

    ``series``: the models; ``series_result``: renders at each checkpoint (:func:`render_series`)
    that include this component. With ``loader`` (images ``(N, C, H, W)`` in [0, 1], a Dataset or
    a DataLoader), also :func:`top_k_examples`. ``preprocess``: ``"auto"`` (default) the renders'
    own (see :func:`render_preprocess`), used for the top-k examples too.
    """
    series, series_result = _check_order(series, series_result, "feature_change")
    s = as_series(series)
    m = cross_checkpoint_matrix(s, series_result, layer, channel, preprocess=preprocess, batch_size=batch_size)
    sim = similarity_to_final(m)
    notes = []
    if torch.isnan(sim).all():
        notes.append(f"the final checkpoint's channel does not respond to its own visualization "
                     f"(M[-1, -1] = {float(m[-1, -1]):.4g} <= 0): similarity is undefined")
    steps = series_result.steps
    top = None
    if loader is not None:
        pre = render_preprocess(series_result, preprocess)
        top = top_k_examples(s if steps == s.steps else _restrict(s, steps), layer, channel, loader, k,
                             preprocess=pre, batch_size=batch_size)
    return FeatureChange(layer=layer, channel=channel, steps=steps, similarity=sim.tolist(), matrix=m.tolist(),
                         final_activation=float(m[-1, -1]), threshold=float(threshold),
                         settle_step=settle_step(steps, sim.tolist(), threshold), top_k=top, notes=notes)


def _restrict(series: CheckpointSeries, steps: Sequence[int]) -> CheckpointSeries:
    """The sub-series holding exactly ``steps`` (which must be a contiguous run of its positions)."""
    pos = [series.index(st) for st in steps]
    if pos != list(range(pos[0], pos[0] + len(pos))):
        raise ConfigError(f"top-k examples need the rendered steps {list(steps)} to be consecutive in the series "
                          f"(steps {series.steps})")
    return series[pos[0]:pos[-1] + 1]
