"""Layer names: the model's own dotted module names, their aliases, and selectors.

Layer names are the model's own dotted module names (``layer3.1``,
``features.4``); Lucent-style underscored aliases (``layer3_1``) are accepted.
An element of a module whose output is a tuple, list or dict is named with a
selector: ``blocks.3.attn[0]`` or ``heads['logits']``. Which *call* of a module
a name means when the module runs several times is decided in
:mod:`devvis.hooks.calls` (its last call).

>>> import torchvision
>>> resolve_name(torchvision.models.resnet18(weights=None), "layer3_1_conv1")
'layer3.1.conv1'
>>> split_selector("blocks.3.attn[0]")
('blocks.3.attn', [0])
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence, Union

import torch
from torch import nn

from devvis.errors import LayerNotFoundError, LayoutError

#: Name under which the parameterized image (before transforms) is available to objectives.
INPUT = "input"

#: What a module may return: a tensor, or a (nested) tuple, list or dict holding tensors.
ModuleOutput = Union[torch.Tensor, Sequence["ModuleOutput"], Mapping[str, "ModuleOutput"], object]

_SELECTOR = re.compile(r"^(?P<base>[^\[]*)(?P<sel>(\[[^\]]+\])+)$")


def split_selector(name: str) -> tuple[str, list[int | str]]:
    """``'blocks.3.attn[0]'`` -> ``('blocks.3.attn', [0])``; ``"heads['x']"`` -> ``('heads', ['x'])``."""
    m = _SELECTOR.match(name)
    if not m:
        return name, []
    keys: list[int | str] = []
    for raw in re.findall(r"\[([^\]]+)\]", m.group("sel")):
        raw = raw.strip()
        if raw.lstrip("-").isdigit():
            keys.append(int(raw))
        else:
            keys.append(raw.strip("'\""))
    return m.group("base"), keys


def module_names(model: nn.Module) -> list[str]:
    """All named submodules of ``model`` (excluding the root), in registration order."""
    return [n for n, _ in model.named_modules() if n]


def resolve_name(model: nn.Module, name: str) -> str:
    """Return the canonical dotted name (with any selector kept) for ``name``.

    Accepts the model's own names, Lucent-style aliases with underscores for dots,
    and ``INPUT``. Raises :class:`~devvis.errors.LayerNotFoundError` with the
    closest valid names otherwise.

    >>> import torchvision
    >>> resolve_name(torchvision.models.resnet18(weights=None), "layer3_1_conv1")
    'layer3.1.conv1'
    """
    if name == INPUT:
        return name
    base, _ = split_selector(name)
    names = module_names(model)
    if base in names:
        return name
    aliases = {n.replace(".", "_"): n for n in names}
    if base in aliases:
        canonical = aliases[base]
        return canonical + name[len(base):]
    raise LayerNotFoundError(name, names)


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted or underscored; selectors ignored)."""
    base, _ = split_selector(resolve_name(model, name))
    return model.get_submodule(base)


def select_output(output: ModuleOutput, keys: Sequence[int | str], name: str) -> ModuleOutput:
    """The element of a module's ``output`` that the selector ``keys`` of layer ``name`` picks.

    Raises :class:`~devvis.errors.LayoutError` naming the valid keys when a key does not fit.

    >>> select_output((1, {"a": 2}), [1, "a"], "m[1]['a']")
    2
    """
    for k in keys:
        try:
            output = output[k]  # type: ignore[index]
        except (IndexError, KeyError, TypeError) as e:
            kind = type(output).__name__
            valid = list(output.keys()) if isinstance(output, Mapping) else (
                list(range(len(output))) if isinstance(output, (tuple, list)) else "none (not a container)")
            raise LayoutError(f"selector [{k!r}] in {name!r} does not fit the module's output ({kind}); "
                              f"valid: {valid}") from e
    return output


def first_tensor(output: ModuleOutput) -> torch.Tensor | None:
    """``output`` if it is a tensor, else the first element of a tuple/list output if that is one; else None."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None
