"""Lucent's ``render`` module: ``render_vis`` and ``hook_model``, running on devvis's engine.

``render_vis`` keeps Lucent's signature and results (a list of NHWC float arrays,
one per threshold) and hands the optimization to :func:`devvis.render`, which
hooks only the modules the objective reads, stops the forward pass after the
last of them, freezes the model's parameters (no ``.grad`` piles up on them) and
removes every hook afterwards. There is no device chosen at import time: the
image lives on the model's device.

>>> import torch
>>> from torch import nn
>>> from devvis.compat.lucent import render, param, objectives
>>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
>>> imgs = render.render_vis(model, "0:1", lambda: param.image(16), thresholds=(2, 4), show_image=False,
...                          progress=False, fixed_image_size=16)
>>> [im.shape for im in imgs]
[(1, 16, 16, 3), (1, 16, 16, 3)]
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from devvis import io as dio
from devvis.compat.lucent.optvis import objectives, param, transform
from devvis.errors import ConfigError, LayoutError
from devvis.hooks import ActivationRecorder, module_names, resolve_name
from devvis.objectives import Objective as DevvisObjective
from devvis.render import render
from devvis.state import model_device

__all__ = ["render_vis", "hook_model", "tensor_to_img_array", "view", "export", "show", "ModelHook"]

log = logging.getLogger("devvis.compat.lucent")

#: Lucent upsamples images smaller than this (on either side) before the model.
MIN_INPUT_SIZE = 224


class LucentParam(nn.Module):
    """A Lucent ``(params, image_f)`` pair as a devvis parameterization.

    ``forward()`` is ``image_f()``; ``parameters()`` are exactly ``params`` (what
    Lucent hands its optimizer). An ``image_f`` that is an ``nn.Module`` is
    registered, so ``.to(device)`` moves it and its parameters in place.
    """

    def __init__(self, params: Iterable[torch.Tensor], image_f: Callable[[], torch.Tensor]):
        super().__init__()
        self.image_f = image_f
        self._lucent_params = list(params)

    def parameters(self, recurse: bool = True):  # noqa: D102 - Lucent's params, not the registered ones
        return iter(self._lucent_params)

    def forward(self) -> torch.Tensor:
        return self.image_f()


def _to_device(p: LucentParam, dev: torch.device) -> None:
    p.to(dev)
    for t in p._lucent_params:  # plain tensors from a hand-written param_f
        if t.device != dev:
            t.data = t.data.to(dev)


def _devvis_objective(objective_f: Any) -> DevvisObjective:
    if isinstance(objective_f, DevvisObjective):  # devvis objectives are welcome too
        return objective_f
    obj = objectives.as_objective(objective_f)
    if not isinstance(obj, objectives.Objective):  # a plain callable T -> loss
        obj = objectives.Objective(obj, getattr(obj, "__name__", ""))
    return obj.to_devvis()


def input_size(image_hw: Sequence[int], fixed_image_size: Any = None) -> Any:
    """The size ``render_vis`` resizes images to before the model, or ``None`` for none.

    ``fixed_image_size`` when given (Lucent: any truthy value); otherwise 224 when
    either side is smaller than 224. A non-square image keeps its aspect ratio
    (shorter side 224), where Lucent squashed it to 224 x 224.

    >>> input_size((128, 128)), input_size((112, 224)), input_size((300, 300)), input_size((64, 64), 64)
    (224, (224, 448), None, 64)
    """
    if fixed_image_size is not None:
        return fixed_image_size or None
    h, w = int(image_hw[0]), int(image_hw[1])
    if h >= MIN_INPUT_SIZE and w >= MIN_INPUT_SIZE:
        return None
    if h == w:
        return MIN_INPUT_SIZE
    s = MIN_INPUT_SIZE / min(h, w)
    return (round(h * s), round(w * s))


def _thresholds(thresholds: Iterable[int]) -> list[int]:
    ts = sorted({int(t) for t in thresholds if int(t) >= 1})
    if not ts:
        raise ConfigError(f"thresholds {tuple(thresholds)!r} contain no step >= 1; e.g. thresholds=(512,)")
    return ts


def render_vis(
    model: nn.Module,
    objective_f: Any,
    param_f: Callable[[], tuple[Iterable[torch.Tensor], Callable[[], torch.Tensor]]] | None = None,
    optimizer: Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer] | None = None,
    transforms: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
    thresholds: Sequence[int] = (512,),
    verbose: bool = False,
    preprocess: bool = True,
    progress: bool = True,
    show_image: bool = True,
    save_image: bool = False,
    image_name: str | os.PathLike | None = None,
    show_inline: bool = False,
    fixed_image_size: Any = None,
) -> list[np.ndarray]:
    """Optimize an image for ``objective_f`` on ``model``, as Lucent's ``render_vis`` does.

    Parameters (Lucent's)
    ---------------------
    objective_f:
        A Lucent objective (loss to minimize), a ``"layer:n"`` string, a callable
        ``T -> loss`` or (extension) a devvis objective.
    param_f:
        ``() -> (params, image_f)``; default ``param.image(128)``.
    optimizer:
        ``params -> Optimizer``; default Adam, lr 0.05. Closure optimizers (LBFGS) work.
    transforms:
        List of callables ``x -> x``; default ``transform.standard_transforms``.
        With ``preprocess``, ImageNet normalization is appended (InceptionV1's
        ``x * 255 - 117`` when the model class is ``InceptionV1``), then a
        bilinear resize to ``fixed_image_size``, or to 224 when a side is smaller.
    thresholds:
        Steps after which to keep the image; the run lasts ``max(thresholds)`` steps.
    verbose, progress, show_image, save_image, image_name, show_inline:
        Print losses; tqdm bar; show the final image (notebook: inline; desktop:
        PIL viewer; headless: nothing); write it to ``image_name`` (default
        ``"image.jpg"``; the batch side by side) atomically; show inline in a notebook.

    Returns a list of ``(B, H, W, C)`` float32 arrays in [0, 1], one per threshold
    reached (plus the current image when interrupted with Ctrl-C).

    Differences from Lucent: the model runs in eval mode (restored afterwards)
    with frozen parameters; the random stream of the transforms is drawn from
    torch's global one (so :func:`~devvis.compat.lucent.util.set_seed` reproduces
    a run); a NaN/inf loss raises :class:`~devvis.errors.NonFiniteObjectiveError`.
    """
    if param_f is None:
        param_f = lambda: param.image(128)  # noqa: E731
    params, image_f = param_f()
    image = LucentParam(params, image_f)
    _to_device(image, model_device(model))
    objective = _devvis_objective(objective_f)
    steps = _thresholds(thresholds)

    tfs = list(transform.standard_transforms if transforms is None else transforms)
    # Lucent appends the normalization and the upsampling to the transforms; here they are the
    # model-input pipeline's preprocessing, so the final value, computed without the random
    # transforms, still sees the normalized, upsampled image
    prep: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if preprocess:
        is_inception = type(model).__name__ == "InceptionV1"
        prep.append(transform.preprocess_inceptionv1() if is_inception else transform.normalize())
    with torch.no_grad():
        shape = image().shape
    size = input_size(shape[-2:], fixed_image_size)
    if size:
        prep.append(nn.Upsample(size=size, mode="bilinear", align_corners=True))

    def report(step: int, _img: torch.Tensor, values: torch.Tensor) -> None:
        loss = float(-values.sum())
        if step == 1:
            print(f"Initial loss: {loss:.3f}")
        if step in steps:
            print(f"Loss at step {step}: {loss:.3f}")
            if show_inline:
                with torch.no_grad():
                    show(tensor_to_img_array(image()))

    # one draw from torch's global stream seeds the transforms: set_seed reproduces the run
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    result = render(model, objective, image, steps=steps[-1], thresholds=steps, optimizer=optimizer,
                    transforms=transform.compose(tfs), preprocess=transform.compose(prep) if prep else "none",
                    seed=seed, progress=progress,
                    callbacks=[report] if verbose else ())
    images = [tensor_to_img_array(result.snapshots[t]) for t in steps if t in result.snapshots]
    if result.interrupted:
        print(f"Interrupted optimization at step {result.steps_run:d}.")
        images.append(tensor_to_img_array(result.images))
    if save_image:
        export(result.images, image_name)
    if show_inline:
        show(tensor_to_img_array(result.images))
    elif show_image:
        view(result.images)
    return images


def tensor_to_img_array(tensor: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` tensor -> ``(B, H, W, C)`` float numpy array (detached, on the CPU)."""
    return np.transpose(tensor.detach().float().cpu().numpy(), [0, 2, 3, 1])


