"""Build models by name, load checkpoints safely, and find checkpoint series on disk.

One door for every model devvis works with (:func:`load_model`):

* torchvision names (``"resnet18"``), always built with ``weights=None``;
* ``"timm:NAME"`` when timm is installed (``pip install devvis[timm]``);
* ``"package.module:callable"`` for a user's own architecture;
* devvis's own zoo (``devvis.zoo.MODELS``, e.g. ``"compact_resnet"``).

Checkpoints are read with ``torch.load(..., weights_only=True)`` (or safetensors),
so a file cannot run code while loading unless the caller passes ``trust=True``.
Every way a file can be wrong (missing, empty, truncated, not a checkpoint,
saved from another architecture) becomes a :class:`~devvis.errors.CheckpointError`
that names the file.

>>> import tempfile, os, torch, torchvision
>>> d = tempfile.mkdtemp()
>>> net = torchvision.models.resnet18(num_classes=7)
>>> save_checkpoint(net, os.path.join(d, "step_100.safetensors"), step=100)
>>> [ref.step for ref in find_checkpoints(d)]
[100]
>>> load_model("resnet18", checkpoint=os.path.join(d, "step_100.safetensors")).fc.out_features
7
"""

from __future__ import annotations

import importlib
import inspect
import io as _io
import json
import os
import pickle
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from devvis.errors import CheckpointError, ConfigError, DevvisError, ModelNotFoundError, UnsafeCheckpointError, closest
from devvis.io import atomic_write_bytes, read_json

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "CheckpointRef",
    "apply_state_dict",
    "find_checkpoints",
    "infer_num_classes",
    "load_checkpoint",
    "load_model",
    "natural_key",
    "parse_step",
    "read_checkpoint_step",
    "read_model_config",
    "save_checkpoint",
]

#: File suffixes :func:`find_checkpoints` treats as checkpoints (``.pth.tar`` is the
#: classic ImageNet-training-script name).
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".pth.tar", ".pt.tar")

#: Keys under which training scripts commonly nest the model's state dict, tried in order.
_WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "net", "module")

#: Prefixes added by wrappers rather than by the architecture: DataParallel/DDP
#: (``module.``), ``torch.compile`` (``_orig_mod.``) and PyTorch Lightning (``model.``).
_WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.", "model.")

#: Integer entries of a dict checkpoint that hold the training step, most specific first.
_STEP_KEYS: tuple[str, ...] = ("step", "global_step", "iteration", "iter")

#: Files a Hugging Face Trainer writes beside the weights in ``checkpoint-N/`` folders;
#: they are .pt/.pth/.bin files but hold no model, so discovery skips them.
_AUXILIARY_FILES = frozenset({"optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin", "optimizer.bin"})

#: Name of the file (beside a checkpoint) and the metadata key (inside one) that
#: describe how to rebuild the model: ``{"name": ..., "kwargs": {...}}``.
MODEL_CONFIG_FILE = "model_config.json"
MODEL_CONFIG_KEY = "devvis_model_config"

_CLASSIFIER_KEY = re.compile(
    r"(?:^|\.)(?:fc|classifier|head|heads\.head|last_linear|logits|linear|out|output)(?:\.\d+)?\.weight$"
)


# --------------------------------------------------------------------------------------------
# Reading checkpoint files
# --------------------------------------------------------------------------------------------


def _display(path: str | os.PathLike) -> str:
    return repr(str(path))


