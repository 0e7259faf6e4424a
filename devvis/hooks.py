"""Module lookup by name, activation recording, and early exit of the forward pass.

Layer names are the model's own dotted module names (``layer3.1``,
``features.4``); Lucent-style underscored aliases (``layer3_1``) are accepted.
An element of a module whose output is a tuple, list or dict is named with a
selector: ``blocks.3.attn[0]`` or ``heads['logits']``.

>>> import torch, torchvision
>>> model = torchvision.models.resnet18(weights=None).eval()
>>> with ActivationRecorder(model, ["layer2.1"]) as rec:
...     acts = rec.run(torch.rand(1, 3, 64, 64))
>>> tuple(acts["layer2.1"].shape)
(1, 128, 8, 8)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from devvis.errors import LayerNotFoundError, LayoutError

#: Name under which the parameterized image (before transforms) is available to objectives.
INPUT = "input"

_SELECTOR = re.compile(r"^(?P<base>[^\[]*)(?P<sel>(\[[^\]]+\])+)$")


class StopForward(Exception):
    """Raised inside a hook to end the forward pass once every needed activation is recorded."""


def _split_selector(name: str) -> tuple[str, list[int | str]]:
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
    base, keys = _split_selector(name)
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
    base, _ = _split_selector(resolve_name(model, name))
    return model.get_submodule(base)


def _select(output: Any, keys: Sequence[int | str], name: str) -> Any:
    for k in keys:
        try:
            output = output[k]
        except (IndexError, KeyError, TypeError) as e:
            kind = type(output).__name__
            valid = list(output.keys()) if isinstance(output, Mapping) else (
                list(range(len(output))) if isinstance(output, (tuple, list)) else "none (not a container)")
            raise LayoutError(f"selector [{k!r}] in {name!r} does not fit the module's output ({kind}); valid: {valid}") from e
    return output


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def infer_layout(module: nn.Module | None, t: torch.Tensor) -> str:
    """Guess the layout of activation ``t`` produced by ``module``.

    Returns ``"nchw"`` for 4-D conv maps, ``"nhwc"`` for 4-D channels-last maps of
    known channels-last blocks (Swin, ConvNeXt's permuted blocks), ``"tokens"``
    for ``[B, T, D]`` and ``"flat"`` for ``[B, D]``.
    """
    if t.dim() == 2:
        return "flat"
    if t.dim() == 3:
        return "tokens"
    if t.dim() == 4:
        if module is not None and _is_channels_last_module(module, t):
            return "nhwc"
        return "nchw"
    return f"{t.dim()}d"


def _is_channels_last_module(module: nn.Module, t: torch.Tensor) -> bool:
    # Blocks that produce [B, H, W, C]: torchvision's Swin (blocks, PatchMerging,
    # Permute), and LayerNorm/Linear applied to channels-last maps (their feature
    # size equals the last dimension).
    kind = type(module).__name__
    if kind in {"SwinTransformerBlock", "SwinTransformerBlockV2", "PatchMerging", "PatchMergingV2", "ShiftedWindowAttention", "ShiftedWindowAttentionV2"}:
        return True
    if isinstance(module, nn.LayerNorm):
        return t.shape[-1] == module.normalized_shape[-1] and t.shape[1] != module.normalized_shape[-1]
    if isinstance(module, nn.Linear):
        return t.shape[-1] == module.out_features
    if kind == "Permute":
        dims = list(getattr(module, "dims", []))
        return dims == [0, 2, 3, 1]
    if isinstance(module, nn.Sequential) and len(module) > 0:
        # A stage of Swin blocks, or a sequence ending in a channels-last block
        return _is_channels_last_module(list(module.children())[-1], t)
    return False


class Activations(Mapping[str, torch.Tensor]):
    """Recorded activations keyed by layer name, plus ``"input"`` (the image before transforms).

    Lookups accept the canonical dotted names and their underscored aliases.
    ``layouts[name]`` tells how to read each tensor (see :func:`infer_layout`).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], layouts: dict[str, str] | None = None):
        self._t = tensors
        self.layouts = dict(layouts or {})
        self._alias = {k.replace(".", "_"): k for k in tensors}

    def _key(self, name: str) -> str:
        if name in self._t:
            return name
        if name in self._alias:
            return self._alias[name]
        raise LayerNotFoundError(name, list(self._t))

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[self._key(name)]

    def layout(self, name: str) -> str:
        """Layout of the activation called ``name`` (``nchw``, ``nhwc``, ``tokens``, ``flat``)."""
        k = self._key(name)
        return self.layouts.get(k) or infer_layout(None, self._t[k])

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    def __repr__(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in self._t.items()}
        return f"Activations({shapes})"


