"""An ordered series of training checkpoints that builds one model at a time.

:class:`CheckpointSeries` finds checkpoint files (via
:func:`devvis.models.find_checkpoints`), orders them by training step and
loads the weights of a step only when that step's model is asked for, so a
series of fifty ResNet-50 checkpoints costs the memory of one.

>>> import tempfile, torch
>>> from devvis.models import save_checkpoint
>>> d = tempfile.mkdtemp()
>>> for step in (0, 10, 100):
...     save_checkpoint(torch.nn.Linear(3, 2), f"{d}/step_{step}.safetensors", step=step)
>>> series = CheckpointSeries(d, lambda: torch.nn.Linear(3, 2))
>>> series.steps, len(series), type(series[10]).__name__
([0, 10, 100], 3, 'Linear')
>>> [step for step, model in series[1:]]
[10, 100]
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence, Union, overload

import torch
from torch import nn

from devvis.errors import CheckpointError, ConfigError, DevvisError, StepNotFoundError
from devvis.state import as_device
from devvis.typing import DeviceLike, ModelFn, PathLike, SeriesLike

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from devvis.models import CheckpointRef

PathsOrRefs = Union[PathLike, "CheckpointRef", Iterable[Union[PathLike, "CheckpointRef"]]]
"""A folder, a checkpoint file, or a list of files, folders and ``CheckpointRef`` s."""


def format_steps(steps: Sequence[int], n: int = 12) -> str:
    """Steps for a message: all of them, or the first and last ``n // 2`` around ``...``.

    >>> format_steps([0, 10, 100]), format_steps(list(range(10)), n=4)
    ('0, 10, 100', '0, 1, ..., 8, 9')
    """
    steps = list(steps)
    if len(steps) <= n:
        return ", ".join(map(str, steps))
    return ", ".join(map(str, steps[: n // 2])) + ", ..., " + ", ".join(map(str, steps[-n // 2:]))


def _refs_from(paths_or_refs: PathsOrRefs, **discovery: Any) -> tuple[list[Any], list[tuple[Path, str]]]:
    """CheckpointRefs for files, folders, or refs already found (kept as they are); and the files left out."""
    from devvis.models import CheckpointRef, discover_checkpoints

    if isinstance(paths_or_refs, CheckpointRef):
        return [paths_or_refs], []
    if isinstance(paths_or_refs, (str, os.PathLike)):
        found = discover_checkpoints(paths_or_refs, **discovery).emit()
        return found.refs, found.left_out
    items = list(paths_or_refs)
    if not items:
        raise CheckpointError("no checkpoint paths given (expected files, folders or CheckpointRefs)")
    refs: list[Any] = []
    paths: list[Any] = []
    for item in items:
        (refs if isinstance(item, CheckpointRef) else paths).append(item)
    left_out: list[tuple[Path, str]] = []
    if paths:
        found = discover_checkpoints(paths, **discovery).emit()
        refs.extend(found.refs)
        left_out = found.left_out
    return refs, left_out


def _check_broken(model: nn.Module, step: int, path: Path | None) -> None:
    """Raise :class:`~devvis.errors.BrokenCheckpointError` when a loaded model is broken: non-finite
    weights, or a non-finite output on a plain grey image (a training run that diverged)."""
    from devvis.architectures import fixed_input_size
    from devvis.errors import BrokenCheckpointError
    from devvis.render.pipeline import model_input_channels

    where = f"the checkpoint of step {step}" + (f" ({str(path)!r})" if path is not None else "")
    how = f"; leave it out with --exclude {path.name}" if path is not None else ""
    bad = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise BrokenCheckpointError(f"{where} is broken: {len(bad)} of its tensors hold NaN or inf "
                                    f"({', '.join(bad[:3])}); training had diverged when it was saved{how}")
    size = fixed_input_size(model) or 64
    h, w = (size, size) if isinstance(size, int) else size
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            out = model(torch.full((1, model_input_channels(model), h, w), 0.5, device=device))
    except Exception:  # not an image model, or another input size: not this check's business
        return
    tensors = [out] if isinstance(out, torch.Tensor) else [v for v in (out.values() if isinstance(out, dict) else
                                                                        out if isinstance(out, (tuple, list)) else [])
                                                           if isinstance(v, torch.Tensor)]
    if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors):
        raise BrokenCheckpointError(f"{where} is broken: its output on a plain grey image is not finite (NaN or "
                                    f"inf); the weights had diverged when it was saved{how}")


class CheckpointSeries:
    """Checkpoints of one training run, ordered by step; a model is built for a step on demand.

    Parameters
    ----------
    paths_or_refs:
        A folder, a file, a list of them, or :class:`~devvis.models.CheckpointRef` s
        (from :func:`~devvis.models.find_checkpoints`). Every checkpoint needs a
        distinct training step (from its name or its stored metadata).
    model_fn:
        How to build the architecture: a callable returning a fresh ``nn.Module``
        (weights then loaded with :func:`~devvis.models.load_checkpoint` and
        :func:`~devvis.models.apply_state_dict`, strictly); a model name for
        :func:`~devvis.models.load_model`; or ``None`` to rebuild it from the
        checkpoint's own model config (``model_config.json`` beside it). An
        ``nn.Module`` given here is taken as ``model=`` (see below).
    model:
        Alternatively one architecture instance that is *reused*: each step's
        weights are loaded into this same module, so the model of an earlier step
        is overwritten when another step is loaded (unless ``keep_in_memory``,
        which loads into copies).
    trust:
        Allow checkpoints that need arbitrary unpickling (only for files you trust).
    steps, exclude:
        Steps set by hand (``{"final.pt": 9000}``) and globs of files to leave out, passed to
        :func:`~devvis.models.discover_checkpoints` (which gives every checkpoint its step;
        files without one are left out with a :class:`~devvis.errors.CheckpointNotice`).
    weights:
        Which model of checkpoints holding several: ``"model"``, ``"ema"`` (timm's
        ``state_dict_ema``) or an entry's name (``"teacher"``).
    check_finite:
        Refuse a checkpoint whose weights, or whose output on a plain grey image, are not
        finite (:class:`~devvis.errors.BrokenCheckpointError`, naming its step).
    device:
        Where models are put (default CPU). Models are returned in eval mode.
    keep_in_memory:
        Keep every model built so far instead of only the most recent one.

    Indexing: ``series[step]`` is the model of that training step,
    ``series.at(i)`` the ``i``-th in step order, ``series[a:b]`` a sub-series by
    position; iterating yields ``(step, model)`` in step order.
    """

    def __init__(self, paths_or_refs: PathsOrRefs, model_fn: ModelFn = None, *, model: nn.Module | None = None,
                 trust: bool = False, device: DeviceLike = None, keep_in_memory: bool = False,
                 steps: Mapping[str, int] | Sequence[str] | None = None, exclude: Sequence[str] = (),
                 weights: str = "model", check_finite: bool = True):
        if isinstance(model_fn, nn.Module) and model is None:  # an architecture instance: reused, as model=
            model_fn, model = None, model_fn
        if model is not None and model_fn is not None:
            raise ConfigError("pass either model_fn (builds a fresh model per step) or model (reused), not both")
        if model is not None and not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if model_fn is not None and not (isinstance(model_fn, str) or callable(model_fn)):
            raise ConfigError(f"model_fn must be a callable returning an nn.Module, a model name or None; got {model_fn!r}")
        refs, left_out = _refs_from(paths_or_refs, steps=steps, exclude=tuple(exclude), weights=weights,
                                         trust=trust)
        missing = [str(r.path) for r in refs if r.step is None]
        if missing:
            raise CheckpointError(
                f"checkpoints without a training step: {', '.join(missing[:3])}; give them one with "
                "steps={FILE: N} (CLI: --step FILE=N), or rename them (e.g. step_1000.pt)")
        refs = sorted(refs, key=lambda r: r.step)
        seen: dict[int, Any] = {}
        for r in refs:
            if r.step in seen:
                raise CheckpointError(
                    f"two checkpoints claim step {r.step}: {str(seen[r.step].path)!r} and {str(r.path)!r}; "
                    "pass only one checkpoint per step")
            seen[r.step] = r
        self._init(refs, {}, model_fn, model, trust, device, keep_in_memory)
        self.weights, self.check_finite, self.left_out = weights, check_finite, left_out

    def _init(self, refs: list[Any], models: dict[int, nn.Module], model_fn: ModelFn, model: nn.Module | None,
              trust: bool, device: Any, keep_in_memory: bool) -> None:
        self._refs = list(refs)
        self._steps = [int(r.step) for r in refs] if refs else sorted(models)
        self._models = dict(models)  # in-memory series: every model, permanently
        self._in_memory = bool(models)
        self.model_fn = model_fn
        self.template = model
        self.trust = trust
        self.device = as_device(device)
        self.keep_in_memory = keep_in_memory or self._in_memory
        self._cache: dict[int, nn.Module] = dict(models)
        self.weights, self.check_finite = "model", False
        self.left_out: list[tuple[Path, str]] = []

    @classmethod
    def from_models(cls, models: Mapping[int, nn.Module], *, device: DeviceLike = None) -> "CheckpointSeries":
        """A series over models already in memory: ``{step: model}``.

        >>> import torch
        >>> s = CheckpointSeries.from_models({100: torch.nn.Linear(2, 2), 5: torch.nn.Linear(2, 2)})
        >>> s.steps, s.paths
        ([5, 100], [None, None])
        """
        if not models:
            raise ConfigError("from_models() needs at least one {step: model} entry")
        bad = {k: type(v).__name__ for k, v in models.items() if not isinstance(v, nn.Module) or isinstance(k, bool)
               or not isinstance(k, int)}
        if bad:
            raise ConfigError(f"from_models() needs {{int step: nn.Module}}; got entries {bad}")
        self = cls.__new__(cls)
        ordered = {int(k): models[k] for k in sorted(models)}
        self._init([], ordered, None, None, False, device, True)
        return self

    # -- description ------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        """Training steps in increasing order."""
        return list(self._steps)

    @property
    def refs(self) -> list["CheckpointRef"]:
        """The :class:`~devvis.models.CheckpointRef` of each step (empty for an in-memory series)."""
        return list(self._refs)

    @property
    def paths(self) -> list[Path | None]:
        """Checkpoint file of each step (``None`` for models given in memory)."""
        return [r.path for r in self._refs] if self._refs else [None] * len(self._steps)

    @property
    def final_step(self) -> int:
        """The last (largest) training step."""
        return self._steps[-1]

    def path_of(self, step: int) -> Path | None:
        """Checkpoint file of ``step`` (``None`` for an in-memory series)."""
        return self.paths[self.index(step)]

    def index(self, step: int) -> int:
        """Position of ``step`` in the series; :class:`StepNotFoundError` listing the valid steps otherwise."""
        try:
            return self._steps.index(int(step))
        except (ValueError, TypeError):
            raise StepNotFoundError(
                f"step {step!r} is not in the checkpoint series; valid steps: {format_steps(self._steps)}") from None

    def model_config(self) -> dict[str, Any] | None:
        """How the checkpoints' model is rebuilt (``{"name", "kwargs"}``), from the first checkpoint; None if unknown."""
        if not self._refs:
            return None
        from devvis.models import read_model_config

        try:
            return read_model_config(self._refs[0].path, trust=self.trust)
        except DevvisError:
            return None

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: steps, files and how models are built (for result metadata)."""
        if isinstance(self.model_fn, str):
            how = f"load_model({self.model_fn!r})"
        elif self.model_fn is not None:
            how = getattr(self.model_fn, "__name__", repr(self.model_fn))
        elif self.template is not None:
            how = type(self.template).__name__
        elif self._in_memory:
            how = "in memory: " + type(next(iter(self._models.values()))).__name__
        else:
            cfg = self.model_config()
            how = f"model config {cfg['name']!r}" if cfg else "model config"
        return {"steps": self.steps, "paths": [str(p) if p is not None else None for p in self.paths], "model": how,
                "checkpoints": [{"step": r.step, "path": str(r.path), "source": r.source,
                                 "copies": [str(c) for c in r.copies]} for r in self._refs],
                "left_out": [{"path": str(p), "reason": why} for p, why in self.left_out],
                "weights": self.weights}

    def order(self) -> str:
        """The mapping step <- file that every command prints (:func:`~devvis.models.format_checkpoint_order`)."""
        from devvis.models import format_checkpoint_order

        if not self._refs:
            return "checkpoint order (step <- file):\n" + "\n".join(f"  step {s} <- (in memory)" for s in self._steps)
        return format_checkpoint_order(self._refs)

    # -- loading ----------------------------------------------------------------------
    def _build(self, i: int) -> nn.Module:
        from devvis.models import apply_state_dict, load_checkpoint, load_model

        ref = self._refs[i]
        if isinstance(self.model_fn, str) or (self.model_fn is None and self.template is None):
            model = load_model(self.model_fn, checkpoint=ref.path, trust=self.trust, weights=self.weights)
        else:
            if self.template is not None:
                model = copy.deepcopy(self.template) if self.keep_in_memory else self.template
            else:
                model = self.model_fn()  # type: ignore[misc]
                if not isinstance(model, nn.Module):
                    raise ConfigError(f"model_fn returned {type(model).__name__}, not a torch.nn.Module")
            apply_state_dict(model, load_checkpoint(ref.path, trust=self.trust, weights=self.weights), path=ref.path)
        if self.device is not None:
            model.to(self.device)
        model.eval()
        if self.check_finite:
            _check_broken(model, ref.step, ref.path)
        return model

    def at(self, i: int) -> nn.Module:
        """The model of the ``i``-th checkpoint in step order (negative ``i`` counts from the end)."""
        n = len(self._steps)
        if not isinstance(i, int) or not -n <= i < n:
            raise StepNotFoundError(f"position {i!r} is out of range for a series of {n} checkpoints (valid 0..{n - 1})")
        i %= n
        step = self._steps[i]
        if step in self._cache:
            return self._cache[step]
        model = self._build(i)
        if not self.keep_in_memory:
            self._cache.clear()  # one model in memory at a time
        self._cache[step] = model
        return model

    @overload
    def __getitem__(self, key: int) -> nn.Module: ...

    @overload
    def __getitem__(self, key: slice) -> "CheckpointSeries": ...

    def __getitem__(self, key: int | slice) -> nn.Module | "CheckpointSeries":
        if isinstance(key, slice):
            idx = range(len(self._steps))[key]
            sub = CheckpointSeries.__new__(CheckpointSeries)
            steps = [self._steps[i] for i in idx]
            if not steps:
                raise StepNotFoundError(f"slice {key} of a series of {len(self)} checkpoints is empty")
            refs = [self._refs[i] for i in idx] if self._refs else []
            models = {s: self._models[s] for s in steps} if self._in_memory else {}
            sub._init(refs, models, self.model_fn, self.template, self.trust, self.device, self.keep_in_memory)
            sub.weights, sub.check_finite, sub.left_out = self.weights, self.check_finite, self.left_out
            return sub
        if isinstance(key, bool) or not hasattr(key, "__index__"):
            raise StepNotFoundError(f"index a series by training step (int) or by a slice of positions; got {key!r}")
        return self.at(self.index(key.__index__()))

    def __iter__(self) -> Iterator[tuple[int, nn.Module]]:
        for i, step in enumerate(self._steps):
            yield step, self.at(i)

    def __len__(self) -> int:
        return len(self._steps)

    def __contains__(self, step: object) -> bool:
        return step in self._steps

    def __repr__(self) -> str:
        return f"CheckpointSeries({len(self)} checkpoints, steps [{format_steps(self._steps, 6)}])"


def as_series(series: SeriesLike, model: ModelFn = None, *, trust: bool = False,
              device: DeviceLike = None) -> CheckpointSeries:
    """Coerce ``series`` to a :class:`CheckpointSeries`.

    Accepts a series (returned as is), a ``{step: model}`` dict, or paths/refs
    (with ``model``: an ``nn.Module`` architecture, a model name, a factory or None).

    >>> import torch
    >>> as_series({3: torch.nn.Linear(1, 1), 1: torch.nn.Linear(1, 1)}).steps
    [1, 3]
    """
    if isinstance(series, CheckpointSeries):
        return series
    if isinstance(series, Mapping):
        return CheckpointSeries.from_models(series, device=device)
    if isinstance(model, nn.Module):
        return CheckpointSeries(series, model=model, trust=trust, device=device)
    return CheckpointSeries(series, model, trust=trust, device=device)
