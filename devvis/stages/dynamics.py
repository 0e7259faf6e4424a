"""Essential dynamics: the model's outputs on fixed probe images at every checkpoint, and their PCA.

At checkpoint ``i`` the model's response to ``N`` fixed probe images (its logits, or a layer's
activations averaged over positions/tokens) is flattened into one vector ``y_i`` of length
``N·K``. Stacking the checkpoints gives ``Y (n, N·K)``; centred over checkpoints, its top principal
components (numpy SVD) give the trajectory ``pcs (n, k)``. Turns in that trajectory (see
:mod:`devvis.stages.turns`) are where training changes what the model computes. Following Hoogland
et al. (2024, "Loss landscape degeneracy and stagewise development in transformers") the turning
points are found on the PC trajectory: the top components hold the developmental directions, the
many small ones mostly sampling noise. With ``labels``, the cross-entropy on the probe images is
measured from the same forward passes (``loss``).

>>> import torch
>>> from torch import nn
>>> nets = {s: nn.Sequential(nn.Flatten(), nn.Linear(12, 3)) for s in (0, 5, 10)}
>>> ed = essential_dynamics(nets, torch.rand(4, 3, 2, 2), n_components=2)
>>> ed.steps, ed.pcs.shape, ed.outputs_shape
([0, 5, 10], (3, 2), (4, 3))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from devvis.errors import ConfigError
from devvis.hooks import ActivationRecorder
from devvis.longitudinal import as_series
from devvis.render.pipeline import ModelInput, auto_preprocess
from devvis.stages.turns import DEFAULT_THRESHOLD, TurningPoint, turning_points, turns
from devvis.state import frozen
from devvis.typing import ImageBatch, PathLike, PreprocessLike, SeriesLike


@dataclass
class EssentialDynamics:
    """The essential-dynamics trajectory of a checkpoint series.

    ``steps`` (n,); ``pcs`` ``(n, k)`` float64, the trajectory in its top ``k`` principal components;
    ``explained`` ``(k,)``, each component's share of the variance over checkpoints; ``turn``
    ``(n,)``, the turn at each checkpoint (:func:`devvis.stages.turns.turns`) and ``turning_points``;
    ``loss`` the probe cross-entropy per checkpoint (when labels were given); ``source``: ``"logits"``
    or the layer name; ``outputs_shape``: ``(N, K)`` per checkpoint.
    """

    steps: list[int]
    pcs: np.ndarray
    explained: np.ndarray
    turn: np.ndarray
    turning_points: list[TurningPoint]
    source: str
    outputs_shape: tuple[int, int]
    loss: list[float] | None = None
    outputs: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps), "source": self.source, "outputs_shape": list(self.outputs_shape),
            "pcs": np.round(self.pcs, 6).tolist(), "explained_variance_ratio": np.round(self.explained, 6).tolist(),
            "turn": np.round(self.turn, 4).tolist(), "turning_points": [p.to_dict() for p in self.turning_points],
            "loss": self.loss,
            "definitions": {
                "pcs": "rows: checkpoints; columns: top principal components of the model's outputs on the "
                       "probe images (flattened per checkpoint, centred over checkpoints)",
                "turn": "||v_i - v_{i-1}|| / median_j ||v_j||, v_i = (pcs[i+1] - pcs[i]) / (steps[i+1] - steps[i])",
                "turning_points": "checkpoints whose turn's robust z-score (median, 1.4826 MAD over the run) is >= "
                                  "the threshold and the largest within +-1 checkpoint",
                "loss": "mean cross-entropy of the logits on the probe labels"},
        }


def pooled(a: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> mean over positions; (B, T, C) -> mean over tokens; (B, K) as is."""
    if a.ndim == 4:
        return a.mean(dim=(2, 3))
    if a.ndim == 3:
        return a.mean(dim=1)
    return a.flatten(1)


@torch.no_grad()
def probe_outputs(model: nn.Module, images: ImageBatch, *, layer: str | None = None,
                  preprocess: PreprocessLike = "auto", batch_size: int = 128) -> torch.Tensor:
    """The model's logits (``layer=None``) or ``layer``'s pooled activations on ``images``.

    Shape: images ``(N, C, H, W)`` in [0, 1] -> float32 ``(N, K)`` on the CPU. The model is borrowed in
    eval mode through :func:`devvis.state.frozen`; images go through :class:`ModelInput`.
    """
    feed = ModelInput(model, preprocess=preprocess)
    rows = []
    with frozen(model, mode="eval") as m:
        dev = next((p.device for p in m.parameters()), torch.device("cpu"))
        for i in range(0, len(images), batch_size):
            x = feed(images[i:i + batch_size].to(dev))
            if layer is None:
                out = m(x)
            else:
                with ActivationRecorder(m, [layer]) as rec:
                    out = next(iter(rec.run(x).values()))
            rows.append(pooled(out.detach().float()).cpu())
    return torch.cat(rows)


