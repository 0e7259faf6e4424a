"""A parameterization that starts at given images: ``param.from_image`` (feature accentuation's seed).

Hamblin et al. (2024, "Feature Accentuation") visualize what a unit responds to *in a given
natural image*: the optimization starts from that image instead of noise. Here the image is
written into the usual bases exactly: the sigmoid is inverted (logit), then the colour
decorrelation (the inverse matrix), then the Fourier scaling (``rfft2`` divided by the
``1/f`` scale), so ``from_image(x)()`` returns ``x`` (up to the clipping below) and the
optimization moves the same parameters ``param.image`` would.

>>> import torch
>>> x = torch.rand(2, 3, 16, 12) * 0.9 + 0.05
>>> p = from_image(x)
>>> float((p().detach() - x).abs().max()) < 1e-4
True
"""

from __future__ import annotations

import torch

from devvis.errors import ParameterizationError
from devvis.param.color import ToRGB
from devvis.param.image import ImageParam
from devvis.param.spatial import FFTBasis, PixelBasis

__all__ = ["from_image", "SEED_EPS"]

#: Seed values are clipped to [SEED_EPS, 1 - SEED_EPS] before the logit (0 and 1 have none).
SEED_EPS = 0.01


def _logit(images: torch.Tensor) -> torch.Tensor:
    x = images.clamp(SEED_EPS, 1 - SEED_EPS)
    return torch.log(x) - torch.log1p(-x)


def from_image(images: torch.Tensor, *, fft: bool = True, decorrelate: bool = True,
               decay_power: float = 1.0) -> ImageParam:
    """An :class:`~devvis.param.ImageParam` whose first image is ``images``.

    ``images``: ``(B, C, H, W)`` (or one ``(C, H, W)``) in [0, 1]; 3 channels are RGB (decorrelated
    when ``decorrelate``), 4 channels RGBA (alpha as given). Values are clipped to
    ``[0.01, 0.99]`` first (the sigmoid never reaches 0 or 1), so the start differs from the seed
    by at most 0.01 per value. ``fft``/``decay_power`` choose the basis as in :func:`param.image`.

    >>> import torch
    >>> from devvis import param
    >>> seed = torch.full((1, 3, 8, 8), 0.3)
    >>> p = param.from_image(seed, fft=False)
    >>> round(float(p().detach().mean()), 4), sum(t.numel() for t in p.parameters())
    (0.3, 192)
    """
    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4):
        raise ParameterizationError(f"from_image needs a (B, C, H, W) or (C, H, W) tensor in [0, 1], got "
                                    f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
    x = (images[None] if images.dim() == 3 else images).detach().float().cpu()
    b, c, h, w = x.shape
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ParameterizationError(f"from_image needs finite values in [0, 1]; got range "
                                    f"[{float(x.min()):.3g}, {float(x.max()):.3g}]")
    alpha = c == 4
    to_rgb = ToRGB(c, decorrelate, alpha=alpha)
    u = _logit(x)
    if to_rgb.decorrelate:
        inv = torch.linalg.inv(to_rgb.matrix.double()).float()
        rgb = torch.einsum("bchw,rc->brhw", u[:, :3], inv)
        u = torch.cat([rgb, u[:, 3:]], dim=1)
    if fft:
        basis = FFTBasis(b, c, h, w, sd=0.0, decay_power=decay_power)
        spectrum = torch.fft.rfft2(u * 4.0, norm="ortho") / basis.scale[..., 0]
        with torch.no_grad():
            basis.spectrum.copy_(torch.view_as_real(spectrum))
    else:
        basis = PixelBasis(b, c, h, w, sd=0.0)
        with torch.no_grad():
            basis.pixels.copy_(u)
    return ImageParam(basis, c, decorrelate, alpha=alpha)
