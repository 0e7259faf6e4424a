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

from devvis.architectures import input_errors
from devvis.errors import LayerNotFoundError, LayoutError

#: Name under which the parameterized image (before transforms) is available to objectives.
INPUT = "input"

_SELECTOR = re.compile(r"^(?P<base>[^\[]*)(?P<sel>(\[[^\]]+\])+)$")


class StopForward(Exception):
    """Raised inside a hook to end the forward pass once every needed activation is recorded."""


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
    base, keys = split_selector(name)
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


#: Layouts an activation can have; see :func:`infer_layout`.
LAYOUTS: tuple[str, ...] = ("nchw", "nhwc", "tokens", "flat")

#: Blocks known to produce channels-last ``[B, H, W, C]`` maps (torchvision's Swin and timm's).
_CHANNELS_LAST_TYPES = frozenset({
    "SwinTransformerBlock", "SwinTransformerBlockV2", "PatchMerging", "PatchMergingV2",
    "ShiftedWindowAttention", "ShiftedWindowAttentionV2", "SwinTransformerStage", "WindowAttention",
})

#: Layers whose 4-D output is channels-first by construction.
_CHANNELS_FIRST_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm, nn.LocalResponseNorm, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample, nn.PixelShuffle,
)


@dataclass(frozen=True)
class _Declared:
    """A layout a module's 4-D output has by construction, and its channel count when known."""

    layout: str
    channels: int | None = None

    def fits(self, t: torch.Tensor) -> bool:
        if self.channels is None:
            return True
        return t.shape[1 if self.layout == "nchw" else -1] == self.channels


def _declared_layout(module: nn.Module) -> _Declared | None:
    """The layout a module's 4-D output has by construction; None when it passes its input's through.

    Elementwise leaves (activations, dropout, stochastic depth, identity) return None:
    their layout is that of their input. A container answers with its last child that
    declares one (the child that produces the output in sequential blocks).
    """
    kind = type(module).__name__
    if kind in _CHANNELS_LAST_TYPES:
        return _Declared("nhwc")
    if kind == "Permute":  # torchvision.ops.Permute, as used by ConvNeXt and Swin
        dims = [int(d) for d in getattr(module, "dims", [])]
        return {(0, 2, 3, 1): _Declared("nhwc"), (0, 3, 1, 2): _Declared("nchw")}.get(tuple(dims))
    if kind == "LayerNorm2d":  # a LayerNorm subclass that normalizes channels of NCHW maps
        return _Declared("nchw", int(module.normalized_shape[-1])) if hasattr(module, "normalized_shape") else _Declared("nchw")
    if isinstance(module, _CHANNELS_FIRST_TYPES):
        c = getattr(module, "out_channels", None) or getattr(module, "num_features", None) or getattr(module, "num_channels", None)
        return _Declared("nchw", int(c) if isinstance(c, int) else None)
    if isinstance(module, nn.LayerNorm):  # normalizes the last dimension: channels-last on 4-D maps
        return _Declared("nhwc", int(module.normalized_shape[-1]))
    if isinstance(module, nn.Linear):  # acts on the last dimension: channels-last on 4-D maps
        return _Declared("nhwc", int(module.out_features))
    for child in reversed(list(module.children())):
        found = _declared_layout(child)
        if found is not None:
            return found
    return None


def _context_layout(model: nn.Module, name: str) -> _Declared | None:
    """Layout of the input of module ``name``: what the nearest earlier sibling (or an ancestor's) declares."""
    while name:
        parent_name, _, own = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        siblings = [n for n, _ in parent.named_children()]
        if own in siblings:
            for sib in reversed(siblings[:siblings.index(own)]):
                found = _declared_layout(getattr(parent, sib))
                if found is not None:
                    return found
        name = parent_name
    return None


def declared_layout(model: nn.Module, name: str) -> _Declared | None:
    """What the model's structure says about the layout of a 4-D output of ``name`` (None: nothing)."""
    base, _ = split_selector(name)
    module = model.get_submodule(base)
    found = _declared_layout(module)
    if found is None and not list(module.children()):
        found = _context_layout(model, base)
    return found


