"""Transparent feature visualizations (Lucid's alpha parameterization): only what drives a channel stays opaque.

    python examples/transparency.py [OUTPUT_DIR]

The image has a fourth, opacity channel; each step it is composited over a new random
background (``transforms.standard(alpha=True)``), and ``objectives.transparency()`` rewards
transparent pixels, so the channel's pattern is what stays opaque. Saved as PNG with alpha.
"""

import sys
import tempfile

import torchvision

from devvis import objectives, param, render, transforms


def main(out: str) -> None:
    model = torchvision.models.resnet18(weights=None)  # random weights: nothing is downloaded
    obj = objectives.channels("layer2.1", [3, 7]) + 0.05 * objectives.transparency()
    result = render(model, obj, param.image(64, batch=2, alpha=True, seed=0), steps=32, input_size=128,
                    transforms=transforms.standard(alpha=True), progress=False)
    alpha = result.images[:, 3]
    print("images:", tuple(result.images.shape), "mean opacity per image:", [round(v, 3) for v in
                                                                               alpha.mean(dim=(1, 2)).tolist()])
    paths = result.save(out, names=["layer2.1_channel_3_alpha", "layer2.1_channel_7_alpha"])
    print("wrote:", *[p.name for p in paths])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