def _sniff(path: Path) -> str:
    """``"zip"`` (torch.save >= 1.6), ``"safetensors"`` or ``"other"`` (legacy pickle or garbage)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) == 9:
        (n,) = struct.unpack("<Q", head[:8])
        # safetensors: an 8-byte little-endian header length, then a JSON object.
        if head[8:9] == b"{" and 8 + n <= path.stat().st_size:
            return "safetensors"
    if path.name.endswith(".safetensors"):
        return "safetensors"  # let safetensors itself say what is wrong with it
    return "other"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint file {_display(path)} does not exist")
    if path.is_dir():
        found = [p.name for p in sorted(path.iterdir()) if _is_checkpoint_name(p.name)][:5]
        hint = f"; it holds {', '.join(found)}" if found else ""
        raise CheckpointError(
            f"checkpoint {_display(path)} is a folder, not a file{hint}; "
            "pass one file, or use devvis.models.find_checkpoints() for a series"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file {_display(path)} is empty (0 bytes); was it saved completely?")


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _unsafe_globals(path: Path, error: Exception) -> list[str] | None:
    """The non-allowlisted Python objects a pickle refers to, or None when it is just corrupt.

    Reading the pickle's opcodes does not execute it, so this is safe on hostile files.
    """
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        if names:
            return list(names)
    except Exception:  # legacy (non-zip) files are not supported by the scanner
        pass
    msg = str(error)
    m = re.search(r"(?:Unsupported global: GLOBAL|global)\s+([\w.]+)\s+was not an allowed global", msg)
    if m:
        return [m.group(1)]
    if "not an allowed global" in msg or "Unsupported global" in msg:
        return ["<unknown>"]
    return None


def _torch_load(path: Path, *, trust: bool, map_location: Any, mmap: bool = False) -> Any:
    kind = _sniff(path)
    try:
        with warnings.catch_warnings():
            # Corrupt files trip torch's "Detected pickle protocol N" warning before the error
            # that we turn into a CheckpointError; the warning would only repeat it, noisily.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=not trust, mmap=mmap and kind == "zip")
    except pickle.UnpicklingError as e:
        if trust:
            raise
        names = _unsafe_globals(path, e)
        if names is None:
            raise CheckpointError(
                f"checkpoint {_display(path)} is not a valid PyTorch checkpoint (corrupt or not a checkpoint): "
                f"{_first_line(e)}"
            ) from None
        raise UnsafeCheckpointError(
            f"checkpoint {_display(path)} contains pickled Python objects beyond tensors "
            f"({', '.join(names[:5])}); loading it would unpickle them, and unpickling can execute "
            "arbitrary code. Load it only if you trust where it came from: pass trust=True "
            "(CLI: --trust-checkpoint), or re-save just the state_dict / as .safetensors"
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    inner = re.search(r"Unpickler error:\s*(\S[^\n]*)", text)
    if inner:  # torch wraps the real cause in paragraphs about weights_only
        return f"{type(e).__name__}: {inner.group(1)[:300]}"
    if isinstance(e, EOFError) and not text:
        return "EOFError: the file ends before the data does"
    # torch's messages are long; keep the part that says what failed.
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Weights only load failed", "In PyTorch 2.6", "(1)", "(2)")):
            if len(line) > 160:  # e.g. torch's zip errors: the first sentence says it
                line = line.split(". ")[0]
            return f"{type(e).__name__}: {line[:300]}"
    return type(e).__name__ + (f": {text[:300]}" if text else "")


def _unreadable(path: Path, e: BaseException) -> CheckpointError:
    """The error for a file that exists but cannot be parsed, saying what kind of file it looks like."""
    kinds = {"zip": "a truncated or corrupt torch.save file", "safetensors": "a truncated or corrupt safetensors file"}
    try:
        kind = kinds.get(_sniff(path), "neither a torch.save nor a safetensors file, or a truncated one")
    except OSError:
        kind = "unreadable"
    return CheckpointError(f"cannot read checkpoint {_display(path)}: {kind} ({_first_line(e)})")


def _read(path: Path, *, trust: bool, map_location: Any, mmap: bool = False) -> tuple[Any, dict[str, Any]]:
    """Read a checkpoint file: (loaded object, metadata). Raises only DevvisError."""
    try:
        _check_file(path)
        if _sniff(path) == "safetensors":
            from safetensors.torch import load_file

            device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
            return load_file(str(path), device=device), _safetensors_metadata(path)
        obj = _torch_load(path, trust=trust, map_location=map_location, mmap=mmap)
        meta: dict[str, Any] = {}
        if isinstance(obj, Mapping):
            # Scalars beside the weights (epoch, global_step, ...); 0-d tensors only for step keys.
            meta = {k: v for k, v in obj.items() if isinstance(k, str) and not isinstance(v, (torch.Tensor, Mapping))}
            meta.update({k: obj[k] for k in _STEP_KEYS if isinstance(obj.get(k), torch.Tensor)})
        if isinstance(obj, Mapping) and isinstance(obj.get(MODEL_CONFIG_KEY), Mapping):
            meta[MODEL_CONFIG_KEY] = dict(obj[MODEL_CONFIG_KEY])
        return obj, meta
    except DevvisError:
        raise
    except Exception as e:  # zip/EOF/Runtime/OSError/SafetensorError...: all mean "cannot read"
        raise _unreadable(path, e) from e


def _tensor_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(isinstance(v, torch.Tensor) for v in obj.values())


def _find_state_dict(obj: Any, depth: int = 0) -> Mapping[str, Any] | None:
    if isinstance(obj, nn.Module):  # a whole pickled model (only reachable with trust=True)
        return obj.state_dict()
    if not isinstance(obj, Mapping):
        return None
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if depth < 2 and (isinstance(inner, nn.Module) or isinstance(inner, Mapping)):
            found = _find_state_dict(inner, depth + 1)
            if found is not None:
                return found
    if _tensor_mapping(obj) and all(isinstance(k, str) for k in obj):
        return obj
    return None


def _strip_wrapper_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Strip only when ALL keys share a prefix: a model may legitimately own a
    # submodule called `model` or `module` next to others.
    changed = True
    while changed and sd:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def _state_dict_from(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    found = _find_state_dict(obj)
    if found is None:
        what = type(obj).__name__
        if isinstance(obj, Mapping):
            what += f" with keys {', '.join(map(str, list(obj)[:8]))}"
        raise CheckpointError(
            f"checkpoint {_display(path)} holds no tensors (found a {what}); expected a state_dict, "
            f"or a dict holding one under one of: {', '.join(_WRAPPER_KEYS)}"
        )
    # `_extra_state` entries are module-defined objects that load_state_dict hands back to the module.
    sd = {k: v for k, v in found.items() if isinstance(v, torch.Tensor) or str(k).endswith("_extra_state")}
    return _strip_wrapper_prefixes(sd)


def load_checkpoint(
    path: str | os.PathLike, *, trust: bool = False, map_location: Any = "cpu"
) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return the model's state dict (name -> tensor).

    Accepts a plain ``state_dict``; a dict holding it under ``state_dict``,
    ``model_state_dict``, ``model``, ``net`` or ``module``; PyTorch Lightning
    files (``model.``-prefixed keys beside ``epoch``/``global_step``);
    DataParallel/DDP ``module.`` prefixes (stripped only when every key has
    one); and ``.safetensors`` files (recognized by content, not only suffix).
    Tensors keep their stored dtype and shape; they are placed by ``map_location``.

    Files are read with ``weights_only=True``: one that needs arbitrary Python
    objects raises :class:`~devvis.errors.UnsafeCheckpointError` *without*
    running any of its code, unless ``trust=True``.

    Raises:
        UnsafeCheckpointError: the pickle refers to non-tensor Python objects and ``trust`` is False.
        CheckpointError: missing, empty, truncated or corrupt file, or no tensors in it
            (the message names the file). No other exception escapes.

    >>> import tempfile, os, torch
    >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
    >>> torch.save({"model": {"module.w": torch.ones(2, 3)}, "epoch": 1}, p)
    >>> {k: tuple(v.shape) for k, v in load_checkpoint(p).items()}
    {'w': (2, 3)}
    """
    p = Path(path)
    obj, _ = _read(p, trust=trust, map_location=map_location)
    try:
        return _state_dict_from(obj, p)
    except DevvisError:
        raise
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {_display(p)}: {_first_line(e)}") from e


