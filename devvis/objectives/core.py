"""The :class:`Objective` value, its algebra, and the decorator every objective is built with.

An objective maps recorded activations to one value per image (``Tensor[B]``,
higher is better) and knows which layers it reads. Built-in objectives are
written exactly as a user would write their own:

>>> from devvis import objectives
>>> @objectives.wrap_objective
... def mean_act(layer, batch=None):
...     def inner(acts):
...         return acts[layer].mean(dim=(1, 2, 3))
...     return inner
>>> obj = mean_act("layer2.1") - 0.1 * objectives.total_variation()
>>> sorted(obj.layers), obj.description
(['input', 'layer2.1'], 'mean_act(layer2.1) - 0.1 * total_variation()')
"""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import torch

from devvis.errors import ObjectiveError
from devvis.typing import ObjectiveLike

Acts = Mapping[str, torch.Tensor]
"""What an objective reads: layer name (and ``"input"``) -> recorded tensor (``devvis.hooks.Activations``)."""

ObjectiveFn = Callable[[Acts], torch.Tensor]
"""``fn(acts) -> Tensor[B]``."""

Operand = Union[ObjectiveLike, float]
"""What the objective algebra accepts on the other side: an objective or a number."""


def _as_batch_values(v: Any, acts: Any, description: str) -> torch.Tensor:
    """Coerce an objective function's output to a ``[B]`` tensor.

    A scalar (the Lucent habit of reducing over the batch) is spread evenly over
    the batch so that the sum of the values is the scalar.
    """
    if not isinstance(v, torch.Tensor):
        if isinstance(v, numbers.Number):
            v = torch.tensor(float(v))
        else:
            raise ObjectiveError(f"objective {description!r} returned {type(v).__name__}; expected a tensor of shape [B]")
    if v.dim() == 0:
        b = _batch_size(acts)
        return v.expand(b) / b
    if v.dim() != 1:
        raise ObjectiveError(
            f"objective {description!r} returned shape {tuple(v.shape)}; expected one value per image, shape [B]")
    return v


def _batch_size(acts: Any) -> int:
    for t in acts.values():
        return int(t.shape[0])
    return 1


class Objective:
    """A differentiable score of a batch of images: ``objective(acts) -> Tensor[B]``, higher is better.

    Parameters
    ----------
    fn:
        ``fn(acts) -> Tensor[B]`` where ``acts`` maps layer names (and ``"input"``)
        to recorded tensors. A 0-d result is spread evenly over the batch.
    layers:
        The layer names ``fn`` reads. ``None`` means unknown: ``render`` finds
        them with one probing forward pass.
    description:
        Human-readable text used in metadata and errors.

    >>> import torch
    >>> from devvis.objectives import Objective
    >>> o = Objective(lambda a: a["input"].mean(dim=(1, 2, 3)), layers=["input"], description="brightness")
    >>> (2 * o)({"input": torch.ones(2, 3, 4, 4)}).tolist()
    [2.0, 2.0]
    """

    def __init__(self, fn: ObjectiveFn, layers: Iterable[str] | None = None, description: str | None = None,
                 name: str | None = None):
        self.fn = fn
        self.layers: frozenset[str] | None = None if layers is None else frozenset(layers)
        self.description = description or name or getattr(fn, "__name__", "objective")
        # set by wrap_objective: structured fields recorded in metadata (layer, channel, ...)
        self.fields: dict[str, Any] = {}

    # -- evaluation -----------------------------------------------------------------
    def __call__(self, acts: Acts) -> torch.Tensor:
        return _as_batch_values(self.fn(acts), acts, self.description)

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    # -- algebra --------------------------------------------------------------------
    def _terms(self) -> list[tuple[float, "Objective"]]:
        return [(1.0, self)]

    def __add__(self, other: Operand) -> "Objective":
        if isinstance(other, numbers.Number):
            if other == 0:
                return self
            c = float(other)
            return Objective(lambda a: self(a) + c, self.layers, f"{self.description} + {c:g}")
        other = as_objective(other)
        return Sum(self._terms() + other._terms())

    def __radd__(self, other: Operand) -> "Objective":
        # sum([...]) starts from 0
        if isinstance(other, numbers.Number):
            return self.__add__(other)
        return as_objective(other).__add__(self)

    def __neg__(self) -> "Objective":
        return Sum([(-w, o) for w, o in self._terms()])

    def __sub__(self, other: Operand) -> "Objective":
        if isinstance(other, numbers.Number):
            return self.__add__(-float(other))
        return self + (-as_objective(other))

    def __rsub__(self, other: Operand) -> "Objective":
        return (-self).__add__(other)

    def __mul__(self, other: Operand) -> "Objective":
        if isinstance(other, numbers.Number):
            return Sum([(float(other) * w, o) for w, o in self._terms()])
        other = as_objective(other)
        return Objective(lambda a: self(a) * other(a), _union(self.layers, other.layers),
                         f"({self.description}) * ({other.description})")

    def __rmul__(self, other: Operand) -> "Objective":
        return self.__mul__(other)

    def __truediv__(self, other: Operand) -> "Objective":
        if isinstance(other, numbers.Number):
            if other == 0:
                raise ObjectiveError(f"cannot divide objective {self.description!r} by zero")
            return self.__mul__(1.0 / float(other))
        other = as_objective(other)
        return Objective(lambda a: self(a) / other(a), _union(self.layers, other.layers),
                         f"({self.description}) / ({other.description})")


