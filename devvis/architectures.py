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

__all__ = ["FAMILIES", "Family", "MIN_INPUT_SIZES", "SITE_CONV", "SITE_MLP_HIDDEN", "feature_sites",
           "fixed_input_size", "input_errors", "min_input_size", "mlp_hidden_layers", "resolve_input_size"]

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


#: Kinds of default feature site (:func:`feature_sites`).
SITE_MLP_HIDDEN = "mlp_hidden"
SITE_CONV = "conv"

# Leaves that are not the MLP's activation, although they have no parameters.
_NOT_ACTIVATIONS = (nn.Dropout, nn.Identity)


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or "attention" in type(module).__name__.lower()


def _holds_attention(module: nn.Module) -> bool:
    """An attention module, or a container of one (MaxViT's ``attn_layer``: norm, attention, dropout)."""
    return _is_attention(module) or any(_is_attention(c) for c in module.children())


def _mlp_activation(mlp: nn.Module) -> str | None:
    """Name (in ``mlp``) of the module whose output is an MLP's hidden layer, or None.

    Plain MLP (``Linear(D, H)``, activation, ``Linear(H, D')``): the activation. Gated MLP (GLU,
    SwiGLU: ``fc1`` of width ``2H`` split in two, or two ``Linear(D, H)`` side by side; the product
    ``act(gate) * x`` is computed in ``forward``): the last parameter-free module before ``fc2``
    (a dropout or identity at eval), whose output is that product.
    """
    children = list(mlp.named_children())
    linears = [i for i, (_, c) in enumerate(children) if isinstance(c, nn.Linear)]
    for k, (i, j) in enumerate(zip(linears, linears[1:])):
        fc1, fc2 = children[i][1], children[j][1]
        free = [(n, c) for n, c in children[i + 1:j]
                if not any(True for _ in c.children()) and not any(True for _ in c.parameters())]
        acts = [n for n, c in free if not isinstance(c, _NOT_ACTIVATIONS)]
        if not acts:
            continue
        prev = children[linears[k - 1]][1] if k > 0 and linears[k - 1] == i - 1 else None
        side_by_side = prev is not None and (prev.in_features, prev.out_features) == (fc1.in_features, fc1.out_features)
        if fc1.out_features == 2 * fc2.in_features or (side_by_side and fc2.in_features == fc1.out_features):
            return free[-1][0]
        if fc2.in_features == fc1.out_features:
            return acts[0]
    return None


def mlp_hidden_layers(model: nn.Module) -> list[str]:
    """The MLP hidden layer of every transformer block of ``model`` (after the activation), in module order.

    A transformer block is a module with an attention child (``nn.MultiheadAttention`` or a class
    whose name contains "Attention", or a container holding one); its MLP is the block itself or a child whose direct children
    run ``Linear(D, H)``, an activation, ``Linear(H, D')``; the site is that activation module, whose
    output ``[B, T, H]`` (ViT) or ``[B, h, w, H]`` (Swin) holds the ``H`` hidden units. torchvision's
    ViT: ``encoder.layers.encoder_layer_N.mlp.1`` (``nn.GELU``); timm's: ``blocks.N.mlp.act``;
    torchvision's Swin: ``features.S.B.mlp.1``. Empty for a CNN (ConvNeXt's inverted bottleneck has
    the MLP shape but no attention beside it). See ``docs/vit.md``.

    >>> from torchvision.models.vision_transformer import VisionTransformer
    >>> vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    >>> mlp_hidden_layers(vit)
    ['encoder.layers.encoder_layer_0.mlp.1', 'encoder.layers.encoder_layer_1.mlp.1']
    """
    sites: list[str] = []
    for name, block in model.named_modules():
        if not any(_holds_attention(c) for c in block.children()):
            continue
        # the attention's own MLP (a CBAM-style channel attention) is not the block's MLP
        for sub, mlp in [("", block), *((n, c) for n, c in block.named_children() if not _holds_attention(c))]:
            act = _mlp_activation(mlp)
            if act is not None:
                sites.append(".".join(p for p in (name, sub, act) if p))
    return list(dict.fromkeys(sites))


def feature_sites(model: nn.Module) -> dict[str, str]:
    """The layers devvis renders when none are named: ``{name: kind}`` in module order.

    A ViT-style model (one with :func:`mlp_hidden_layers`) gets its MLP hidden layers
    (:data:`SITE_MLP_HIDDEN`, Ghiasi et al. 2022 found its interpretable features there); any other
    model every ``Conv2d`` (:data:`SITE_CONV`). ``devvis visualize`` without ``--layer-names`` uses
    it, and ``devvis layers`` marks these rows.

    >>> import torchvision
    >>> list(feature_sites(torchvision.models.resnet18(weights=None)).items())[:2]
    [('conv1', 'conv'), ('layer1.0.conv1', 'conv')]
    """
    mlp = mlp_hidden_layers(model)
    if mlp:
        return dict.fromkeys(mlp, SITE_MLP_HIDDEN)
    return {n: SITE_CONV for n, m in model.named_modules() if n and type(m).__name__ == "Conv2d"}


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
    Family("ViT", "vit_b_16", "encoder.layers.encoder_layer_0", "tokens",
           "fixed 224 px input, resized automatically; GELU redirected; default sites: the MLP hidden layers"),
)
