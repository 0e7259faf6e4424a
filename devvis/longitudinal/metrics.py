"""How a feature changes over training: the cross-checkpoint matrix, the similarity to the final
feature on its feature-driven part, the step at which it settles, how much its visualization's
appearance changed, and the overlap of top dataset examples.

For one component (layer, channel), with ``viz_i`` the visualization rendered at
checkpoint ``i`` (same seed everywhere, :func:`render_series`), ``act_j(x)`` the
channel's mean activation under checkpoint ``j``'s model and ``g`` a neutral baseline
image (constant grey by default, or the data set's mean image):

* ``M[i, j] = act_j(viz_i)``: the cross-checkpoint matrix; ``b_j = act_j(g)``: the baseline;
* ``similarity[i] = (M[i, -1] - b_-1) / (M[-1, -1] - b_-1)``: how much of the final
  visualization's feature-driven response checkpoint ``i``'s visualization evokes in the
  *final* channel (1 at the end; NaN when the final visualization does not drive the final
  channel above the baseline);
* the settle step (:func:`~devvis.longitudinal.settle.settle`): the first step from which the
  similarity stays in ``[threshold, 1 + tolerance]``, with a status ``settled``, ``not settled``
  or ``not comparable`` (a similarity above ``1 + tolerance``);
* the appearance distance (:mod:`~devvis.longitudinal.appearance`): how different consecutive
  visualizations, and each and the final one, look in the final checkpoint's early layers.

Re-evaluating a render's images under other checkpoints only means something with the
preprocessing the render used, so ``preprocess="auto"`` (the default) here means *the
renders' own* preprocessing, read from their config (which records ``"auto"`` already
resolved: ``"imagenet"`` or ``"none"``). A render made with a custom callable cannot be
rebuilt from its record: pass the same callable as ``preprocess=``. ``None`` is identity.

>>> settle_step([0, 10, 100, 1000], [0.1, 0.9, 0.7, 1.0], threshold=0.8) is None   # not settled
True
>>> settle_step([0, 10, 100, 1000], [0.1, 0.9, 0.85, 1.0], threshold=0.8)
10
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from devvis import io as dio
from devvis.errors import ConfigError
from devvis.longitudinal.appearance import AppearanceChange, appearance_change
from devvis.longitudinal.inputs import ImagesLike
from devvis.longitudinal.render_series import SeriesResult, image_labels
from devvis.longitudinal.series import CheckpointSeries, as_series
from devvis.longitudinal.settle import (DEFAULT_TOLERANCE, BaselineLike, baseline_image, settle, settle_step,
                                        similarity_to_final)
from devvis.objectives import channel as channel_objective
from devvis.objectives import evaluate
from devvis.render import RenderResult
from devvis.render.pipeline import PREPROCESS_CHOICES
from devvis.trust.examples import TopKExamples, top_k_examples
from devvis.typing import PreprocessLike, SeriesLike


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


def _visualizations(s: CheckpointSeries, series_result: SeriesResult, layer: str,
                    channel: int) -> tuple[list[int], list[torch.Tensor]]:
    """The rendered steps (each checked to be in ``s``) and each one's images of the component, ``(k, C, H, W)``."""
    steps = series_result.steps
    missing = [st for st in steps if st not in s]
    if missing:
        raise ConfigError(f"steps {missing} were rendered but are not in the series (steps {s.steps})")
    viz = [component_images(series_result[st], layer, channel) for st in steps]
    k = {v.shape[0] for v in viz}
    if len(k) != 1:
        raise ConfigError(f"checkpoints hold different numbers of images of {layer}:{channel}: {sorted(k)}")
    return steps, viz