def _union(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None or b is None:
        return None
    return a | b


class Sum(Objective):
    """A flat weighted sum of objectives: evaluation is a loop, not a chain of nested calls,
    so summing thousands of objectives never hits Python's recursion limit."""

    def __init__(self, terms: Sequence[tuple[float, Objective]]):
        merged: dict[int, list[Any]] = {}
        for w, o in terms:  # combine repeated terms (a + a == 2 * a)
            if id(o) in merged:
                merged[id(o)][0] += w
            else:
                merged[id(o)] = [w, o]
        self.terms: list[tuple[float, Objective]] = [(w, o) for w, o in merged.values()]
        layers: frozenset[str] | None = frozenset()
        for _, o in self.terms:
            layers = _union(layers, o.layers)
        super().__init__(self._evaluate, layers, _describe(self.terms))

    def _evaluate(self, acts: Acts) -> torch.Tensor:
        total: torch.Tensor | None = None
        for w, o in self.terms:
            v = o(acts)
            v = v if w == 1.0 else w * v
            total = v if total is None else total + v
        assert total is not None
        return total

    def _terms(self) -> list[tuple[float, Objective]]:
        return list(self.terms)


def _describe(terms: Sequence[tuple[float, Objective]]) -> str:
    parts = []
    for i, (w, o) in enumerate(terms):
        d = o.description if not isinstance(o, Sum) else f"({o.description})"
        if w == 1.0:
            s, sign = d, "+"
        elif w == -1.0:
            s, sign = d, "-"
        else:
            s, sign = f"{abs(w):g} * {d}", "+" if w > 0 else "-"
        if i == 0:
            parts.append(s if sign == "+" else f"-{s}")
        else:
            parts.append(f" {sign} {s}")
    return "".join(parts) or "0"


def weighted(pairs: Iterable[tuple[float, ObjectiveLike]]) -> Objective:
    """Weighted sum of objectives from ``(weight, objective)`` pairs.

    >>> from devvis import objectives
    >>> objectives.weighted([(1.0, "layer2.1:3"), (0.5, "layer2.1:4")]).description
    'channel(layer2.1, 3) + 0.5 * channel(layer2.1, 4)'
    """
    return Sum([(float(w), as_objective(o)) for w, o in pairs])


#: What a ``"layer:n"`` string means: filled by :func:`string_objective` (``objectives.channel``
#: registers itself), so this module does not import the objectives built on it (no import cycle).
_string_objective: list[Callable[[str, int], Objective]] = []


def string_objective(build: Callable[[str, int], Objective]) -> Callable[[str, int], Objective]:
    """Decorator: ``build(layer, n)`` is the objective a ``"layer:n"`` string means.

    ``devvis.objectives.channel`` is registered (channel ``n`` of ``layer``); registering
    another builder replaces it.
    """
    _string_objective[:] = [build]
    return build


def as_objective(obj: ObjectiveLike) -> Objective:
    """Turn ``obj`` into an :class:`Objective`.

    Accepts an ``Objective``, a ``"layer:n"`` string (channel ``n`` of ``layer``)
    or a plain callable ``fn(acts) -> Tensor[B]`` (its layers are discovered by
    ``render``).

    >>> as_objective("layer3.1:7").description
    'channel(layer3.1, 7)'
    """
    if isinstance(obj, Objective):
        return obj
    if isinstance(obj, str):
        layer, sep, n = obj.rpartition(":")
        if not sep or not layer or not n.strip().lstrip("-").isdigit():
            raise ObjectiveError(f"cannot read objective string {obj!r}; expected 'layer:channel', e.g. 'layer3.1:7'")
        return _string_objective[0](layer, int(n))
    # Lucent objectives (devvis.compat.lucent) convert themselves
    conv = getattr(obj, "to_devvis", None)
    if callable(conv):
        return conv()
    if callable(obj):
        return Objective(obj, None, getattr(obj, "__name__", "callable"))
    raise ObjectiveError(
        f"cannot use {type(obj).__name__} {obj!r} as an objective; valid: an Objective, a 'layer:n' string or a callable acts -> Tensor[B]")


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, torch.Tensor):
        return f"tensor{tuple(v.shape)}"
    if isinstance(v, (list, tuple)) and len(v) > 6:
        return f"[{', '.join(map(_fmt, v[:3]))}, ... ({len(v)} items)]"
    if isinstance(v, (list, tuple)):
        return f"[{', '.join(map(_fmt, v))}]"
    return repr(v)


