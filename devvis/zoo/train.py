"""Train a compact ResNet on SyntheticShapes and save a checkpoint series.

The series is what devvis's longitudinal tools look at: weights saved at
log-spaced steps (0, 1, 2, 4, ..., final), because features change fastest
early in training. The output folder holds

* ``step_{step:06d}.safetensors`` — the model's ``state_dict`` (BatchNorm running
  statistics and ``num_batches_tracked`` included) with safetensors metadata
  ``{"step": "<step>", "devvis_model_config": "<JSON of model_config.json>"}``;
* ``model_config.json`` — ``{"name": "compact_resnet", "kwargs": {...}}``, enough
  for ``devvis.load_model(None, checkpoint=path)`` to rebuild the model;
* ``series.json`` — the settings, and per checkpoint its step, file, training
  loss, held-out loss and held-out accuracy.

Training is deterministic on the CPU for a given seed and thread count: the
initial weights come from a forked, seeded torch RNG (the global RNG is left as
it was), and data order and flips from a seeded ``torch.Generator``.

>>> import tempfile
>>> r = train_series(tempfile.mkdtemp(), steps=4, width=4, n_train=64, n_test=24, progress=False)
>>> r.steps, r.reused
([0, 1, 2, 4], False)
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from devvis.data.synthetic import CURRICULUM_PHASES, Curriculum, SyntheticShapes, num_classes
from devvis.errors import CheckpointError, ConfigError, OutputError, closest
from devvis.io import metadata, read_json, write_json
from devvis.models.checkpoints import MODEL_CONFIG_FILE, save_checkpoint
from devvis.state import frozen

#: File names inside a series folder.
SERIES_FILE = "series.json"
CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.safetensors$")

#: Settings of the quick series: about 20 s of one CPU core, ~80% held-out accuracy (chance: 8%).
QUICK_SETTINGS: dict[str, Any] = {"steps": 300, "width": 8, "n_train": 3000}

OPTIMIZERS = ("sgd", "adam")

#: Checkpoints of a curriculum run (evenly spaced, plus step 0) unless ``checkpoint_steps`` is given.
CURRICULUM_CHECKPOINTS = 30
SCHEDULES = ("cosine", "constant")


def checkpoint_file(step: int) -> str:
    """File name of the checkpoint at ``step``: ``step_000100.safetensors``."""
    return f"step_{step:06d}.safetensors"


def log_spaced_steps(steps: int) -> list[int]:
    """0, 1, 2, 4, 8, ... (powers of two below ``steps``), then ``steps``.

    >>> log_spaced_steps(100)
    [0, 1, 2, 4, 8, 16, 32, 64, 100]
    """
    out = [0]
    k = 1
    while k < steps:
        out.append(k)
        k *= 2
    if steps > 0:
        out.append(steps)
    return out


@dataclass
class TrainResult:
    """Outcome of :func:`train_series` (or of :func:`load_series_info`).

    Lists are aligned: entry ``i`` belongs to checkpoint ``steps[i]``.
    ``train_loss`` is the cross-entropy on a fixed subset of the training set (its first 500 images) and
    ``test_loss``/``test_accuracy`` on the fixed held-out set, all in eval mode.
    """

    output_dir: Path
    steps: list[int]
    checkpoints: list[Path]
    train_loss: list[float]
    test_loss: list[float]
    test_accuracy: list[float]
    model_config: dict[str, Any]
    settings: dict[str, Any]
    seconds: float
    reused: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        """Held-out accuracy (0-1) of the last checkpoint."""
        return self.test_accuracy[-1]

    @property
    def final_checkpoint(self) -> Path:
        """Path of the last checkpoint."""
        return self.checkpoints[-1]


def _check_int(name: str, v: Any, minimum: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {v!r}")
    return v


def _resolve_checkpoint_steps(steps: int, checkpoint_steps: Sequence[int] | None) -> list[int]:
    if checkpoint_steps is None:
        return log_spaced_steps(steps)
    out = set()
    for s in checkpoint_steps:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= steps:
            raise ConfigError(f"checkpoint step {s!r} must be an integer in [0, steps={steps}]")
        out.add(s)
    out.add(steps)  # the trained model is always saved
    return sorted(out)


def _series_from_json(output_dir: Path, info: dict[str, Any], reused: bool) -> TrainResult:
    cks = info["checkpoints"]
    return TrainResult(
        output_dir=output_dir,
        steps=[c["step"] for c in cks],
        checkpoints=[output_dir / c["file"] for c in cks],
        train_loss=[c["train_loss"] for c in cks],
        test_loss=[c["test_loss"] for c in cks],
        test_accuracy=[c["test_accuracy"] for c in cks],
        model_config=info["model_config"],
        settings=info["settings"],
        seconds=float(info.get("seconds") or 0.0),
        reused=reused,
    )


def load_series_info(output_dir: str | os.PathLike) -> TrainResult:
    """Read the ``series.json`` written by :func:`train_series` in ``output_dir``.

    Raises :class:`~devvis.errors.CheckpointError` when the folder holds no series
    file or the series is incomplete (training was interrupted).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = train_series(d, steps=2, width=4, n_train=32, n_test=12, progress=False)
    >>> load_series_info(d).steps
    [0, 1, 2]
    """
    output_dir = Path(output_dir)
    path = output_dir / SERIES_FILE
    if not path.is_file():
        raise CheckpointError(f"no {SERIES_FILE} in {str(output_dir)!r}; train a series there with `devvis train`")
    try:
        info = read_json(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e}") from e
    if not info.get("complete"):
        raise CheckpointError(f"the series in {str(output_dir)!r} is incomplete (training was interrupted); train it again")
    return _series_from_json(output_dir, info, reused=True)


def _reusable(output_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stored series info when ``output_dir`` holds a finished series with exactly ``settings``."""
    path = output_dir / SERIES_FILE
    if not path.is_file():
        return None
    try:
        info = read_json(path)
    except (OSError, ValueError):
        return None
    if not info.get("complete") or info.get("settings") != settings:
        return None
    if not all((output_dir / c["file"]).is_file() for c in info.get("checkpoints", [])):
        return None
    if not (output_dir / MODEL_CONFIG_FILE).is_file():
        return None
    return info