def _responses(s: CheckpointSeries, steps: Sequence[int], images: torch.Tensor, layer: str, channel: int, *,
               preprocess: PreprocessLike, input_size: Any, batch_size: int,
               at_final: Callable[[nn.Module], None] | None = None) -> torch.Tensor:
    """``R[j]`` = the channel's mean activation under checkpoint ``steps[j]`` on each of ``images``,
    ``(len(steps), B)``. One model in memory at a time, in step order; ``at_final(model)`` is
    called with the last one while it is loaded."""
    objective = channel_objective(layer, channel)
    wanted, rows = set(steps), []
    for step, model in s:
        if step not in wanted:
            continue
        rows.append(evaluate(model, objective, images, preprocess=preprocess, input_size=input_size,
                             batch_size=batch_size))
        if at_final is not None and step == steps[-1]:
            at_final(model)
    return torch.stack(rows)


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
    steps, viz = _visualizations(s, series_result, layer, channel)
    r = _responses(s, steps, torch.cat(viz), layer, channel, preprocess=render_preprocess(series_result, preprocess),
                   input_size=series_result[steps[-1]].config.get("input_size"), batch_size=batch_size)
    return r.reshape(len(steps), len(steps), viz[0].shape[0]).mean(dim=2).T.contiguous()


@dataclass
class FeatureChange:
    """How one component's feature visualization changed across checkpoints (see the module docstring).

    ``matrix``: ``n x n`` nested list (``M[i][j]``, raw activations); ``baseline``: what was
    subtracted (a sentence); ``baseline_values``: ``b_j``, the response of each checkpoint's
    channel to the baseline image; ``similarity``: ``(n,)`` list on the feature-driven part;
    ``final_activation``: ``M[-1][-1]``; ``final_driven``: ``M[-1][-1] - b_-1``;
    ``settle_step``: at ``threshold`` and ``tolerance`` (None unless ``settle_status`` is
    ``"settled"``); ``settle_reason``: why; ``appearance``: the appearance distances;
    ``top_k``: top data-set examples when a loader was given; ``notes``: caveats.
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
    baseline: str = "none: raw activations, nothing subtracted"
    baseline_values: list[float] = field(default_factory=list)
    final_driven: float = float("nan")
    tolerance: float = DEFAULT_TOLERANCE
    settle_status: str = "not settled"
    settle_reason: str = ""
    appearance: AppearanceChange | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record in devvis's metadata schema (NaN becomes null)."""
        return dio.metadata(
            "feature_change", layer=self.layer, channel=self.channel, steps=self.steps, similarity=self.similarity,
            matrix=self.matrix, baseline=self.baseline, baseline_values=self.baseline_values,
            final_activation=self.final_activation, final_driven=self.final_driven, threshold=self.threshold,
            tolerance=self.tolerance, settle_step=self.settle_step, settle_status=self.settle_status,
            settle_reason=self.settle_reason,
            appearance=self.appearance.to_dict() if self.appearance is not None else None,
            top_k=self.top_k.to_dict() if self.top_k is not None else None, notes=self.notes,
            definitions={
                "matrix": "M[i][j] = mean activation of the channel under checkpoint steps[j] on the "
                          "visualization rendered at checkpoint steps[i]",
                "baseline_values": "b[j] = mean activation of the channel under checkpoint steps[j] on the "
                                   "baseline image",
                "similarity": "(M[i][-1] - b[-1]) / (M[-1][-1] - b[-1]): the feature-driven response of the final "
                              "model to visualization i, relative to the final visualization's (null when "
                              "M[-1][-1] - b[-1] <= 0)",
                "settle_step": "first step from which similarity stays in [threshold, 1 + tolerance]; null unless "
                               "settle_status is 'settled' ('not settled': only the final checkpoint qualifies "
                               "or it is below the threshold; 'not comparable': a similarity above 1 + tolerance "
                               "or an undefined one)",
                "appearance": "D(x, y) in the final checkpoint's early layers; consecutive[i] = D(viz_i, viz_i+1), "
                              "to_final[i] = D(viz_i, viz_final)"})


