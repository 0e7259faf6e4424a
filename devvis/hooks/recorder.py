"""Recording the activations of named layers during a forward pass, with an early exit.

>>> import torch, torchvision
>>> model = torchvision.models.resnet18(weights=None).eval()
>>> with ActivationRecorder(model, ["layer2.1"]) as rec:
...     acts = rec.run(torch.rand(1, 3, 64, 64))
>>> tuple(acts["layer2.1"].shape)
(1, 128, 8, 8)
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from devvis.errors import LayerNotFoundError, LayoutError
from devvis.hooks.calls import CallPlan, StopForward, run_forward
from devvis.hooks.layouts import LAYOUTS, check_layout, declared_layout, infer_layout
from devvis.hooks.names import INPUT, ModuleOutput, first_tensor, resolve_name, select_output, split_selector


class Activations(Mapping[str, torch.Tensor]):
    """Recorded activations keyed by layer name, plus ``"input"`` (the image before transforms).

    Lookups accept the canonical dotted names and their underscored aliases.
    ``layouts[name]`` tells how to read each tensor (see :func:`infer_layout`).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], layouts: dict[str, str] | None = None):
        self._t = tensors
        self.layouts = dict(layouts or {})
        self._alias = {k.replace(".", "_"): k for k in tensors}

    def key(self, name: str) -> str:
        """The recorded name that ``name`` means (itself, or the dotted name of an underscore alias)."""
        if name in self._t:
            return name
        if name in self._alias:
            return self._alias[name]
        raise LayerNotFoundError(name, list(self._t))

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[self.key(name)]

    def layout(self, name: str) -> str:
        """Layout of the activation called ``name`` (``nchw``, ``nhwc``, ``tokens``, ``flat``)."""
        k = self.key(name)
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
    ``BasicBlock.relu`` is called twice) is recorded at its *last* call, the
    rule of :mod:`devvis.hooks.calls`. The first :meth:`run` therefore runs the
    whole model and counts the calls (:attr:`plan`, a
    :class:`~devvis.hooks.CallPlan`); later runs record only the meant call
    and stop right after the last needed one.

    ``names`` are dotted names, underscored aliases or names with a selector
    (``blocks.3.attn[0]``); ``"input"`` is ignored here (the caller adds it).
    ``layouts`` optionally fixes the layout of named layers. ``plan`` reuses the
    :class:`~devvis.hooks.CallPlan` of an earlier recorder on the same model and layers,
    so even the first run stops early.

    >>> import torch, torchvision
    >>> m = torchvision.models.resnet18(weights=None).eval()
    >>> with ActivationRecorder(m, ["layer1_0"]) as rec:
    ...     acts = rec.run(torch.rand(2, 3, 32, 32))
    >>> sorted(acts), tuple(acts["layer1.0"].shape)
    (['layer1.0'], (2, 64, 8, 8))
    """

    def __init__(self, model: nn.Module, names: Iterable[str], *, stop_early: bool = True,
                 layouts: Mapping[str, str] | None = None, detach: bool = False, plan: CallPlan | None = None):
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
        self._handles: list[RemovableHandle] = []
        self._store: dict[str, torch.Tensor] = {}
        self._layouts: dict[str, str] = {}
        self._calls: dict[str, int] = {}
        #: How often each hooked module runs per forward pass; learned by the first :meth:`run`
        #: unless given (``plan=``: another recorder's plan on the same model, to skip the counting pass).
        self.plan: CallPlan | None = plan
        self.stopped_early = False

    def _hook_for(self, base: str, module: nn.Module) -> Callable[[nn.Module, object, ModuleOutput], None]:
        wanted = self._by_module[base]
        declared = declared_layout(self.model, base)  # structural, so worked out once, not per forward

        def hook(_mod: nn.Module, _inp: object, output: ModuleOutput) -> None:
            call = self._calls[base] = self._calls.get(base, 0) + 1
            plan = self.plan
            if plan is not None and not plan.is_meant(base, call):
                return  # an earlier call than the one the name means
            # (without a plan yet, every call is recorded and the last one stays: the same rule)
            stopping = self.stop_early and plan is not None and plan.complete(self._calls)
            for name, keys in wanted:
                out = select_output(output, keys, name) if keys else output
                if not isinstance(out, torch.Tensor):
                    t = first_tensor(out)
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

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hooks this recorder installed (and only those)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def run(self, x: torch.Tensor, **extra: torch.Tensor) -> Activations:
        """Run the model on ``x`` (the model input, e.g. ``(B, 3, H, W)``) and return the recorded activations.

        ``extra`` tensors (e.g. ``input=image``) are added to the result as is.
        Raises :class:`~devvis.errors.LayoutError` if a requested layer never ran
        (or, on a later run, ran fewer times than on the first).
        """
        self._store = {}
        self._layouts = {}
        self._calls = {}
        self.stopped_early = False
        if self.names:
            if self.plan is None:  # first run: the whole model, counting how often each module runs
                self.stopped_early = run_forward(
                    self.model, x, tolerate=lambda: all(n in self._store for n in self.names))
                self.plan = CallPlan(dict(self._calls))
            else:
                self.stopped_early = run_forward(self.model, x)
        missing = [n for n in self.names if n not in self._store]
        if missing:
            counts = {n: (self._calls.get(split_selector(n)[0], 0), self.plan.runs(n) if self.plan else 0)
                      for n in missing}
            if any(expected for _, expected in counts.values()):
                detail = ", ".join(f"{n!r} ran {got} of {expected} times" for n, (got, expected) in counts.items())
                raise LayoutError(f"layers {missing} did not reach the call their names mean (the last of the first "
                                  f"run): {detail}; the model's control flow depends on its input")
            raise LayoutError(f"layers {missing} did not run during the forward pass (are they used by forward()?)")
        tensors = dict(self._store)
        layouts = dict(self._layouts)
        for k, v in extra.items():
            tensors[k] = v
            layouts[k] = "nchw" if v.dim() == 4 else infer_layout(None, v)
        return Activations(tensors, layouts)
