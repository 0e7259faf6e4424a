"""Stage boundaries from several signals at once.

Each signal is a trajectory over the same checkpoints (a scalar curve such as the loss or the LLC,
or a vector one such as the essential-dynamics PCs or the feature-change rate of many units).
Boundaries are found in four documented steps:

1. **Turn** of each signal at every checkpoint (:func:`devvis.stages.turns.turns`).
2. **Robust z-score** per signal: ``z_i = (turn_i − median(turn)) / (1.4826 · MAD(turn))``, so signals of
   different kinds and noise levels are comparable (a z of 3 is a turn three robust standard
   deviations above the signal's typical one). A signal whose MAD is 0 uses 1e-6 instead.
3. **Combined score** ``c_i = Σ_signals weight · max(z_{i−1}, z_i, z_{i+1}) / Σ weight``: a signal supports
   checkpoint ``i`` when it turns there or at a neighbour (signals of one event need not peak at the
   same checkpoint). Ties go to the checkpoint with the larger ``Σ weight · z_i``.
4. **Boundaries** are checkpoints where ``c`` is at least ``threshold`` (default 3), the largest within
   ``±min_separation`` checkpoints (default 2) and within their *event* (the run of consecutive
   checkpoints with ``c ≥ threshold`` around them: a change that lasts several checkpoints is one
   boundary, not several), and at least ``min_support`` signals (default: 2, or 1
   when there is one signal) have ``max(z)`` over ``i−1..i+1`` at least ``support_z`` (default 1.5).
   The boundary is placed at the checkpoint within ±1 where the supporting signals' summed z is largest.
   The boundary's **supporting signals** are those; its **uncertainty** (in checkpoints) is
   ``max(1, spread)`` where ``spread`` is the largest distance between ``i`` and a supporting
   signal's own peak in ``i−1..i+1`` — one checkpoint at least, because a turn seen at a checkpoint
   happened somewhere in the interval on either side of it.
5. **Transients.** A turn marks a change of velocity, and a spike — the trajectory jumps away and
   comes back within a checkpoint or two, as in a loss spike of Adam — turns as much as a stage
   boundary does. A stage boundary is a change that persists. So each candidate of step 4 is checked
   with the :func:`~devvis.stages.turns.persistence` of its supporting *vector* signals (those with
   two or more dimensions, such as the essential-dynamics PCs and the features): how much of the
   excursion remains two checkpoints after the event, in [0, 1]. When every supporting vector
   signal has persistence below ``min_persistence`` (default 0.5: the trajectory ends the event
   closer to where it was than half of how far it went), the candidate is a **transient**, reported
   apart (:attr:`Boundary.kind` ``"transient"``) and not a boundary; otherwise it is a boundary.
   Scalar signals do not decide: in one dimension a spike and a sharp peak (a curve that stops
   rising and falls) look alike within the window, while in several dimensions coming back to the
   same point is specific. A candidate with no vector signal among its supporters, or whose
   persistence is undefined (next to the ends), stays a boundary. ``min_persistence=0`` turns the
   check off. A transient keeps its checkpoints: no boundary is placed within ``±min_separation``
   of it or in its event.

>>> import numpy as np
>>> steps = list(range(0, 200, 10))
>>> rng = np.random.default_rng(0)
>>> a = np.r_[np.zeros(10), np.arange(1, 11)] + 0.01 * rng.standard_normal(20)   # moving from step 90 on
>>> b = np.r_[np.ones(10), np.linspace(1, -4, 10)] + 0.01 * rng.standard_normal(20)   # from 100 on
>>> [(x.step, x.uncertainty, x.signals) for x in detect_boundaries({"a": (steps, a), "b": (steps, b)})]
[(100, 1, ['a', 'b'])]
>>> t = np.arange(20.0)[:, None]                                  # 2-D paths turning at step 100
>>> p = np.where(t < 10, t * [1, 0], [10, 0] + (t - 10) * [0, 1]) + 0.01 * rng.standard_normal((20, 2))
>>> q = p[:, ::-1].copy()
>>> p[5] += [0, 20]; q[5] += [20, 0]                              # both jump away at step 50, back at 60
>>> found = detect_events({"p": (steps, p), "q": (steps, q)})
>>> [(x.kind, x.step, round(x.persistence["p"], 2)) for x in found.boundaries + found.transients]
[('boundary', 100, 1.0), ('transient', 50, 0.25)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from devvis.errors import ConfigError
from devvis.stages.turns import as_trajectory, persistence, robust_z, turns

#: Defaults of :func:`detect_boundaries` (see the module docstring).
DEFAULT_THRESHOLD = 3.0
DEFAULT_SUPPORT_Z = 1.5
DEFAULT_MIN_SEPARATION = 2
DEFAULT_MIN_PERSISTENCE = 0.5

SignalLike = tuple[Sequence[int], Any]


@dataclass
class Boundary:
    """A stage boundary: at checkpoint ``index`` (training ``step``), ``uncertainty`` in checkpoints
    (the true boundary lies within ``index ± uncertainty``), the combined ``score``, the supporting
    ``signals`` and each signal's z-score there (``z``, max over ``index ± 1``). ``kind`` is
    ``"boundary"``, or ``"transient"`` for a candidate whose supporting vector signals all come back
    (step 5 of the module docstring); ``persistence``: each vector signal's persistence there (NaN
    where undefined)."""

    index: int
    step: int
    uncertainty: int
    score: float
    signals: list[str]
    z: dict[str, float] = field(default_factory=dict)
    step_range: tuple[int, int] = (0, 0)
    kind: str = "boundary"
    persistence: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "step": self.step, "kind": self.kind, "uncertainty_checkpoints": self.uncertainty,
                "step_range": list(self.step_range), "score": round(self.score, 4), "signals": self.signals,
                "z": {k: round(v, 3) for k, v in self.z.items()},
                "persistence": {k: round(v, 3) if np.isfinite(v) else None for k, v in self.persistence.items()}}


class Events(NamedTuple):
    """What :func:`detect_events` finds: the stage ``boundaries`` and the ``transients``, each in step order."""

    boundaries: list[Boundary]
    transients: list[Boundary]


def _windowed_max(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max(z[i-1], z[i], z[i+1])`` and the offset (−1, 0 or +1) of that maximum, per checkpoint."""
    padded = np.r_[-np.inf, z, -np.inf]
    stack = np.stack([padded[:-2], padded[1:-1], padded[2:]])
    return stack.max(axis=0), stack.argmax(axis=0) - 1


