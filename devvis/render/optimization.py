"""The state of one render between steps: :class:`RenderRun`.

The parts are built by :func:`devvis.render` and handed in; the run keeps what the
loop has recorded (values per step, snapshots) on itself, not in closures:

    images = param()                               (B, C, H, W) in [0, 1]
    acts = forward(model_input(images, generator), images)
    values = objective(acts)                       (B,), higher is better
    loss = -values.sum(); loss.backward(); optimizer.step()

>>> import torch
>>> from torch import nn
>>> from devvis import objectives, param as P
>>> from devvis.hooks import ActivationRecorder
>>> from devvis.render.forward import RecordedForward
>>> from devvis.render.pipeline import ModelInput
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
>>> image = P.image(16, seed=0)
>>> with ActivationRecorder(net, ["1"], stop_early=True) as rec:
...     run = RenderRun(image, objectives.channel("1", 0), ModelInput(net, preprocess=None),
...                     RecordedForward(net, rec), torch.optim.Adam(image.parameters(), lr=0.05),
...                     generator=torch.Generator().manual_seed(0), thresholds=[2])
...     _ = run.step(); _ = run.step()
>>> run.steps_run, sorted(run.snapshots), tuple(run.history_tensor(1).shape)
(2, [2], (2, 1))
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from torch import nn

from devvis.hooks import ActivationRecorder, CallPlan
from devvis.objectives.core import Objective
from devvis.render.forward import RecordedForward
from devvis.render.pipeline import ModelInput
from devvis.render.stopping import check_finite_values


class RenderRun:
    """One render's parts and what it has recorded so far.

    Args:
        param: the image parameterization, ``forward() -> (B, C, H, W)`` in [0, 1].
        objective: what to maximize, ``acts -> (B,)``.
        model_input: the image -> model-input pipeline (transforms, resize, preprocess).
        forward: the recorded model forward, ``(x, images) -> acts``.
        optimizer: over the parameters of ``param``; closure optimizers (LBFGS) work.
        generator: the random stream of the transforms.
        thresholds: steps at which to keep a snapshot of the images.

    Recorded: ``history`` (one ``(B,)`` CPU tensor per step), ``means`` (their batch means),
    ``snapshots`` (``{step: (B, C, H, W)}``), ``values`` and ``image`` of the last forward.
    """

    def __init__(self, param: nn.Module, objective: Objective, model_input: ModelInput, forward: RecordedForward,
                 optimizer: torch.optim.Optimizer, *, generator: torch.Generator, thresholds: Iterable[int] = ()):
        self.param = param
        self.objective = objective
        self.model_input = model_input
        self.forward = forward
        self.optimizer = optimizer
        self.generator = generator
        self.thresholds = frozenset(thresholds)
        self.history: list[torch.Tensor] = []
        self.means: list[float] = []
        self.snapshots: dict[int, torch.Tensor] = {}
        self.values: torch.Tensor | None = None
        self.image: torch.Tensor | None = None

    @property
    def steps_run(self) -> int:
        """Steps completed so far."""
        return len(self.history)

    def loss(self) -> torch.Tensor:
        """One forward and backward: ``-objective(acts).sum()`` (the optimizer's closure)."""
        self.optimizer.zero_grad(set_to_none=True)
        image = self.param()
        x = self.model_input(image, generator=self.generator, channels_last=self.forward.channels_last is True)
        acts = self.forward(x, image)
        values = self.objective(acts)
        loss = -values.sum()
        loss.backward()
        self.values, self.image = values.detach(), image.detach()
        return loss

    def step(self) -> torch.Tensor:
        """One optimizer step; records and returns the objective values ``(B,)`` it saw."""
        self.optimizer.step(self.loss)
        assert self.values is not None  # set by loss(), which every optimizer calls
        step = self.steps_run + 1
        values = self.values.float()
        mean = float(values.mean())
        if not math.isfinite(mean):  # a NaN or infinite value makes the mean so: check the values only then
            check_finite_values(values, self.objective.description, step)
        self.history.append(values.cpu())
        self.means.append(mean)
        if step in self.thresholds:
            self.snapshots[step] = self.images()
        return self.values

    @torch.no_grad()
    def images(self) -> torch.Tensor:
        """The current images ``(B, C, H, W)`` float32 in [0, 1], on the CPU."""
        return self.param().detach().float().cpu()

    def history_tensor(self, batch: int) -> torch.Tensor:
        """The values of every step, ``(steps_run, B)`` (``(0, batch)`` before the first step)."""
        return torch.stack(self.history) if self.history else torch.zeros(0, batch)


@torch.no_grad()
def untransformed_values(model: nn.Module, objective: Objective, images: torch.Tensor, model_input: ModelInput, *,
                         layers: Iterable[str], device: torch.device,
                         layouts: Mapping[str, str] | None = None, plan: CallPlan | None = None) -> torch.Tensor:
    """The objective on ``images`` ``(B, C, H, W)`` in [0, 1] *without* transforms, ``(B,)`` float32 on the CPU.

    The render's final value: ``model_input``'s resize and preprocessing, no random transforms,
    one fp32 forward without gradient, the path of :func:`devvis.objectives.evaluate` (so
    ``render(...).final_values`` equals ``evaluate(model, objective, result.images)``). The
    caller has borrowed ``model`` (:func:`devvis.state.frozen`). ``plan``: the render's
    :class:`~devvis.hooks.CallPlan`, so this forward also stops after the last needed layer.
    """
    clean = ModelInput(model, transforms=None, preprocess=model_input.preprocess_spec,
                       input_size=model_input.input_size)
    img = images.to(device, torch.float32)
    with ActivationRecorder(model, layers, stop_early=True, layouts=layouts, plan=plan) as rec:
        acts = RecordedForward(model, rec, precision="fp32", device=device, channels_last=False)(clean(img), img)
    return objective(acts).detach().float().cpu()
