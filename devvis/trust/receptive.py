"""Receptive fields of a layer's positions, measured by gradient support, and the crops they cut.

The receptive field of position ``(y, x)`` of a layer is the set of input pixels its
activation depends on. It is measured, not derived from a kernel/stride table, so it holds for
any architecture: the gradient of the layer's activations at ``(y, x)`` (summed over channels)
with respect to the *image* (before resize and preprocessing, so a model that resizes its input
is measured in image pixels) is non-zero exactly on the pixels that reach that position. Random
probe images (several, so that no ReLU or max-pool hides a pixel) are used, and the support's
bounding box is the field. It is measured at the centre position and its neighbour, giving the
field's size and the stride; the box of any other position is the centre's, shifted by the
stride, clipped to the image. Layers without a spatial map (tokens of a ViT, flat features) get the
whole image: their positions see everything. So does a layer whose field covers the whole canvas at
every scale tried (1x, 2x, 4x the image): its field grows with the image, i.e. global pooling inside
(squeeze-excitation blocks, attention), and every position sees the whole image.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Conv2d(2, 2, 3, stride=2))
>>> rf = receptive_field(net, "1", (3, 16, 16), preprocess=None)
>>> rf.size, rf.stride, rf.box(0, 0)
((5, 5), (2, 2), (0, 5, 0, 5))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from devvis.errors import ConfigError
from devvis.hooks import ActivationRecorder
from devvis.objectives import channels_first
from devvis.render.pipeline import ModelInput
from devvis.state import frozen, model_device
from devvis.typing import ImageBatch, PreprocessLike


@dataclass(frozen=True)
class ReceptiveField:
    """A layer's receptive fields on ``image_size`` images.

    ``map_size``: ``(h, w)`` positions (None: no spatial map, every position sees the whole image);
    ``size``: ``(rh, rw)`` pixels of an unclipped field; ``stride``: pixels between neighbouring
    positions; ``origin``: ``(y0, x0)`` of position ``(0, 0)``'s field before clipping (may be negative).
    """

    layer: str
    image_size: tuple[int, int]
    map_size: tuple[int, int] | None
    size: tuple[int, int]
    stride: tuple[int, int]
    origin: tuple[int, int]

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` (ends exclusive) of position ``(y, x)``'s field, clipped to the image."""
        H, W = self.image_size
        if self.map_size is None:
            return (0, H, 0, W)
        y0 = self.origin[0] + y * self.stride[0]
        x0 = self.origin[1] + x * self.stride[1]
        return (max(0, y0), min(H, y0 + self.size[0]), max(0, x0), min(W, x0 + self.size[1]))

    def crop(self, image: torch.Tensor, y: int, x: int, *, fill: float = 0.5) -> torch.Tensor:
        """Position ``(y, x)``'s field cut from ``image`` ``(C, H, W)``: ``(C, rh, rw)``; the part of the
        field outside the image is ``fill`` (so every crop shows its pixels where the unit sees them). A field
        at least as large as the image gives the image itself."""
        if self.map_size is None or (self.size[0] >= image.shape[-2] and self.size[1] >= image.shape[-1]):
            return image  # the field covers the whole image
        rh, rw = self.size
        y0 = self.origin[0] + y * self.stride[0]
        x0 = self.origin[1] + x * self.stride[1]
        out = torch.full((image.shape[0], rh, rw), fill, dtype=image.dtype)
        H, W = image.shape[-2:]
        ys, xs = max(0, y0), max(0, x0)
        ye, xe = min(H, y0 + rh), min(W, x0 + rw)
        if ye > ys and xe > xs:
            out[:, ys - y0:ye - y0, xs - x0:xe - x0] = image[:, ys:ye, xs:xe]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {"layer": self.layer, "image_size": list(self.image_size),
                "map_size": list(self.map_size) if self.map_size else None, "size": list(self.size),
                "stride": list(self.stride), "origin": list(self.origin)}


