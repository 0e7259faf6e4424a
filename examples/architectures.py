"""Beyond ResNet: render one channel of a CNN, a Swin transformer and a ViT, and print what happened.

    python examples/architectures.py [OUTPUT_DIR]

The three layers have three different layouts, detected from the modules:
ResNet's ``layer1.0`` is ``[B, C, H, W]``, Swin's ``features.1.0`` is channels-last
``[B, H, W, C]``, and ViT's encoder layers are tokens ``[B, 197, 768]`` (a channel is
an embedding dimension, here averaged over the patch tokens, leaving out the class
token). ViT only accepts 224 px inputs: devvis resizes the 64 px image to that by
itself. All weights are random; nothing is downloaded.
"""

import sys
import tempfile
import time

import torch

from devvis import objectives, render
from devvis.architectures import FAMILIES, fixed_input_size
from devvis.hooks import ActivationRecorder

TARGETS = {  # model -> (layer, channel, extra objective options)
    "resnet18": ("layer1.0", 5, {}),
    "swin_t": ("features.1.0", 5, {}),
    "vit_b_16": ("encoder.layers.encoder_layer_1", 5, {"token": "patches"}),
}


def main(out: str) -> None:
    for fam in FAMILIES:
        if fam.model not in TARGETS:
            continue
        layer, channel, options = TARGETS[fam.model]
        model = fam.build()
        with ActivationRecorder(model, [layer]) as rec, torch.no_grad():
            acts = rec.run(torch.rand(1, 3, *(fixed_input_size(model) or (64, 64))))
        t0 = time.perf_counter()
        result = render(model, objectives.channel(layer, channel, **options), steps=8, image_size=64,
                        progress=False)
        paths = result.save(out, names=[f"{fam.model}_{layer}_channel_{channel}"])
        values = result.history[:, 0]
        print(f"{fam.family:<8} {layer:<32} layout={acts.layout(layer):<6} shape={tuple(acts[layer].shape)} "
              f"input_size={result.config['input_size']} objective {values[0]:.3f} -> {values[-1]:.3f} "
              f"({time.perf_counter() - t0:.1f} s) wrote {paths[0].name}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
