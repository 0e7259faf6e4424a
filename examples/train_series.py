"""Train a quick checkpoint series of the compact ResNet on synthetic shapes and print its accuracy.

    python examples/train_series.py [OUTPUT_DIR]

Without OUTPUT_DIR the series goes to a temporary folder. The folder then holds
step_000000.safetensors ... step_000300.safetensors (steps 0, 1, 2, 4, ..., 256, 300),
model_config.json and series.json; running the script again on the same folder
reuses the series instead of retraining. Takes about 20 s of one CPU core.
"""

from __future__ import annotations

import sys
import tempfile

from devvis.data import CLASSES
from devvis.models import load_model
from devvis.zoo import QUICK_SETTINGS, train_series


def main(argv: list[str]) -> int:
    out = argv[1] if len(argv) > 1 else tempfile.mkdtemp(prefix="devvis_series_")
    # One thread keeps the run near 20 s of CPU however busy the machine is: on a loaded two-core
    # machine, two threads mostly waited for each other (measured 6x the CPU time of one).
    result = train_series(out, **QUICK_SETTINGS, threads=1, progress=True)
    print(f"{'reused' if result.reused else 'trained'} series in {result.output_dir} "
          f"({len(CLASSES)} classes, chance {100 / len(CLASSES):.1f}%)")
    for step, loss, acc in zip(result.steps, result.train_loss, result.test_accuracy):
        print(f"  step {step:4d}  train loss {loss:.3f}  held-out accuracy {100 * acc:5.1f}%")
    model = load_model(None, checkpoint=result.final_checkpoint)  # rebuilt from the file's own metadata
    print(f"final checkpoint {result.final_checkpoint.name}: {sum(p.numel() for p in model.parameters())} "
          f"parameters, held-out accuracy {100 * result.final_accuracy:.1f}%")
    # The registry's defaults travel with the model: zoo models take raw [0, 1] images, so
    # render(..., preprocess="auto") feeds them unnormalized.
    print(f"registry defaults on the model: {model.devvis_cfg}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
