"""Running all chains of an estimate together on one stacked state ``(C, D)``.

Two engines compute each chain's minibatch loss and its gradient at the chains' current weights:

* :class:`VmapEngine` — one ``torch.func.vmap`` over the chains (``functional_call`` with the
  stacked weights, each chain its own batch): one batched forward/backward per step.
* :class:`LoopEngine` — the fallback: writes each chain's weights into the model in turn.

``vectorize=True`` tries the vmap engine at the first step and falls back to the loop when the model
or the criterion cannot be vmapped (``.item()``, data-dependent control flow, ...); ``None`` (the
default) does so on CUDA only: on a CPU the vmapped convolutions were slower than the loop
(``benchmarks/LLC_RESULTS.md``: 0.42 vs 0.25 s per draw of 4 chains of a small ResNet). Both engines give
the same numbers up to float rounding, since the noise (one generator per chain) and the data (one
:class:`~devvis.slt.batches.SeededStream` per chain) do not depend on the engine.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree
from tqdm.auto import tqdm

from devvis.slt.batches import Batch, Criterion, split_batch, to_device
from devvis.slt.samplers import log_acceptance, sgld_step

__all__ = ["LoopEngine", "VmapEngine", "make_engine", "ChainSettings", "ChainStats", "ChainRun", "mean_square_grad"]


class LoopEngine:
    """Loss and gradient of each chain in turn, through the model's own parameters (``sampled``)."""

    name = "loop"

    def __init__(self, model: nn.Module, criterion: Criterion, sampled: Sequence[nn.Parameter]):
        self.model, self.criterion, self.sampled = model, criterion, list(sampled)
        self.shapes = [p.shape for p in self.sampled]
        self.sizes = [p.numel() for p in self.sampled]

    def __call__(self, w: torch.Tensor, batches: Sequence[Batch | None]) -> tuple[torch.Tensor, torch.Tensor]:
        losses = torch.full((w.shape[0],), math.nan, dtype=torch.float64)
        grads = torch.zeros_like(w)
        for c, batch in enumerate(batches):
            if batch is None:
                continue
            with torch.no_grad():
                for p, v in zip(self.sampled, w[c].split(self.sizes)):
                    p.copy_(v.view_as(p))
            x, y = batch
            loss = self.criterion(self.model(x), y)
            losses[c] = float(loss.detach())
            if loss.requires_grad and math.isfinite(losses[c]):
                gs = torch.autograd.grad(loss, self.sampled, allow_unused=True)
                grads[c] = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                      for g, p in zip(gs, self.sampled)])
        return losses, grads


class VmapEngine:
    """Loss and gradient of all chains in one ``torch.func.vmap`` (stacked weights, stacked batches)."""

    name = "vmap"

    def __init__(self, model: nn.Module, criterion: Criterion, names: Sequence[str], num_chains: int):
        from torch.func import functional_call, grad_and_value, vmap

        self.names = list(names)
        params = dict(model.named_parameters())
        self.shapes = [params[n].shape for n in self.names]
        self.sizes = [params[n].numel() for n in self.names]
        fixed = {n: p.detach() for n, p in params.items() if n not in set(self.names)}
        # Each chain keeps its own buffers (BatchNorm statistics move in train mode).
        self.buffers = {n: b.detach().unsqueeze(0).repeat(num_chains, *([1] * b.dim()))
                        for n, b in model.named_buffers()}

        def loss_of(weights: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: Any, y: Any):
            out = functional_call(model, {**fixed, **weights, **buffers}, (x,))
            return criterion(out, y)

        self._fn = vmap(grad_and_value(loss_of), in_dims=(0, 0, 0, 0), randomness="different")

    def __call__(self, w: torch.Tensor, batches: Sequence[Batch | None]) -> tuple[torch.Tensor, torch.Tensor]:
        present = next(b for b in batches if b is not None)
        filled = [b if b is not None else present for b in batches]
        x = pytree.tree_map(lambda *ts: torch.stack(ts), *[b[0] for b in filled])
        y = pytree.tree_map(lambda *ts: torch.stack(ts), *[b[1] for b in filled])
        weights = {n: v.view(w.shape[0], *s) for n, v, s in zip(self.names, w.split(self.sizes, dim=1), self.shapes)}
        grads, losses = self._fn(weights, self.buffers, x, y)
        flat = torch.cat([grads[n].reshape(w.shape[0], -1) for n in self.names], dim=1)
        losses = losses.detach().to(torch.float64).cpu()
        for c, b in enumerate(batches):
            if b is None:
                losses[c] = math.nan
        return losses, flat.detach()


