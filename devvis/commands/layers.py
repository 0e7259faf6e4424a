"""``devvis layers``: list a model's layer names, types, output shapes, channel counts and default sites.

The last column marks the layers ``devvis visualize`` renders when ``--layer-names`` is not given
(:func:`devvis.architectures.feature_sites`): ``mlp_hidden`` (a ViT-style block's MLP hidden layer,
see ``docs/vit.md``) or ``conv``.
"""

from __future__ import annotations

import argparse

HELP = "list layer names, types, output shapes, channel counts and the default feature sites"


def register(sub) -> None:
    p = sub.add_parser("layers", help=HELP, description=HELP, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="model name (optional when --checkpoint has a model config)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (infers num_classes)")
    p.add_argument("--image-size", type=int, default=224, help="input size used to compute output shapes")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow arbitrary unpickling (trusted files only)")
    p.add_argument("--filter", default=None, help="only names containing this text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devvis.architectures import SITE_MLP_HIDDEN
    from devvis.hooks import list_layers
    from devvis.models import load_model

    model = load_model(args.model, checkpoint=args.checkpoint, trust=args.trust_checkpoint)
    rows = list_layers(model, (1, 3, args.image_size, args.image_size))
    if args.filter:
        rows = [r for r in rows if args.filter in r.name]
    width = max([len(r.name) for r in rows] + [4])
    print(f"{'name':<{width}}  {'type':<24} {'output shape':<22} {'layout':<7} {'channels':<8} default site")
    for r in rows:
        shape = "x".join(map(str, r.output_shape)) if r.output_shape else "-"
        channels = r.channels if r.channels is not None else "-"
        print(f"{r.name:<{width}}  {r.type:<24} {shape:<22} {r.layout or '-':<7} {channels:<8} {r.site or ''}".rstrip())
    if any(r.site == SITE_MLP_HIDDEN for r in rows):
        print(f"# {SITE_MLP_HIDDEN}: a transformer block's MLP hidden layer (after the activation), the default "
              "feature site of ViT-style models (docs/vit.md); devvis visualize renders these without --layer-names")
    return 0
