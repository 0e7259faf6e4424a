"""SyntheticShapes: a procedurally generated image-classification data set.

The data set exists so that devvis can train, visualize and measure a real CNN
in seconds, on a CPU, with no files and no downloads. Its classes are chosen so
that a network has to learn features of increasing complexity, which is what
makes checkpoint series interesting to look at:

* **colour** — ``red blob``, ``green blob``, ``blue blob``: soft Gaussian blobs;
  one colour-opponent unit each suffices.
* **orientation** — ``horizontal grating``, ``vertical grating``,
  ``diagonal grating``: achromatic sinusoidal stripes in a soft window, random
  period (within a band), phase and small orientation jitter, so the network
  needs oriented edge detectors at several frequencies.
* **shape** — ``circle``, ``square``, ``triangle``, ``cross``: hard-edged
  achromatic (bright or dark) shapes, so neither colour nor brightness
  identifies them; only the outline does.
* **conjunction** — ``red circle``, ``blue square``: a hard-edged shape *and* a
  colour. A ``red circle`` differs from a ``red blob`` by its outline and from a
  ``circle`` by its colour, so only a unit combining both separates it.

Every image sits on a low-frequency noise background (nearly grey, so colour
classes stay unambiguous) with random position, scale and pixel noise.

Sample ``i`` of a data set is drawn from its own random generator seeded by
``(seed, split, i)``: any index is reproducible on its own, independent of the
order of access, of batching and of worker processes.

>>> ds = SyntheticShapes(n=24, size=32, seed=0)
>>> x, y = ds[5]
>>> tuple(x.shape), x.dtype, y, CLASSES[y]
((3, 32, 32), torch.float32, 5, 'diagonal grating')
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from devvis.errors import ConfigError, closest

#: Class names, in label order.
CLASSES: tuple[str, ...] = (
    "red blob",
    "green blob",
    "blue blob",
    "horizontal grating",
    "vertical grating",
    "diagonal grating",
    "circle",
    "square",
    "triangle",
    "cross",
    "red circle",
    "blue square",
)

#: Number of classes (``len(CLASSES)``).
num_classes: int = len(CLASSES)

#: Split names and the integer mixed into each sample's seed: the splits never share a sample.
SPLITS: dict[str, int] = {"train": 0, "test": 1, "probe": 2}

_MIN_SIZE, _MAX_SIZE = 16, 256

# Nominal colours (RGB) of the colour classes; each sample jitters them.
_RED = (0.9, 0.12, 0.12)
_GREEN = (0.12, 0.8, 0.15)
_BLUE = (0.12, 0.2, 0.92)


def _check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not _MIN_SIZE <= size <= _MAX_SIZE:
        raise ConfigError(f"image size must be an integer in [{_MIN_SIZE}, {_MAX_SIZE}] (32-64 recommended); got {size!r}")
    return int(size)


def _check_split(split: str) -> int:
    if split not in SPLITS:
        close = closest(str(split), SPLITS)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown split {split!r}{hint}; valid: {', '.join(SPLITS)}")
    return SPLITS[split]


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)`` of shape (size, size) and the background upsampling matrix.

    The background is a 5x5 grid of random values per channel, bilinearly
    upsampled to (size, size) by ``U @ g @ U.T`` — two small matrix products,
    much cheaper than an interpolation call per sample.
    """
    c = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(c, c, indexing="ij")
    knots = 5
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * (knots - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, knots - 2)
    frac = pos - lo
    up = np.zeros((size, knots), dtype=np.float32)
    up[np.arange(size), lo] = 1.0 - frac
    up[np.arange(size), lo + 1] = frac
    # Read-only: the cache hands the same arrays to every caller.
    for a in (yy, xx, up):
        a.setflags(write=False)
    return yy, xx, up


def _rotated(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, max_deg: float):
    """Coordinates relative to (cy, cx), rotated by a random angle in [-max_deg, max_deg] degrees."""
    t = math.radians(rng.uniform(-max_deg, max_deg))
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(t), math.sin(t)
    return c * dx + s * dy, -s * dx + c * dy  # (u: along x, v: along y)


def _jitter_colour(rng: np.random.Generator, rgb: tuple[float, float, float]) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float32) + rng.uniform(-0.1, 0.1, 3).astype(np.float32), 0.0, 1.0)


