"""Checkpoint files: read them safely, save them, and read what is stored beside the weights.

Files are read with ``torch.load(..., weights_only=True)`` (or safetensors), so a file
cannot run code while loading unless the caller passes ``trust=True``. Every way a file
can be wrong (missing, empty, truncated, not a checkpoint) becomes a
:class:`~devvis.errors.CheckpointError` that names the file.

A checkpoint may also store its training step and how to rebuild its model
(``{"name": ..., "kwargs": {...}}``, see :func:`save_checkpoint`); both can be read
without loading the weights (:func:`read_checkpoint_step`, :func:`read_model_config`).

>>> import tempfile, os, torch
>>> p = os.path.join(tempfile.mkdtemp(), "step_100.safetensors")
>>> save_checkpoint({"fc.weight": torch.zeros(7, 4)}, p, step=100)
>>> read_checkpoint_step(p), tuple(load_checkpoint(p)["fc.weight"].shape)
(100, (7, 4))
"""

from __future__ import annotations

import io as _io
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from devvis.errors import CheckpointError, CheckpointNotice, ConfigError, DevvisError
from devvis.io import atomic_write_bytes, read_json
from devvis.models.safe_load import check_file, first_line as _first_line, safetensors_metadata as _safetensors_metadata
from devvis.models.safe_load import display as _display, sniff as _sniff, torch_load as _torch_load
from devvis.models.safe_load import unreadable_error as _unreadable
from devvis.models.state_dict import EMA_KEYS, select_state_dict, strip_wrapper_prefixes
from devvis.typing import DeviceLike, PathLike

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "MODEL_CONFIG_FILE",
    "MODEL_CONFIG_KEY",
    "LoadedCheckpoint",
    "is_checkpoint_name",
    "load_checkpoint",
    "read_checkpoint",
    "read_checkpoint_step",
    "read_model_config",
    "save_checkpoint",
]

#: File suffixes that name checkpoints (``.pth.tar`` is the classic ImageNet-training-script name).
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".pth.tar", ".pt.tar")

#: Integer entries of a dict checkpoint that hold the training step, most specific first.
#: ``epoch`` comes last: torchvision's and timm's scripts store only it (and name files by it too);
#: ``global_steps`` is DeepSpeed's.
_STEP_KEYS: tuple[str, ...] = ("step", "global_step", "global_steps", "iteration", "iter", "epoch")

#: Files a Hugging Face Trainer writes beside the weights in ``checkpoint-N/`` folders;
#: they are .pt/.pth/.bin files but hold no model.
_AUXILIARY_FILES = frozenset({"optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin", "optimizer.bin"})
#: DeepSpeed's optimizer shards (``global_stepN/*optim_states.pt``) beside ``mp_rank_00_model_states.pt``.
_AUXILIARY_PARTS = ("optim_states", "rng_state")

#: Name of the file (beside a checkpoint) and the metadata key (inside one) that
#: describe how to rebuild the model: ``{"name": ..., "kwargs": {...}}``.
MODEL_CONFIG_FILE = "model_config.json"
MODEL_CONFIG_KEY = "devvis_model_config"


def is_checkpoint_name(name: str) -> bool:
    """Whether a file name looks like a checkpoint of model weights.

    A :data:`CHECKPOINT_SUFFIXES` suffix, not hidden, not ``*.tmp``, and not one of the
    auxiliary files a Hugging Face Trainer writes beside the weights (``optimizer.pt``, ...).

    >>> [is_checkpoint_name(n) for n in ["step_5.pt", "optimizer.pt", ".step_5.pt", "notes.txt"]]
    [True, False, False, False]
    """
    lower = name.lower()
    if name.startswith(".") or lower.endswith(".tmp") or lower in _AUXILIARY_FILES \
            or any(part in lower for part in _AUXILIARY_PARTS):
        return False
    return lower.endswith(CHECKPOINT_SUFFIXES)


def _check_file(path: Path) -> None:
    if path.is_dir():
        found = [p.name for p in sorted(path.iterdir()) if is_checkpoint_name(p.name)][:5]
        hint = f"; it holds {', '.join(found)}" if found else ""
        raise CheckpointError(
            f"checkpoint {_display(path)} is a folder, not a file{hint}; "
            "pass one file, or use devvis.models.find_checkpoints() for a series"
        )
    check_file(path)


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


