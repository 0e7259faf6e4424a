#!/usr/bin/env python
"""Side-by-side benchmark: devvis against torch-lucent 0.1.8 and against the model's own cost.

    .venv/bin/python benchmarks/run.py            # the full benchmark (what `make bench` runs)
    .venv/bin/python benchmarks/run.py --tiny     # a seconds-long smoke run (used by the tests)
    .venv/bin/python benchmarks/run.py --device cuda --batch64

Every comparison runs the tools alternately in one process (warm-up first, then rounds in a
rotating order, median over the rounds) on identical work: the same model object's weights
(random-init resnet18, seed 0), objective, parameterization (128 px FFT + decorrelated colour, Adam
lr 0.05), the standard transforms (pad 12, jitter 8, scale 0.9-1.1, rotate +-10 deg, jitter 4), the
model input size (upsampled to 224 px, Lucent's default) and number of steps.

Rows:
  lucent        Lucent's render_vis (whole model every step, gradients for every weight, hooks on
                every module).
  devvis        devvis.render (fp32) and devvis.render(precision="bf16").
  floor         the truncated model's forward plus backward to the input alone: frozen weights,
                the same tensor shapes, no parameterization, no transforms, no optimizer; "cl" with
                a channels-last input. "over floor" divides devvis by the floor of the model as given,
                "over floor cl" by the channels-last floor (devvis's own format on the CPU when the
                maps are large enough), i.e. devvis's pure overhead.

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
from devvis import objectives as dobj  # noqa: E402
from devvis import param as dparam  # noqa: E402
from devvis.render import render as dv_render  # noqa: E402

from lucent_shim import NOTES, load_lucent  # noqa: E402


# --------------------------------------------------------------------------------------------
# measurement helpers
# --------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedAdam(torch.optim.Adam):
    """Adam that records a timestamp after every step (both tools accept an optimizer factory)."""

    def __init__(self, params: Any, lr: float, stamps: list[tuple[float, float]], device: torch.device):
        super().__init__(params, lr=lr)
        self._stamps = stamps
        self._device = device

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = super().step(closure)
        _sync(self._device)
        self._stamps.append(_now())
        return loss


def _now() -> tuple[float, float]:
    """(wall clock, this process's CPU time) in seconds."""
    return time.perf_counter(), time.process_time()


def _per_step(stamps: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean (wall, CPU) seconds per step between the first and the last stamp."""
    if len(stamps) < 2:
        raise RuntimeError("need at least 2 steps to time a step")
    n = len(stamps) - 1
    return (stamps[-1][0] - stamps[0][0]) / n, (stamps[-1][1] - stamps[0][1]) / n


def _status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of one run in MiB: torch's peak allocation on CUDA, peak RSS rise on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib: float | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
            self._base = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        else:
            hwm = _status_kib("VmHWM")
            if hwm is not None and self._base is not None:
                self.mib = max(0, hwm - self._base) / 1024


#: Which clock the medians and ratios use: "wall" (perf_counter) or "cpu" (process CPU time).
CLOCK = "wall"


@dataclass
class Sample:
    times: tuple[float, float]  # (wall, CPU) seconds per step
    peak_mib: float | None
    images: torch.Tensor | None = None

    @property
    def s_per_step(self) -> float:
        return self.times[0] if CLOCK == "wall" else self.times[1]


# --------------------------------------------------------------------------------------------
# the work
# --------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    layer: str  # devvis dotted name; Lucent's is the underscored alias
    chans: list[int]
    image: int = 128
    input_size: int = 224
    targets: dict[str, float] = field(default_factory=dict)
    steps_divisor: int = 1  # big batches time fewer steps per round (a step is already long)

    @property
    def batch(self) -> int:
        return len(self.chans)

    @property
    def title(self) -> str:
        if self.batch == 1:
            return f"{self.layer} ch{self.chans[0]}, batch 1"
        return f"{self.layer}, {self.batch} channels one per image"

    def devvis_objective(self) -> dobj.Objective:
        if self.batch == 1:
            return dobj.channel(self.layer, self.chans[0])
        return dobj.channels(self.layer, self.chans)

    def lucent_objective(self, L: Any) -> Any:
        name = self.layer.replace(".", "_")
        if self.batch == 1:
            return L.objectives.channel(name, self.chans[0])
        # Lucent's way to render several channels at once: a sum of per-image channel objectives
        return sum(L.objectives.channel(name, c, batch=i) for i, c in enumerate(self.chans))


def build_model(device: torch.device) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval().to(device)


def value_reached(model: nn.Module, case: Case, images: torch.Tensor, align_corners: bool = False) -> float:
    """Mean over the batch of image i's channel ``chans[i]`` on ``images`` without transforms (fp32)."""
    import torch.nn.functional as F

    from devvis.transforms import imagenet_normalize

    size = case.input_size

    def pre(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=align_corners)
        return imagenet_normalize(x)

    obj = dobj.channels(case.layer, case.chans) if case.batch > 1 else dobj.channel(case.layer, case.chans[0])
    vals = dobj.evaluate(model, obj, images.to(_model_device(model)), preprocess=pre)
    return float(vals.mean())


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def run_devvis(model: nn.Module, case: Case, *, seed: int, steps: int, precision: str,
               device: torch.device, obj: Any = None) -> Sample:
    stamps: list[tuple[float, float]] = []
    with PeakMemory(device) as mem:
        res = dv_render(
            model, obj if obj is not None else case.devvis_objective(),
            dparam.image(case.image, batch=case.batch, seed=seed),
            steps=steps, optimizer=lambda ps: TimedAdam(ps, 0.05, stamps, device), transforms="standard",
            preprocess="imagenet", input_size=case.input_size, seed=seed, device=device, precision=precision,
            progress=False)
    return Sample(_per_step(stamps), mem.mib, res.images)


def run_lucent(L: Any, model: nn.Module, case: Case, *, seed: int, steps: int, device: torch.device,
               render_vis: Callable[..., Any] | None = None) -> Sample:
    """Lucent's render_vis on a fresh copy of the model (Lucent leaves its hooks on every module)."""
    m = copy.deepcopy(model)
    np.random.seed(seed)  # Lucent's transforms draw from numpy
    torch.manual_seed(seed)  # and its parameterization from torch
    stamps: list[tuple[float, float]] = []
    rv = render_vis or L.render.render_vis
    with PeakMemory(device) as mem:
        out = rv(m, case.lucent_objective(L), lambda: L.param.image(case.image, batch=case.batch),
                 optimizer=lambda ps: TimedAdam(ps, 0.05, stamps, device), thresholds=(steps,),
                 progress=False, show_image=False, fixed_image_size=case.input_size)
    img = torch.from_numpy(np.ascontiguousarray(out[-1])).permute(0, 3, 1, 2).float()
    return Sample(_per_step(stamps), mem.mib, img)


def truncate(model: nn.Module, name: str) -> nn.Sequential:
    """The model cut after ``name``, as a plain ``nn.Sequential`` (no hooks, no early-exit exception).

    Valid for models whose forward runs their children in order down to ``name`` (torchvision
    ResNets: stem, then ``layerK`` Sequentials of blocks).
    """
    parts = name.split(".")
    mods: list[nn.Module] = []
    node = model
    for depth, part in enumerate(parts):
        if depth > 0 and not isinstance(node, nn.Sequential):
            raise ValueError(f"cannot truncate inside {type(node).__name__} at {'.'.join(parts[:depth])}")
        names = [n for n, _ in node.named_children()]
        if part not in names:
            raise ValueError(f"{name!r}: no child {part!r} in {names}")
        for n, child in node.named_children():
            if n == part:
                break
            mods.append(child)
        node = getattr(node, part)
    mods.append(node)
    return nn.Sequential(*mods)


class Floor:
    """Forward of the truncated model plus backward to the input alone: the model's own cost."""

    def __init__(self, model: nn.Module, case: Case, precision: str, device: torch.device,
                 channels_last: bool = False):
        self.trunc = truncate(copy.deepcopy(model), case.layer).eval()
        for p in self.trunc.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(case.batch, 3, case.input_size, case.input_size, generator=g).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.x = x.requires_grad_(True)
        self.idx = torch.tensor(case.chans, device=device)
        self.precision, self.device = precision, device

    def forward(self) -> torch.Tensor:
        if self.precision == "bf16":
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                out = self.trunc(self.x)
        else:
            out = self.trunc(self.x)
        return out

    def run(self, steps: int) -> Sample:
        stamps: list[tuple[float, float]] = []
        with PeakMemory(self.device) as mem:
            for _ in range(steps):
                self.x.grad = None
                out = self.forward().float()
                picked = out[torch.arange(out.shape[0], device=out.device), self.idx]
                loss = -picked.mean(dim=(1, 2)).sum()
                loss.backward()
                _sync(self.device)
                stamps.append(_now())
        return Sample(_per_step(stamps), mem.mib)


def check_floor(model: nn.Module, case: Case, device: torch.device) -> None:
    """The truncated model must produce exactly what devvis records at ``case.layer``."""
    from devvis.hooks import ActivationRecorder

    f = Floor(model, case, "fp32", device)
    with torch.no_grad():
        a = f.trunc(f.x)
        with ActivationRecorder(model, [case.layer]) as rec:
            b = rec.run(f.x)[case.layer]
    if not torch.allclose(a, b, atol=1e-5, rtol=1e-4):
        raise RuntimeError(f"truncated model differs from the recorded {case.layer} activation")


# --------------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------------
@dataclass
class Row:
    case: str
    tool: str
    samples: list[Sample]
    batch: int
    value: float | None = None
    ratio_lucent: float | None = None
    over_floor: float | None = None
    over_floor_cl: float | None = None

    @property
    def s(self) -> float:
        return statistics.median(x.s_per_step for x in self.samples)

    @property
    def peak(self) -> float | None:
        v = [x.peak_mib for x in self.samples if x.peak_mib is not None]
        return max(v) if v else None

    @property
    def ips(self) -> float:
        return self.batch / self.s


def alternate(runners: dict[str, Callable[[], Sample]], rounds: int, log: Callable[[str], None]) -> dict[str, list[Sample]]:
    """Warm each runner up once, then ``rounds`` rounds, rotating the order each round."""
    names = list(runners)
    for n in names:
        runners[n]()
    out: dict[str, list[Sample]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            out[n].append(runners[n]())
        log(f"    round {r + 1}/{rounds}: " + ", ".join(f"{n} {out[n][-1].s_per_step:.4f}s" for n in names))
    return out


def compare_case(case: Case, model: nn.Module, L: Any, args: argparse.Namespace, device: torch.device,
                 log: Callable[[str], None]) -> list[Row]:
    steps = max(3, args.steps // case.steps_divisor)
    log(f"  case {case.name}: {case.title}, {steps} steps per round")
    check_floor(model, case, device)
    floors = {(p, cl): Floor(model, case, p, device, cl) for p in ("fp32", "bf16") for cl in (False, True)}
    runners: dict[str, Callable[[], Sample]] = {}
    if L is not None:
        runners["lucent"] = lambda: run_lucent(L, model, case, seed=0, steps=steps, device=device)
    runners["devvis"] = lambda: run_devvis(model, case, seed=0, steps=steps, precision="fp32", device=device)
    runners["devvis bf16"] = lambda: run_devvis(model, case, seed=0, steps=steps, precision="bf16", device=device)
    runners["floor"] = lambda: floors["fp32", False].run(steps)
    runners["floor bf16"] = lambda: floors["bf16", False].run(steps)
    runners["floor cl"] = lambda: floors["fp32", True].run(steps)
    runners["floor bf16 cl"] = lambda: floors["bf16", True].run(steps)
    res = alternate(runners, args.rounds, log)
    rows = {n: Row(case.name, n, s, case.batch) for n, s in res.items()}
    for n, r in rows.items():
        if r.samples[-1].images is not None:
            r.value = value_reached(model, case, r.samples[-1].images)
        if "lucent" in rows and n != "lucent":
            r.ratio_lucent = r.s / rows["lucent"].s
        if n.startswith("devvis"):
            # the floor of the issue: the truncated model as given (NCHW input); and the stricter
            # same-format floor, the model's cost with a channels-last input (what devvis feeds it
            # on the CPU when the maps are large enough)
            bf = " bf16" if n.endswith("bf16") else ""
            r.over_floor = r.s / rows["floor" + bf].s
            r.over_floor_cl = r.s / rows[f"floor{bf} cl"].s
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
    log(f"  quality: {case.title}, {args.quality_steps} steps, {args.quality_seeds} seeds")
    vals: dict[str, list[float]] = {}
    vals_ac: dict[str, list[float]] = {}
    for seed in range(args.quality_seeds):
        samples = {"devvis": run_devvis(model, case, seed=seed, steps=args.quality_steps, precision="fp32", device=device),
                   "devvis bf16": run_devvis(model, case, seed=seed, steps=args.quality_steps, precision="bf16", device=device)}
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
    other = "wall" if CLOCK == "cpu" else "cpu"
    head = (f"| case | tool | s/step ({CLOCK}) | devvis/Lucent | over floor | over floor cl | images/s | peak MiB "
            f"| objective | s/step ({other}) |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        o = statistics.median(x.times[0 if other == "wall" else 1] for x in r.samples)
        lines.append(f"| {r.case} | {r.tool} | {r.s:.4f} | {_f(r.ratio_lucent, '.3f')} | {_f(r.over_floor, '.3f')} | "
                     f"{_f(r.over_floor_cl, '.3f')} | {r.ips:.1f} | {_f(r.peak, '.0f')} | {_f(r.value, '.4f')} | {o:.4f} |")
    return "\n".join(lines)


def verdicts(rows: list[Row], cases: list[Case], qual: Quality | None, have_lucent: bool) -> list[tuple[str, float | None, str, bool | None]]:
    """(target, measured, bound, met) per target; met is None where it could not be measured."""
    by = {(r.case, r.tool): r for r in rows}
    out: list[tuple[str, float | None, str, bool | None]] = []
    for c in cases:
        dv, bf, lu = by.get((c.name, "devvis")), by.get((c.name, "devvis bf16")), by.get((c.name, "lucent"))
        if "ratio" in c.targets:
            m = dv.ratio_lucent if dv and lu else None
            out.append((f"{c.name}: devvis/Lucent", m, f"<= {c.targets['ratio']}", None if m is None else m <= c.targets["ratio"]))
        m = bf.ratio_lucent if bf and lu else None
        out.append((f"{c.name}: devvis bf16/Lucent", m, "<= 0.3", None if m is None else m <= 0.3))
        if dv and bf and dv.value is not None and bf.value is not None:
            rel = abs(bf.value - dv.value) / max(abs(dv.value), 1e-8)
            out.append((f"{c.name}: bf16 objective vs fp32 (relative difference)", rel, "<= 0.05", rel <= 0.05))
        if dv:
            out.append((f"{c.name}: devvis over floor", dv.over_floor, "<= 1.15", dv.over_floor <= 1.15))
            out.append((f"{c.name}: devvis over floor cl (same-format overhead, informative)", dv.over_floor_cl,
                        "<= 1.15", dv.over_floor_cl <= 1.15))
    if qual is not None:
        d = qual.median("devvis")
        if "lucent" in qual.values:
            lu_m = qual.median("lucent")
            out.append((f"quality {qual.case.name}: median devvis - Lucent ({qual.steps} steps)", d - lu_m, ">= 0", d >= lu_m))
        b = qual.median("devvis bf16")
        rel = abs(b - d) / max(abs(d), 1e-8)
        out.append((f"quality {qual.case.name}: bf16 median vs fp32 (relative difference)", rel, "<= 0.05", rel <= 0.05))
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


def main(args: argparse.Namespace) -> int:
    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    CLOCK = args.clock if args.clock != "auto" else ("cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("devvis benchmark: error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2

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
            Case("layer2.1", "layer2.1", [5], img, size, {"ratio": 0.5}),
            Case("layer4.1", "layer4.1", [5], img, size, {"ratio": 0.75}),
            Case("layer3.1x16", "layer3.1", list(range(16)), img, size, {"ratio": 0.6}, steps_divisor=2),
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
    print(f"  work: random-init resnet18 (seed 0); param.image({img}) FFT + decorrelated colour; Adam lr 0.05; "
          f"standard transforms; model input {size} px; {args.steps} steps per round, {args.rounds} rounds "
          f"(median), warm-up first, tools alternating; clock: {CLOCK} ({'process CPU time' if CLOCK == 'cpu' else 'wall'})")
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
        print(f"quality at equal steps ({qual.case.title}, {qual.steps} steps, {len(qual.values['devvis'])} seeds; "
              "channel activation of the final image without transforms):")
        for n in qual.values:
            vs = ", ".join(f"{v:.4f}" for v in qual.values[n])
            print(f"  {n:12s} median {qual.median(n):.4f}  (align_corners=True resize: {qual.median(n, True):.4f})  [{vs}]")
    print()
    if L is None:
        print(lucent_msg)
    print("targets:")
    vs = verdicts(rows, cases, qual, L is not None) if not args.tiny else []
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
            "rows": [{"case": r.case, "tool": r.tool, "s_per_step": r.s, "samples_wall_cpu": [list(x.times) for x in r.samples], "clock": CLOCK,
                      "ratio_lucent": r.ratio_lucent, "over_floor": r.over_floor, "over_floor_cl": r.over_floor_cl, "images_per_s": r.ips,
                      "peak_mib": r.peak, "value": r.value} for r in rows + compat_rows + series_rows],
            "quality": None if qual is None else {"values": qual.values, "values_align_corners": qual.values_ac},
            "targets": [{"target": n, "measured": m, "bound": b, "met": ok} for n, m, b, ok in vs],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
