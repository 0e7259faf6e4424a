#!/usr/bin/env python
"""Side-by-side benchmark: devvis against torch-lucent 0.1.8 and against the model's own cost.

    .venv/bin/python benchmarks/run.py            # the full benchmark (what `make bench` runs)
    .venv/bin/python benchmarks/run.py --tiny     # a seconds-long smoke run (used by the tests)
    .venv/bin/python benchmarks/run.py --device cuda --batch64   # the same tables on a GPU (wall clock)

Every comparison runs the tools alternately in one process (warm-up first, then rounds in a
rotating order, median over the rounds) on identical work: the same model object's weights
(random-init resnet18, seed 0), objective, parameterization (128 px FFT + decorrelated colour, Adam
lr 0.05), the standard transforms (pad 12, jitter 8, scale 0.9-1.1, rotate +-10 deg, jitter 4), the
model input size (upsampled to 224 px, Lucent's default) and number of steps.

Rows:
  lucent        Lucent's render_vis (whole model every step, gradients for every weight, hooks on
                every module).
  devvis F      devvis.render with the standard transforms in form F: "fused" (one affine warp
                straight to the model's input size) or "separate" (Lucid's pad, jitter, scale,
                rotate, jitter modules, then the resize); fp32 and precision="bf16". devvis runs each
                eval-mode BatchNorm folded into the convolution before it (render(fold_batchnorm=True),
                the default): the same function with fewer kernels, so it can be faster than the floor.
  devvis F unfolded   the default form, fp32, with render(fold_batchnorm=False): what the fold saves.
  floor         the truncated model's forward plus backward to the input alone: frozen weights,
                the same tensor shapes, no parameterization, no transforms, no optimizer; "cl" with
                the input and the weights channels-last (before round 9: the input only, so oneDNN
                relaid every weight at every call). "over floor" divides devvis by the floor of the model as given;
                "over same-format floor" by the floor in the memory format devvis feeds the model
                (channels-last on the CPU when the maps are large enough), i.e. devvis's overhead.

Quality: the objective reached at equal steps (both devvis forms, fp32 and bf16, and Lucent), per
seed and its median. Targets: those of issue 20, judged at the end for both forms.

Seconds per step are measured between optimizer steps (the first step is excluded), peak memory
is the rise of the process's peak resident set during the run (CPU; /proc/self/status VmHWM,
reset through /proc/self/clear_refs) or torch's peak allocation (CUDA), and "objective" is the
channel activation of the final image measured without transforms (mean over the batch).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run: small images, few steps")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch64", action="store_true", help="add a 64-channel batch case (for a GPU)")
    p.add_argument("--no-lucent", action="store_true", help="skip Lucent even when it is installed")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per tool (median; at least 5 for a real run)")
    p.add_argument("--steps", type=int, default=10, help="optimization steps per round (the first is not timed)")
    p.add_argument("--quality-seeds", type=int, default=5, help="seeds of the equal-steps quality comparison")
    p.add_argument("--quality-steps", type=int, default=64, help="steps of each quality render")
    p.add_argument("--cases", nargs="*", default=None,
                   help="subset of case names to run (default: all); e.g. layer2.1 layer4.1 layer3.1x16")
    p.add_argument("--bf16-cases", nargs="*", default=None,
                   help="cases whose bf16 rows are timed (default: all). On a CPU without bf16 instructions "
                        "(no avx512_bf16/AMX) bf16 is emulated and ~12x slower than fp32: time it on one case only")
    p.add_argument("--quality-precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                   help="precisions of devvis in the quality section")
    p.add_argument("--skip", nargs="*", default=[], choices=["quality", "compat", "series"],
                   help="sections to leave out")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (0: torch's default). One thread makes CPU time an exact measure of "
                        "the work, so ratios survive a machine shared with other jobs")
    p.add_argument("--clock", default="auto", choices=["auto", "wall", "cpu"],
                   help="clock of the medians and ratios; auto: process CPU time on CPU with one thread, else wall")
    p.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.device == "cpu":
    # Lucent picks CUDA at import time whenever it is visible; a CPU benchmark hides it.
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
import devvis  # noqa: E402
from devvis.render import render as dv_render  # noqa: E402
from devvis.render.forward import CHANNELS_LAST_MIN_POSITIONS  # noqa: E402
from devvis.transforms import FUSED_DEFAULT  # noqa: E402

import harness as H  # noqa: E402
from harness import (  # noqa: E402,F401  (re-exported: profile_step.py and the tests use them from here)
    Case, Floor, PeakMemory, Row, Sample, alternate, build_model, check_floor, run_devvis, run_lucent, truncate,
    value_reached, _now, _sync,
)
from lucent_shim import NOTES, load_lucent  # noqa: E402

#: The two forms of the standard transforms devvis is measured with (``transforms.standard(fused=...)``).
FORMS = {"fused": "standard-fused", "separate": "standard-separate"}
DEFAULT_FORM = "fused" if FUSED_DEFAULT else "separate"


def same_format_floor(case: Case) -> str:
    """The floor in devvis's own memory format for ``case``: ``" cl"`` (channels-last) where devvis
    feeds the model channels-last on the CPU (the recorded map holds >= ``CHANNELS_LAST_MIN_POSITIONS``
    positions over the batch)."""
    side = {"layer1": 56, "layer2": 28, "layer3": 14, "layer4": 7}.get(case.layer.split(".")[0], 0)
    side = side * case.input_size // 224
    return " cl" if case.batch * side * side >= CHANNELS_LAST_MIN_POSITIONS else ""


def compare_case(case: Case, model: nn.Module, L: Any, args: argparse.Namespace, device: torch.device,
                 log: Callable[[str], None]) -> list[Row]:
    steps = max(3, args.steps // case.steps_divisor)
    log(f"  case {case.name}: {case.title}, {steps} steps per round")
    check_floor(model, case, device)
    floors = {(p, cl): Floor(model, case, p, device, cl) for p in ("fp32", "bf16") for cl in (False, True)}
    runners: dict[str, Callable[[], Sample]] = {}
    if L is not None:
        runners["lucent"] = lambda: run_lucent(L, model, case, seed=0, steps=steps, device=device)
    precisions = ("fp32", "bf16") if args.bf16_cases is None or case.name in args.bf16_cases else ("fp32",)
    for form, spec in FORMS.items():
        for prec in precisions:
            name = f"devvis {form}" + (" bf16" if prec == "bf16" else "")
            runners[name] = (lambda spec=spec, prec=prec:
                             run_devvis(model, case, seed=0, steps=steps, precision=prec, device=device, transforms=spec))
    # the default form without BatchNorm folding (render(fold_batchnorm=False)): what the fold saves
    runners[f"devvis {DEFAULT_FORM} unfolded"] = lambda: run_devvis(model, case, seed=0, steps=steps, precision="fp32",
                                                                    device=device, transforms=FORMS[DEFAULT_FORM],
                                                                    fold=False)
    for prec in precisions:
        for cl in (False, True):
            name = "floor" + (" bf16" if prec == "bf16" else "") + (" cl" if cl else "")
            runners[name] = lambda prec=prec, cl=cl: floors[prec, cl].run(steps)
    res = alternate(runners, args.rounds, log)
    rows = {n: Row(case.name, n, s, case.batch) for n, s in res.items()}
    fmt = same_format_floor(case)
    for n, r in rows.items():
        if r.samples[-1].images is not None:
            r.value = value_reached(model, case, r.samples[-1].images)
        if "lucent" in rows and n != "lucent":
            r.ratio_lucent = r.s / rows["lucent"].s
        if n.startswith("devvis"):
            # the floor of the issue: the truncated model as given (NCHW input); and the same-format
            # floor, the model's cost in the memory format devvis feeds it (channels-last on the CPU
            # when the maps are large enough), i.e. devvis's pure overhead
            bf = " bf16" if n.endswith("bf16") else ""
            r.over_floor = r.s / rows["floor" + bf].s
            r.over_floor_cl = r.s / rows[f"floor{bf}{fmt}"].s
    return list(rows.values())


def compare_compat(case: Case, model: nn.Module, L: Any, args: argparse.Namespace, device: torch.device,
                   log: Callable[[str], None]) -> list[Row]:
    """devvis.compat.lucent.render_vis against Lucent's render_vis on the identical call."""
    import importlib

    compat = importlib.import_module("devvis.compat.lucent")
    log(f"  case compat: {case.title}, identical render_vis call")

    class CompatNS:
        render = type("R", (), {"render_vis": staticmethod(compat.render_vis)})
        objectives = compat.objectives
        param = compat.param

    runners = {
        "lucent": lambda: run_lucent(L, model, case, seed=0, steps=args.steps, device=device),
        "devvis.compat.lucent": lambda: run_lucent(CompatNS, model, case, seed=0, steps=args.steps, device=device),
    }
    res = alternate(runners, args.rounds, log)
    rows = {n: Row("compat " + case.name, n, s, case.batch) for n, s in res.items()}
    for r in rows.values():
        r.value = value_reached(model, case, r.samples[-1].images)
    rows["devvis.compat.lucent"].ratio_lucent = rows["devvis.compat.lucent"].s / rows["lucent"].s
    return list(rows.values())