def _clear_stale(output_dir: Path) -> None:
    """Remove checkpoints of an earlier series (different settings) before writing a new one.

    Only files that an earlier ``series.json`` lists are removed; checkpoint files
    with no series file beside them are someone else's, and we refuse to mix with them.
    """
    path = output_dir / SERIES_FILE
    if path.is_file():
        try:
            old = read_json(path)
            files = [c["file"] for c in old.get("checkpoints", [])]
        except (OSError, ValueError, KeyError, TypeError):
            files = []
        for f in files:
            p = output_dir / f
            if CHECKPOINT_PATTERN.match(p.name) and p.parent == output_dir and p.is_file():
                p.unlink()
        path.unlink()
    foreign = sorted(p.name for p in output_dir.glob("step_*.safetensors") if CHECKPOINT_PATTERN.match(p.name))
    if foreign:
        raise ConfigError(
            f"{str(output_dir)!r} already holds checkpoint files not listed in a {SERIES_FILE} "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); choose an empty --output-path"
        )


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) on images ``x`` (N,3,H,W), labels ``y`` (N,)."""
    loss_sum, correct = 0.0, 0
    with frozen(model, freeze=False):  # every submodule's mode comes back as it was
        for i in range(0, len(x), batch):
            logits = model(x[i : i + batch])
            loss_sum += F.cross_entropy(logits, y[i : i + batch], reduction="sum").item()
            correct += int((logits.argmax(1) == y[i : i + batch]).sum())
    n = max(len(x), 1)
    return loss_sum / n, correct / n


def _lr_at(step: int, steps: int, lr: float, schedule: str = "cosine") -> float:
    """Linear warm-up over the first 3% of steps, then cosine decay to zero (or constant)."""
    warm = max(1, int(0.03 * steps))
    if step < warm:
        return lr * (step + 1) / warm
    if schedule == "constant":
        return lr
    return 0.5 * lr * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def _shuffled(pool: torch.Tensor | None, n: int, gen: torch.Generator) -> torch.Tensor:
    """A random order of ``range(n)`` (no curriculum), or of the curriculum's ``pool`` of indices."""
    return torch.randperm(n, generator=gen) if pool is None else pool[torch.randperm(len(pool), generator=gen)]


def _curriculum_settings(steps: int, curriculum: Any, checkpoint_steps: Sequence[int] | None,
                         schedule: str | None) -> tuple[Curriculum | None, Sequence[int] | None, str]:
    """The curriculum, the checkpoint steps and the schedule a ``curriculum=`` argument implies."""
    if curriculum is None or curriculum is False:
        return None, checkpoint_steps, schedule or "cosine"
    cur = curriculum if isinstance(curriculum, Curriculum) else Curriculum.build(steps, curriculum)
    if cur.starts[-1] >= steps:
        raise ConfigError(f"curriculum phases must start before the last step {steps}; got {list(cur.starts)!r}")
    if checkpoint_steps is None:  # evenly spaced, so every planted boundary is a checkpoint-sized event
        checkpoint_steps = sorted({round(k * steps / CURRICULUM_CHECKPOINTS) for k in range(CURRICULUM_CHECKPOINTS + 1)})
    return cur, checkpoint_steps, schedule or "constant"


