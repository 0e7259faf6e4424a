"""Several objectives in one batch: :func:`stacked`, block ``k`` of the images scored by objective ``k``.

A render's cost per step on a small model is mostly fixed overhead (one forward and backward, the
transforms, the optimizer step), not work per image, so rendering the channels of three layers as
one batch of 12 costs far less than three batches of 4 (``benchmarks/profile_demo.py``). Images
do not interact (the model in eval mode, Adam per element, one transform draw shared by the batch
in either case), so block ``k`` of a stacked render follows the same path as a render of objective
``k`` alone from the same start.

>>> import torch
>>> from devvis import objectives
>>> from devvis.hooks import Activations
>>> obj = stacked([(objectives.channels("a", [1, 0]), 2), (objectives.channel("b", 2), 1)])
>>> acts = Activations({"a": torch.arange(12.0).view(3, 2, 2, 1), "b": torch.ones(3, 3, 1, 1)}, {})
>>> obj(acts).tolist(), sorted(obj.layers)
([2.5, 4.5, 1.0], ['a', 'b'])
"""

from __future__ import annotations

from typing import Sequence

import torch

from devvis.errors import ObjectiveError
from devvis.objectives.core import Acts, Objective, as_objective
from devvis.typing import ObjectiveLike


def _rows(acts: Acts, start: int, stop: int) -> Acts:
    """``acts`` with every tensor cut to images ``start:stop`` (views; layouts kept)."""
    from devvis.hooks import Activations

    tensors = {k: v[start:stop] for k, v in acts.items()}
    return Activations(tensors, getattr(acts, "layouts", None))


def stacked(parts: Sequence[tuple[ObjectiveLike, int]]) -> Objective:
    """Images ``offset_k .. offset_k + n_k - 1`` are scored by objective ``k`` alone (``parts``: ``(objective,
    n_k)`` pairs, ``offset_k`` the sum of the ``n`` before it): several renders as one batch of ``sum(n_k)``.

    Each objective reads only its own rows of every activation (and of ``acts["input"]``), so it sees
    exactly the batch it would see rendered alone; its values fill its block of the result ``(B,)``.
    The layers are the union of the parts'. Raises :class:`~devvis.errors.ObjectiveError` when the
    batch is not ``sum(n_k)`` images or a count is not positive.
    """
    objs = [(as_objective(o), int(n)) for o, n in parts]
    if not objs:
        raise ObjectiveError("stacked() needs at least one (objective, images) pair")
    if any(n < 1 for _, n in objs):
        raise ObjectiveError(f"stacked() needs a positive image count per objective, got {[n for _, n in objs]}")
    total = sum(n for _, n in objs)
    layers = None if any(o.layers is None for o, _ in objs) else frozenset().union(*(o.layers for o, _ in objs))

    def fn(acts: Acts) -> torch.Tensor:
        b = next(iter(acts.values())).shape[0] if len(acts) else 0
        if b != total:
            raise ObjectiveError(f"stacked objective of {len(objs)} parts needs a batch of {total} images, got {b}")
        values, start = [], 0
        for o, n in objs:
            v = o(_rows(acts, start, start + n))
            if v.shape[0] != n:
                raise ObjectiveError(f"objective {o.description!r} of a stacked objective returned {v.shape[0]} "
                                     f"values for its {n} images")
            values.append(v)
            start += n
        return torch.cat(values)

    description = "stacked[" + "; ".join(f"{o.description} x{n}" for o, n in objs) + "]"
    out = Objective(fn, layers, description)
    out.fields = {"objective_type": "stacked", "parts": [o.description for o, _ in objs],
                  "counts": [n for _, n in objs]}
    return out
