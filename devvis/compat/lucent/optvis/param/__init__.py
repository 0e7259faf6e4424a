"""Lucent's ``param`` package: image parameterizations returning ``(params, image_f)``.

``params`` are the tensors an optimizer moves; ``image_f()`` returns the image
``(B, C, H, W)`` (an ``nn.Module``, so it also moves with ``.to(device)``). Built
on devvis's bases; the submodules mirror Lucent's (``param.spatial``,
``param.color``, ``param.cppn``, ``param.lowres``, ``param.images``).
Lucent's ``upconvGAN`` (which downloads weights) is not provided.

>>> from devvis.compat.lucent import param
>>> params, image_f = param.image(32, batch=2)
>>> tuple(image_f().shape)
(2, 3, 32, 32)
"""

from devvis.compat.lucent.optvis.param.color import (
    color_correlation_normalized,
    color_correlation_svd_sqrt,
    color_mean,
    max_norm_svd_sqrt,
    to_valid_rgb,
)
from devvis.compat.lucent.optvis.param.cppn import CompositeActivation, cppn
from devvis.compat.lucent.optvis.param.images import image
from devvis.compat.lucent.optvis.param.lowres import lowres_tensor
from devvis.compat.lucent.optvis.param.spatial import fft_image, pixel_image, rfft2d_freqs

__all__ = [
    "image", "pixel_image", "fft_image", "rfft2d_freqs", "cppn", "CompositeActivation", "lowres_tensor",
    "to_valid_rgb", "color_correlation_svd_sqrt", "max_norm_svd_sqrt", "color_correlation_normalized", "color_mean",
]
