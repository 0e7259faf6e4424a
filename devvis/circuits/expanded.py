"""Expanded weights: the effective linear kernel from one layer's channels to another's.

Between two convolutional layers that are not adjacent there is no weight
tensor to read, but there is an effective one: replace every nonlinearity on
the path by the identity (and max-pooling by average pooling), and the map
from the source activation to the target activation becomes linear. Its
kernel for one target position — the gradient of the target channel there
with respect to the source activation, cropped to ``k x k`` around the
matching source position — is the *expanded weight* of the Circuits thread
(Olah et al., 2020, "Visualizing Weights"). For adjacent convolutions it is
exactly the convolution's weight; across a residual block it includes the
shortcut (an identity at the centre tap).

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1))
>>> w = expanded_weights(net, "0", "2", crop=3, input_shape=(3, 9, 9))
>>> tuple(w.shape), torch.allclose(w, net[2].weight)
((5, 4, 3, 3), True)
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from devvis.circuits.path import Cut, check_layer, plan_calls, source_to_target
from devvis.errors import ChannelOutOfRangeError, ConfigError, LayoutError
from devvis.hooks import CallPlan
from devvis.state import model_device

#: Activation modules replaced by the identity: each has slope 1 (or close to it) for inputs that
#: pass, which is the linear path a feature's weights describe. (PReLU/LeakyReLU/ELU/CELU/SELU,
#: GELU, SiLU, Mish, Hardswish and Softplus pass positive inputs about unchanged; Tanh and Hardtanh
#: have slope 1 at zero.)
IDENTITY_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Softplus, nn.Tanh, nn.Hardtanh,
)

_MAX_TO_AVG: dict[type[nn.Module], type[nn.Module]] = {
    nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d,
}
_ADAPTIVE_MAX_TO_AVG: dict[type[nn.Module], type[nn.Module]] = {
    nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d,
}


def _linear_replacement(module: nn.Module, name: str) -> nn.Module | None:
    """The linear stand-in for ``module``, or None to keep it."""
    if isinstance(module, IDENTITY_ACTIVATIONS):
        return nn.Identity()
    kind = type(module)
    if kind in _MAX_TO_AVG:
        if getattr(module, "return_indices", False):
            raise ConfigError(f"max-pool {name!r} returns indices, which an average pool cannot; "
                              "expanded weights need pools that return only the pooled map")
        dilation = module.dilation
        if any(d != 1 for d in (dilation if isinstance(dilation, (tuple, list)) else (dilation,))):
            raise ConfigError(f"max-pool {name!r} has dilation {dilation!r}; average pooling has no dilation, "
                              "so expanded weights support only dilation 1")
        # Padding of a max-pool is -inf, i.e. ignored: count_include_pad=False averages the same window.
        return _MAX_TO_AVG[kind](module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode,
                                 count_include_pad=False)
    if kind in _ADAPTIVE_MAX_TO_AVG:
        if getattr(module, "return_indices", False):
            raise ConfigError(f"adaptive max-pool {name!r} returns indices, which an average pool cannot")
        return _ADAPTIVE_MAX_TO_AVG[kind](module.output_size)
    return None


def _clear_hooks(module: nn.Module) -> None:
    # A deep copy carries the user's hooks along (closures over the user's objects); the copy
    # must compute the bare network, so it drops every forward/backward hook it inherited.
    for attr, value in list(vars(module).items()):
        if (attr.startswith("_forward") or attr.startswith("_backward")) and isinstance(value, dict):
            value.clear()


def linearize(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with its path made linear, in eval mode with frozen parameters.

    Replaced modules: the activations in :data:`IDENTITY_ACTIVATIONS` become
    ``nn.Identity``; ``MaxPool{1,2,3}d`` become ``AvgPool`` of the same kernel,
    stride, padding and ``ceil_mode``; ``AdaptiveMaxPool`` become
    ``AdaptiveAvgPool``. BatchNorm in eval mode is affine and kept; dropout is
    the identity in eval mode. Other nonlinearities (``Sigmoid``, ``Softmax``,
    attention, products such as squeeze-and-excitation gates) are kept and the
    result is then the gradient at the point the copy is run on. Functional
    calls inside ``forward()`` (``F.relu(x)``, ``x.clamp(min=0)``,
    ``torch.max_pool2d``) cannot be swapped: only modules can. torchvision's
    ResNets and devvis's zoo use ``nn.ReLU`` modules (a BasicBlock's
    ``self.relu``), so they linearize fully.

    The copy has none of the original's hooks. ``model`` itself is not changed.

    >>> import torchvision
    >>> lin = linearize(torchvision.models.resnet18(weights=None))
    >>> type(lin.relu).__name__, type(lin.maxpool).__name__, lin.training
    ('Identity', 'AvgPool2d', False)
    """
    try:
        lin = copy.deepcopy(model)
    except Exception as e:  # a module holding something uncopyable (an open file, a lock)
        raise ConfigError(f"cannot make a linearized copy of {type(model).__name__}: deepcopy failed "
                          f"({type(e).__name__}: {e})") from e
    for parent_name, parent in list(lin.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            replacement = _linear_replacement(child, full)
            if replacement is not None:
                setattr(parent, child_name, replacement)
    for m in lin.modules():
        _clear_hooks(m)
    for p in lin.parameters():
        p.requires_grad_(False)
    return lin.eval()


def _first_in_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return int(m.in_channels)
    return 3


def _input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is None:
        return (_first_in_channels(model), 64, 64)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:
        shape = shape[1:]  # the batch size is chosen here
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape {tuple(input_shape)!r} is not valid; give (C, H, W) or (B, C, H, W), "
                          "e.g. (3, 64, 64)")
    return shape


