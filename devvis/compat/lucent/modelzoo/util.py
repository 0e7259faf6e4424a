"""Lucent's ``lucent.modelzoo.util``: :func:`get_model_layers`."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

__all__ = ["get_model_layers"]


def get_model_layers(model: nn.Module, getLayerRepr: bool = False) -> list[str] | "OrderedDict[str, str]":  # noqa: N803
    """Every submodule's name in Lucent's underscore form (``layer2_1_conv1``), parents before children.

    With ``getLayerRepr=True``, an ``OrderedDict`` name -> ``repr(module)`` instead of a list.
    A module reachable under two names is listed under both, ``None`` entries (GoogLeNet's
    missing aux heads) are skipped, the model itself is not listed. These are the names
    Lucent's objectives (and :mod:`devvis.compat.lucent.optvis.objectives`) accept.

    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 1)))
    >>> get_model_layers(m)
    ['0', '1', '1_0', '1_1']
    >>> list(get_model_layers(m, getLayerRepr=True).items())[0]
    ('0', 'Conv2d(3, 4, kernel_size=(1, 1), stride=(1, 1))')
    """
    names = [(name.replace(".", "_"), module)
             for name, module in model.named_modules(remove_duplicate=False) if name]
    if getLayerRepr:
        return OrderedDict((name, repr(module)) for name, module in names)
    return [name for name, _ in names]
