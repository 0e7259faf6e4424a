"""Local learning coefficient (LLC) estimation by SGLD, localized at the current weights.

The local learning coefficient λ(w*) of singular learning theory measures how
degenerate the loss landscape is around a local minimum w*: the volume of the set
of parameters whose loss is within ε of L(w*) scales like ε^λ. A regular model
with d parameters has λ = d/2; degenerate (singular) directions lower it.

Estimator (Lau et al. 2023, "The Local Learning Coefficient: a singularity-aware
complexity measure"): sample the tempered posterior localized at w*,

    p(w) ∝ exp(-nβ·L_n(w) - γ/2·|w - w*|²),

with stochastic-gradient Langevin dynamics, and report

    λ̂(w*) = nβ · (E_p[L_n(w)] - L_n(w*)).

Conventions used here (they are recorded in every result):

* ``criterion(model(x), y)`` must return the *mean* per-sample negative
  log-likelihood of the batch (cross-entropy for classifiers is exactly that).
  For regression with Gaussian noise of variance σ², the NLL is
  ``((y - f(x))**2).sum(-1).mean() / (2σ²)`` up to a constant; torch's
  ``mse_loss`` differs from it by a constant factor, which changes the effective
  temperature but not the asymptotic λ.
* ``nβ`` (the inverse temperature times the data size) defaults to ``m/log m``
  with ``m`` the loader's batch size (the devinterp convention); Watanabe's
  WBIC temperature for ``n`` data points is ``n/log n``, pass it as ``nbeta``
  when you want that.
* ``L_n(w*)`` is the mean loss over the loader (or its first
  ``init_loss_batches`` batches) at w*, weighted by batch size.
* The sampled loss at each step is the minibatch loss at the current weights,
  computed in the same forward pass as the gradient.

SGLD update (``sampler="sgld"``), with ε = ``lr``, γ = ``localization``:

    w ← w − (ε/2)·(nβ·∇L_m(w) + γ(w − w*)) + N(0, ε·I)

RMSProp-preconditioned SGLD (``sampler="rmsprop_sgld"``, Li et al. 2016, without
the small Γ correction term, as is usual), per parameter tensor, with
``g = nβ·∇L_m(w) + γ(w − w*)``, α = ``rmsprop_alpha``, δ = ``rmsprop_eps``:

    V ← g⊙g at the first step, then V ← α·V + (1−α)·g⊙g
    G = 1 / (√V + δ)
    w ← w − (ε/2)·G⊙g + √(ε·G)⊙N(0, I)

Example:

>>> import torch
>>> from torch import nn
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(256, 3, generator=g)
>>> model = nn.Linear(3, 1)
>>> y = model(x).detach()      # the model is exactly right at its current weights
>>> loader = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 256, 64)]
>>> res = estimate_llc(model, loader, lambda out, t: ((out - t) ** 2).sum(-1).mean() / 2,
...                    lr=1e-3, localization=1.0, num_draws=100, progress=False)
>>> 0.5 < res.llc_mean < 4.0   # 4 parameters: λ = d/2 = 2 for this regular model
True
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from devvis.errors import ConfigError, LayerNotFoundError

__all__ = [
    "LLCResult",
    "LLCDiagnosticWarning",
    "estimate_llc",
    "default_nbeta",
    "SAMPLERS",
]

#: Sampler names accepted by :func:`estimate_llc`.
SAMPLERS: tuple[str, ...] = ("sgld", "rmsprop_sgld")

#: A chain counts as "still trending" when the least-squares line through the last
#: half of its draws changes by more than ``max(std, TREND_RELATIVE * |mean - L(w*)|)``
#: over that half: larger than the fluctuation of the trace *and* larger than 10% of
#: the loss rise the estimate is made of (so the estimate would still move by >10%).
TREND_RELATIVE = 0.1

#: A chain counts as "diverged" when its estimate exceeds this many times d/2 (d = number of
#: sampled parameters). The true learning coefficient never exceeds d/2; a well-mixed chain
#: of a regular model fluctuates around d/2, so the flag leaves room for that noise.
DIVERGENCE_FACTOR = 2.0


class LLCDiagnosticWarning(UserWarning):
    """An LLC chain looked unhealthy (NaN loss, divergence, or still trending)."""


@dataclass
class LLCResult:
    """Outcome of :func:`estimate_llc`.

    Attributes:
        llc_mean: mean of the per-chain estimates over the finite chains (NaN if none).
        llc_std: sample standard deviation (ddof=1) over the finite chains; NaN with
            fewer than two finite chains.
        llc_per_chain: one estimate per chain, NaN for chains stopped by a NaN/inf loss.
        loss_traces: float64 array ``(num_chains, num_burnin_steps + num_draws)``: the
            minibatch loss at every burn-in step, then at every draw. Columns before
            ``num_burnin_steps`` are burn-in (not used in the estimate). A chain stopped
            early is NaN from the step that failed onwards.
        num_burnin_steps: number of leading burn-in columns in ``loss_traces``.
        init_loss: ``L_n(w*)``, the mean loss over the loader at the given weights.
        nbeta: the inverse temperature ``nβ`` used.
        hyperparameters: every setting (sampler, lr, localization, nbeta and its
            source, chains, draws, burn-in, thinning, seed, mode, sampled parameters).
        diagnostics: human-readable findings, one string each (empty when all is well).
        flags: ``{"nan": [...], "diverged": [...], "trending": [...]}``: chain indices.
        time_s: wall time of the whole estimate.
    """

    llc_mean: float
    llc_std: float
    llc_per_chain: list[float]
    loss_traces: np.ndarray
    num_burnin_steps: int
    init_loss: float
    nbeta: float
    hyperparameters: dict[str, Any]
    diagnostics: list[str] = field(default_factory=list)
    flags: dict[str, list[int]] = field(default_factory=dict)
    time_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the estimate is finite and no chain diverged."""
        return math.isfinite(self.llc_mean) and not self.flags.get("diverged")

    @property
    def draw_traces(self) -> np.ndarray:
        """The loss at the draws only (burn-in removed): ``(num_chains, num_draws)``."""
        return self.loss_traces[:, self.num_burnin_steps :]

    def to_dict(self, include_traces: bool = True) -> dict[str, Any]:
        """JSON-ready dictionary (NaN stays NaN here; :func:`devvis.io.write_json` writes null)."""
        out: dict[str, Any] = {
            "llc_mean": float(self.llc_mean),
            "llc_std": float(self.llc_std),
            "llc_per_chain": [float(v) for v in self.llc_per_chain],
            "init_loss": float(self.init_loss),
            "nbeta": float(self.nbeta),
            "ok": self.ok,
            "hyperparameters": dict(self.hyperparameters),
            "diagnostics": list(self.diagnostics),
            "flags": {k: list(v) for k, v in self.flags.items()},
            "time_s": float(self.time_s),
            "num_burnin_steps": int(self.num_burnin_steps),
        }
        if include_traces:
            out["loss_traces"] = self.loss_traces.tolist()
        return out

    def plot_traces(self, path: str | Path, title: str | None = None) -> None:
        """Write a PNG of the loss traces (one line per chain; burn-in shaded; L(w*) dashed)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from devvis.io import write_figure

        fig, ax = plt.subplots(figsize=(7, 4))
        plot_traces_on(ax, self)
        ax.set_title(title or f"LLC = {_fmt(self.llc_mean)} ± {_fmt(self.llc_std)}  (nβ = {self.nbeta:.4g})")
        ax.legend(loc="best", fontsize=7)
        write_figure(path, fig)


def plot_traces_on(ax: Any, result: LLCResult) -> None:
    """Draw ``result``'s loss traces on a matplotlib axis (used by the sweep grid too)."""
    steps = np.arange(result.loss_traces.shape[1])
    for c, trace in enumerate(result.loss_traces):
        ax.plot(steps, trace, lw=0.8, label=f"chain {c}")
    if result.num_burnin_steps:
        ax.axvspan(0, result.num_burnin_steps, color="0.9", label="burn-in")
    ax.axhline(result.init_loss, color="k", ls="--", lw=0.8, label="L(w*)")
    ax.set_xlabel("step (burn-in, then draws)")
    ax.set_ylabel("minibatch loss")


