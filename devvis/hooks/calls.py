"""Which call of a module a layer name means, and the forward pass that counts the calls.

The rule, decided here and nowhere else: **a layer name whose module runs
several times in one forward pass means the module's last call** in that pass,
which is what a plain forward hook holds once the pass is over. torchvision's
``BasicBlock.relu`` runs twice (after ``bn1``, and after the residual add), so
``layer1.0.relu`` is the block's output, the same tensor as ``layer1.0``.

:class:`~devvis.hooks.ActivationRecorder` (behind ``render`` and
``objectives.evaluate``), :func:`~devvis.hooks.list_layers` and the circuits
(``expanded_weights``, ``channel_influence``) all ask a :class:`CallPlan` which
call to use. Where an analysis cannot use the last call (a circuit whose target
runs before the source's last call), it raises an error that says how many
times the layer ran and what to name instead.

>>> import torch, torchvision
>>> m = torchvision.models.resnet18(weights=None).eval()
>>> plan = count_calls(m, ["layer1.0.relu", "layer1.0.conv1"], torch.rand(1, 3, 32, 32))
>>> plan.runs("layer1.0.relu"), plan.meant_call("layer1.0.relu"), plan.meant_call("layer1.0.conv1")
(2, 2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from devvis.errors import LayoutError
from devvis.hooks.names import INPUT, resolve_name, split_selector


class StopForward(Exception):
    """Raised inside a hook to end the forward pass once every needed activation is recorded."""


@dataclass(frozen=True)
class CallPlan:
    """How many times each module runs in one forward pass, and so which call a layer name means.

    ``counts``: module name (no selector) -> calls in one forward pass. Names
    given to the methods may carry a selector (``blocks.3.attn[0]``); the call
    count is that of the module.
    """

    counts: Mapping[str, int] = field(default_factory=dict)

    def runs(self, name: str) -> int:
        """How many times the module of ``name`` ran in one forward pass (0: never, or not counted)."""
        return int(self.counts.get(split_selector(name)[0], 0))

    def meant_call(self, name: str) -> int:
        """The call (1-based) that ``name`` means: the module's last one.

        Raises :class:`~devvis.errors.LayoutError` if the module never ran.
        """
        n = self.runs(name)
        if n < 1:
            raise LayoutError(f"layer {name!r} did not run during the forward pass (is it used by forward()?)")
        return n

    def is_meant(self, name: str, call: int) -> bool:
        """Whether call number ``call`` (1-based) of the module of ``name`` is the one ``name`` means."""
        return call == self.meant_call(name)

    def complete(self, calls: Mapping[str, int]) -> bool:
        """Whether ``calls`` (module -> calls so far in this pass) has reached every module's meant call."""
        return all(calls.get(base, 0) >= n for base, n in self.counts.items())

    def describe(self, name: str) -> str:
        """One sentence for error messages: how often ``name`` runs and which call it means ("" if once)."""
        n = self.runs(name)
        if n <= 1:
            return ""
        return (f"{name!r} runs {n} times in one forward pass, and a layer name means the last call "
                f"(call {n} of {n}, as render records it)")


def run_forward(model: nn.Module, x: torch.Tensor, *, tolerate: Callable[[], bool] | None = None) -> bool:
    """Run ``model(x)``; return True if it ended early (a hook raised :class:`StopForward`).

    With ``tolerate``, an exception raised after ``tolerate()`` became true
    (every needed layer already ran) also ends the pass early instead of
    propagating: the layers after the last needed one may reject an input that
    the needed ones accept (shallow layers of Inception at 32 px).
    """
    try:
        model(x)
    except StopForward:
        return True
    except Exception:
        if tolerate is None or not tolerate():
            raise
        return True
    return False


def count_calls(model: nn.Module, names: Iterable[str], x: torch.Tensor) -> CallPlan:
    """Run ``model`` once on ``x`` (no grad) and count how often the modules of ``names`` run.

    ``names``: layer names (dotted, underscored aliases, selectors; ``"input"`` is
    skipped). ``x``: the model input, e.g. ``(B, 3, H, W)``. The model runs in the
    mode it is in (borrow it with :func:`devvis.state.frozen` first); hooks installed
    here are removed afterwards. A pass that fails after every named module ran
    ends the count there (see :func:`run_forward`).

    >>> import torch
    >>> from torch import nn
    >>> relu = nn.ReLU()
    >>> net = nn.Sequential(nn.Conv2d(3, 3, 1), relu, nn.Conv2d(3, 3, 1), relu)
    >>> count_calls(net, ["1", "0"], torch.rand(1, 3, 4, 4)).counts
    {'1': 2, '0': 1}
    """
    bases = list(dict.fromkeys(split_selector(resolve_name(model, n))[0] for n in names if n != INPUT))
    counts = {b: 0 for b in bases}

    def make(base: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: object, _o: object) -> None:
            counts[base] += 1
        return hook

    handles = [model.get_submodule(b).register_forward_hook(make(b)) for b in bases]
    try:
        with torch.no_grad():
            run_forward(model, x, tolerate=lambda: all(counts.values()))
    finally:
        for h in handles:
            h.remove()
    return CallPlan(dict(counts))
