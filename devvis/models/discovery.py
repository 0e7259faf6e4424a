"""Which checkpoints a training folder holds, and their training steps: one place, used by all.

:func:`find_checkpoints` lists the checkpoint files of folders and files and orders
them by training step: the step in the file name (:func:`parse_step`), else the step
stored in the file, else natural sort order (:func:`natural_key`).

>>> import tempfile, os, torch
>>> d = tempfile.mkdtemp()
>>> for n in ["step_10.pt", "step_2.pt"]:
...     torch.save({"w": torch.zeros(1)}, os.path.join(d, n))
>>> [ref.step for ref in find_checkpoints(d)]
[2, 10]
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Iterable

from devvis.errors import CheckpointError, DevvisError
from devvis.models.checkpoints import CHECKPOINT_SUFFIXES, is_checkpoint_name, read_checkpoint_step
from devvis.typing import PathLike

__all__ = ["CheckpointRef", "find_checkpoints", "natural_key", "parse_step"]


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint of a series.

    Attributes:
        path: the file.
        step: training step; None when neither name nor metadata has one (while others do).
        source: where ``step`` came from: ``"name"`` (file or folder name), ``"metadata"``
            (stored in the file), or ``"order"`` (position in natural sort order, used for
            every file when no file has a step; files without a step that sort after
            stepped ones also say ``"order"``, with ``step=None``).
    """

    path: Path
    step: int | None
    source: str


_SUFFIX_RE = re.compile(r"(?:\.(?:pt|pth|ckpt|bin|safetensors|tar))+$", re.IGNORECASE)
# Most specific first: an explicit step beats an iteration, which beats an epoch, which
# beats a bare checkpoint counter. Letters may not precede the keyword ("resnet18").
_STEP_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"(?<![a-z])(?:global_?)?steps?[=_\-]?(\d+)",
        r"(?<![a-z])(?:iterations?|iters?|it)[=_\-]?(\d+)",
        r"(?<![a-z])(?:epochs?|ep)[=_\-]?(\d+)",
        r"(?<![a-z])(?:checkpoint|ckpt|chkpt|snapshot|model|weights)[=_\-]?(\d+)",
        # A bare number standing alone between separators: "ckpt-42", "0010", not "resnet18".
        r"(?<![a-z0-9])(\d+)(?![a-z0-9])",
    )
)


def _parse_stem(stem: str) -> int | None:
    for pattern in _STEP_PATTERNS:
        hits = pattern.findall(stem)
        if hits:
            return int(hits[-1])
    return None


def parse_step(name: PathLike) -> int | None:
    """The training step a checkpoint's name encodes, or None.

    The file name is read first (``step`` > ``iter`` > ``epoch`` > a bare counter);
    when it has no number, its parent folder's name is read the same way.

    >>> [parse_step(n) for n in ["step_1000.pt", "epoch=3-step=1200.ckpt", "checkpoint_0010.pth",
    ...                          "train_500/model.pt", "model_epoch5.pt", "ckpt-42.pt", "resnet18.pt"]]
    [1000, 1200, 10, 500, 5, 42, None]
    """
    p = PurePath(name)
    step = _parse_stem(_SUFFIX_RE.sub("", p.name))
    if step is None and p.parent.name:
        step = _parse_stem(p.parent.name)
    return step


