"""Property tests (hypothesis): the objective algebra, parameterizations, and checkpoint-name step parsing.

Each property is checked on random inputs, so it holds beyond the hand-picked cases of
tests/objectives/test_algebra.py, tests/param/test_param.py and tests/test_checkpoints.py.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devvis import objectives as O
from devvis import param as P
from devvis.hooks import Activations
from devvis.models import find_checkpoints, natural_key, parse_step

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------- objective algebra

B = 3  # batch of the random activations


def _acts(seed: int) -> Activations:
    g = torch.Generator().manual_seed(seed)
    return Activations({
        "a": torch.randn(B, 4, 5, 5, generator=g),
        "b": torch.randn(B, 6, 3, 2, generator=g),
        "input": torch.rand(B, 3, 8, 8, generator=g),
    })


#: Leaves: (objective, its value on the activations computed directly, by hand).
LEAVES = {
    "channel(a, 1)": (lambda: O.channel("a", 1), lambda acts: acts["a"][:, 1].mean(dim=(1, 2))),
    "channel(b, 5)": (lambda: O.channel("b", 5), lambda acts: acts["b"][:, 5].mean(dim=(1, 2))),
    "neuron(a, 2, x=1, y=3)": (lambda: O.neuron("a", 2, x=1, y=3), lambda acts: acts["a"][:, 2, 3, 1]),
    "layer(b)": (lambda: O.layer("b"), lambda acts: (acts["b"] ** 2).mean(dim=(1, 2, 3))),
    "channel(a, 0, batch=1)": (lambda: O.channel("a", 0, batch=1),
                               lambda acts: acts["a"][:, 0].mean(dim=(1, 2)) * (torch.arange(B) == 1)),
    "lambda": (lambda: O.Objective(lambda acts: acts["a"][:, 3].amax(dim=(1, 2)), layers=["a"], description="max3"),
               lambda acts: acts["a"][:, 3].amax(dim=(1, 2))),
}

weights = st.floats(min_value=-4, max_value=4, allow_nan=False).filter(lambda w: abs(w) > 1e-3)


def _tree(depth: int):
    """A random expression: ("leaf", name) | (op, ...) over the objective algebra."""
    leaf = st.sampled_from(sorted(LEAVES)).map(lambda n: ("leaf", n))
    if depth == 0:
        return leaf
    sub = _tree(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(st.just("add"), sub, sub),
        st.tuples(st.just("sub"), sub, sub),
        st.tuples(st.just("mul"), sub, sub),
        st.tuples(st.just("neg"), sub),
        st.tuples(st.just("scale"), weights, sub),
        st.tuples(st.just("rscale"), sub, weights),
        st.tuples(st.just("div"), sub, weights),
        st.tuples(st.just("addconst"), sub, weights),
        st.tuples(st.just("rsubconst"), weights, sub),
        st.tuples(st.just("sum"), st.lists(sub, min_size=1, max_size=4)),
        st.tuples(st.just("weighted"), st.lists(st.tuples(weights, sub), min_size=1, max_size=4)),
    )


def _build(tree, acts):
    """(objective, expected values) for ``tree``: the objective from the algebra, the value by arithmetic."""
    op = tree[0]
    if op == "leaf":
        make, value = LEAVES[tree[1]]
        return make(), value(acts)
    if op in ("add", "sub", "mul"):
        (oa, va), (ob, vb) = _build(tree[1], acts), _build(tree[2], acts)
        return {"add": (oa + ob, va + vb), "sub": (oa - ob, va - vb), "mul": (oa * ob, va * vb)}[op]
    if op == "neg":
        o, v = _build(tree[1], acts)
        return -o, -v
    if op == "scale":
        o, v = _build(tree[2], acts)
        return tree[1] * o, tree[1] * v
    if op == "rscale":
        o, v = _build(tree[1], acts)
        return o * tree[2], v * tree[2]
    if op == "div":
        o, v = _build(tree[1], acts)
        return o / tree[2], v / tree[2]
    if op == "addconst":
        o, v = _build(tree[1], acts)
        return o + tree[2], v + tree[2]
    if op == "rsubconst":
        o, v = _build(tree[2], acts)
        return tree[1] - o, tree[1] - v
    if op == "sum":
        parts = [_build(t, acts) for t in tree[1]]
        return sum(o for o, _ in parts), sum(v for _, v in parts)
    if op == "weighted":
        parts = [(w, *_build(t, acts)) for w, t in tree[1]]
        return O.weighted([(w, o) for w, o, _ in parts]), sum(w * v for w, _, v in parts)
    raise AssertionError(op)


def _leaves(tree) -> set[str]:
    if tree[0] == "leaf":
        return {tree[1]}
    out: set[str] = set()
    for part in tree[1:]:
        if isinstance(part, tuple) and part and isinstance(part[0], str):
            out |= _leaves(part)
        elif isinstance(part, list):
            for t in part:
                out |= _leaves(t[1] if isinstance(t[0], float) else t)
    return out


@PROPS
@given(tree=_tree(3), seed=st.integers(0, 2**16))
def test_objective_algebra_equals_the_algebra_of_its_parts(tree, seed):
    acts = _acts(seed)
    objective, expected = _build(tree, acts)
    got = objective(acts)
    assert got.shape == (B,)
    assert torch.allclose(got.double(), expected.double(), rtol=1e-4, atol=1e-4), (objective.description, got, expected)
    # the composite knows every layer its parts read (None only when a part cannot say)
    layers = {"channel(a, 1)": "a", "channel(b, 5)": "b", "neuron(a, 2, x=1, y=3)": "a", "layer(b)": "b",
              "channel(a, 0, batch=1)": "a", "lambda": "a"}
    assert set(objective.layers) == {layers[n] for n in _leaves(tree)}


@PROPS
@given(ws=st.lists(weights, min_size=1, max_size=30), seed=st.integers(0, 2**16))
def test_weighted_sum_of_random_weights_is_linear(ws, seed):
    acts = _acts(seed)
    parts = [O.channel("a", i % 4) for i in range(len(ws))]
    expected = sum(w * acts["a"][:, i % 4].mean(dim=(1, 2)) for i, w in enumerate(ws))
    for objective in (O.weighted(list(zip(ws, parts))), sum(w * p for w, p in zip(ws, parts))):
        assert torch.allclose(objective(acts), expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- parameterizations

@PROPS
@given(w=st.integers(1, 40), h=st.integers(1, 40), batch=st.integers(1, 3), channels=st.integers(1, 4),
       fft=st.booleans(), decorrelate=st.booleans(), seed=st.integers(0, 1000),
       kind=st.sampled_from(["image", "laplacian", "maco", "cppn"]))
@example(w=1, h=1, batch=1, channels=1, fft=False, decorrelate=False, seed=0, kind="maco")  # was NaN (std of 1 px)
@example(w=1, h=1, batch=2, channels=3, fft=True, decorrelate=True, seed=0, kind="image")
@example(w=1, h=1, batch=1, channels=3, fft=True, decorrelate=True, seed=0, kind="laplacian")
@example(w=1, h=1, batch=1, channels=3, fft=True, decorrelate=True, seed=0, kind="cppn")
def test_any_parameterization_gives_valid_images(w, h, batch, channels, fft, decorrelate, seed, kind):
    if kind == "image":
        p = P.image(w, h, batch=batch, channels=channels, fft=fft, decorrelate=decorrelate, seed=seed)
    elif kind == "laplacian":
        p = P.laplacian(w, h, batch=batch, channels=channels, decorrelate=decorrelate, seed=seed)
    elif kind == "maco":
        p = P.maco(w, h, batch=batch, channels=channels, decorrelate=decorrelate, seed=seed)
    else:
        p = P.cppn(w, h, batch=batch, channels=channels, num_hidden_channels=4, num_layers=2, seed=seed)
    img = p()
    assert img.shape == (batch, channels, h, w)
    assert torch.isfinite(img).all()
    assert img.min() >= 0 and img.max() <= 1
    # Still valid after an optimizer step that pushes hard (the range comes from the construction).
    opt = torch.optim.Adam([q for q in p.parameters() if q.requires_grad], lr=10.0)
    (-img.sum()).backward()
    opt.step()
    with torch.no_grad():
        img2 = p()
    assert img2.shape == (batch, channels, h, w) and torch.isfinite(img2).all()
    assert img2.min() >= 0 and img2.max() <= 1


# ------------------------------------------------------------------------------- step parsing

#: Name templates whose step is the number put in; {s} is the step, {p} an arbitrary safe prefix.
TEMPLATES = [
    "step_{s}.pt", "step-{s}.safetensors", "step{s}.pth", "global_step={s}.ckpt", "epoch=3-step={s}.ckpt",
    "{p}_step_{s}.pt", "{p}-steps-{s}.bin", "iter_{s}.pth", "iteration{s}.pt", "checkpoint_{s}.pth",
    "checkpoint-{s}/model.safetensors", "checkpoint-{s}/pytorch_model.bin", "ckpt-{s}.pt", "{s}.pt",
    "train_{s}/model.pt", "model_{s}.pth.tar", "{p}/step_{s}.pt", "snapshot_{s}.pt", "weights_{s}.safetensors",
]
prefixes = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)


@PROPS
@given(template=st.sampled_from(TEMPLATES), step=st.integers(0, 10**9), prefix=prefixes, pad=st.integers(0, 8))
def test_step_parsed_from_any_common_checkpoint_name(template, step, prefix, pad):
    name = template.format(s=str(step).zfill(pad), p=prefix)
    assert parse_step(name) == step, name


@PROPS
@given(step=st.integers(0, 10**6), epoch=st.integers(0, 10**6))
def test_step_beats_epoch_in_the_same_name(step, epoch):
    assert parse_step(f"epoch={epoch}-step={step}.ckpt") == step
    assert parse_step(f"model_epoch{epoch}.pt") == epoch


@PROPS
@given(steps=st.lists(st.integers(0, 10**7), min_size=1, max_size=8, unique=True),
       style=st.sampled_from(["step_{s}.pt", "ckpt-{s}.pt", "checkpoint_{s:08d}.pth", "train_{s}/model.pt"]),
       data=st.data())
def test_find_checkpoints_orders_any_series_by_step(tmp_path_factory, steps, style, data):
    d = tmp_path_factory.mktemp("series")
    for s in data.draw(st.permutations(steps)):  # creation order must not matter
        p = d / style.format(s=s)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")  # never read: the name has the step
    refs = find_checkpoints(d)
    assert [r.step for r in refs] == sorted(steps)
    assert all(r.source == "name" for r in refs)


@PROPS
@given(nums=st.lists(st.integers(0, 10**6), min_size=2, max_size=10, unique=True))
def test_natural_key_orders_numbers_by_value(nums):
    names = [f"run{n}.pt" for n in nums]
    assert sorted(names, key=natural_key) == [f"run{n}.pt" for n in sorted(nums)]
