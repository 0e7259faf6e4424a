"""Lucent's ``param.image``: the default parameterization, a devvis :class:`~devvis.param.ImageParam`."""

from __future__ import annotations

import torch

from devvis.param import ImageParam
from devvis.param.spatial import FFTBasis, PixelBasis

__all__ = ["image"]


def image(w: int, h: int | None = None, sd: float | None = None, batch: int | None = None, decorrelate: bool = True,
          fft: bool = True, channels: int | None = None) -> tuple[list[torch.Tensor], ImageParam]:
    """``(params, image_f)`` with ``image_f() -> (batch, channels, h, w)`` in [0, 1].

    FFT basis (or pixels with ``fft=False``), decorrelated colour, sigmoid. As in
    Lucent, giving ``channels`` explicitly turns colour decorrelation off; ``h``
    defaults to ``w``, ``batch`` to 1, ``sd`` to 0.01.

    >>> params, image_f = image(16, 12, batch=2)
    >>> tuple(image_f().shape), tuple(params[0].shape)
    ((2, 3, 12, 16), (2, 3, 12, 9, 2))
    """
    h = h or w
    batch = batch or 1
    ch = channels or 3
    basis_cls = FFTBasis if fft else PixelBasis
    basis = basis_cls(batch, ch, h, w, sd=sd or 0.01)
    module = ImageParam(basis, ch, decorrelate=False if channels else decorrelate)
    return list(module.parameters()), module