def _as_step(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _step_from_meta(meta: Mapping[str, Any]) -> int | None:
    for key in _STEP_KEYS:
        if key in meta:
            step = _as_step(meta[key])
            if step is not None:
                return step
    return None


def read_checkpoint_step(path: str | os.PathLike, *, trust: bool = False) -> int | None:
    """The training step stored inside a checkpoint, or None when it stores none.

    Looks at the integer entries ``step``, ``global_step``, ``iteration``, ``iter``
    (in that order) of dict checkpoints, and at the ``step`` metadata of
    ``.safetensors`` files (which is read without loading the tensors). Torch
    zip files are memory-mapped, so this is cheap even for large files.

    Raises the same errors as :func:`load_checkpoint`.

    >>> import tempfile, os, torch
    >>> p = os.path.join(tempfile.mkdtemp(), "last.ckpt")
    >>> torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3, "global_step": 1200}, p)
    >>> read_checkpoint_step(p)
    1200
    """
    return _step_from_meta(_read_metadata(Path(path), trust=trust))


def _read_metadata(path: Path, *, trust: bool) -> dict[str, Any]:
    """A checkpoint's non-tensor entries: safetensors header metadata (tensors untouched) or,
    for torch files, the top-level scalars (memory-mapped load, so tensors are not read)."""
    try:
        _check_file(path)
        if _sniff(path) == "safetensors":
            return dict(_safetensors_metadata(path))
    except DevvisError:
        raise
    except Exception as e:
        raise _unreadable(path, e) from e
    return _read(path, trust=trust, map_location="cpu", mmap=True)[1]


def save_checkpoint(
    state: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    step: int | None = None,
    model_config: Mapping[str, Any] | None = None,
) -> None:
    """Atomically save a model's weights so that devvis can find, order and rebuild them.

    ``.safetensors`` paths store the tensors plus metadata ``step`` and
    ``devvis_model_config`` (JSON); any other suffix stores
    ``{"state_dict": ..., "step": ..., "devvis_model_config": ...}`` with ``torch.save``.
    ``model_config`` is ``{"name": <load_model name>, "kwargs": {...}}``; with it,
    ``load_model(None, checkpoint=path)`` rebuilds the model on its own.
    Tensors are copied to CPU (and made contiguous) first.

    >>> import tempfile, os, torch
    >>> p = os.path.join(tempfile.mkdtemp(), "step_5.safetensors")
    >>> save_checkpoint({"w": torch.ones(2)}, p, step=5)
    >>> read_checkpoint_step(p), load_checkpoint(p)["w"].tolist()
    (5, [1.0, 1.0])
    """
    sd = state.state_dict() if isinstance(state, nn.Module) else state
    # clone(): safetensors refuses tensors that share storage (views, tied weights).
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if model_config is not None:
        _validate_model_config(model_config, where="model_config")
    p = Path(path)
    if p.name.endswith(".safetensors"):
        from safetensors.torch import save

        meta: dict[str, str] = {}
        if step is not None:
            meta["step"] = str(int(step))
        if model_config is not None:
            meta[MODEL_CONFIG_KEY] = json.dumps(dict(model_config))
        data = save(tensors, metadata=meta or None)
    else:
        obj: dict[str, Any] = {"state_dict": tensors}
        if step is not None:
            obj["step"] = int(step)
        if model_config is not None:
            obj[MODEL_CONFIG_KEY] = json.loads(json.dumps(dict(model_config)))
        buf = _io.BytesIO()
        torch.save(obj, buf)
        data = buf.getvalue()
    atomic_write_bytes(p, data)


# --------------------------------------------------------------------------------------------
# Fitting a state dict to a model
# --------------------------------------------------------------------------------------------


def _align_prefixes(sd: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Re-add or strip one leading module name when that makes more keys match the model.

    Handles a model wrapped in a module (keys ``model.x`` vs checkpoint ``x``, e.g.
    after the Lightning prefix was stripped) and Lightning modules that own
    extra submodules (checkpoint ``model.x`` + ``ema.x`` vs model ``x``: ``model.`` wins).
    """
    best, best_hits = sd, len(model_keys.intersection(sd))
    if best_hits == len(model_keys) == len(sd):
        return sd
    candidates: list[dict[str, torch.Tensor]] = []
    heads_in_sd = {k.split(".", 1)[0] + "." for k in sd if "." in k}
    # On a tie (a Lightning module holding `model.` and an `ema.` copy) the wrapper
    # prefixes win, then alphabetical order, so the choice never depends on set order.
    ranked = [p for p in _WRAPPER_PREFIXES if p in heads_in_sd] + sorted(heads_in_sd.difference(_WRAPPER_PREFIXES))
    for prefix in ranked:
        candidates.append({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    heads = {k.split(".", 1)[0] for k in model_keys if "." in k}
    if len(heads) == 1 and all("." in k for k in model_keys):
        prefix = heads.pop() + "."
        candidates.append({prefix + k: v for k, v in sd.items()})
    for cand in candidates:
        hits = len(model_keys.intersection(cand))
        if hits > best_hits:
            best, best_hits = cand, hits
    return best


def _examples(keys: list[str], n: int = 5) -> str:
    more = f", ... ({len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def apply_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike | None = None,
    strict: bool = True,
    *,
    name: str | None = None,
) -> nn.Module:
    """Load ``state_dict`` into ``model`` after checking that names and shapes fit.

    The check happens before anything is copied, so a mismatch leaves the model
    untouched. With ``strict=False`` missing and unexpected keys are tolerated
    (only the matching tensors load); shape mismatches are always an error.
    A leading module name that one side has and the other lacks (``model.``)
    is reconciled automatically. ``path`` and ``name`` (the model's name) only
    serve the error message. Returns ``model``.

    Raises:
        CheckpointError: naming the file, the first few missing / unexpected keys and
            shape mismatches (``fc.weight: checkpoint (7, 512) vs model (1000, 512)``).

    >>> import torch
    >>> net = torch.nn.Linear(3, 2)
    >>> _ = apply_state_dict(net, {"weight": torch.zeros(2, 3), "bias": torch.ones(2)})
    >>> net.bias.tolist()
    [1.0, 1.0]
    """
    where = f"checkpoint {_display(path)}" if path is not None else "the state dict"
    own = model.state_dict()
    sd = _align_prefixes(dict(state_dict), set(own))
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and isinstance(sd[k], torch.Tensor) and isinstance(own[k], torch.Tensor) and sd[k].shape != own[k].shape
    ]
    if mismatched or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({_examples(mismatched, 3)})")
        if missing or unexpected:
            why = (
                f"The checkpoint ({len(sd)} tensors) was probably saved from a different architecture "
                f"than this model ({len(own)} tensors)"
            )
        else:
            ckpt_classes = infer_num_classes(sd, order=list(own))
            classes = f"; the checkpoint's classifier has {ckpt_classes} outputs" if ckpt_classes else ""
            why = (
                "Layer names match but sizes differ: was it saved with other constructor arguments "
                f"(num_classes, width{classes})?"
            )
        model_name = f"{name!r} ({type(model).__name__})" if name else type(model).__name__
        raise CheckpointError(f"{where} does not fit the model {model_name}: {'; '.join(parts)}. {why}")
    if not strict:
        sd = {k: v for k, v in sd.items() if k in own}
    try:
        model.load_state_dict(sd, strict=strict)
    except Exception as e:  # e.g. a module's set_extra_state rejecting its value
        raise CheckpointError(f"{where} could not be loaded into {type(model).__name__}: {_first_line(e)}") from e
    return model


def infer_num_classes(state_dict: Mapping[str, Any], order: Iterable[str] | None = None) -> int | None:
    """Number of classes of the classifier in a state dict (rows of its weight), or None.

    Prefers the last 2-D weight whose name looks like a classifier (``fc.weight``,
    ``classifier.6.weight``, ``head.weight``, ``heads.head.weight``, ...); otherwise
    the last 2-D ``.weight``. "Last" follows ``order`` when given (the model's own
    ``state_dict()`` keys: safetensors files do not keep the order tensors were
    saved in), else the state dict's order.

    >>> import torchvision
    >>> infer_num_classes(torchvision.models.resnet18(num_classes=7).state_dict())
    7
    """
    keys = [k for k in order if k in state_dict] if order is not None else list(state_dict)
    two_d = [
        k for k in keys
        if str(k).endswith("weight") and isinstance(state_dict[k], torch.Tensor) and state_dict[k].ndim == 2
    ]
    named = [k for k in two_d if _CLASSIFIER_KEY.search(k)]
    pick = (named or two_d or [None])[-1]
    return int(state_dict[pick].shape[0]) if pick is not None else None


def _reference_keys(build: Callable[..., nn.Module], kw: Mapping[str, Any]) -> list[str] | None:
    """The state-dict key order of the model ``build(**kw)`` makes, built on the meta device (no memory)."""
    try:
        with torch.device("meta"):
            ref = build(**kw)
        return list(ref.state_dict()) if isinstance(ref, nn.Module) else None
    except Exception:  # some constructors cannot run on meta tensors; fall back to file order
        return None


def _infer_for(build: Callable[..., nn.Module], kw: Mapping[str, Any], state_dict: dict[str, torch.Tensor]) -> int | None:
    order = _reference_keys(build, kw)
    if order:
        inferred = infer_num_classes(_align_prefixes(state_dict, set(order)), order=order)
        if inferred is not None:
            return inferred
    return infer_num_classes(state_dict)


# --------------------------------------------------------------------------------------------
# Building models
# --------------------------------------------------------------------------------------------


def _validate_model_config(cfg: Any, *, where: str) -> dict[str, Any]:
    if not isinstance(cfg, Mapping) or not isinstance(cfg.get("name"), str):
        raise ConfigError(f"model config in {where} must be an object with a string 'name', got {cfg!r}")
    kwargs = cfg.get("kwargs", {}) or {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"model config in {where}: 'kwargs' must be an object, got {kwargs!r}")
    return {"name": cfg["name"], "kwargs": dict(kwargs)}


def _config_from_meta(meta: Mapping[str, Any], path: Path) -> dict[str, Any] | None:
    raw = meta.get(MODEL_CONFIG_KEY)
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(f"metadata {MODEL_CONFIG_KEY!r} of {_display(path)} is not valid JSON: {e}") from None
    return _validate_model_config(raw, where=_display(path))


def _config_from_folder(path: Path) -> dict[str, Any] | None:
    # Beside the checkpoint, or one level up for series stored as `step_500/model.pt`.
    for folder in (path.parent, path.parent.parent):
        cfg_path = folder / MODEL_CONFIG_FILE
        if cfg_path.is_file():
            try:
                raw = read_json(cfg_path)
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read {_display(cfg_path)}: {e}") from None
            return _validate_model_config(raw, where=_display(cfg_path))
    return None


def read_model_config(path: str | os.PathLike, *, trust: bool = False) -> dict[str, Any] | None:
    """How to rebuild the model a checkpoint belongs to: ``{"name": ..., "kwargs": {...}}`` or None.

    Reads, in order: the ``devvis_model_config`` entry stored in the checkpoint
    (safetensors metadata or a dict key, see :func:`save_checkpoint`), then a
    ``model_config.json`` beside the file or in its parent folder.

    >>> import tempfile, os, torch
    >>> p = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> save_checkpoint({"w": torch.ones(1)}, p, model_config={"name": "resnet18", "kwargs": {"num_classes": 3}})
    >>> read_model_config(p)
    {'name': 'resnet18', 'kwargs': {'num_classes': 3}}
    """
    p = Path(path)
    return _config_from_meta(_read_metadata(p, trust=trust), p) or _config_from_folder(p)


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _zoo_models() -> tuple[dict[str, Callable[..., nn.Module]], str | None]:
    """devvis.zoo.MODELS, or ({}, why it could not be imported)."""
    try:
        zoo = importlib.import_module("devvis.zoo")
        models = getattr(zoo, "MODELS")
        return dict(models), None
    except Exception as e:  # the zoo is optional for every other model source
        return {}, f"{type(e).__name__}: {e}"


def _timm_builder(name: str, kw: dict[str, Any]) -> tuple[Callable[..., nn.Module], bool]:
    try:
        import timm
    except ImportError:
        raise ModelNotFoundError(
            f"model {('timm:' + name)!r} needs timm, which is not installed; install it with: pip install devvis[timm]"
        ) from None
    if kw.get("pretrained"):
        raise ConfigError("devvis never downloads weights: drop pretrained=True and pass checkpoint=<file> instead")
    available = timm.list_models()
    if name not in available:
        close = closest(name, available)
        raise ModelNotFoundError(
            f"unknown timm model {name!r}; closest: {', '.join(close) if close else 'none'} (see timm.list_models())"
        )

    def build(**kwargs: Any) -> nn.Module:
        return timm.create_model(name, pretrained=False, **kwargs)

    return build, True


def _callable_builder(spec: str) -> tuple[Callable[..., nn.Module], bool]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelNotFoundError(f"model {spec!r} is not of the form 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelNotFoundError(
            f"model {spec!r}: cannot import module {module_name!r} ({e}); is it installed or on PYTHONPATH?"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            choices = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
            close = closest(part, choices)
            hint = f"closest: {', '.join(close)}" if close else f"callables there: {', '.join(choices[:10]) or 'none'}"
            raise ModelNotFoundError(f"model {spec!r}: {module_name!r} has no attribute {part!r}; {hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelNotFoundError(f"model {spec!r}: {attr!r} is a {type(obj).__name__}, not a callable that builds a model")
    return obj, _accepts(obj, "num_classes")


def _torchvision_names() -> tuple[list[str], set[str]]:
    import torchvision

    return torchvision.models.list_models(), set(torchvision.models.list_models(module=torchvision.models))


def _builder(name: str, kw: dict[str, Any]) -> tuple[Callable[..., nn.Module], bool]:
    """Constructor for ``name`` and whether an inferred ``num_classes`` may be passed to it."""
    if name.startswith("timm:"):
        return _timm_builder(name[len("timm:"):], kw)
    if ":" in name:
        return _callable_builder(name)
    tv_all, tv_classifiers = _torchvision_names()
    if name.lower() in tv_all:
        if kw.get("weights") is not None:
            raise ConfigError("devvis never downloads weights: drop weights= and pass checkpoint=<file> instead")
        import torchvision

        def build(**kwargs: Any) -> nn.Module:
            kwargs.pop("weights", None)
            return torchvision.models.get_model(name.lower(), weights=None, **kwargs)

        # Only classification models: detection heads' last 2-D weight is not a class count.
        return build, name.lower() in tv_classifiers
    zoo, zoo_error = _zoo_models()
    if name in zoo:
        return zoo[name], _accepts(zoo[name], "num_classes")
    close = closest(name, list(tv_all) + list(zoo))
    hint = f"closest: {', '.join(close)}" if close else "see torchvision.models.list_models()"
    zoo_note = f"; devvis.zoo could not be imported ({zoo_error})" if zoo_error else ""
    raise ModelNotFoundError(
        f"unknown model {name!r}; {hint}. Also accepted: 'timm:NAME' (pip install devvis[timm]) and "
        f"'package.module:callable'{zoo_note}"
    )


def load_model(
    name: str | None,
    checkpoint: str | os.PathLike | None = None,
    num_classes: int | None = None,
    *,
    trust: bool = False,
    strict: bool = True,
    device: str | torch.device | None = None,
    **kw: Any,
) -> nn.Module:
    """Build a model by name, optionally load a checkpoint into it, and return it in eval mode.

    ``name`` is a torchvision name (``"resnet18"``, never downloading weights),
    ``"timm:NAME"`` (needs ``pip install devvis[timm]``), ``"package.module:callable"``
    (called with ``**kw``), or a devvis zoo name (``"compact_resnet"``). With
    ``name=None`` the model is rebuilt from the checkpoint's model config (see
    :func:`read_model_config`). Extra ``kw`` go to the constructor.

    When ``num_classes`` is not given and a checkpoint is, it is inferred from
    the checkpoint's classifier (:func:`infer_num_classes`) and passed to the
    constructor (only for constructors that take ``num_classes``).

    Args:
        checkpoint: any file :func:`load_checkpoint` reads.
        trust: allow arbitrary unpickling (only for files you trust).
        strict: require every key to match (see :func:`apply_state_dict`).
        device: where the model goes (default CPU).

    Raises:
        ModelNotFoundError: unknown name (the message lists the closest names).
        CheckpointError / UnsafeCheckpointError: see :func:`load_checkpoint` and :func:`apply_state_dict`.

    >>> net = load_model("resnet18", num_classes=10)
    >>> net.fc.out_features, net.training
    (10, False)
    """
    state_dict: dict[str, torch.Tensor] | None = None
    meta: Mapping[str, Any] = {}
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None:
        obj, meta = _read(ckpt_path, trust=trust, map_location="cpu")
        state_dict = _state_dict_from(obj, ckpt_path)

    config = None
    if ckpt_path is not None:
        config = _config_from_meta(meta, ckpt_path) or _config_from_folder(ckpt_path)
    if name is None:
        if config is None:
            where = f" and {_display(ckpt_path)} has no {MODEL_CONFIG_KEY!r} metadata or {MODEL_CONFIG_FILE} beside it" if ckpt_path else ""
            raise ModelNotFoundError(f"no model name given{where}; pass a name such as 'resnet18'")
        name = config["name"]
    if config is not None and config["name"] == name:
        kw = {**config["kwargs"], **kw}  # explicit keyword arguments win over the stored ones

    build, takes_num_classes = _builder(name, kw)
    if num_classes is not None:
        kw["num_classes"] = int(num_classes)
    elif state_dict is not None and takes_num_classes and "num_classes" not in kw:
        inferred = _infer_for(build, kw, state_dict)
        if inferred is not None:
            kw["num_classes"] = inferred
    try:
        model = build(**kw)
    except DevvisError:
        raise
    except TypeError as e:
        raise ConfigError(f"model {name!r} does not accept the arguments {sorted(kw)}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ModelNotFoundError(f"model {name!r} built a {type(model).__name__}, not a torch.nn.Module")
    if state_dict is not None:
        apply_state_dict(model, state_dict, path=ckpt_path, strict=strict, name=name)
    try:
        dev = torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"invalid device {device!r}: {e}") from None
    return model.to(dev).eval()


# --------------------------------------------------------------------------------------------
# Finding checkpoint series
# --------------------------------------------------------------------------------------------


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


def parse_step(name: str | os.PathLike) -> int | None:
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


def natural_key(value: str | os.PathLike) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value: ``ckpt2`` before ``ckpt10``.

    >>> sorted(["b10.pt", "b2.pt", "a.pt"], key=natural_key)
    ['a.pt', 'b2.pt', 'b10.pt']
    """
    parts = re.split(r"(\d+)", str(value))
    # Even positions are text, odd positions digits, so tuples always compare like with like.
    return tuple(int(t) if i % 2 else t.lower() for i, t in enumerate(parts))


def _is_checkpoint_name(name: str) -> bool:
    lower = name.lower()
    if name.startswith(".") or lower.endswith(".tmp") or lower in _AUXILIARY_FILES or lower.startswith("rng_state"):
        return False
    return lower.endswith(CHECKPOINT_SUFFIXES)


def _files_in(folder: Path) -> list[tuple[Path, str]]:
    """(file, name to parse) for checkpoints in ``folder`` and its direct, non-hidden subfolders."""
    found: list[tuple[Path, str]] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and _is_checkpoint_name(entry.name):
            found.append((entry, entry.name))  # not the folder: "runs/exp_3/final.pt" is not step 3
        elif entry.is_dir() and not entry.name.startswith("."):
            for sub in sorted(entry.iterdir()):
                if sub.is_file() and _is_checkpoint_name(sub.name):
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
    paths: str | os.PathLike | Iterable[str | os.PathLike], *, read_metadata: bool = True
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
                raise CheckpointError(f"no checkpoint files in folder {_display(p)} (looked for {suffixes})")
            candidates.extend(found)
        elif p.is_file():
            if not _is_checkpoint_name(p.name):
                raise CheckpointError(f"{_display(p)} is not a checkpoint file name; accepted suffixes: {suffixes}")
            candidates.append((p, f"{p.parent.name}/{p.name}" if p.parent.name else p.name))
        else:
            raise CheckpointError(f"checkpoint path {_display(p)} does not exist (expected a file or folder of {suffixes})")
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