def compare_series(L: Any, args: argparse.Namespace, device: torch.device, log: Callable[[str], None],
                   n_ckpt: int = 8, n_chan: int = 16, size: int = 32) -> tuple[list[Row], str]:
    """8 checkpoints x 16 channels of a compact ResNet: render_series vs a loop of render() vs Lucent's loop.

    The checkpoints are in memory (``CheckpointSeries.from_models``), so no tool pays for disk reads.
    Seconds per step are for one checkpoint's batch of ``n_chan`` images (whole series time divided
    by ``n_ckpt * steps``, set-up included).
    """
    from devvis.longitudinal import CheckpointSeries, render_series
    from devvis.zoo import compact_resnet

    models = {}
    for k in range(n_ckpt):
        torch.manual_seed(k)
        models[100 * k] = compact_resnet(num_classes=12, width=16, blocks=(1, 1, 1)).eval().to(device)
    layer = "layer3"
    case = Case("series", layer, list(range(n_chan)), size, size)
    steps = args.steps
    kw = dict(steps=steps, transforms="standard", preprocess="imagenet", input_size=size, image_size=size, seed=0,
              device=device, progress=False, lr=0.05)

    def timed(fn: Callable[[], list[torch.Tensor]]) -> Sample:
        with PeakMemory(device) as mem:
            _sync(device)
            t0 = _now()
            imgs = fn()
            _sync(device)
            t1 = _now()
        n = n_ckpt * steps
        return Sample(((t1[0] - t0[0]) / n, (t1[1] - t0[1]) / n), mem.mib, torch.cat(imgs))

    def dv_series() -> list[torch.Tensor]:
        res = render_series(CheckpointSeries.from_models(models), case.devvis_objective(), **kw)
        return [res[s].images for s in sorted(models)]

    def dv_loop() -> list[torch.Tensor]:
        return [dv_render(models[s], case.devvis_objective(), **kw).images for s in sorted(models)]

    def lu_loop() -> list[torch.Tensor]:
        out = []
        for s in sorted(models):
            np.random.seed(0)
            torch.manual_seed(0)
            out.append(L.render.render_vis(
                copy.deepcopy(models[s]), case.lucent_objective(L), lambda: L.param.image(size, batch=n_chan),
                thresholds=(steps,), progress=False, show_image=False, fixed_image_size=size)[-1])
        return [torch.from_numpy(np.ascontiguousarray(o)).permute(0, 3, 1, 2).float() for o in out]

    log(f"  case series: {n_ckpt} checkpoints x {n_chan} channels of compact_resnet {layer}, {size} px, {steps} steps")
    runners: dict[str, Callable[[], Sample]] = {}
    if L is not None:
        runners["lucent loop"] = lambda: timed(lu_loop)
    runners["devvis render_series"] = lambda: timed(dv_series)
    runners["devvis render loop"] = lambda: timed(dv_loop)
    res = alternate(runners, args.rounds, log)
    name = f"series {n_ckpt}x{n_chan}"
    rows = {n: Row(name, n, smp, n_chan) for n, smp in res.items()}
    for n, r in rows.items():
        imgs = r.samples[-1].images
        vals = [value_reached(models[s], case, imgs[i * n_chan:(i + 1) * n_chan]) for i, s in enumerate(sorted(models))]
        r.value = float(np.mean(vals))
        if "lucent loop" in rows and n != "lucent loop":
            r.ratio_lucent = r.s / rows["lucent loop"].s
    loop = rows["devvis render loop"].s
    msg = (f"series: {n_ckpt} checkpoints x {n_chan} channels (compact_resnet {layer}, {size} px); s/step is per "
           f"checkpoint batch; render_series/render loop = {rows['devvis render_series'].s / loop:.3f}")
    return list(rows.values()), msg