def _grey_fill(rng: np.random.Generator) -> np.ndarray:
    """Achromatic fill, bright or dark with equal odds, so brightness does not identify a shape."""
    v = rng.uniform(0.78, 1.0) if rng.random() < 0.5 else rng.uniform(0.0, 0.15)
    return np.full(3, v, dtype=np.float32)


def _blob(rng, size, yy, xx, rgb):
    s = size * rng.uniform(0.10, 0.18)
    cy, cx = rng.uniform(0.25, 0.75, 2) * size
    alpha = rng.uniform(0.8, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * s * s))
    return alpha, _jitter_colour(rng, rgb)


def _grating(rng, size, yy, xx, angle_deg):
    # angle_deg is the direction of the stripes; the wave vector is perpendicular to them.
    t = math.radians(angle_deg + rng.uniform(-10.0, 10.0))
    period = rng.uniform(3.5, 8.0) * size / 32.0
    phase = rng.uniform(0.0, 2.0 * math.pi)
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    k = 2.0 * math.pi / period
    wave = np.sin(k * (-math.sin(t) * (xx - cx) + math.cos(t) * (yy - cy)) + phase)
    # Flat-topped soft window: the stripes cover a large patch but not always the whole image.
    s = size * rng.uniform(0.22, 0.35)
    window = np.minimum(1.0, 1.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * s * s)))
    contrast = rng.uniform(0.3, 0.5)
    return window, wave * contrast  # caller adds the (signed) stripes to the background


def _shape_sdf(rng, size, yy, xx, shape: str) -> np.ndarray:
    """Signed distance in pixels (negative inside) of a randomly placed and scaled shape."""
    r = size * rng.uniform(0.17, 0.3)
    margin = r + 1.0
    cy, cx = rng.uniform(margin, size - margin, 2)
    if shape == "circle":
        return np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - r
    u, v = _rotated(rng, yy, xx, cy, cx, 15.0)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.85 * r
    if shape == "triangle":
        # Equilateral: max over its three edges' half-planes (outward normals at 90, 210 and 330
        # degrees; v grows downwards, so the apex points up). Inradius r/2, circumradius r.
        return np.maximum(v, np.maximum(0.866 * u - 0.5 * v, -0.866 * u - 0.5 * v)) - 0.5 * r
    if shape == "cross":
        w = 0.3 * r
        bar1 = np.maximum(np.abs(u) - r, np.abs(v) - w)
        bar2 = np.maximum(np.abs(v) - r, np.abs(u) - w)
        return np.minimum(bar1, bar2)
    raise AssertionError(shape)  # unreachable: callers pass known shapes


def _hard(rng, size, yy, xx, shape, fill: Callable[[np.random.Generator], np.ndarray]):
    # Antialiased edge: alpha ramps from 1 to 0 over one pixel around the outline.
    alpha = np.clip(0.5 - _shape_sdf(rng, size, yy, xx, shape), 0.0, 1.0)
    return alpha, fill(rng)


def render_sample(seed: int, split_id: int, index: int, size: int = 32) -> tuple[np.ndarray, int]:
    """Render sample ``index``: float32 array (3, size, size) in [0, 1], and its label ``index % num_classes``.

    Deterministic in ``(seed, split_id, index, size)``.

    >>> a, y = render_sample(0, 0, 7)
    >>> b, _ = render_sample(0, 0, 7)
    >>> bool((a == b).all()), a.shape, CLASSES[y]
    (True, (3, 32, 32), 'square')
    """
    label = int(index) % num_classes
    name = CLASSES[label]
    rng = np.random.default_rng((int(seed), int(split_id), int(index)))
    yy, xx, up = _grid(size)

    # Background: nearly grey low-frequency noise (luminance varies, hue only slightly).
    lum = up @ rng.uniform(-1.0, 1.0, (5, 5)).astype(np.float32) @ up.T
    tint = rng.uniform(-0.04, 0.04, (3, 1, 1)).astype(np.float32)
    img = rng.uniform(0.3, 0.6) + rng.uniform(0.08, 0.18) * lum[None] + tint

    if name.endswith("blob"):
        rgb = {"red": _RED, "green": _GREEN, "blue": _BLUE}[name.split()[0]]
        alpha, colour = _blob(rng, size, yy, xx, rgb)
        img = img * (1.0 - alpha) + colour[:, None, None] * alpha
    elif name.endswith("grating"):
        angle = {"horizontal": 0.0, "vertical": 90.0}.get(name.split()[0])
        if angle is None:  # diagonal: either diagonal, with equal odds
            angle = 45.0 if rng.random() < 0.5 else 135.0
        window, stripes = _grating(rng, size, yy, xx, angle)
        img = img + (window * stripes)[None]
    else:
        if name == "red circle":
            alpha, colour = _hard(rng, size, yy, xx, "circle", lambda g: _jitter_colour(g, _RED))
        elif name == "blue square":
            alpha, colour = _hard(rng, size, yy, xx, "square", lambda g: _jitter_colour(g, _BLUE))
        else:
            alpha, colour = _hard(rng, size, yy, xx, name, _grey_fill)
        img = img * (1.0 - alpha) + colour[:, None, None] * alpha

    img = img + rng.normal(0.0, rng.uniform(0.01, 0.05), img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False), label


