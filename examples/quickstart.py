"""Quick start: render two channels of a randomly initialised ResNet-18 and save them.

    python examples/quickstart.py [OUTPUT_DIR]
"""

import sys
import tempfile

import torchvision

from devvis import objectives, render


def main(out: str) -> None:
    model = torchvision.models.resnet18(weights=None)  # random weights: nothing is downloaded
    result = render(model, objectives.channels("layer2.1", [3, 7]), steps=32, image_size=64,
                    input_size=128, progress=False)
    paths = result.save(out, names=["layer2.1_channel_3", "layer2.1_channel_7"])
    print("final values:", [round(v, 3) for v in result.final_values.tolist()])
    print("wrote:", *[p.name for p in paths])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