def _target_position(position: str | Sequence[int], h: int, w: int, target: str) -> tuple[int, int]:
    if isinstance(position, str):
        if position != "center":
            raise ConfigError(f"position {position!r} is not valid; use 'center' or (row, column) "
                              f"in the target map of {h}x{w}")
        return h // 2, w // 2
    try:
        y, x = (int(v) for v in position)
    except (TypeError, ValueError):
        raise ConfigError(f"position {position!r} is not valid; use 'center' or (row, column)") from None
    if not (0 <= y < h and 0 <= x < w):
        raise ConfigError(f"position {(y, x)} lies outside the {h}x{w} map of target layer {target!r} "
                          f"(valid rows 0..{h - 1}, columns 0..{w - 1})")
    return y, x


def _crop(grad: torch.Tensor, ys: int, xs: int, k: int) -> torch.Tensor:
    """``k x k`` window of ``grad`` ``[N, C, H, W]`` whose tap ``k // 2`` is at ``(ys, xs)``; zeros outside the map."""
    lo = k // 2
    padded = F.pad(grad, (k, k, k, k))  # a window reaching past the border reads zeros, not wrapped values
    y0, x0 = ys - lo + k, xs - lo + k
    return padded[:, :, y0:y0 + k, x0:x0 + k]


def _cut_batch(lin: nn.Module, source: str, target: str, shape: tuple[int, ...], n: int,
               device: torch.device, plan: CallPlan) -> Cut:
    """A cut with ``n`` copies of the source activation, running the layers upstream of it once if possible."""
    try:
        return source_to_target(lin, source, target, torch.zeros(1, *shape, device=device), expand=n, plan=plan)
    except RuntimeError:
        # A path that bypasses the source (DenseNet's concatenation, an in-place add onto a
        # shortcut) met the expanded batch with batch 1: run n copies of the input instead.
        return source_to_target(lin, source, target, torch.zeros(n, *shape, device=device), plan=plan)


