"""A run's settings: one dataclass, its CLI flags and its YAML keys, all from the same fields.

:class:`RunSettings` holds everything ``devvis visualize`` and ``devvis sweep`` need
to render one run; :class:`ExecutorOptions` says how a sweep runs it. Each field
carries its flag's help text (and argparse details) in its metadata, so
:func:`add_flags` builds the command-line flags, :func:`from_args` reads them back,
and :func:`settings_from_mapping` reads a YAML config whose keys are the field
names. A new setting is one new field here.

>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_flags(p, RunSettings)
>>> s = from_args(RunSettings, p.parse_args(["--channels", "0", "2", "--neurons", "1,2"]))
>>> s.channels, s.neurons, s.max_iterations
([0, 2], [(1, 2)], 256)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from devvis.errors import ConfigError, DevvisError, closest
from devvis.render.pipeline import PREPROCESS_CHOICES, PREPROCESS_HELP, check_preprocess
from devvis.state import as_device
from devvis.typing import PathLike

AGGREGATIONS = ("average", "single", "sum")
LR_SCHEDULES = ("none", "exponential", "cosine")
PREPROCESS = PREPROCESS_CHOICES
PRECISIONS = ("fp32", "bf16", "fp16")
EXECUTORS = ("local", "slurm", "torchrun")
#: Settings that do not change an image (excluded from the settings hash).
NOT_HASHED = frozenset({"output_path", "overwrite", "progress", "device", "checkpoint_paths", "batch_size",
                        "trust_checkpoint", "layer_names", "channels", "neurons", "executor_note", "step", "exclude"})
#: Settings added later that enter the hash only when set, so runs made before them keep their hash.
HASHED_WHEN_SET = {"weights": "model", "input_channels": None, "alpha": False, "transparency_weight": 0.05,
                   "seed_image": None, "seed_closeness": 5.0}


def parse_neurons(text: str | None) -> list[tuple[int, int]] | None:
    """``"h,w;h,w"`` -> ``[(h, w), (h, w)]`` (``None`` stays ``None``).

    >>> parse_neurons("3,4;0,0")
    [(3, 4), (0, 0)]
    """
    if text is None:
        return None
    out = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        bits = part.split(",")
        if len(bits) != 2 or not all(b.strip().lstrip("-").isdigit() for b in bits):
            raise ConfigError(f"invalid --neurons entry {part!r}; expected 'h,w' pairs separated by ';', e.g. '3,4;0,0'")
        out.append((int(bits[0]), int(bits[1])))
    if not out:
        raise ConfigError(f"--neurons {text!r} names no position; expected e.g. '3,4;0,0'")
    return out


def parse_key_values(items: list[str]) -> dict[str, str]:
    """``["account=lab", "qos=low"]`` -> ``{"account": "lab", "qos": "low"}`` (``--slurm-param``)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"invalid --slurm-param {item!r}; expected KEY=VALUE, e.g. account=lab")
        params[key.replace("-", "_")] = value
    return params


