"""How a channel develops over training: a checkpoint series, activation trajectories, a grid, metrics.

    python examples/longitudinal.py [OUTPUT_DIR]

Trains devvis's compact ResNet on generated shapes for 60 steps (checkpoints at
0, 1, 2, 4, ..., 32, 60), then for two channels of ``layer2.0``:

* ``activations_layer2.0_channel_C.png`` (+ .json): the channel's mean activation on
  held-out probe images at every checkpoint (mean ± std band);
* ``grid.png`` (+ .json): their feature visualizations, rows = channels, columns = checkpoints;
* ``layer2.0_channel_C_similarity.png`` / ``_matrix.png`` (+ .json): how much of the final
  visualization's feature-driven response (a grey image's response subtracted) each
  checkpoint's visualization evokes in the final channel, the step at which it settles (or
  "not settled" / "not comparable"), and how different each visualization *looks* from the
  final one in the final checkpoint's early layers.

Runs in well under a minute on a laptop CPU. The models are devvis zoo models, trained on
raw [0, 1] images; they carry that default, which ``preprocess="auto"`` (the default
everywhere) reads, so no preprocessing argument is needed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from devvis import objectives
from devvis.data import probe_batch
from devvis.longitudinal import (CheckpointSeries, comparison_grid, feature_change, get_activations,
                                 plot_longitudinal_activations, plot_matrix, plot_similarity, render_series)
from devvis.zoo import train_series

LAYER, CHANNELS = "layer2.0", [1, 5]


def run(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    trained = train_series(out / "checkpoints", steps=60, width=8, blocks=(1, 1), n_train=512, n_test=48,
                           batch_size=32, progress=False)
    print(f"trained {len(trained.steps)} checkpoints (steps {trained.steps}), "
          f"held-out accuracy {trained.test_accuracy[0]:.2f} -> {trained.final_accuracy:.2f}")

    series = CheckpointSeries(out / "checkpoints")  # architecture from model_config.json, one model at a time
    written = []
    probe = probe_batch(24, size=32, seed=0)
    for c in CHANNELS:
        acts = get_activations(None, LAYER, c, series, probe)
        written.append(plot_longitudinal_activations(acts, LAYER, c, out / f"activations_{LAYER}_channel_{c}.png"))
        print(f"{LAYER}:{c} mean activation on the probe: "
              + ", ".join(f"{s}: {m:.2f}" for s, m in zip(acts.steps, acts.mean.tolist())))

    # every checkpoint starts from the same image and sees the same transforms: only the model differs
    renders = render_series(series, objectives.channels(LAYER, CHANNELS), seed=0, steps=48, image_size=40,
                            lr=0.1, progress=False)
    renders.save(out / "renders")
    comparison_grid(renders, output_path=out / "grid.png")
    written.append(out / "grid.png")
    for c in CHANNELS:
        change = feature_change(series, renders, LAYER, c, threshold=0.8, baseline="grey")
        written += [plot_similarity(change, out / f"{LAYER}_channel_{c}_similarity.png"),
                    plot_matrix(change, out / f"{LAYER}_channel_{c}_matrix.png")]
        settled = (f"settles at step {change.settle_step}" if change.settle_step is not None
                   else f"{change.settle_status}: {change.settle_reason}")
        print(f"{LAYER}:{c} similarity to the final feature (grey baseline {change.baseline_values[-1]:.2f} "
              "subtracted): " + ", ".join(f"{s}: {v:.2f}" for s, v in zip(change.steps, change.similarity))
              + f"; {settled}")
        assert change.appearance is not None
        print(f"{LAYER}:{c} appearance distance to the final visualization "
              f"({', '.join(change.appearance.layers)}): "
              + ", ".join(f"{s}: {v:.3f}" for s, v in zip(change.steps, change.appearance.to_final)))
    print("wrote:")
    for p in written:
        print(f"  {p} (+ {p.with_suffix('.json').name})")
    print(f"  {out / 'renders'} (visualizations per checkpoint, series_result.json)")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        return run(Path(argv[1]))
    with tempfile.TemporaryDirectory(prefix="devvis_longitudinal_") as tmp:
        return run(Path(tmp))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
