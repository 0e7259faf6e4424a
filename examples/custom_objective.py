"""A user-defined objective combined with built-ins.

    python examples/custom_objective.py [OUTPUT_DIR]
"""

import sys
import tempfile

import torch
import torchvision

from devvis import objectives, render


@objectives.wrap_objective
def center_surround(layer, n, batch=None):
    """Channel n high in the centre of the map and low around it."""
    def inner(acts):
        t = acts[layer][:, n]
        h, w = t.shape[-2:]
        centre = t[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean(dim=(1, 2))
        return centre - t.mean(dim=(1, 2))
    return inner


def main(out: str) -> None:
    torch.manual_seed(0)  # fixes the random weights; render's seed fixes the image
    model = torchvision.models.resnet18(weights=None)
    objective = center_surround("layer2.1", 5) + 0.5 * objectives.channel("layer2.1", 9) \
        + 0.1 * objectives.total_variation()
    print("objective:", objective.description)
    result = render(model, objective, steps=24, image_size=64, progress=False)
    first, last = result.history[0].item(), result.history[-1].item()
    print(f"objective rose from {first:.3f} to {last:.3f}")
    result.save(out, names=["center_surround"])
    assert last > first


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