def make_engine(model: nn.Module, criterion: Criterion, selected: Sequence[tuple[str, nn.Parameter]],
                num_chains: int, vectorize: bool | None, device: torch.device) -> "AutoEngine":
    """The engine for ``vectorize``: True (vmap, the loop if vmap fails), False (loop), None (True on CUDA,
    False elsewhere)."""
    if vectorize is None:
        vectorize = device.type == "cuda"
    return AutoEngine(model, criterion, selected, num_chains, vectorize)


class AutoEngine:
    """Tries :class:`VmapEngine` at the first call (``vectorize=True``) and keeps :class:`LoopEngine` when it fails."""

    def __init__(self, model: nn.Module, criterion: Criterion, selected: Sequence[tuple[str, nn.Parameter]],
                 num_chains: int, vectorize: bool):
        self.loop = LoopEngine(model, criterion, [p for _, p in selected])
        self.engine: Any = self.loop
        self.fallback_reason: str | None = None
        self._untried = bool(vectorize)
        self._args = (model, criterion, [n for n, _ in selected], num_chains)

    @property
    def name(self) -> str:
        return self.engine.name

    def __call__(self, w: torch.Tensor, batches: Sequence[Batch | None]) -> tuple[torch.Tensor, torch.Tensor]:
        if self._untried:
            self._untried = False
            try:
                engine = VmapEngine(*self._args)
                out = engine(w, batches)
                self.engine = engine
                return out
            except Exception as e:  # noqa: BLE001 - any vmap failure means "use the loop"
                self.fallback_reason = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        return self.engine(w, batches)


