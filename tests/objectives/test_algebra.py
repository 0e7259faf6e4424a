import pytest
import torch

from devvis import objectives as obj
from devvis.errors import ObjectiveError
from devvis.hooks import Activations


@pytest.fixture
def acts():
    g = torch.Generator().manual_seed(0)
    return Activations({"a": torch.randn(3, 4, 5, 5, generator=g), "b": torch.randn(3, 6, 2, 2, generator=g),
                        "input": torch.rand(3, 3, 8, 8, generator=g)})


def test_algebra_values_equal_arithmetic(acts):
    x, y = obj.channel("a", 1), obj.channel("b", 2)
    vx, vy = x(acts), y(acts)
    assert vx.shape == (3,)
    cases = {
        "x + y": (x + y, vx + vy), "x - y": (x - y, vx - vy), "-x": (-x, -vx), "2 * x": (2 * x, 2 * vx),
        "x * 3": (x * 3, 3 * vx), "x / 4": (x / 4, vx / 4), "x * y": (x * y, vx * vy), "x / y": (x / y, vx / vy),
        "x + 1": (x + 1, vx + 1), "1 - x": (1 - x, 1 - vx),
        "sum": (sum([x, y, x]), 2 * vx + vy),
        "weighted": (obj.weighted([(0.5, x), (-2, y)]), 0.5 * vx - 2 * vy),
        "nested": (2 * (x - 0.5 * y) + x * y, 2 * vx - vy + vx * vy),
    }
    for name, (o, expected) in cases.items():
        assert torch.allclose(o(acts), expected, atol=1e-6), name
    assert (x + y).layers == {"a", "b"}


def test_sum_of_many_is_flat_not_recursive(acts):
    many = sum(obj.channel("a", i % 4) for i in range(3000))
    assert isinstance(many, obj.Sum) and len(many.terms) == 3000
    expected = sum(acts["a"][:, i % 4].mean((1, 2)) for i in range(3000))
    assert torch.allclose(many(acts), expected, rtol=1e-4)


def test_descriptions_compose():
    d = (obj.channel("a", 1) - 0.5 * obj.total_variation()).description
    assert d == "channel(a, 1) - 0.5 * total_variation()"


def test_strings_and_callables(acts):
    assert torch.allclose(obj.as_objective("a:2")(acts), acts["a"][:, 2].mean((1, 2)))
    f = obj.as_objective(lambda a: a["b"].sum((1, 2, 3)))
    assert f.layers is None and torch.allclose(f(acts), acts["b"].sum((1, 2, 3)))
    with pytest.raises(ObjectiveError, match="layer:channel"):
        obj.as_objective("layer3.1")
    with pytest.raises(ObjectiveError):
        obj.as_objective(3.5)


def test_scalar_returning_objective_spread_over_batch(acts):
    o = obj.Objective(lambda a: a["a"].mean(), layers=["a"])
    v = o(acts)
    assert v.shape == (3,) and torch.allclose(v.sum(), acts["a"].mean())


def test_user_decorator_matches_builtin(acts):
    @obj.wrap_objective
    def my_channel(layer, n, batch=None):
        return lambda a: a[layer][:, n].mean(dim=(1, 2))

    mine = my_channel("a", 3)
    assert mine.layers == {"a"} and mine.description == "my_channel(a, 3)"
    assert torch.allclose(mine(acts), obj.channel("a", 3)(acts))
    assert torch.allclose(my_channel("a", 3, batch=1)(acts), obj.channel("a", 3, batch=1)(acts))