@dataclass
class Quality:
    case: Case
    steps: int
    values: dict[str, list[float]]
    values_ac: dict[str, list[float]]

    def median(self, tool: str, ac: bool = False) -> float:
        return statistics.median((self.values_ac if ac else self.values)[tool])


def quality(model: nn.Module, L: Any, args: argparse.Namespace, device: torch.device, case: Case,
            log: Callable[[str], None]) -> Quality:
    """The objective reached after ``--quality-steps`` steps, per seed, by each tool (both devvis forms,
    fp32 and bf16, and Lucent), measured the same way on the final image without transforms."""
    log(f"  quality: {case.title}, {args.quality_steps} steps, {args.quality_seeds} seeds")
    vals: dict[str, list[float]] = {}
    vals_ac: dict[str, list[float]] = {}
    for seed in range(args.quality_seeds):
        samples = {}
        for form, spec in FORMS.items():
            for prec in args.quality_precisions:
                samples[f"devvis {form}" + (" bf16" if prec == "bf16" else "")] = run_devvis(
                    model, case, seed=seed, steps=args.quality_steps, precision=prec, device=device, transforms=spec)
        if L is not None:
            samples["lucent"] = run_lucent(L, model, case, seed=seed, steps=args.quality_steps, device=device)
        for n, s in samples.items():
            vals.setdefault(n, []).append(value_reached(model, case, s.images))
            vals_ac.setdefault(n, []).append(value_reached(model, case, s.images, align_corners=True))
        log(f"    seed {seed}: " + ", ".join(f"{n} {vals[n][-1]:.4f}" for n in samples))
    return Quality(case, args.quality_steps, vals, vals_ac)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(rows: list[Row]) -> str:
    other = "wall" if H.CLOCK == "cpu" else "cpu"
    head = (f"| case | tool | s/step ({H.CLOCK}) | devvis/Lucent | over floor | over same-format floor | images/s "
            f"| peak MiB | objective | s/step ({other}) |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        o = statistics.median(x.times[0 if other == "wall" else 1] for x in r.samples)
        lines.append(f"| {r.case} | {r.tool} | {r.s:.4f} | {_f(r.ratio_lucent, '.3f')} | {_f(r.over_floor, '.3f')} | "
                     f"{_f(r.over_floor_cl, '.3f')} | {r.ips:.1f} | {_f(r.peak, '.0f')} | {_f(r.value, '.4f')} | {o:.4f} |")
    return "\n".join(lines)


Verdict = tuple[str, "float | None", str, "bool | None"]


def _judge(name: str, measured: float | None, bound: float, at_least: bool = False) -> Verdict:
    if measured is None:
        return name, None, (">= " if at_least else "<= ") + f"{bound:g}", None
    return name, measured, (">= " if at_least else "<= ") + f"{bound:g}", (measured >= bound if at_least else measured <= bound)


def verdicts(rows: list[Row], cases: list[Case], qual: Quality | None) -> list[Verdict]:
    """(target, measured, bound, met) per target of the issue, for both devvis forms; met is None
    where it could not be measured. Targets: fp32 devvis/Lucent per case; bf16 devvis/Lucent <= 0.30
    (or, where the case says so, <= ``bf16_floor`` x the model's own bf16 floor); devvis <= 1.10 x the
    same-precision, same-format floor; bf16 objective within 5% of fp32; quality >= Lucent's."""
    by = {(r.case, r.tool): r for r in rows}
    out: list[Verdict] = []
    for c in cases:
        lu = by.get((c.name, "lucent"))
        for form in FORMS:
            dv, bf = by.get((c.name, f"devvis {form}")), by.get((c.name, f"devvis {form} bf16"))
            if "ratio" in c.targets:
                out.append(_judge(f"{c.name} {form}: devvis/Lucent", dv.ratio_lucent if dv and lu else None,
                                  c.targets["ratio"]))
            if "bf16_floor" in c.targets:
                out.append(_judge(f"{c.name} {form}: devvis bf16 / the model's own bf16 floor", bf.over_floor_cl if bf
                                  else None, c.targets["bf16_floor"]))
            else:
                out.append(_judge(f"{c.name} {form}: devvis bf16/Lucent", bf.ratio_lucent if bf and lu else None, 0.30))
            for r, prec in ((dv, "fp32"), (bf, "bf16")):
                if r is not None:
                    out.append(_judge(f"{c.name} {form}: {prec} over the same-format floor", r.over_floor_cl, 1.10))
            if dv and bf and dv.value is not None and bf.value is not None:
                out.append(_judge(f"{c.name} {form}: bf16 objective vs fp32 (relative difference)",
                                  abs(bf.value - dv.value) / max(abs(dv.value), 1e-8), 0.05))
    if qual is not None:
        for form in FORMS:
            if f"devvis {form}" not in qual.values:
                continue
            d = qual.median(f"devvis {form}")
            if "lucent" in qual.values:
                out.append(_judge(f"quality {qual.case.name} {form}: median devvis - Lucent ({qual.steps} steps)",
                                  d - qual.median("lucent"), 0.0, at_least=True))
            if f"devvis {form} bf16" not in qual.values:
                continue
            b = qual.median(f"devvis {form} bf16")
            out.append(_judge(f"quality {qual.case.name} {form}: bf16 median vs fp32 (relative difference)",
                              abs(b - d) / max(abs(d), 1e-8), 0.05))
    return out


def machine_lines(device: torch.device, L: Any) -> list[str]:
    import kornia
    import torchvision

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = " ".join(f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f" {f}" in text)
    except OSError:
        pass
    lines = [
        f"date: {_dt.datetime.now().isoformat(timespec='seconds')}",
        f"machine: {cpu} ({os.cpu_count()} cores visible; torch threads {torch.get_num_threads()}; "
        f"bf16 features: {flags or 'none found'}); load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        f"versions: python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"kornia {kornia.__version__}, devvis {devvis.__version__}, torch-lucent {L.version if L else 'not installed'}",
    ]
    return lines


def check_device(name: str) -> str | None:
    """An error message when ``--device`` cannot run here (not cpu/cuda, or CUDA absent), else None."""
    if name.split(":")[0] not in ("cpu", "cuda"):
        return f"--device {name!r} is not valid; choose cpu or cuda (cuda:N)"
    if name.startswith("cuda") and not torch.cuda.is_available():
        return (f"--device {name} but CUDA is not available on this machine (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda or 'none'}); run the CPU benchmark, or run this on a GPU machine")
    if name.startswith("cuda:") and int(name.split(":")[1] or 0) >= torch.cuda.device_count():
        return f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here"
    return None


def main(args: argparse.Namespace) -> int:
    problem = check_device(args.device)
    if problem:
        print(f"devvis benchmark: error: {problem}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    H.CLOCK = args.clock if args.clock != "auto" else ("cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    L, lucent_msg = (None, "Lucent skipped (--no-lucent); showing devvis against the floor only") if args.no_lucent else load_lucent()
    if args.tiny:
        img, size, q_layer = 16, 32, "layer3.1.conv1"
        cases = [
            Case("layer2.1", "layer2.1", [5], img, size),
            Case("layer3.1x2", "layer3.1", [0, 1], img, size),
        ]
        args.steps, args.rounds = min(args.steps, 2), min(args.rounds, 1)
        args.quality_seeds, args.quality_steps = min(args.quality_seeds, 1), min(args.quality_steps, 2)
    else:
        img, size, q_layer = 128, 224, "layer3.1.conv1"
        cases = [
            # the targets of issue 20 (round 2 of the performance work)
            Case("layer2.1", "layer2.1", [5], img, size, {"ratio": 0.45}),
            Case("layer4.1", "layer4.1", [5], img, size, {"ratio": 0.6, "bf16_floor": 1.05}),
            Case("layer3.1x16", "layer3.1", list(range(16)), img, size, {"ratio": 0.5}, steps_divisor=2),
        ]
        if args.batch64:
            cases.append(Case("layer3.1x64", "layer3.1", list(range(64)), img, size, steps_divisor=2))
    if args.cases:
        cases = [c for c in cases if c.name in args.cases]
    model = build_model(device)

    header = machine_lines(device, L)
    print("devvis benchmark" + (" (tiny smoke run; timings meaningless)" if args.tiny else ""))
    for line in header:
        print("  " + line)
    print("  " + lucent_msg)
    for note in NOTES:
        print("  " + note)
    print(f"  load average at the start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"  work: random-init resnet18 (seed 0); param.image({img}) FFT + decorrelated colour; Adam lr 0.05; "
          f"standard transforms, fused (one warp) and separate (Lucid's modules; default: {DEFAULT_FORM}); model input {size} px; {args.steps} steps per round, {args.rounds} rounds "
          f"(median), warm-up first, tools alternating; clock: {H.CLOCK} ({'process CPU time' if H.CLOCK == 'cpu' else 'wall'})")
    sys.stdout.flush()

    rows: list[Row] = []
    for c in cases:
        rows.extend(compare_case(c, model, L, args, device, log))

    print()
    print(table(rows))
    sys.stdout.flush()

    # Optional sections: a failure in one (e.g. a module being rewritten) is reported, never fatal.
    compat_rows: list[Row] = []
    if "compat" not in args.skip and L is not None:
        try:
            compat_rows = compare_compat(cases[0], model, L, args, device, log)
        except Exception as e:
            print(f"\n(compat row skipped: devvis.compat.lucent failed: {type(e).__name__}: {e})")
    if compat_rows:
        print()
        print(table(compat_rows))

    series_rows: list[Row] = []
    series_msg = None
    if "series" not in args.skip:
        n_ckpt, n_chan = (2, 2) if args.tiny else (8, 16)
        try:
            series_rows, series_msg = compare_series(L, args, device, log, n_ckpt=n_ckpt, n_chan=n_chan,
                                                     size=16 if args.tiny else 32)
        except Exception as e:
            print(f"\n(series rows skipped: {type(e).__name__}: {e})")
    if series_rows:
        print()
        print(series_msg or "")
        print(table(series_rows))
    sys.stdout.flush()

    qual = None
    if "quality" not in args.skip:
        qcase = Case("layer3.1.conv1", q_layer, [5], img, size)
        qual = quality(model, L, args, device, qcase, log)
    if qual is not None:
        print()
        n_seeds = len(next(iter(qual.values.values())))
        print(f"quality at equal steps ({qual.case.title}, {qual.steps} steps, {n_seeds} seeds; "
              "channel activation of the final image without transforms):")
        print()
        print("| tool | median | per seed | median with Lucent's align_corners=True resize |")
        print("|---|---|---|---|")
        for n in qual.values:
            vs = ", ".join(f"{v:.4f}" for v in qual.values[n])
            print(f"| {n} | {qual.median(n):.4f} | {vs} | {qual.median(n, True):.4f} |")
    print()
    if L is None:
        print(lucent_msg)
    print("targets:")
    vs = verdicts(rows, cases, qual) if not args.tiny else []
    if args.tiny:
        print("  (tiny run: targets are not judged)")
    for name, measured, bound, met in vs:
        mark = "n/a" if met is None else ("met" if met else "MISSED")
        print(f"  {name}: {_f(measured, '.3f')} (target {bound}) {mark}")
    if vs:
        judged = [m for n, _, _, m in vs if "informative" not in n]
        n_met = sum(1 for m in judged if m)
        n_miss = sum(1 for m in judged if m is False)
        print(f"  {n_met} met, {n_miss} missed")

    if args.json:
        data = {
            "header": header, "lucent": lucent_msg, "notes": NOTES, "args": {k: str(v) for k, v in vars(args).items()},
            "rows": [{"case": r.case, "tool": r.tool, "s_per_step": r.s, "samples_wall_cpu": [list(x.times) for x in r.samples], "clock": H.CLOCK,
                      "ratio_lucent": r.ratio_lucent, "over_floor": r.over_floor, "over_same_format_floor": r.over_floor_cl, "images_per_s": r.ips,
                      "peak_mib": r.peak, "value": r.value} for r in rows + compat_rows + series_rows],
            "quality": None if qual is None else {"values": qual.values, "values_align_corners": qual.values_ac},
            "targets": [{"target": n, "measured": m, "bound": b, "met": ok} for n, m, b, ok in vs],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
