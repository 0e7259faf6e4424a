"""The single door for building a model by name: :func:`load_model`.

Names it accepts, tried in this order:

* ``"timm:NAME"`` when timm is installed (``pip install devvis[timm]``), never pretrained;
* ``"package.module:callable"`` for a user's own architecture;
* a registered name (:func:`~devvis.models.registry.register_model`), such as devvis's
  zoo models (``"compact_resnet"``);
* a torchvision name (``"resnet18"``), always built with ``weights=None``;
* ``None``: the name and keyword arguments stored with the checkpoint.

Every model it returns carries ``model.devvis_cfg = {"preprocess": ..., "input_size": ...}``:
a registered model's defaults, else ``"imagenet"`` preprocessing and the fixed input size
the architecture requires (:func:`devvis.architectures.fixed_input_size`).

>>> net = load_model("resnet18", num_classes=7)
>>> net.fc.out_features, net.devvis_cfg
(7, {'preprocess': 'imagenet', 'input_size': None})
>>> load_model("compact_resnet", width=4).devvis_cfg["preprocess"]
'none'
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from devvis.architectures import fixed_input_size
from devvis.errors import ConfigError, DevvisError, ModelNotFoundError, closest
from devvis.models.checkpoints import MODEL_CONFIG_FILE, MODEL_CONFIG_KEY, read_checkpoint
from devvis.models.registry import CFG_ATTRIBUTE, ModelDefaults, attach_defaults, is_registered, model_entry
from devvis.models.registry import list_models as registered_models
from devvis.models.state_dict import apply_state_dict, infer_num_classes
from devvis.state import as_device
from devvis.typing import DeviceLike, PathLike

__all__ = ["list_models", "load_model"]

Build = Callable[..., nn.Module]


def _register_builtin_models() -> None:
    """Register devvis's own models (the zoo registers itself on import)."""
    import devvis.zoo  # noqa: F401  (imported for its registrations)


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered model names (devvis's zoo and the user's registrations).

    ``pattern`` keeps the names containing it (case-insensitive). torchvision names
    (``torchvision.models.list_models()``) and ``timm:`` names are accepted by
    :func:`load_model` too but not listed here.

    >>> "compact_resnet" in list_models()
    True
    """
    _register_builtin_models()
    return registered_models(pattern)


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _timm_builder(name: str, kw: Mapping[str, Any]) -> tuple[Build, bool]:
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


def _callable_builder(spec: str) -> tuple[Build, bool]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelNotFoundError(f"model {spec!r} is not of the form 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)  # the user's module, named by the user
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


def _builder(name: str, kw: Mapping[str, Any]) -> tuple[Build, bool]:
    """Constructor for ``name`` and whether an inferred ``num_classes`` may be passed to it."""
    if name.startswith("timm:"):
        return _timm_builder(name[len("timm:"):], kw)
    if ":" in name:
        return _callable_builder(name)
    _register_builtin_models()
    if is_registered(name):
        build = model_entry(name).builder
        return build, _accepts(build, "num_classes")
    tv_all, tv_classifiers = _torchvision_names()
    if name.lower() in tv_all:
        if kw.get("weights") is not None:
            raise ConfigError("devvis never downloads weights: drop weights= and pass checkpoint=<file> instead")
        import torchvision

        def build_tv(**kwargs: Any) -> nn.Module:
            kwargs.pop("weights", None)
            return torchvision.models.get_model(name.lower(), weights=None, **kwargs)

        # Only classification models: detection heads' last 2-D weight is not a class count.
        return build_tv, name.lower() in tv_classifiers
    registered = registered_models()
    close = closest(name, list(tv_all) + registered)
    hint = f"closest: {', '.join(close)}" if close else "see torchvision.models.list_models()"
    raise ModelNotFoundError(
        f"unknown model {name!r}; {hint}. Also accepted: a registered name ({', '.join(registered)}), "
        "'timm:NAME' (pip install devvis[timm]) and 'package.module:callable'"
    )


def _reference_keys(build: Build, kw: Mapping[str, Any]) -> list[str] | None:
    """The state-dict key order of the model ``build(**kw)`` makes, built on the meta device (no memory)."""
    try:
        with torch.device("meta"):
            ref = build(**kw)
        return list(ref.state_dict()) if isinstance(ref, nn.Module) else None
    except Exception:  # some constructors cannot run on meta tensors; fall back to file order
        return None


def _infer_for(build: Build, kw: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> int | None:
    order = _reference_keys(build, kw)
    if order:
        inferred = infer_num_classes(state_dict, order=order)
        if inferred is not None:
            return inferred
    return infer_num_classes(state_dict)


def load_model(
    name: str | None,
    checkpoint: PathLike | None = None,
    num_classes: int | None = None,
    *,
    trust: bool = False,
    strict: bool = True,
    device: DeviceLike = None,
    weights: str = "model",
    **kw: Any,
) -> nn.Module:
    """Build a model by name, optionally load a checkpoint into it, and return it in eval mode.

    ``name`` is ``"timm:NAME"`` (needs ``pip install devvis[timm]``),
    ``"package.module:callable"`` (called with ``**kw``), a registered name
    (``"compact_resnet"``, see :func:`list_models`), a torchvision name
    (``"resnet18"``, never downloading weights), or None: rebuilt from the
    checkpoint's model config (see :func:`~devvis.models.read_model_config`), whose
    stored keyword arguments also apply when the same name is given. Extra ``kw``
    go to the constructor and win over stored ones.

    When ``num_classes`` is not given and a checkpoint is, it is inferred from
    the checkpoint's classifier (:func:`~devvis.models.infer_num_classes`) and passed to the
    constructor (only for constructors that take ``num_classes``).

    The model takes ``(B, 3, H, W)`` images prepared as ``model.devvis_cfg["preprocess"]``
    says (``"imagenet"``: normalized; ``"none"``: raw values in [0, 1]); devvis's render
    and analyses apply it with ``preprocess="auto"``.

    Args:
        checkpoint: any file :func:`~devvis.models.load_checkpoint` reads.
        num_classes: the classifier's size (default: inferred, else the constructor's default).
        trust: allow arbitrary unpickling (only for files you trust).
        strict: require every key to match (see :func:`~devvis.models.apply_state_dict`).
        device: where the model goes (default CPU).
        weights: which model of a checkpoint holding several: ``"model"``, ``"ema"`` or an entry's
            name (see :func:`~devvis.models.load_checkpoint`).

    Raises:
        ModelNotFoundError: unknown name (the message lists the closest names).
        ConfigError: the constructor rejects ``kw``, or an invalid ``device``.
        CheckpointError / UnsafeCheckpointError: see :func:`~devvis.models.load_checkpoint`.

    >>> net = load_model("resnet18", num_classes=10)
    >>> net.fc.out_features, net.training
    (10, False)
    """
    if checkpoint is None and weights not in ("model", "ema"):  # torchvision's weights="DEFAULT" habit
        raise ConfigError(f"devvis never downloads weights: drop weights={weights!r} and pass checkpoint=<file> "
                          "instead (weights= picks the model inside a checkpoint: 'model', 'ema' or an entry's name)")
    dev = as_device(device) or torch.device("cpu")  # checked before any work
    ckpt = (read_checkpoint(checkpoint, trust=trust, map_location="cpu", weights=weights)
            if checkpoint is not None else None)
    config = ckpt.model_config() if ckpt is not None else None
    if name is None:
        if config is None:
            where = (f" and {str(checkpoint)!r} has no {MODEL_CONFIG_KEY!r} metadata or {MODEL_CONFIG_FILE} "
                     "beside it") if ckpt is not None else ""
            raise ModelNotFoundError(f"no model name given{where}; pass a name such as 'resnet18'")
        name = config["name"]
    if config is not None and config["name"] == name:
        kw = {**config["kwargs"], **kw}  # explicit keyword arguments win over the stored ones

    build, takes_num_classes = _builder(name, kw)
    if num_classes is not None:
        kw["num_classes"] = int(num_classes)
    elif ckpt is not None and takes_num_classes and "num_classes" not in kw:
        inferred = _infer_for(build, kw, ckpt.state_dict)
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
    if not isinstance(getattr(model, CFG_ATTRIBUTE, None), dict):
        # Not registered (torchvision, timm, a user's callable): trained on ImageNet-normalized input.
        attach_defaults(model, ModelDefaults(preprocess="imagenet", input_size=fixed_input_size(model)))
    if ckpt is not None:
        apply_state_dict(model, ckpt.state_dict, path=Path(ckpt.path), strict=strict, name=name)
    return model.to(dev).eval()