def opt(default: Any = None, help: str = "", group: str = "", *, factory: Callable[[], Any] | None = None,
        flag: str | None = None, parse: Callable[[Any], Any] | None = None, **argparse_kwargs: Any) -> Any:
    """A settings field with its flag: help text, flag group, flag name (default ``--field-name``),
    ``parse`` (flag value -> field value) and further ``argparse`` options (``type``, ``nargs``, ...)."""
    meta = {"help": help, "group": group, "flag": flag, "parse": parse, "argparse": argparse_kwargs}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunSettings:
    """Everything ``devvis visualize`` needs; each field is a CLI flag (``--max-iterations``) and a YAML key
    (``max_iterations``) with the same default."""

    model: str | None = opt(None, "torchvision name, timm:NAME, package.module:callable or zoo name (optional when "
                            "the checkpoint folder holds model_config.json)", "what to visualize")
    checkpoint_paths: list[str] = opt(help="checkpoint files or folders (ordered by training step); none = random init",
                                      group="what to visualize", factory=list, flag="--checkpoint-path", nargs="+",
                                      metavar="PATH", parse=list)
    step: list[str] = opt(help="set the training step of a checkpoint that has none in its name or contents",
                          group="what to visualize", factory=list, nargs="+", metavar="FILE=N", parse=list)
    exclude: list[str] = opt(help="leave out checkpoint files matching these globs", group="what to visualize",
                             factory=list, nargs="+", metavar="GLOB", parse=list)
    weights: str = opt("model", "which model of checkpoints holding several: model, ema (timm's state_dict_ema) or "
                       "an entry's name (teacher)", "what to visualize")
    input_channels: int | None = opt(None, "channels of the model's input images (default: its first layer's)",
                                     "optimization", type=int)
    layer_names: list[str] | None = opt(None, "layers (default: a ViT-style model's MLP hidden layers, else every "
                                        "conv layer)", "what to visualize", nargs="+", metavar="LAYER")
    channels: list[int] | None = opt(None, "channels (default: all)", "what to visualize", nargs="+", type=int,
                                     metavar="C")
    neurons: list[tuple[int, int]] | None = opt(None, "visualize single neurons at these positions",
                                                "what to visualize", metavar="'h,w;h,w'", parse=parse_neurons)
    aggregation: str = opt("average", "average: mean over positions; sum: sum over positions; single: the centre "
                           "neuron", "what to visualize", choices=AGGREGATIONS)
    number_of_images: int = opt(1, "images per component", "what to visualize", type=int)
    batch_size: int = opt(8, "images rendered together in one batch", "what to visualize", type=int)
    max_iterations: int = opt(256, "optimization steps at most", "optimization", type=int)
    min_iterations: int = opt(32, "steps before convergence may stop", "optimization", type=int)
    convergence_threshold: float = opt(1e-3, "stop when the relative improvement over a window falls below this",
                                       "optimization", type=float)
    convergence_window: int = opt(32, "steps compared by the criterion", "optimization", type=int)
    learning_rate: float = opt(0.05, "Adam learning rate", "optimization", type=float)
    lr_schedule: str = opt("none", "learning-rate schedule", "optimization", choices=LR_SCHEDULES)
    lr_warmup_steps: int = opt(0, "linear warm-up steps", "optimization", type=int)
    image_size: int = opt(128, "feature image size (pixels)", "optimization", type=int)
    input_size: int | None = opt(None, "resize to the model's input size after transforms", "optimization", type=int)
    preprocess: str = opt("auto", PREPROCESS_HELP, "optimization", metavar="SPEC")
    reg_lambda: float = opt(0.0, "L2 penalty weight", "regularization", type=float)
    tv_weight: float = opt(0.0, "total-variation penalty weight", "regularization", type=float)
    l1_weight: float = opt(0.0, "L1 penalty weight", "regularization", type=float)
    jitter: int = opt(8, "jitter in pixels (0 = off)", "regularization", type=int)
    pad: int = opt(12, "padding before the transforms", "regularization", type=int)
    scale_range: tuple[float, float] = opt((0.9, 1.1), "random scale range", "regularization", type=float, nargs=2,
                                           metavar=("MIN", "MAX"), parse=tuple)
    rotate_degrees: float = opt(10.0, "random rotation range (+/- degrees)", "regularization", type=float)
    blur: float = opt(0.0, "Gaussian blur sigma in the transforms (0 = off)", "regularization", type=float)
    decorrelate: bool = opt(True, "decorrelated colour parameterization", "regularization")
    fft: bool = opt(True, "Fourier parameterization", "regularization")
    diversity_weight: float = opt(0.0, "diversity between the images of one component", "regularization", type=float)
    alpha: bool = opt(False, "transparent images: an opacity channel composited over random backgrounds, saved as "
                      "PNG with alpha", "regularization")
    transparency_weight: float = opt(0.05, "with --alpha: weight of the transparency reward (only what drives the "
                                     "unit stays opaque)", "regularization", type=float)
    seed_image: str | None = opt(None, "feature accentuation: start every image from this natural image and stay "
                                 "close to it", "what to visualize", metavar="PATH")
    seed_closeness: float = opt(5.0, "with --seed-image: weight of the closeness to the seed (relative squared "
                                "distance)", "regularization", type=float)
    precision: str = opt("fp32", "autocast precision of the model", "optimization", choices=PRECISIONS)
    seed: int = opt(0, "seeds the initial image and the transforms", "optimization", type=int)
    device: str | None = opt(None, "cpu, cuda, cuda:1, ... (default: cpu)", "optimization")
    output_path: str = opt("results", "results folder", "output")
    overwrite: bool = opt(False, "redo components already complete", "output", action="store_true")
    trust_checkpoint: bool = opt(False, "allow checkpoints that need arbitrary unpickling (can execute code: only for "
                                 "files you trust)", "what to visualize", action="store_true")
    progress: bool = opt(True, "progress bar", "output")

    def validate(self) -> None:
        """Raise :class:`~devvis.errors.ConfigError` naming the first invalid setting."""
        def bad(name: str, value: Any, valid: str) -> ConfigError:
            return ConfigError(f"invalid {name} {value!r}; {valid}")

        if self.aggregation not in AGGREGATIONS:
            raise bad("--aggregation", self.aggregation, f"choose one of {AGGREGATIONS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("--lr-schedule", self.lr_schedule, f"choose one of {LR_SCHEDULES}")
        for name in ("number_of_images", "batch_size", "max_iterations", "image_size", "convergence_window"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise bad("--" + name.replace("_", "-"), v, "must be a positive integer")
        if self.min_iterations < 0 or self.min_iterations > self.max_iterations:
            raise bad("--min-iterations", self.min_iterations, f"must lie in 0..--max-iterations ({self.max_iterations})")
        if self.learning_rate <= 0:
            raise bad("--learning-rate", self.learning_rate, "must be > 0")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise bad("--scale-range", list(self.scale_range), "needs 0 < MIN <= MAX")
        try:
            check_preprocess(self.preprocess)
        except DevvisError as e:
            raise bad("--preprocess", self.preprocess, str(e).split("; ", 1)[-1]) from None
        if self.input_channels is not None and (not isinstance(self.input_channels, int) or self.input_channels < 1):
            raise bad("--input-channels", self.input_channels, "must be a positive integer (or unset)")
        if self.precision not in PRECISIONS:
            raise bad("--precision", self.precision, "choose fp32, bf16 or fp16")
        if self.diversity_weight and self.number_of_images < 2:
            raise ConfigError(f"--diversity-weight {self.diversity_weight} needs --number-of-images >= 2 "
                              f"(got {self.number_of_images}): diversity compares images of one component")
        # Checked here, before any model loads, so a typo fails at once and not in every unit.
        for name in ("jitter", "pad", "lr_warmup_steps", "blur", "rotate_degrees"):
            if not getattr(self, name) >= 0:
                raise bad("--" + name.replace("_", "-"), getattr(self, name), "must be >= 0")
        if self.input_size is not None and (not isinstance(self.input_size, int) or self.input_size < 1):
            raise bad("--input-size", self.input_size, "must be a positive integer (or unset)")
        for name in ("convergence_threshold", "reg_lambda", "tv_weight", "l1_weight", "diversity_weight"):
            if not math.isfinite(getattr(self, name)):
                raise bad("--" + name.replace("_", "-"), getattr(self, name), "must be a finite number")
        for name in ("transparency_weight", "seed_closeness"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise bad("--" + name.replace("_", "-"), getattr(self, name), "must be a finite number >= 0")
        if self.seed_image is not None and not os.path.isfile(self.seed_image):
            raise bad("--seed-image", self.seed_image, "no such image file")
        if self.seed_image is not None and self.alpha:
            raise ConfigError("--seed-image starts from an opaque natural image; do not combine it with --alpha")
        if self.jitter and self.jitter * 2 + 4 >= self.image_size + 2 * self.pad:
            raise bad("--jitter", self.jitter, f"too large for --image-size {self.image_size} with --pad {self.pad}")
        try:
            as_device(self.device)
        except ConfigError:
            raise bad("--device", self.device, "expected cpu, cuda, cuda:1, mps, ...") from None
        if self.neurons and self.aggregation != "average":
            raise ConfigError("--neurons picks positions itself; do not combine it with --aggregation "
                              f"{self.aggregation!r}")

    def hash(self) -> str:
        """Hash of the settings that decide an image (not paths, device or batching): 16 hex digits."""
        d = {k: v for k, v in dataclasses.asdict(self).items()
             if k not in NOT_HASHED and not (k in HASHED_WHEN_SET and v == HASHED_WHEN_SET[k])}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class ExecutorOptions:
    """How a sweep runs: the ``executor:`` section of a sweep config, or ``devvis sweep``'s executor flags.

    ``executor``: ``local``, ``slurm`` or ``torchrun`` (chosen automatically under torchrun);
    ``workers``: local worker processes; ``units_per_job``: units per local task / SLURM array
    task; ``retries``: times a unit whose failure may be transient (or whose job died) is
    retried; ``threads``: torch CPU threads per worker. The SLURM fields describe the job;
    ``poll_s`` is the time between looks at the queue, ``lost_after_s`` how long a job may be
    gone from the queue with unfinished units before they are declared lost.
    """

    executor: str = opt("local", "local processes, SLURM job arrays (needs devvis[slurm]), or torchrun (chosen "
                        "automatically under torchrun)", "executor", choices=EXECUTORS)
    workers: int = opt(1, "local worker processes (1 = this process)", "executor", type=int)
    units_per_job: int = opt(1, "units per local task or SLURM array task (1 = one log per unit)", "executor", type=int)
    retries: int = opt(1, "retries of units whose failure may be transient or whose job died", "executor", type=int)
    threads: int | None = opt(None, "torch CPU threads per worker (default: --slurm-cpus on SLURM, CPUs/workers "
                              "locally)", "executor", type=int)
    partition: str | None = opt(None, "partition (default: the cluster's default)", "SLURM", flag="--slurm-partition")
    time_min: int = opt(60, "time limit per array task, minutes", "SLURM", flag="--slurm-time", type=int)
    gpus_per_node: int = opt(0, "GPUs per task", "SLURM", flag="--slurm-gpus", type=int)
    cpus_per_task: int = opt(1, "CPUs per task", "SLURM", flag="--slurm-cpus", type=int)
    mem_gb: float | None = opt(None, "memory per task, GB", "SLURM", flag="--slurm-mem-gb", type=float)
    array_parallelism: int = opt(256, "array tasks running at once", "SLURM", flag="--slurm-array-parallelism", type=int)
    job_name: str = opt("devvis-sweep", "job name", "SLURM", flag="--slurm-job-name")
    setup: list[str] = opt(help="shell lines run before each task (e.g. 'module load cuda')", group="SLURM",
                           factory=list, flag="--slurm-setup", nargs="+", metavar="LINE", parse=list)
    slurm_parameters: dict[str, Any] = opt(help="extra sbatch options, e.g. account=lab qos=low constraint=a100",
                                           group="SLURM", factory=dict, flag="--slurm-param", nargs="+",
                                           metavar="KEY=VALUE", parse=parse_key_values)
    poll_s: float = opt(5.0, "seconds between looks at the queue", "SLURM", flag="--poll-interval", type=float)
    lost_after_s: float = opt(30.0, "seconds after a job leaves the queue before its unfinished units count as lost",
                              "SLURM", flag="--lost-after", type=float)

    def validate(self) -> None:
        """Raise :class:`~devvis.errors.ConfigError` naming the first invalid option."""
        if self.executor not in EXECUTORS:
            raise ConfigError(f"invalid executor {self.executor!r}; choose one of {EXECUTORS}")
        for name in ("workers", "units_per_job", "time_min", "cpus_per_task", "array_parallelism"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"invalid executor option {name} {v!r}; must be a positive integer")
        for name in ("retries", "gpus_per_node"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"invalid executor option {name} {v!r}; must be an integer >= 0")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"invalid executor option threads {self.threads!r}; must be a positive integer")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise ConfigError(f"invalid executor option mem_gb {self.mem_gb!r}; must be > 0")
        for name in ("poll_s", "lost_after_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"invalid executor option {name} {getattr(self, name)!r}; must be > 0 seconds")


# ------------------------------------------------------------------------------------------
# flags
# ------------------------------------------------------------------------------------------

def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, cls: type = RunSettings) -> None:
    """Add one flag per field of ``cls`` (:class:`RunSettings` or :class:`ExecutorOptions`), in argument
    groups named by the fields' ``group``, with the fields' defaults."""
    groups: dict[str, Any] = {}
    default = cls()
    for f in dataclasses.fields(cls):
        meta = f.metadata
        g = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        kwargs = dict(meta["argparse"])
        value = getattr(default, f.name)
        if isinstance(value, bool) and "action" not in kwargs:
            kwargs["action"] = argparse.BooleanOptionalAction
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict):
            value = []  # KEY=VALUE items, parsed into the dict
        g.add_argument(_flag(f), dest=f.name, default=value, help=meta["help"], **kwargs)


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """The ``cls`` instance the parsed flags of :func:`add_flags` describe (``--min-iterations`` is clamped
    to ``--max-iterations``)."""
    values = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name)
        parse = f.metadata.get("parse")
        values[f.name] = parse(v) if parse is not None and v is not None else v
    return cls(**clamp_min_iterations(values))


