"""What the model sees: ``image -> transforms -> resize -> preprocess``.

One pipeline for every place devvis feeds images to a model: ``render`` (with
random transforms), ``objectives.evaluate``, circuits' influence and the
longitudinal activations (without). The preprocessing rule lives here alone:

- ``"auto"`` (the default everywhere): the model's own default, which the model
  registry stores on models it builds as ``model.devvis_cfg["preprocess"]``
  (``"none"`` for devvis zoo models, trained on raw [0, 1] images); ``"imagenet"``
  for any other model;
- ``"imagenet"``: ImageNet mean/std normalisation;
- ``"none"`` or ``None``: identity (the images as given);
- a callable ``(B, C, H, W) -> (B, C, H, W)``.

>>> import torch, torchvision
>>> from devvis.render.pipeline import ModelInput
>>> m = torchvision.models.vit_b_16(weights=None)
>>> tuple(ModelInput(m)(torch.rand(2, 3, 64, 64)).shape)   # ViT's fixed 224-px input
(2, 3, 224, 224)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from devvis.architectures import resolve_input_size
from devvis.errors import TransformError
from devvis.transforms import Resize, get as get_transforms
from devvis.transforms.preprocess import imagenet_normalize
from devvis.typing import PreprocessLike, TensorFn, TransformsLike

PREPROCESS_CHOICES = ("auto", "imagenet", "none")


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def auto_preprocess(spec: PreprocessLike, model: nn.Module | None = None) -> str | TensorFn:
    """``spec`` with ``"auto"`` replaced by the model's own default: ``"imagenet"``, ``"none"`` or a callable.

    >>> from torch import nn
    >>> auto_preprocess("auto", nn.Conv2d(3, 3, 1)), auto_preprocess(None)
    ('imagenet', 'none')
    """
    if spec == "auto":
        cfg: Any = getattr(model, "devvis_cfg", None) or {}
        spec = cfg.get("preprocess", "imagenet")
    if spec is None or spec == "none":
        return "none"
    if spec == "imagenet" or callable(spec):
        return spec
    raise TransformError(f"unknown preprocess {spec!r}; valid: {', '.join(map(repr, PREPROCESS_CHOICES))}, "
                         "None (identity) or a callable")


def resolve_preprocess(spec: PreprocessLike, model: nn.Module | None = None) -> TensorFn:
    """The preprocessing function ``spec`` means for ``model`` (see the module doc for the rule).

    >>> import torch
    >>> from torch import nn
    >>> resolve_preprocess(None)(torch.ones(1, 3, 2, 2)).mean().item()
    1.0
    >>> round(resolve_preprocess("auto", nn.Conv2d(3, 3, 1))(torch.ones(1, 3, 2, 2))[0, 0, 0, 0].item(), 3)
    2.249
    """
    spec = auto_preprocess(spec, model)
    if spec == "none":
        return _identity
    if spec == "imagenet":
        return imagenet_normalize
    return spec  # a callable


class ModelInput:
    """``images (B, C, H, W) in [0, 1] -> model input``: transforms, resize, preprocess.

    Args:
        model: the model the input is for (its fixed input size and default preprocessing).
        transforms: ``None`` (no transforms: evaluation, analyses), ``"standard"``, a
            callable or a list (see :func:`devvis.transforms.get`).
        preprocess: see :func:`resolve_preprocess`; ``"auto"`` by default.
        input_size: resize the transformed image to this size; ``None``: the model's
            fixed size if it has one (ViT: 224), else no resize.

    Call with ``generator=`` (a ``torch.Generator``) for seeded random transforms. Attributes:
    ``transforms``, ``input_size`` (resolved), ``resize``, ``preprocess_spec`` (``"auto"``
    resolved: ``"imagenet"``, ``"none"`` or the callable) and ``preprocess`` (the function).

    Shape: ``(B, C, H, W)`` in [0, 1] -> ``(B, C, H', W')`` (``H', W'``: ``input_size`` if any).
    """

    def __init__(self, model: nn.Module, *, transforms: TransformsLike = None, preprocess: PreprocessLike = "auto",
                 input_size: int | tuple[int, int] | None = None):
        self.transforms = get_transforms(transforms)
        self.input_size = resolve_input_size(model, input_size)
        self.resize = Resize(self.input_size) if self.input_size is not None else None
        self.preprocess_spec = auto_preprocess(preprocess, model)
        self.preprocess = resolve_preprocess(self.preprocess_spec)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.transforms(images, generator=generator)
        if self.resize is not None:
            x = self.resize(x)
        return self.preprocess(x)