def _fmt(v: float) -> str:
    return f"{v:.3g}" if math.isfinite(v) else "nan"


def default_nbeta(batch_size: int) -> float:
    """The default inverse temperature ``m / log m`` for minibatch size ``m``.

    >>> round(default_nbeta(100), 2)
    21.71
    """
    if batch_size < 2:
        raise ConfigError(f"cannot derive nbeta = m/log(m) from batch size {batch_size}; pass nbeta explicitly")
    return batch_size / math.log(batch_size)


def _batch_size_of(loader: Iterable) -> int:
    bs = getattr(loader, "batch_size", None)
    if isinstance(bs, int) and bs > 0:
        return bs
    inputs, _ = _split_batch(next(iter(loader)))
    return _leading_dim(inputs)


def _leading_dim(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return int(x.shape[0]) if x.dim() else 1
    if isinstance(x, (list, tuple)) and x:
        return _leading_dim(x[0])
    if isinstance(x, dict) and x:
        return _leading_dim(next(iter(x.values())))
    return 1


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ConfigError(
        f"each batch must be an (inputs, targets) pair, got {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, (list, tuple)) else "")
    )


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def _cycle(loader: Iterable) -> Iterator[Any]:
    """Iterate ``loader`` forever, restarting it when exhausted."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError("the loader yielded no batches")


def _chain_seed(seed: int, chain: int) -> int:
    """A 63-bit seed mixed from ``(seed, chain)``; chain -1 is the initial-loss pass."""
    # SeedSequence mixes the pair so that nearby seeds or chains give unrelated streams.
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, int(chain) + 1]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def resolve_params(model: nn.Module, names: Iterable[str] | None) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs selected by module or parameter ``names`` (all if None).

    A module name selects all parameters below it; a parameter name selects that one.
    Raises :class:`~devvis.errors.LayerNotFoundError` for a name that is neither.
    """
    named = dict(model.named_parameters())
    if names is None:
        return list(named.items())
    if isinstance(names, str):
        names = [names]
    modules = dict(model.named_modules())
    chosen: dict[str, nn.Parameter] = {}
    for name in names:
        if name in named:
            chosen[name] = named[name]
        elif name in modules:
            sub = list(modules[name].named_parameters(prefix=name))
            if not sub:
                raise ConfigError(f"module {name!r} has no parameters to sample")
            chosen.update(sub)
        else:
            raise LayerNotFoundError(name, [n for n in modules if n] + list(named))
    if not chosen:
        raise ConfigError("params selected no parameters; give module or parameter names of the model")
    # Keep the model's own order so results do not depend on how names were listed.
    return [(n, p) for n, p in named.items() if n in chosen]


@contextlib.contextmanager
def _restored(model: nn.Module, device: torch.device | None) -> Iterator[None]:
    """Restore weights, buffers, requires_grad, .grad, train/eval mode and device on exit.

    The saved copies are made before anything is touched; the ``finally`` runs on
    exceptions and KeyboardInterrupt too, so the model always comes back bit-exact.
    """
    params = list(model.named_parameters())
    buffers = list(model.named_buffers())
    saved_p = [p.detach().clone() for _, p in params]
    saved_b = [b.detach().clone() for _, b in buffers]
    saved_rg = [p.requires_grad for _, p in params]
    saved_grad = [None if p.grad is None else p.grad.detach().clone() for _, p in params]
    saved_mode = [(m, m.training) for m in model.modules()]
    orig_devices = {p.device for _, p in params} | {b.device for _, b in buffers}
    moved = device is not None and orig_devices != {device}
    if moved and len(orig_devices) > 1:
        raise ConfigError(
            f"model spans several devices {sorted(map(str, orig_devices))}; leave device=None to sample in place"
        )
    try:
        if moved:
            model.to(device)
        yield
    finally:
        if moved:
            model.to(next(iter(orig_devices)))
        with torch.no_grad():
            for (_, p), s, rg, g in zip(params, saved_p, saved_rg, saved_grad):
                p.copy_(s)
                p.requires_grad_(rg)
                p.grad = g
            for (_, b), s in zip(buffers, saved_b):
                b.copy_(s)
        for m, training in saved_mode:
            m.train(training)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _fork_rng(seed: int, device: torch.device):
    devices = [device] if device.type == "cuda" else []
    ctx = torch.random.fork_rng(devices=devices)

    @contextlib.contextmanager
    def seeded() -> Iterator[None]:
        with ctx:
            torch.manual_seed(seed)
            yield

    return seeded()


def _batch_weighted_loss(model, loader, criterion, device, max_batches) -> float:
    total, weight = 0.0, 0
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = _to_device(_split_batch(batch), device)
            n = _leading_dim(x)
            total += float(criterion(model(x), y)) * n
            weight += n
    if weight == 0:
        raise ConfigError("the loader yielded no batches")
    return total / weight


def _trend_change(draws: np.ndarray) -> tuple[float, float]:
    """Fitted change of the least-squares line over the last half of ``draws``, and their std."""
    half = draws[len(draws) // 2 :]
    if len(half) < 4:
        return 0.0, 0.0
    t = np.arange(len(half), dtype=np.float64)
    slope = np.polyfit(t, half, 1)[0]
    return float(slope * (len(half) - 1)), float(np.std(half))


def estimate_llc(
    model: nn.Module,
    loader: Iterable,
    criterion: Callable[[Any, Any], torch.Tensor],
    *,
    sampler: str = "sgld",
    lr: float = 1e-4,
    localization: float = 100.0,
    nbeta: float | None = None,
    num_chains: int = 4,
    num_draws: int = 200,
    num_burnin_steps: int = 0,
    num_steps_bw_draws: int = 1,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    params: Iterable[str] | None = None,
    init_loss_batches: int | None = None,
    train_mode: bool = False,
    rmsprop_alpha: float = 0.99,
    rmsprop_eps: float = 1.0,
) -> LLCResult:
    """Estimate the local learning coefficient of ``model`` at its current weights.

    Args:
        model: any ``nn.Module``; its weights w* are where the posterior is localized.
            It is sampled in place and restored bit-exactly afterwards (weights,
            buffers, requires_grad, .grad, train/eval mode, device), also on errors
            and KeyboardInterrupt.
        loader: an iterable of ``(inputs, targets)`` batches (a DataLoader or a list);
            iterated cyclically. Inside each chain the global torch RNG is forked and
            seeded from ``(seed, chain)``, so a shuffling DataLoader gives the same
            order for the same seed and the caller's RNG state is untouched.
        criterion: ``criterion(model(inputs), targets)`` -> scalar tensor, the mean
            per-sample negative log-likelihood of the batch (see module docstring).
        sampler: ``"sgld"`` or ``"rmsprop_sgld"`` (updates in the module docstring).
        lr: SGLD step size ε.
        localization: γ, strength of the pull towards w*.
        nbeta: inverse temperature nβ; default ``m/log m`` with m the batch size.
        num_chains, num_draws, num_burnin_steps, num_steps_bw_draws: chain layout;
            each chain takes ``num_burnin_steps + num_draws * num_steps_bw_draws``
            steps and draws the loss every ``num_steps_bw_draws`` steps after burn-in.
        seed: seeds each chain's noise generator from ``(seed, chain)``.
        device: where to sample (the model is moved there and back); default: the
            model's device.
        progress: show a tqdm progress bar.
        params: restrict sampling to these module or parameter names (the
            weight-refined LLC); the others stay fixed at w*. nβ and the formula
            are unchanged.
        init_loss_batches: compute L_n(w*) over only the first this-many batches.
        train_mode: sample with ``model.train()`` (dropout active, BatchNorm using
            batch statistics and updating running stats, which are restored after).
            Default False: ``model.eval()``, so BatchNorm uses its running stats.
        rmsprop_alpha, rmsprop_eps: α and δ of ``rmsprop_sgld``.

    Returns:
        :class:`LLCResult`; ``loss_traces`` has shape ``(num_chains, num_burnin_steps + num_draws)``.

    Raises:
        ConfigError: invalid settings (unknown sampler, non-positive lr, ...).
        LayerNotFoundError: a name in ``params`` is not a module or parameter.
    """
    t0 = time.perf_counter()
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
    for name, value in (("lr", lr), ("num_chains", num_chains), ("num_draws", num_draws), ("num_steps_bw_draws", num_steps_bw_draws)):
        if not value > 0:
            raise ConfigError(f"{name} must be positive, got {value!r}")
    if localization < 0:
        raise ConfigError(f"localization must be >= 0, got {localization!r}")
    if num_burnin_steps < 0:
        raise ConfigError(f"num_burnin_steps must be >= 0, got {num_burnin_steps!r}")
    if nbeta is not None and not nbeta > 0:
        raise ConfigError(f"nbeta must be positive, got {nbeta!r}")
    if init_loss_batches is not None and init_loss_batches < 1:
        raise ConfigError(f"init_loss_batches must be >= 1 or None, got {init_loss_batches!r}")

    if nbeta is None:
        batch_size = _batch_size_of(loader)
        nbeta_value, nbeta_source = default_nbeta(batch_size), f"default m/log m (m={batch_size})"
    else:
        nbeta_value, nbeta_source = float(nbeta), "user"
    selected = resolve_params(model, params)
    sampled_names = [n for n, _ in selected]
    dim = sum(p.numel() for _, p in selected)
    dev = torch.device(device) if device is not None else _model_device(model)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())

    hyper: dict[str, Any] = {
        "sampler": sampler,
        "lr": float(lr),
        "localization": float(localization),
        "nbeta": nbeta_value,
        "nbeta_source": nbeta_source,
        "num_chains": int(num_chains),
        "num_draws": int(num_draws),
        "num_burnin_steps": int(num_burnin_steps),
        "num_steps_bw_draws": int(num_steps_bw_draws),
        "seed": int(seed),
        "init_loss_batches": init_loss_batches,
        "train_mode": bool(train_mode),
        "restricted_params": None if params is None else sampled_names,
        "num_sampled_params": int(dim),
    }
    if sampler == "rmsprop_sgld":
        hyper.update(rmsprop_alpha=float(rmsprop_alpha), rmsprop_eps=float(rmsprop_eps))

    steps_per_chain = num_burnin_steps + num_draws * num_steps_bw_draws
    traces = np.full((num_chains, num_burnin_steps + num_draws), np.nan)
    llcs = [math.nan] * num_chains
    diagnostics: list[str] = []
    flags: dict[str, list[int]] = {"nan": [], "diverged": [], "trending": []}

    with _restored(model, dev if device is not None else None):
        model.train(train_mode)
        chosen_ids = {id(p) for _, p in selected}
        all_params = list(model.parameters())
        for p in all_params:
            p.requires_grad_(id(p) in chosen_ids)
        sampled = [p for _, p in selected]
        anchors = [p.detach().clone() for p in sampled]
        buffers = [b for b in model.buffers()]
        buffers0 = [b.detach().clone() for b in buffers]

        with _fork_rng(_chain_seed(seed, -1), dev):
            init_loss = _batch_weighted_loss(model, loader, criterion, dev, init_loss_batches)
        if not math.isfinite(init_loss):
            raise ConfigError(f"the loss at the given weights is {init_loss}; the LLC is undefined there")

        bar = tqdm(total=num_chains * steps_per_chain, desc="LLC", disable=not progress, leave=False)
        try:
            for chain in range(num_chains):
                with torch.no_grad():
                    for p, a in zip(sampled, anchors):
                        p.copy_(a)
                    for b, b0 in zip(buffers, buffers0):
                        b.copy_(b0)
                cseed = _chain_seed(seed, chain)
                gen = torch.Generator(device=dev)
                gen.manual_seed(cseed)
                with _fork_rng(cseed, dev):
                    stopped = _run_chain(
                        model, _cycle(loader), criterion, dev, sampled, anchors, gen, traces[chain],
                        sampler=sampler, lr=lr, localization=localization, nbeta=nbeta_value,
                        num_burnin_steps=num_burnin_steps, num_steps_bw_draws=num_steps_bw_draws,
                        steps=steps_per_chain, alpha=rmsprop_alpha, eps=rmsprop_eps, bar=bar,
                    )
                if stopped is not None:
                    step, value = stopped
                    where = "burn-in" if step < num_burnin_steps else "sampling"
                    flags["nan"].append(chain)
                    diagnostics.append(
                        f"chain {chain}: loss became {value} at step {step} ({where}); chain stopped and "
                        f"excluded from the mean (try a smaller lr or a larger localization)"
                    )
                    continue
                draws = traces[chain, num_burnin_steps:]
                llc = nbeta_value * (float(np.mean(draws)) - init_loss)
                llcs[chain] = llc
                if llc > DIVERGENCE_FACTOR * dim / 2:
                    flags["diverged"].append(chain)
                    diagnostics.append(
                        f"chain {chain}: estimate {llc:.4g} exceeds {DIVERGENCE_FACTOR:g}·d/2 = "
                        f"{DIVERGENCE_FACTOR * dim / 2:g}, while the learning coefficient of {dim} sampled "
                        f"parameters is at most d/2; the sampler diverged (try a smaller lr or a larger localization)"
                    )
                change, spread = _trend_change(draws)
                rise = abs(float(np.mean(draws[len(draws) // 2 :])) - init_loss)
                if abs(change) > max(spread, TREND_RELATIVE * rise) and abs(change) > 0:
                    flags["trending"].append(chain)
                    diagnostics.append(
                        f"chain {chain}: loss still trending at the end (fitted change {change:+.3g} over the last "
                        f"half of the draws, above both its std {spread:.3g} and 10% of the loss rise {rise:.3g}); "
                        f"take more draws or burn-in, or adjust lr"
                    )
        finally:
            bar.close()

    finite = [v for v in llcs if math.isfinite(v)]
    llc_mean = float(np.mean(finite)) if finite else math.nan
    llc_std = float(np.std(finite, ddof=1)) if len(finite) >= 2 else math.nan
    if not finite:
        diagnostics.append("all chains stopped on NaN/inf losses: the estimate is NaN")
    for msg in diagnostics:
        warnings.warn(f"LLC: {msg}", LLCDiagnosticWarning, stacklevel=2)
    return LLCResult(
        llc_mean=llc_mean,
        llc_std=llc_std,
        llc_per_chain=llcs,
        loss_traces=traces,
        num_burnin_steps=int(num_burnin_steps),
        init_loss=float(init_loss),
        nbeta=nbeta_value,
        hyperparameters=hyper,
        diagnostics=diagnostics,
        flags=flags,
        time_s=time.perf_counter() - t0,
    )


def _run_chain(
    model: nn.Module,
    batches: Iterator[Any],
    criterion: Callable,
    device: torch.device,
    sampled: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    gen: torch.Generator,
    trace: np.ndarray,
    *,
    sampler: str,
    lr: float,
    localization: float,
    nbeta: float,
    num_burnin_steps: int,
    num_steps_bw_draws: int,
    steps: int,
    alpha: float,
    eps: float,
    bar: Any,
) -> tuple[int, float] | None:
    """Run one chain, writing the recorded losses into ``trace``; return (step, value) if a loss was not finite."""
    half_lr = lr / 2
    noise_std = math.sqrt(lr)
    sq_avg: list[torch.Tensor] | None = None
    for step in range(steps):
        x, y = _to_device(_split_batch(next(batches)), device)
        loss = criterion(model(x), y)
        value = float(loss.detach())
        if step < num_burnin_steps:
            col: int | None = step
        elif (step - num_burnin_steps) % num_steps_bw_draws == 0:
            col = num_burnin_steps + (step - num_burnin_steps) // num_steps_bw_draws
        else:
            col = None
        if not math.isfinite(value):
            bar.update(steps - step)
            return step, value
        if col is not None:
            trace[col] = value
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, sampled, allow_unused=True)
        else:  # the loss does not depend on any sampled parameter: only the localization acts
            grads = (None,) * len(sampled)
        with torch.no_grad():
            drifts = []
            for p, g, a in zip(sampled, grads, anchors):
                d = g * nbeta if g is not None else torch.zeros_like(p)
                if localization:
                    d = d.add(p - a, alpha=localization)
                drifts.append(d)
            if sampler == "sgld":
                for p, d in zip(sampled, drifts):
                    p.add_(d, alpha=-half_lr)
                    p.add_(torch.randn(p.shape, generator=gen, device=device, dtype=p.dtype), alpha=noise_std)
            else:
                if sq_avg is None:
                    sq_avg = [d * d for d in drifts]
                else:
                    for v, d in zip(sq_avg, drifts):
                        v.mul_(alpha).addcmul_(d, d, value=1 - alpha)
                for p, d, v in zip(sampled, drifts, sq_avg):
                    precond = 1.0 / (v.sqrt() + eps)
                    p.add_(precond * d, alpha=-half_lr)
                    noise = torch.randn(p.shape, generator=gen, device=device, dtype=p.dtype)
                    p.add_(noise * (precond * lr).sqrt())
        bar.update(1)
    return None
