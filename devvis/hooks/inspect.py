"""What a model's layers are: names, types, output shapes, channels, layouts and default sites (``devvis layers``).

``site`` marks the layers devvis renders when none are named
(:func:`devvis.architectures.feature_sites`): ``"mlp_hidden"`` for the MLP hidden layer of each
block of a ViT-style model (``docs/vit.md``), ``"conv"`` for every ``Conv2d`` of any other model.

>>> import torchvision
>>> rows = list_layers(torchvision.models.resnet18(weights=None), (3, 64, 64))
>>> [(r.name, r.output_shape, r.channels) for r in rows if r.name == "layer4"]
[('layer4', (1, 512, 2, 2), 512)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from devvis.architectures import feature_sites, input_errors
from devvis.hooks.layouts import infer_layout
from devvis.hooks.names import ModuleOutput, first_tensor
from devvis.state import frozen, model_device
from devvis.typing import DeviceLike


@dataclass(frozen=True)
class LayerInfo:
    """One row of :func:`list_layers`: name, module type, output shape (or None), channel count, layout,
    and ``site``: the kind of default feature site the layer is (``"mlp_hidden"``, ``"conv"``) or None."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None = None
    channels: int | None = None
    layout: str | None = None
    site: str | None = None


def _channels(shape: tuple[int, ...], layout: str) -> int | None:
    if layout in ("nchw",):
        return shape[1]
    if layout in ("nhwc", "tokens", "flat"):
        return shape[-1]
    return None


def list_layers(model: nn.Module, input_shape: Sequence[int] | None = None, *,
                device: DeviceLike = None) -> list[LayerInfo]:
    """List every named submodule: name, type, default-site mark and, with ``input_shape``, output shape and channels.

    ``input_shape`` is the model input, e.g. ``(1, 3, 224, 224)`` (a 3-tuple gets a batch of 1);
    the model runs once on zeros of that shape, in eval mode, and is given back as it was
    (:func:`devvis.state.frozen`). A module that runs several times reports its last call,
    the rule of :mod:`devvis.hooks.calls`.

    >>> import torchvision
    >>> rows = list_layers(torchvision.models.resnet18(weights=None), (3, 64, 64))
    >>> [(r.name, r.output_shape) for r in rows if r.name == "layer4"]
    [('layer4', (1, 512, 2, 2))]
    >>> from torchvision.models.vision_transformer import VisionTransformer
    >>> vit = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
    >>> [(r.name, r.output_shape, r.site) for r in list_layers(vit, (3, 32, 32)) if r.site]
    [('encoder.layers.encoder_layer_0.mlp.1', (1, 17, 64), 'mlp_hidden')]
    """
    infos: dict[str, LayerInfo] = {}
    modules = [(n, m) for n, m in model.named_modules() if n]
    sites = feature_sites(model)
    if input_shape is None:
        return [LayerInfo(n, type(m).__name__, site=sites.get(n)) for n, m in modules]
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if device is None:
        device = model_device(model)
    outputs: dict[str, tuple[tuple[int, ...], str]] = {}
    handles = []

    def make(name: str, mod: nn.Module) -> Callable[[nn.Module, object, ModuleOutput], None]:
        def hook(_m: nn.Module, _i: object, out: ModuleOutput) -> None:
            t = first_tensor(out)
            if t is not None:  # every call overwrites: the last one stays (devvis.hooks.calls)
                outputs[name] = (tuple(t.shape), infer_layout(mod, t, model=model, name=name))
        return hook

    try:
        for n, m in modules:
            handles.append(m.register_forward_hook(make(n, m)))
        with frozen(model, freeze=False):
            x = torch.zeros(shape, device=device)
            with torch.no_grad(), input_errors(model, x):
                model(x)
    finally:
        for h in handles:
            h.remove()
    for n, m in modules:
        if n in outputs:
            s, lay = outputs[n]
            infos[n] = LayerInfo(n, type(m).__name__, s, _channels(s, lay), lay, sites.get(n))
        else:
            infos[n] = LayerInfo(n, type(m).__name__, site=sites.get(n))
    return list(infos.values())
