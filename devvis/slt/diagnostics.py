"""Health checks of one SGLD chain: a NaN/inf loss, divergence beyond d/2, a loss still trending.

Each check returns a human-readable finding (or nothing); :func:`~devvis.slt.estimate_llc`
collects them into ``LLCResult.diagnostics`` and ``LLCResult.flags`` and warns with
:class:`LLCDiagnosticWarning`.

>>> import numpy as np
>>> trend_change(np.arange(20.0))   # a straight rise over the last 10 draws: change 9, std ~2.87
(9.0, 2.8722813232690143)
>>> diverged(0, llc=30.0, dim=10) is not None, diverged(0, llc=5.0, dim=10)
(True, None)
"""

from __future__ import annotations

import numpy as np

__all__ = ["LLCDiagnosticWarning", "TREND_RELATIVE", "DIVERGENCE_FACTOR", "trend_change", "stopped", "diverged",
           "trending"]

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
    rise = abs(float(np.mean(draws[len(draws) // 2 :])) - init_loss)
    if not (abs(change) > max(spread, TREND_RELATIVE * rise) and abs(change) > 0):
        return None
    return (f"chain {chain}: loss still trending at the end (fitted change {change:+.3g} over the last "
            f"half of the draws, above both its std {spread:.3g} and 10% of the loss rise {rise:.3g}); "
            f"take more draws or burn-in, or adjust lr")
