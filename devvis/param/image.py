"""The default image parameterization and its factory ``param.image``."""

from __future__ import annotations

import copy
from typing import Literal, Sequence

import torch
from torch import nn

from devvis.errors import ParameterizationError
from devvis.param.color import ToRGB
from devvis.param.cppn import CPPN
from devvis.param.spatial import FFTBasis, LaplacianPyramidBasis, MagnitudeConstrainedBasis, PixelBasis

Basis = Literal["fft", "pixel", "laplacian", "maco"]
_BASES = {"fft": FFTBasis, "pixel": PixelBasis, "laplacian": LaplacianPyramidBasis, "maco": MagnitudeConstrainedBasis}


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(int(seed))


def _check(w: int, h: int, batch: int, channels: int) -> None:
    for name, v in (("width", w), ("height", h), ("batch", batch), ("channels", channels)):
        if not isinstance(v, int) or v < 1:
            raise ParameterizationError(f"image {name} must be a positive integer, got {v!r}")


class ImageParam(nn.Module):
    """A spatial basis followed by colour decorrelation and a squash to [0, 1].

    ``forward()`` returns ``(B, C, H, W)`` float images in [0, 1]; the optimizer
    moves ``parameters()`` (those of the basis only).
    """

    def __init__(self, basis: nn.Module, channels: int = 3, decorrelate: bool = True, sigmoid: bool = True,
                 alpha: bool = False):
        super().__init__()
        self.basis = basis
        self.alpha = bool(alpha)
        self.to_rgb = ToRGB(channels, decorrelate, sigmoid, alpha=alpha)

    def forward(self) -> torch.Tensor:
        return self.to_rgb(self.basis())


def image(w: int, h: int | None = None, *, batch: int = 1, fft: bool = True, decorrelate: bool = True,
          sd: float = 0.01, channels: int = 3, seed: int | None = None, decay_power: float = 1.0,
          basis: Basis | None = None, alpha: bool = False) -> ImageParam:
    """The default parameterization: FFT basis, decorrelated colour, sigmoid.

    ``w`` x ``h`` (``h`` defaults to ``w``), ``batch`` images of ``channels``
    channels. ``basis`` overrides ``fft``: ``"fft"``, ``"pixel"``, ``"laplacian"``
    or ``"maco"``. The same ``seed`` gives the same initial image.

    ``alpha=True`` adds an opacity channel: images are ``(B, 4, H, W)`` RGBA in [0, 1]
    (RGB decorrelated as usual, alpha not), starting half transparent (Lucid's transparent
    visualizations). Before the model, a transform composites them over a background
    (:func:`devvis.transforms.collapse_alpha_random` in ``transforms.standard(alpha=True)``);
    alpha-aware priors are ``objectives.alpha_mean`` and ``objectives.alpha_total_variation``.

    >>> from devvis import param
    >>> p = param.image(32, 24, batch=2, seed=0)
    >>> img = p(); tuple(img.shape), bool(img.min() >= 0 and img.max() <= 1)
    ((2, 3, 24, 32), True)
    >>> torch.equal(img, param.image(32, 24, batch=2, seed=0)())
    True
    >>> tuple(param.image(16, alpha=True, seed=0)().shape)
    (1, 4, 16, 16)
    """
    h = w if h is None else h
    if alpha and channels != 3:
        raise ParameterizationError(f"alpha=True adds an opacity channel to RGB (channels=3), got channels={channels!r}")
    channels = 4 if alpha else channels
    _check(w, h, batch, channels)
    name = basis or ("fft" if fft else "pixel")
    if name not in _BASES:
        raise ParameterizationError(f"unknown basis {name!r}; valid: {sorted(_BASES)}")
    g = _generator(seed)
    kwargs = {"sd": sd, "generator": g}
    if name in ("fft", "maco"):
        kwargs["decay_power"] = decay_power
    b = _BASES[name](batch, channels, h, w, **kwargs)
    return ImageParam(b, channels, decorrelate, alpha=alpha)


