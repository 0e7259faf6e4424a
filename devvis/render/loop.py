"""``render()``: feature visualization by activation maximization, as a short loop over named parts.

    param --images (B, 3, H, W) in [0, 1]--> ModelInput: transforms (seeded) -> resize -> preprocess
       --> RecordedForward: the model, recording only the objective's layers, stopping after the last
       --> objective(acts) -> values (B,) --> loss = -values.sum() --> backward into the param
       --> optimizer step (and scheduler step) --> snapshots at thresholds --> RenderResult

The parts live in their own modules: :mod:`~devvis.render.pipeline` (what the model sees),
:mod:`~devvis.render.forward`, :mod:`~devvis.render.discover` (which layers an objective reads),
:mod:`~devvis.render.optimization` (the run's state), :mod:`~devvis.render.stopping`,
:mod:`~devvis.render.redirect`, :mod:`~devvis.render.fold` (BatchNorm folded into the convolution before
it, a ReLU moved after the max-pool that reads it, during the steps), :mod:`~devvis.render.heap` (the C
heap kept during a CPU render) and :mod:`~devvis.render.result`. The model is borrowed through
:func:`devvis.state.frozen`.

>>> import torchvision
>>> from devvis import render, objectives
>>> model = torchvision.models.resnet18(weights=None)
>>> result = render(model, objectives.channel("layer2.1", 3), steps=4, image_size=32, progress=False)
>>> tuple(result.images.shape), len(result.history)
((1, 3, 32, 32), 4)
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from devvis.errors import ConfigError
from devvis.hooks import ActivationRecorder
from devvis.objectives.core import as_objective
from devvis.param import image as image_param
from devvis.render.discover import objective_batch, objective_layers
from devvis.render.fold import folded_batchnorm, relu_after_pool, weights_cast_once
from devvis.render.forward import RecordedForward, check_precision
from devvis.render.heap import kept_heap
from devvis.render.optimization import RenderRun, untransformed_values
from devvis.render.pipeline import ModelInput, model_input_channels
from devvis.render.redirect import REDIRECT_RELU_STEPS, maybe_redirected_relu
from devvis.render.result import RenderResult
from devvis.render.stopping import StopRule, StopWhen, check_finite_images
from devvis.state import as_device, frozen, model_device
from devvis.typing import DeviceLike, ObjectiveLike, PreprocessLike, TransformsLike

Callback = Callable[[int, torch.Tensor, torch.Tensor], Any]
"""``cb(step, images, values)``: observes a step (``images`` ``(B, C, H, W)`` as the step saw them, ``values`` ``(B,)``)."""

OptimizerFactory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]
"""``params -> Optimizer`` (e.g. ``lambda ps: torch.optim.Adam(ps, lr=0.05)``)."""

SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
"""``optimizer -> LRScheduler`` (e.g. ``lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, 512)``)."""


def render(
    model: nn.Module,
    objective: ObjectiveLike,
    param: nn.Module | None = None,
    *,
    steps: int = 512,
    thresholds: Iterable[int] | None = None,
    lr: float = 0.05,
    optimizer: OptimizerFactory | None = None,
    scheduler: SchedulerFactory | None = None,
    transforms: TransformsLike = "standard",
    preprocess: PreprocessLike = "auto",
    input_size: int | tuple[int, int] | None = None,
    image_size: int | tuple[int, int] = 128,
    batch: int | None = None,
    seed: int = 0,
    device: DeviceLike = None,
    precision: str = "fp32",
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    stop_when: StopWhen | None = None,
    redirect_relu: bool = False,
    layouts: dict[str, str] | None = None,
    fold_batchnorm: bool = True,
) -> RenderResult:
    """Optimize images ``(B, C, H, W)`` in [0, 1] that maximize ``objective`` on ``model``.

    Args:
        model: any ``nn.Module``, borrowed through :func:`devvis.state.frozen`: every submodule
            in eval mode and every parameter frozen during the loop; each submodule's mode,
            ``requires_grad``, ``.grad`` and the device are restored afterwards.
        objective: an :class:`~devvis.objectives.Objective`, a ``"layer:n"`` string, or a
            callable ``acts -> Tensor[B]`` (its layers are found by one probing forward pass).
        param: image parameterization (``nn.Module``, ``forward() -> (B, C, H, W)`` in [0, 1]);
            default ``param.image(image_size, batch=batch, seed=seed)``, with ``batch`` defaulting to
            the objective's (``channels(layer, [c0, c1, c2])``: 3 images), else 1.
        steps: number of optimization steps.
        thresholds: steps at which to keep a snapshot of the images (default: the last).
        lr, optimizer: Adam with ``lr`` unless ``optimizer`` (a factory ``params -> Optimizer``;
            closure optimizers such as LBFGS work).
        scheduler: a factory ``optimizer -> torch.optim.lr_scheduler.LRScheduler``; the scheduler is
            stepped once after every step (after the callbacks), e.g.
            ``scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)``.
        transforms, preprocess, input_size: the model-input pipeline
            (:class:`~devvis.render.pipeline.ModelInput`): robustness transforms (``"standard"``,
            ``"none"``/``None``, a list or callable), then a resize to ``input_size`` (``None``: the
            model's fixed size if it has one, e.g. ViT's 224), then preprocessing (``"auto"``: the
            model's own default, ``"imagenet"`` unless the model says otherwise; ``None``: identity).
            An input too small for the model raises :class:`~devvis.errors.ConfigError`.
        image_size: ``H = W`` or ``(H, W)`` of the default parameterization.
        seed: seeds the default parameterization and the transforms' random stream.
        device: where to run (default: the model's device); the model is moved back afterwards.
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` autocast of the model forward.
        progress: show a progress bar.
        callbacks: called as ``cb(step, images, values)`` after each step, to observe.
        stop_when: called with the list of per-step batch-mean values; return True to stop
            (e.g. :class:`~devvis.render.stopping.Convergence`); the status is then ``"converged"``.
        redirect_relu: Lucid's gradient trick for dead units during the first 16 steps, on every
            ``nn.ReLU`` and ``nn.ReLU6`` module and every GELU of the model's forward pass
            (see :mod:`devvis.render.redirect`).
        layouts: ``{layer: "nchw" | "nhwc" | "tokens" | "flat"}`` where the detected layout is wrong.
        fold_batchnorm: run each eval-mode ``BatchNorm2d`` folded into the ``Conv2d`` before it during the
            steps (:mod:`devvis.render.fold`: the same function, 7–11% faster on resnet18; a conv whose output
            the objective reads is left alone). The final values are computed on the model as given. (A ReLU
            whose output only a max-pool reads always runs after that pool during the steps: the same values
            and gradients bit for bit, :func:`~devvis.render.fold.relu_after_pool`.)

    Returns a :class:`~devvis.render.result.RenderResult`: ``images`` ``(B, C, H, W)`` float in [0, 1]
    on the CPU, ``history`` ``(steps_run, B)`` (the values under the random transforms, each step),
    ``final_values`` ``(B,)`` (the objective on the returned images without transforms: one extra
    forward at the end), snapshots, status. Ctrl-C ends the loop early and
    returns the images so far with ``status == "interrupted"``. A NaN or infinite objective raises
    :class:`~devvis.errors.NonFiniteObjectiveError` naming it and the step.
    """
    check_precision(precision)
    stop = StopRule(steps, stop_when)
    objective = as_objective(objective)
    dev = as_device(device) or model_device(model)
    thresholds = _thresholds(thresholds, steps)
    generator = torch.Generator().manual_seed(int(seed))
    if param is None:
        param = default_param(image_size, batch or objective_batch(objective), seed, model_input_channels(model))
    param = param.to(dev)
    model_input = ModelInput(model, transforms=transforms, preprocess=preprocess, input_size=input_size)
    t0 = time.perf_counter()
    # kept_heap: a step's freed tensors are reused by the next instead of faulted in again (render/heap.py)
    with kept_heap(dev), frozen(model, device=dev), maybe_redirected_relu(model, redirect_relu) as relu:
        with torch.no_grad():
            image0 = param()
            layers = objective_layers(model, objective, model_input(image0, generator=generator), image0)
        generator.manual_seed(int(seed))  # finding layers may draw random numbers: restart the stream
        fold = folded_batchnorm(model, keep=layers) if fold_batchnorm else contextlib.nullcontext([])
        # frozen weights in the form the calls need, made once: cast to bf16/fp16 under autocast (the same
        # values), laid out channels-last for a channels-last input
        cast = weights_cast_once(model)
        with fold as folded, relu_after_pool(model, keep=layers) as pooled, cast, ActivationRecorder(model, layers, stop_early=True, layouts=layouts) as recorder:
            run = RenderRun(param, objective, model_input,
                            RecordedForward(model, recorder, precision=precision, device=dev),
                            _optimizer(param, optimizer, lr), generator=generator, thresholds=thresholds)
            sched = _scheduler(scheduler, run.optimizer)
            bar = tqdm(total=steps, disable=not progress, desc=objective.description[:40], leave=False)
            status = None
            try:
                while status is None:
                    if relu is not None and run.steps_run >= REDIRECT_RELU_STEPS:
                        relu.disable()
                    values = run.step()
                    for cb in callbacks:
                        cb(run.steps_run, run.image, values)
                    if sched is not None:
                        sched.step()
                    bar.update(1)
                    if progress:
                        bar.set_postfix(objective=f"{run.means[-1]:.4g}")
                    status = stop(run.means)
            except KeyboardInterrupt:
                status = "interrupted"
            finally:
                bar.close()
        images = run.images()
        check_finite_images(images, objective.description, run.steps_run)
        # the final value is the objective on the returned images, without the random transforms
        final = untransformed_values(model, objective, images, model_input, layers=layers, device=dev,
                                     layouts=layouts, plan=recorder.plan)
    config = _config(model_input, param, images, steps=steps, lr=lr, optimizer=optimizer, scheduler=scheduler,
                     transforms=transforms, seed=seed, device=dev, precision=precision, thresholds=thresholds,
                     redirect_relu=redirect_relu, stop_when=stop_when, folded=len(folded), pooled=len(pooled))
    return RenderResult(
        images=images, snapshots=run.snapshots, history=run.history_tensor(images.shape[0]),
        objective=objective.description, layers=layers, config=config, steps_run=run.steps_run, status=status,
        converged_step=run.steps_run if status == "converged" else None, time_s=time.perf_counter() - t0,
        fields={k: v for k, v in objective.fields.items() if k != "batch"}, final=final,
    )


def _thresholds(thresholds: Iterable[int] | None, steps: int) -> list[int]:
    """Sorted snapshot steps (default: the last step); each must lie in ``1..steps``."""
    ts = sorted(set(int(t) for t in (thresholds or (steps,))))
    bad = [t for t in ts if not 1 <= t <= steps]
    if bad:
        raise ConfigError(f"thresholds {bad} lie outside 1..{steps} (steps={steps})")
    return ts


def default_param(image_size: int | tuple[int, int], batch: int, seed: int, channels: int = 3) -> nn.Module:
    """``param.image`` of ``image_size`` (``H = W`` or ``(H, W)``), seeded, with the model's input channels:
    what :func:`render` optimizes when given no parameterization."""
    w, h = (image_size, image_size) if isinstance(image_size, int) else (image_size[1], image_size[0])
    return image_param(w, h, batch=batch, seed=seed, channels=channels)


def _optimizer(param: nn.Module, factory: OptimizerFactory | None, lr: float) -> torch.optim.Optimizer:
    """The optimizer over the param's trainable parameters (Adam with ``lr`` unless ``factory``)."""
    params = [p for p in param.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the parameterization has no trainable parameters")
    return factory(params) if factory is not None else torch.optim.Adam(params, lr=lr)


def _scheduler(factory: SchedulerFactory | None, optimizer: torch.optim.Optimizer) -> Any:
    """``factory(optimizer)``, checked to be something with ``step()``; ``None`` without a factory."""
    if factory is None:
        return None
    if not callable(factory):
        raise ConfigError(f"scheduler must be a callable optimizer -> LRScheduler, got {factory!r}")
    sched = factory(optimizer)
    if not callable(getattr(sched, "step", None)):
        raise ConfigError(f"scheduler factory {_name(factory)} returned {sched!r}, which has no step(); "
                          "return a torch.optim.lr_scheduler.LRScheduler")
    return sched


def _name(fn: object) -> str:
    return getattr(fn, "__name__", None) or repr(fn)


def _config(model_input: ModelInput, param: nn.Module, images: torch.Tensor, *, steps: int, lr: float,
            optimizer: OptimizerFactory | None, scheduler: SchedulerFactory | None, transforms: TransformsLike,
            seed: int, device: torch.device, precision: str, thresholds: list[int], redirect_relu: bool,
            stop_when: StopWhen | None, folded: int, pooled: int) -> dict[str, Any]:
    """The settings of a render as stored in its result (JSON-friendly)."""
    pre = model_input.preprocess_spec
    return {
        "steps": steps, "lr": lr, "optimizer": "adam" if optimizer is None else _name(optimizer),
        "scheduler": None if scheduler is None else _name(scheduler),
        "transforms": transforms if isinstance(transforms, str) else repr(model_input.transforms),
        "preprocess": pre if isinstance(pre, str) else repr(pre),
        "input_size": model_input.input_size, "image_size": list(images.shape[-2:]), "batch": images.shape[0],
        "seed": seed, "device": str(device), "precision": precision, "thresholds": thresholds,
        "param": type(param).__name__, "redirect_relu": redirect_relu,
        "stop_when": repr(stop_when) if stop_when is not None else None, "folded_batchnorm": folded,
        "relu_after_pool": pooled,
    }
