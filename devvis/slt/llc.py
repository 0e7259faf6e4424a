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
* Data order: each chain draws its batches through its own
  :class:`~devvis.slt.batches.SeededStream` seeded from ``(seed, chain)``: the loader's own
  generator is swapped out while it runs, so every checkpoint of a series sees the same batches.
* Mode: by default every submodule samples in ``train()`` mode (BatchNorm on batch statistics,
  dropout on): the loss the weights were trained to minimize, and devinterp's choice; see
  ``train_mode``. For a model with BatchNorm or dropout the loss at w* is measured in both modes
  and a finding notes when they disagree.
* Chains run together on one stacked state (:mod:`devvis.slt.chains`), vectorised with
  ``torch.func.vmap`` on CUDA (or with ``vectorize=True``) when the model allows it.

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
import dataclasses
import itertools
import math
import numbers
import time
import warnings
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from devvis.errors import ConfigError, LayerNotFoundError
from devvis.slt import diagnostics
from devvis.slt.batches import Criterion, Loader, SeededStream, batch_losses, batch_size_of, weighted_mean
from devvis.slt.chains import ChainRun, ChainSettings, ChainStats, make_engine, mean_square_grad
from devvis.slt.diagnostics import LLCDiagnosticWarning
from devvis.slt.result import LLCResult
from devvis.slt.samplers import SAMPLERS
from devvis.state import as_device, frozen, model_device
from devvis.typing import DeviceLike

__all__ = [
    "LLCResult",
    "LLCDiagnosticWarning",
    "estimate_llc",
    "default_nbeta",
    "resolve_params",
    "SAMPLERS",
    "DEFAULT_LR",
    "DEFAULT_LOCALIZATION",
]

#: Step size used when none is given (flagged "uncalibrated": see :func:`devvis.slt.calibrate`).
DEFAULT_LR = 1e-4
#: Localization used when none is given (flagged "uncalibrated").
DEFAULT_LOCALIZATION = 100.0


def default_nbeta(batch_size: int) -> float:
    """The default inverse temperature ``m / log m`` for minibatch size ``m``.

    >>> round(default_nbeta(100), 2)
    21.71
    """
    if batch_size < 2:
        raise ConfigError(f"cannot derive nbeta = m/log(m) from batch size {batch_size}; pass nbeta explicitly")
    return batch_size / math.log(batch_size)



def _chain_seed(seed: int, chain: int) -> int:
    """A 63-bit seed mixed from ``(seed, chain)``; chain -1 is the initial-loss pass, -2 the forward passes."""
    # SeedSequence mixes the pair so that nearby seeds or chains give unrelated streams.
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, int(chain) + 2]
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
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """The global RNG (dropout in the forward pass) forked and seeded; the caller's state comes back."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


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


def has_mode_dependent_modules(model: nn.Module) -> bool:
    """True when ``model`` holds BatchNorm-like (running statistics) or dropout modules."""
    from torch.nn.modules.batchnorm import _NormBase
    from torch.nn.modules.dropout import _DropoutNd

    return any(isinstance(m, (_NormBase, _DropoutNd, nn.Dropout)) for m in model.modules())


#: A finding notes the mode when nβ·|L_train(w*) − L_eval(w*)| exceeds this (one unit of the LLC scale)
#: and the two losses differ by more than :data:`MODE_RELATIVE`.
MODE_GAP = 1.0
MODE_RELATIVE = 0.05
#: The two modes are compared on the first this-many batches of L(w*) (paired: the same batches).
MODE_BATCHES = 2


def _mode_finding(model: nn.Module, loader: Loader, criterion: Criterion, dev: torch.device,
                  seed: int, sampled: list[tuple[float, int]], train_mode: bool, nbeta: float) -> tuple[str | None, float]:
    """Loss at w* in the other mode on the first :data:`MODE_BATCHES` batches, and a finding when it disagrees
    strongly with the sampled mode's loss ``sampled`` on the same batches."""
    other = "eval" if train_mode else "train"
    k = min(MODE_BATCHES, len(sampled))
    with frozen(model, mode=other, freeze=False, restore_values=True):
        with _seeded_global_rng(seed, dev):
            loss = weighted_mean(batch_losses(model, SeededStream(loader, seed, epochs=1), criterion, dev, k))
    mine_loss = weighted_mean(sampled[:k])
    gap = abs(loss - mine_loss)
    if gap * nbeta > MODE_GAP and gap > MODE_RELATIVE * max(abs(loss), abs(mine_loss)):
        mine = "train" if train_mode else "eval"
        return (f"the loss at w* is {mine_loss:.4g} in {mine} mode (sampled) but {loss:.4g} in {other} mode "
                f"(BatchNorm/dropout; first {k} batches): the two modes sample different posteriors and give "
                f"different LLCs; train mode is the loss the weights were trained on"), loss
    return None, loss


