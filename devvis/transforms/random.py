"""Seeded random draws shared by the transforms (devvis's and the Lucent layer's).

Every draw takes the render's ``torch.Generator``, so a seed reproduces a run.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> 0 <= uniform_int(0, 3, g) <= 3, choice([0.5, 1.5], g) in (0.5, 1.5)
(True, True)
"""

from __future__ import annotations

from typing import Sequence

import torch


def uniform_int(lo: int, hi: int, generator: torch.Generator | None) -> int:
    """An integer uniformly in ``[lo, hi]`` (both inclusive) from ``generator``."""
    return int(torch.randint(lo, hi + 1, (1,), generator=generator).item())


def choice(values: Sequence[float], generator: torch.Generator | None) -> float:
    """One of ``values``, uniformly, from ``generator``."""
    return float(values[int(torch.randint(0, len(values), (1,), generator=generator).item())])
