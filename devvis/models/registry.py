"""The model registry: names -> builders, each with its defaults (timm style).

A model file registers its builders with :func:`register_model`; the registry
never imports model files (devvis's own zoo registers itself when
:func:`devvis.models.load_model` or :func:`devvis.models.list_models` first needs it).

Each entry carries :class:`ModelDefaults`. Every model a registered builder
returns carries them as a plain dict attribute ``model.devvis_cfg``
(``{"preprocess": ..., "input_size": ...}``), which is what
:func:`devvis.render.pipeline.resolve_preprocess` reads for ``preprocess="auto"``
and :func:`devvis.architectures.fixed_input_size` reads for the input size.

>>> import torch
>>> from torch import nn
>>> @register_model("doc_tiny_net", preprocess="none")
... def doc_tiny_net(num_classes: int = 4) -> nn.Module:
...     return nn.Sequential(nn.Flatten(), nn.Linear(12, num_classes))
>>> doc_tiny_net().devvis_cfg
{'preprocess': 'none', 'input_size': None}
>>> "doc_tiny_net" in list_models()
True
>>> unregister_model("doc_tiny_net")
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from torch import nn

from devvis.errors import ConfigError, ModelNotFoundError, closest

__all__ = [
    "CFG_ATTRIBUTE",
    "PREPROCESS_DEFAULTS",
    "ModelDefaults",
    "ModelEntry",
    "attach_defaults",
    "is_registered",
    "list_models",
    "model_entry",
    "register_model",
    "unregister_model",
]

#: The attribute of a model that holds its defaults as a plain dict.
CFG_ATTRIBUTE = "devvis_cfg"

#: What a registration may say about preprocessing: ``"imagenet"`` (ImageNet mean/std
#: normalisation, what torchvision and timm models are trained with) or ``"none"`` (the model
#: takes raw images in [0, 1], as devvis's zoo models do).
PREPROCESS_DEFAULTS: tuple[str, ...] = ("imagenet", "none")

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


def _as_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"input_size must be None, a positive int or a pair (h, w) of them; got {value!r}")


@dataclass(frozen=True)
class ModelDefaults:
    """What devvis needs to know about a model to feed it images.

    Attributes:
        preprocess: one of :data:`PREPROCESS_DEFAULTS`: how ``(B, 3, H, W)`` images in [0, 1]
            are turned into the model's input when ``preprocess="auto"``.
        input_size: ``(h, w)`` the model requires (every render resizes to it), or None when
            it accepts any size. An int ``n`` means ``(n, n)``.

    >>> ModelDefaults(preprocess="none", input_size=32).as_cfg()
    {'preprocess': 'none', 'input_size': (32, 32)}
    """

    preprocess: str = "imagenet"
    input_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS_DEFAULTS:
            raise ConfigError(f"unknown default preprocess {self.preprocess!r}; valid: "
                              f"{', '.join(map(repr, PREPROCESS_DEFAULTS))}")
        object.__setattr__(self, "input_size", _as_size(self.input_size))

    def as_cfg(self) -> dict[str, Any]:
        """The plain dict stored as ``model.devvis_cfg``."""
        return {"preprocess": self.preprocess, "input_size": self.input_size}


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its name, its builder (keyword arguments -> ``nn.Module``), its defaults."""

    name: str
    builder: Callable[..., nn.Module]
    defaults: ModelDefaults


_REGISTRY: dict[str, ModelEntry] = {}


def attach_defaults(model: nn.Module, defaults: ModelDefaults) -> nn.Module:
    """Store ``defaults`` on ``model`` as the dict ``model.devvis_cfg`` (a fresh copy); returns ``model``.

    >>> from torch import nn
    >>> attach_defaults(nn.Identity(), ModelDefaults()).devvis_cfg["preprocess"]
    'imagenet'
    """
    setattr(model, CFG_ATTRIBUTE, defaults.as_cfg())
    return model


def register_model(
    name: str, *, preprocess: str = "imagenet", input_size: int | tuple[int, int] | None = None
) -> Callable[[Builder], Builder]:
    """Decorator: register a builder under ``name`` with its defaults.

    The builder takes keyword arguments (``num_classes=`` when it has a classifier) and
    returns an ``nn.Module``. The decorator returns a wrapper with the same signature
    that also sets ``model.devvis_cfg`` on every model it builds, so a model carries
    its defaults whether it comes from :func:`devvis.models.load_model` or from a
    direct call.

    Args:
        name: the name :func:`devvis.models.load_model` accepts; must be new.
        preprocess: see :class:`ModelDefaults`.
        input_size: see :class:`ModelDefaults`.

    Raises:
        ConfigError: ``name`` is already registered (unregister it first with
            :func:`unregister_model`), is not a plain name, or a default is invalid.

    >>> from torch import nn
    >>> @register_model("doc_net_32", preprocess="none", input_size=32)
    ... def doc_net_32() -> nn.Module:
    ...     return nn.Identity()
    >>> model_entry("doc_net_32").defaults.input_size
    (32, 32)
    >>> unregister_model("doc_net_32")
    """
    if not isinstance(name, str) or not name or ":" in name or name != name.strip():
        raise ConfigError(f"a registered model name must be a non-empty string without ':' or spaces "
                          f"around it; got {name!r}")
    defaults = ModelDefaults(preprocess=preprocess, input_size=input_size)

    def decorate(builder: Builder) -> Builder:
        if not callable(builder):
            raise ConfigError(f"register_model({name!r}) decorates a callable that builds a model; "
                              f"got a {type(builder).__name__}")
        if name in _REGISTRY:
            old = _REGISTRY[name].builder
            raise ConfigError(f"model name {name!r} is already registered (by {old.__module__}."
                              f"{old.__qualname__}); choose another name or call "
                              f"devvis.models.unregister_model({name!r}) first")

        @functools.wraps(builder)
        def build(*args: Any, **kwargs: Any) -> nn.Module:
            model = builder(*args, **kwargs)
            if isinstance(model, nn.Module):
                attach_defaults(model, defaults)
            return model

        _REGISTRY[name] = ModelEntry(name, build, defaults)
        return build  # type: ignore[return-value]

    return decorate


def unregister_model(name: str) -> None:
    """Remove ``name`` from the registry (e.g. to register it again after editing a notebook cell).

    Raises:
        ModelNotFoundError: ``name`` is not registered (the message lists close names).
    """
    model_entry(name)
    del _REGISTRY[name]


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered model name."""
    return name in _REGISTRY


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the models registered so far, optionally those containing ``pattern``.

    This lists what has been registered; :func:`devvis.models.list_models` also makes
    sure devvis's own zoo is registered first.

    >>> isinstance(list_models(), list)
    True
    """
    return sorted(n for n in _REGISTRY if pattern is None or pattern.lower() in n.lower())


def model_entry(name: str) -> ModelEntry:
    """The registered entry for ``name``.

    Raises:
        ModelNotFoundError: not registered; the message names the closest registered names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        close = closest(name, _REGISTRY)
        hint = f"closest: {', '.join(close)}" if close else f"registered: {', '.join(list_models()) or 'none'}"
        raise ModelNotFoundError(f"no registered model {name!r}; {hint}") from None