class SyntheticShapes(Dataset):
    """Synthetic 12-class image data set (see the module docstring), generated on the fly.

    Args:
        n: number of samples; labels cycle ``index % num_classes``, so classes are balanced.
        size: image side in pixels (16-256; 32-64 recommended).
        seed: data seed; together with ``split`` and the index it fixes every sample.
        split: ``"train"``, ``"test"`` or ``"probe"``; different splits never share a sample.

    ``ds[i]`` is ``(image, label)``: image float32 ``(3, size, size)`` in [0, 1], label an ``int``.

    >>> ds = SyntheticShapes(n=100, size=32, seed=1, split="test")
    >>> x, y = ds.tensors()
    >>> tuple(x.shape), tuple(y.shape), y.dtype
    ((100, 3, 32, 32), (100,), torch.int64)
    """

    classes: tuple[str, ...] = CLASSES
    num_classes: int = num_classes

    def __init__(self, n: int = 1000, size: int = 32, seed: int = 0, split: str = "train"):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"number of samples n must be a non-negative integer; got {n!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer; got {seed!r}")
        self.n = int(n)
        self.size = _check_size(size)
        self.seed = int(seed)
        self.split = split
        self._split_id = _check_split(split)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for SyntheticShapes of length {self.n}")
        img, label = render_sample(self.seed, self._split_id, index, self.size)
        return torch.from_numpy(img), label

    def tensors(self, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``start:stop`` stacked: images float32 ``(N, 3, size, size)`` and labels int64 ``(N,)``."""
        stop = self.n if stop is None else min(stop, self.n)
        idx = range(start, stop)
        out = np.empty((len(idx), 3, self.size, self.size), dtype=np.float32)
        labels = np.empty(len(idx), dtype=np.int64)
        for j, i in enumerate(idx):
            out[j], labels[j] = render_sample(self.seed, self._split_id, i, self.size)
        return torch.from_numpy(out), torch.from_numpy(labels)

    def __repr__(self) -> str:
        return f"SyntheticShapes(n={self.n}, size={self.size}, seed={self.seed}, split={self.split!r})"


def make_loaders(
    batch_size: int = 64, n_train: int = 10000, n_test: int = 1000, size: int = 32, seed: int = 0
) -> tuple[DataLoader, DataLoader]:
    """Train and test loaders over :class:`SyntheticShapes` (train shuffled with a seeded generator).

    Batches are ``(images (B, 3, size, size) float32, labels (B,) int64)``.

    >>> train, test = make_loaders(batch_size=8, n_train=32, n_test=16)
    >>> x, y = next(iter(train))
    >>> tuple(x.shape), len(test.dataset)
    ((8, 3, 32, 32), 16)
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer; got {batch_size!r}")
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(SyntheticShapes(n_train, size, seed, "train"), batch_size=batch_size, shuffle=True, generator=g)
    test = DataLoader(SyntheticShapes(n_test, size, seed, "test"), batch_size=batch_size, shuffle=False)
    return train, test


def probe_batch(n: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` held-out images (the ``"probe"`` split, never used for training or testing), float32 (n, 3, size, size).

    Labels cycle through the classes, so ``n >= num_classes`` covers every class.

    >>> probe_batch(4).shape
    torch.Size([4, 3, 32, 32])
    """
    return SyntheticShapes(n, size, seed, "probe").tensors()[0]


#: The planted curriculum's phases, in training order: phase name -> the classes it adds.
#: Colour is learnt from one colour-opponent unit, shapes need outline detectors, and the
#: gratings ("texture") need oriented detectors at several frequencies. The two conjunction
#: classes are not part of the curriculum.
CURRICULUM_PHASES: dict[str, tuple[int, ...]] = {"colour": (0, 1, 2), "shape": (6, 7, 8, 9), "texture": (3, 4, 5)}


class Curriculum:
    """A planted curriculum: which classes are trained on at each step.

    Phase ``k`` of :data:`CURRICULUM_PHASES` is added at ``starts[k]`` (the first optimizer step whose
    batch may hold its classes); earlier phases stay. ``starts[0]`` is 0. The steps at which a phase
    is added (``boundaries``) are the run's true stage boundaries.

    >>> c = Curriculum.build(300)
    >>> c.starts, c.boundaries, [CLASSES[i] for i in c.classes_at(120)][-1]
    ((0, 100, 200), [100, 200], 'cross')
    """

    def __init__(self, starts: tuple[int, ...]):
        phases = tuple(CURRICULUM_PHASES)
        if len(starts) != len(phases) or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
            raise ConfigError(f"curriculum starts must be {len(phases)} strictly increasing steps from 0 "
                              f"(phases {', '.join(phases)}); got {list(starts)!r}")
        self.starts = tuple(int(s) for s in starts)

    @classmethod
    def build(cls, steps: int, spec: "bool | dict[str, int] | tuple[int, ...] | list[int] | None" = True) -> "Curriculum":
        """The curriculum of a ``steps``-step run from ``spec``.

        ``True``: the phases start at 0, ``steps // 3`` and ``2 * steps // 3``; a dict
        ``{"shape": 100, "texture": 200}`` or a sequence ``(100, 200)``: the steps of the later phases.
        """
        later = tuple(CURRICULUM_PHASES)[1:]
        if spec is True:
            starts = (0,) + tuple((k + 1) * steps // len(CURRICULUM_PHASES) for k in range(len(later)))
        elif isinstance(spec, dict):
            unknown = [k for k in spec if k not in later]
            if unknown or len(spec) != len(later):
                raise ConfigError(f"curriculum dict needs exactly the phases {', '.join(later)}; got {sorted(spec)!r}")
            starts = (0,) + tuple(int(spec[k]) for k in later)
        elif isinstance(spec, (list, tuple)) and all(isinstance(s, int) and not isinstance(s, bool) for s in spec):
            if len(spec) != len(later):
                raise ConfigError(f"curriculum needs {len(later)} steps (where {', '.join(later)} start); got {list(spec)!r}")
            starts = (0,) + tuple(spec)
        else:
            raise ConfigError(f"curriculum must be True, a dict {{'shape': step, 'texture': step}} or two steps; got {spec!r}")
        if starts[-1] >= steps:
            raise ConfigError(f"curriculum phases must start before the last step {steps}; got {list(starts)!r}")
        return cls(starts)

    @property
    def boundaries(self) -> list[int]:
        """The steps at which a phase is added (the planted stage boundaries)."""
        return list(self.starts[1:])

    def phase_at(self, step: int) -> int:
        """Index of the latest phase active at optimizer ``step``."""
        return max(k for k, s in enumerate(self.starts) if s <= step)

    def classes_at(self, step: int) -> tuple[int, ...]:
        """The classes trained on at optimizer ``step`` (sorted)."""
        return tuple(sorted(c for k in range(self.phase_at(step) + 1) for c in tuple(CURRICULUM_PHASES.values())[k]))

    def pool(self, step: int, labels: torch.Tensor) -> torch.Tensor:
        """Indices (int64, ascending) of the samples with ``labels`` ``(N,)`` in the classes of ``step``."""
        keep = torch.zeros(num_classes, dtype=torch.bool)
        keep[list(self.classes_at(step))] = True
        return torch.nonzero(keep[labels], as_tuple=False).flatten()

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: each phase's start step and classes."""
        return {"phases": [{"name": n, "start": s, "classes": [CLASSES[c] for c in cs]}
                           for (n, cs), s in zip(CURRICULUM_PHASES.items(), self.starts)]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Curriculum) and other.starts == self.starts

    def __repr__(self) -> str:
        return f"Curriculum(starts={self.starts})"
