"""``render()``: the one optimization loop of feature visualization, and its result.

    param --image [B,3,H,W] in [0,1]--> transforms (seeded) --> resize --> preprocess
       --> model forward, recording only the objective's layers, stopping after the last
       --> objective(acts) -> values [B] --> loss = -values.sum() --> backward into the param
       --> optimizer step --> snapshots at thresholds --> RenderResult

>>> import torchvision
>>> from devvis import render, objectives
>>> model = torchvision.models.resnet18(weights=None)
>>> result = render(model, objectives.channel("layer2.1", 3), steps=4, image_size=32, progress=False)
>>> tuple(result.images.shape), len(result.history)
((1, 3, 32, 32), 4)
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from devvis.architectures import input_errors, resolve_input_size
from devvis.errors import ConfigError, NonFiniteObjectiveError, ObjectiveError
from devvis.hooks import INPUT, ActivationRecorder, Activations, module_names, resolve_name
from devvis.objectives.core import Objective, as_objective
from devvis.render.result import RenderResult
from devvis.transforms import Resize, get as get_transforms, get_preprocess

Callback = Callable[[int, torch.Tensor, torch.Tensor], Any]
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class Convergence:
    """Stop when the objective stops improving.

    After at least ``min_steps`` steps, stop once the mean objective (over the
    batch) improved by less than ``tol`` relative to its magnitude over the last
    ``window`` steps: ``(mean(last window) - mean(window before)) / |mean(window before)| < tol``.

    >>> c = Convergence(tol=0.01, window=2)
    >>> c([1.0, 2.0, 2.0, 2.0, 2.0])
    True
    >>> c([1.0, 2.0, 3.0, 4.0])
    False
    """

    tol: float = 1e-3
    window: int = 32
    min_steps: int = 0

    def __call__(self, means: Sequence[float]) -> bool:
        n = len(means)
        if n < max(self.min_steps, 2 * self.window):
            return False
        prev = sum(means[n - 2 * self.window:n - self.window]) / self.window
        last = sum(means[n - self.window:]) / self.window
        return (last - prev) / max(abs(prev), 1e-8) < self.tol


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    if p is None:
        p = next(model.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


def _discover_layers(model: nn.Module, objective: Objective, x: torch.Tensor, image: torch.Tensor) -> list[str]:
    """Find the layers a plain-callable objective reads: one forward recording every module."""
    accessed: list[str] = []

    class Tracing(Activations):
        def __getitem__(self, name: str) -> torch.Tensor:
            t = super().__getitem__(name)
            accessed.append(self._key(name))
            return t

    names = module_names(model)
    with ActivationRecorder(model, names, stop_early=False, detach=True) as rec:
        with torch.no_grad():
            acts = rec.run(x, **{INPUT: image})
    try:
        with torch.no_grad():
            objective.fn(Tracing(dict(acts.items()), acts.layouts))
    except Exception as e:  # the user's function failed on real activations; report it
        raise ObjectiveError(
            f"objective {objective.description!r} failed while finding its layers: {type(e).__name__}: {e}") from e
    return list(dict.fromkeys(accessed))


def _natural_batch(objective: Objective) -> int:
    """Batch size implied by the objective (``channels()`` needs one image per channel)."""
    terms = getattr(objective, "terms", [(1.0, objective)])
    for _, o in terms:
        chans = o.fields.get("channels") if o.fields.get("objective_type") == "channels" else None
        if chans:
            return len(chans)
    return 1


#: Smallest batch x height x width of a recorded conv map for which channels-last pays on the CPU.
_CHANNELS_LAST_MIN_POSITIONS = 196


def _prefer_channels_last(device: torch.device, x: torch.Tensor, acts: Activations) -> bool:
    """Whether to feed the model a channels-last input for the rest of a CPU render.

    oneDNN's NHWC kernels make the forward + backward of convolutional models ~10-20% faster
    on the CPU (max-pooling several times faster), but slower on tiny maps at batch 1 (resnet18's
    7x7 ``layer4`` at batch 1: ~15% slower). Measured with ``benchmarks/run.py``; the rule: the
    smallest recorded conv map must hold at least 196 positions over the batch (one 14x14 map).
    """
    if device.type != "cpu" or x.dim() != 4:
        return False
    sizes = [t.shape[0] * t.shape[2] * t.shape[3] for k, t in acts.items()
             if k != INPUT and t.dim() == 4 and acts.layout(k) == "nchw"]
    return bool(sizes) and min(sizes) >= _CHANNELS_LAST_MIN_POSITIONS


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def render(
    model: nn.Module,
    objective: Any,
    param: nn.Module | None = None,
    *,
    steps: int = 512,
    thresholds: Iterable[int] | None = None,
    lr: float = 0.05,
    optimizer: Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer] | None = None,
    transforms: Any = "standard",
    preprocess: Any = "imagenet",
    input_size: int | tuple[int, int] | None = None,
    image_size: int | tuple[int, int] = 128,
    batch: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    stop_when: Callable[[Sequence[float]], bool] | None = None,
    redirect_relu: bool = False,
    layouts: dict[str, str] | None = None,
) -> RenderResult:
    """Optimize images that maximize ``objective`` on ``model``.

    Parameters
    ----------
    model:
        Any ``nn.Module``. It is put in eval mode and its parameters frozen for
        the loop; mode, ``requires_grad`` and ``.grad`` are restored afterwards.
    objective:
        An :class:`~devvis.objectives.Objective`, a ``"layer:n"`` string, or a
        callable ``acts -> Tensor[B]``.
    param:
        Image parameterization (``nn.Module``, ``forward() -> (B, C, H, W)`` in
        [0, 1]). Default ``param.image(image_size, batch=batch, seed=seed)``.
    steps, lr, optimizer:
        Number of optimization steps; Adam with ``lr`` unless ``optimizer`` (a
        factory ``params -> Optimizer``; closure optimizers such as LBFGS work).
    thresholds:
        Steps at which to keep a snapshot of the images (default: the last).
    transforms, preprocess, input_size:
        Robustness transforms (``"standard"``, ``"none"``, a list or callable),
        model-input preprocessing (``"imagenet"``, ``"none"`` or callable) and
        a resize to the model's input size after the transforms. ``input_size=None``
        means the model's fixed size when it has one (torchvision ViT: ``model.image_size``;
        see :func:`devvis.architectures.resolve_input_size`), else no resize; an int or
        ``(h, w)`` overrides. An input too small for the model raises
        :class:`~devvis.errors.ConfigError` naming the model's minimum.
    seed:
        Seeds the default parameterization and the transforms' random stream.
    device:
        Where to run (default: the model's device). The model is moved there.
    precision:
        ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` autocast of the model forward.
    callbacks:
        Called as ``cb(step, images, values)`` after each step.
    stop_when:
        Called with the list of per-step batch-mean values; return True to stop
        (e.g. :class:`Convergence`).
    redirect_relu:
        Lucid's gradient trick for dead ReLUs during the first 16 steps, on every
        ``nn.ReLU`` and ``nn.ReLU6`` module (functional ``F.relu`` calls are not
        covered); the modules' own ``forward`` is restored afterwards.
    layouts:
        ``{layer: "nchw" | "nhwc" | "tokens" | "flat"}`` where the detected layout
        (:func:`devvis.hooks.infer_layout`) is wrong.

    Returns a :class:`RenderResult`. Ctrl-C ends the loop early and returns the
    images so far with ``status == "interrupted"``. A NaN or infinite objective
    raises :class:`~devvis.errors.NonFiniteObjectiveError` naming it and the step.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not valid; choose one of {PRECISIONS}")
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    objective = as_objective(objective)
    dev = torch.device(device) if device is not None else _model_device(model)
    thresholds = sorted(set(int(t) for t in (thresholds or (steps,))))
    bad = [t for t in thresholds if not 1 <= t <= steps]
    if bad:
        raise ConfigError(f"thresholds {bad} lie outside 1..{steps} (steps={steps})")
    gen = torch.Generator().manual_seed(int(seed))
    if param is None:
        from devvis.param import image as default_image

        w, h = (image_size, image_size) if isinstance(image_size, int) else (image_size[1], image_size[0])
        param = default_image(w, h, batch=batch or _natural_batch(objective), seed=seed)
    param = param.to(dev)
    tf = get_transforms(transforms)
    input_size = resolve_input_size(model, input_size)  # None: the model's fixed size (ViT: 224), if any
    resize = Resize(input_size) if input_size is not None else None
    pre = get_preprocess(preprocess)

    was_training = model.training
    saved_rg = [(p, p.requires_grad) for p in model.parameters()]
    model.to(dev)
    model.eval()
    for p, _ in saved_rg:
        p.requires_grad_(False)

    def model_input(img: torch.Tensor) -> torch.Tensor:
        x = tf(img, generator=gen)
        if resize is not None:
            x = resize(x)
        return pre(x)

    t0 = time.perf_counter()
    relu_ctx = contextlib.nullcontext()
    if redirect_relu:
        from devvis.redirect import redirected_relu

        relu_ctx = redirected_relu(model)
    try:
        with relu_ctx as relu_switch:
            if objective.layers is None:
                with torch.no_grad():
                    img0 = param()
                    x0 = model_input(img0)
                layers = _discover_layers(model, objective, x0, img0)
                # discovery consumed random numbers; restart the stream so a seed means the same run
                gen.manual_seed(int(seed))
            else:
                layers = [resolve_name(model, n) for n in objective.layers]
            params = [p for p in param.parameters() if p.requires_grad]
            if not params:
                raise ConfigError("the parameterization has no trainable parameters")
            opt = optimizer(params) if optimizer is not None else torch.optim.Adam(params, lr=lr)
            history: list[torch.Tensor] = []
            means: list[float] = []
            snapshots: dict[int, torch.Tensor] = {}
            status, converged_step = "completed", None
            last: dict[str, torch.Tensor] = {}
            bar = tqdm(total=steps, disable=not progress, desc=objective.description[:40], leave=False)
            # Memory format of the model input: decided once, after the first step (deterministic).
            fmt: dict[str, bool | None] = {"channels_last": None}
            with ActivationRecorder(model, layers, stop_early=True, layouts=layouts) as rec:
                def closure() -> torch.Tensor:
                    opt.zero_grad(set_to_none=True)
                    img = param()
                    x = model_input(img)
                    with _autocast(dev, precision), input_errors(model, x):
                        if fmt["channels_last"]:
                            try:
                                acts = rec.run(x.contiguous(memory_format=torch.channels_last), **{INPUT: img})
                            except RuntimeError:  # e.g. a model calling .view() on its maps: stay in NCHW
                                fmt["channels_last"] = False
                                acts = rec.run(x, **{INPUT: img})
                            else:  # objectives get contiguous maps, whatever format the model ran in
                                acts = Activations({k: v.contiguous() for k, v in acts.items()}, acts.layouts)
                        else:
                            acts = rec.run(x, **{INPUT: img})
                    if fmt["channels_last"] is None:
                        fmt["channels_last"] = _prefer_channels_last(dev, x, acts)
                    if precision != "fp32":
                        acts = Activations({k: v.float() for k, v in acts.items()}, acts.layouts)
                    values = objective(acts)
                    loss = -values.sum()
                    loss.backward()
                    last["values"], last["img"] = values.detach(), img.detach()
                    return loss

                step = 0
                try:
                    for step in range(1, steps + 1):
                        if relu_switch is not None and step == 17:
                            relu_switch.disable()
                        opt.step(closure)
                        values = last["values"]
                        if not torch.isfinite(values).all():
                            raise NonFiniteObjectiveError(
                                f"objective {objective.description!r} became {values.tolist()} at step {step}; "
                                "lower the learning rate or check the objective for divisions by zero")
                        history.append(values.float().cpu())
                        means.append(float(values.float().mean()))
                        if step in thresholds:
                            with torch.no_grad():
                                snapshots[step] = param().detach().float().cpu()
                        for cb in callbacks:
                            cb(step, last["img"], values)
                        bar.update(1)
                        if progress:
                            bar.set_postfix(objective=f"{means[-1]:.4g}")
                        if stop_when is not None and stop_when(means):
                            status, converged_step = "converged", step
                            break
                except KeyboardInterrupt:
                    status = "interrupted"
                    step = len(history)
                finally:
                    bar.close()
            with torch.no_grad():
                images = param().detach().float().cpu()
            if not torch.isfinite(images).all():
                # A NaN gradient at the last step leaves finite values but a NaN image, which
                # would otherwise be saved (as black) under a "completed" status.
                raise NonFiniteObjectiveError(
                    f"objective {objective.description!r}: the image became NaN or infinite after step {len(history)} "
                    "(its gradient was not finite); lower the learning rate or check the objective for divisions "
                    "by zero or square roots of zero")
    finally:
        for p, rg in saved_rg:
            p.requires_grad_(rg)
        model.train(was_training)
    elapsed = time.perf_counter() - t0
    hist = torch.stack(history) if history else torch.zeros(0, images.shape[0])
    config = {
        "steps": steps, "lr": lr, "optimizer": "adam" if optimizer is None else getattr(optimizer, "__name__", repr(optimizer)),
        "transforms": repr(tf) if not isinstance(transforms, str) else transforms, "preprocess": preprocess if isinstance(preprocess, (str, bool, type(None))) else repr(preprocess),
        "input_size": input_size, "image_size": list(images.shape[-2:]), "batch": images.shape[0], "seed": seed,
        "device": str(dev), "precision": precision, "thresholds": thresholds, "param": type(param).__name__,
        "redirect_relu": redirect_relu, "stop_when": repr(stop_when) if stop_when is not None else None,
    }
    return RenderResult(
        images=images, snapshots=snapshots, history=hist, objective=objective.description, layers=layers,
        config=config, steps_run=len(history), status=status, converged_step=converged_step, time_s=elapsed,
        fields={k: v for k, v in objective.fields.items() if k != "batch"},
    )


def component_stem(layer: str, channel: int | str, aggregation: str = "average", j: int = 0) -> str:
    """File stem of one component's image: ``layer_{layer}_channel_{c}_{aggregation}-{j}``."""
    safe = re.sub(r"[^A-Za-z0-9._\-\[\]]", "_", layer)
    return f"layer_{safe}_channel_{channel}_{aggregation}-{j}"
