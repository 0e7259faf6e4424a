"""Several renders of every checkpoint as one batch: :func:`render_stacked`, and :func:`render_layers` for channels.

:func:`~devvis.longitudinal.track` renders ``objectives.channels(layer, [...])`` for each layer at
every checkpoint. On a small model a render step costs mostly its fixed overhead, so the layers are
rendered together: one render per checkpoint of :func:`devvis.objectives.stacked` over the layers'
objectives, from :func:`devvis.param.stack` of the starts each layer's render would have had
(``param.image(image_size, batch=len(channels), seed=seed)``), then cut back into one
:class:`~devvis.longitudinal.SeriesResult` per layer. :func:`render_stacked` does the same for any
objectives with declared layers (a circuit's target and its sources, for example). The images follow the same optimization as
per-layer renders (the model in eval mode, Adam per element, the same seeded transform draw for the
whole batch); they agree to float rounding (the convolutions' summation order depends on the batch).
On the demo's series (12 channels of three layers, 31 checkpoints) it takes 0.7x the time of three
renders per checkpoint (``benchmarks/profile_demo.py``).

>>> import torch
>>> from devvis.longitudinal import CheckpointSeries
>>> nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()) for s in (0, 10)}
>>> out = render_layers(CheckpointSeries.from_models(nets), {"0": [1, 2], "1": [0]}, steps=2, image_size=16,
...                     progress=False)
>>> {k: (r.steps, tuple(r[10].images.shape), r[10].fields["channels"]) for k, r in out.items()}
{'0': ([0, 10], (2, 3, 16, 16), [1, 2]), '1': ([0, 10], (1, 3, 16, 16), [0])}
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from devvis import objectives
from devvis.hooks import resolve_name
from devvis.objectives.core import as_objective
from devvis.longitudinal.render_series import SeriesResult, render_series
from devvis.longitudinal.series import as_series
from devvis.param.image import stack
from devvis.render import render
from devvis.render.discover import objective_batch
from devvis.render.loop import default_param
from devvis.render.pipeline import model_input_channels
from devvis.typing import ObjectiveLike, SeriesLike

#: ``render`` settings under which the images of a batch do not interact, so layers may share a batch.
#: Anything else (a parameterization, callbacks, a stop rule over the batch mean, another optimizer or
#: scheduler, a transform given as a callable) renders each layer on its own, as before.
STACKABLE = frozenset({"steps", "thresholds", "lr", "transforms", "preprocess", "input_size", "image_size",
                       "device", "precision", "redirect_relu", "layouts", "fold_batchnorm"})


def stackable(render_kwargs: Mapping[str, Any]) -> bool:
    """Whether a render with ``render_kwargs`` may stack several layers' images in one batch.

    >>> stackable({"steps": 96, "transforms": "standard"}), stackable({"stop_when": len})
    (True, False)
    """
    return set(render_kwargs) <= STACKABLE and isinstance(render_kwargs.get("transforms", "standard"), (str, type(None)))


def render_stacked(series: SeriesLike, parts: Mapping[str, ObjectiveLike], *, seed: int = 0,
                   progress: bool = True, **render_kwargs: Any) -> dict[str, SeriesResult]:
    """``{name: render_series(series, objective, seed=seed, **render_kwargs)}`` for each of ``parts``, computed as
    one render per checkpoint when :func:`stackable` (else one per part and checkpoint, as before).

    ``parts``: ``{name: objective}``; objective ``k`` gets the batch :func:`devvis.render` would give it alone
    (:func:`~devvis.render.discover.objective_batch`) and starts from the same images
    (``param.image(image_size, batch, seed=seed)``). Each part's results carry its own objective, layers and
    fields, and its share of the render time (by images). Parts whose layers are not declared (plain
    callables) are rendered apart. ``render_kwargs`` go to :func:`devvis.render`.
    """
    s = as_series(series)
    objs = {name: as_objective(o) for name, o in parts.items()}
    if len(objs) < 2 or not stackable(render_kwargs) or any(o.layers is None for o in objs.values()):
        return {name: render_series(s, o, seed=seed, progress=progress, **render_kwargs) for name, o in objs.items()}
    counts = [objective_batch(o) for o in objs.values()]
    whole = objectives.stacked([(o, n) for o, n in zip(objs.values(), counts)])
    image_size = render_kwargs.get("image_size", 128)
    results: dict[str, dict[int, Any]] = {name: {} for name in objs}
    t0 = time.perf_counter()
    for step, model in tqdm(s, total=len(s), disable=not progress, desc=f"series {len(objs)} stacked", unit="ckpt"):
        ch = model_input_channels(model)
        start = stack([default_param(image_size, n, seed, ch) for n in counts])
        res = render(model, whole, start, seed=seed, progress=False, **render_kwargs)
        offset = 0
        for (name, o), n in zip(objs.items(), counts):
            fields = {k: v for k, v in o.fields.items() if k != "batch"}
            layers = [resolve_name(model, x) for x in o.layers or ()]
            results[name][step] = res.rows(offset, offset + n, objective=o.description, layers=layers, fields=fields)
            offset += n
    total = time.perf_counter() - t0
    every = sum(counts)
    return {name: SeriesResult(results=results[name], objective=o.description, seed=seed, series=s.describe(),
                               time_s=total * n / every)
            for (name, o), n in zip(objs.items(), counts)}


def render_layers(series: SeriesLike, channels: Mapping[str, Sequence[int]], *, seed: int = 0,
                  progress: bool = True, **render_kwargs: Any) -> dict[str, SeriesResult]:
    """``{layer: render_series(series, objectives.channels(layer, chans), seed=seed, **render_kwargs)}``, the
    layers stacked in one render per checkpoint (:func:`render_stacked`).

    ``channels``: ``{layer: [c0, c1, ...]}``; image ``i`` of layer ``layer``'s result maximizes
    ``channels[layer][i]``.
    """
    return render_stacked(series, {layer: objectives.channels(layer, list(chans)) for layer, chans in channels.items()},
                          seed=seed, progress=progress, **render_kwargs)
