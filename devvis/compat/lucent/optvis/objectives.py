"""Lucent's ``objectives`` module: the same names, signatures, algebra and losses, runnable on devvis.

A Lucent objective is called with ``T`` (``T(name)`` returns the output of the
module called ``name``, in Lucent's underscore spelling such as ``"layer3_1_conv1"``;
``T("input")`` is the parameterized image before transforms, ``T("labels")`` the
output of the module that runs last) and returns a scalar **loss to minimize**:
``channel(layer, n)`` is minus the channel's mean activation.

``Objective.to_devvis()`` turns one into a :class:`devvis.objectives.Objective`
(higher is better, so the sign flips), which is also what ``devvis.render``
does when it is handed a Lucent objective.

>>> import torch
>>> from devvis.compat.lucent import objectives
>>> obj = objectives.channel("conv", 1) - 0.5 * objectives.channel("conv", 0)
>>> T = {"conv": torch.ones(2, 3, 4, 4)}.__getitem__
>>> round(obj(T).item(), 3)
-0.5
>>> obj.name, obj.description
('channel, channel', 'Sum(Channel [conv, 1, None] +\\nChannel [conv, 0, None])')
"""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from devvis.errors import LayerNotFoundError, ObjectiveError
from devvis.hooks import INPUT
from devvis.objectives import Objective as DevvisObjective

__all__ = [
    "Objective", "wrap_objective", "handle_batch", "as_objective", "neuron", "channel", "neuron_weight",
    "channel_weight", "localgroup_weight", "direction", "direction_neuron", "blur_input_each_step",
    "channel_interpolate", "alignment", "diversity",
]

#: ``T(name) -> Tensor``: how a Lucent objective reads activations.
TFn = Callable[[str], torch.Tensor]
LABELS = "labels"


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, torch.Tensor)