class ActivationRecorder:
    """Context manager recording the outputs of the named modules.

    Hooks only the modules asked for, removes exactly the hooks it installed on
    exit (also when an exception escapes), and with ``stop_early=True`` ends the
    forward pass as soon as the last requested activation is recorded, so the
    layers after it never run.

    ``names`` are dotted names, underscored aliases or names with a selector
    (``blocks.3.attn[0]``); ``"input"`` is ignored here (the caller adds it).
    ``layouts`` optionally fixes the layout of named layers.

    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None).eval()
    >>> with ActivationRecorder(m, ["layer1_0"]) as rec:
    ...     acts = rec.run(torch.rand(2, 3, 32, 32))
    >>> sorted(acts), tuple(acts["layer1.0"].shape)
    (['layer1.0'], (2, 64, 8, 8))
    """

    def __init__(self, model: nn.Module, names: Iterable[str], *, stop_early: bool = True,
                 layouts: Mapping[str, str] | None = None, detach: bool = False):
        self.model = model
        self.names = [resolve_name(model, n) for n in dict.fromkeys(names) if n != INPUT]
        self.stop_early = stop_early
        self.detach = detach
        self._given_layouts = {resolve_name(model, k): v for k, v in (layouts or {}).items()}
        self._by_module: dict[str, list[tuple[str, list[int | str]]]] = {}
        for n in self.names:
            base, keys = _split_selector(n)
            self._by_module.setdefault(base, []).append((n, keys))
        self._handles: list[Any] = []
        self._store: dict[str, torch.Tensor] = {}
        self._layouts: dict[str, str] = {}
        self.stopped_early = False

    def _hook_for(self, base: str, module: nn.Module):
        wanted = self._by_module[base]

        def hook(_mod: nn.Module, _inp: Any, output: Any) -> None:
            for name, keys in wanted:
                out = _select(output, keys, name) if keys else output
                if not isinstance(out, torch.Tensor):
                    t = _first_tensor(out)
                    if t is None:
                        raise LayoutError(
                            f"layer {name!r} returns {type(out).__name__}, not a tensor; "
                            f"name an element with a selector such as '{name}[0]'")
                    out = t
                self._store[name] = out.detach() if self.detach else out
                self._layouts[name] = self._given_layouts.get(name) or infer_layout(module, out)
            if self.stop_early and len(self._store) == len(self.names):
                raise StopForward

        return hook

    def __enter__(self) -> "ActivationRecorder":
        try:
            for base in self._by_module:
                module = self.model.get_submodule(base)
                self._handles.append(module.register_forward_hook(self._hook_for(base, module)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hooks this recorder installed (and only those)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def run(self, x: torch.Tensor, **extra: torch.Tensor) -> Activations:
        """Run the model on ``x`` and return the recorded activations.

        ``extra`` tensors (e.g. ``input=image``) are added to the result as is.
        Raises :class:`~devvis.errors.LayoutError` if a requested layer never ran.
        """
        self._store = {}
        self._layouts = {}
        self.stopped_early = False
        if self.names:
            try:
                self.model(x)
            except StopForward:
                self.stopped_early = True
        missing = [n for n in self.names if n not in self._store]
        if missing:
            raise LayoutError(f"layers {missing} did not run during the forward pass (are they used by forward()?)")
        tensors = dict(self._store)
        layouts = dict(self._layouts)
        for k, v in extra.items():
            tensors[k] = v
            layouts[k] = "nchw" if v.dim() == 4 else infer_layout(None, v)
        return Activations(tensors, layouts)


@dataclass(frozen=True)
class LayerInfo:
    """One row of :func:`list_layers`: name, module type, output shape (or None) and channel count."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None = None
    channels: int | None = None
    layout: str | None = None


def _channels(shape: tuple[int, ...], layout: str) -> int | None:
    if layout in ("nchw",):
        return shape[1]
    if layout in ("nhwc", "tokens", "flat"):
        return shape[-1]
    return None


def list_layers(model: nn.Module, input_shape: Sequence[int] | None = None, *,
                device: torch.device | str | None = None) -> list[LayerInfo]:
    """List every named submodule: name, type and, with ``input_shape``, output shape and channels.

    ``input_shape`` is the model input, e.g. ``(1, 3, 224, 224)`` (a 3-tuple gets a batch of 1).

    >>> import torchvision
    >>> rows = list_layers(torchvision.models.resnet18(weights=None), (3, 64, 64))
    >>> [(r.name, r.output_shape) for r in rows if r.name == "layer4"]
    [('layer4', (1, 512, 2, 2))]
    """
    infos: dict[str, LayerInfo] = {}
    modules = [(n, m) for n, m in model.named_modules() if n]
    if input_shape is None:
        return [LayerInfo(n, type(m).__name__) for n, m in modules]
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else "cpu"
    outputs: dict[str, tuple[tuple[int, ...], str]] = {}
    handles = []

    def make(name: str, mod: nn.Module):
        def hook(_m, _i, out):
            t = _first_tensor(out)
            if t is not None and name not in outputs:
                outputs[name] = (tuple(t.shape), infer_layout(mod, t))
        return hook

    was_training = model.training
    try:
        for n, m in modules:
            handles.append(m.register_forward_hook(make(n, m)))
        model.eval()
        with torch.no_grad():
            model(torch.zeros(shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for n, m in modules:
        if n in outputs:
            s, lay = outputs[n]
            infos[n] = LayerInfo(n, type(m).__name__, s, _channels(s, lay), lay)
        else:
            infos[n] = LayerInfo(n, type(m).__name__)
    return list(infos.values())