def expanded_weights(
    model: nn.Module,
    source_layer: str,
    target_layer: str,
    *,
    crop: int = 5,
    position: str | Sequence[int] = "center",
    input_shape: Sequence[int] | None = None,
    target_channels: Sequence[int] | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Expanded weights from ``source_layer`` to ``target_layer``: float32 ``[C_target, C_source, crop, crop]``.

    With ``target_channels`` only those rows are computed, in that order:
    ``[len(target_channels), C_source, crop, crop]``.

    Entry ``[t, s, i, j]`` is the gradient of target channel ``t`` at
    ``position`` with respect to source channel ``s`` at
    ``(ys + i - crop // 2, xs + j - crop // 2)``, through a :func:`linearize`\\ d
    copy of the model, where ``(ys, xs)`` is the source position matching the
    target position (scaled by the ratio of the two maps' sizes, so a stride-2
    path maps row ``y`` to ``2 y``). The orientation is that of a
    cross-correlation weight: for two adjacent convolutions with ``crop`` equal
    to the kernel size the result *is* the second convolution's weight. Taps
    that fall outside the source map are zero.

    The copy runs on zeros of ``input_shape`` (``(C, H, W)``; default the first
    convolution's input channels at 64x64 pixels). A linearized network's
    gradient does not depend on the input, but the maps must be large enough
    that the window around ``position`` does not reach the zero padding at the
    border; pass a bigger ``input_shape`` for deep layers. Biases contribute
    nothing (they do not change the gradient). Gradients are taken in batches of
    ``batch_size`` target channels (one forward pass each, stopped at the target).

    ``model`` is not modified: not its parameters, ``requires_grad``, mode or
    hooks (the linearized copy is a deep copy). ``source_layer`` may be
    ``"input"`` (weights from the RGB channels). A layer whose module runs
    several times in the forward pass means its last call, the tensor render
    records under that name (:mod:`devvis.hooks.calls`): ``layer1.0.relu`` of a
    torchvision ResNet is the block's output.

    Raises :class:`~devvis.errors.LayerNotFoundError` (unknown layer, with the
    closest names), :class:`~devvis.errors.LayoutError` (a layer whose output is
    not ``[B, C, H, W]``), :class:`~devvis.errors.ConfigError` (target upstream
    of the source, bad ``crop``/``position``/``input_shape``).

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(6, 2, 3, padding=1))
    >>> tuple(expanded_weights(net, "0", "2", crop=5).shape)
    (2, 6, 5, 5)
    """
    if not isinstance(crop, int) or isinstance(crop, bool) or crop < 1:
        raise ConfigError(f"crop must be a positive integer (the k of the k x k window); got {crop!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}")
    source = check_layer(model, source_layer, "source")
    target = check_layer(model, target_layer, "target")
    shape = _input_shape(model, input_shape)
    lin = linearize(model)
    device = model_device(lin)

    zeros = torch.zeros(1, *shape, device=device)
    plan = plan_calls(lin, source, target, zeros)  # the copy runs its modules as often as the model does
    probe = source_to_target(lin, source, target, zeros, plan=plan)
    for name, role, t in ((source, "source", probe.source), (target, "target", probe.target)):
        if t.dim() != 4:
            raise LayoutError(f"{role} layer {name!r} has an activation of shape {tuple(t.shape)}; expanded weights "
                              "need convolutional maps [B, C, H, W] at both ends (use channel_influence for flat layers)")
    _, c_t, h_t, w_t = probe.target.shape
    _, c_s, h_s, w_s = probe.source.shape
    y, x = _target_position(position, h_t, w_t, target)
    ys, xs = y * h_s // h_t, x * w_s // w_t
    del probe
    if target_channels is None:
        wanted = list(range(c_t))
    else:
        wanted = list(target_channels)
        bad = [c for c in wanted if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < c_t]
        if bad or not wanted:
            raise ChannelOutOfRangeError(f"target_channels {bad or wanted!r} out of range for target layer "
                                         f"{target!r}, which has {c_t} channels (valid 0..{c_t - 1})")

    rows: list[torch.Tensor] = []
    for start in range(0, len(wanted), batch_size):
        chans = torch.tensor(wanted[start:start + batch_size], device=device)
        n = len(chans)
        # One copy of the source activation per target channel: row i of the batch carries the
        # gradient of channel chans[i] alone (eval-mode BatchNorm never mixes the batch).
        cut = _cut_batch(lin, source, target, shape, n, device, plan)
        picked = cut.target[torch.arange(n, device=device), chans, y, x]
        grad = None
        if picked.requires_grad:
            (grad,) = torch.autograd.grad(picked.sum(), cut.source, allow_unused=True)
        if grad is None:  # the target does not depend on the source at all
            grad = torch.zeros_like(cut.source)
        rows.append(_crop(grad.detach(), ys, xs, crop).float().cpu())
    return torch.cat(rows)
