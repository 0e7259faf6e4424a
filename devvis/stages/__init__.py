"""Developmental stages: when training changes what the network computes, and what forms in each stage.

* :func:`stages` — boundaries from several signals at once (essential dynamics, loss, feature change,
  LLC), the stages between them, the units that formed in each, circuits that change, and the block
  whose restricted LLC moves (:class:`StagesResult`, written as JSON + PNG);
* :func:`unit_contrasts` — controlled probe contrasts (the same images with and without colour, with
  and without a sharp outline): what drives a unit, one property at a time;
* :func:`essential_dynamics` — PCA of the model's outputs on fixed probe images over training, its
  turning points and :func:`plot_essential_dynamics`;
* :func:`detect_boundaries` — the multi-signal boundary rule on any ``{name: (steps, values)}`` curves;
* :func:`turns`, :func:`turning_points` — the one definition of a trajectory's turn;
* :func:`block_llc` — the restricted LLC of each block over training (:func:`devvis.slt.estimate_llc`
  with ``params=[block]``).

The definitions of every signal, of how boundaries are combined, and the ``stages.json`` schema are in
``docs/stages.md`` (and the module docstrings of :mod:`~devvis.stages.turns` and :mod:`~devvis.stages.detect`;
the short form is in every ``stages.json``).
"""

from devvis.stages.api import DEFAULT_SIGNALS, SIGNALS, default_layers, stages
from devvis.stages.blocks import block_llc, default_blocks
from devvis.stages.contrasts import unit_contrasts
from devvis.stages.detect import Boundary, Events, detect_boundaries, detect_events
from devvis.stages.dynamics import EssentialDynamics, essential_dynamics, plot_essential_dynamics, probe_outputs
from devvis.stages.features import UnitResponses, UnitSettle, unit_responses, unit_settles
from devvis.stages.plots import plot_timeline
from devvis.stages.result import Stage, StagesResult, mean_group_response
from devvis.stages.turns import TurningPoint, persistence, turning_points, turns

__all__ = [
    "Boundary", "DEFAULT_SIGNALS", "EssentialDynamics", "Events", "SIGNALS", "Stage", "StagesResult", "TurningPoint",
    "UnitResponses", "UnitSettle", "block_llc", "default_blocks", "default_layers", "detect_boundaries", "detect_events",
    "essential_dynamics", "mean_group_response", "persistence", "plot_essential_dynamics", "plot_timeline", "probe_outputs",
    "stages", "turning_points", "turns", "unit_contrasts", "unit_responses", "unit_settles",
]