def estimate_llc(
    model: nn.Module,
    loader: Loader,
    criterion: Criterion,
    *,
    sampler: str = "sgld",
    lr: float | None = None,
    localization: float | None = None,
    nbeta: float | None = None,
    num_chains: int = 4,
    num_draws: int = 200,
    num_burnin_steps: int = 0,
    num_steps_bw_draws: int = 1,
    max_draws: int | None = None,
    seed: int = 0,
    device: DeviceLike = None,
    progress: bool = True,
    params: Iterable[str] | None = None,
    init_loss_batches: int | None = None,
    train_mode: bool = True,
    rmsprop_alpha: float = 0.99,
    rmsprop_eps: float = 0.1,
    rmsprop_warm_start: bool = False,
    vectorize: bool | None = None,
    warn: bool = True,
) -> LLCResult:
    """Estimate the local learning coefficient of ``model`` at its current weights.

    Args:
        model: any ``nn.Module``; its weights w* are where the posterior is localized. It is
            borrowed through :func:`devvis.state.frozen` (``restore_values=True``) and given back
            bit-exactly (weights, buffers, requires_grad, .grad, every submodule's mode, device).
        loader: an iterable of ``(inputs, targets)`` batches (a DataLoader or a list), iterated
            cyclically; chain c reads it through a :class:`~devvis.slt.batches.SeededStream`
            seeded from ``(seed, c)``, so the data order does not depend on the loader's history.
        criterion: ``criterion(model(inputs), targets)`` -> scalar, the mean per-sample NLL.
        sampler: ``"sgld"`` or ``"rmsprop_sgld"`` (updates in :mod:`devvis.slt.samplers`).
        lr: step size ε; localization: γ. Left as None they take :data:`DEFAULT_LR` and
            :data:`DEFAULT_LOCALIZATION` and the result is flagged ``uncalibrated`` (not ok):
            choose them with :func:`devvis.slt.calibrate`.
        nbeta: inverse temperature nβ; default ``m/log m`` with m the batch size.
        num_chains, num_draws, num_burnin_steps, num_steps_bw_draws: chain layout.
        max_draws: when given, chains that have not yet settled are run longer: while the only failing
            checks are those of :data:`~devvis.slt.diagnostics.CURED_BY_LONGER_CHAINS` (``trending``,
            ``chains_disagree``, ``burnin_short``), the chains continue where they stopped (the same noise and
            data streams) to twice the burn-in (a zero burn-in becomes ``num_draws``) and twice the draws
            (:meth:`~devvis.slt.chains.ChainSettings.extended`), as long as the draws stay within
            ``max_draws``; the result says how often (``extensions``) and a finding says why. The checks are
            then made on the longer layout only, whose numbers are those of a fresh run with it. A run that
            needed no extension gives the very numbers of ``max_draws=None``. None (default): never extend.
        seed: seeds each chain's noise and data streams from ``(seed, chain)``.
        device: where to sample (default: the model's device).
        progress: show a tqdm progress bar.
        params: restrict sampling to these module or parameter names (the weight-refined LLC).
        init_loss_batches: compute L_n(w*) over only the first this-many batches.
        train_mode: True (default): every submodule in ``train()`` mode while sampling, the loss
            the model was trained on (BatchNorm batch statistics, dropout on; devinterp does the
            same). False: ``eval()`` (BatchNorm running statistics). Training drives w* to a
            stationary point of the train-mode loss, not of the eval-mode one, so only train mode
            samples around a minimum of the loss that was minimized; the two modes give different
            numbers on BatchNorm CNNs (``benchmarks/LLC_RESULTS.md``), and a finding
            (flag ``mode``) says so when their losses at w* disagree strongly.
        rmsprop_alpha, rmsprop_eps: α and δ of ``rmsprop_sgld`` (devinterp's defaults).
        rmsprop_warm_start: ``rmsprop_sgld`` only: start the running average V from the mean g⊙g of the
            ``init_loss_batches`` batches at w* instead of 0 (devinterp's start), so that the first steps
            are not taken with the preconditioner 1/δ everywhere; ``rmsprop_alpha=1`` then keeps that
            preconditioner fixed for the whole chain.
        vectorize: True: chains run in one ``torch.func.vmap`` (the loop when the model cannot be
            vmapped; ``hyperparameters["vmap_fallback"]`` says why); False: a loop over chains; None
            (default): True on CUDA, False on CPU (where vmapped convolutions were slower).
        warn: emit an :class:`LLCDiagnosticWarning` per finding.

    Returns:
        :class:`LLCResult`; ``loss_traces`` ``(num_chains, num_burnin_steps + num_draws)``;
        ``ok`` is False with ``reasons`` when a check of :mod:`devvis.slt.diagnostics` fails.

    Raises:
        ConfigError: invalid settings (unknown sampler, non-positive lr, ...).
        LayerNotFoundError: a name in ``params`` is not a module or parameter.
    """
    t0 = time.perf_counter()
    defaults_used = [name for name, v in (("lr", lr), ("localization", localization)) if v is None]
    lr = DEFAULT_LR if lr is None else lr
    localization = DEFAULT_LOCALIZATION if localization is None else localization
    _check_settings(sampler=sampler, lr=lr, localization=localization, nbeta=nbeta, num_chains=num_chains,
                    num_draws=num_draws, num_burnin_steps=num_burnin_steps, num_steps_bw_draws=num_steps_bw_draws,
                    init_loss_batches=init_loss_batches)
    if max_draws is not None and (isinstance(max_draws, bool) or not isinstance(max_draws, numbers.Integral)
                                  or max_draws < num_draws):
        raise ConfigError(f"max_draws must be None or an integer >= num_draws ({num_draws}); got {max_draws!r}")
    max_draws = None if max_draws is None else int(max_draws)
    if nbeta is None:
        batch_size = batch_size_of(loader)
        nbeta_value, nbeta_source = default_nbeta(batch_size), f"default m/log m (m={batch_size})"
    else:
        nbeta_value, nbeta_source = float(nbeta), "user"
    selected = resolve_params(model, params)
    dim = sum(p.numel() for _, p in selected)
    dev = as_device(device) or model_device(model)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    settings = ChainSettings(sampler=sampler, lr=float(lr), localization=float(localization), nbeta=nbeta_value,
                             num_burnin_steps=int(num_burnin_steps), num_draws=int(num_draws),
                             num_steps_bw_draws=int(num_steps_bw_draws), alpha=float(rmsprop_alpha),
                             eps=float(rmsprop_eps))
    hyper: dict[str, Any] = {
        "sampler": sampler, "lr": float(lr), "localization": float(localization), "nbeta": nbeta_value,
        "nbeta_source": nbeta_source, "num_chains": int(num_chains), "num_draws": int(num_draws),
        "num_burnin_steps": int(num_burnin_steps), "num_steps_bw_draws": int(num_steps_bw_draws),
        "seed": int(seed), "init_loss_batches": init_loss_batches, "train_mode": bool(train_mode),
        "restricted_params": None if params is None else [n for n, _ in selected], "num_sampled_params": int(dim),
        "uncalibrated_defaults": defaults_used, "max_draws": max_draws,
    }
    if sampler == "rmsprop_sgld":
        hyper.update(rmsprop_alpha=float(rmsprop_alpha), rmsprop_eps=float(rmsprop_eps),
                     rmsprop_warm_start=bool(rmsprop_warm_start))

    findings: list[str] = []
    mode_chains: list[int] = []
    mode = "train" if train_mode else "eval"
    # convolutions sample in channels-last layout on a CPU (0.86x the time on the demo's ResNet, same numbers to
    # float rounding); the model is given back in its own layout
    layout = torch.channels_last if dev.type == "cpu" and any(p.dim() == 4 for p in model.parameters()) else None
    hyper["memory_format"] = "channels_last" if layout is not None else "as given"
    with frozen(model, mode=mode, freeze=False, restore_values=True, device=dev if device is not None else None,
                memory_format=layout):
        chosen = {id(p) for _, p in selected}
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)
        anchor = torch.cat([p.detach().reshape(-1) for _, p in selected]).clone()
        buffers = [b for b in model.buffers()]
        buffers0 = [b.detach().clone() for b in buffers]
        init_seed = _chain_seed(seed, -1)
        with _seeded_global_rng(init_seed, dev):
            per_batch = batch_losses(model, SeededStream(loader, init_seed, epochs=1), criterion, dev, init_loss_batches)
        init_loss = weighted_mean(per_batch)
        if not math.isfinite(init_loss):
            raise ConfigError(f"the loss at the given weights is {init_loss}; the LLC is undefined there")
        engine = make_engine(model, criterion, selected, num_chains, vectorize, dev)
        sq_avg0 = None
        if sampler == "rmsprop_sgld" and rmsprop_warm_start:
            stream = SeededStream(loader, init_seed, epochs=1)
            with _seeded_global_rng(init_seed, dev):
                sq_avg0 = mean_square_grad(engine, itertools.islice(stream, len(per_batch)), anchor.to(dev), dev)
        with torch.no_grad():
            for b, b0 in zip(buffers, buffers0):
                b.copy_(b0)
        other_loss = None
        if has_mode_dependent_modules(model):
            finding, other_loss = _mode_finding(model, loader, criterion, dev, init_seed, per_batch, bool(train_mode),
                                                nbeta_value)
            if finding:
                findings.append(finding)
                mode_chains = list(range(num_chains))
        streams = [SeededStream(loader, _chain_seed(seed, c)) for c in range(num_chains)]
        gens = [torch.Generator(device=dev).manual_seed(_chain_seed(seed, c)) for c in range(num_chains)]
        ladder = [settings]  # the layouts the chains may be extended to (their MALA points are measured)
        while max_draws is not None and not defaults_used and ladder[-1].extended().num_draws <= max_draws:
            ladder.append(ladder[-1].extended())
        run = ChainRun(engine, streams, anchor.to(dev), gens, device=dev, sq_avg=sq_avg0, mala_layouts=ladder)
        bar = tqdm(total=num_chains * settings.steps, desc="LLC", disable=not progress, leave=False)
        extended: list[str] = []
        try:
            with _seeded_global_rng(_chain_seed(seed, -2), dev):
                while True:
                    run.advance(settings, bar)
                    verdict = _assess(run, settings, init_loss=init_loss, nbeta=nbeta_value, dim=dim,
                                      anchor_ms=float((anchor.double() ** 2).mean()))
                    failed = [k for k in diagnostics.FAILING if verdict.flags.get(k)]
                    if (max_draws is None or defaults_used or settings.extended().num_draws > max_draws
                            or not diagnostics.longer_chains_may_cure(failed)):
                        break
                    extended.append(f"{num_chains} x ({settings.num_burnin_steps} + {settings.num_draws}): "
                                    f"{', '.join(failed)}")
                    settings = settings.extended()
                    bar.total = num_chains * settings.steps
                    bar.refresh()
        finally:
            bar.close()
    stats = verdict.stats
    hyper["engine"] = stats.engine
    if stats.fallback_reason:
        hyper["vmap_fallback"] = stats.fallback_reason
    findings += verdict.findings
    if extended:
        times = {1: "once", 2: "twice"}.get(len(extended), f"{len(extended)} times")
        findings.append(f"the chains were extended {times}, to {num_chains} x ({settings.num_burnin_steps} + "
                        f"{settings.num_draws}) (max_draws={max_draws}), because they had not settled at "
                        + "; at ".join(extended))
    flags = verdict.flags
    flags["mode"] = mode_chains
    llcs, llc_mean, llc_std, traces = verdict.llcs, verdict.llc_mean, verdict.llc_std, verdict.traces
    if defaults_used:
        flags["uncalibrated"] = list(range(num_chains))
        findings.append(f"uncalibrated defaults for {' and '.join(defaults_used)} (lr={lr:g}, localization="
                        f"{localization:g}): the default settings can be far off for this model; choose them with "
                        f"devvis.slt.calibrate(...) or `devvis llc --calibrate`")
    if warn:
        for msg in findings:
            warnings.warn(f"LLC: {msg}", LLCDiagnosticWarning, stacklevel=2)
    return LLCResult(
        llc_mean=llc_mean, llc_std=llc_std, llc_per_chain=llcs, loss_traces=traces,
        num_burnin_steps=int(settings.num_burnin_steps), init_loss=float(init_loss), nbeta=nbeta_value,
        hyperparameters=hyper, diagnostics=findings, flags=flags, time_s=time.perf_counter() - t0,
        acceptance=stats.acceptance, pull_ratio=stats.pull_ratio,
        init_loss_other_mode=other_loss, distance_traces=stats.distance, extensions=len(extended),
    )