def natural_key(value: PathLike) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value: ``ckpt2`` before ``ckpt10``.

    >>> sorted(["b10.pt", "b2.pt", "a.pt"], key=natural_key)
    ['a.pt', 'b2.pt', 'b10.pt']
    """
    parts = re.split(r"(\d+)", str(value))
    # Even positions are text, odd positions digits, so tuples always compare like with like.
    return tuple(int(t) if i % 2 else t.lower() for i, t in enumerate(parts))


def _files_in(folder: Path) -> list[tuple[Path, str]]:
    """(file, name to parse) for checkpoints in ``folder`` and its direct, non-hidden subfolders."""
    found: list[tuple[Path, str]] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and is_checkpoint_name(entry.name):
            found.append((entry, entry.name))  # not the folder: "runs/exp_3/final.pt" is not step 3
        elif entry.is_dir() and not entry.name.startswith("."):
            for sub in sorted(entry.iterdir()):
                if sub.is_file() and is_checkpoint_name(sub.name):
                    found.append((sub, f"{entry.name}/{sub.name}"))
    return found


def _prefer_safetensors(candidates: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """Drop pickle-based weight files from a checkpoint folder that also holds a ``.safetensors`` file.

    This is the one-checkpoint-per-folder layout (Hugging Face's ``checkpoint-500/model.safetensors``
    beside ``pytorch_model.bin``): the folder's name gives the step and the files' names give none,
    so they are one checkpoint in two formats. The safetensors file is the one read: it cannot run
    code. Files whose own names carry a step (``step_5.pt``, ``step_5.safetensors``) are separate
    files the user named, and all are kept.
    """
    def folder_checkpoint(path: Path, label: str) -> bool:
        return parse_step(path.name) is None and parse_step(label) is not None

    with_st = {path.parent for path, label in candidates
               if path.name.lower().endswith(".safetensors") and folder_checkpoint(path, label)}
    return [(path, label) for path, label in candidates
            if path.name.lower().endswith(".safetensors") or path.parent not in with_st
            or not folder_checkpoint(path, label)]


def find_checkpoints(
    paths: PathLike | Iterable[PathLike], *, read_metadata: bool = True
) -> list[CheckpointRef]:
    """Find checkpoint files and order them by training step.

    ``paths`` are files or folders; a folder contributes its ``*.pt, *.pth,
    *.ckpt, *.bin, *.safetensors`` files and those of its direct subfolders
    (``train_500/model.pt``). Hidden files and ``*.tmp`` are ignored.
    In a checkpoint folder that holds a ``.safetensors`` file beside ``pytorch_model.bin`` and
    the like (``checkpoint-500/``), only the safetensors file is listed: it cannot run code.

    Order: by the step parsed from the name (:func:`parse_step`), else (with
    ``read_metadata``) the step stored in the file (:func:`read_checkpoint_step`,
    always a safe load; unreadable files are kept and fail later when loaded).
    Ties and files without a step fall back to natural sort; files without a
    step come after stepped ones, and when *no* file has a step each gets its
    position as its step (``source="order"``).

    Raises:
        CheckpointError: a path does not exist, or no checkpoint files were found
            (the message names the path and the accepted suffixes).

    >>> import tempfile, os, torch
    >>> d = tempfile.mkdtemp()
    >>> for n in ["ckpt-10.pt", "ckpt-2.pt"]:
    ...     torch.save({"w": torch.zeros(1)}, os.path.join(d, n))
    >>> [(r.path.name, r.step, r.source) for r in find_checkpoints(d)]
    [('ckpt-2.pt', 2, 'name'), ('ckpt-10.pt', 10, 'name')]
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    suffixes = ", ".join(CHECKPOINT_SUFFIXES)
    candidates: list[tuple[Path, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = _files_in(p)
            if not found:
                raise CheckpointError(f"no checkpoint files in folder {repr(str(p))} (looked for {suffixes})")
            candidates.extend(found)
        elif p.is_file():
            if not is_checkpoint_name(p.name):
                raise CheckpointError(f"{repr(str(p))} is not a checkpoint file name; accepted suffixes: {suffixes}")
            candidates.append((p, f"{p.parent.name}/{p.name}" if p.parent.name else p.name))
        else:
            raise CheckpointError(f"checkpoint path {repr(str(p))} does not exist (expected a file or folder of {suffixes})")
    if not candidates:
        raise CheckpointError(f"no checkpoint paths given (expected files or folders of {suffixes})")

    seen: set[Path] = set()
    stepped: list[CheckpointRef] = []
    unstepped: list[Path] = []
    for path, label in _prefer_safetensors(candidates):
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        step, source = parse_step(label), "name"
        if step is None and read_metadata:
            try:
                step, source = read_checkpoint_step(path), "metadata"
            except DevvisError:
                step = None  # surfaces, with its real message, when the file is loaded
        if step is None:
            unstepped.append(path)
        else:
            stepped.append(CheckpointRef(path, step, source))
    stepped.sort(key=lambda r: (r.step, natural_key(r.path)))
    unstepped.sort(key=natural_key)
    if not stepped:
        return [CheckpointRef(p, i, "order") for i, p in enumerate(unstepped)]
    return stepped + [CheckpointRef(p, None, "order") for p in unstepped]
