"""When a render stops, and what its status says.

- :class:`Convergence`: the ready-made ``stop_when=`` criterion (relative improvement below a
  tolerance over a window);
- :class:`StopRule`: the loop's one stop decision: ``"converged"`` when ``stop_when`` says so,
  ``"completed"`` after ``steps`` steps, else keep going;
- :func:`check_finite_values`, :func:`check_finite_images`: a NaN or infinite objective or image
  stops the render with :class:`~devvis.errors.NonFiniteObjectiveError` naming it and the step.

>>> rule = StopRule(steps=3, stop_when=Convergence(tol=0.01, window=1))
>>> rule([1.0]), rule([1.0, 2.0]), rule([1.0, 2.0, 2.0])
(None, None, 'converged')
>>> StopRule(steps=2)([1.0, 2.0])
'completed'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from devvis.errors import ConfigError, NonFiniteObjectiveError

StopWhen = Callable[[Sequence[float]], bool]
"""``stop_when(means) -> bool``: called with the batch-mean objective of every step so far."""


@dataclass
class Convergence:
    """Stop when the objective stops improving.

    After at least ``min_steps`` steps, stop once the mean objective (over the
    batch) improved by less than ``tol`` relative to its magnitude over the last
    ``window`` steps: ``(mean(last window) - mean(window before)) / |mean(window before)| < tol``.

    >>> c = Convergence(tol=0.01, window=2)
    >>> c([1.0, 2.0, 2.0, 2.0, 2.0])
    True
    >>> c([1.0, 2.0, 3.0, 4.0])
    False
    """

    tol: float = 1e-3
    window: int = 32
    min_steps: int = 0

    def __call__(self, means: Sequence[float]) -> bool:
        n = len(means)
        if n < max(self.min_steps, 2 * self.window):
            return False
        prev = sum(means[n - 2 * self.window:n - self.window]) / self.window
        last = sum(means[n - self.window:]) / self.window
        return (last - prev) / max(abs(prev), 1e-8) < self.tol


@dataclass
class StopRule:
    """The loop's stop decision: ``rule(means) -> "converged" | "completed" | None`` (go on).

    ``stop_when`` is asked first, so a criterion met at the last step reports ``"converged"``.
    """

    steps: int
    stop_when: StopWhen | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {self.steps!r}")
        if self.stop_when is not None and not callable(self.stop_when):
            raise ConfigError(f"stop_when must be a callable means -> bool (e.g. Convergence()), got {self.stop_when!r}")

    def __call__(self, means: Sequence[float]) -> str | None:
        if self.stop_when is not None and self.stop_when(means):
            return "converged"
        if len(means) >= self.steps:
            return "completed"
        return None


def check_finite_values(values: torch.Tensor, description: str, step: int) -> None:
    """Raise :class:`~devvis.errors.NonFiniteObjectiveError` if an objective value ``[B]`` is NaN or infinite."""
    if not torch.isfinite(values).all():
        raise NonFiniteObjectiveError(
            f"objective {description!r} became {values.tolist()} at step {step}; "
            "lower the learning rate or check the objective for divisions by zero")


def check_finite_images(images: torch.Tensor, description: str, step: int) -> None:
    """Raise :class:`~devvis.errors.NonFiniteObjectiveError` if the final images hold NaN or infinity.

    A NaN gradient at the last step leaves finite values but a NaN image, which would
    otherwise be saved (as black) under a "completed" status.
    """
    if not torch.isfinite(images).all():
        raise NonFiniteObjectiveError(
            f"objective {description!r}: the image became NaN or infinite after step {step} "
            "(its gradient was not finite); lower the learning rate or check the objective for divisions "
            "by zero or square roots of zero")
