"""Measurement pieces of the benchmark (``run.py``): timed steps, peak memory, the cases, each tool's
run, the model's own cost (the floor) and the alternating rounds.

Imported by ``run.py`` and ``profile_step.py`` after they have set the environment (a CPU run hides
CUDA from Lucent before torch is imported).
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from devvis import objectives as dobj  # noqa: E402
from devvis import param as dparam  # noqa: E402
from devvis.render import render as dv_render  # noqa: E402

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
               device: torch.device, obj: Any = None, transforms: str = "standard", fold: bool = True) -> Sample:
    """``devvis.render`` on ``case``; ``transforms``: ``"standard"`` (its default form),
    ``"standard-fused"`` or ``"standard-separate"``; ``fold``: ``render(fold_batchnorm=...)``."""
    stamps: list[tuple[float, float]] = []
    with PeakMemory(device) as mem:
        res = dv_render(
            model, obj if obj is not None else case.devvis_objective(),
            dparam.image(case.image, batch=case.batch, seed=seed),
            steps=steps, optimizer=lambda ps: TimedAdam(ps, 0.05, stamps, device), transforms=transforms,
            preprocess="imagenet", input_size=case.input_size, seed=seed, device=device, precision=precision,
            progress=False, fold_batchnorm=fold)
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
        if channels_last:  # input and weights channels-last, as a user would run the model so
            x = x.contiguous(memory_format=torch.channels_last)
            self.trunc = self.trunc.to(memory_format=torch.channels_last)
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
