"""Feature accentuation (Hamblin et al. 2024): what a channel responds to in one given image.

    python examples/accentuation.py [OUTPUT_DIR]

The optimization starts from a natural image (here a SyntheticShapes probe image) and raises
a channel while ``objectives.closeness`` keeps the image near its seed, in pixels and, as in
the paper, in an earlier layer's activations.
"""

import sys
import tempfile

import torchvision

from devvis import objectives
from devvis.accentuation import accentuate
from devvis.data import probe_batch


def main(out: str) -> None:
    model = torchvision.models.resnet18(weights=None).eval()  # random weights: nothing is downloaded
    seed = probe_batch(2, 64, seed=0)                            # two held-out synthetic images, (2, 3, 64, 64)
    unit = objectives.channel("layer2.1", 7)
    before = objectives.evaluate(model, unit, seed, input_size=128)
    for layer in ("input", "layer1.0"):
        result = accentuate(model, unit, seed, closeness_layer=layer, steps=24, input_size=128)
        after = objectives.evaluate(model, unit, result.images, input_size=128)
        rms = (result.images - seed).pow(2).mean(dim=(1, 2, 3)).sqrt()
        print(f"closeness in {layer}: channel {[round(v, 3) for v in before.tolist()]} -> "
              f"{[round(v, 3) for v in after.tolist()]}, RMS change {[round(v, 3) for v in rms.tolist()]}")
        paths = result.save(out, names=[f"accentuated_{layer}_{i}" for i in range(2)])
    print("wrote:", *[p.name for p in paths])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
