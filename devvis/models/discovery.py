"""Which checkpoints a training folder holds, and their training steps: one place, used by all.

:func:`discover_checkpoints` lists the checkpoint files of folders and files and gives
each its training step: a step the user set (``steps={"final.pt": 9000}``, CLI
``--step final.pt=9000``), else the step in the file name (:func:`parse_step`), else the
``global_step`` of a Hugging Face ``trainer_state.json`` beside it, else the step stored in
the file (``step``, ``global_step``, ``iteration``, ``epoch``, ...). A step never comes from
a file's position in the list. A file whose weights are identical to a stepped
checkpoint (timm's ``last.pth.tar`` and ``model_best.pth.tar``, Lightning's ``last.ckpt``,
torchvision's ``checkpoint.pth``) is listed once, as a copy of that step. A file with no
step anywhere is left out with a one-line notice naming it and the way to include it.
Every command and :class:`~devvis.longitudinal.CheckpointSeries` use this, so one training
run gives one checkpoint set everywhere, printed by :func:`format_checkpoint_order`.

>>> import tempfile, os, shutil, torch
>>> d = tempfile.mkdtemp()
>>> for e in (5, 6):
...     torch.save({"state_dict": {"w": torch.full((1,), float(e))}, "epoch": e}, f"{d}/checkpoint-{e}.pth.tar")
>>> _ = shutil.copy(f"{d}/checkpoint-6.pth.tar", f"{d}/last.pth.tar")
>>> [(r.step, r.path.name, [c.name for c in r.copies]) for r in find_checkpoints(d)]
[(5, 'checkpoint-5.pth.tar', []), (6, 'checkpoint-6.pth.tar', ['last.pth.tar'])]
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Iterable, Mapping, Sequence

import torch

from devvis.errors import CheckpointError, CheckpointNotice, ConfigError, DevvisError
from devvis.io import read_json
from devvis.models.checkpoints import CHECKPOINT_SUFFIXES, is_checkpoint_name, read_checkpoint, read_checkpoint_step
from devvis.typing import PathLike

__all__ = ["CheckpointRef", "Discovery", "discover_checkpoints", "find_checkpoints", "format_checkpoint_order",
           "natural_key", "parse_step", "parse_step_overrides"]

#: Where a step came from.
SOURCES = ("user", "name", "trainer_state", "metadata")


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint of a series.

    Attributes:
        path: the file.
        step: training step (from ``source``).
        source: ``"user"`` (``--step FILE=N``), ``"name"`` (file or folder name),
            ``"trainer_state"`` (Hugging Face ``trainer_state.json`` beside it) or
            ``"metadata"`` (stored in the file).
        copies: other files holding the same weights (``last.pth.tar``), listed once under this step.
    """

    path: Path
    step: int | None
    source: str
    copies: tuple[Path, ...] = ()


@dataclass
class Discovery:
    """What :func:`discover_checkpoints` found: the checkpoints in step order and the files left out (with why)."""

    refs: list[CheckpointRef]
    left_out: list[tuple[Path, str]] = field(default_factory=list)

    def notices(self) -> list[str]:
        """One line per file left out, naming it and how to include it or silence the notice."""
        return [f"left out {str(p)!r}: {why}; include it with --step {p.name}=N (Python: steps={{{p.name!r}: N}}) "
                f"or silence this with --exclude {p.name}" for p, why in self.left_out]

    def emit(self) -> "Discovery":
        """Warn each notice as a :class:`~devvis.errors.CheckpointNotice` (the CLI prints ``devvis: note: ...``)."""
        for line in self.notices():
            warnings.warn(line, CheckpointNotice, stacklevel=3)
        return self


_SUFFIX_RE = re.compile(r"(?:\.(?:pt|pth|ckpt|bin|safetensors|tar))+$", re.IGNORECASE)
_SHARD_RE = re.compile(r"-\d+-of-\d+$", re.IGNORECASE)  # model-00001-of-00002: a shard number, not a step
# Most specific first: an explicit step beats an iteration, which beats an epoch, which beats a
# checkpoint counter. Letters may not precede the keyword ("resnet18"). A number without a
# keyword counts only when it is the whole name ("0010.pt"): "vit_b_16_final.pth" has no step.
_STEP_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"(?<![a-z])(?:global_?)?steps?[=_\-]?(\d+)(?![a-z])",
        r"(?<![a-z])(?:iterations?|iters?|it)[=_\-]?(\d+)(?![a-z])",
        r"(?<![a-z])(?:epochs?|ep)[=_\-]?(\d+)(?![a-z])",
        r"(?<![a-z])(?:checkpoint|ckpt|chkpt|snapshot|model|weights)[=_\-]?(\d+)(?![a-z])",
        r"^(\d+)$",
    )
)


