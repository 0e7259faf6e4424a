"""The result of :func:`devvis.stages.stages`: boundaries, the stages between them, and what formed in each."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devvis import io as dio
from devvis.stages.detect import Boundary, combined_score
from devvis.stages.dynamics import EssentialDynamics
from devvis.stages.features import UnitSettle

#: The definitions written into ``stages.json``.
DEFINITIONS = {
    "turn": "per signal and checkpoint i: ||v_i - v_{i-1}|| / median_j ||v_j||, v_i = (x_{i+1} - x_i) / "
            "(s_{i+1} - s_i): the velocity change relative to the run's typical speed",
    "z": "robust z-score of a signal's turn over the run: (turn - median) / (1.4826 MAD)",
    "combined": "mean over signals (weighted) of max(z_{i-1}, z_i, z_{i+1})",
    "boundary": "a checkpoint where combined >= threshold, largest within +-min_separation checkpoints and within "
                "its event (the run of consecutive checkpoints with combined >= threshold), with at least "
                "min_support signals whose windowed z >= support_z (the supporting signals); placed within +-1 "
                "where the supporting signals' summed z is largest; unless it is a transient",
    "persistence": "per vector signal at checkpoint i: ||a - b|| / max(||a - b||, e), b the mean of x_{i-3}, x_{i-2}, "
                   "a the mean of x_{i+2}, x_{i+3}, e = max_{j=i-1..i+1} ||x_j - b||: 1 when the trajectory ends the "
                   "event at least as far away as it went, near 0 when it comes back",
    "transient": "a candidate boundary whose supporting vector signals (2+ dimensions) all have persistence < "
                 "min_persistence: a spike that comes back within a checkpoint or two, not a stage boundary",
    "uncertainty_checkpoints": "max(1, largest distance from the boundary to a supporting signal's own peak "
                               "within +-1 checkpoint); the true boundary lies within index +- uncertainty",
    "stage": "the steps from one boundary (or step 0) up to the next boundary (or the final step)",
    "units": "assign 'change' (default): units whose largest change share falls in the stage (where they formed); "
             "assign 'settle': units whose settle step lies in [start, end) of the stage (the final stage includes "
             "its end; the last stage that retuned them)",
    "change_share": "per unit and stage: the part of the unit's response change (||q_{i+1} - q_i||, q its centred, "
                    "unit-norm probe-response profile averaged over each class's images when the probe has labels "
                    "(settings.change_of 'classes'), else the profile itself ('images'), summed over the intervals "
                    "ending in the stage) over the run's total",
    "group_response": "per unit: mean over a group's probe images of the unit's final response profile "
                      "standardized over all probe images (mean 0, sd 1); per stage: the mean over its units",
    "contrast": "per unit, at the final checkpoint: mean response on a group's probe images minus on the same images "
                "without one property, in sd of its probe responses: colour (colour images vs desaturated), outline "
                "(shape images vs blurred, sigma 1.5 px per 16 px); per stage: the mean over its units",
    "circuits": "circuits whose influence vector (source channels' influence on the target channel) has a "
                "turning point in the stage",
    "block_llc_change": "per block, |LLC[i+1] - LLC[i-1]| / sqrt(std[i+1]^2 + std[i-1]^2) around the boundary",
    "signals": {"essential_dynamics": "top principal components of the logits on the probe images",
                "loss": "cross-entropy on the probe images (or the loss given)",
                "features": "top principal components of all units' standardized response profiles",
                "llc": "LLC over training (when given)"},
}


def mean_group_response(units: list[UnitSettle], of: str = "group_response") -> dict[str, float | None]:
    """Per group, the mean of the units' group responses (None where no unit has one); ``of="contrast"``:
    per contrast, the mean of their contrasts (:mod:`devvis.stages.contrasts`)."""
    out: dict[str, float | None] = {}
    for g in (getattr(units[0], of) if units else {}):
        v = [getattr(u, of)[g] for u in units if np.isfinite(getattr(u, of).get(g, np.nan))]
        out[g] = round(float(np.mean(v)), 4) if v else None
    return out


def settle_stage(stages: list["Stage"], step: int | None) -> int | None:
    """Index of the stage a settle ``step`` falls in (``[start, end)``; the last stage includes its end), or None."""
    if step is None:
        return None
    return next((st.index for st in stages if st.start <= step < st.end or (st is stages[-1] and step == st.end)), None)


def formed_stage(change_share: list[float]) -> int | None:
    """Index of the stage holding the largest share of a unit's response change (None when it never changes)."""
    return int(np.argmax(change_share)) if change_share and np.isfinite(change_share).all() else None