def infer_layout(module: nn.Module | None, t: torch.Tensor, *, model: nn.Module | None = None,
                 name: str | None = None, declared: Any = None) -> str:
    """Guess the layout of activation ``t`` produced by ``module``.

    Returns ``"flat"`` for ``[B, D]``, ``"tokens"`` for ``[B, T, D]`` (ViT blocks),
    and for 4-D maps ``"nhwc"`` (channels-last: Swin blocks, ``Permute([0, 2, 3, 1])``,
    ``nn.LayerNorm`` / ``nn.Linear`` applied to ``[B, H, W, C]`` maps, and elementwise
    layers such as GELU or dropout that follow them) or ``"nchw"`` otherwise. With
    ``model`` and ``name``, an elementwise layer takes the layout of the nearest
    earlier sibling that declares one. A declared layout whose channel count does
    not match ``t`` is ignored (e.g. timm's ConvNeXt block, which permutes back to
    NCHW in ``forward``). State a layout explicitly where this guesses wrong
    (``render(..., layouts={name: "nhwc"})`` or ``objectives.channel(..., layout=)``).

    >>> import torch, torchvision
    >>> swin = torchvision.models.swin_t(weights=None)
    >>> infer_layout(swin.features[1][0], torch.zeros(1, 8, 8, 96))
    'nhwc'
    >>> infer_layout(None, torch.zeros(1, 197, 768))
    'tokens'
    """
    if t.dim() == 2:
        return "flat"
    if t.dim() == 3:
        return "tokens"
    if t.dim() == 4:
        found = declared
        if found is None and model is not None and name:
            found = declared_layout(model, name)
        elif found is None and module is not None:
            found = _declared_layout(module)
        if found is not None and found.fits(t):
            return found.layout
        return "nchw"
    return f"{t.dim()}d"


def check_layout(layout: str, t: torch.Tensor, name: str) -> None:
    """Raise :class:`~devvis.errors.LayoutError` unless ``layout`` is valid and fits ``t``'s rank."""
    rank = {"nchw": 4, "nhwc": 4, "tokens": 3, "flat": 2}
    if layout not in rank:
        raise LayoutError(f"layout {layout!r} for layer {name!r} is not valid; choose one of {LAYOUTS}")
    if t.dim() != rank[layout]:
        raise LayoutError(f"layout {layout!r} was stated for layer {name!r}, but its activation has shape "
                          f"{tuple(t.shape)} ({t.dim()}-D; {layout} needs {rank[layout]}-D)")


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

    A module that runs several times in one forward pass (torchvision's
    ``BasicBlock.relu`` is called twice) is recorded at its *last* call, as a
    plain forward hook would see it. The first :meth:`run` therefore runs the
    whole model and counts the calls; later runs stop right after the last
    needed call.

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
        for k, v in self._given_layouts.items():
            if v not in LAYOUTS:
                raise LayoutError(f"layout {v!r} given for layer {k!r} is not valid; choose one of {LAYOUTS}")
        self._by_module: dict[str, list[tuple[str, list[int | str]]]] = {}
        for n in self.names:
            base, keys = split_selector(n)
            self._by_module.setdefault(base, []).append((n, keys))
        self._handles: list[Any] = []
        self._store: dict[str, torch.Tensor] = {}
        self._layouts: dict[str, str] = {}
        self._calls: dict[str, int] = {}
        self._expected_calls: dict[str, int] | None = None
        self.stopped_early = False

    def _done(self) -> bool:
        exp = self._expected_calls
        return exp is not None and all(self._calls.get(b, 0) >= n for b, n in exp.items())

    def _hook_for(self, base: str, module: nn.Module):
        wanted = self._by_module[base]
        declared = declared_layout(self.model, base)  # structural, so worked out once, not per forward

        def hook(_mod: nn.Module, _inp: Any, output: Any) -> None:
            self._calls[base] = self._calls.get(base, 0) + 1
            stopping = self.stop_early and self._done()
            for name, keys in wanted:
                out = _select(output, keys, name) if keys else output
                if not isinstance(out, torch.Tensor):
                    t = _first_tensor(out)
                    if t is None:
                        raise LayoutError(
                            f"layer {name!r} returns {type(out).__name__}, not a tensor; "
                            f"name an element with a selector such as '{name}[0]'")
                    out = t
                if self.detach:
                    out = out.detach()
                if not stopping:
                    # the forward goes on, and a later in-place op (ResNet's ReLU(inplace=True) after a
                    # BatchNorm, Inception's F.relu(x, inplace=True)) would overwrite what was recorded
                    out = out.clone()
                self._store[name] = out
                given = self._given_layouts.get(name)
                if given is not None:
                    check_layout(given, out, name)
                self._layouts[name] = given or infer_layout(module, out, declared=declared)
            if stopping:
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
        self._calls = {}
        self.stopped_early = False
        if self.names:
            try:
                self.model(x)
            except StopForward:
                self.stopped_early = True
            except Exception:
                # The first run goes through the whole model to count calls. A failure after every
                # needed layer was recorded (an input too small for later layers, which an early
                # exit never reaches: shallow layers of Inception at 32 px) ends the count there.
                if self._expected_calls is not None or any(n not in self._store for n in self.names):
                    raise
                self.stopped_early = True
            if self._expected_calls is None:  # first run: learn how often each module runs
                self._expected_calls = dict(self._calls)
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
            if t is not None:  # the last call wins, as in ActivationRecorder
                outputs[name] = (tuple(t.shape), infer_layout(mod, t, model=model, name=name))
        return hook

    was_training = model.training
    try:
        for n, m in modules:
            handles.append(m.register_forward_hook(make(n, m)))
        model.eval()
        x = torch.zeros(shape, device=device)
        with torch.no_grad(), input_errors(model, x):
            model(x)
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