@dataclasses.dataclass
class _Verdict:
    """The estimate and the checks of one chain layout (see :func:`_assess`)."""

    traces: np.ndarray
    stats: ChainStats
    llcs: list[float]
    llc_mean: float
    llc_std: float
    flags: dict[str, list[int]]
    findings: list[str]


def _assess(run: ChainRun, settings: ChainSettings, *, init_loss: float, nbeta: float, dim: int,
            anchor_ms: float) -> _Verdict:
    """The per-chain estimates and every check of :mod:`devvis.slt.diagnostics` on the draws of ``settings``."""
    num_chains, burnin = len(run.streams), settings.num_burnin_steps
    traces, stats = run.traces(settings), run.stats(settings)
    findings: list[str] = []
    flags: dict[str, list[int]] = {k: [] for k in ("nan", "diverged", "trending", "spreading", "low_acceptance",
                                                    "pull_dominates", "below_init", "negative", "chains_disagree",
                                                    "burnin_short", "not_local", "uncalibrated", "mode")}
    draws = traces[:, burnin:]
    llcs = [math.nan] * num_chains
    tau = diagnostics.chains_tau(draws[[c for c in range(num_chains) if c not in stats.stopped]])
    for c in range(num_chains):
        if c in stats.stopped:
            step, value = stats.stopped[c]
            flags["nan"].append(c)
            findings.append(diagnostics.stopped(c, step, value, burnin))
            continue
        llcs[c] = float(nbeta * (np.mean(draws[c]) - init_loss))
        for key, finding in (("diverged", diagnostics.diverged(c, llc=llcs[c], dim=dim)),
                             ("trending", diagnostics.trending(c, draws[c], init_loss, tau)),
                             ("spreading", diagnostics.spreading(c, stats.distance[c, burnin:])),
                             ("low_acceptance", diagnostics.low_acceptance(c, stats.acceptance[c]))):
            if finding:
                flags[key].append(c)
                findings.append(finding)
    finite = [v for v in llcs if math.isfinite(v)]
    llc_mean = float(np.mean(finite)) if finite else math.nan
    llc_std = float(np.std(finite, ddof=1)) if len(finite) >= 2 else math.nan
    if not finite:
        findings.append("all chains stopped on NaN/inf losses: the estimate is NaN")
    else:
        alive_chains = [c for c in range(num_chains) if math.isfinite(llcs[c])]
        alive = draws[alive_chains]
        for key, finding in (("pull_dominates", diagnostics.pull_dominates(None, stats.pooled_pull_ratio(alive_chains))),
                             ("below_init", diagnostics.below_init(alive, init_loss)),
                             ("negative", diagnostics.negative(llc_mean, diagnostics.estimate_se(alive, nbeta))),
                             ("chains_disagree", diagnostics.chains_disagree(alive)),
                             ("burnin_short", diagnostics.burnin_short(alive, init_loss)),
                             ("not_local", diagnostics.not_local(stats.distance[alive_chains, burnin:], dim, anchor_ms))):
            if finding:
                flags[key] = list(range(num_chains))
                findings.append(finding)
    return _Verdict(traces=traces, stats=stats, llcs=llcs, llc_mean=llc_mean, llc_std=llc_std, flags=flags,
                    findings=findings)
