"""Lucent's ``lucent.misc``: the ``io`` helpers that show arrays (``misc.io.show``)."""

from devvis.compat.lucent.misc import io

__all__ = ["io"]