def pca(outputs: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Top principal components of ``outputs`` ``(n, D)`` centred over rows: ``(n, k)`` scores and ``(k,)`` variance shares."""
    y = outputs - outputs.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(y, full_matrices=False)
    k = min(n_components, len(s))
    total = float((s ** 2).sum()) or 1.0
    return u[:, :k] * s[:k], (s[:k] ** 2) / total


def essential_dynamics(series: SeriesLike, inputs: ImageBatch, *, labels: torch.Tensor | None = None,
                       layer: str | None = None, n_components: int = 3, threshold: float = DEFAULT_THRESHOLD,
                       preprocess: PreprocessLike = "auto", keep_outputs: bool = False,
                       progress: bool = False) -> EssentialDynamics:
    """Essential dynamics of ``series`` on probe ``inputs`` (module docstring).

    Args:
        series: a :class:`~devvis.longitudinal.CheckpointSeries`, ``{step: model}`` or checkpoint paths.
        inputs: probe images ``(N, C, H, W)`` in [0, 1], the same at every checkpoint.
        labels: ``(N,)`` int64 class labels: adds the probe cross-entropy per checkpoint (logits only).
        layer: ``None`` for the model's outputs, or a layer whose pooled activations are used.
        n_components: principal components kept (3: PC1–PC2 and PC1–PC3 are plotted).
        threshold: turning-point threshold on the turn.
        keep_outputs: keep the raw ``(n, N·K)`` outputs in ``.outputs``.
    """
    s = as_series(series)
    if labels is not None and layer is not None:
        raise ConfigError("labels give the probe loss of the logits; use layer=None with labels")
    if labels is not None and len(labels) != len(inputs):
        raise ConfigError(f"labels must have one entry per probe image: {len(labels)} labels, {len(inputs)} images")
    rows, losses, shape = [], [], (0, 0)
    for _, model in tqdm(s, total=len(s), disable=not progress, desc="essential dynamics", unit="ckpt"):
        out = probe_outputs(model, inputs, layer=layer, preprocess=auto_preprocess(preprocess, model))
        shape = tuple(out.shape)
        if labels is not None:
            losses.append(float(F.cross_entropy(out, labels.long().cpu())))
        rows.append(out.flatten().double().numpy())
    if len(rows) < 3:
        raise ConfigError(f"essential dynamics needs at least 3 checkpoints; the series has {len(rows)}")
    outputs = np.stack(rows)
    pcs, explained = pca(outputs, n_components)
    return EssentialDynamics(
        steps=list(s.steps), pcs=pcs, explained=explained, turn=turns(s.steps, pcs),
        turning_points=turning_points(s.steps, pcs, threshold=threshold), source=layer or "logits",
        outputs_shape=(int(shape[0]), int(shape[1])), loss=losses or None, outputs=outputs if keep_outputs else None)


def plot_essential_dynamics(ed: EssentialDynamics, output_path: PathLike, *,
                            boundaries: Sequence[int] = ()) -> PathLike:
    """PC1–PC2 and PC1–PC3 (points coloured by step, every checkpoint's step written beside it, turning
    points circled, ``boundaries`` steps as red squares) and the turn against step; a PNG at ``output_path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from devvis import io as dio

    k = ed.pcs.shape[1]
    pairs = [(0, j) for j in range(1, min(k, 3))]
    fig, axes = plt.subplots(1, len(pairs) + 1, figsize=(4.6 * (len(pairs) + 1), 4.2), layout="constrained")
    turning = {p.index for p in ed.turning_points}
    marked = {i for i, st in enumerate(ed.steps) if st in set(boundaries)}
    for ax, (a, b) in zip(axes, pairs):
        x, y = ed.pcs[:, a], ed.pcs[:, b]
        ax.plot(x, y, "-", color="0.7", lw=1, zorder=1)
        sc = ax.scatter(x, y, c=np.arange(len(x)), cmap="viridis", s=22, zorder=2)
        for i, st in enumerate(ed.steps):
            if len(ed.steps) <= 40 or i in turning or i in marked or i % max(1, len(ed.steps) // 20) == 0:
                ax.annotate(str(st), (x[i], y[i]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.scatter(x[sorted(turning)], y[sorted(turning)], s=110, facecolors="none", edgecolors="k", zorder=3,
                   label="turning point")
        if marked:
            ax.scatter(x[sorted(marked)], y[sorted(marked)], s=60, marker="s", facecolors="none",
                       edgecolors="red", zorder=3, label="stage boundary")
        ax.set_xlabel(f"PC{a + 1} ({100 * ed.explained[a]:.0f}%)")
        ax.set_ylabel(f"PC{b + 1} ({100 * ed.explained[b]:.0f}%)")
        ax.legend(fontsize=7, loc="best")
    fig.colorbar(sc, ax=axes[len(pairs) - 1], label="checkpoint index")
    ax = axes[-1]
    ax.plot(ed.steps, ed.turn, "o-", ms=3)
    for st in boundaries:
        ax.axvline(st, color="red", lw=1, ls="--")
    ax.set_xlabel("training step")
    ax.set_ylabel("turn")
    ax.set_title("turn of the PC trajectory")
    fig.suptitle(f"essential dynamics ({ed.source}, {ed.outputs_shape[0]} probe images)")
    dio.write_figure(output_path, fig)
    return output_path
