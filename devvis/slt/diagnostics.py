"""Health checks of an LLC estimate; each returns a readable finding, or None when the check passes.

Per chain: a NaN/inf loss (:func:`stopped`), divergence beyond d/2 (:func:`diverged`), a loss still
trending at the end (:func:`trending`), a low MALA acceptance rate (:func:`low_acceptance`, Furman &
Lau 2024: the step size is too large for the posterior), a localization pull that outweighs the loss
gradient (:func:`pull_dominates`: the chain is held by γ and cannot explore the loss). Per estimate:
draws mostly below L(w*) (:func:`below_init`: w* is not a local minimum of the sampled loss), a
negative estimate, chains that disagree (:func:`chains_disagree`, split-R̂), burn-in too short
(:func:`burnin_short`: the first draws still sit below the later ones). :data:`FAILING` are the flags
that make ``LLCResult.ok`` false.

>>> import numpy as np
>>> trend_change(np.arange(20.0))   # a straight rise over the last 10 draws: change 9, std ~2.87
(9.0, 2.8722813232690143)
>>> diverged(0, llc=30.0, dim=10) is not None, diverged(0, llc=5.0, dim=10)
(True, None)
>>> round(split_rhat(np.vstack([np.zeros(50) + np.r_[0, 1] .repeat(25), np.ones(50)])), 2) > 1.1
True
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LLCDiagnosticWarning", "TREND_RELATIVE", "TREND_STDS", "DIVERGENCE_FACTOR", "MIN_ACCEPTANCE", "MAX_BELOW_INIT",
           "MAX_PULL_RATIO", "MAX_RHAT", "BURNIN_Z", "FAILING", "autocorrelation_time", "trend_change", "stopped", "diverged", "trending",
           "low_acceptance", "pull_dominates", "below_init", "negative", "split_rhat", "chains_disagree",
           "burnin_short"]

#: A chain counts as "still trending" when the least-squares line through the last half of its draws
#: changes by more than ``TREND_STDS`` standard errors of that change (which grow with the trace's
#: autocorrelation time: a slowly mixing but stationary chain wanders) and by more than
#: ``TREND_RELATIVE * |mean - L(w*)|`` (10% of the loss rise the estimate is made of).
TREND_RELATIVE = 0.1
TREND_STDS = 3.0

#: A chain counts as "diverged" when its estimate exceeds this many times d/2.
DIVERGENCE_FACTOR = 2.0

#: Below this mean MALA acceptance probability the step size is too large: the discretized chain
#: samples a distribution visibly different from the posterior (Furman & Lau 2024 tune ε to ~0.9).
MIN_ACCEPTANCE = 0.5

#: Above this fraction of draws below L(w*), w* is not a local minimum of the sampled loss.
MAX_BELOW_INIT = 0.5

#: Above this mean ratio |γ(w − w*)| / |nβ∇L| the localization, not the loss, sets where the chain goes.
MAX_PULL_RATIO = 1.0

#: Above this split-R̂ of the draws the chains have not mixed into one distribution.
MAX_RHAT = 1.1

#: Burn-in is too short when the first tenth of the draws lies below the last half by more than this
#: many standard errors (batch means) and by more than ``TREND_RELATIVE`` of the loss rise.
BURNIN_Z = 4.0

#: Flags that make an estimate not ``ok`` (a single NaN chain is excluded from the mean instead).
FAILING = ("diverged", "trending", "low_acceptance", "pull_dominates", "below_init", "negative",
           "chains_disagree", "burnin_short", "uncalibrated")


class LLCDiagnosticWarning(UserWarning):
    """An LLC estimate looked unhealthy (see :mod:`devvis.slt.diagnostics`)."""


def autocorrelation_time(x: np.ndarray) -> float:
    """Integrated autocorrelation time of ``x`` ``(N,)`` (Sokal's window ``M ≥ 5τ``); 1 for white noise."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 4 or not np.std(x) > 0:
        return 1.0
    f = np.fft.rfft(x - x.mean(), n=2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n]
    acf = acf / acf[0]
    tau = 1.0
    for m in range(1, n):
        tau += 2 * acf[m]
        if m >= 5 * tau:
            break
    return float(max(tau, 1.0))


def trend_change(draws: np.ndarray) -> tuple[float, float]:
    """Fitted change of the least-squares line over the last half of ``draws`` ``(num_draws,)``, and their std."""
    half = draws[len(draws) // 2 :]
    if len(half) < 4:
        return 0.0, 0.0
    t = np.arange(len(half), dtype=np.float64)
    slope = np.polyfit(t, half, 1)[0]
    return float(slope * (len(half) - 1)), float(np.std(half))


def stopped(chain: int, step: int, value: float, num_burnin_steps: int) -> str:
    """The finding for a chain stopped at ``step`` by a non-finite loss ``value``."""
    where = "burn-in" if step < num_burnin_steps else "sampling"
    return (f"chain {chain}: loss became {value} at step {step} ({where}); chain stopped and "
            f"excluded from the mean (try a smaller lr or a larger localization)")


def diverged(chain: int, *, llc: float, dim: int) -> str | None:
    """A finding when the chain's estimate ``llc`` exceeds ``DIVERGENCE_FACTOR · d/2`` (``d = dim``), else None."""
    bound = DIVERGENCE_FACTOR * dim / 2
    if not llc > bound:
        return None
    return (f"chain {chain}: estimate {llc:.4g} exceeds {DIVERGENCE_FACTOR:g}·d/2 = {bound:g}, while the learning "
            f"coefficient of {dim} sampled parameters is at most d/2; the sampler diverged (try a smaller lr or a "
            f"larger localization)")


def trending(chain: int, draws: np.ndarray, init_loss: float) -> str | None:
    """A finding when the loss at the draws ``(num_draws,)`` is still trending at the end (see :data:`TREND_RELATIVE`)."""
    change, spread = trend_change(draws)
    half = draws[len(draws) // 2 :]
    rise = abs(float(np.mean(half)) - init_loss)
    t = np.arange(len(half), dtype=np.float64)
    resid = half - np.polyval(np.polyfit(t, half, 1), t) if len(half) >= 4 else half
    # the standard error of the fitted change under autocorrelated noise (residuals: the trend removed)
    se = float(np.std(resid)) * np.sqrt(12 * autocorrelation_time(resid) / max(len(half), 1))
    if not (abs(change) > max(TREND_STDS * se, TREND_RELATIVE * rise) and abs(change) > 0):
        return None
    return (f"chain {chain}: loss still trending at the end (fitted change {change:+.3g} over the last "
            f"half of the draws, above both {TREND_STDS:g} standard errors ({se:.3g}) and 10% of the loss rise "
            f"{rise:.3g}); "
            f"take more draws or burn-in, or adjust lr")


def low_acceptance(chain: int, rate: float) -> str | None:
    """A finding when the chain's mean MALA acceptance ``rate`` is below :data:`MIN_ACCEPTANCE`."""
    if not rate < MIN_ACCEPTANCE:
        return None
    return (f"chain {chain}: MALA acceptance {rate:.2f} < {MIN_ACCEPTANCE:g}: the step size is too large for this "
            f"posterior (decrease lr)")


def pull_dominates(chain: int, ratio: float) -> str | None:
    """A finding when the localization pull outweighs the loss gradient (mean ratio above :data:`MAX_PULL_RATIO`)."""
    if not ratio > MAX_PULL_RATIO:
        return None
    return (f"chain {chain}: the localization pull |γ(w−w*)| is {ratio:.3g}x the loss gradient |nβ∇L| "
            f"(> {MAX_PULL_RATIO:g}): the chain is held by γ, not by the loss, and the estimate is biased low "
            f"(decrease localization or increase nbeta)")


def below_init(draws: np.ndarray, init_loss: float) -> str | None:
    """A finding when more than :data:`MAX_BELOW_INIT` of the draws ``(C, N)`` lie below ``init_loss``."""
    finite = draws[np.isfinite(draws)]
    if not finite.size:
        return None
    frac = float(np.mean(finite < init_loss))
    if not frac > MAX_BELOW_INIT:
        return None
    return (f"{frac:.0%} of the draws are below L(w*) = {init_loss:.4g}: the weights are not at a local minimum of "
            f"the sampled loss (check train_mode, or train further)")


def negative(llc_mean: float) -> str | None:
    """A finding for a negative estimate (the learning coefficient is never negative)."""
    if not llc_mean < 0:
        return None
    return f"the estimate {llc_mean:.4g} is negative: the weights are not at a local minimum of the sampled loss"


def split_rhat(draws: np.ndarray) -> float:
    """Split-R̂ (Gelman et al.) of the draws ``(C, N)``: each chain cut in halves; 1 when the halves agree."""
    rows = [r[np.isfinite(r)] for r in draws]
    n = min((len(r) for r in rows), default=0) // 2
    if n < 4:
        return math.nan
    halves = np.array([h for r in rows for h in (r[:n], r[n : 2 * n])])
    within = float(np.mean(np.var(halves, axis=1, ddof=1)))
    between = n * float(np.var(halves.mean(axis=1), ddof=1))
    if within <= 0:
        return 1.0 if between <= 0 else math.inf
    return math.sqrt(((n - 1) / n * within + between / n) / within)


def chains_disagree(draws: np.ndarray) -> str | None:
    """A finding when the split-R̂ of the draws ``(C, N)`` exceeds :data:`MAX_RHAT`."""
    rhat = split_rhat(draws)
    if not rhat > MAX_RHAT:
        return None
    return (f"the chains and their halves disagree (split-R̂ {rhat:.3g} > {MAX_RHAT:g}): they have not reached one "
            f"distribution (more burn-in or draws, or another lr)")


def _batch_means_se(x: np.ndarray, batches: int = 10) -> float:
    k = len(x) // batches
    if k < 1:
        return float(np.std(x)) / math.sqrt(max(len(x), 1))
    means = x[: k * batches].reshape(batches, k).mean(axis=1)
    return float(np.std(means, ddof=1)) / math.sqrt(batches)


def burnin_short(draws: np.ndarray, init_loss: float) -> str | None:
    """A finding when the first tenth of the draws ``(C, N)`` sits below the last half (see :data:`BURNIN_Z`)."""
    rows = [r[np.isfinite(r)] for r in draws]
    rows = [r for r in rows if len(r) >= 20]
    if not rows:
        return None
    first = np.concatenate([r[: len(r) // 10] for r in rows])
    last = np.concatenate([r[len(r) // 2 :] for r in rows])
    gap = float(last.mean() - first.mean())
    se = math.sqrt(_batch_means_se(first) ** 2 + _batch_means_se(last) ** 2)
    rise = abs(float(last.mean()) - init_loss)
    if not (gap > BURNIN_Z * se and gap > TREND_RELATIVE * rise):
        return None
    return (f"burn-in too short: the first tenth of the draws lies {gap:.3g} below the last half "
            f"({gap / max(se, 1e-300):.1f} standard errors, {gap / max(rise, 1e-300):.0%} of the loss rise); "
            f"increase num_burnin_steps")