@dataclass
class ChainSettings:
    """The sampler and chain layout shared by every chain of an estimate."""

    sampler: str
    lr: float
    localization: float
    nbeta: float
    num_burnin_steps: int
    num_draws: int
    num_steps_bw_draws: int
    alpha: float = 0.99
    eps: float = 0.1
    mala_points: int = 32

    @property
    def steps(self) -> int:
        return self.num_burnin_steps + self.num_draws * self.num_steps_bw_draws

    def column(self, step: int) -> int | None:
        """Column of the trace that records ``step``: every burn-in step, then every ``num_steps_bw_draws``-th."""
        if step < self.num_burnin_steps:
            return step
        if (step - self.num_burnin_steps) % self.num_steps_bw_draws == 0:
            return self.num_burnin_steps + (step - self.num_burnin_steps) // self.num_steps_bw_draws
        return None

    def extended(self) -> "ChainSettings":
        """The layout an extension runs the chains on to (``estimate_llc(..., max_draws=...)``): twice the draws,
        and twice the burn-in; a zero burn-in becomes ``num_draws`` (the first run's draws become burn-in, so that
        a chain still rising from w* can settle before the draws)."""
        burnin = 2 * self.num_burnin_steps if self.num_burnin_steps else self.num_draws
        return dataclasses.replace(self, num_burnin_steps=burnin, num_draws=2 * self.num_draws)

    def mala_steps(self) -> set[int]:
        """Steps (after burn-in) at which the MALA acceptance is measured: at most ``mala_points``, evenly
        spaced, and at most one step in sixteen (each costs one more forward/backward pass)."""
        after = range(self.num_burnin_steps, self.steps)
        k = min(self.mala_points, max(1, len(after) // 16))
        if k <= 0:
            return set()
        return {after[int(i)] for i in np.linspace(0, len(after) - 1, k).round()}


@dataclass
class ChainStats:
    """Per-chain measurements beside the loss traces (``C`` entries each)."""

    stopped: dict[int, tuple[int, float]] = field(default_factory=dict)
    acceptance: list[float] = field(default_factory=list)
    pull_ratio: list[float] = field(default_factory=list)
    #: ``(C, T)``: |w − w*|² at every recorded step (the columns of the loss traces).
    distance: np.ndarray | None = None
    #: per chain, the sums over the draws of γ(w − w*)·g and of nβ·g_t·g_{t−1} (the pull ratio's parts)
    pull_sum: np.ndarray | None = None
    push_sum: np.ndarray | None = None

    def pooled_pull_ratio(self, chains: Sequence[int]) -> float:
        """The pull ratio of ``chains`` together (sums over their draws): the posterior's, less noisy than one chain's."""
        if self.pull_sum is None or self.push_sum is None or not len(chains):
            return math.nan
        p, q = float(self.pull_sum[list(chains)].sum()), float(self.push_sum[list(chains)].sum())
        return max(p, 0.0) / q if q > 0 else (math.inf if p > 0 else math.nan)
    engine: str = "loop"
    fallback_reason: str | None = None


def mean_square_grad(engine: AutoEngine, batches: Sequence[Any], anchor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The mean over ``batches`` of the squared raw minibatch gradient ``g⊙g`` at ``anchor`` ``(D,)``: the
    running average V of ``rmsprop_sgld`` in a chain that sits at w* (its warm start, see :class:`ChainRun`)."""
    total = torch.zeros_like(anchor)
    n = 0
    for batch in batches:
        _, grads = engine.loop(anchor.unsqueeze(0), [to_device(split_batch(batch), device)])
        total += grads[0] * grads[0]
        n += 1
    return total / max(n, 1)


class ChainRun:
    """Every chain of an estimate, advanced together from ``anchor`` ``(D,)``, and continuable.

    :meth:`advance` runs the chains to a layout's last step; a longer layout (more burn-in and draws)
    continues them where they stopped, with the same noise generators and data streams, so a run advanced to
    a layout in two calls gives the numbers of one call. Every step's loss, ``|w − w*|²``, pull terms and
    (at the MALA steps) acceptance are kept, and :meth:`traces` / :meth:`stats` read them for a layout.

    ``streams[c]`` yields chain c's batches, ``generators[c]`` its noise. A chain whose loss becomes NaN/inf
    stops there (its trace stays NaN from that step); the others go on. ``sq_avg`` ``(D,)``: the running
    average V of ``rmsprop_sgld`` to start from (None: V = 0 before the first step, as devinterp).
    ``mala_layouts``: the layouts the run may be advanced to; the MALA acceptance is measured at each one's
    points (:meth:`ChainSettings.mala_steps`) as they are passed, so that :meth:`stats` of a layout reads the
    points a fresh run of it measures. The measurement does not move the global RNG (dropout) that the
    chains' next steps read.
    """

    def __init__(self, engine: AutoEngine, streams: Sequence[Any], anchor: torch.Tensor,
                 generators: Sequence[torch.Generator], *, device: torch.device,
                 sq_avg: torch.Tensor | None = None, mala_layouts: Sequence[ChainSettings] = ()):
        C, D = len(streams), anchor.numel()
        self.engine, self.streams, self.anchor, self.generators, self.device = engine, streams, anchor, generators, device
        self.w = anchor.unsqueeze(0).repeat(C, 1)
        self.sq_avg = None if sq_avg is None else sq_avg.reshape(1, D).repeat(C, 1)
        self.prev: torch.Tensor | None = None
        self.active = [True] * C
        self.stopped: dict[int, tuple[int, float]] = {}
        self.step = 0
        self.mala_layouts = list(mala_layouts)
        #: per step ``(C, steps run)``: minibatch loss, |w − w*|², the pull ratio's two terms (NaN where not
        #: measured) and the MALA acceptance probability (NaN except at the MALA steps)
        self.loss, self.distance, self.pull, self.push, self.accept = (np.zeros((C, 0)) for _ in range(5))

    def _grow(self, steps: int) -> None:
        extra = steps - self.loss.shape[1]
        if extra > 0:
            pad = np.full((len(self.streams), extra), np.nan)
            self.loss, self.distance, self.pull, self.push, self.accept = (
                np.concatenate([a, pad], axis=1) for a in (self.loss, self.distance, self.pull, self.push, self.accept))

    def advance(self, settings: ChainSettings, bar: tqdm | None = None) -> None:
        """Run every chain on to ``settings.steps`` (nothing when it has got there already)."""
        s, C, D = settings, len(self.streams), self.anchor.numel()
        self._grow(s.steps)
        mala = settings.mala_steps().union(*(layout.mala_steps() for layout in self.mala_layouts))
        while self.step < s.steps and any(self.active):
            step, w = self.step, self.w
            batches = [to_device(split_batch(next(self.streams[c])), self.device) if self.active[c] else None
                       for c in range(C)]
            losses, grads = self.engine(w, batches)
            for c in range(C):
                if self.active[c] and not math.isfinite(float(losses[c])):
                    self.active[c] = False
                    self.stopped[c] = (step, float(losses[c]))
                    batches[c] = None
            if not any(self.active):
                break
            delta = w - self.anchor
            dist = (delta * delta).sum(1).double().cpu().numpy()
            if self.prev is not None:
                # γ(w − w*)·∇L against nβ|∇L|² (see diagnostics.pull_dominates); g_t·g_{t−1} (two minibatches)
                # estimates |∇L|² without the minibatch noise that |g_t|² adds
                pull = (s.localization * (delta * grads).sum(1)).double().cpu().numpy()
                push = (s.nbeta * (grads * self.prev).sum(1)).double().cpu().numpy()
            for c in range(C):
                if self.active[c]:
                    self.loss[c, step] = float(losses[c])
                    self.distance[c, step] = dist[c]
                    if self.prev is not None:
                        self.pull[c, step], self.push[c, step] = pull[c], push[c]
            noise = torch.stack([torch.randn(D, generator=g, device=self.device, dtype=w.dtype)
                                 for g in self.generators])
            new = sgld_step(w, grads, self.anchor, self.sq_avg, lr=s.lr, localization=s.localization, nbeta=s.nbeta,
                            noise=noise, sampler=s.sampler, alpha=s.alpha, eps=s.eps)
            if step in mala:
                # a measurement: where the MALA points lie (which depends on the layout) must not change the
                # dropout masks of the chains' next steps
                with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                    loss_new, grad_new = self.engine(new.w, batches)
                logacc = log_acceptance(w, new.w, loss=losses, loss_new=loss_new, grad=grads, grad_new=grad_new,
                                        anchor=self.anchor, precond=new.precond, lr=s.lr,
                                        localization=s.localization, nbeta=s.nbeta).cpu().numpy()
                for c in range(C):
                    if self.active[c] and math.isfinite(float(loss_new[c])):
                        self.accept[c, step] = (math.exp(min(0.0, float(logacc[c]))) if math.isfinite(logacc[c])
                                                else 0.0)
            if all(self.active):
                self.w = new.w
            else:
                self.w = torch.where(torch.tensor(self.active, device=w.device)[:, None], new.w, w)
            self.sq_avg, self.prev = new.sq_avg, grads
            self.step += 1
            if bar is not None:
                bar.update(C)

    def columns(self, settings: ChainSettings) -> np.ndarray:
        """The steps ``settings`` records: every burn-in step, then every ``num_steps_bw_draws``-th."""
        return np.array([t for t in range(settings.steps) if settings.column(t) is not None], dtype=int)

    def traces(self, settings: ChainSettings) -> np.ndarray:
        """The loss at the steps ``settings`` records ``(C, num_burnin_steps + num_draws)`` (NaN after a stop)."""
        return self.loss[:, self.columns(settings)].copy()

    def stats(self, settings: ChainSettings) -> ChainStats:
        """Acceptance, pull ratio and distance over the draws of ``settings`` (the steps run so far)."""
        cols = self.columns(settings)
        draws = cols[settings.num_burnin_steps:]
        stats = ChainStats(stopped=dict(self.stopped), distance=self.distance[:, cols].copy())
        mala = sorted(t for t in settings.mala_steps() if t < self.accept.shape[1])  # this layout's points only
        for c in range(len(self.streams)):
            a = self.accept[c, mala]
            a = a[np.isfinite(a)]
            # summed in step order, as the earlier single-call loop's running sum did (bit for bit)
            stats.acceptance.append(float(np.cumsum(a)[-1] / a.size) if a.size else math.nan)
        # summed in step order (cumsum), as the earlier loop's running sums were: np.sum's pairwise order differs in
        # the last bits when the terms are not float32 values
        pull = np.cumsum(np.where(np.isfinite(self.pull[:, draws]), self.pull[:, draws], 0.0), axis=1)[:, -1]
        push = np.cumsum(np.where(np.isfinite(self.push[:, draws]), self.push[:, draws], 0.0), axis=1)[:, -1]
        stats.pull_ratio = [float(max(p, 0.0) / q) if q > 0 else (math.inf if p > 0 else math.nan)
                            for p, q in zip(pull, push)]
        stats.pull_sum, stats.push_sum = pull, push
        stats.engine, stats.fallback_reason = self.engine.name, self.engine.fallback_reason
        return stats

