"""Singular learning theory: local learning coefficient (LLC) estimation.

* :func:`estimate_llc` — SGLD estimate of the LLC at a model's current weights.
* :func:`llc_sweep` — the estimate over a grid of step sizes and localizations, to choose settings.
* :func:`llc_trajectory` — the estimate at every checkpoint of a training run.
"""

from devvis.slt.llc import SAMPLERS, LLCDiagnosticWarning, LLCResult, default_nbeta, estimate_llc
from devvis.slt.sweep import llc_sweep
from devvis.slt.trajectory import LLCTrajectory, llc_trajectory, plot_trajectory

__all__ = [
    "SAMPLERS",
    "LLCDiagnosticWarning",
    "LLCResult",
    "LLCTrajectory",
    "default_nbeta",
    "estimate_llc",
    "llc_sweep",
    "llc_trajectory",
    "plot_trajectory",
]
