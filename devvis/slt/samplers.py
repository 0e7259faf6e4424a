"""The SGLD samplers of the LLC estimator: one chain of localized Langevin steps.

With ε = ``lr``, γ = ``localization``, w* the anchors and the drift
``g = nβ·∇L_m(w) + γ(w − w*)`` (``L_m`` the minibatch loss):

SGLD (``"sgld"``):

    w ← w − (ε/2)·g + N(0, ε·I)

RMSProp-preconditioned SGLD (``"rmsprop_sgld"``, Li et al. 2016, without the small Γ
correction term, as is usual), per parameter tensor, α = ``alpha``, δ = ``eps``:

    V ← g⊙g at the first step, then V ← α·V + (1−α)·g⊙g
    G = 1 / (√V + δ)
    w ← w − (ε/2)·G⊙g + √(ε·G)⊙N(0, I)

>>> import numpy as np, torch
>>> from torch import nn
>>> model = nn.Linear(2, 1)
>>> x, y = torch.randn(8, 2), torch.zeros(8, 1)
>>> params = list(model.parameters())
>>> trace = np.full(5, np.nan)
>>> run_chain(model, iter([(x, y)] * 5), nn.functional.mse_loss, params, [p.detach().clone() for p in params],
...           trace, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), sampler="sgld",
...           lr=1e-4, localization=1.0, nbeta=4.0, num_burnin_steps=0, num_steps_bw_draws=1) is None
True
>>> bool(np.isfinite(trace).all())
True
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from devvis.slt.batches import Batch, Criterion, split_batch, to_device

__all__ = ["SAMPLERS", "run_chain"]

#: Sampler names accepted by :func:`~devvis.slt.estimate_llc`.
SAMPLERS: tuple[str, ...] = ("sgld", "rmsprop_sgld")


def _drifts(sampled: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None], anchors: Sequence[torch.Tensor],
            nbeta: float, localization: float) -> list[torch.Tensor]:
    """``g = nβ·∇L_m(w) + γ(w − w*)`` per sampled tensor (a missing gradient counts as zero)."""
    drifts = []
    for p, g, a in zip(sampled, grads, anchors):
        d = g * nbeta if g is not None else torch.zeros_like(p)
        if localization:
            d = d.add(p - a, alpha=localization)
        drifts.append(d)
    return drifts


def _sgld_step(sampled: Sequence[torch.Tensor], drifts: Sequence[torch.Tensor], *, lr: float,
               generator: torch.Generator, device: torch.device) -> None:
    half_lr, noise_std = lr / 2, math.sqrt(lr)
    for p, d in zip(sampled, drifts):
        p.add_(d, alpha=-half_lr)
        p.add_(torch.randn(p.shape, generator=generator, device=device, dtype=p.dtype), alpha=noise_std)


def _rmsprop_sgld_step(sampled: Sequence[torch.Tensor], drifts: Sequence[torch.Tensor],
                       sq_avg: list[torch.Tensor] | None, *, lr: float, alpha: float, eps: float,
                       generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """One preconditioned step; returns the running average V of the squared drift (created at the first step)."""
    if sq_avg is None:
        sq_avg = [d * d for d in drifts]
    else:
        for v, d in zip(sq_avg, drifts):
            v.mul_(alpha).addcmul_(d, d, value=1 - alpha)
    for p, d, v in zip(sampled, drifts, sq_avg):
        precond = 1.0 / (v.sqrt() + eps)
        p.add_(precond * d, alpha=-lr / 2)
        noise = torch.randn(p.shape, generator=generator, device=device, dtype=p.dtype)
        p.add_(noise * (precond * lr).sqrt())
    return sq_avg


def _trace_column(step: int, num_burnin_steps: int, num_steps_bw_draws: int) -> int | None:
    """Column of ``trace`` that records ``step``: every burn-in step, then every ``num_steps_bw_draws``-th step."""
    if step < num_burnin_steps:
        return step
    if (step - num_burnin_steps) % num_steps_bw_draws == 0:
        return num_burnin_steps + (step - num_burnin_steps) // num_steps_bw_draws
    return None


def run_chain(model: nn.Module, batches: Iterator[Batch], criterion: Criterion, sampled: Sequence[torch.Tensor],
              anchors: Sequence[torch.Tensor], trace: np.ndarray, *, device: torch.device,
              generator: torch.Generator, sampler: str, lr: float, localization: float, nbeta: float,
              num_burnin_steps: int, num_steps_bw_draws: int, steps: int | None = None, alpha: float = 0.99,
              eps: float = 1.0, bar: tqdm | None = None) -> tuple[int, float] | None:
    """Run one chain of ``steps`` sampler steps on the tensors ``sampled`` (moved in place).

    Args:
        model, criterion: the loss at each step is ``criterion(model(inputs), targets)`` on
            the next batch of ``batches`` (an endless iterator, see :func:`~devvis.slt.batches.cycle`).
        sampled: the parameters being sampled (``requires_grad=True``); ``anchors``: their
            values w* (same shapes), the centre of the localization.
        trace: float array ``(num_burnin_steps + num_draws,)``; the recorded minibatch losses
            are written into it (burn-in steps, then one per draw).
        generator: the noise generator on ``device`` (seeded per chain by the caller).
        sampler: one of :data:`SAMPLERS` (updates in the module docstring).
        steps: number of steps (default: as many as ``trace`` records).
        alpha, eps: α and δ of ``rmsprop_sgld``.
        bar: a tqdm bar advanced once per step.

    Returns:
        ``(step, value)`` when the loss became NaN/inf at ``step`` (the chain stops there),
        else None.
    """
    if steps is None:
        steps = num_burnin_steps + (len(trace) - num_burnin_steps) * num_steps_bw_draws
    sq_avg: list[torch.Tensor] | None = None
    for step in range(steps):
        x, y = to_device(split_batch(next(batches)), device)
        loss = criterion(model(x), y)
        value = float(loss.detach())
        col = _trace_column(step, num_burnin_steps, num_steps_bw_draws)
        if not math.isfinite(value):
            if bar is not None:
                bar.update(steps - step)
            return step, value
        if col is not None:
            trace[col] = value
        if loss.requires_grad:
            grads: Sequence[torch.Tensor | None] = torch.autograd.grad(loss, sampled, allow_unused=True)
        else:  # the loss does not depend on any sampled parameter: only the localization acts
            grads = (None,) * len(sampled)
        with torch.no_grad():
            drifts = _drifts(sampled, grads, anchors, nbeta, localization)
            if sampler == "sgld":
                _sgld_step(sampled, drifts, lr=lr, generator=generator, device=device)
            else:
                sq_avg = _rmsprop_sgld_step(sampled, drifts, sq_avg, lr=lr, alpha=alpha, eps=eps,
                                            generator=generator, device=device)
        if bar is not None:
            bar.update(1)
    return None
