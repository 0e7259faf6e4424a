"""``render()``: feature visualization by activation maximization, and the parts it is built from.

- :mod:`devvis.render.loop`: :func:`render`, a short loop over the parts below;
- :mod:`devvis.render.pipeline`: what the model sees (transforms -> resize -> preprocess), shared
  with ``objectives.evaluate``, circuits and activations; the one preprocessing rule;
- :mod:`devvis.render.forward`: one recorded forward pass (precision, channels-last);
- :mod:`devvis.render.discover`: the layers an objective reads;
- :mod:`devvis.render.optimization`: :class:`RenderRun`, the state of a render between steps;
- :mod:`devvis.render.stopping`: :class:`Convergence` and the stop rule;
- :mod:`devvis.render.redirect`: Lucid's redirected-ReLU gradient, and the same for GELU;
- :mod:`devvis.render.result`: :class:`RenderResult` (stored through :mod:`devvis.results`, which also
  owns the image file names, ``component_stem``).
"""

from devvis.render.discover import discover_layers, objective_layers
from devvis.render.forward import PRECISIONS, RecordedForward
from devvis.render.loop import Callback, OptimizerFactory, SchedulerFactory, render
from devvis.render.optimization import RenderRun
from devvis.render.pipeline import ModelInput, auto_preprocess, resolve_preprocess
from devvis.render.result import RenderResult
from devvis.render.stopping import Convergence, StopRule
from devvis.results import component_stem

__all__ = ["render", "RenderResult", "Convergence", "StopRule", "PRECISIONS", "component_stem", "ModelInput",
           "resolve_preprocess", "auto_preprocess", "discover_layers", "objective_layers", "RecordedForward",
           "RenderRun", "Callback", "OptimizerFactory", "SchedulerFactory"]
