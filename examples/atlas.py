"""Activation atlas (Carter et al. 2019) of a model trained on synthetic data, and its layout over training.

    python examples/atlas.py [OUTPUT_DIR]

Trains a tiny model for a few steps (a checkpoint series), samples layer2.0's activations over
held-out synthetic images, lays them out in 2-D (t-SNE, scikit-learn), and renders each grid cell
from its mean activation; then renders the final checkpoint's layout at every checkpoint.
"""

import os
import sys
import tempfile

from devvis.atlas import activation_atlas, atlas_series
from devvis.data import probe_batch
from devvis.longitudinal import CheckpointSeries
from devvis.zoo.train import train_series


def main(out: str) -> None:
    ckpts = os.path.join(out, "ckpts")
    train_series(ckpts, steps=20, checkpoint_steps=[0, 5, 20], width=4, n_train=256, n_test=32, progress=False)
    series = CheckpointSeries(ckpts)
    images = probe_batch(64, 32, seed=0)
    kw = dict(grid=3, positions_per_image=2, steps=16, image_size=32)
    atlas = activation_atlas(series[series.final_step], "layer2.0", images, **kw)
    atlas.step = series.final_step
    atlas.save(os.path.join(out, "final"))
    print(f"final atlas: {len(atlas.cells)} cells, samples per cell {[c.count for c in atlas.cells]}")
    res = atlas_series(series, "layer2.0", images, **kw)
    files = res.save(os.path.join(out, "series"))
    print("same layout at steps", res.steps, "| wrote", *[os.path.relpath(f, out) for f in files[-2:]])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