@dataclass
class Stage:
    """Stage ``index`` from ``start`` to ``end`` (steps), opened by ``boundary`` (None for the first)."""

    index: int
    start: int
    end: int
    boundary: Boundary | None
    units: list[UnitSettle] = field(default_factory=list)
    circuits: list[dict[str, Any]] = field(default_factory=list)
    block_llc_change: dict[str, float] = field(default_factory=dict)

    def group_response(self) -> dict[str, float | None]:
        """Per group, the mean group response of the stage's units (None where no unit has one)."""
        return mean_group_response(self.units)

    def contrast(self) -> dict[str, float | None]:
        """Per contrast (:mod:`devvis.stages.contrasts`), the mean over the stage's units."""
        return mean_group_response(self.units, of="contrast")

    def to_dict(self, class_names: list[str] | None = None) -> dict[str, Any]:
        units = []
        for u in self.units:
            d = u.to_dict()
            if class_names and u.top_labels:
                d["top_classes"] = [class_names[i] for i in u.top_labels]
            units.append(d)
        return {"index": self.index, "start": self.start, "end": self.end,
                "boundary": self.boundary.to_dict() if self.boundary else None, "units": units,
                "group_response": self.group_response(), "contrast": self.contrast(),
                "circuits": self.circuits,
                "block_llc_change": {k: round(v, 3) if np.isfinite(v) else None for k, v in self.block_llc_change.items()},
                "attributed_block": max(self.block_llc_change, key=lambda k: np.nan_to_num(self.block_llc_change[k], nan=-1))
                if any(np.isfinite(v) for v in self.block_llc_change.values()) else None}  # all NaN: no block


@dataclass
class StagesResult:
    """``boundaries`` (step order), ``transients`` (candidates that came back: spikes, not boundaries; step
    order), ``stages`` (one more than boundaries), the ``signals`` used
    ``{name: (steps, values)}``, their per-checkpoint ``z`` and ``combined`` scores, the
    ``essential_dynamics``, all ``units`` with their settle steps, the ``settings``, and ``planted``: the
    curriculum's phase starts ``[{"phase", "step"}]`` when the series was trained with one (else None)."""

    steps: list[int]
    boundaries: list[Boundary]
    stages: list[Stage]
    signals: dict[str, tuple[list[int], np.ndarray]] = field(repr=False)
    z: dict[str, np.ndarray] = field(repr=False)
    essential_dynamics: EssentialDynamics | None = field(default=None, repr=False)
    units: list[UnitSettle] = field(default_factory=list, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    planted: list[dict[str, Any]] | None = None
    files: list[Path] = field(default_factory=list)
    transients: list[Boundary] = field(default_factory=list)

    @property
    def boundary_steps(self) -> list[int]:
        return [b.step for b in self.boundaries]

    def formed_in(self, index: int) -> list[UnitSettle]:
        """The units whose largest change share falls in stage ``index`` (the ``assign="change"`` rule)."""
        return [u for u in self.units if formed_stage(u.change_share) == index]

    def settled_in(self, index: int) -> list[UnitSettle]:
        """The units whose settle step falls in stage ``index`` (the ``assign="settle"`` rule)."""
        return [u for u in self.units if settle_stage(self.stages, u.settle_step) == index]

    def to_dict(self) -> dict[str, Any]:
        return dio.metadata(
            "stages", steps=self.steps, boundaries=[b.to_dict() for b in self.boundaries],
            transients=[b.to_dict() for b in self.transients],
            stages=[s.to_dict(self.class_names) for s in self.stages],
            signals={k: {"values": np.round(np.asarray(v, dtype=float), 6).tolist(),
                         "z": [None] + np.round(self.z[k], 3).tolist() + [None]} for k, (_, v) in self.signals.items()},
            combined=[None] + np.round(combined_score(self.z, self.settings.get("weights")), 3).tolist() + [None],
            essential_dynamics=self.essential_dynamics.to_dict() if self.essential_dynamics else None,
            units_not_settled=[u.label for u in self.units if u.settle_step is None],
            planted=self.planted, class_names=self.class_names,
            settings=self.settings, definitions=DEFINITIONS)

    def save(self, output_dir: Any) -> list[Path]:
        """Write ``stages.json``, ``stages_timeline.png`` and ``essential_dynamics.png`` into ``output_dir``."""
        from devvis.stages.dynamics import plot_essential_dynamics
        from devvis.stages.plots import plot_timeline

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = [out / "stages.json", out / "stages_timeline.png"]
        dio.write_json(files[0], self.to_dict())
        plot_timeline(self, files[1])
        if self.essential_dynamics is not None:
            files.append(Path(plot_essential_dynamics(self.essential_dynamics, out / "essential_dynamics.png",
                                                      boundaries=self.boundary_steps)))
        self.files = files
        return files