def _strip(tensor: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(C, H, B * W)``: the batch side by side, as Lucent shows and saves it."""
    t = tensor.detach().float().cpu()
    if t.dim() == 3:
        return t
    if t.dim() != 4:
        raise ConfigError(f"an image batch must be (B, C, H, W) or (C, H, W), got shape {tuple(t.shape)}")
    return torch.cat(list(t), dim=2)


def export(tensor: torch.Tensor, image_name: str | os.PathLike | None = None) -> Path:
    """Write the batch side by side to ``image_name`` (default ``"image.jpg"``; ``.jpg``/``.png``), atomically."""
    path = Path(image_name or "image.jpg")
    dio.write_image(path, _strip(tensor))
    return path


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and hasattr(shell, "kernel")


def _has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _pil(image: Any):
    from PIL import Image

    return Image.fromarray(dio.to_uint8_hwc(image))


def _display(image_chw: torch.Tensor, inline_only: bool) -> str:
    """Show one image; returns how: ``"inline"``, ``"viewer"`` or ``"none"``. Never raises, never blocks."""
    if _in_notebook():
        from IPython.display import display

        display(_pil(image_chw))
        return "inline"
    if not inline_only and _has_display():
        try:
            _pil(image_chw).show()  # PIL starts the system viewer in the background
            return "viewer"
        except Exception as e:  # a missing viewer must not end a long render
            log.warning("could not show the image (%s: %s); pass save_image=True to write it", type(e).__name__, e)
            return "none"
    log.info("no display to show the image on; pass save_image=True to write it")
    return "none"


def view(tensor: torch.Tensor) -> str:
    """Show a ``(B, C, H, W)`` batch side by side: inline in a notebook, in the image viewer on a desktop,
    nowhere on a headless machine (a log message instead). Returns ``"inline"``, ``"viewer"`` or ``"none"``."""
    return _display(_strip(tensor), inline_only=False)


def show(image: np.ndarray) -> str:
    """Show ``(B, H, W, C)`` or ``(H, W, C)`` arrays inline in a notebook; elsewhere only log. Returns how."""
    a = np.asarray(image, dtype=np.float32)
    t = torch.from_numpy(a if a.ndim == 4 else a[None]).permute(0, 3, 1, 2)
    return _display(_strip(t), inline_only=True)


class ModelHook:
    """Lucent's ``T``: ``T(name)`` is the latest output of the module ``name`` (Lucent's underscore
    names or dotted ones), ``T("input")`` is ``image_f()``, ``T("labels")`` the output of the module that
    ran last. Records every module, keeping the graph, until :meth:`close` (or the end of a ``with``).

    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
    >>> with hook_model(m, lambda: torch.zeros(1, 3, 2, 2)) as T:
    ...     _ = m(torch.ones(1, 3, 2, 2))
    ...     tuple(T("0").shape), torch.equal(T("labels"), T("1"))
    ((1, 2, 2, 2), True)
    """

    def __init__(self, model: nn.Module, image_f: Callable[[], torch.Tensor]):
        self.model = model
        self.image_f = image_f
        self._recorder = ActivationRecorder(model, module_names(model), stop_early=False).__enter__()

    def __call__(self, layer: str) -> torch.Tensor:
        if layer == "input":
            return self.image_f()
        store = self._recorder._store
        if layer == objectives.LABELS:
            if not store:
                raise LayoutError("no module has run yet: call the model before reading T('labels')")
            return store[list(store)[-1]]
        name = resolve_name(self.model, layer)
        if name not in store:
            if not self._recorder._handles:
                raise LayoutError(f"layer {layer!r}: the hooks were removed (close() was called)")
            raise LayoutError(f"layer {layer!r} has no recorded output: call the model first "
                              "(it may not run during the forward pass)")
        return store[name]

    def close(self) -> None:
        """Remove the hooks (only those this object installed)."""
        self._recorder.remove()

    def __enter__(self) -> "ModelHook":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def hook_model(model: nn.Module, image_f: Callable[[], torch.Tensor]) -> ModelHook:
    """Record the outputs of every module of ``model`` and return Lucent's ``T`` (see :class:`ModelHook`).

    Unlike Lucent's, the hooks can be removed: use ``with hook_model(...) as T:`` or ``T.close()``.
    ``render_vis`` does not use it (devvis's render hooks only what the objective reads).
    """
    return ModelHook(model, image_f)