def clamp_min_iterations(values: dict[str, Any]) -> dict[str, Any]:
    """``min_iterations`` clamped to ``max_iterations`` (``--max-iterations 10`` alone must not fail on the
    default ``--min-iterations 32``): the one rule for flags (visualize, sweep) and sweep configs."""
    if "min_iterations" in values and "max_iterations" in values and isinstance(values["max_iterations"], int):
        values["min_iterations"] = min(values["min_iterations"], values["max_iterations"])
    return values


# ------------------------------------------------------------------------------------------
# config files
# ------------------------------------------------------------------------------------------

def _check_type(where: str, name: str, value: Any, default: Any) -> Any:
    """Coerce a YAML value to the type of the field's default, or raise naming the key."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        value = type(default)(value) if ok else value
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: {name} must be a {type(default).__name__}, got {value!r}")
    return value


def _neurons(where: str, value: Any) -> list[tuple[int, int]] | None:
    if value is None or isinstance(value, str):
        return parse_neurons(value)
    try:
        return [(int(h), int(w)) for h, w in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: neurons must be 'h,w;h,w' or a list of [h, w] pairs, got {value!r}") from None


def _executor_options(where: str, value: Any) -> dict[str, Any]:
    names = [f.name for f in dataclasses.fields(ExecutorOptions)]
    default = ExecutorOptions()
    if isinstance(value, str):
        value = {"executor": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: executor must be a name {EXECUTORS} or a mapping of options")
    opts = {}
    for k, v in value.items():
        k = str(k).replace("-", "_")
        k = "executor" if k in ("name", "kind") else k
        if k not in names:
            near = closest(k, names)
            raise ConfigError(f"{where}: unknown executor option {k!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                              + f"; valid: {', '.join(names)}")
        opts[k] = _check_type(where, f"executor.{k}", v, getattr(default, k))
    return opts


def settings_from_mapping(data: Mapping[str, Any], where: str = "config") -> tuple[RunSettings, ExecutorOptions]:
    """Settings and executor options from a mapping (a parsed sweep config).

    Keys are :class:`RunSettings` field names (``-`` may stand for ``_``; ``checkpoint_path``
    for ``checkpoint_paths``), plus ``executor``: a name (``slurm``) or a mapping of
    :class:`ExecutorOptions` fields. Unknown keys raise naming the closest valid ones.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(RunSettings)]
    defaults = RunSettings()
    values: dict[str, Any] = {}
    opts: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key == "executor":
            opts = _executor_options(where, value)
            continue
        key = "checkpoint_paths" if key == "checkpoint_path" else key
        if key not in names:
            near = closest(key, names + ["executor"])
            raise ConfigError(f"{where}: unknown setting {raw_key!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                              + f"; valid: {', '.join(names)}, executor")
        if key == "neurons":
            value = _neurons(where, value)
        elif key == "checkpoint_paths" and isinstance(value, str):
            value = [value]
        elif key in ("layer_names", "channels") and value is not None:
            value = list(value) if isinstance(value, (list, tuple)) else [value]
        else:
            value = _check_type(where, key, value, getattr(defaults, key))
        values[key] = value
    settings = dataclasses.replace(defaults, **values)
    clamped = clamp_min_iterations({"min_iterations": settings.min_iterations, "max_iterations": settings.max_iterations})
    settings.min_iterations = clamped["min_iterations"]
    options = dataclasses.replace(ExecutorOptions(), **opts)
    settings.validate()
    options.validate()
    return settings, options


def load_config(path: PathLike) -> tuple[RunSettings, ExecutorOptions]:
    """Read a sweep config (YAML; see :func:`settings_from_mapping` for the keys).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "sweep.yaml")
    >>> _ = open(p, "w").write("model: resnet18\\nchannels: [0, 1]\\nexecutor: {executor: slurm, retries: 2}\\n")
    >>> s, o = load_config(p)
    >>> s.channels, o.executor, o.retries
    ([0, 1], 'slurm', 2)
    """
    import yaml

    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise ConfigError(f"cannot read sweep config {p!r}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"sweep config {p!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    return settings_from_mapping(data or {}, where=p)


#: The name ``devvis visualize``'s settings had before the ``runs`` package (kept for user code).
VisualizeSettings = RunSettings