def feature_change(series: SeriesLike, series_result: SeriesResult, layer: str, channel: int, *,
                   threshold: float = 0.8, tolerance: float = DEFAULT_TOLERANCE, baseline: BaselineLike = "grey",
                   appearance: bool = True, appearance_layers: Sequence[str] | None = None,
                   preprocess: PreprocessLike = "auto", loader: ImagesLike | None = None, k: int = 9,
                   batch_size: int = 64) -> FeatureChange:
    """All feature-change metrics of ``(layer, channel)`` from the series' models and their renders.

    ``series``: the models; ``series_result``: renders at each checkpoint (:func:`render_series`)
    that include this component. ``baseline``: the neutral image whose response is subtracted
    before the similarity (``"grey"``, ``"dataset_mean"`` (needs ``loader``), ``None`` or an image
    ``(C, H, W)``; :func:`~devvis.longitudinal.settle.baseline_image`). ``appearance``: also the
    appearance distances in the final checkpoint's early layers (``appearance_layers``, default
    its first two convolutions). With ``loader`` (images ``(N, C, H, W)`` in [0, 1], a Dataset or
    a DataLoader), also :func:`top_k_examples` (unless ``k=0``: the loader then only serves
    ``baseline="dataset_mean"``). ``preprocess``: ``"auto"`` (default) the renders'
    own (see :func:`render_preprocess`), used for every score. Each model is loaded once.

    >>> import torch
    >>> from devvis.longitudinal import CheckpointSeries, render_series
    >>> nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3)) for s in (0, 10)}
    >>> series = CheckpointSeries.from_models(nets)
    >>> res = render_series(series, "0:1", steps=2, image_size=12, transforms="none", progress=False)
    >>> fc = feature_change(series, res, "0", 1)
    >>> fc.baseline.split(":")[0], len(fc.baseline_values), fc.appearance.to_final[-1]
    ('grey', 2, 0.0)
    """
    series, series_result = _check_order(series, series_result, "feature_change")
    s = as_series(series)
    steps, viz = _visualizations(s, series_result, layer, channel)
    pre = render_preprocess(series_result, preprocess)
    input_size = series_result[steps[-1]].config.get("input_size")
    base, base_text = baseline_image(baseline, viz[0], loader=loader, batch_size=batch_size)
    batch = torch.cat(viz + ([base] if base is not None else []))
    found: dict[str, AppearanceChange] = {}

    def at_final(model: nn.Module) -> None:
        if appearance:
            found["a"] = appearance_change(model, steps, viz, layers=appearance_layers, preprocess=pre,
                                           input_size=input_size, batch_size=batch_size)

    r = _responses(s, steps, batch, layer, channel, preprocess=pre, input_size=input_size, batch_size=batch_size,
                   at_final=at_final)
    n, per = len(steps), viz[0].shape[0]
    m = r[:, :n * per].reshape(n, n, per).mean(dim=2).T.contiguous()
    b = r[:, -1] if base is not None else torch.zeros(n)
    sim = similarity_to_final(m, b if base is not None else None)
    verdict = settle(steps, sim.tolist(), threshold=threshold, tolerance=tolerance)
    notes = []
    if torch.isnan(sim).all():
        notes.append(f"the final checkpoint's channel does not respond to its own visualization above the baseline "
                     f"(M[-1, -1] - b = {float(m[-1, -1]):.4g} - {float(b[-1]):.4g} <= 0): similarity is undefined")
    top = None
    if loader is not None and k != 0:
        top = top_k_examples(s if steps == s.steps else _restrict(s, steps), layer, channel, loader, k,
                             preprocess=pre, batch_size=batch_size)
    return FeatureChange(layer=layer, channel=channel, steps=steps, similarity=sim.tolist(), matrix=m.tolist(),
                         final_activation=float(m[-1, -1]), threshold=float(threshold), settle_step=verdict.step,
                         top_k=top, notes=notes, baseline=base_text,
                         baseline_values=b.tolist() if base is not None else [],
                         final_driven=float(m[-1, -1] - b[-1]), tolerance=float(tolerance),
                         settle_status=verdict.status, settle_reason=verdict.reason, appearance=found.get("a"))


def _restrict(series: CheckpointSeries, steps: Sequence[int]) -> CheckpointSeries:
    """The sub-series holding exactly ``steps`` (which must be a contiguous run of its positions)."""
    pos = [series.index(st) for st in steps]
    if pos != list(range(pos[0], pos[0] + len(pos))):
        raise ConfigError(f"top-k examples need the rendered steps {list(steps)} to be consecutive in the series "
                          f"(steps {series.steps})")
    return series[pos[0]:pos[-1] + 1]
