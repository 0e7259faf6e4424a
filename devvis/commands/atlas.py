"""``devvis atlas``: an activation atlas of one layer, at the final checkpoint or on one layout at every checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from devvis.commands._common import add_bool, add_checkpoint_flags, open_series
from devvis.errors import ConfigError

HELP = "activation atlas of a layer over a dataset (one layout at every checkpoint with --every-checkpoint)"


def register(sub) -> None:
    p = sub.add_parser("atlas", help=HELP, description=HELP, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_checkpoint_flags(p)
    p.add_argument("--layer", required=True, help="layer name, e.g. layer2.0")
    p.add_argument("--inputs", default="synthetic", metavar="synthetic|FILE.pt",
                   help="the dataset: held-out SyntheticShapes images (the demo's data) or a .pt file holding an "
                        "(N, 3, H, W) tensor in [0, 1]")
    p.add_argument("--n-inputs", type=int, default=256, help="number of synthetic images")
    p.add_argument("--image-size", type=int, default=32, help="side of the synthetic images")
    p.add_argument("--positions", type=int, default=4, help="activation samples (random positions) per image")
    p.add_argument("--grid", type=int, default=6, help="cells per side of the atlas")
    p.add_argument("--min-count", type=int, default=2, help="samples a cell needs to be rendered")
    p.add_argument("--method", choices=("tsne", "umap", "pca"), default="tsne",
                   help="2-D reduction (tsne, pca: scikit-learn; umap: umap-learn)")
    p.add_argument("--steps", type=int, default=128, help="render steps per cell")
    p.add_argument("--cell-size", type=int, default=48, help="side of each cell's image")
    p.add_argument("--every-checkpoint", action="store_true",
                   help="render the final checkpoint's layout at every checkpoint (atlas_series)")
    p.add_argument("--seed", type=int, default=0, help="seeds the images, the sampled positions, the layout and renders")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the model's)")
    p.add_argument("--output-path", default="results/atlas", help="folder for the atlas PNG and JSON")
    add_bool(p, "progress", False, "progress bars of the renders")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devvis.atlas import activation_atlas, atlas_series
    from devvis.commands._common import load_inputs

    for name in ("n_inputs", "image_size", "positions", "grid", "min_count", "steps", "cell_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.inputs == "visualizations":
        raise ConfigError("--inputs 'visualizations' is not a dataset; use 'synthetic' or a .pt file")
    series = open_series(args, device=args.device)
    images = load_inputs(args.inputs, args.n_inputs, args.image_size, args.seed)
    kw = dict(grid=args.grid, method=args.method, positions_per_image=args.positions, min_count=args.min_count,
              steps=args.steps, image_size=args.cell_size, preprocess=args.preprocess, seed=args.seed,
              device=args.device, progress=args.progress)
    out = Path(args.output_path)
    if args.every_checkpoint:
        res = atlas_series(series, args.layer, images, **kw)
        files = res.save(out)
        print(f"atlas of {args.layer}: {len(res.atlases[0].cells)} cells of a {args.grid}x{args.grid} grid "
              f"(layout of step {res.reference_step}) at {len(res.steps)} checkpoints")
    else:
        atlas = activation_atlas(series[series.final_step], args.layer, images, **kw)
        atlas.step = series.final_step
        files = atlas.save(out)
        print(f"atlas of {args.layer} at step {atlas.step}: {len(atlas.cells)} cells of a {args.grid}x{args.grid} "
              f"grid from {atlas.coords.shape[0]} activation samples")
    print("wrote " + ", ".join(str(f) for f in files[-2:]))
    return 0