def _batch_mask(values: torch.Tensor, batch: int | Sequence[int]) -> torch.Tensor:
    b = values.shape[0]
    idx = [batch] if isinstance(batch, int) else list(batch)
    for i in idx:
        if not -b <= i < b:
            from devvis.errors import ChannelOutOfRangeError

            raise ChannelOutOfRangeError(f"batch index {i} out of range for a batch of {b} images (valid 0..{b - 1})")
    mask = torch.zeros(b, dtype=values.dtype, device=values.device)
    mask[idx] = 1
    return values * mask


def wrap_objective(fn: Callable[..., ObjectiveFn] | None = None, *, layers: Sequence[str] | None = None):
    """Decorator turning ``f(*args) -> inner(acts) -> Tensor[B]`` into ``f(*args) -> Objective``.

    The layers the objective reads are taken from the arguments whose parameter
    names start with ``layer`` (a name or a list of names), unless ``layers=``
    names the parameters explicitly; if there are none, ``render`` discovers them.
    An argument called ``batch`` (an int or list of ints) restricts the objective
    to those images: the others get value 0 and no gradient.

    >>> from devvis.objectives import wrap_objective
    >>> @wrap_objective
    ... def brightness(layer="input", batch=None):
    ...     return lambda acts: acts[layer].mean(dim=(1, 2, 3))
    >>> brightness().description, sorted(brightness().layers)
    ('brightness()', ['input'])
    """

    def decorate(f: Callable[..., ObjectiveFn]):
        sig = inspect.signature(f)

        @functools.wraps(f)
        def make(*args: Any, **kwargs: Any) -> Objective:
            bound = sig.bind(*args, **kwargs)
            given = dict(bound.arguments)
            bound.apply_defaults()
            inner = f(*bound.args, **bound.kwargs)
            names = layers if layers is not None else [p for p in sig.parameters if p.startswith("layer")]
            found: list[str] = []
            for p in names:
                v = bound.arguments.get(p)
                if isinstance(v, str):
                    found.append(v)
                elif isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
                    found.extend(v)
            shown = ", ".join(_fmt(v) if k in names or k in ("n", "channels") else f"{k}={_fmt(v)}"
                              for k, v in given.items() if k != "batch" or v is not None)
            desc = f"{f.__name__}({shown})"
            batch = bound.arguments.get("batch")
            if batch is not None:
                def fn(acts: Any, _inner=inner, _batch=batch) -> torch.Tensor:
                    return _batch_mask(_as_batch_values(_inner(acts), acts, desc), _batch)
            else:
                fn = inner
            obj = Objective(fn, found if found else None, desc)
            obj.fields = {k: v for k, v in bound.arguments.items() if isinstance(v, (str, int, float, type(None), list, tuple))}
            obj.fields["objective_type"] = f.__name__
            return obj

        make.__wrapped_objective__ = True  # type: ignore[attr-defined]
        return make

    if fn is not None:
        return decorate(fn)
    return decorate