#: A folder name may also end in a bare counter after a separator (``train_500/``).
_FOLDER_COUNTER = re.compile(r"[_\-=](\d+)$")


def _parse_stem(stem: str, *, folder: bool = False) -> int | None:
    stem = _SHARD_RE.sub("", stem)
    for pattern in _STEP_PATTERNS + ((_FOLDER_COUNTER,) if folder else ()):
        hits = pattern.findall(stem)
        if hits:
            return int(hits[-1])
    return None


def parse_step(name: PathLike) -> int | None:
    """The training step a checkpoint's name encodes, or None.

    The file name is read first (``step`` > ``iter`` > ``epoch`` > a checkpoint counter > a
    name that is only a number); when it has none, its parent folder's name is read the same
    way, where a trailing counter counts too (``checkpoint-500/``, DeepSpeed's ``global_step1200/``,
    ``train_500/``). Digits inside model names are not steps.

    >>> [parse_step(n) for n in ["step_1000.pt", "epoch=3-step=1200.ckpt", "checkpoint_0010.pth",
    ...                          "train_500/model.pt", "model_epoch5.pt", "ckpt-42.pt", "resnet18.pt",
    ...                          "vit_b_16_final.pth", "global_step1200/mp_rank_00_model_states.pt"]]
    [1000, 1200, 10, 500, 5, 42, None, None, 1200]
    """
    p = PurePath(name)
    step = _parse_stem(_SUFFIX_RE.sub("", p.name))
    if step is None and p.parent.name:
        step = _parse_stem(p.parent.name, folder=True)
    return step


def natural_key(value: PathLike) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value: ``ckpt2`` before ``ckpt10``.

    >>> sorted(["b10.pt", "b2.pt", "a.pt"], key=natural_key)
    ['a.pt', 'b2.pt', 'b10.pt']
    """
    parts = re.split(r"(\d+)", str(value))
    # Even positions are text, odd positions digits, so tuples always compare like with like.
    return tuple(int(t) if i % 2 else t.lower() for i, t in enumerate(parts))


def parse_step_overrides(items: Iterable[str] | Mapping[str, int] | None) -> dict[str, int]:
    """``["final.pt=9000"]`` (``--step FILE=N``) -> ``{"final.pt": 9000}``; a mapping is checked and returned.

    >>> parse_step_overrides(["final.pt=9000", "runs/best.ckpt=120"])
    {'final.pt': 9000, 'runs/best.ckpt': 120}
    """
    if items is None:
        return {}
    pairs = list(items.items()) if isinstance(items, Mapping) else [tuple(i.rpartition("=")[::2]) for i in items]
    out: dict[str, int] = {}
    for key, value in pairs:
        text = str(value).strip()
        if not key or not text.lstrip("-").isdigit():
            raise ConfigError(f"invalid --step {key}={value!r}; expected FILE=N with an integer step, "
                              "e.g. --step final.pt=9000")
        out[str(key)] = int(text)
    return out


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
    beside ``pytorch_model.bin``): one checkpoint in two formats. The safetensors file is the one
    read: it cannot run code. Files whose own names carry a step are separate files, all kept.
    """
    def folder_checkpoint(path: Path, label: str) -> bool:
        return parse_step(path.name) is None and parse_step(label) is not None

    with_st = {path.parent for path, label in candidates
               if path.name.lower().endswith(".safetensors") and folder_checkpoint(path, label)}
    return [(path, label) for path, label in candidates
            if path.name.lower().endswith(".safetensors") or path.parent not in with_st
            or not folder_checkpoint(path, label)]


def _matches(pattern: str, path: Path, label: str) -> bool:
    names = (path.name, label, str(path), path.parent.name)
    return any(fnmatch.fnmatch(n, pattern) for n in names) or os.path.abspath(pattern) == str(path.absolute())


