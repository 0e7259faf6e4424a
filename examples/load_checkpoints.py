"""Save a tiny checkpoint series in two formats, discover it, and load every checkpoint.

    python examples/load_checkpoints.py [OUTPUT_DIR]

Writes into OUTPUT_DIR (default: a temporary folder, removed at the end):

* ``step_500.safetensors``: weights plus ``step`` metadata (devvis's own format);
* ``lightning/epoch=1-step=1000.ckpt``: a PyTorch Lightning-style file (``model.``
  prefixes, ``epoch``/``global_step`` beside them), as another training tool would write it;
* ``last.ckpt``: no step in the name, only ``global_step`` inside; discovery reads it.

Then it lists the series in training order and loads each into a resnet18 whose
number of classes is inferred from the checkpoint. No weights are downloaded.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import torch
import torchvision

from devvis.io import atomic_write_bytes
from devvis.models import find_checkpoints, load_model, save_checkpoint


def save_lightning_style(net: torch.nn.Module, path: Path, *, epoch: int, step: int) -> None:
    """What a Lightning module holding the network as ``self.model`` saves."""
    ckpt = {
        "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
        "epoch": epoch,
        "global_step": step,
        "pytorch-lightning_version": "2.4.0",
    }
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        return run(Path(argv[1]))
    with tempfile.TemporaryDirectory(prefix="devvis_ckpts_") as tmp:
        return run(Path(tmp))


def run(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)

    nets = {}
    for seed, step in ((0, 500), (1, 1000), (2, 1500)):
        torch.manual_seed(seed)
        nets[step] = torchvision.models.resnet18(num_classes=10)
    save_checkpoint(nets[500], out / "step_500.safetensors", step=500)
    save_lightning_style(nets[1000], out / "lightning" / "epoch=1-step=1000.ckpt", epoch=1, step=1000)
    save_lightning_style(nets[1500], out / "last.ckpt", epoch=2, step=1500)

    series = find_checkpoints(out)
    print(f"found {len(series)} checkpoints in {out}:")
    for ref in series:
        print(f"  step {ref.step:>5} (from {ref.source:8}) {ref.path.relative_to(out)}")
    assert [ref.step for ref in series] == [500, 1000, 1500], series

    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for ref in series:
        net = load_model("resnet18", checkpoint=ref.path)
        same = all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), nets[ref.step].state_dict().values()))
        with torch.no_grad():
            logits = net(x)
        print(f"  loaded step {ref.step}: {net.fc.out_features} classes, logits {tuple(logits.shape)}, "
              f"weights match the saved network: {same}")
        assert same and logits.shape == (2, 10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
