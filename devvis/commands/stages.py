"""``devvis stages``: the developmental stages of a checkpoint series.

    devvis stages --checkpoint-path curriculum/ --output-path results/stages

Writes ``stages.json``, ``stages_timeline.png`` and ``essential_dynamics.png`` into the output
folder and prints one line per boundary and per stage.
"""

from __future__ import annotations

import argparse

from devvis.commands._common import add_checkpoint_flags, open_series
from devvis.stages.api import ASSIGN, DEFAULT_ASSIGN
from devvis.stages.detect import DEFAULT_MIN_PERSISTENCE

HELP = "find the developmental stages of a training run (boundaries from several signals) and what formed in each"


def register(sub) -> None:
    p = sub.add_parser("stages", help=HELP, description=HELP + ". Probe images: the SyntheticShapes probe split.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_checkpoint_flags(p)
    p.add_argument("--output-path", default="results/stages", help="folder for stages.json and the plots")
    p.add_argument("--layers", nargs="+", default=None, metavar="NAME",
                   help="layers whose channels are the units (default: the model's top-level blocks)")
    p.add_argument("--signals", nargs="+", default=None, choices=["essential_dynamics", "loss", "features"],
                   help="signals to combine (default: all three)")
    p.add_argument("--threshold", type=float, default=3.0, help="combined robust z-score a boundary needs")
    p.add_argument("--support-z", type=float, default=1.5, help="z-score at which a signal supports a boundary")
    p.add_argument("--min-support", type=int, default=None, help="signals a boundary needs (default: 2, or 1 with one signal)")
    p.add_argument("--min-persistence", type=float, default=DEFAULT_MIN_PERSISTENCE,
                   help="a candidate whose supporting vector signals all come back (persistence below this) is a "
                        "transient, not a boundary (0: off)")
    p.add_argument("--assign", choices=ASSIGN, default=DEFAULT_ASSIGN,
                   help="a unit belongs to the stage holding most of its response change (change: where it "
                        "formed), or to the stage its settle step falls in (settle: the last stage that retuned it)")
    p.add_argument("--settle-threshold", type=float, default=0.8, help="response similarity of a unit's settle step")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Detect the stages of the series in ``args`` and write them to ``--output-path``."""
    from devvis.stages import stages

    series = open_series(args)
    r = stages(series, layers=args.layers, signals=args.signals, threshold=args.threshold, support_z=args.support_z,
               min_support=args.min_support, min_persistence=args.min_persistence,
               settle_threshold=args.settle_threshold, assign=args.assign,
               preprocess=args.preprocess,
               output_dir=args.output_path)
    if r.planted:
        print("planted (curriculum): " + ", ".join(f"{p['phase']} from step {p['step']}" for p in r.planted))
    for b in r.boundaries:
        print(f"boundary at step {b.step} (±{b.uncertainty} checkpoint(s): {b.step_range[0]}-{b.step_range[1]}), "
              f"supported by {', '.join(b.signals)}")
    for t in r.transients:
        print(f"transient at step {t.step} (a spike that comes back, not a boundary), seen by {', '.join(t.signals)}")
    for st in r.stages:
        pref = ", ".join(f"{k} {v:+.2f}" for k, v in st.group_response().items() if v is not None)
        print(f"stage {st.index}: steps {st.start}-{st.end}, {len(st.units)} units "
              f"{'settled' if r.settings['assign'] == 'settle' else 'formed'}"
              + (f" (mean standardized response: {pref})" if pref else ""))
    print(f"wrote {', '.join(str(f) for f in r.files)}")
    return 0