def train_series(
    output_dir: str | os.PathLike,
    *,
    steps: int = 1000,
    checkpoint_steps: Sequence[int] | None = None,
    batch_size: int = 64,
    lr: float = 0.05,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    width: int = 16,
    blocks: Sequence[int] = (1, 1, 1),
    size: int = 32,
    n_train: int = 10000,
    n_test: int = 500,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
    curriculum: bool | dict[str, int] | Sequence[int] | Curriculum | None = None,
    schedule: str | None = None,
) -> TrainResult:
    """Train :func:`~devvis.zoo.compact_resnet` on :class:`~devvis.data.SyntheticShapes`, saving a checkpoint series.

    Args:
        output_dir: folder for the checkpoints, ``model_config.json`` and ``series.json``.
        steps: optimizer steps (one batch each).
        checkpoint_steps: steps to save; default :func:`log_spaced_steps` (0, 1, 2, 4, ..., ``steps``).
            ``steps`` itself is always saved. Step 0 is the initialization.
        batch_size, lr, optimizer, weight_decay: SGD (Nesterov momentum 0.9) or AdamW (``"adam"``,
            for which an ``lr`` near 0.003 suits); the learning rate warms up over 3% of the
            steps, then decays along a cosine to zero.
        width, blocks: architecture (channels of ``layer1``; BasicBlocks per stage).
        size: image side in pixels.
        n_train, n_test: training images (generated once, flipped left-right at random) and held-out images.
        seed: fixes data, initialization and data order.
        threads: torch intra-op threads while training (restored afterwards); ``None`` keeps the
            current setting. ``1`` is fastest for these small models on a busy shared machine, where
            threads mostly wait for each other. Not part of the settings that decide reuse.
        progress: show a tqdm bar with the running loss and last held-out accuracy.
        curriculum: a planted curriculum (:class:`~devvis.data.synthetic.Curriculum`): colour classes
            first, shapes added at one step, gratings ("texture") at a later one. ``True`` adds them at
            ``steps // 3`` and ``2 * steps // 3``; ``{"shape": s1, "texture": s2}`` or ``(s1, s2)`` at
            those steps. A batch holds only the classes active at its step; the held-out set keeps all
            classes, and each checkpoint also records the held-out accuracy per phase
            (``phase_accuracy``). With a curriculum, ``checkpoint_steps`` defaults to 31 evenly spaced
            steps and ``schedule`` to ``"constant"``, so the planted boundaries are the run's only events.
        schedule: ``"cosine"`` (the default without a curriculum) or ``"constant"`` (after the warm-up).

    If ``output_dir`` already holds a finished series with the same settings, it
    is returned as is (``reused=True``) and nothing is written.

    Returns:
        :class:`TrainResult`; ``result.final_accuracy`` is the held-out accuracy in [0, 1].

    >>> import tempfile
    >>> r = train_series(tempfile.mkdtemp(), steps=3, checkpoint_steps=[0, 2], width=4,
    ...                  n_train=32, n_test=12, progress=False)
    >>> r.steps, [p.name for p in r.checkpoints][-1]
    ([0, 2, 3], 'step_000003.safetensors')
    """
    steps = _check_int("steps", steps, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    seed = _check_int("seed", seed, 0)
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"lr must be a positive finite number; got {lr!r}")
    if optimizer not in OPTIMIZERS:
        close = closest(str(optimizer), OPTIMIZERS)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown optimizer {optimizer!r}{hint}; valid: {', '.join(OPTIMIZERS)}")
    cur, checkpoint_steps, schedule = _curriculum_settings(steps, curriculum, checkpoint_steps, schedule)
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    ck_steps = _resolve_checkpoint_steps(steps, checkpoint_steps)
    if threads is not None:
        threads = _check_int("threads", threads, 1)

    model_config = {
        "name": "compact_resnet",
        "kwargs": {"num_classes": num_classes, "width": width, "blocks": list(blocks), "in_channels": 3},
    }
    # JSON round trip so a fresh dict compares equal to the one read back from series.json.
    settings = json.loads(json.dumps({
        "dataset": "SyntheticShapes", "steps": steps, "checkpoint_steps": ck_steps, "batch_size": batch_size,
        "lr": float(lr), "optimizer": optimizer, "weight_decay": float(weight_decay), "size": size,
        "n_train": n_train, "n_test": n_test, "seed": seed, "model_config": model_config,
        # Only non-default keys, so a default run's settings (and reuse of older series) stay as they were.
        **({"schedule": schedule} if schedule != "cosine" else {}),
        **({"curriculum": cur.to_dict()} if cur is not None else {}),
    }))

    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"output path {str(output_dir)!r} exists and is not a folder")
    info = _reusable(output_dir, settings)
    if info is not None:
        return _series_from_json(output_dir, info, reused=True)

    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(output_dir, settings, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _train(output_dir: Path, settings: dict[str, Any], progress: bool) -> TrainResult:
    """The training loop of :func:`train_series`, for validated ``settings``."""
    from tqdm.auto import tqdm

    from devvis.zoo.resnet import compact_resnet

    model_config = settings["model_config"]
    steps, ck_steps, batch_size = settings["steps"], settings["checkpoint_steps"], settings["batch_size"]
    schedule = settings.get("schedule", "cosine")
    cur = Curriculum(tuple(p["start"] for p in settings["curriculum"]["phases"])) if "curriculum" in settings else None
    n_train, n_test, size, lr, seed = (settings[k] for k in ("n_train", "n_test", "size", "lr", "seed"))

    t0 = time.perf_counter()
    # Build (and so validate) the model and the data sets before the slow part.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = compact_resnet(**model_config["kwargs"])
    train_ds = SyntheticShapes(n_train, size, seed, "train")
    test_ds = SyntheticShapes(n_test, size, seed, "test")
    x_train, y_train = train_ds.tensors()
    x_test, y_test = test_ds.tensors()
    n_probe = min(n_train, 500)  # the fixed training subset on which train_loss is measured

    output_dir.mkdir(parents=True, exist_ok=True)
    _clear_stale(output_dir)
    write_json(output_dir / MODEL_CONFIG_FILE, model_config)

    decay, no_decay = [], []
    for p in model.parameters():
        # Weight decay on conv/linear weights only; decaying BN scales and biases only slows learning.
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": settings["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if settings["optimizer"] == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=lr)

    gen = torch.Generator().manual_seed(seed)
    pool = None if cur is None else cur.pool(1, y_train)
    n_pool = n_train if pool is None else len(pool)
    order = _shuffled(pool, n_pool, gen)
    cursor = 0
    records: list[dict[str, Any]] = []
    save_at = set(ck_steps)

    def write_series(complete: bool) -> None:
        write_json(output_dir / SERIES_FILE, metadata(
            "train_series", complete=complete, settings=settings, model_config=model_config,
            classes=list(train_ds.classes), seconds=round(time.perf_counter() - t0, 3), checkpoints=records,
        ))

    def checkpoint(step: int) -> float:
        fname = checkpoint_file(step)
        save_checkpoint(model, output_dir / fname, step=step, model_config=model_config)
        train_loss, _ = _evaluate(model, x_train[:n_probe], y_train[:n_probe])
        test_loss, test_acc = _evaluate(model, x_test, y_test)
        records.append({"step": step, "file": fname, "train_loss": train_loss, "test_loss": test_loss,
                        "test_accuracy": test_acc})
        if cur is not None:
            records[-1]["phase_accuracy"] = {
                name: _evaluate(model, x_test[keep], y_test[keep])[1]
                for name, classes in CURRICULUM_PHASES.items()
                for keep in [torch.isin(y_test, torch.tensor(classes))]}
        write_series(complete=False)
        return test_acc

    model.train()
    acc = checkpoint(0) if ck_steps[0] == 0 else float("nan")
    running = float("nan")
    bar = tqdm(total=steps, desc="train", unit="step", disable=not progress)
    try:
        for step in range(1, steps + 1):
            if cur is not None and len(cur.classes_at(step)) != len(cur.classes_at(step - 1)):
                pool = cur.pool(step, y_train)  # a phase starts: draw from the larger pool at once
                n_pool = len(pool)
                cursor = n_pool
            if cursor + batch_size > n_pool:
                order, cursor = _shuffled(pool, n_pool, gen), 0
            idx = order[cursor : cursor + min(batch_size, n_pool)]
            cursor += batch_size
            xb, yb = x_train[idx], y_train[idx]
            # Left-right flips keep every class's identity (a horizontal grating stays horizontal,
            # a triangle still points up) and double the effective data.
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step - 1, steps, lr, schedule)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            li = loss.item()
            if not math.isfinite(li):
                raise ConfigError(f"training diverged at step {step} (loss {li}); lower the learning rate (lr={lr})")
            running = li if math.isnan(running) else 0.95 * running + 0.05 * li
            if step in save_at:
                acc = checkpoint(step)
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}", acc=f"{acc:.3f}", refresh=False)
    finally:
        bar.close()

    write_series(complete=True)
    return _series_from_json(output_dir, read_json(output_dir / SERIES_FILE), reused=False)
