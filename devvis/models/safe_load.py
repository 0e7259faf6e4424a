"""Reading a checkpoint file without letting it run code.

``torch.load(weights_only=True)`` refuses every Python object that is not a tensor or a
plain container. Training scripts store a few harmless objects beside the weights:
torchvision's reference scripts and timm's ``train.py`` keep their ``argparse.Namespace``
of arguments, others keep ``pathlib`` paths, numpy scalars, dtypes and arrays.
:data:`SAFE_GLOBALS` lists them; they are accepted through
``torch.serialization.safe_globals`` (their construction sets attributes and copies bytes,
nothing more). Anything else is still refused, and :func:`torch_load` names the classes
found (read from the pickle's opcodes, which never executes it).

Also here: what a file is (:func:`sniff`), the checks before reading it (:func:`check_file`:
missing, a folder, empty, a Git LFS pointer), and one-line error texts.

>>> import argparse, io, torch, tempfile, os
>>> p = os.path.join(tempfile.mkdtemp(), "model_3.pth")
>>> torch.save({"model": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=0.1), "epoch": 3}, p)
>>> torch_load(p, trust=False, map_location="cpu")["args"].lr
0.1
"""

from __future__ import annotations

import argparse
import builtins
import collections
import pathlib
import pickle
import re
import struct
import warnings
from pathlib import Path
from typing import Any

import torch

from devvis.errors import CheckpointError, UnsafeCheckpointError
from devvis.typing import PathLike

__all__ = ["SAFE_GLOBALS", "check_file", "display", "first_line", "safetensors_metadata", "sniff", "torch_load",
           "unreadable_error", "unsafe_globals"]

#: What a Git LFS pointer file starts with (the weights were never downloaded).
_LFS_HEADER = b"version https://git-lfs"


def _numpy_globals() -> list[Any]:
    """numpy scalars, dtypes and arrays (under numpy 2's ``numpy._core`` and numpy 1's ``numpy.core`` names)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with torch's usual installs
        return []
    core = getattr(np, "_core", None) or np.core
    out: list[Any] = [np.dtype, np.ndarray]
    for fn in (core.multiarray.scalar, core.multiarray._reconstruct):
        out += [fn, (fn, f"numpy.core.multiarray.{fn.__name__}"), (fn, f"numpy._core.multiarray.{fn.__name__}")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return out


#: Harmless objects training scripts store beside tensors, accepted by ``weights_only`` loading.
SAFE_GLOBALS: list[Any] = [
    argparse.Namespace,
    pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePath, pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    collections.OrderedDict, collections.defaultdict,
    # default_factory of a defaultdict: calling them builds an empty container
    builtins.list, builtins.dict, builtins.set, builtins.tuple, builtins.int, builtins.float, builtins.str,
    *_numpy_globals(),
]


def display(path: PathLike) -> str:
    """A path for a message: quoted."""
    return repr(str(path))


def sniff(path: Path) -> str:
    """``"zip"`` (torch.save >= 1.6), ``"safetensors"``, ``"lfs"`` (a Git LFS pointer) or ``"other"``."""
    with open(path, "rb") as f:
        head = f.read(len(_LFS_HEADER))
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head.startswith(_LFS_HEADER):
        return "lfs"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        # safetensors: an 8-byte little-endian header length, then a JSON object.
        if head[8:9] == b"{" and 8 + n <= path.stat().st_size:
            return "safetensors"
    if path.name.endswith(".safetensors"):
        return "safetensors"  # let safetensors itself say what is wrong with it
    return "other"


def check_file(path: Path) -> None:
    """Raise :class:`CheckpointError` for a missing file, an empty file or a Git LFS pointer (folders: the caller)."""
    if not path.exists():
        raise CheckpointError(f"checkpoint file {display(path)} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint file {display(path)} is empty (0 bytes); was it saved completely?")
    if size < 1024 and sniff(path) == "lfs":
        raise CheckpointError(
            f"checkpoint {display(path)} is a Git LFS pointer file ({size} bytes), not the weights; "
            "run 'git lfs pull' in its repository to download them")


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` header (tensors untouched)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def unsafe_globals(path: Path, error: Exception) -> list[str] | None:
    """The non-allowlisted Python objects a pickle refers to, or None when it is just corrupt.

    Reading the pickle's opcodes does not execute it, so this is safe on hostile files.
    """
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS if not isinstance(g, tuple)}
    allowed |= {g[1] for g in SAFE_GLOBALS if isinstance(g, tuple)}
    try:
        names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if n not in allowed]
        if names:
            return names
    except Exception:  # legacy (non-zip) files are not supported by the scanner
        pass
    msg = str(error)
    m = re.search(r"(?:Unsupported global: GLOBAL|global)\s+([\w.]+)\s+was not an allowed global", msg)
    if m:
        return [m.group(1)]
    if "not an allowed global" in msg or "Unsupported global" in msg:
        return ["<unknown>"]
    return None


def torch_load(path: Path, *, trust: bool, map_location: Any, mmap: bool = False) -> Any:
    """``torch.load`` of a torch file: ``weights_only`` with :data:`SAFE_GLOBALS` unless ``trust``.

    Raises:
        UnsafeCheckpointError: the pickle needs other Python objects (listed) and ``trust`` is False;
            nothing of the file was executed.
        CheckpointError: not a valid PyTorch checkpoint.
    """
    kind = sniff(path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(SAFE_GLOBALS):
            # Corrupt files trip torch's "Detected pickle protocol N" warning before the error
            # that we turn into a CheckpointError; the warning would only repeat it, noisily.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=not trust, mmap=mmap and kind == "zip")
    except pickle.UnpicklingError as e:
        if trust:
            raise
        names = unsafe_globals(path, e)
        if names is None:
            raise CheckpointError(
                f"checkpoint {display(path)} is not a valid PyTorch checkpoint (corrupt or not a checkpoint): "
                f"{first_line(e)}"
            ) from None
        raise UnsafeCheckpointError(
            f"checkpoint {display(path)} contains pickled Python objects beyond tensors "
            f"({', '.join(names[:5])}); loading it would unpickle them, and unpickling can execute "
            "arbitrary code. Load it only if you trust where it came from: pass trust=True "
            "(CLI: --trust-checkpoint), or re-save just the state_dict / as .safetensors"
        ) from None


def first_line(e: BaseException) -> str:
    """``"Type: the sentence that says what failed"`` of an exception (torch's messages are long)."""
    text = str(e).strip()
    inner = re.search(r"Unpickler error:\s*(\S[^\n]*)", text)
    if inner:  # torch wraps the real cause in paragraphs about weights_only
        return f"{type(e).__name__}: {inner.group(1)[:300]}"
    if isinstance(e, EOFError) and not text:
        return "EOFError: the file ends before the data does"
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Weights only load failed", "In PyTorch 2.6", "(1)", "(2)")):
            if len(line) > 160:  # e.g. torch's zip errors: the first sentence says it
                line = line.split(". ")[0]
            return f"{type(e).__name__}: {line[:300]}"
    return type(e).__name__ + (f": {text[:300]}" if text else "")


def unreadable_error(path: Path, e: BaseException) -> CheckpointError:
    """The error for a file that exists but cannot be parsed, saying what kind of file it looks like."""
    kinds = {"zip": "a truncated or corrupt torch.save file", "safetensors": "a truncated or corrupt safetensors file"}
    try:
        kind = kinds.get(sniff(path), "neither a torch.save nor a safetensors file, or a truncated one")
    except OSError:
        kind = "unreadable"
    return CheckpointError(f"cannot read checkpoint {display(path)}: {kind} ({first_line(e)})")
