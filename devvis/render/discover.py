"""What an objective needs from the model: the layers it reads, and the batch it implies.

An :class:`~devvis.objectives.Objective` built with ``wrap_objective`` knows its layers;
a plain callable ``acts -> Tensor[B]`` does not, so :func:`discover_layers` runs one
forward pass recording every module and watches which names the function reads.
``render`` and ``objectives.evaluate`` both resolve layers through :func:`objective_layers`.

>>> import torch
>>> from torch import nn
>>> from devvis.objectives import as_objective
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
>>> obj = as_objective(lambda acts: acts["1"][:, 0].mean((1, 2)))
>>> x = torch.rand(1, 3, 8, 8)
>>> discover_layers(net, obj, x, x)
['1']
"""

from __future__ import annotations

import torch
from torch import nn

from devvis.errors import ObjectiveError
from devvis.hooks import INPUT, ActivationRecorder, Activations, module_names, resolve_name
from devvis.objectives.core import Objective


class _Tracing(Activations):
    """Activations that note every name read from them (in ``accessed``, in order)."""

    def __init__(self, acts: Activations, accessed: list[str]):
        super().__init__(dict(acts.items()), acts.layouts)
        self.accessed = accessed

    def __getitem__(self, name: str) -> torch.Tensor:
        t = super().__getitem__(name)
        self.accessed.append(self.key(name))
        return t


def discover_layers(model: nn.Module, objective: Objective, x: torch.Tensor, image: torch.Tensor) -> list[str]:
    """The layer names a plain-callable objective reads, in the order it reads them.

    Args:
        model: the model, in the mode it will be used in.
        objective: an :class:`~devvis.objectives.Objective` (its ``fn`` is called once, without gradient).
        x: the model input ``(B, C, H, W)`` (after transforms, resize and preprocessing).
        image: the image before the model-input pipeline, ``(B, C, H, W)`` in [0, 1]
            (what ``acts["input"]`` holds).

    Raises :class:`~devvis.errors.ObjectiveError` when the function fails on real activations.
    """
    accessed: list[str] = []
    with ActivationRecorder(model, module_names(model), stop_early=False, detach=True) as rec:
        with torch.no_grad():
            acts = rec.run(x, **{INPUT: image})
    try:
        with torch.no_grad():
            objective.fn(_Tracing(acts, accessed))
    except Exception as e:  # the user's function failed on real activations; report it
        raise ObjectiveError(
            f"objective {objective.description!r} failed while finding its layers: {type(e).__name__}: {e}") from e
    return list(dict.fromkeys(accessed))


def objective_layers(model: nn.Module, objective: Objective, x: torch.Tensor, image: torch.Tensor) -> list[str]:
    """The model's own names of the layers ``objective`` reads (declared, else discovered).

    ``x`` and ``image`` are as for :func:`discover_layers`; they are used only when the
    objective does not declare its layers.
    """
    if objective.layers is None:
        return discover_layers(model, objective, x, image)
    return [resolve_name(model, n) for n in objective.layers]


def objective_batch(objective: Objective) -> int:
    """Batch size the objective implies: ``channels(layer, [c0, c1, ...])`` needs one image per channel, else 1.

    >>> from devvis import objectives
    >>> objective_batch(objectives.channels("layer1", [0, 4, 7])), objective_batch(objectives.channel("layer1", 0))
    (3, 1)
    >>> objective_batch(objectives.stacked([(objectives.channels("layer1", [0, 4]), 2), ("layer2:1", 1)]))
    3
    """
    if objective.fields.get("objective_type") == "stacked":  # objectives.stacked: the sum of its blocks
        return sum(int(n) for n in objective.fields["counts"])
    terms = getattr(objective, "terms", [(1.0, objective)])
    for _, o in terms:
        chans = o.fields.get("channels") if o.fields.get("objective_type") == "channels" else None
        if chans:
            return len(chans)
    return 1