def _same_run(above: np.ndarray, a: int, b: int) -> bool:
    """Whether every checkpoint from ``a`` to ``b`` is above the threshold: one event, not two."""
    lo, hi = min(a, b), max(a, b)
    return bool(above[lo:hi + 1].all())


def signal_z(steps: Sequence[int], signals: Mapping[str, SignalLike]) -> dict[str, np.ndarray]:
    """The robust z-score of each signal's turn, aligned on ``steps`` (signals must share them)."""
    out = {}
    for name, (st, values) in signals.items():
        if list(st) != list(steps):
            raise ConfigError(f"signal {name!r} has steps {list(st)[:6]}..., not the series' steps {list(steps)[:6]}...; "
                              "give every signal at the same checkpoints")
        as_trajectory(st, values)
        out[name] = robust_z(turns(st, values)[1:-1])
    return out


def combined_score(zs: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """Step 3 of the module docstring: ``Σ weight · max(z_{i−1}, z_i, z_{i+1}) / Σ weight`` per interior checkpoint."""
    w = {k: float((weights or {}).get(k, 1.0)) for k in zs}
    total = sum(w.values()) or 1.0
    return sum(w[k] * _windowed_max(np.asarray(z, dtype=np.float64))[0] for k, z in zs.items()) / total


def detect_boundaries(signals: Mapping[str, SignalLike], **kwargs: Any) -> list[Boundary]:
    """Stage boundaries supported by ``signals`` ``{name: (steps, values (n,) or (n, d))}`` (module docstring),
    in step order: :func:`detect_events` without the transients (same keyword arguments)."""
    return detect_events(signals, **kwargs).boundaries


def _is_transient(persist: Mapping[str, float], support: Sequence[str], min_persistence: float) -> bool:
    """Step 5: every supporting vector signal comes back (persistence < ``min_persistence``); needs at least one."""
    mine = [persist[k] for k in support if k in persist]
    return bool(mine) and all(np.isfinite(p) and p < min_persistence for p in mine)


def detect_events(signals: Mapping[str, SignalLike], *, weights: Mapping[str, float] | None = None,
                  threshold: float = DEFAULT_THRESHOLD, support_z: float = DEFAULT_SUPPORT_Z,
                  min_support: int | None = None, min_separation: int = DEFAULT_MIN_SEPARATION,
                  min_persistence: float = DEFAULT_MIN_PERSISTENCE) -> Events:
    """Stage boundaries and transients supported by ``signals`` ``{name: (steps, values (n,) or (n, d))}``
    (module docstring).

    All signals must be given at the same steps (at least 5 checkpoints). ``weights``: per signal
    (default 1 each). ``min_persistence``: below it, a candidate whose supporting vector signals all
    come back is a transient (0: none is).
    """
    if not signals:
        raise ConfigError("detect_boundaries needs at least one signal {name: (steps, values)}")
    steps = list(next(iter(signals.values()))[0])
    if len(steps) < 5:
        raise ConfigError(f"stage detection needs at least 5 checkpoints; got {len(steps)}")
    if unknown := sorted(set(weights or {}) - set(signals)):
        raise ConfigError(f"weights for unknown signals {unknown}; signals: {sorted(signals)}")
    weights = {k: float((weights or {}).get(k, 1.0)) for k in signals}
    zs = signal_z(steps, signals)
    vectors = {k: v for k, (_, v) in signals.items() if np.ndim(v) == 2 and np.shape(v)[1] >= 2}
    need = min_support if min_support is not None else min(2, len(signals))
    wmax = {k: _windowed_max(z) for k, z in zs.items()}
    total = sum(weights.values()) or 1.0
    combined = combined_score(zs, weights)  # interior checkpoints 1..n-2
    out: list[Boundary] = []
    raw = sum(weights[k] * zs[k] for k in zs) / total
    order = np.lexsort((-raw, -combined))  # ties of the windowed score go to the checkpoint that turns most
    taken: list[int] = []
    events: list[int] = []  # the candidates taken, before placement: their runs are spoken for
    for j in order:
        if combined[j] < threshold:
            break
        if any(abs(int(j) - t) <= min_separation for t in taken) or \
                any(_same_run(combined >= threshold, int(j), e) for e in events):
            continue
        support = [k for k in zs if wmax[k][0][j] >= support_z]
        if len(support) < need:
            continue
        events.append(int(j))
        # Place the boundary where the supporting signals turn most (within ±1 of the candidate).
        near = [c for c in (j - 1, j, j + 1) if 0 <= c < len(combined)]
        j = max(near, key=lambda c: sum(weights[k] * zs[k][c] for k in support))
        support = [k for k in zs if wmax[k][0][j] >= support_z] or support
        i = int(j) + 1  # back to a checkpoint index (z covers the interior checkpoints)
        peaks = [int(np.argmax(zs[k][max(0, j - 1):j + 2])) + max(0, j - 1) for k in support]
        spread = max((abs(p - j) for p in peaks), default=0)
        unc = max(1, spread)
        taken.append(int(j))
        persist = {k: persistence(steps, v, i) for k, v in vectors.items()}
        out.append(Boundary(index=i, step=int(steps[i]), uncertainty=unc, score=float(combined[j]),
                            signals=support, z={k: float(wmax[k][0][j]) for k in zs},
                            step_range=(int(steps[max(0, i - unc)]), int(steps[min(len(steps) - 1, i + unc)])),
                            kind="transient" if _is_transient(persist, support, min_persistence) else "boundary",
                            persistence=persist))
    out.sort(key=lambda b: b.index)
    return Events([b for b in out if b.kind == "boundary"], [b for b in out if b.kind == "transient"])
