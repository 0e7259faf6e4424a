"""Hyperparameter sweep for the LLC estimator: loss traces over a grid of settings.

SGLD's step size ε and localization γ (or nβ) must be chosen per model: a good setting
gives loss traces that rise from L(w*) and then flatten, with no NaNs and no runaway
growth. :func:`llc_sweep` runs :func:`~devvis.slt.estimate_llc` over a grid and draws one
subplot of traces per setting, so the choice can be made by eye and recorded.

>>> import torch
>>> from torch import nn
>>> model = nn.Linear(2, 1)
>>> x = torch.randn(64, 2); y = model(x).detach()
>>> res = llc_sweep(model, [(x, y)], nn.functional.mse_loss, lrs=[1e-4, 1e-3],
...                 localizations=[10.0], num_chains=1, num_draws=20, progress=False)
>>> [r.hyperparameters["lr"] for r in res]
[0.0001, 0.001]
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from devvis.errors import ConfigError
from devvis.slt.batches import Criterion, Loader
from devvis.slt.llc import estimate_llc
from devvis.slt.result import LLCResult, plot_traces_on
from devvis.typing import PathLike

__all__ = ["llc_sweep"]


def _values(name: str, values: Sequence[float] | None) -> list[float | None]:
    if values is None:
        return [None]
    values = list(values)
    if not values:
        raise ConfigError(f"{name} is empty; give at least one value")
    return values


def llc_sweep(
    model: nn.Module,
    loader: Loader,
    criterion: Criterion,
    *,
    lrs: Sequence[float],
    localizations: Sequence[float] | None = None,
    nbetas: Sequence[float] | None = None,
    output_dir: PathLike | None = None,
    progress: bool = True,
    **llc_kwargs: Any,
) -> list[LLCResult]:
    """Estimate the LLC for every combination of ``lrs`` × ``localizations`` × ``nbetas``.

    Args:
        model, loader, criterion: as for :func:`~devvis.slt.estimate_llc`.
        lrs: step sizes to try.
        localizations: γ values to try (default: ``llc_kwargs["localization"]`` or the estimator's default).
        nbetas: nβ values to try (default: ``llc_kwargs["nbeta"]`` or the estimator's default).
        output_dir: folder; when given, writes ``llc_sweep.png`` (rows: lr; columns:
            γ × nβ; one subplot of loss traces each, titled with the estimate) and
            ``llc_sweep.json`` (each setting's numbers and diagnostics, without traces).
        progress: progress bar per estimate.
        **llc_kwargs: any other :func:`estimate_llc` keyword (seed, num_chains, num_draws, ...),
            shared by every setting.

    Returns:
        One :class:`~devvis.slt.LLCResult` per setting, lr-major (lr, then γ, then nβ).
    """
    lr_values = _values("lrs", lrs)
    if lr_values == [None]:
        raise ConfigError("lrs must list at least one step size")
    if localizations is not None and "localization" in llc_kwargs:
        raise ConfigError("give either localizations=[...] or localization=..., not both")
    if nbetas is not None and "nbeta" in llc_kwargs:
        raise ConfigError("give either nbetas=[...] or nbeta=..., not both")
    gammas = _values("localizations", localizations)
    betas = _values("nbetas", nbetas)

    results: list[LLCResult] = []
    for lr, gamma, nbeta in itertools.product(lr_values, gammas, betas):
        kwargs = dict(llc_kwargs)
        kwargs["lr"] = lr
        if gamma is not None:
            kwargs["localization"] = gamma
        if nbeta is not None:
            kwargs["nbeta"] = nbeta
        results.append(estimate_llc(model, loader, criterion, progress=progress, **kwargs))

    if output_dir is not None:
        _write(Path(output_dir), results, len(lr_values), len(gammas) * len(betas))
    return results


def _write(folder: Path, results: list[LLCResult], rows: int, cols: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from devvis.io import metadata, write_figure, write_json

    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False, sharex=True)
    for i, res in enumerate(results):
        ax = axes[i // cols][i % cols]
        plot_traces_on(ax, res)
        h = res.hyperparameters
        est = f"{res.llc_mean:.3g}" if math.isfinite(res.llc_mean) else "nan"
        ax.set_title(f"ε={h['lr']:.2g} γ={h['localization']:.3g} nβ={h['nbeta']:.3g}\nLLC={est}", fontsize=8)
        if res.diagnostics:
            ax.set_facecolor("#fff0f0")  # a setting with warnings stands out in the grid
        if i % cols:
            ax.set_ylabel("")
        if i // cols != rows - 1:
            ax.set_xlabel("")
    fig.suptitle("LLC sweep: pick settings whose traces rise and flatten (red: diagnostics fired)", fontsize=9)
    write_figure(folder / "llc_sweep.png", fig)
    write_json(
        folder / "llc_sweep.json",
        metadata("llc_sweep", settings=[r.to_dict(include_traces=False) for r in results]),
    )
