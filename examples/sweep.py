"""A resumable sweep over a checkpoint series: config file, run, interrupt-safe restart, status.

The same config runs on a SLURM cluster with ``executor: slurm`` (``pip install devvis[slurm]``)
or under ``torchrun --standalone --nproc-per-node=K -m devvis.cli sweep sweep.yaml``.

    python examples/sweep.py [OUTPUT_DIR]
"""

import sys
from pathlib import Path

import torch

from devvis.models import save_checkpoint
from devvis.runs import load_config, run_sweep, sweep_status
from devvis.zoo import compact_resnet

out = Path(sys.argv[1] if len(sys.argv) > 1 else "sweep_example")
ckpts = out / "checkpoints"
config = {"name": "compact_resnet", "kwargs": {"num_classes": 3, "width": 4, "blocks": [1, 1]}}
for step in (100, 200):  # stand-ins for a training run's checkpoints
    torch.manual_seed(step)
    save_checkpoint(compact_resnet(num_classes=3, width=4, blocks=(1, 1)), ckpts / f"step_{step}.safetensors",
                    step=step, model_config=config)

(out / "sweep.yaml").write_text(f"""\
checkpoint_paths: [{ckpts}]      # the model is rebuilt from the checkpoints' own config
layer_names: [layer1, layer2]
channels: [0, 1, 2]
batch_size: 2                    # units: checkpoint x layer x 2 channels
image_size: 32
max_iterations: 8
min_iterations: 0
progress: false
output_path: {out / "results"}
executor:
  executor: local                # or slurm (partition, time_min, gpus_per_node, ...) or torchrun
  workers: 1
  retries: 1
""")
settings, options = load_config(out / "sweep.yaml")
summary = run_sweep(settings, options)
print(f"first run: {summary.done} of {summary.units} units done, {summary.failed} failed")

again = run_sweep(settings, options, log=lambda msg: None)  # a restart does only what is missing: nothing
print(f"restart: {again.skipped} units already complete, {again.done - again.skipped} run again")
print(sweep_status(settings.output_path).format())
assert summary.done == summary.units == 8 and again.skipped == 8
