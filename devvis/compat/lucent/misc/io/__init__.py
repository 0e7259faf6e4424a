"""Lucent's ``lucent.misc.io``: :func:`show` (and the ``showing`` module it comes from).

>>> from devvis.compat.lucent.misc.io import show, showing
>>> show.__module__ == showing.__name__
True
"""

from devvis.compat.lucent.misc.io import showing
from devvis.compat.lucent.misc.io.showing import show

__all__ = ["show", "showing"]
