"""One recorded forward pass: the model input in, the objective's activations out.

:class:`RecordedForward` runs the model under an
:class:`~devvis.hooks.ActivationRecorder` with the chosen precision, turns
input-size failures into a clear :class:`~devvis.errors.ConfigError`, hands the
objective float32 activations, and on the CPU decides once (after its first call)
whether a channels-last input is faster for this model and batch. ``render`` and
``objectives.evaluate`` both run the model through it.

>>> import torch
>>> from torch import nn
>>> from devvis.hooks import ActivationRecorder
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
>>> x = torch.rand(2, 3, 8, 8)
>>> with ActivationRecorder(net, ["0"], stop_early=True) as rec:
...     acts = RecordedForward(net, rec)(x, x)
>>> tuple(acts["0"].shape)
(2, 4, 6, 6)
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
from torch import nn

from devvis.architectures import input_errors
from devvis.errors import ConfigError
from devvis.hooks import INPUT, ActivationRecorder, Activations
from devvis.typing import DeviceLike

PRECISIONS = ("fp32", "bf16", "fp16")

#: Smallest batch x height x width of a recorded conv map for which channels-last pays on the CPU (the
#: smallest measured: resnet18's 7x7 ``layer4`` at batch 1, 6% faster in fp32, the same in bf16, once the
#: render lays the conv weights out channels-last once, :func:`devvis.render.fold.weights_cast_once`).
CHANNELS_LAST_MIN_POSITIONS = 49


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else :class:`~devvis.errors.ConfigError`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not valid; choose one of {PRECISIONS}")
    return precision


def autocast(device: DeviceLike, precision: str) -> ContextManager[object]:
    """Autocast of the model forward for ``precision`` (``"fp32"``: no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device or "cpu").type, dtype=dtype)


def prefer_channels_last(device: torch.device, x: torch.Tensor, acts: Activations) -> bool:
    """Whether to feed the model a channels-last input for the rest of a CPU render.

    oneDNN's NHWC kernels make the forward + backward of convolutional models ~10-20% faster
    on the CPU (max-pooling several times faster). With weights laid out channels-last per call
    (oneDNN's relayout of a contiguous weight) resnet18's 7x7 ``layer4`` at batch 1 was ~15% slower;
    with the weights laid out once per render it is 6% faster (fp32; bf16 the same). Measured with
    ``benchmarks/run.py``; the rule: the smallest recorded conv map must hold at least 49 positions
    over the batch (one 7x7 map), the smallest measured.
    """
    if device.type != "cpu" or x.dim() != 4:
        return False
    sizes = [t.shape[0] * t.shape[2] * t.shape[3] for k, t in acts.items()
             if k != INPUT and t.dim() == 4 and acts.layout(k) == "nchw"]
    return bool(sizes) and min(sizes) >= CHANNELS_LAST_MIN_POSITIONS


class RecordedForward:
    """``(x, image) -> Activations``: one forward of ``model`` under ``recorder``.

    Args:
        model: the model (for input-size error messages).
        recorder: an entered :class:`~devvis.hooks.ActivationRecorder` on ``model``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` autocast of the forward; the
            activations handed on are float32 whatever the precision.
        device: where the model runs (for autocast and the channels-last rule; default CPU).
        channels_last: ``None`` (decide after the first call, CPU only), ``False`` (never).

    ``x`` is the model input ``(B, C, H, W)``; ``image`` the image before the model-input
    pipeline, ``(B, C, H, W)`` in [0, 1], recorded as ``acts["input"]``.
    """

    def __init__(self, model: nn.Module, recorder: ActivationRecorder, *, precision: str = "fp32",
                 device: DeviceLike = None, channels_last: bool | None = None):
        self.model = model
        self.recorder = recorder
        self.precision = check_precision(precision)
        self.device = torch.device(device or "cpu")
        # the model input's memory format: decided once, after the first call (deterministic)
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor, image: torch.Tensor) -> Activations:
        with autocast(self.device, self.precision), input_errors(self.model, x):
            acts = self._run(x, image)
        if self.channels_last is None:
            self.channels_last = prefer_channels_last(self.device, x, acts)
        if self.precision != "fp32":
            acts = Activations({k: v.float() for k, v in acts.items()}, acts.layouts)
        return acts

    def _run(self, x: torch.Tensor, image: torch.Tensor) -> Activations:
        if not self.channels_last:
            return self.recorder.run(x, **{INPUT: image})
        try:
            acts = self.recorder.run(x.contiguous(memory_format=torch.channels_last), **{INPUT: image})
        except RuntimeError:  # e.g. a model calling .view() on its maps: stay in NCHW
            self.channels_last = False
            return self.recorder.run(x, **{INPUT: image})
        # objectives get contiguous maps, whatever format the model ran in
        return Activations({k: v.contiguous() for k, v in acts.items()}, acts.layouts)
