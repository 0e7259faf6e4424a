"""Turning points of a trajectory over training: the one definition every stage signal uses.

A signal is a trajectory ``x_0, ..., x_{n-1}`` (one point per checkpoint, ``(n, d)``; a scalar
curve has ``d = 1``) at training steps ``s_0 < ... < s_{n-1}``. Its velocity between checkpoints
``i`` and ``i + 1`` is ``v_i = (x_{i+1} - x_i) / (s_{i+1} - s_i)``.

**Turn.** At an interior checkpoint ``i`` the trajectory's *turn* is the change of its velocity
relative to the run's typical speed,

    turn_i = ‖v_i − v_{i−1}‖ / median_j ‖v_j‖

0 when the velocity carries on unchanged; a trajectory at rest that starts moving at its typical
speed, or one that stops, turns by about 1; a reversal at twice the typical speed by 4. Dividing
by the median speed makes the turn dimensionless and comparable between signals and runs: the
early, fast part of training has large velocity changes in absolute terms, and a late turn
counts by how it compares with the whole run. (``turn`` is a velocity change, so it marks both
a change of direction and a change of speed: the start of a new phase of learning.)

**Turning point.** A checkpoint whose turn stands out from the run's turns: its robust z-score
``z_i = (turn_i − median(turn)) / (1.4826 · MAD(turn))`` (over the interior checkpoints; a MAD of 0
counts as 1e-6) is at least ``threshold`` (default 3) and the largest within ``±1`` checkpoint. Its
**strength** is that z-score. Stage detection (:mod:`devvis.stages.detect`) combines the same
z-scores over several signals.

**Persistence.** A turn says that the velocity changed, not that the trajectory went somewhere new: a
spike (the trajectory jumps away and comes back within a checkpoint or two, e.g. a loss spike of Adam)
turns as much as a step. The persistence at checkpoint ``i`` compares where the trajectory ends the
event with how far it went during it. With ``b`` the mean of ``x_{i−3}, x_{i−2}`` (before the event),
``a`` the mean of ``x_{i+2}, x_{i+3}`` (after it) and the excursion ``e = max_{j=i−1..i+1} ‖x_j − b‖``,

    persistence_i = ‖a − b‖ / max(‖a − b‖, e)

in [0, 1]: 1 when the trajectory ends the event at least as far from where it was as it ever got during
it (a step, a turn onto a new direction, or steady motion), near 0 when it comes back (a spike).
Steady motion counts as persisting: a spike on a moving trajectory scores below 0.5 only when its
excursion is more than twice the distance the trajectory moves in five checkpoint intervals (from the
middle of the pair before to the middle of the pair after). The
event's own checkpoints ``i−1..i+1`` are those whose turns the detector's ±1 window combines. Next
to the ends a side has one checkpoint; NaN where it has none (``i = 1`` and ``i = n − 2``) or nothing
moves.

>>> import numpy as np
>>> steps = list(range(0, 100, 10))
>>> x = np.array([0, 0, 0, 0, 0, 1, 2, 3, 4, 5], dtype=float)   # at rest, then moving from step 40
>>> x = x + 0.01 * np.random.default_rng(0).standard_normal(10)
>>> [(p.step, round(float(turns(steps, x)[p.index]), 2)) for p in turning_points(steps, x)]
[(40, 1.03)]
>>> spike = np.r_[np.zeros(5), 3.0, np.zeros(4)]                   # out at step 50, back at 60
>>> round(float(persistence(steps, spike, 5)), 2), round(float(persistence(steps, x, 4)), 2)
(0.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from devvis.errors import ConfigError

#: Defaults of :func:`turning_points`.
DEFAULT_THRESHOLD = 3.0


@dataclass(frozen=True)
class TurningPoint:
    """A checkpoint where a trajectory turns: ``index`` into the series, its ``step``, ``strength`` (the turn)."""

    index: int
    step: int
    strength: float

    def to_dict(self) -> dict[str, float | int]:
        return {"index": self.index, "step": self.step, "strength": round(float(self.strength), 4)}


def as_trajectory(steps: Sequence[int], values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` as float64 ``(n,)`` (strictly increasing) and ``values`` as float64 ``(n, d)``."""
    s = np.asarray(list(steps), dtype=np.float64)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) != len(s):
        raise ConfigError(f"a trajectory needs one value (or vector) per step: {len(s)} steps, values of shape {x.shape}")
    if len(s) > 1 and not np.all(np.diff(s) > 0):
        raise ConfigError(f"steps must be strictly increasing; got {list(steps)!r}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("a trajectory must be finite; drop the checkpoints with NaN or inf values first")
    return s, x


def velocities(steps: Sequence[int], values: Sequence[float] | np.ndarray) -> np.ndarray:
    """``v_i = (x_{i+1} − x_i) / (s_{i+1} − s_i)``, float64 ``(n − 1, d)``."""
    s, x = as_trajectory(steps, values)
    return np.diff(x, axis=0) / np.diff(s)[:, None]


def turns(steps: Sequence[int], values: Sequence[float] | np.ndarray) -> np.ndarray:
    """The turn at every checkpoint, float64 ``(n,)`` (0 at the first and last, which have one velocity)."""
    v = velocities(steps, values)
    out = np.zeros(len(v) + 1)
    if len(v) < 2:
        return out
    speed = np.linalg.norm(v, axis=1)
    out[1:-1] = np.linalg.norm(v[1:] - v[:-1], axis=1) / (float(np.median(speed)) + 1e-12)
    return out


#: Checkpoints averaged on each side of an event by :func:`persistence`, and the event's half-width.
PERSISTENCE_FLANK = 2
EVENT_HALF_WIDTH = 1


def persistence(steps: Sequence[int], values: Sequence[float] | np.ndarray, index: int) -> float:
    """How much of the excursion around checkpoint ``index`` remains after it, in [0, 1] (module docstring):
    ``‖a − b‖ / max(‖a − b‖, e)``; NaN where either side has no checkpoint or nothing moves."""
    _, x = as_trajectory(steps, values)
    h, m = EVENT_HALF_WIDTH, PERSISTENCE_FLANK
    before, after = x[max(0, index - h - m):max(0, index - h)], x[index + h + 1:index + h + 1 + m]
    if len(before) == 0 or len(after) == 0:
        return float("nan")
    b, a = before.mean(axis=0), after.mean(axis=0)
    d = float(np.linalg.norm(a - b))
    e = max(float(np.linalg.norm(x[j] - b)) for j in range(max(0, index - h), min(len(x), index + h + 1)))
    top = max(d, e)
    return d / top if top > 0 else float("nan")


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(x − median) / (1.4826 · MAD)`` of a 1-D array (a MAD of 0 counts as 1e-6)."""
    values = np.asarray(values, dtype=np.float64)
    med = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - med)))
    return (values - med) / max(mad, 1e-6)


def turning_points(steps: Sequence[int], values: Sequence[float] | np.ndarray, *,
                   threshold: float = DEFAULT_THRESHOLD) -> list[TurningPoint]:
    """Checkpoints whose turn's robust z-score is ``>= threshold`` and the largest within ±1 checkpoint (module docstring)."""
    t = np.full(len(list(steps)), -np.inf)
    t[1:-1] = robust_z(turns(steps, values)[1:-1])
    s = list(steps)
    out = []
    for i in range(1, len(t) - 1):
        if t[i] >= threshold and t[i] >= t[i - 1] and t[i] >= t[i + 1] and not (out and out[-1].index == i - 1):
            out.append(TurningPoint(i, int(s[i]), float(t[i])))
    return out
