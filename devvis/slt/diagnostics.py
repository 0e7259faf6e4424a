"""Health checks of an LLC estimate; each returns a readable finding, or None when the check passes.

Per chain: a NaN/inf loss (:func:`stopped`), divergence beyond d/2 (:func:`diverged`), a loss still
trending at the end (:func:`trending`), a low MALA acceptance rate (:func:`low_acceptance`, Furman &
Lau 2024: the step size is too large for the posterior), a localization pull that outweighs the loss
gradient (:func:`pull_dominates`: the chain is held by γ and cannot explore the loss), a distance
|w − w*|² still growing at the end (:func:`spreading`: the chain has not reached the localized posterior,
and the estimate may still grow with the number of steps; a note). Per estimate: draws significantly more often below
L(w*) than above (:func:`below_init`: w* is not a local minimum of the sampled loss), an estimate
significantly below zero (:func:`negative`), chains that disagree (:func:`chains_disagree`, split-R̂),
burn-in too short (:func:`burnin_short`: the first draws still sit below the later ones), chains that left
w* (:func:`not_local`: |w − w*|² per weight over 10x w*'s own mean square, a setting too hot to be local). The checks
that are statistical tests use the standard error of the draws with their autocorrelation time, so an
estimate close to zero is not failed by its noise alone. :data:`FAILING` are the flags that make
``LLCResult.ok`` false.

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
           "MAX_PULL_RATIO", "MAX_RHAT", "BURNIN_Z", "SIGNIFICANCE_Z", "SPREAD_RELATIVE", "FAILING",
           "autocorrelation_time", "trend_change", "trend_se", "stopped", "diverged", "trending", "spreading",
           "low_acceptance", "pull_dominates", "below_init", "negative", "estimate_se", "split_rhat",
           "chains_disagree", "burnin_short", "not_local", "MAX_SPREAD_RATIO"]

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

#: Above this fraction of draws below L(w*) (and significantly, see :data:`SIGNIFICANCE_Z`), w* is not a
#: local minimum of the sampled loss.
MAX_BELOW_INIT = 0.5

#: Above this ratio E[γ(w − w*)·∇L] / E[nβ|∇L|²] the localization, not the loss, holds the chain where the
#: loss curves (see :func:`pull_dominates`).
MAX_PULL_RATIO = 1.0

#: A statistical check fires only beyond this many standard errors (draws' autocorrelation included).
SIGNIFICANCE_Z = 3.0

#: A chain is still spreading when |w − w*|² changes by more than this fraction of its mean over the last
#: half of the draws (and by more than ``TREND_STDS`` standard errors).
SPREAD_RELATIVE = 0.1

#: Above this ratio of the chains' mean |w − w*|² per weight to w*'s own mean square the chains sample weights
#: more than √10 ≈ 3.2x larger than w* in RMS: the estimate describes the localization's Gaussian, not the
#: neighbourhood of w* (measured on the demo's ResNet: nβ = γ = 0.5 gives 35-43, nβ = 2, γ = 1 gives 21, the
#: local nβ = 40, γ = 20 about 1, nβ = γ = 9.23 about 2.3).
MAX_SPREAD_RATIO = 10.0

#: Above this split-R̂ of the draws the chains have not mixed into one distribution.
MAX_RHAT = 1.1

#: Burn-in is too short when the first tenth of the draws lies below the last half by more than this
#: many standard errors (batch means) and by more than ``TREND_RELATIVE`` of the loss rise.
BURNIN_Z = 4.0

#: Flags that make an estimate not ``ok`` (a single NaN chain is excluded from the mean instead). ``spreading``
#: is a note, not a failure: a chain can keep spreading along a set where the loss is flat while the loss,
#: and so the estimate, has settled (the deep linear network at its most singular minimum does); calibration
#: guards against the transient it can signal by requiring the estimate to be stable in ε.
FAILING = ("diverged", "trending", "low_acceptance", "pull_dominates", "below_init", "negative",
           "chains_disagree", "burnin_short", "not_local", "uncalibrated")


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


def trend_se(draws: np.ndarray) -> tuple[float, float]:
    """Fitted change of the line through the last half of ``draws`` and its standard error under
    autocorrelated noise (the residuals' std, widened by their autocorrelation time)."""
    change, _ = trend_change(draws)
    half = np.asarray(draws[len(draws) // 2 :], dtype=np.float64)
    if len(half) < 4:
        return change, math.inf
    t = np.arange(len(half), dtype=np.float64)
    resid = half - np.polyval(np.polyfit(t, half, 1), t)
    return change, float(np.std(resid)) * math.sqrt(12 * autocorrelation_time(resid) / len(half))


def trending(chain: int, draws: np.ndarray, init_loss: float) -> str | None:
    """A finding when the loss at the draws ``(num_draws,)`` is still trending at the end (see :data:`TREND_RELATIVE`)."""
    change, se = trend_se(draws)
    rise = abs(float(np.mean(draws[len(draws) // 2 :])) - init_loss)
    if not (abs(change) > max(TREND_STDS * se, TREND_RELATIVE * rise) and abs(change) > 0):
        return None
    return (f"chain {chain}: loss still trending at the end (fitted change {change:+.3g} over the last "
            f"half of the draws, above both {TREND_STDS:g} standard errors ({se:.3g}) and 10% of the loss rise "
            f"{rise:.3g}); "
            f"take more draws or burn-in, or adjust lr")


def spreading(chain: int, distance: np.ndarray) -> str | None:
    """A finding when |w − w*|² at the draws ``(num_draws,)`` still grows at the end of the chain.

    A chain that has not yet spread to the width the localization allows samples a transient, not the
    localized posterior: in a singular model the loss can keep rising slowly as the chain drifts into flat
    directions, so that the estimate grows with the number of steps and with ε while the loss trace looks
    flat under the minibatch noise (a note; not in :data:`FAILING`). Fires when the fitted change over the last half of the draws exceeds
    :data:`SPREAD_RELATIVE` of the mean and ``TREND_STDS`` standard errors.
    """
    d = np.asarray(distance, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) < 8:
        return None
    change, se = trend_se(d)
    mean = float(np.mean(d[len(d) // 2 :]))
    if not (change > max(TREND_STDS * se, SPREAD_RELATIVE * mean) and change > 0):
        return None
    return (f"chain {chain}: still spreading from w* (|w − w*|² grew by {change / max(mean, 1e-300):.0%} over the "
            f"last half of the draws): the chain has not reached the localized posterior; unless the loss is flat "
            f"along the way, the estimate still grows with the number of steps (more burn-in, a larger lr or a "
            f"larger localization)")


def not_local(distance: np.ndarray, dim: int, anchor_mean_square: float) -> str | None:
    """A finding when the chains' mean |w − w*|² per weight (``distance`` ``(C, num_draws)``: |w − w*|² summed
    over the ``dim`` sampled weights) exceeds :data:`MAX_SPREAD_RATIO` times w*'s own mean square.

    Small nβ and γ keep an estimate positive at a checkpoint that is no minimum only by letting the chains
    leave w*: the loss then rises by nats, and the number is not a local learning coefficient. At w* = 0
    (e.g. a deep linear network at its most singular minimum) there is no scale to compare with, and the
    check does not fire.

    >>> not_local(np.full((2, 10), 50.0), 10, 0.1) is not None, not_local(np.full((2, 10), 5.0), 10, 0.1)
    (True, None)
    """
    d = np.asarray(distance, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not len(d) or not anchor_mean_square > 0 or dim < 1:
        return None
    per_weight = float(np.mean(d)) / dim
    ratio = per_weight / anchor_mean_square
    if not ratio > MAX_SPREAD_RATIO:
        return None
    return (f"the chains sampled weights {math.sqrt(ratio):.1f}x larger than w* in RMS (|w − w*|² per weight "
            f"{per_weight:.3g} against w*'s mean square {anchor_mean_square:.3g}, more than {MAX_SPREAD_RATIO:g}x): "
            f"the estimate describes the localization, not the neighbourhood of w* (raise nbeta and localization)")


def low_acceptance(chain: int, rate: float) -> str | None:
    """A finding when the chain's mean MALA acceptance ``rate`` is below :data:`MIN_ACCEPTANCE`."""
    if not rate < MIN_ACCEPTANCE:
        return None
    return (f"chain {chain}: MALA acceptance {rate:.2f} < {MIN_ACCEPTANCE:g}: the step size is too large for this "
            f"posterior (decrease lr)")


def pull_dominates(chain: int | None, ratio: float) -> str | None:
    """A finding when the localization outweighs the loss where the loss curves (ratio above :data:`MAX_PULL_RATIO`).

    ``ratio`` is ``E[γ(w − w*)·∇L] / E[nβ|∇L|²]`` over the draws. For the localized posterior
    ``p ∝ exp(−U)``, ``U = nβL + γ/2·|w − w*|²``, Stein's identity ``E[∇L·∇U] = E[ΔL]`` splits the loss
    curvature ``nβ·E[tr ∇²L]`` into the localization's share (numerator) and the loss's own (denominator);
    for a quadratic loss with curvatures h_i the ratio is ``Σ h_i·γ/(nβh_i+γ) / Σ h_i·nβh_i/(nβh_i+γ)``:
    above 1 the directions that carry the estimate are held by γ and the estimate is biased low. (The norm
    ``|γ(w − w*)|`` is no such measure: in directions the loss does not see it grows like ``√(γd)``.)
    ``|∇L|²`` is estimated from the gradients of consecutive steps (two minibatches), without the
    minibatch noise that ``|g|²`` would add. ``chain`` None: the ratio of all chains together (sums over
    their draws), which the estimate uses: one chain's is noisier.
    """
    if not ratio > MAX_PULL_RATIO:
        return None
    who = "all chains" if chain is None else f"chain {chain}"
    return (f"{who}: the localization pull along the loss gradient, γ(w−w*)·∇L, is {ratio:.3g}x the "
            f"loss's own nβ|∇L|² (> {MAX_PULL_RATIO:g}): the chain is held by γ, not by the loss, and the estimate "
            f"is biased low (decrease localization or increase nbeta)")


def _finite_rows(draws: np.ndarray) -> list[np.ndarray]:
    return [r[np.isfinite(r)] for r in np.atleast_2d(draws) if np.isfinite(r).sum() >= 2]


def below_init(draws: np.ndarray, init_loss: float) -> str | None:
    """A finding when more than :data:`MAX_BELOW_INIT` of the draws ``(C, N)`` lie below ``init_loss``,
    by more than :data:`SIGNIFICANCE_Z` standard errors (the indicator's autocorrelation included)."""
    rows = _finite_rows(draws)
    if not rows:
        return None
    below = [(r < init_loss).astype(np.float64) for r in rows]
    frac = float(np.mean(np.concatenate(below)))
    n_eff = sum(len(b) / autocorrelation_time(b) for b in below)
    se = math.sqrt(0.25 / max(n_eff, 1.0))
    if not (frac > MAX_BELOW_INIT and frac - 0.5 > SIGNIFICANCE_Z * se):
        return None
    return (f"{frac:.0%} of the draws are below L(w*) = {init_loss:.4g} ({(frac - 0.5) / se:.1f} standard errors "
            f"above half): the weights are not at a local minimum of the sampled loss (check train_mode, or "
            f"train further)")


def estimate_se(draws: np.ndarray, nbeta: float) -> float:
    """Standard error of the estimate ``nβ·(mean of the draws − L(w*))`` from the draws ``(C, N)``: each
    chain's variance of the mean (autocorrelation time included), averaged over chains."""
    rows = _finite_rows(draws)
    if not rows:
        return math.nan
    var = [float(np.var(r, ddof=1)) * autocorrelation_time(r) / len(r) for r in rows]
    return float(nbeta * math.sqrt(sum(var)) / len(rows))


def negative(llc_mean: float, se: float = 0.0) -> str | None:
    """A finding for an estimate below zero by more than :data:`SIGNIFICANCE_Z` standard errors ``se``
    (the learning coefficient is never negative; one within its noise of zero is not failed)."""
    if not llc_mean < -SIGNIFICANCE_Z * (se if math.isfinite(se) else 0.0):
        return None
    return (f"the estimate {llc_mean:.4g} is negative (standard error {se:.2g}): the weights are not at a local "
            f"minimum of the sampled loss")


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
