"""Exception types raised by devvis.

Every message says what was wrong, the value given, and what would be valid.
All inherit from :class:`DevvisError`, so ``except devvis.errors.DevvisError``
catches anything devvis raises on purpose. Each also inherits the closest
built-in exception (``ValueError``, ``KeyError``-like ``LookupError``, ...) so
generic handlers keep working.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence


class DevvisError(Exception):
    """Base class of every error devvis raises on purpose."""


class LayerNotFoundError(DevvisError, LookupError):
    """A layer name does not name a module of the model."""

    def __init__(self, name: str, valid: Sequence[str]):
        self.name = name
        self.valid = list(valid)
        close = closest(name, self.valid)
        hint = f"closest: {', '.join(close)}" if close else f"valid names include: {', '.join(self.valid[:8])}"
        super().__init__(f"layer {name!r} not found in the model; {hint}")

    def __str__(self) -> str:  # LookupError would repr() the message otherwise
        return self.args[0]


class ChannelOutOfRangeError(DevvisError, IndexError):
    """A channel or neuron index lies outside the recorded activation."""


class LayoutError(DevvisError, ValueError):
    """An activation's layout (NCHW, tokens, channels-last) does not fit the objective."""


class ObjectiveError(DevvisError, ValueError):
    """An objective is malformed or cannot be built from the value given."""


class NonFiniteObjectiveError(ObjectiveError):
    """The objective's value became NaN or infinite during a render."""


class ParameterizationError(DevvisError, ValueError):
    """An image parameterization was asked for an invalid size, batch or setting."""


class TransformError(DevvisError, ValueError):
    """A robustness transform was given invalid arguments."""


class ModelNotFoundError(DevvisError, ValueError):
    """A model name is not a torchvision name, ``timm:NAME`` or ``package.module:callable``."""


class CheckpointError(DevvisError, ValueError):
    """A checkpoint file is missing, corrupt, truncated or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs arbitrary unpickling and the user did not opt in."""


class ConfigError(DevvisError, ValueError):
    """Invalid settings or flag combinations."""


class OutputError(DevvisError, OSError):
    """An output could not be written (unwritable folder, full disk)."""


def closest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Return up to ``n`` entries of ``choices`` that look most like ``name``.

    >>> closest("layer3_1", ["layer3.1", "layer3.0", "fc"])[0]
    'layer3.1'
    """
    choices = list(choices)
    norm = {c.replace("_", ".").lower(): c for c in choices}
    hits = difflib.get_close_matches(name.replace("_", ".").lower(), list(norm), n=n, cutoff=0.5)
    return [norm[h] for h in hits]


class ExecutorError(DevvisError, RuntimeError):
    """A sweep's executor (SLURM, torchrun, worker processes) cannot run or track its jobs."""


class StepNotFoundError(DevvisError, LookupError):
    """A training step is not in a checkpoint series (the message lists the valid steps)."""

    def __str__(self) -> str:  # LookupError would repr() the message otherwise
        return self.args[0]


class ArchitectureMismatchError(CheckpointError):
    """A checkpoint's tensors do not fit the model (other layer names or sizes): every step would fail alike."""


class BrokenCheckpointError(CheckpointError):
    """A checkpoint loads but its model is broken: non-finite weights or a non-finite output on a plain input."""


class CheckpointNotice(UserWarning):
    """A one-line notice about checkpoints (a file left out, the model picked among several); the CLI prints it
    as ``devvis: note: ...``."""
