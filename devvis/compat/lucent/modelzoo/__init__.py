"""Lucent's ``lucent.modelzoo``: ``util.get_model_layers`` and torchvision's model builders.

Like Lucent's, this package hands out torchvision's builders (``modelzoo.resnet18(...)``
is ``torchvision.models.resnet18(...)``). Lucent's own ``inceptionv1`` (a port of Lucid's
TensorFlow GoogLeNet whose weights are downloaded) is not provided: asking for it raises
an ``AttributeError`` that says so and names torchvision's ``googlenet``.

>>> from devvis.compat.lucent.modelzoo import util
>>> from devvis.compat.lucent import modelzoo
>>> modelzoo.resnet18.__module__
'torchvision.models.resnet'
"""

from __future__ import annotations

from typing import Any

from devvis.compat.lucent.modelzoo import util

__all__ = ["util"]


def __getattr__(name: str) -> Any:
    if name == "inceptionv1":
        raise AttributeError("devvis.compat.lucent.modelzoo has no 'inceptionv1' (Lucent's port of Lucid's "
                             "GoogLeNet with downloaded weights); use torchvision.models.googlenet or your own model")
    import torchvision.models

    if name.startswith("_") or not hasattr(torchvision.models, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(torchvision.models, name)