def _state_dict_from(obj: Any, path: Path, weights: str) -> tuple[dict[str, torch.Tensor], str | None]:
    found, key, candidates = select_state_dict(obj, weights, where=f"checkpoint {_display(path)}")
    if len(candidates) > 1 and weights == "model":  # several models and the user chose none: say which is used
        others = [c for c in candidates if c != key]
        hint = "ema" if weights != "ema" and any(c in EMA_KEYS for c in others) else others[0]
        # The same words for every file of a series, so the notice is shown once per run.
        warnings.warn(f"checkpoints hold several models ({', '.join(candidates)}); using {key!r}; pick another "
                      f"with --weights {hint} (Python: weights={hint!r})", CheckpointNotice, stacklevel=2)
    # `_extra_state` entries are module-defined objects that load_state_dict hands back to the module.
    sd = {k: v for k, v in found.items() if isinstance(v, torch.Tensor) or str(k).endswith("_extra_state")}
    return strip_wrapper_prefixes(sd), key


def load_checkpoint(
    path: PathLike, *, trust: bool = False, map_location: DeviceLike = "cpu", weights: str = "model"
) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return the model's state dict (name -> tensor).

    Accepts a plain ``state_dict``; a dict holding it under ``state_dict``,
    ``model_state_dict``, ``model``, ``net`` or ``module``; PyTorch Lightning
    files (``model.``-prefixed keys beside ``epoch``/``global_step``);
    DataParallel/DDP ``module.`` prefixes (stripped only when every key has
    one); and ``.safetensors`` files (recognized by content, not only suffix).
    Tensors keep their stored dtype and shape; they are placed by ``map_location``.

    ``weights`` picks the model of a checkpoint that holds several: ``"model"`` (the
    usual entry), ``"ema"`` (timm's ``state_dict_ema`` and other EMA copies) or the name of
    a top-level entry (``"teacher"``); when there are several and one is picked by default,
    a :class:`~devvis.errors.CheckpointNotice` warning names it and the others.

    Files are read with ``weights_only=True`` (plus the harmless objects training scripts
    store, :data:`~devvis.models.safe_load.SAFE_GLOBALS`: ``argparse.Namespace``, paths,
    numpy scalars): one that needs other Python objects raises :class:`~devvis.errors.UnsafeCheckpointError` *without*
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
    return read_checkpoint(path, trust=trust, map_location=map_location, weights=weights).state_dict


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint file read once: its state dict and what is stored beside the weights.

    Attributes:
        path: the file.
        state_dict: name -> tensor, as :func:`load_checkpoint` returns it.
        metadata: the non-tensor entries (safetensors header metadata, or a dict
            checkpoint's top-level scalars such as ``epoch`` and ``global_step``).
        weights_key: the entry the state dict came from (``"state_dict_ema"``), or None for a
            plain state dict.
    """

    path: Path
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    metadata: dict[str, Any]
    weights_key: str | None = None

    @property
    def step(self) -> int | None:
        """The training step stored in the file (``step``, ``global_step``, ...), or None."""
        return _step_from_meta(self.metadata)

    def model_config(self) -> dict[str, Any] | None:
        """How to rebuild the model (see :func:`read_model_config`), or None.

        Raises:
            ConfigError: the stored config or a ``model_config.json`` beside the file is malformed.
        """
        return _config_from_meta(self.metadata, self.path) or _config_from_folder(self.path)


def read_checkpoint(path: PathLike, *, trust: bool = False, map_location: DeviceLike = "cpu",
                    weights: str = "model") -> LoadedCheckpoint:
    """Read a checkpoint file once: its state dict (see :func:`load_checkpoint`) and its metadata.

    Raises the same errors as :func:`load_checkpoint`.

    >>> import tempfile, os, torch
    >>> p = os.path.join(tempfile.mkdtemp(), "last.ckpt")
    >>> torch.save({"state_dict": {"w": torch.zeros(3)}, "global_step": 1200}, p)
    >>> ck = read_checkpoint(p)
    >>> list(ck.state_dict), ck.step
    (['w'], 1200)
    """
    p = Path(path)
    obj, meta = _read(p, trust=trust, map_location=map_location)
    try:
        sd, key = _state_dict_from(obj, p, weights)
        return LoadedCheckpoint(p, sd, meta, key)
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


def read_checkpoint_step(path: PathLike, *, trust: bool = False) -> int | None:
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
    path: PathLike,
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


def read_model_config(path: PathLike, *, trust: bool = False) -> dict[str, Any] | None:
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


