"""Dataset examples and trust verdicts over a checkpoint series.

    python examples/trust.py [OUTPUT_DIR]

Trains devvis's compact ResNet briefly on SyntheticShapes (two checkpoints), then for two
channels of ``layer1.0`` at each checkpoint:
1. finds their top dataset examples in held-out SyntheticShapes images, with the receptive-field
   crop of the position where each channel responds most (``devvis.trust.dataset_examples``);
2. renders two visualizations per channel from independent random starts and scores them with the
   five trust metrics (natural-max ratio, seed stability, transform robustness, path similarity,
   spectral distance), each with a verdict ``trustworthy`` / ``suspicious: reason``;
and writes ``OUTPUT_DIR/trust/`` (trust.json, examples/, visualizations/). Definitions: docs/trust.md.
"""

import sys
import tempfile
from pathlib import Path

from devvis.data import SyntheticShapes
from devvis.longitudinal import CheckpointSeries
from devvis.trust import trust
from devvis.zoo import train_series


def main(out: str) -> None:
    ckpts = Path(out) / "checkpoints"
    train_series(ckpts, steps=30, checkpoint_steps=[0, 30], width=8, blocks=(1, 1), n_train=256, n_test=32,
                 batch_size=32, seed=0, progress=False)
    series = CheckpointSeries(ckpts)
    dataset = SyntheticShapes(128, size=32, seed=0, split="test")  # any folder, tensor, Dataset or DataLoader
    res = trust(series, ["layer1.0:0", "layer1.0:1"], dataset, k=4, seeds=2, steps=24, image_size=32,
                progress=False)
    files = res.save(Path(out) / "trust")
    rf = res.examples.units["layer1.0:0"].receptive_field
    print(f"receptive field of layer1.0: {rf.size[0]}x{rf.size[1]} pixels, stride {rf.stride[0]}")
    for line in res.summary_lines():
        print(line)
    final = res.units["layer1.0:0"][-1]
    print(f"layer1.0:0 at step {final.step}: natural-max ratio {final.natural_max_ratio:.2f}, path similarity "
          f"{final.path.score:.2f}, verdict {final.verdict}")
    print(f"wrote {len(files)} files to {Path(out) / 'trust'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="devvis_trust_"))
