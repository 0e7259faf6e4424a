"""What devvis knows about common vision architectures: input sizes, and the families it covers.

Two questions every render asks of a model:

* Does it need one fixed input size? torchvision's ``VisionTransformer`` only
  accepts ``model.image_size`` pixels (224 for ``vit_b_16``), and timm-style
  models with a strict patch embedding only accept ``patch_embed.img_size``.
  :func:`resolve_input_size` turns ``input_size=None`` into that size, so
  ``render`` (and :func:`devvis.objectives.evaluate`) resize the transformed
  image to it; an explicit ``input_size`` always wins.
* Is the image large enough? Some networks shrink their maps below one pixel
  on small inputs (``inception_v3`` needs 75 px for a whole forward pass).
  Because a render stops the forward pass after the last layer it needs,
  shallow layers of those networks work on smaller images, so devvis does not
  upscale silently: when the forward pass fails on a too-small input,
  :func:`input_errors` turns the failure into a :class:`~devvis.errors.ConfigError`
  naming the input size, the model's minimum and the fix.

>>> import torchvision
>>> resolve_input_size(torchvision.models.vit_b_16(weights=None), None)
(224, 224)
>>> resolve_input_size(torchvision.models.resnet18(weights=None), None) is None
True
>>> resolve_input_size(torchvision.models.resnet18(weights=None), 96)
96
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from devvis.errors import ConfigError

__all__ = ["FAMILIES", "Family", "MIN_INPUT_SIZES", "fixed_input_size", "input_errors", "min_input_size",
           "resolve_input_size"]

#: Smallest square input (pixels) for which the *whole* forward pass of these
#: torchvision classes runs (measured with torch 2.x; smaller inputs make a
#: pooling or convolution kernel larger than its map). Shallow layers work below it.
MIN_INPUT_SIZES: dict[str, int] = {
    "Inception3": 75,
    "AlexNet": 63,
    "VGG": 32,
    "ConvNeXt": 32,
    "GoogLeNet": 16,
}

# Messages of the errors torch raises when a map becomes smaller than a kernel,
# and of torchvision's ViT size assertion.
_SIZE_ERRORS = re.compile(
    r"Output size is too small|Kernel size can't be greater than actual input size|"
    r"Wrong image (?:height|width)|Input image size .* doesn't match model|"
    r"non-positive output size|smaller than kernel",
    re.IGNORECASE,
)


def fixed_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The one input size ``(h, w)`` the model accepts, or None when it accepts many.

    A model built by :func:`devvis.models.load_model` (or a registered builder) says so in
    ``model.devvis_cfg["input_size"]``; otherwise the architecture is inspected. Known:
    torchvision's ``VisionTransformer`` (``model.image_size``) and timm-style models whose
    ``patch_embed`` has an ``img_size`` and ``strict_img_size=True`` (and no
    ``dynamic_img_size``). torchvision's Swin pads its windows and accepts any size, so it has none.

    >>> import torchvision
    >>> fixed_input_size(torchvision.models.vit_b_16(weights=None))
    (224, 224)
    """
    cfg = getattr(model, "devvis_cfg", None)
    declared = cfg.get("input_size") if isinstance(cfg, dict) else None
    if isinstance(declared, (tuple, list)) and len(declared) == 2:
        return (int(declared[0]), int(declared[1]))
    size = getattr(model, "image_size", None)
    if type(model).__name__ == "VisionTransformer" and isinstance(size, int):
        return (size, size)
    pe = getattr(model, "patch_embed", None)
    if isinstance(pe, nn.Module) and getattr(pe, "strict_img_size", False) and not getattr(pe, "dynamic_img_size", False):
        img = getattr(pe, "img_size", None)
        if isinstance(img, int):
            return (img, img)
        if isinstance(img, (tuple, list)) and len(img) == 2:
            return (int(img[0]), int(img[1]))
    return None


def min_input_size(model: nn.Module) -> int | None:
    """The smallest square input (pixels) the model's whole forward pass accepts, when known."""
    fixed = fixed_input_size(model)
    if fixed is not None:
        return min(fixed)
    return MIN_INPUT_SIZES.get(type(model).__name__)