def _support(grad: torch.Tensor) -> tuple[int, int, int, int] | None:
    mask = grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
    if rows.numel() == 0:
        return None
    return (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def receptive_field(model: nn.Module, layer: str, image_shape: Sequence[int], *, preprocess: PreprocessLike = "auto",
                    input_size: int | tuple[int, int] | None = None, probes: int = 8,
                    seed: int = 0) -> ReceptiveField:
    """Measure ``layer``'s receptive field on images of ``image_shape`` ``(C, H, W)`` (see the module doc).

    ``preprocess``/``input_size``: the model-input pipeline (as in :func:`devvis.render`); the field is
    in pixels of the image *before* it. ``probes`` random images, seeded by ``seed``.
    """
    if len(image_shape) != 3:
        raise ConfigError(f"image_shape must be (C, H, W); got {tuple(image_shape)}")
    c, H, W = (int(v) for v in image_shape)
    measured = None
    whole = True  # the field covered the whole canvas at every scale: it grows with the image
    for scale in (1, 2, 4):  # a field larger than the image is measured again on a larger canvas
        try:
            found = _measure(model, layer, (c, H * scale, W * scale), preprocess, input_size, probes, seed)
        except Exception:  # noqa: BLE001 - a model with a fixed input size: keep the last measurement
            if measured is None:
                raise
            break
        if found is None:
            return ReceptiveField(layer, (H, W), None, (H, W), (H, W), (0, 0))
        measured = found
        box, canvas = found[0], (H * scale, W * scale)
        whole = whole and box == (0, canvas[0], 0, canvas[1])
        if box[0] > 0 and box[2] > 0 and box[1] < canvas[0] and box[3] < canvas[1]:
            break
    assert measured is not None
    if whole and scale == 4:  # global pooling inside (squeeze-excitation, attention): every position sees all
        return ReceptiveField(layer, (H, W), None, (H, W), (H, W), (0, 0))
    box, (_h, _w, cy, cx), stride = measured
    size = (box[1] - box[0], box[3] - box[2])
    origin = (box[0] - cy * stride[0], box[2] - cx * stride[1])
    return ReceptiveField(layer, (H, W), _map_size(model, layer, (c, H, W), preprocess, input_size), size,
                          (stride[0], stride[1]), origin)


def _map_size(model: nn.Module, layer: str, shape: tuple[int, int, int], preprocess: PreprocessLike,
              input_size: int | tuple[int, int] | None) -> tuple[int, int]:
    model_input = ModelInput(model, transforms=None, preprocess=preprocess, input_size=input_size)
    with frozen(model), torch.no_grad(), ActivationRecorder(model, [layer], stop_early=True) as rec:
        t = channels_first(rec.run(model_input(torch.rand(1, *shape).to(model_device(model)))), layer)
    return (int(t.shape[-2]), int(t.shape[-1]))


def _measure(model: nn.Module, layer: str, shape: tuple[int, int, int], preprocess: PreprocessLike,
             input_size: int | tuple[int, int] | None, probes: int, seed: int) -> Any:
    """``(box, (h, w, cy, cx), stride)`` of the centre position on ``shape`` images; None without a spatial map."""
    c, H, W = shape
    g = torch.Generator().manual_seed(seed)
    dev = model_device(model)
    images = torch.rand(probes, c, H, W, generator=g).to(dev)
    model_input = ModelInput(model, transforms=None, preprocess=preprocess, input_size=input_size)
    with frozen(model), ActivationRecorder(model, [layer], stop_early=True) as rec:
        def grad_at(y: int | None, x: int | None) -> tuple[tuple[int, int, int, int] | None, Any]:
            img = images.clone().requires_grad_(True)
            t = channels_first(rec.run(model_input(img)), layer)
            if t.dim() != 4:  # tokens or flat: no spatial map
                return None, None
            h, w = t.shape[-2:]
            yy, xx = (h // 2, w // 2) if y is None else (y, x)
            (g_img,) = torch.autograd.grad(t[:, :, yy, xx].sum(), img)
            return _support(g_img.detach().cpu()), (h, w, yy, xx)

        box, where = grad_at(None, None)
        if where is None:
            return None
        h, w, cy, cx = where
        if box is None:
            raise ConfigError(f"layer {layer!r} does not depend on its input (zero gradient at position {cy, cx})")
        stride = [max(1, H // h), max(1, W // w)]
        if cy + 1 < h and cx + 1 < w:
            nb, _ = grad_at(cy + 1, cx + 1)
            if nb is not None:
                # both fields unclipped on the leading side: their starts differ by the stride
                if box[0] > 0 and nb[0] > 0:
                    stride[0] = nb[0] - box[0]
                if box[2] > 0 and nb[2] > 0:
                    stride[1] = nb[2] - box[2]
    return box, (h, w, cy, cx), stride


def crops(rf: ReceptiveField, images: ImageBatch, positions: torch.Tensor) -> ImageBatch:
    """Each image's field at its position: ``images`` ``(K, C, H, W)``, ``positions`` ``(K, 2)`` -> ``(K, C, rh, rw)``."""
    return torch.stack([rf.crop(images[i], int(positions[i, 0]), int(positions[i, 1])) for i in range(len(images))])
