"""Fitting a state dict to a model: wrapper prefixes, name/shape checks, the classifier's size.

Checkpoints written by training scripts name tensors after the *wrapped* model
(``module.`` for DataParallel/DDP, ``_orig_mod.`` for ``torch.compile``, ``model.``
for PyTorch Lightning). This module reconciles those names with the model's own and
explains every mismatch before anything is copied.

>>> import torch
>>> net = torch.nn.Linear(3, 2)
>>> sd = {"module.weight": torch.zeros(2, 3), "module.bias": torch.ones(2)}
>>> apply_state_dict(net, strip_wrapper_prefixes(sd)).bias.tolist()
[1.0, 1.0]
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from devvis.errors import ArchitectureMismatchError, CheckpointError
from devvis.typing import PathLike

__all__ = ["EMA_KEYS", "MODEL_KEYS", "WRAPPER_PREFIXES", "align_prefixes", "apply_state_dict", "infer_num_classes",
           "select_state_dict", "strip_wrapper_prefixes"]

#: Entries under which training scripts nest the model's state dict, tried in order (``weights="model"``).
MODEL_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "net", "module")
#: Entries holding an exponential moving average of the weights (``weights="ema"``): timm's
#: ``state_dict_ema`` first.
EMA_KEYS: tuple[str, ...] = ("state_dict_ema", "model_ema", "ema_state_dict", "model_ema_state_dict", "ema_model",
                             "ema", "module_ema")

#: Prefixes added by wrappers rather than by the architecture: DataParallel/DDP
#: (``module.``), ``torch.compile`` (``_orig_mod.``) and PyTorch Lightning (``model.``).
WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.", "model.")

_CLASSIFIER_KEY = re.compile(
    r"(?:^|\.)(?:fc|classifier|head|heads\.head|last_linear|logits|linear|out|output)(?:\.\d+)?\.weight$"
)


def _tensor_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(isinstance(v, torch.Tensor) for v in obj.values()) \
        and all(isinstance(k, str) for k in obj)


def _unwrap(obj: Any, depth: int = 0) -> Mapping[str, Any] | None:
    """The state dict in ``obj``: itself, a whole module's, or one nested under :data:`MODEL_KEYS`."""
    if isinstance(obj, nn.Module):  # a whole pickled model (only reachable with trust=True)
        return obj.state_dict()
    if not isinstance(obj, Mapping):
        return None
    if _tensor_mapping(obj):
        return obj
    for key in MODEL_KEYS:
        if depth < 2 and isinstance(obj.get(key), (nn.Module, Mapping)):
            found = _unwrap(obj[key], depth + 1)
            if found is not None:
                return found
    return None


def select_state_dict(obj: Any, weights: str = "model", *, where: str = "the checkpoint"
                      ) -> tuple[Mapping[str, Any], str | None, list[str]]:
    """The model weights in a loaded checkpoint: ``(state dict, entry used, candidate entries)``.

    ``weights``: ``"model"`` (a plain state dict, else the first of :data:`MODEL_KEYS`,
    else the first entry that holds a state dict), ``"ema"`` (the first of :data:`EMA_KEYS`)
    or the name of a top-level entry (``"teacher"``). Candidates are the top-level entries
    that hold a state dict (``["state_dict", "state_dict_ema"]`` for timm); a plain state
    dict has none.

    Raises:
        CheckpointError: no tensors, or no entry ``weights`` names (the message lists the candidates).

    >>> import torch
    >>> ck = {"student": {"w": torch.zeros(1)}, "teacher": {"w": torch.ones(1)}, "epoch": 3}
    >>> sd, key, cands = select_state_dict(ck, "teacher")
    >>> sd["w"].item(), key, cands
    (1.0, 'teacher', ['student', 'teacher'])
    """
    if _tensor_mapping(obj) or isinstance(obj, nn.Module):
        if weights not in ("model",):
            raise CheckpointError(f"{where} holds a single model (a plain state dict); --weights {weights} has "
                                  "nothing to pick: use --weights model")
        return _unwrap(obj) or {}, None, []
    candidates: list[str] = []
    if isinstance(obj, Mapping):
        candidates = [str(k) for k, v in obj.items() if isinstance(k, str) and _unwrap(v) is not None]
    if not candidates:
        what = type(obj).__name__ + (f" with keys {', '.join(map(str, list(obj)[:8]))}" if isinstance(obj, Mapping)
                                     else "")
        raise CheckpointError(f"{where} holds no tensors (found a {what}); expected a state_dict, or a dict "
                              f"holding one under one of: {', '.join(MODEL_KEYS)}")
    if weights == "model":
        key = next((k for k in MODEL_KEYS if k in candidates), candidates[0])
    elif weights == "ema":
        key = next((k for k in EMA_KEYS if k in candidates), None)
        if key is None:
            raise CheckpointError(f"{where} holds no EMA weights (looked for {', '.join(EMA_KEYS[:4])}, ...); "
                                  f"its models: {', '.join(candidates)}; pick one with --weights NAME")
    elif weights in candidates:
        key = weights
    else:
        raise CheckpointError(f"--weights {weights!r}: {where} has no such model; choose model, ema"
                              f" or one of its entries: {', '.join(candidates)}")
    return _unwrap(obj[key]) or {}, key, candidates


