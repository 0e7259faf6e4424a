"""Spatial bases: pixels, Fourier spectrum (FFT), Laplacian pyramid, magnitude-constrained spectrum.

Each module here returns *unconstrained* values ``(B, C, H, W)``; :class:`ImageParam`
(in ``devvis.param.image``) adds colour decorrelation and the squash to [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _randn(shape: tuple[int, ...], sd: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * sd


class PixelBasis(nn.Module):
    """One free parameter per pixel."""

    def __init__(self, batch: int, channels: int, h: int, w: int, sd: float = 0.01,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.pixels = nn.Parameter(_randn((batch, channels, h, w), sd, generator))

    def forward(self) -> torch.Tensor:
        return self.pixels


def rfft2d_freqs(h: int, w: int) -> torch.Tensor:
    """Frequency magnitude of each entry of an ``rfft2`` of an ``h x w`` image: ``(h, w//2+1)``."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FFTBasis(nn.Module):
    """Fourier parameterization: a spectrum ``(B, C, H, W//2+1, 2)`` scaled by ``1/f^decay_power``.

    Scaling by the inverse frequency makes every frequency equally easy to change,
    which counters the high-frequency bias of gradients (Lucid's ``fft_image``).
    """

    def __init__(self, batch: int, channels: int, h: int, w: int, sd: float = 0.01, decay_power: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.h, self.w = h, w
        freqs = rfft2d_freqs(h, w)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power
        self.register_buffer("scale", scale[None, None, :, :, None], persistent=False)
        # Lucid's "magic" constant 4 (keeps the initial image's range similar to the pixel basis),
        # folded into the scale: one multiplication of the spectrum instead of a second pass over
        # the image (dividing by 4 is exact in floating point, so the images are bit for bit the same)
        self.register_buffer("_scale_4", scale[None, None, :, :, None] / 4.0, persistent=False)
        self.spectrum = nn.Parameter(_randn((batch, channels, h, w // 2 + 1, 2), sd, generator))
        self.decay_power = decay_power

    def forward(self) -> torch.Tensor:
        s = torch.view_as_complex(self._scale_4 * self.spectrum)
        return torch.fft.irfft2(s, s=(self.h, self.w), norm="ortho")


class LaplacianPyramidBasis(nn.Module):
    """Sum of ``levels`` tensors at resolutions ``H/2^k``, each upsampled to ``H x W``.

    Coarse levels move large areas at once, fine ones add detail.
    """

    def __init__(self, batch: int, channels: int, h: int, w: int, sd: float = 0.01, levels: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.h, self.w = h, w
        levels = levels or max(1, int(math.log2(min(h, w))) - 1)
        self.levels = nn.ParameterList([
            nn.Parameter(_randn((batch, channels, max(1, h // 2 ** k), max(1, w // 2 ** k)), sd, generator))
            for k in range(levels)
        ])

    def forward(self) -> torch.Tensor:
        out = None
        for p in self.levels:
            up = p if tuple(p.shape[-2:]) == (self.h, self.w) else F.interpolate(
                p, size=(self.h, self.w), mode="bilinear", align_corners=False)
            out = up if out is None else out + up
        assert out is not None
        return out


class MagnitudeConstrainedBasis(nn.Module):
    """MACO-style spectrum: a fixed ``1/f^decay_power`` magnitude, only the phase is optimized.

    Fixing the magnitude keeps the image's power spectrum natural; the phase
    decides where structure goes (Fel et al., 2023, with a power-law magnitude
    since no natural-image statistics are downloaded here).
    """

    def __init__(self, batch: int, channels: int, h: int, w: int, sd: float = 0.01, decay_power: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.h, self.w = h, w
        freqs = rfft2d_freqs(h, w)
        mag = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power
        mag = mag / mag.norm() * math.sqrt(h * w) * 0.5
        self.register_buffer("magnitude", mag[None, None], persistent=False)
        self.phase = nn.Parameter(torch.rand((batch, channels, h, w // 2 + 1), generator=generator) * 2 * math.pi - math.pi)

    def forward(self) -> torch.Tensor:
        spec = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        img = torch.fft.irfft2(spec, s=(self.h, self.w), norm="ortho")
        if self.h * self.w == 1:  # one pixel has no spread to normalize by (its std would be NaN)
            return img
        return img / (img.std(dim=(-2, -1), keepdim=True) + 1e-6)
