"""Developmental stages of a training run with a planted curriculum.

Trains the compact ResNet on SyntheticShapes with colour classes first, shapes added at step 40 and
gratings ("texture") at step 80 (checkpoints every 4 steps), then finds the stage boundaries from
the essential dynamics, the probe loss and the units' response profiles, and lists the units that
settled in each stage. About 30-60 s on one CPU core.

    python examples/stages.py [OUTPUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from devvis.data.synthetic import CLASSES
from devvis.stages import stages
from devvis.zoo import train_series


def main(output_dir: str | None = None) -> list[int]:
    torch.set_num_threads(1)  # tiny models: threads only add overhead
    out = Path(output_dir or tempfile.mkdtemp())
    t0 = time.perf_counter()
    run = train_series(out / "curriculum", steps=120, curriculum=(40, 80), checkpoint_steps=list(range(0, 121, 4)),
                       width=4, n_train=1200, n_test=120, batch_size=32, optimizer="adam", lr=0.005, progress=False)
    r = stages(run.output_dir, output_dir=out / "stages")
    print(f"planted boundaries: steps 40 and 80; checkpoints every 4 steps ({time.perf_counter() - t0:.0f} s)")
    for b in r.boundaries:
        print(f"  detected boundary at step {b.step} ± {b.uncertainty} checkpoint(s), signals: {', '.join(b.signals)}")
    for st in r.stages:
        top = {}
        for u in st.units:
            for label in u.top_labels[:3]:
                top[CLASSES[label]] = top.get(CLASSES[label], 0) + 1
        common = sorted(top, key=top.get, reverse=True)[:3]
        print(f"  stage {st.index} (steps {st.start}-{st.end}): {len(st.units)} units settled; "
              f"their top probe images are mostly {', '.join(common) or '-'}")
    print(f"wrote {', '.join(str(f) for f in r.files)}")
    return r.boundary_steps


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