def _union(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    return None if a is None or b is None else a | b


class ActsT:
    """Lucent's ``T`` over devvis activations: ``T(name)`` looks ``name`` up in ``acts``.

    Dotted and underscored names both work; ``"labels"`` is the recorded module that
    ran last (the classifier of a CNN).
    """

    def __init__(self, acts: Any):
        self.acts = acts

    def __call__(self, name: str) -> torch.Tensor:
        if name == LABELS:
            ran = [k for k in self.acts if k != INPUT]
            if not ran:
                raise LayerNotFoundError(LABELS, list(self.acts))
            return self.acts[ran[-1]]
        return self.acts[name]


class Objective:
    """A Lucent objective: ``objective(T) -> scalar loss`` (lower is better).

    Same constructor and algebra as Lucent's: ``+`` and ``-`` with numbers and
    objectives, ``*`` and ``/`` by numbers only (anything else raises Lucent's
    ``TypeError``), unary ``-``, ``sum([...])`` and ``Objective.sum([...])``. Sums
    are named ``"a, b"`` and described ``"Sum(A +\\nB)"``; scaling keeps the name.

    ``layers`` (an extension) names the modules the objective reads; ``None``
    (the default for hand-written objectives) lets devvis find them with one
    probing forward pass.

    >>> import torch
    >>> o = Objective(lambda T: -T("fc").mean(), name="fc_mean")
    >>> (2 * o + 1)({"fc": torch.ones(1, 4)}.__getitem__).item()
    -1.0
    """

    def __init__(self, objective_func: Callable[[TFn], Any], name: str = "", description: str = "",
                 layers: Iterable[str] | None = None):
        self.objective_func = objective_func
        self.name = name
        self.description = description
        self.layers: frozenset[str] | None = None if layers is None else frozenset(layers)

    def __call__(self, T: TFn) -> Any:
        return self.objective_func(T)

    def __repr__(self) -> str:
        return f"lucent.Objective({self.description or self.name or 'objective'})"

    def __add__(self, other: Any) -> "Objective":
        if _is_number(other):
            return Objective(lambda T: other + self(T), self.name, self.description, self.layers)
        other = _coerce(other, "add")
        return Objective(lambda T: self(T) + other(T), name=", ".join([self.name, other.name]),
                         description="Sum(" + " +\n".join([self.description, other.description]) + ")",
                         layers=_union(self.layers, other.layers))

    def __radd__(self, other: Any) -> "Objective":
        return self.__add__(other)

    @staticmethod
    def sum(objs: Sequence["Objective"]) -> "Objective":
        """One objective adding all of ``objs`` (evaluated in one loop, not a chain)."""
        objs = [_coerce(o, "add") for o in objs]
        layers: frozenset[str] | None = frozenset()
        for o in objs:
            layers = _union(layers, o.layers)
        return Objective(lambda T: sum([o(T) for o in objs]), name=", ".join(o.name for o in objs),
                         description="Sum(" + " +\n".join(o.description for o in objs) + ")", layers=layers)

    def __neg__(self) -> "Objective":
        return -1 * self

    def __sub__(self, other: Any) -> "Objective":
        return self + (-1 * other)

    def __mul__(self, other: Any) -> "Objective":
        if _is_number(other):
            return Objective(lambda T: other * self(T), self.name, self.description, self.layers)
        # Lucent's rule (unlike Lucid): objectives scale by numbers only
        raise TypeError("Can only multiply by int or float. Received type " + str(type(other)))

    def __rmul__(self, other: Any) -> "Objective":
        return self.__mul__(other)

    def __truediv__(self, other: Any) -> "Objective":
        if _is_number(other):
            return self.__mul__(1 / other)
        raise TypeError("Can only divide by int or float. Received type " + str(type(other)))

    def to_devvis(self) -> DevvisObjective:
        """This objective as a devvis :class:`~devvis.objectives.Objective`: value ``-loss``, higher is better.

        Lucent's scalar loss is spread evenly over the batch, so devvis's
        ``loss = -values.sum()`` is exactly this objective's loss. Reading
        ``"labels"`` (or unknown layers) leaves the layer set open for devvis to probe.

        >>> import torch
        >>> from devvis.hooks import Activations
        >>> channel("conv", 0).to_devvis()(Activations({"conv": torch.ones(2, 1, 2, 2)})).tolist()
        [0.5, 0.5]
        """
        def value(acts: Any) -> Any:
            return -self(ActsT(acts))

        layers = None if self.layers is None or LABELS in self.layers else self.layers
        desc = f"lucent {self.description or self.name or 'objective'}".replace("\n", " ")
        out = DevvisObjective(value, layers, desc)
        out.fields = {"objective_type": "lucent", "lucent_name": self.name}
        return out


def _coerce(other: Any, verb: str) -> Objective:
    if isinstance(other, Objective):
        return other
    if isinstance(other, DevvisObjective):
        raise TypeError(f"cannot {verb} a devvis Objective ({other.description!r}) and a Lucent objective: they use "
                        "opposite signs; combine them in devvis instead: lucent_obj.to_devvis() + devvis_obj")
    if isinstance(other, str) or callable(other):
        return as_objective(other) if isinstance(other, str) else Objective(other, getattr(other, "__name__", ""))
    raise TypeError(f"Can only {verb} an Objective, a 'layer:n' string, a callable T -> loss or a number. "
                    f"Received type {type(other)}")


def _make_arg_str(arg: Any) -> str:
    s = str(arg)
    return "..." if len(s) > 15 or "\n" in s else s


def _wrap(func: Callable[..., Callable[[TFn], Any]], layer_params: Sequence[str] | None,
          fixed_layers: Sequence[str] = ()):
    sig = inspect.signature(func)

    @functools.wraps(func)
    def make(*args: Any, **kwargs: Any) -> Objective:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        objective_func = func(*bound.args, **bound.kwargs)
        # Lucent's description: every positional argument, defaults included
        description = func.__name__.title() + " [" + ", ".join(_make_arg_str(a) for a in bound.args) + "]"
        layers = None
        if layer_params is not None:
            layers = [bound.arguments[p] for p in layer_params] + list(fixed_layers)
        return Objective(objective_func, func.__name__, description, layers)

    return make


def wrap_objective(func: Callable[..., Callable[[TFn], Any]] | None = None):
    """Decorator turning ``f(*args) -> inner(T) -> loss`` into ``f(*args) -> Objective``.

    Use it as Lucent does, ``@wrap_objective()``; ``@wrap_objective`` works too.
    The objective is named ``f.__name__`` and described ``"F [arg1, arg2, ...]"``.

    >>> @wrap_objective()
    ... def mean_act(layer):
    ...     return lambda T: -T(layer).mean()
    >>> mean_act("conv").description
    'Mean_Act [conv]'
    """
    if func is not None:
        return _wrap(func, None)
    return lambda f: _wrap(f, None)


def _builtin(*layer_params: str, fixed_layers: Sequence[str] = ()):
    """Like :func:`wrap_objective`, and the objective reads exactly the modules named by the arguments
    ``layer_params`` (plus ``fixed_layers``), so devvis needs no probing pass."""
    return lambda f: _wrap(f, layer_params, fixed_layers)


def handle_batch(batch: int | None = None):
    """Decorator for ``inner(T)``: with an int ``batch``, ``T(name)`` returns only that image, ``[batch:batch+1]``."""
    def decorate(f: Callable[[TFn], Any]) -> Callable[[TFn], Any]:
        def with_batch(T: TFn) -> Any:
            if not isinstance(batch, int):
                return f(T)
            return f(lambda name: T(name)[batch:batch + 1])
        return with_batch
    return decorate


def _extract_act_pos(acts: torch.Tensor, x: int | None = None, y: int | None = None) -> torch.Tensor:
    """The ``(B, C, 1, 1)`` slice at column ``x``, row ``y`` (centre by default; bottom-right of the
    centre 2x2 when a side is even). Lucent took the default column from the height and the default
    row from the width, which on non-square maps picked the wrong place or an empty slice.
    """
    h, w = acts.shape[2], acts.shape[3]
    x = w // 2 if x is None else x
    y = h // 2 if y is None else y
    return acts[:, :, y:y + 1, x:x + 1]


def _vec(v: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(v).to(like.device, like.dtype)


@_builtin("layer")
def neuron(layer: str, n_channel: int, x: int | None = None, y: int | None = None, batch: int | None = None):
    """Minus the activation of channel ``n_channel`` at column ``x``, row ``y`` (centre by default)."""
    @handle_batch(batch)
    def inner(T):
        return -_extract_act_pos(T(layer), x, y)[:, n_channel].mean()
    return inner


@_builtin("layer")
def channel(layer: str, n_channel: int, batch: int | None = None):
    """Minus the mean activation of channel ``n_channel`` over positions and images."""
    @handle_batch(batch)
    def inner(T):
        return -T(layer)[:, n_channel].mean()
    return inner


@_builtin("layer")
def neuron_weight(layer: str, weight: Any, x: int | None = None, y: int | None = None, batch: int | None = None):
    """Minus the mean of the activations at one position weighted per channel by ``weight`` ``(C,)``
    (``None``: unweighted)."""
    @handle_batch(batch)
    def inner(T):
        t = _extract_act_pos(T(layer), x, y)[:, :, 0, 0]
        return -t.mean() if weight is None else -(t * _vec(weight, t)).mean()
    return inner


@_builtin("layer")
def channel_weight(layer: str, weight: Any, batch: int | None = None):
    """Minus the mean of the activations weighted per channel by ``weight`` ``(C,)``."""
    @handle_batch(batch)
    def inner(T):
        t = T(layer)
        return -(t * _vec(weight, t).view(1, -1, 1, 1)).mean()
    return inner


@_builtin("layer")
def localgroup_weight(layer: str, weight: Any = None, x: int | None = None, y: int | None = None, wx: int = 1,
                      wy: int = 1, batch: int | None = None):
    """Minus the mean of the ``wy x wx`` patch whose top-left corner is column ``x``, row ``y``
    (centre by default), weighted per channel by ``weight`` (``None``: unweighted)."""
    @handle_batch(batch)
    def inner(T):
        t = T(layer)
        x0 = t.shape[3] // 2 if x is None else x
        y0 = t.shape[2] // 2 if y is None else y
        patch = t[:, :, y0:y0 + wy, x0:x0 + wx]
        return -patch.mean() if weight is None else -(patch * _vec(weight, t).view(1, -1, 1, 1)).mean()
    return inner


@_builtin("layer")
def direction(layer: str, direction: Any, batch: int | None = None):
    """Minus the mean cosine similarity between the activation vector at each position and ``direction`` ``(C,)``."""
    @handle_batch(batch)
    def inner(T):
        t = T(layer)
        return -F.cosine_similarity(_vec(direction, t).reshape(1, -1, 1, 1), t, dim=1).mean()
    return inner


@_builtin("layer")
def direction_neuron(layer: str, direction: Any, x: int | None = None, y: int | None = None,
                     batch: int | None = None):
    """:func:`direction` at one position: column ``x``, row ``y`` (centre by default)."""
    @handle_batch(batch)
    def inner(T):
        t = _extract_act_pos(T(layer), x, y)
        return -F.cosine_similarity(_vec(direction, t).reshape(1, -1, 1, 1), t, dim=1).mean()
    return inner


def _blur3x3(t: torch.Tensor) -> torch.Tensor:
    """Per-channel 3x3 blur (centre weight 1, ring 0.5), renormalized at the borders."""
    c = t.shape[1]
    k = torch.full((3, 3), 0.5, device=t.device, dtype=t.dtype)
    k[1, 1] = 1.0
    weight = k.expand(c, 1, 3, 3)
    conv = lambda v: F.conv2d(v, weight, padding=1, groups=c)  # noqa: E731
    return conv(t) / conv(torch.ones_like(t))


@_builtin(fixed_layers=(INPUT,))
def blur_input_each_step():
    """``-0.5 * sum((image - blur(image))^2)`` over the input image (the blurred copy carries no gradient).

    As in Lucent, *adding* ``-k * blur_input_each_step()`` to an objective pulls the
    image towards its blurred copy each step (``image <- (1-k) image + k blur(image)``).
    """
    def inner(T):
        t = T("input")
        with torch.no_grad():
            blurred = _blur3x3(t)
        return -0.5 * torch.sum((t - blurred) ** 2)
    return inner




@_builtin("layer1", "layer2")
def channel_interpolate(layer1: str, n_channel1: int, layer2: str, n_channel2: int):
    """Image ``i`` of ``B`` minimizes ``-((1 - i/(B-1)) mean(channel 1) + i/(B-1) mean(channel 2))``; summed over images.

    With one image the weights are (1, 0) (Lucent divided by zero there).
    """
    def inner(T):
        a = T(layer1)[:, n_channel1]
        b = T(layer2)[:, n_channel2]
        n = a.shape[0]
        w = torch.arange(n, device=a.device, dtype=a.dtype) / max(n - 1, 1)
        return -((1 - w) * a.reshape(n, -1).mean(1) + w * b.reshape(n, -1).mean(1)).sum()
    return inner


@_builtin("layer")
def alignment(layer: str, decay_ratio: float = 2):
    """Penalize differences between images up to 4 apart in the batch:
    ``sum_{d=1..4} sum_i mean((a_i - a_{i+d})^2) / decay_ratio^d``."""
    def inner(T):
        t = T(layer)
        n = t.shape[0]
        accum = t.new_zeros(())
        for d in range(1, min(4, n - 1) + 1):
            accum = accum + ((t[:-d] - t[d:]) ** 2).reshape(n - d, -1).mean(1).sum() / decay_ratio ** float(d)
        return accum
    return inner


@_builtin("layer")
def diversity(layer: str):
    """Minus the summed cosine similarity of the images' Gram matrices, over pairs ``i != j``, divided by ``B``.

    As in Lucent, *subtract* it to diversify a batch: ``channel(...) - 1e2 * diversity(layer)``.
    """
    def inner(T):
        t = T(layer)
        b, c = t.shape[:2]
        flat = t.reshape(b, c, -1)
        grams = torch.matmul(flat, flat.transpose(1, 2)).reshape(b, -1)
        grams = grams / grams.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sim = grams @ grams.T
        return -(sim.sum() - sim.diagonal().sum()) / b
    return inner


def as_objective(obj: Any) -> Any:
    """Lucent's rule: an :class:`Objective` or any callable is returned as is; ``"layer:n"`` becomes
    ``channel(layer, n)``.

    >>> as_objective("layer4_1:7").description
    'Channel [layer4_1, 7, None]'
    """
    if isinstance(obj, Objective) or callable(obj):
        return obj
    if isinstance(obj, str):
        layer, sep, n = obj.rpartition(":")
        if not sep or not layer.strip() or not n.strip().lstrip("-").isdigit():
            raise ObjectiveError(f"cannot read objective string {obj!r}; expected 'layer:channel', e.g. 'mixed4a:476'")
        return channel(layer.strip(), int(n))
    raise ObjectiveError(f"cannot use {type(obj).__name__} {obj!r} as an objective; "
                         "valid: an Objective, a 'layer:n' string or a callable T -> loss")
