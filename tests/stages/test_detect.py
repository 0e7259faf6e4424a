"""Turns, turning points and multi-signal boundary detection on synthetic curves with planted boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from devvis.errors import ConfigError
from devvis.stages import detect_boundaries, turning_points, turns
from devvis.stages.detect import detect_events
from devvis.stages.turns import persistence


def _planted(rng: np.random.Generator, n: int = 31, at: tuple[int, ...] = (10, 20), dims: int = 3) -> np.ndarray:
    """A piecewise-linear trajectory whose direction changes at checkpoints ``at``, plus noise."""
    x, pos, v = np.zeros((n, dims)), np.zeros(dims), rng.standard_normal(dims)
    for i in range(n):
        if i in at:
            v = rng.standard_normal(dims) * 2
        pos = pos + v + 0.05 * rng.standard_normal(dims)
        x[i] = pos
    return x


def test_turn_is_velocity_change_over_median_speed():
    steps = [0, 10, 20, 30, 40]
    x = np.array([0.0, 0.0, 1.0, 2.0, 3.0])
    t = turns(steps, x)
    # speeds 0, .1, .1, .1 -> median .1; change of velocity at checkpoint 1: .1 -> turn 1
    assert t.tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0, 0.0])
    # uneven spacing: velocities are per step
    assert turns([0, 1, 3], [0.0, 1.0, 3.0]).tolist() == pytest.approx([0.0, 0.0, 0.0])


def test_turning_points_find_planted_turn():
    rng = np.random.default_rng(1)
    x = _planted(rng, at=(15,))
    pts = turning_points(list(range(0, 310, 10)), x)
    assert [p.step for p in pts] and abs(pts[0].index - 15) <= 1
    assert all(abs(p.index - 15) <= 1 for p in pts)


@pytest.mark.parametrize("seed", range(5))
def test_planted_boundaries_found_within_uncertainty(seed):
    rng = np.random.default_rng(seed)
    steps = list(range(0, 310, 10))
    signals = {"a": (steps, _planted(rng)), "b": (steps, _planted(rng)),
               "c": (steps, np.cumsum(rng.standard_normal(31) * 0.1))}  # a pure-noise signal
    found = detect_boundaries(signals)
    assert len(found) == 2
    for b, planted in zip(found, (10, 20)):
        assert abs(b.index - planted) <= b.uncertainty <= 2
        assert {"a", "b"} <= set(b.signals) and b.z["c"] < min(b.z["a"], b.z["b"]) / 5
        assert b.step_range[0] <= steps[planted] <= b.step_range[1]


def test_noise_only_signals_give_at_most_one_boundary():
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        steps = list(range(31))
        sig = {k: (steps, np.cumsum(rng.standard_normal((31, 3)), axis=0)) for k in "abc"}
        assert len(detect_boundaries(sig)) <= 1


def test_single_signal_needs_one_supporter_and_two_need_two():
    rng = np.random.default_rng(3)
    steps = list(range(31))
    a = _planted(rng, at=(12,))
    assert [b.index for b in detect_boundaries({"a": (steps, a)})] in ([11], [12], [13])
    flat = np.cumsum(rng.standard_normal(31) * 0.01)
    both = detect_boundaries({"a": (steps, a), "flat": (steps, flat)}, threshold=1.0)
    assert all(len(b.signals) >= 2 for b in both)


def test_bad_inputs_named():
    with pytest.raises(ConfigError, match="at least 5 checkpoints"):
        detect_boundaries({"a": ([0, 1, 2], [0.0, 1.0, 2.0])})
    with pytest.raises(ConfigError, match="same checkpoints"):
        detect_boundaries({"a": (list(range(6)), np.arange(6.0)), "b": (list(range(1, 7)), np.arange(6.0))})
    with pytest.raises(ConfigError, match="strictly increasing"):
        turns([0, 2, 1], [0.0, 1.0, 2.0])
    with pytest.raises(ConfigError, match="finite"):
        turns([0, 1, 2], [0.0, float("nan"), 2.0])
    with pytest.raises(ConfigError, match="unknown signals"):
        detect_boundaries({"a": (list(range(6)), np.arange(6.0))}, weights={"b": 1.0})


def test_a_change_lasting_several_checkpoints_is_one_boundary():
    """The direction turns gradually over checkpoints 15..20: one event, one boundary (not one per ±2 checkpoints)."""
    rng = np.random.default_rng(0)
    steps = list(range(41))

    def gradual(rng):
        d1, d2, pos, out = rng.standard_normal(3), rng.standard_normal(3), np.zeros(3), []
        for i in range(41):
            w = min(max((i - 15) / 5, 0), 1)
            pos = pos + (1 - w) * d1 + w * 3 * d2 + 0.02 * rng.standard_normal(3)
            out.append(pos.copy())
        return np.array(out)

    found = detect_boundaries({"a": (steps, gradual(rng)), "b": (steps, gradual(rng))})
    assert [b.index for b in found] in ([15], [16], [17])


def _spike_and_step(rng: np.random.Generator, spike_at: int, step_at: int, n: int = 31) -> np.ndarray:
    """A 3-D path drifting slowly with noise, which jumps away at ``spike_at`` and is back one checkpoint later,
    and moves to a new place for good at ``step_at`` (a step change)."""
    x = np.cumsum(0.05 * rng.standard_normal((n, 3)), axis=0) + np.arange(n)[:, None] * [0.02, 0.0, 0.0]
    x[spike_at] += rng.choice([-1, 1], 3) * 2.0
    x[step_at:] += rng.choice([-1, 1], 3) * 2.0
    return x


@pytest.mark.parametrize("seed", range(5))
def test_a_spike_that_comes_back_is_a_transient_and_a_step_change_a_boundary(seed):
    """Issue 21: a trajectory that jumps away and comes back (a loss spike of Adam) is reported as a transient, not a
    stage boundary; a change that persists (a step) is a boundary. Both signals see both events."""
    rng = np.random.default_rng(seed)
    steps = list(range(0, 310, 10))
    signals = {"a": (steps, _spike_and_step(rng, 10, 20)), "b": (steps, _spike_and_step(rng, 10, 20))}
    found = detect_events(signals)
    assert [b.kind for b in found.boundaries] == ["boundary"] and abs(found.boundaries[0].index - 20) <= 1
    assert [b.kind for b in found.transients] == ["transient"] and found.transients[0].index == 10
    assert all(p < 0.2 for p in found.transients[0].persistence.values())
    assert all(p > 0.8 for p in found.boundaries[0].persistence.values())
    assert detect_boundaries(signals) == found.boundaries
    d = found.transients[0].to_dict()
    assert d["kind"] == "transient" and set(d["persistence"]) == {"a", "b"} and d["step"] == 100
    # with the check off, the spike is a boundary again (it turns as much as the step does)
    assert sorted(b.index for b in detect_boundaries(signals, min_persistence=0)) == [10, found.boundaries[0].index]


def test_persistence_of_spike_step_turn_and_steady_motion():
    steps = list(range(10))
    flat = np.zeros((10, 2))
    spike, step = flat.copy(), flat.copy()
    spike[5] = [3.0, 0.0]
    step[5:] = [3.0, 0.0]
    turn = np.array([[min(i, 5), max(i - 5, 0)] for i in range(10)], dtype=float)  # right, then up from 5
    assert persistence(steps, spike, 5) == pytest.approx(0.0)
    assert persistence(steps, step, 5) == pytest.approx(1.0) and persistence(steps, turn, 5) == pytest.approx(1.0)
    assert persistence(steps, turn * [1, 0], 5) == pytest.approx(1.0)  # motion that stops: it stays where it went
    # a spike as large as the motion across the event (five intervals): it counts as moving on (0.89 >= 0.5)
    moving = np.arange(10.0)[:, None] * [1.0, 0.0]
    moving[5] += [0.0, 5.0]
    assert persistence(steps, moving, 5) == pytest.approx(5 / np.hypot(2.5, 5.0))
    assert np.isnan(persistence(steps, spike, 1)) and np.isnan(persistence(steps, spike, 8))
    assert np.isnan(persistence(steps, flat, 5))


def test_scalar_signals_do_not_make_transients():
    """In one dimension a spike and a sharp peak look alike: a candidate supported by scalars only stays a boundary."""
    steps = list(range(31))
    rng = np.random.default_rng(0)
    x = np.cumsum(0.05 * rng.standard_normal(31))
    x[15] += 3.0
    found = detect_events({"loss": (steps, x)})
    assert [b.index for b in found.boundaries] == [15] and found.transients == []
    assert found.boundaries[0].persistence == {}
