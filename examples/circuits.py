"""Circuits on a small ResNet: expanded weights and channel influence.

    python examples/circuits.py [OUTPUT_DIR]

Builds devvis's compact ResNet (random weights, torchvision layer names), then
1. the expanded weights from ``layer1.0`` into ``layer2.0``: the effective kernel through a
   linearized copy (ReLU -> identity), residual shortcut included;
2. the influence of every ``layer1.0`` channel on ``layer2.0`` channel 3 on probe images, with
   gradient x activation and integrated gradients, and the top upstream channels;
3. what a shared module's name means: each block calls its ``relu`` twice, and ``layer1.0.relu``
   is its last call, the block's output (the tensor ``render`` records under that name);
and writes the numbers to ``OUTPUT_DIR/circuits_example.json``. The probe images are in [0, 1]; the
default ``preprocess="auto"`` feeds them raw to zoo models (ImageNet normalization for others).
"""

import sys
import tempfile
from pathlib import Path

import torch

from devvis import io as dio
from devvis.circuits import InfluenceTrajectory, channel_influence, expanded_weights, top_inputs
from devvis.data import probe_batch
from devvis.hooks import count_calls
from devvis.zoo import compact_resnet


def main(out: str) -> None:
    torch.manual_seed(0)
    model = compact_resnet(num_classes=12, width=8).eval()
    # The zoo zero-initializes each block's last BN (blocks start as the identity) and every BN
    # bias: give them values, as training would. (With zero biases a ReLU network is positively
    # homogeneous, f(a s) = a f(s), and integrated gradients would equal gradient x activation.)
    for block in (model.layer1[0], model.layer2[0]):
        torch.nn.init.uniform_(block.bn2.weight, 0.5, 1.5)
        for bn in (block.bn1, block.bn2):
            torch.nn.init.uniform_(bn.bias, -0.3, 0.3)

    w = expanded_weights(model, "layer1.0", "layer2.0", crop=5, input_shape=(3, 32, 32))
    print(f"expanded weights layer1.0 -> layer2.0: {tuple(w.shape)} [C_target, C_source, k, k]")
    strongest = w.abs().sum(dim=(2, 3))[3].argmax().item()
    print(f"kernel of layer1.0:{strongest} into layer2.0:3 (rows top to bottom):")
    for row in w[3, strongest]:
        print("   " + " ".join(f"{v:+.3f}" for v in row.tolist()))

    images = probe_batch(16, 32)
    gxa = channel_influence(model, "layer1.0", "layer2.0", images, target_channel=3)
    ig = channel_influence(model, "layer1.0", "layer2.0", images, target_channel=3,
                           method="integrated_gradients", steps=16)
    print(f"influence on layer2.0:3, grad x act: {[round(v, 4) for v in gxa.tolist()]}")
    print(f"influence on layer2.0:3, integrated gradients: {[round(v, 4) for v in ig.tolist()]}")
    print(f"sum over sources: grad x act {gxa.sum():+.4f}, integrated gradients {ig.sum():+.4f} "
          "(the latter = target minus target with layer1.0 set to zero, up to the 16-point quadrature)")
    full = channel_influence(model, "layer1.0", "layer2.0", images)
    print(f"full influence matrix: {tuple(full.shape)} [C_target, C_source]")

    traj = InfluenceTrajectory([0], gxa.unsqueeze(0), "layer1.0", "layer2.0", 3)
    top = top_inputs(traj, k=3)[0]
    print("top 3 upstream channels of layer2.0:3:", ", ".join(f"{c} ({v:+.4f})" for c, v in top))

    relu = channel_influence(model, "layer1.0.relu", "layer2.0", images, target_channel=3)
    print(f"layer1.0.relu runs {count_calls(model, ['layer1.0.relu'], images).runs('layer1.0.relu')} times per "
          f"forward pass; its name means the last call, the block output: same influence as layer1.0: "
          f"{torch.allclose(relu, gxa)}")
    assert torch.allclose(relu, gxa, rtol=1e-6, atol=1e-9)

    path = Path(out) / "circuits_example.json"
    dio.write_json(path, dio.metadata("circuits_example", expanded_weights=w[3], influence_grad_x_act=gxa,
                                      influence_integrated_gradients=ig, top=top))
    print(f"wrote {path}")
    assert torch.allclose(full[3], gxa, atol=1e-6)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
