"""``render()``: feature visualization by activation maximization, and its pieces.

- :mod:`devvis.render.loop`: :func:`render`, the optimization loop;
- :mod:`devvis.render.pipeline`: what the model sees (transforms -> resize -> preprocess),
  shared with ``objectives.evaluate``, circuits and activations.
"""

from devvis.render.loop import PRECISIONS, Convergence, component_stem, render
from devvis.render.result import RenderResult
from devvis.render.pipeline import ModelInput, resolve_preprocess

__all__ = ["render", "RenderResult", "Convergence", "PRECISIONS", "component_stem", "ModelInput",
           "resolve_preprocess"]