def resolve_input_size(model: nn.Module, input_size: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
    """The size to resize the transformed image to: ``input_size`` if given, else the model's fixed size.

    Returns None (no resize) for models that take any size and no explicit size.
    """
    if input_size is not None:
        return input_size
    return fixed_input_size(model)


def _describe(model: nn.Module) -> str:
    return type(model).__name__


@contextlib.contextmanager
def input_errors(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """Turn a forward-pass failure caused by the input's size into a :class:`ConfigError`.

    ``x`` is the model input ``(B, C, H, W)``. Other errors pass through unchanged.
    """
    try:
        yield
    except (RuntimeError, AssertionError, ValueError) as e:
        msg = str(e)
        if not _SIZE_ERRORS.search(msg) or x.dim() != 4:
            raise
        h, w = int(x.shape[-2]), int(x.shape[-1])
        fixed = fixed_input_size(model)
        if fixed is not None:
            need = f"exactly {fixed[0]}x{fixed[1]} px (it cannot take other sizes)"
            fix = f"leave input_size=None (devvis then resizes to {fixed[0]}) or pass input_size={fixed[0]}"
        else:
            least = min_input_size(model)
            need = f"at least {least}x{least} px for its whole forward pass" if least else "a larger input"
            fix = (f"pass input_size={least} (the image is resized to it after the transforms) "
                   f"or a larger image_size" if least else "pass a larger input_size or image_size")
        raise ConfigError(f"a {h}x{w} px model input (the image after transforms and resize) does not fit "
                          f"{_describe(model)}, which needs {need}; {fix} "
                          f"(torch said: {msg.splitlines()[0][:160]})") from e


@dataclass(frozen=True)
class Family:
    """One covered architecture family: a torchvision name, a shallow layer to render, its layout."""

    family: str
    model: str
    layer: str
    layout: str
    note: str = ""

    def build(self, num_classes: int = 10, seed: int | None = 0) -> nn.Module:
        """The torchvision model with random weights (never downloads), seeded, in eval mode."""
        import torchvision

        if seed is not None:
            torch.manual_seed(seed)
        # torchvision's own init of GoogLeNet/Inception draws truncated normals through scipy,
        # which takes seconds; PyTorch's default init is as good for random-weight renders.
        kw = {"init_weights": False} if self.model in ("googlenet", "inception_v3") else {}
        return torchvision.models.get_model(self.model, weights=None, num_classes=num_classes, **kw).eval()


#: The families devvis is tested on (``tests/test_architectures.py`` renders a channel of ``layer``
#: on each, with random weights). ``layout`` is what :func:`devvis.hooks.infer_layout` detects.
FAMILIES: tuple[Family, ...] = (
    Family("ResNet", "resnet18", "layer1.0", "nchw"),
    Family("VGG", "vgg11", "features.3", "nchw", "whole forward needs >= 32 px"),
    Family("AlexNet", "alexnet", "features.3", "nchw", "whole forward needs >= 63 px"),
    Family("GoogLeNet", "googlenet", "inception3a", "nchw",
           "aux heads only in train mode (devvis renders in eval); functional F.relu: not redirected"),
    Family("Inception v3", "inception_v3", "Conv2d_4a_3x3", "nchw",
           "whole forward needs >= 75 px; functional F.relu: not redirected"),
    Family("MobileNet v2", "mobilenet_v2", "features.3", "nchw", "ReLU6 (redirect_relu covers it)"),
    Family("MobileNet v3", "mobilenet_v3_small", "features.2", "nchw", "Hardswish: no ReLU to redirect"),
    Family("EfficientNet", "efficientnet_b0", "features.2", "nchw", "SiLU: no ReLU to redirect"),
    Family("RegNet", "regnet_x_400mf", "trunk_output.block1", "nchw"),
    Family("ConvNeXt", "convnext_tiny", "features.1.0", "nchw", "inside blocks: nhwc (block.1 .. block.5)"),
    Family("Swin", "swin_t", "features.1.0", "nhwc", "any input size"),
    Family("ViT", "vit_b_16", "encoder.layers.encoder_layer_0", "tokens", "fixed 224 px input, resized automatically"),
)
