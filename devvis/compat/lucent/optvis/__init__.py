"""Lucent's ``lucent.optvis`` package: ``render``, ``param``, ``transform`` and ``objectives``.

``from lucent.optvis import render, param, transform, objectives`` becomes
``from devvis.compat.lucent.optvis import render, param, transform, objectives`` (or, shorter,
``from devvis.compat.lucent import ...``): the same four modules.

>>> from devvis.compat.lucent.optvis import objectives, param, render, transform
>>> render.render_vis.__module__
'devvis.compat.lucent.optvis.render'
"""

from devvis.compat.lucent.optvis import objectives, param, transform
from devvis.compat.lucent.optvis import render

__all__ = ["render", "param", "transform", "objectives"]