def _trainer_state_step(path: Path) -> int | None:
    """``global_step`` of the Hugging Face ``trainer_state.json`` beside a checkpoint file."""
    state = path.parent / "trainer_state.json"
    if not state.is_file():
        return None
    try:
        step = read_json(state).get("global_step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


class _Contents:
    """Compares checkpoint files by bytes, then by weights (each file read at most once)."""

    def __init__(self, *, weights: str, trust: bool, read_files: bool):
        self.weights, self.trust, self.read_files = weights, trust, read_files
        self._bytes: dict[Path, str] = {}
        self._weights: dict[Path, str | None] = {}

    def _digest_bytes(self, path: Path) -> str:
        if path not in self._bytes:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            self._bytes[path] = h.hexdigest()
        return self._bytes[path]

    def _digest_weights(self, path: Path) -> str | None:
        if path not in self._weights:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", CheckpointNotice)
                    sd = read_checkpoint(path, trust=self.trust, weights=self.weights).state_dict
            except DevvisError:
                sd = None
            digest = None
            if sd is not None:
                h = hashlib.sha256()
                for k in sorted(sd):
                    t = sd[k]
                    if isinstance(t, torch.Tensor):
                        t = t.detach().cpu().contiguous().view(-1)
                        h.update(f"{k}|{t.dtype}|{tuple(sd[k].shape)}".encode())
                        h.update(t.view(torch.uint8).numpy().tobytes())
                digest = h.hexdigest()
            self._weights[path] = digest
        return self._weights[path]

    def same(self, a: Path, b: Path) -> bool:
        try:
            if a.stat().st_size == b.stat().st_size and self._digest_bytes(a) == self._digest_bytes(b):
                return True
        except OSError:
            return False
        if not self.read_files:
            return False
        da = self._digest_weights(a)
        return da is not None and da == self._digest_weights(b)


def _gather(paths: PathLike | Iterable[PathLike]) -> list[tuple[Path, str]]:
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
            raise CheckpointError(f"checkpoint path {repr(str(p))} does not exist (expected a file or folder of "
                                  f"{suffixes})")
    if not candidates:
        raise CheckpointError(f"no checkpoint paths given (expected files or folders of {suffixes})")
    seen: set[Path] = set()
    unique = []
    for path, label in _prefer_safetensors(candidates):
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append((path, label))
    return unique


def discover_checkpoints(
    paths: PathLike | Iterable[PathLike], *, steps: Mapping[str, int] | Sequence[str] | None = None,
    exclude: Sequence[str] = (), weights: str = "model", trust: bool = False, read_metadata: bool = True,
) -> Discovery:
    """Find the checkpoints of files and folders, give each its training step, and order them.

    ``paths`` are files or folders; a folder contributes its ``*.pt, *.pth, *.pth.tar, *.ckpt,
    *.bin, *.safetensors`` files and those of its direct subfolders (``checkpoint-500/``,
    ``global_step1200/``). Hidden files, ``*.tmp`` and auxiliary files (optimizer, scheduler,
    RNG states, DeepSpeed optimizer shards) are ignored.

    Args:
        steps: steps set by the user, ``{FILE: N}`` or ``["FILE=N"]`` (FILE: a name, a
            ``folder/name``, a path or a glob); they win over every other source.
        exclude: globs of files to leave out (matched against the name, ``folder/name``,
            the path and the folder's name).
        weights: which model of multi-model files is compared when looking for copies
            (see :func:`~devvis.models.load_checkpoint`).
        trust: allow full unpickling when reading stored steps (only for files you trust).
        read_metadata: read steps stored in files (``False``: names and ``--step`` only).

    Raises:
        CheckpointError: a path does not exist, no checkpoint files, two files whose names
            claim one step, or no checkpoint with a step (the message says why each was left out).
        ConfigError: a ``steps`` entry names no file, or is not ``FILE=N``.

    >>> import tempfile, os, torch
    >>> d = tempfile.mkdtemp()
    >>> torch.save({"w": torch.zeros(1)}, os.path.join(d, "step_10.pt"))
    >>> torch.save({"w": torch.ones(1)}, os.path.join(d, "final.pt"))
    >>> found = discover_checkpoints(d)
    >>> [(r.step, r.path.name) for r in found.refs], [p.name for p, why in found.left_out]
    ([(10, 'step_10.pt')], ['final.pt'])
    >>> [(r.step, r.source) for r in discover_checkpoints(d, steps={"final.pt": 20}).refs]
    [(10, 'name'), (20, 'user')]
    """
    overrides = parse_step_overrides(steps)
    used: set[str] = set()
    contents = _Contents(weights=weights, trust=trust, read_files=read_metadata)
    named: list[CheckpointRef] = []
    rest: list[tuple[Path, str]] = []
    for path, label in _gather(paths):
        if any(_matches(g, path, label) for g in exclude):
            continue
        key = next((k for k in overrides if _matches(k, path, label)), None)
        step, source = (overrides[key], "user") if key is not None else (parse_step(label), "name")
        if key is not None:
            used.add(key)
        if step is None:
            rest.append((path, label))
        else:
            named.append(CheckpointRef(path, step, source))
    unused = sorted(set(overrides) - used)
    if unused:
        raise ConfigError(f"--step {unused[0]}={overrides[unused[0]]}: no checkpoint file matches {unused[0]!r}; "
                          "name a file as listed in the checkpoint order (its name, folder/name or path)")
    by_step: dict[int, CheckpointRef] = {}
    for ref in named:
        if ref.step in by_step:
            other, path = by_step[ref.step].path, ref.path
            raise CheckpointError(
                f"two checkpoints claim step {ref.step}: {str(other)!r} and {str(path)!r}; pass only one checkpoint "
                f"per step (leave one out with --exclude {path.name}, or give it its own step with --step "
                f"{path.name}=N)")
        by_step[ref.step] = ref  # type: ignore[index]

    left_out: list[tuple[Path, str]] = []
    stepless: list[tuple[Path, str]] = []
    for path, label in sorted(rest, key=lambda pl: natural_key(pl[1])):
        step, source, why = None, "metadata", "no training step in its name or stored in it"
        if read_metadata:
            step, source = _trainer_state_step(path), "trainer_state"
            if step is None:
                source = "metadata"
                try:
                    step = read_checkpoint_step(path, trust=trust)
                except DevvisError as e:
                    why = f"cannot read a stored step ({' '.join(str(e).split())[:300]})"
        else:
            why = "no training step in its name (stored steps were not read)"
        if step is None:
            stepless.append((path, why))
        elif step in by_step:
            twin = by_step[step]
            if contents.same(path, twin.path):
                by_step[step] = dataclasses.replace(twin, copies=twin.copies + (path,))
            else:
                left_out.append((path, f"it stores step {step}, like {twin.path.name}, but holds other weights"))
        else:
            by_step[step] = CheckpointRef(path, step, source)
    for path, why in stepless:
        twin = next((r for s, r in sorted(by_step.items(), reverse=True) if contents.same(path, r.path)), None)
        if twin is not None:
            by_step[twin.step] = dataclasses.replace(twin, copies=twin.copies + (path,))  # type: ignore[index]
        else:
            left_out.append((path, why))
    refs = [by_step[s] for s in sorted(by_step)]
    if not refs:
        notices = Discovery([], left_out).notices()
        raise CheckpointError("no checkpoint with a training step: " + "; ".join(notices[:3])
                              + (f"; ... ({len(notices) - 3} more)" if len(notices) > 3 else ""))
    return Discovery(refs, left_out)


def find_checkpoints(
    paths: PathLike | Iterable[PathLike], *, steps: Mapping[str, int] | Sequence[str] | None = None,
    exclude: Sequence[str] = (), weights: str = "model", trust: bool = False, read_metadata: bool = True,
) -> list[CheckpointRef]:
    """The checkpoints of :func:`discover_checkpoints`, in step order; each file left out is named in a
    :class:`~devvis.errors.CheckpointNotice` warning.

    >>> import tempfile, os, torch
    >>> d = tempfile.mkdtemp()
    >>> for n in ["ckpt-10.pt", "ckpt-2.pt"]:
    ...     torch.save({"w": torch.zeros(1)}, os.path.join(d, n))
    >>> [(r.path.name, r.step, r.source) for r in find_checkpoints(d)]
    [('ckpt-2.pt', 2, 'name'), ('ckpt-10.pt', 10, 'name')]
    """
    return discover_checkpoints(paths, steps=steps, exclude=exclude, weights=weights, trust=trust,
                                read_metadata=read_metadata).emit().refs


def format_checkpoint_order(refs: Sequence[CheckpointRef]) -> str:
    """The mapping step <- file that every command prints (and records), one checkpoint per line.

    >>> print(format_checkpoint_order([CheckpointRef(Path("c/checkpoint-7.pth.tar"), 7, "name",
    ...                                              (Path("c/last.pth.tar"),))]))
    checkpoint order (step <- file):
      step 7 <- c/checkpoint-7.pth.tar (from name; same weights: last.pth.tar)
    """
    width = max((len(str(r.step)) for r in refs), default=1)
    lines = ["checkpoint order (step <- file):"]
    for r in refs:
        same = f"; same weights: {', '.join(p.name for p in r.copies)}" if r.copies else ""
        lines.append(f"  step {r.step:>{width}} <- {r.path} (from {r.source.replace('_', ' ')}{same})")
    return "\n".join(lines)
