"""Singular learning theory: local learning coefficient (LLC) estimation.

* :func:`estimate_llc` — SGLD estimate of the LLC at a model's current weights (:mod:`devvis.slt.llc`,
  the estimator loop; :mod:`~devvis.slt.samplers`, the SGLD updates; :mod:`~devvis.slt.diagnostics`, the
  chain health checks; :mod:`~devvis.slt.result`, :class:`LLCResult`; :mod:`~devvis.slt.batches`, the data).
* :func:`calibrate` — chooses ε, γ and nβ automatically from a sweep (stable, healthy region).
* :func:`llc_sweep` — the estimate over a grid of step sizes and localizations, to look at.
* :func:`llc_trajectory` — the estimate at every checkpoint of a training run.
"""

from devvis.slt.calibrate import Calibration, calibrate
from devvis.slt.diagnostics import LLCDiagnosticWarning
from devvis.slt.llc import default_nbeta, estimate_llc
from devvis.slt.result import LLCResult
from devvis.slt.samplers import SAMPLERS
from devvis.slt.sweep import llc_sweep
from devvis.slt.trajectory import LLCTrajectory, llc_trajectory, plot_trajectory

__all__ = [
    "SAMPLERS",
    "Calibration",
    "calibrate",
    "LLCDiagnosticWarning",
    "LLCResult",
    "LLCTrajectory",
    "default_nbeta",
    "estimate_llc",
    "llc_sweep",
    "llc_trajectory",
    "plot_trajectory",
]
