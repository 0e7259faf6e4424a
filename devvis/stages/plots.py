"""The stages timeline: each signal's z-score over training, the boundaries and the stages between them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from devvis import io as dio
from devvis.typing import PathLike

if TYPE_CHECKING:
    from devvis.stages.result import StagesResult


def plot_timeline(result: "StagesResult", output_path: PathLike) -> PathLike:
    """Top: each signal's turn z-score and the combined score against step, the detection threshold,
    boundaries (±uncertainty shaded) and planted curriculum steps (green, dashed). Bottom: the stages as bars
    with the number of units assigned to each (formed there; settled there with ``assign="settle"``). PNG at
    ``output_path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(2, 1, figsize=(9, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    steps = np.asarray(result.steps)
    for name, z in result.z.items():
        ax.plot(steps[1:-1], z, "o-", ms=3, lw=1, label=name)
    from devvis.stages.detect import combined_score

    ax.plot(steps[1:-1], combined_score(result.z, result.settings.get("weights")), "k-", lw=2, label="combined")
    ax.axhline(result.settings.get("threshold", 3.0), color="0.5", ls=":", lw=1, label="threshold")
    for p in result.planted or []:
        ax.axvline(p["step"], color="green", lw=1, ls="--")
        ax.annotate(f"planted: {p['phase']}", (p["step"], ax.get_ylim()[0]), fontsize=6, color="green",
                    rotation=90, va="bottom", ha="right")
    for b in result.boundaries:
        ax.axvspan(*b.step_range, color="red", alpha=0.12)
        ax.axvline(b.step, color="red", lw=1)
        ax.annotate(f"{b.step}\n" + "+".join(b.signals), (b.step, ax.get_ylim()[1]), fontsize=6,
                    ha="center", va="top")
    ax.set_ylabel("turn (robust z)")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"{len(result.boundaries)} boundaries, {len(result.stages)} stages")
    colours = plt.get_cmap("tab10")
    for st in result.stages:
        bx.barh(0, st.end - st.start, left=st.start, color=colours(st.index % 10), alpha=0.6)
        verb = "settled" if result.settings.get("assign") == "settle" else "formed"
        bx.text((st.start + st.end) / 2, 0, f"stage {st.index}\n{len(st.units)} units {verb}", ha="center", va="center",
                fontsize=7)
    bx.set_yticks([])
    bx.set_xlabel("training step")
    dio.write_figure(output_path, fig)
    return output_path
