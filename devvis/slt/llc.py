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

The samplers (``sampler="sgld"`` and ``"rmsprop_sgld"``) and their updates are described
in :mod:`devvis.slt.samplers`; the chain health checks in :mod:`devvis.slt.diagnostics`.

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
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from devvis.errors import ConfigError, LayerNotFoundError
from devvis.slt import diagnostics
from devvis.slt.batches import Criterion, Loader, batch_size_of, cycle, mean_loss
from devvis.slt.diagnostics import LLCDiagnosticWarning
from devvis.slt.result import LLCResult
from devvis.slt.samplers import SAMPLERS, run_chain
from devvis.state import as_device, frozen, model_device
from devvis.typing import DeviceLike

__all__ = [
    "LLCResult",
    "LLCDiagnosticWarning",
    "estimate_llc",
    "default_nbeta",
    "resolve_params",
    "SAMPLERS",
]


def default_nbeta(batch_size: int) -> float:
    """The default inverse temperature ``m / log m`` for minibatch size ``m``.

    >>> round(default_nbeta(100), 2)
    21.71
    """
    if batch_size < 2:
        raise ConfigError(f"cannot derive nbeta = m/log(m) from batch size {batch_size}; pass nbeta explicitly")
    return batch_size / math.log(batch_size)



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



def _fork_rng(seed: int, device: torch.device):
    devices = [device] if device.type == "cuda" else []
    ctx = torch.random.fork_rng(devices=devices)

    @contextlib.contextmanager
    def seeded() -> Iterator[None]:
        with ctx:
            torch.manual_seed(seed)
            yield

    return seeded()


def _check_settings(*, sampler: str, lr: float, localization: float, nbeta: float | None, num_chains: int,
                    num_draws: int, num_burnin_steps: int, num_steps_bw_draws: int,
                    init_loss_batches: int | None) -> None:
    """:class:`~devvis.errors.ConfigError` naming the first invalid setting of :func:`estimate_llc`."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
    for name, value in (("lr", lr), ("num_chains", num_chains), ("num_draws", num_draws),
                        ("num_steps_bw_draws", num_steps_bw_draws)):
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


def estimate_llc(
    model: nn.Module,
    loader: Loader,
    criterion: Criterion,
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
    device: DeviceLike = None,
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
            It is borrowed through :func:`devvis.state.frozen` (``restore_values=True``):
            sampled in place and restored bit-exactly afterwards (weights, buffers,
            requires_grad, .grad, every submodule's train/eval mode, device), also on
            errors and KeyboardInterrupt.
        loader: an iterable of ``(inputs, targets)`` batches (a DataLoader or a list);
            iterated cyclically. Inside each chain the global torch RNG is forked and
            seeded from ``(seed, chain)``, so a shuffling DataLoader gives the same
            order for the same seed and the caller's RNG state is untouched.
        criterion: ``criterion(model(inputs), targets)`` -> scalar tensor, the mean
            per-sample negative log-likelihood of the batch (see module docstring).
        sampler: ``"sgld"`` or ``"rmsprop_sgld"`` (updates in :mod:`devvis.slt.samplers`).
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
            Either way every submodule is set to that one mode while sampling, and
            each gets its own mode back afterwards.
        rmsprop_alpha, rmsprop_eps: α and δ of ``rmsprop_sgld``.

    Returns:
        :class:`LLCResult`; ``loss_traces`` has shape ``(num_chains, num_burnin_steps + num_draws)``.

    Raises:
        ConfigError: invalid settings (unknown sampler, non-positive lr, ...).
        LayerNotFoundError: a name in ``params`` is not a module or parameter.
    """
    t0 = time.perf_counter()
    _check_settings(sampler=sampler, lr=lr, localization=localization, nbeta=nbeta, num_chains=num_chains,
                    num_draws=num_draws, num_burnin_steps=num_burnin_steps, num_steps_bw_draws=num_steps_bw_draws,
                    init_loss_batches=init_loss_batches)

    if nbeta is None:
        batch_size = batch_size_of(loader)
        nbeta_value, nbeta_source = default_nbeta(batch_size), f"default m/log m (m={batch_size})"
    else:
        nbeta_value, nbeta_source = float(nbeta), "user"
    selected = resolve_params(model, params)
    sampled_names = [n for n, _ in selected]
    dim = sum(p.numel() for _, p in selected)
    dev = as_device(device) or model_device(model)
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
    findings: list[str] = []
    flags: dict[str, list[int]] = {"nan": [], "diverged": [], "trending": []}

    # Today's sampling mode (one mode for every submodule, as before); frozen gives each its own back.
    mode = "train" if train_mode else "eval"
    with frozen(model, mode=mode, freeze=False, restore_values=True, device=dev if device is not None else None):
        chosen_ids = {id(p) for _, p in selected}
        all_params = list(model.parameters())
        for p in all_params:
            p.requires_grad_(id(p) in chosen_ids)
        sampled = [p for _, p in selected]
        anchors = [p.detach().clone() for p in sampled]
        buffers = [b for b in model.buffers()]
        buffers0 = [b.detach().clone() for b in buffers]

        with _fork_rng(_chain_seed(seed, -1), dev):
            init_loss = mean_loss(model, loader, criterion, dev, init_loss_batches)
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
                    stopped = run_chain(
                        model, cycle(loader), criterion, sampled, anchors, traces[chain], device=dev,
                        generator=gen, sampler=sampler, lr=lr, localization=localization, nbeta=nbeta_value,
                        num_burnin_steps=num_burnin_steps, num_steps_bw_draws=num_steps_bw_draws,
                        steps=steps_per_chain, alpha=rmsprop_alpha, eps=rmsprop_eps, bar=bar,
                    )
                if stopped is not None:
                    flags["nan"].append(chain)
                    findings.append(diagnostics.stopped(chain, *stopped, num_burnin_steps))
                    continue
                draws = traces[chain, num_burnin_steps:]
                llc = nbeta_value * (float(np.mean(draws)) - init_loss)
                llcs[chain] = llc
                for flag, finding in (("diverged", diagnostics.diverged(chain, llc=llc, dim=dim)),
                                      ("trending", diagnostics.trending(chain, draws, init_loss))):
                    if finding is not None:
                        flags[flag].append(chain)
                        findings.append(finding)
        finally:
            bar.close()

    finite = [v for v in llcs if math.isfinite(v)]
    llc_mean = float(np.mean(finite)) if finite else math.nan
    llc_std = float(np.std(finite, ddof=1)) if len(finite) >= 2 else math.nan
    if not finite:
        findings.append("all chains stopped on NaN/inf losses: the estimate is NaN")
    for msg in findings:
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
        diagnostics=findings,
        flags=flags,
        time_s=time.perf_counter() - t0,
    )