def strip_wrapper_prefixes(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Remove wrapper prefixes (:data:`WRAPPER_PREFIXES`) shared by *every* key, repeatedly.

    A model may legitimately own a submodule called ``model`` or ``module`` beside
    others, so a prefix only some keys have is kept.

    >>> strip_wrapper_prefixes({"module._orig_mod.fc.weight": 1})
    {'fc.weight': 1}
    """
    out = dict(sd)
    changed = True
    while changed and out:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                changed = True
    return out


def align_prefixes(sd: Mapping[str, torch.Tensor], model_keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """Re-add or strip one leading module name when that makes more keys match ``model_keys``.

    Handles a model wrapped in a module (keys ``model.x`` vs checkpoint ``x``, e.g.
    after the Lightning prefix was stripped) and Lightning modules that own
    extra submodules (checkpoint ``model.x`` + ``ema.x`` vs model ``x``: ``model.`` wins).

    >>> align_prefixes({"net.w": 1, "ema.w": 2}, ["w"])
    {'w': 2}
    """
    sd = dict(sd)
    model_keys = set(model_keys)
    best, best_hits = sd, len(model_keys.intersection(sd))
    if best_hits == len(model_keys) == len(sd):
        return sd
    candidates: list[dict[str, torch.Tensor]] = []
    heads_in_sd = {k.split(".", 1)[0] + "." for k in sd if "." in k}
    # On a tie (a Lightning module holding `model.` and an `ema.` copy) the wrapper
    # prefixes win, then alphabetical order, so the choice never depends on set order.
    ranked = [p for p in WRAPPER_PREFIXES if p in heads_in_sd] + sorted(heads_in_sd.difference(WRAPPER_PREFIXES))
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
    *,
    path: PathLike | None = None,
    strict: bool = True,
    name: str | None = None,
) -> nn.Module:
    """Load ``state_dict`` (name -> tensor, any shapes) into ``model`` after checking that names and shapes fit.

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
    where = f"checkpoint {str(path)!r}" if path is not None else "the state dict"
    own = model.state_dict()
    sd = align_prefixes(state_dict, own)
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
        raise ArchitectureMismatchError(f"{where} does not fit the model {model_name}: {'; '.join(parts)}. {why}")
    if not strict:
        sd = {k: v for k, v in sd.items() if k in own}
    try:
        model.load_state_dict(sd, strict=strict)
    except Exception as e:  # e.g. a module's set_extra_state rejecting its value
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise CheckpointError(f"{where} could not be loaded into {type(model).__name__}: "
                              f"{type(e).__name__}: {first}") from e
    return model


def infer_num_classes(state_dict: Mapping[str, Any], *, order: Iterable[str] | None = None) -> int | None:
    """Number of classes of the classifier in a state dict (rows of its weight), or None.

    Prefers the last 2-D weight whose name looks like a classifier (``fc.weight``,
    ``classifier.6.weight``, ``head.weight``, ``heads.head.weight``, ...); otherwise
    the last 2-D ``.weight``. "Last" follows ``order`` when given (the model's own
    ``state_dict()`` keys, to which the state dict's names are first aligned with
    :func:`align_prefixes`: safetensors files do not keep the order tensors were
    saved in), else the state dict's order.

    >>> import torchvision
    >>> infer_num_classes(torchvision.models.resnet18(num_classes=7).state_dict())
    7
    """
    if order is not None:
        order = list(order)
        state_dict = align_prefixes(state_dict, order)
        keys = [k for k in order if k in state_dict]
    else:
        keys = list(state_dict)
    two_d = [
        k for k in keys
        if str(k).endswith("weight") and isinstance(state_dict[k], torch.Tensor) and state_dict[k].ndim == 2
    ]
    named = [k for k in two_d if _CLASSIFIER_KEY.search(k)]
    pick = (named or two_d or [None])[-1]
    return int(state_dict[pick].shape[0]) if pick is not None else None
