#!/usr/bin/env python
"""What the image side of a render step costs, and what bf16 would do to it.

    .venv/bin/python benchmarks/image_cost.py            # batch 1 and 16, 128 px -> 224 px, one thread

Three tables, process CPU time per step (forward + backward, median of rounds), one torch thread:

1. the parameterization (FFT spectrum + decorrelated colour + sigmoid) plus Adam: devvis's
   (one ``(3, 3) @ (B, 3, HW)`` matmul, Lucid's /4 folded into the spectrum's scale) against the
   earlier formulation (``einsum`` and a separate /4 pass), which is kept here as the reference;
2. the transforms up to the model input (ImageNet normalisation included): the separate stack
   plus the resize to 224 px against the fused warp;
3. bf16 for the image (the warp and the normalisation in bfloat16; the FFT has no CPU bf16
   kernel; the model in fp32, so only the image's precision differs): time, the largest
   difference of the model input from fp32, and the objective's relative change after
   ``--steps`` steps on a random-init resnet18 (layer3.1 channel 5).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devvis import param as P  # noqa: E402
from devvis import transforms as T  # noqa: E402
from devvis.param.color import COLOR_CORRELATION_NORMALIZED  # noqa: E402


def cpu_ms(fn: Callable[[], object], n: int, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean process CPU time of ``fn`` over ``n`` calls, in ms."""
    fn()
    out = []
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(n):
            fn()
        out.append((time.process_time() - t) / n * 1000)
    return statistics.median(out)


def einsum_param(p: P.ImageParam) -> torch.Tensor:
    """The earlier formulation of ``p()``: a (scale * spectrum) copy, irfft2, a /4 pass, einsum, sigmoid."""
    b = p.basis
    s = torch.view_as_complex((b.scale * b.spectrum).contiguous())
    img = torch.fft.irfft2(s, s=(b.h, b.w), norm="ortho") / 4.0
    return torch.sigmoid(torch.einsum("bchw,rc->brhw", img, COLOR_CORRELATION_NORMALIZED))


def param_table(batches: list[int], n: int) -> None:
    print("| batch | param + Adam, earlier (ms) | param + Adam, devvis (ms) | ratio | same image |")
    print("|---|---|---|---|---|")
    for b in batches:
        p = P.image(128, batch=b, seed=0)
        opt = torch.optim.Adam(p.parameters(), lr=0.05)

        def step(f: Callable[[], torch.Tensor]) -> Callable[[], None]:
            def run() -> None:
                opt.zero_grad(set_to_none=True)
                f().sum().backward()
                opt.step()
            return run

        same = torch.equal(einsum_param(p).detach(), p().detach())
        old, new = cpu_ms(step(lambda: einsum_param(p)), n), cpu_ms(step(p), n)
        print(f"| {b} | {old:.2f} | {new:.2f} | {new / old:.3f} | {same} |")


def transforms_table(batches: list[int], n: int) -> None:
    from torch import nn

    from devvis.render.pipeline import ModelInput

    net = nn.Conv2d(3, 3, 1)
    print("| batch | separate + resize (ms) | fused warp (ms) | ratio |")
    print("|---|---|---|---|")
    for b in batches:
        x = torch.rand(b, 3, 128, 128, requires_grad=True)
        g = torch.Generator().manual_seed(0)
        times = []
        for spec in ("standard-separate", "standard-fused"):
            mi = ModelInput(net, transforms=spec, preprocess="imagenet", input_size=224)
            times.append(cpu_ms(lambda: mi(x, generator=g).sum().backward(), n))
        print(f"| {b} | {times[0]:.2f} | {times[1]:.2f} | {times[1] / times[0]:.3f} |")


def bf16_table(batches: list[int], n: int, steps: int) -> None:
    import torchvision

    from devvis import objectives as O
    from devvis.render import render
    from devvis.render.pipeline import ModelInput

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    print("| batch | fp32 image (ms) | bf16 image (ms) | ratio | max abs difference of the model input |")
    print("|---|---|---|---|---|")
    for b in batches[:1]:  # bf16 is slow on CPUs without bf16 instructions: the first batch size only
        mi = ModelInput(model, transforms="standard-fused", preprocess="imagenet", input_size=224)
        x = torch.rand(b, 3, 128, 128, requires_grad=True)
        g = torch.Generator().manual_seed(0)
        t32 = cpu_ms(lambda: mi(x, generator=g).sum().backward(), n)
        t16 = cpu_ms(lambda: mi(x.bfloat16(), generator=g).float().sum().backward(), n)
        a = mi(x, generator=torch.Generator().manual_seed(1)).detach()
        d = mi(x.bfloat16(), generator=torch.Generator().manual_seed(1)).detach().float()
        print(f"| {b} | {t32:.2f} | {t16:.2f} | {t16 / t32:.3f} | {float((a - d).abs().max()):.4f} "
              f"(input range {float(a.min()):.2f}..{float(a.max()):.2f}) |")

    def bf16_image(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        return lambda x, generator=None: fn(x.bfloat16(), generator=generator).float()

    vals = {}
    for name, tf in (("fp32 image", T.standard(fused=True)), ("bf16 image", bf16_image(T.standard(fused=True)))):
        vals[name] = [float(render(model, O.channel("layer3.1", 5), transforms=tf if name == "fp32 image" else [tf],
                                   steps=steps, seed=s, input_size=224, progress=False).final_values[0])
                      for s in range(3)]
    rel = abs(statistics.median(vals["bf16 image"]) - statistics.median(vals["fp32 image"])) / abs(
        statistics.median(vals["fp32 image"]))
    print(f"\nobjective after {steps} steps (layer3.1 ch5, fp32 model, seeds 0-2): fp32 image "
          f"{', '.join(f'{v:.4f}' for v in vals['fp32 image'])}; bf16 image {', '.join(f'{v:.4f}' for v in vals['bf16 image'])}"
          f"; medians differ by {rel:.1%}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--calls", type=int, default=4, help="calls per round")
    p.add_argument("--steps", type=int, default=24, help="render steps of the bf16 objective check")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"image cost, process CPU time, one thread; load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    n = max(2, args.calls)
    print("## parameterization\n")
    param_table(args.batches, n)
    print("\n## transforms to the model input\n")
    transforms_table(args.batches, n)
    print("\n## bf16 image\n")
    bf16_table(args.batches, n, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