def stack(params: Sequence[ImageParam]) -> ImageParam:
    """One :class:`ImageParam` whose images are those of ``params`` one after another (batch ``sum(B_k)``).

    Every trainable tensor of the basis is concatenated along the batch (its first dimension), so
    image ``offset_k + i`` starts exactly as image ``i`` of ``params[k]``: the start of a stacked render
    (:func:`devvis.objectives.stacked`) is each part's own start. The parts must share the basis type,
    the image size and the colour settings; the given modules are not changed.

    >>> from devvis import param
    >>> a, b = param.image(8, batch=2, seed=0), param.image(8, batch=1, seed=3)
    >>> s = stack([a, b])
    >>> tuple(s().shape), torch.equal(s()[:2], a()), torch.equal(s()[2:], b())
    ((3, 3, 8, 8), True, True)
    """
    parts = list(params)
    if not parts or not all(isinstance(p, ImageParam) for p in parts):
        raise ParameterizationError("stack() needs one or more ImageParam parameterizations (param.image, "
                                    f"param.pixel, ...); got {[type(p).__name__ for p in parts]}")
    first = parts[0]
    shapes = [[(n, tuple(t.shape[1:])) for n, t in p.named_parameters()] for p in parts]
    same = all(type(p.basis) is type(first.basis) and shapes[k] == shapes[0] and p.alpha == first.alpha
               and p.to_rgb.extra_repr() == first.to_rgb.extra_repr() for k, p in enumerate(parts))
    if not same:
        raise ParameterizationError("stack() needs parameterizations of the same basis, image size and colour "
                                    f"settings; got {[type(p.basis).__name__ for p in parts]} with shapes {shapes}")
    out = copy.deepcopy(first)
    for name, _ in first.named_parameters():
        owner, _, leaf = name.rpartition(".")
        joined = torch.cat([p.get_parameter(name).detach() for p in parts])
        setattr(out.get_submodule(owner), leaf,
                nn.Parameter(joined.clone(), requires_grad=first.get_parameter(name).requires_grad))
    return out


def pixel(w: int, h: int | None = None, *, batch: int = 1, sd: float = 0.01, channels: int = 3,
          decorrelate: bool = True, seed: int | None = None) -> ImageParam:
    """Pixel basis (see :func:`image`)."""
    return image(w, h, batch=batch, fft=False, decorrelate=decorrelate, sd=sd, channels=channels, seed=seed)


def fft(w: int, h: int | None = None, *, batch: int = 1, sd: float = 0.01, channels: int = 3, decorrelate: bool = True,
        decay_power: float = 1.0, seed: int | None = None) -> ImageParam:
    """FFT basis with ``1/f^decay_power`` scaling (see :func:`image`)."""
    return image(w, h, batch=batch, fft=True, decorrelate=decorrelate, sd=sd, channels=channels, seed=seed,
                 decay_power=decay_power)


def laplacian(w: int, h: int | None = None, *, batch: int = 1, sd: float = 0.01, channels: int = 3,
              decorrelate: bool = True, levels: int | None = None, seed: int | None = None) -> ImageParam:
    """Laplacian-pyramid basis (see :class:`~devvis.param.spatial.LaplacianPyramidBasis`)."""
    h = w if h is None else h
    _check(w, h, batch, channels)
    return ImageParam(LaplacianPyramidBasis(batch, channels, h, w, sd, levels, _generator(seed)), channels, decorrelate)


def maco(w: int, h: int | None = None, *, batch: int = 1, channels: int = 3, decorrelate: bool = True,
         decay_power: float = 1.0, seed: int | None = None) -> ImageParam:
    """Magnitude-constrained spectrum, phase optimized (see :class:`~devvis.param.spatial.MagnitudeConstrainedBasis`)."""
    return image(w, h, batch=batch, channels=channels, decorrelate=decorrelate, seed=seed, decay_power=decay_power,
                 basis="maco")


def cppn(w: int, h: int | None = None, *, batch: int = 1, channels: int = 3, num_hidden_channels: int = 24,
         num_layers: int = 8, seed: int | None = None) -> CPPN:
    """A batched CPPN (see :class:`~devvis.param.cppn.CPPN`); use a lower learning rate (~0.005)."""
    h = w if h is None else h
    _check(w, h, batch, channels)
    return CPPN(batch, channels, h, w, num_hidden_channels=num_hidden_channels, num_layers=num_layers,
                generator=_generator(seed))
