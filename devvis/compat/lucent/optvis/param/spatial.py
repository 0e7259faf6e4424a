"""Lucent's ``param.spatial``: ``pixel_image`` and ``fft_image`` on devvis's bases.

Each returns ``(params, image_f)``: the tensors to optimize and a callable (an
``nn.Module``) returning unconstrained ``(B, C, H, W)`` images. Tensors are
created on the CPU from torch's global random stream; ``render_vis`` moves them
to the model's device.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from devvis.param import FFTBasis, PixelBasis
from devvis.param import rfft2d_freqs as _freqs

__all__ = ["pixel_image", "fft_image", "rfft2d_freqs", "FreeTensor"]


class FreeTensor(nn.Module):
    """A free tensor of any shape: ``forward()`` returns the parameter itself."""

    def __init__(self, shape: Sequence[int], sd: float):
        super().__init__()
        self.pixels = nn.Parameter(torch.randn(*[int(s) for s in shape]) * sd)

    def forward(self) -> torch.Tensor:
        return self.pixels


def pixel_image(shape: Sequence[int], sd: float | None = None) -> tuple[list[torch.Tensor], PixelBasis | FreeTensor]:
    """One free value per entry, initialized ``N(0, sd)`` (``sd`` 0.01 by default).

    ``shape`` is an image batch ``(B, C, H, W)`` (a devvis :class:`~devvis.param.PixelBasis`)
    or, as in Lucent, any other shape (a :class:`FreeTensor`).

    >>> params, image_f = pixel_image([1, 3, 4, 5])
    >>> params[0] is image_f(), tuple(params[0].shape)
    (True, (1, 3, 4, 5))
    >>> tuple(pixel_image((1, 1))[1]().shape)
    (1, 1)
    """
    if len(shape) != 4:
        free = FreeTensor(shape, sd or 0.01)
        return [free.pixels], free
    b, c, h, w = shape
    basis = PixelBasis(b, c, h, w, sd=sd or 0.01)
    return [basis.pixels], basis


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitude of each entry of a real 2-D FFT of an ``h x w`` image: ``(h, w // 2 + 1)``.

    (Lucent kept one extra, never-used column for odd ``w``.)
    """
    return _freqs(h, w).numpy()


def fft_image(shape: Sequence[int], sd: float | None = None, decay_power: float = 1) -> tuple[list[torch.Tensor], FFTBasis]:
    """Fourier parameterization: a spectrum ``(B, C, H, W // 2 + 1, 2)`` (real, imaginary) scaled by ``1/f^decay_power``.

    ``image_f()`` returns the inverse real FFT (orthonormal) divided by 4, ``(B, C, H, W)``.

    >>> params, image_f = fft_image([2, 3, 8, 6])
    >>> tuple(params[0].shape), tuple(image_f().shape)
    ((2, 3, 8, 4, 2), (2, 3, 8, 6))
    """
    b, c, h, w = shape
    basis = FFTBasis(b, c, h, w, sd=sd or 0.01, decay_power=decay_power)
    return [basis.spectrum], basis
