"""The atlas layout: activations over a dataset at a layer, reduced to 2-D, binned into a grid.

Carter et al. (2019, "Activation Atlas") sample activation vectors at random spatial positions
of many images, place them in 2-D with a manifold method (UMAP there), bin the plane into a
grid and render one feature visualization per non-empty cell from the cell's mean activation.
This module does the first three steps; :mod:`devvis.atlas.atlas` renders.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU())
>>> s = sample_activations(model, "1", torch.rand(10, 3, 12, 12), positions_per_image=2, preprocess=None)
>>> tuple(s.vectors.shape), tuple(s.where.shape)
((20, 6), (20, 2))
>>> xy = reduce_2d(s.vectors, method="pca")
>>> bool(xy.min() >= 0 and xy.max() <= 1)
True
>>> [(c.row, c.col) for c in grid_cells(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), 2)]
[(0, 0), (1, 1)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from devvis.errors import ConfigError
from devvis.objectives import channels_first
from devvis.trust.record import batched, recorded
from devvis.typing import ImageBatch, PreprocessLike

__all__ = ["Samples", "Cell", "sample_activations", "activations_at", "reduce_2d", "grid_cells", "mean_directions",
           "METHODS"]

#: 2-D reductions: t-SNE and PCA from scikit-learn (``pip install devvis[atlas]``), UMAP from umap-learn.
METHODS = ("tsne", "umap", "pca")


@dataclass
class Samples:
    """Activation vectors ``vectors`` ``(N, C)`` and where each was read: ``where`` ``(N, 2)`` = (image, position).

    ``position`` indexes the layer's flattened positions (``H * W`` of a conv map, tokens of a
    token layer), so the same places can be read again under another checkpoint.
    """

    vectors: torch.Tensor
    where: torch.Tensor


@dataclass
class Cell:
    """One non-empty grid cell: ``row``, ``col``, the indices of its samples (``members``) and their count."""

    row: int
    col: int
    members: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.members.numel())


def _flat(acts, layer: str) -> torch.Tensor:
    t = channels_first(acts, layer)
    return t.reshape(t.shape[0], t.shape[1], -1)  # (B, C, P)


def sample_activations(model: nn.Module, layer: str, images: ImageBatch, *, positions_per_image: int = 4,
                       preprocess: PreprocessLike = "auto", input_size: int | tuple[int, int] | None = None,
                       batch_size: int = 64, seed: int = 0) -> Samples:
    """Activation vectors of ``layer`` at ``positions_per_image`` random positions of each image.

    ``images``: ``(N, C, H, W)`` in [0, 1], fed as ``objectives.evaluate`` feeds them (no transforms,
    ``preprocess="auto"``). A layer with fewer positions than asked gives all of them. Returns
    :class:`Samples` (float32, CPU); the positions come from a generator seeded with ``seed``.
    """
    if not isinstance(positions_per_image, int) or positions_per_image < 1:
        raise ConfigError(f"positions_per_image must be a positive integer, got {positions_per_image!r}")
    g = torch.Generator().manual_seed(int(seed))
    vectors, where = [], []
    for start, _, acts in recorded(model, [layer], batched(images, batch_size), preprocess=preprocess,
                                   input_size=input_size):
        a = _flat(acts, layer).float().cpu()
        b, _, p = a.shape
        k = min(positions_per_image, p)
        pos = torch.stack([torch.randperm(p, generator=g)[:k] for _ in range(b)])        # (B, k)
        vectors.append(a.gather(2, pos[:, None, :].expand(-1, a.shape[1], -1)).permute(0, 2, 1).reshape(b * k, -1))
        img = torch.arange(start, start + b)[:, None].expand(-1, k)
        where.append(torch.stack([img.reshape(-1), pos.reshape(-1)], dim=1))
    return Samples(torch.cat(vectors), torch.cat(where))


def activations_at(model: nn.Module, layer: str, images: ImageBatch, where: torch.Tensor, *,
                   preprocess: PreprocessLike = "auto", input_size: int | tuple[int, int] | None = None,
                   batch_size: int = 64) -> torch.Tensor:
    """``(N, C)``: the activation vectors of ``layer`` at the (image, position) pairs ``where`` (e.g. another
    checkpoint's :attr:`Samples.where`)."""
    out = torch.empty(0)
    for start, imgs, acts in recorded(model, [layer], batched(images, batch_size), preprocess=preprocess,
                                      input_size=input_size):
        a = _flat(acts, layer).float().cpu()
        if out.numel() == 0:
            out = torch.zeros(where.shape[0], a.shape[1])
        rows = ((where[:, 0] >= start) & (where[:, 0] < start + imgs.shape[0])).nonzero().flatten()
        if rows.numel():
            if int(where[rows, 1].max()) >= a.shape[2]:
                raise ConfigError(f"layer {layer!r} has {a.shape[2]} positions here but the layout read position "
                                  f"{int(where[rows, 1].max())}: the checkpoints' layers differ in size")
            out[rows] = a[where[rows, 0] - start, :, where[rows, 1]]
    return out


def reduce_2d(vectors: torch.Tensor, *, method: str = "tsne", seed: int = 0) -> torch.Tensor:
    """``(N, C)`` -> ``(N, 2)`` in [0, 1] (each axis scaled to the unit interval).

    ``"tsne"`` (scikit-learn's t-SNE on cosine distances, PCA-initialized), ``"umap"``
    (umap-learn, cosine metric: Carter et al.'s choice; install it to use it) or ``"pca"``.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown atlas reduction {method!r}; valid: {', '.join(METHODS)}")
    x = vectors.detach().double().cpu().numpy()
    n = x.shape[0]
    if n < 3:
        raise ConfigError(f"an atlas needs at least 3 activation samples to lay out, got {n}")
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ConfigError("method='umap' needs umap-learn (pip install umap-learn); or use 'tsne' or 'pca'") from None
        xy = umap.UMAP(n_components=2, metric="cosine", random_state=seed,
                       n_neighbors=min(15, n - 1)).fit_transform(x)
    else:
        try:
            from sklearn.decomposition import PCA
            from sklearn.manifold import TSNE
        except ImportError:
            raise ConfigError(f"method={method!r} needs scikit-learn (pip install devvis[atlas])") from None
        if method == "pca":
            xy = PCA(n_components=2, random_state=seed).fit_transform(x)
        else:
            xy = TSNE(n_components=2, metric="cosine", init="pca", random_state=seed,
                      perplexity=float(min(30.0, max(2.0, (n - 1) / 3)))).fit_transform(x)
    xy = np.asarray(xy, dtype=np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return torch.from_numpy((xy - lo) / np.where(hi > lo, hi - lo, 1.0)).float()


def grid_cells(coords: torch.Tensor, grid: int, *, min_count: int = 1) -> list[Cell]:
    """Bin ``coords`` ``(N, 2)`` in [0, 1] (x, y) into a ``grid x grid`` grid; the cells with ``min_count`` or
    more samples, row by row (row 0 at the top: small y)."""
    if not isinstance(grid, int) or grid < 1:
        raise ConfigError(f"grid must be a positive integer, got {grid!r}")
    idx = (coords.clamp(0, 1) * grid).long().clamp(max=grid - 1)
    flat = idx[:, 1] * grid + idx[:, 0]
    cells = []
    for key in torch.unique(flat).tolist():
        members = (flat == key).nonzero().flatten()
        if members.numel() >= min_count:
            cells.append(Cell(row=key // grid, col=key % grid, members=members))
    return cells


def mean_directions(vectors: torch.Tensor, cells: Sequence[Cell]) -> torch.Tensor:
    """``(K, C)``: the mean activation vector of each cell's samples."""
    return torch.stack([vectors[c.members].mean(dim=0) for c in cells])
