"""Health checks of an LLC estimate; each returns a readable finding, or None when the check passes.

Per chain: a NaN/inf loss (:func:`stopped`), divergence beyond d/2 (:func:`diverged`), a loss still
trending at the end (:func:`trending`), a low MALA acceptance rate (:func:`low_acceptance`, Furman &
Lau 2024: the step size is too large for the posterior), a localization pull that outweighs the loss
gradient (:func:`pull_dominates`: the chain is held by γ and cannot explore the loss), a distance
|w − w*|² still growing at the end (:func:`spreading`: the chain has not reached the localized posterior,
and the estimate may still grow with the number of steps; a note). Per estimate: draws significantly more often below
L(w*) than above (:func:`below_init`: w* is not a local minimum of the sampled loss), an estimate
significantly below zero (:func:`negative`), chains that disagree (:func:`chains_disagree`: split-R̂ and a test),
burn-in too short (:func:`burnin_short`: the first draws still sit below the later ones), chains that left
w* (:func:`not_local`: |w − w*|² per weight over 10x w*'s own mean square, a setting too hot to be local). The checks
that are statistical tests use the standard error of the draws with one autocorrelation time pooled over the
chains (:func:`chains_tau`), so an estimate close to zero, or chains that wander slowly, are not failed by
their noise alone. :data:`FAILING` are the flags that make
``LLCResult.ok`` false; :func:`longer_chains_may_cure` decides which failures ``estimate_llc(..., max_draws=...)``
answers by running the chains longer, and :func:`not_a_minimum` which say the weights have no LLC at all.

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
from typing import Sequence

import numpy as np

__all__ = ["LLCDiagnosticWarning", "TREND_RELATIVE", "TREND_STDS", "DIVERGENCE_FACTOR", "MIN_ACCEPTANCE", "MAX_BELOW_INIT",
           "MAX_PULL_RATIO", "MAX_RHAT", "BURNIN_Z", "SIGNIFICANCE_Z", "SPREAD_RELATIVE", "FAILING",
           "autocorrelation_time", "trend_change", "trend_se", "stopped", "diverged", "trending", "spreading",
           "low_acceptance", "pull_dominates", "below_init", "negative", "estimate_se", "split_rhat",
           "chains_disagree", "burnin_short", "not_local", "MAX_SPREAD_RATIO", "chi2_quantile",
           "half_disagreement", "chains_tau", "DISAGREE_Z", "CURED_BY_LONGER_CHAINS", "longer_chains_may_cure",
           "NOT_A_MINIMUM", "SAMPLER_OFF", "not_a_minimum"]

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
#: Standard errors (as a χ² tail) by which the split halves' means must differ for :func:`chains_disagree`: more
#: than :data:`SIGNIFICANCE_Z` because the τ read from 400 draws is low (17.7 for a true 24), so on stationary
#: draws Q averages 4.2 where χ² with 3 degrees of freedom averages 3.
DISAGREE_Z = 3.5

#: Burn-in is too short when the first tenth of the draws lies below the last half by more than this
#: many standard errors (batch means) and by more than ``TREND_RELATIVE`` of the loss rise.
BURNIN_Z = 4.0

#: Flags that make an estimate not ``ok`` (a single NaN chain is excluded from the mean instead). ``spreading``
#: is a note, not a failure: a chain can keep spreading along a set where the loss is flat while the loss,
#: and so the estimate, has settled (the deep linear network at its most singular minimum does); calibration
#: guards against the transient it can signal by requiring the estimate to be stable in ε.
FAILING = ("diverged", "trending", "low_acceptance", "pull_dominates", "below_init", "negative",
           "chains_disagree", "burnin_short", "not_local", "uncalibrated")

#: The failing checks that longer chains can cure: a chain that has not yet reached its stationary
#: distribution. ``estimate_llc(..., max_draws=...)`` extends the chains while these, and only these, fail;
#: the others (a chain below L(w*), a negative estimate, low acceptance, ...) say the setting or the point
#: is wrong, and more draws of it would only cost time.
CURED_BY_LONGER_CHAINS = ("trending", "chains_disagree", "burnin_short")


def longer_chains_may_cure(failed: Sequence[str]) -> bool:
    """Whether an estimate whose failing checks are ``failed`` should run longer: something failed, and all of
    it is in :data:`CURED_BY_LONGER_CHAINS`.

    >>> longer_chains_may_cure(["chains_disagree"]), longer_chains_may_cure(["trending", "negative"])
    (True, False)
    >>> longer_chains_may_cure(["burnin_short"]), longer_chains_may_cure([])
    (True, False)
    """
    return bool(failed) and set(failed) <= set(CURED_BY_LONGER_CHAINS)


#: The failing checks that say the weights are not a local minimum of the sampled loss: the chains find lower
#: loss around w* than at it. The learning coefficient is defined at a minimum only, so such an estimate has
#: no LLC: ``LLCResult.llc`` is NaN there (the sampler's number stays in ``llc_mean``) and its verdict reads
#: "not a minimum" (:func:`not_a_minimum`).
NOT_A_MINIMUM = ("below_init", "negative")

#: Flags that say the chains left the neighbourhood of w* or the integrator is off (``nan``: a chain stopped on a
#: NaN/inf loss, even when the others finished): with one of them, draws below L(w*) are no evidence about w*
#: itself, and the verdict stays "unhealthy".
SAMPLER_OFF = ("diverged", "low_acceptance", "not_local", "nan")


def not_a_minimum(failed: Sequence[str]) -> bool:
    """Whether an estimate whose failing checks are ``failed`` says that w* is not a local minimum: one of
    :data:`NOT_A_MINIMUM` fired, and none of :data:`SAMPLER_OFF` (chains that stayed near w* with a sound step).

    >>> not_a_minimum(["below_init", "negative"]), not_a_minimum(["negative", "chains_disagree"])
    (True, True)
    >>> not_a_minimum(["below_init", "low_acceptance"]), not_a_minimum(["negative", "nan"]), not_a_minimum([])
    (False, False, False)
    """
    return bool(set(failed) & set(NOT_A_MINIMUM)) and not set(failed) & set(SAMPLER_OFF)


class LLCDiagnosticWarning(UserWarning):
    """An LLC estimate looked unhealthy (see :mod:`devvis.slt.diagnostics`)."""


def autocorrelation_time(x: np.ndarray) -> float:
    """Integrated autocorrelation time of ``x`` ``(N,)``; 1 for white noise.

    Geyer's initial monotone sequence estimator (as Stan's effective sample size uses): the sums of
    consecutive pairs of autocorrelations, cut at the first that is not positive and made non-increasing. Less
    biased on short chains than Sokal's window ``M ≥ 5τ``: AR(1) draws with τ = 24 (50), 2 chains x 400, read
    20 (35) against Sokal's 16 (23). ``x`` ``(C, N)``: one time for all rows, from their autocovariances averaged
    (each row about its own mean), as for chains that sample one distribution; less noisy than one row's.
    """
    x = np.asarray(x, dtype=np.float64)
    rows = np.atleast_2d(x)
    n = rows.shape[1]
    if n < 4 or not np.std(rows, axis=1).max() > 0:
        return 1.0
    centred = rows - rows.mean(axis=1, keepdims=True)
    f = np.fft.rfft(centred, n=2 * n, axis=1)
    acov = np.fft.irfft(f * np.conj(f), axis=1)[:, :n].mean(axis=0)
    acf = acov / acov[0]
    total, last = 0.0, math.inf
    for k in range(0, n - 1, 2):
        pair = float(acf[k] + acf[k + 1])
        if pair <= 0:
            break
        last = min(last, pair)
        total += last
    return float(max(2 * total - 1, 1.0))


def chains_tau(draws: np.ndarray) -> float:
    """The autocorrelation time of the draws ``(C, N)`` that every statistical check uses: pooled over the finite
    chains (:func:`autocorrelation_time` of ``(C, N)``), each chain's least-squares line removed first, so that a
    chain's drift or jump does not read as slow mixing and hide itself. One chain's half alone (200 draws, as the
    trend check used) reads a true τ of 24 as 8 (detrended, Sokal), which made stationary chains fail ``trending`` and
    ``chains_disagree``; this reads it as 18 (see :func:`chains_disagree` for the rates).

    >>> rng = np.random.default_rng(0)
    >>> chains_tau(rng.normal(size=(2, 400))) < 1.5    # white noise
    True
    """
    rows = _finite_rows(draws)
    longest = max((len(r) for r in rows), default=0)
    rows = [r for r in rows if 2 * len(r) >= longest]   # a chain stopped early must not cut the others short
    n = min((len(r) for r in rows), default=0)
    if n < 4 or not any(np.ptp(r[:n]) > 0 for r in rows):
        return 1.0
    t = np.arange(n, dtype=np.float64)
    return autocorrelation_time(np.vstack([r[:n] - np.polyval(np.polyfit(t, r[:n], 1), t) for r in rows]))


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


def trend_se(draws: np.ndarray, tau: float | None = None) -> tuple[float, float]:
    """Fitted change of the line through the last half of ``draws`` and its standard error under
    autocorrelated noise (the residuals' std, widened by the autocorrelation time ``tau``: :func:`chains_tau` of
    all chains where given, else the residuals' own)."""
    change, _ = trend_change(draws)
    half = np.asarray(draws[len(draws) // 2 :], dtype=np.float64)
    if len(half) < 4:
        return change, math.inf
    t = np.arange(len(half), dtype=np.float64)
    resid = half - np.polyval(np.polyfit(t, half, 1), t)
    tau = autocorrelation_time(resid) if tau is None else tau
    return change, float(np.std(resid)) * math.sqrt(12 * tau / len(half))


def trending(chain: int, draws: np.ndarray, init_loss: float, tau: float | None = None) -> str | None:
    """A finding when the loss at the draws ``(num_draws,)`` is still trending at the end (see :data:`TREND_RELATIVE`);
    ``tau``: the chains' :func:`chains_tau` (default: this chain's own, noisier)."""
    change, se = trend_se(draws, tau)
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
    chain's variance of the mean (the chains' :func:`chains_tau` included), averaged over chains."""
    rows = _finite_rows(draws)
    if not rows:
        return math.nan
    tau = chains_tau(draws)
    var = [float(np.var(r, ddof=1)) * min(tau, len(r)) / len(r) for r in rows]
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


def chi2_quantile(dof: int, z: float) -> float:
    """The χ² quantile with ``dof`` degrees of freedom whose upper tail is the normal tail beyond ``z`` standard
    deviations (Wilson–Hilferty; above the exact quantile by 1.5% at ``z`` = 3, ``dof`` = 3, 2.5% at
    ``dof`` = 1, up to 9% at ``z`` = 4, ``dof`` = 1).

    >>> round(chi2_quantile(3, 3.0), 1)   # exact: 15.6
    15.9
    """
    h = 2.0 / (9.0 * dof)
    return float(dof * (1.0 - h + z * math.sqrt(h)) ** 3)


def half_disagreement(draws: np.ndarray) -> tuple[float, int]:
    """Cochran's Q of the split halves of the draws ``(C, N)`` and its degrees of freedom: the squared
    differences of the halves' means from their precision-weighted mean, each in units of its standard error
    ``σ²τ/n`` (σ² its chain's variance within its halves, so that a jump between them does not widen its own
    noise; τ the chains' :func:`chains_tau`). χ² with ``2C − 1`` degrees of freedom when every half samples one
    distribution; ``(nan, 0)`` with fewer than 4 draws a half."""
    rows = [r[np.isfinite(r)] for r in np.atleast_2d(draws)]
    n = min((len(r) for r in rows), default=0) // 2
    if n < 4:
        return math.nan, 0
    rows = [r[: 2 * n] for r in rows]
    tau = chains_tau(np.vstack(rows))
    means = np.array([h.mean() for r in rows for h in (r[:n], r[n:])])
    # each chain's variance within its halves (R-hat's W): a jump between them must not widen its own noise
    within = [0.5 * (float(np.var(r[:n], ddof=1)) + float(np.var(r[n:], ddof=1))) for r in rows]
    var = np.array([max(s2, 1e-300) * tau / n for s2 in within for _ in range(2)])
    w = 1.0 / var
    centre = float(np.sum(w * means) / np.sum(w))
    return float(np.sum(w * (means - centre) ** 2)), len(means) - 1


def chains_disagree(draws: np.ndarray) -> str | None:
    """A finding when the split-R̂ of the draws ``(C, N)`` exceeds :data:`MAX_RHAT` *and* the halves' means differ
    beyond their noise (:func:`half_disagreement`'s Q above the χ² quantile at :data:`DISAGREE_Z`).

    R̂ alone is not a test: its within-half variance ignores autocorrelation, so a stationary chain with
    autocorrelation time τ already has R̂² ≈ 1 + τ/n, and with four halves the between-half variance has three
    degrees of freedom. Stationary AR(1) draws, 2 chains x 400, τ = 24 (the demo's RMSProp-SGLD chains read
    τ ≈ 4-23) exceed R̂ 1.1 in 18% of seeds (τ = 50: 50%); with the significance test as well, in 0.8% (4.2%).
    It still fires on one chain shifted by 3 noise standard deviations, or jumping by as much half-way, in every
    seed, and on one chain alone jumping 3 stds in 97% (``tests/slt/test_llc_health.py``); a 1-std shift at τ = 24
    is caught in 35%: chains this short cannot tell less. Four chains (``estimate_llc``'s default) false-alarm
    more: 1.2% at τ = 24, 10.5% at τ = 50."""
    rhat = split_rhat(draws)
    if not rhat > MAX_RHAT:
        return None
    q, dof = half_disagreement(draws)
    bound = chi2_quantile(dof, DISAGREE_Z) if dof else math.inf
    if not q > bound:
        return None
    return (f"the chains and their halves disagree (split-R̂ {rhat:.3g} > {MAX_RHAT:g}; their means differ by "
            f"Q = {q:.3g} squared standard errors over {dof} degrees of freedom, > {bound:.3g}): they have not reached "
            f"one distribution (more burn-in or draws, or another lr)")


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
