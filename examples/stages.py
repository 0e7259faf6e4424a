"""Developmental stages of a training run with a planted curriculum.

Trains the compact ResNet on 16 px SyntheticShapes with colour classes first, shapes added at step
100 and gratings ("texture") at step 200 (checkpoints every 10 steps, constant learning rate), then
finds the stage boundaries from the essential dynamics, the probe loss and the units' response
profiles, and lists, per stage, the units that formed in it (most of their class-level response change: the
default assignment) and those that settled in it (the last stage that retuned them), with how they respond to the
colour, shape and texture probe images. About 30-60 s on one CPU core.

    python examples/stages.py [OUTPUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from devvis.stages import mean_group_response, stages
from devvis.zoo import train_series


def _pref(groups: dict) -> str:
    return ", ".join(f"{k} {v:+.2f}" for k, v in groups.items() if v is not None) or "-"


def main(output_dir: str | None = None) -> list[int]:
    torch.set_num_threads(1)  # tiny models: threads only add overhead
    out = Path(output_dir or tempfile.mkdtemp())
    t0 = time.perf_counter()
    run = train_series(out / "curriculum", steps=300, curriculum=True, width=8, size=16, n_train=2400, n_test=240,
                       batch_size=64, optimizer="adam", lr=0.005, progress=False)
    t1 = time.perf_counter()
    r = stages(run.output_dir, output_dir=out / "stages")
    t2 = time.perf_counter()
    print(f"trained in {t1 - t0:.0f} s, stages in {t2 - t1:.0f} s")
    print("planted boundaries: " + ", ".join(f"{p['phase']} at step {p['step']}" for p in r.planted))
    for b in r.boundaries:
        print(f"  detected boundary at step {b.step} ± {b.uncertainty} checkpoint(s), signals: {', '.join(b.signals)}")
    for st in r.stages:
        settled = r.settled_in(st.index)
        print(f"  stage {st.index} (steps {st.start}-{st.end}): {len(st.units)} units formed here "
              f"(most of their response change; mean standardized response {_pref(st.group_response())}; "
              f"controlled contrasts {_pref(st.contrast())}); "
              f"{len(settled)} settled here ({_pref(mean_group_response(settled))})")
    print(f"wrote {', '.join(str(f) for f in r.files)}")
    return r.boundary_steps


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
