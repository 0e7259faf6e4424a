"""Image parameterizations: ``nn.Module``s whose ``forward()`` returns images ``(B, C, H, W)`` in [0, 1].

>>> from devvis import param
>>> param.image(64, seed=0)().shape
torch.Size([1, 3, 64, 64])
"""

from devvis.param.color import COLOR_CORRELATION_NORMALIZED, COLOR_CORRELATION_SVD_SQRT, ToRGB
from devvis.param.cppn import CPPN
from devvis.param.image import ImageParam, cppn, fft, image, laplacian, maco, pixel, stack
from devvis.param.seeded import from_image
from devvis.param.spatial import FFTBasis, LaplacianPyramidBasis, MagnitudeConstrainedBasis, PixelBasis, rfft2d_freqs

__all__ = [
    "image", "stack", "pixel", "fft", "laplacian", "maco", "cppn", "from_image", "ImageParam", "CPPN", "ToRGB", "PixelBasis", "FFTBasis",
    "LaplacianPyramidBasis", "MagnitudeConstrainedBasis", "rfft2d_freqs", "COLOR_CORRELATION_SVD_SQRT",
    "COLOR_CORRELATION_NORMALIZED",
]
