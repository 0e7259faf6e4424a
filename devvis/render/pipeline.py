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
- ``"mean=0.5,0.5,0.5:std=0.5,0.5,0.5"``: the model's own normalisation (:class:`Normalize`; one
  value stands for every channel: ``"mean=0.5:std=0.5"`` maps [0, 1] to [-1, 1]);
- a callable ``(B, C, H, W) -> (B, C, H, W)``.

The parameterization's channels follow the model's first layer
(:func:`model_input_channels`: 1 for a grayscale model).

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
from devvis.transforms import Resize, composite as composite_alpha, get as get_transforms, sized
from devvis.transforms.preprocess import imagenet_normalize
from devvis.typing import PreprocessLike, TensorFn, TransformsLike

PREPROCESS_CHOICES = ("auto", "imagenet", "none")
#: Help text of a ``--preprocess`` flag (every command that has one).
PREPROCESS_HELP = ("input normalization: auto (the model's own default: none for devvis zoo models, trained on "
                   "[0, 1] images; imagenet otherwise), imagenet, none, or mean=M,M,M:std=S,S,S (e.g. "
                   "mean=0.5,0.5,0.5:std=0.5,0.5,0.5 for models trained on [-1, 1])")


class Normalize:
    """``(x - mean) / std`` per channel: a model's own input normalisation.

    Built from ``"mean=0.5,0.5,0.5:std=0.5,0.5,0.5"`` (:meth:`parse`); one value applies to
    every channel. Its ``repr`` is that spec, so records say which normalisation was used.

    >>> import torch
    >>> norm = Normalize.parse("mean=0.5:std=0.5")
    >>> norm(torch.ones(1, 1, 2, 2)).unique().tolist(), repr(norm)
    ([1.0], 'mean=0.5:std=0.5')
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        if not mean or len(mean) != len(std) and 1 not in (len(mean), len(std)):
            raise TransformError(f"normalization needs as many means as stds (or one of either); got mean={mean}, "
                                 f"std={std}")
        if any(not s > 0 for s in std):
            raise TransformError(f"normalization std must be > 0 in every channel; got std={std}")
        self.mean, self.std = tuple(mean), tuple(std)

    @classmethod
    def parse(cls, spec: str) -> "Normalize":
        """``"mean=M[,M...]:std=S[,S...]"`` -> :class:`Normalize`; :class:`TransformError` naming the spec."""
        parts = dict(p.partition("=")[::2] for p in spec.split(":"))
        try:
            mean = tuple(float(v) for v in parts.pop("mean").split(","))
            std = tuple(float(v) for v in parts.pop("std").split(","))
            if parts:
                raise KeyError(next(iter(parts)))
        except (KeyError, ValueError):
            raise TransformError(f"invalid preprocess {spec!r}; expected mean=M,M,M:std=S,S,S (one value per "
                                 "channel, or one for all), e.g. mean=0.5,0.5,0.5:std=0.5,0.5,0.5") from None
        return cls(mean, std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = max(len(self.mean), len(self.std))
        if n != 1 and x.shape[1] != n:
            raise TransformError(f"preprocess {self!r} has {n} channel values but the images have {x.shape[1]} "
                                 "channels; give one value per channel (or one for all)")
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(shape)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(shape)
        return (x - mean) / std

    def __repr__(self) -> str:
        return "mean=" + ",".join(f"{v:g}" for v in self.mean) + ":std=" + ",".join(f"{v:g}" for v in self.std)


def check_preprocess(spec: str) -> str:
    """``spec`` if it is a valid ``--preprocess`` value (a choice or ``mean=...:std=...``), else
    :class:`~devvis.errors.TransformError` naming the valid forms. Used as the flags' ``type``.

    >>> check_preprocess("imagenet"), check_preprocess("mean=0.5:std=0.5")
    ('imagenet', 'mean=0.5:std=0.5')
    """
    if spec in PREPROCESS_CHOICES:
        return spec
    if isinstance(spec, str) and spec.startswith("mean="):
        Normalize.parse(spec)
        return spec
    raise TransformError(f"unknown preprocess {spec!r}; valid: {', '.join(PREPROCESS_CHOICES)} or "
                         "mean=M,M,M:std=S,S,S")


def model_input_channels(model: nn.Module, default: int = 3) -> int:
    """Channels of the images ``model`` takes: its first convolution's ``in_channels`` (``default`` without one).

    >>> from torch import nn
    >>> model_input_channels(nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())), model_input_channels(nn.Linear(4, 2))
    (1, 3)
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Conv1d)):
            return int(module.in_channels)
    return default


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
    if isinstance(spec, str) and spec.startswith("mean="):
        return Normalize.parse(spec)
    raise TransformError(f"unknown preprocess {spec!r}; valid: {', '.join(map(repr, PREPROCESS_CHOICES))}, "
                         "'mean=M,M,M:std=S,S,S', None (identity) or a callable")


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

    Shape: ``(B, C, H, W)`` in [0, 1] -> ``(B, C, H', W')`` (``H', W'``: ``input_size`` if any). When
    the transforms end with a :class:`~devvis.transforms.Warp` (``"standard"``'s fused form), the
    warp itself outputs ``input_size`` (:func:`devvis.transforms.sized`): one interpolation, no resize.
    An ImageNet or ``mean=:std=`` preprocess (``preprocess_first``) runs before the resize, on the smaller
    image: a per-channel affine map commutes with bilinear resizing, so the values are those of the order
    above up to float rounding (~6e-7).
    """

    def __init__(self, model: nn.Module, *, transforms: TransformsLike = None, preprocess: PreprocessLike = "auto",
                 input_size: int | tuple[int, int] | None = None):
        self.input_size = resolve_input_size(model, input_size)
        # a warp that ends the transforms samples straight at the input size: the resize is then a no-op
        self.transforms = sized(get_transforms(transforms), self.input_size)
        self.resize = Resize(self.input_size) if self.input_size is not None else None
        self.preprocess_spec = auto_preprocess(preprocess, model)
        self.preprocess = resolve_preprocess(self.preprocess_spec)
        # a per-channel affine map commutes with bilinear resizing (its weights sum to one): it runs before
        # the resize, on the smaller image (a callable may be anything: it runs last)
        self.preprocess_first = self.preprocess_spec in ("imagenet", "none") or isinstance(self.preprocess_spec,
                                                                                           Normalize)
        self.channels = model_input_channels(model)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None, *,
                 channels_last: bool = False) -> torch.Tensor:
        """The model input for ``images``; ``channels_last=True`` (a render whose model runs channels-last on
        the CPU) makes the resize write that memory format directly: the same values, with a faster resize
        (ATen's channels-last kernel: 0.94 ms against 1.26 ms forward + backward, 150 -> 224 px) and no copy into the
        format afterwards."""
        x = self.transforms(images, generator=generator)
        if x.shape[1] == 4 and self.channels == 3:  # transparent images no transform composited: over grey
            x = composite_alpha(x)
        if self.preprocess_spec == "imagenet" and x.shape[1] != 3:
            raise TransformError(f"preprocess 'imagenet' normalizes 3 channels but the images have {x.shape[1]}; "
                                 "pass preprocess='mean=M:std=S' (CLI: --preprocess mean=M:std=S) or 'none'")
        resize = self.resize is not None and tuple(x.shape[-2:]) != self.resize.size
        if not resize:
            return self.preprocess(x)
        if self.preprocess_first:
            x = self.preprocess(x)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.resize(x)
        return x if self.preprocess_first else self.preprocess(x)
