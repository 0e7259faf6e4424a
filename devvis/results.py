"""The results folder: one versioned record per image, one writer, one reader.

Every image devvis renders is stored as ``STEM.jpg`` (``STEM.png`` when transparent) with
``STEM.json`` beside it: its *image record* (documented in ``docs/results-schema.md``). :meth:`RenderResult.save`,
``devvis visualize``/``devvis sweep`` and :meth:`SeriesResult.save` all write it through
:func:`write_image`; ``devvis grid``, ``devvis report``, resuming runs and notebooks read
it through :func:`open_results` (a folder) or :func:`read_record` (one file). Records
written by devvis 0.x (schema 1: ``kind`` ``"visualize"`` with ``final_activation`` and a
``loss_history`` of negated objective values, or ``kind`` ``"render"``) are converted
when read, so old folders still open.

>>> import tempfile, torch
>>> d = tempfile.mkdtemp()
>>> rec = image_record(objective="channel(conv, 0)", layers=["conv"], history=[[0.5], [1.5]], status="completed",
...                    final_value=1.5, step=100, layer="conv", channel=0)
>>> _ = write_image(f"{d}/step_000100", "layer_conv_channel_0_average-0", torch.rand(3, 8, 8), rec)
>>> e = open_results(d).entries[0]
>>> e.step, e.layer, e.channel, e.image_number, e.record["final_value"]
(100, 'conv', 0, 0, 1.5)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from devvis import io as dio
from devvis.errors import OutputError
from devvis.typing import ImageBatch, PathLike

#: Version of the image record; records of version 1 are converted by :func:`upgrade_record`.
SCHEMA_VERSION = 3
KIND = "image"
#: Statuses of a record: the render ran to the end, stopped on convergence, was interrupted, or its
#: objective became NaN/infinite (no image then; ``error`` says what happened).
STATUSES = ("completed", "converged", "interrupted", "nan")
SUCCESS = ("completed", "converged")
#: Keys of the render itself, present in every record.
RENDER_KEYS = ("schema_version", "kind", "versions", "written_at", "image_file", "image_index", "objective", "layers",
               "final_value", "final_value_transformed", "history", "status", "converged", "converged_step",
               "steps_run", "time_s", "config", "error")
#: Keys of the run the image belongs to, present in every record (``None`` when unknown).
RUN_KEYS = ("model", "checkpoint_path", "step", "layer", "channel", "neuron", "aggregation", "image_number", "seed",
            "settings_hash", "parameters")
RECORD_KEYS = RENDER_KEYS + RUN_KEYS
#: Manifests naming a folder's checkpoints: a run's (visualize, sweep) and a SeriesResult's.
MANIFESTS = ("manifest.json", "series_result.json")
_STEP_DIR = re.compile(r"^step_(\d+)$")
_STEM = re.compile(r"^layer_(?P<layer>.+)_channel_(?P<channel>\d+)_(?P<agg>.+)-(?P<j>\d+)$")


def step_dir(step: int | None) -> str:
    """Folder name of one checkpoint's outputs: ``step_000100`` (``random_init`` without a checkpoint).

    The one rule of results folders; :func:`open_results` parses it back.

    >>> step_dir(100), step_dir(None)
    ('step_000100', 'random_init')
    """
    return "random_init" if step is None else f"step_{step:06d}"


def component_stem(layer: str, channel: int | str, aggregation: str = "average", j: int = 0) -> str:
    """File stem of one component's image: ``layer_{layer}_channel_{c}_{aggregation}-{j}``.

    The one naming rule of results folders (``devvis visualize``, ``sweep``, ``render_series``);
    :func:`open_results` parses it back.

    >>> component_stem("layer3.1", 7)
    'layer_layer3.1_channel_7_average-0'
    """
    safe = re.sub(r"[^A-Za-z0-9._\-\[\]]", "_", layer)
    return f"layer_{safe}_channel_{channel}_{aggregation}-{j}"


def image_component(fields: Mapping[str, Any], index: int | None) -> tuple[int | None, int | None]:
    """``(channel, image number)`` of image ``index`` from an objective's fields.

    A ``channels(layer, [c0, c1, ...])`` render targets ``ci`` with image ``i``; a
    ``channel``/``neuron`` objective targets its ``n`` with every image; anything else: ``None``.

    >>> image_component({"objective_type": "channels", "channels": [4, 7]}, 3)
    (7, 1)
    """
    j = index or 0
    kind = fields.get("objective_type")
    if kind == "channels" and isinstance(fields.get("channels"), (list, tuple)) and fields["channels"]:
        chans = fields["channels"]
        return int(chans[j % len(chans)]), j // len(chans)
    if kind in ("channel", "neuron") and isinstance(fields.get("n"), int):
        return int(fields["n"]), j
    return None, j


def image_record(*, objective: str, layers: Sequence[str], history: Sequence[Sequence[float]] | Any = (),
                 final_value: float | None = None, status: str, image_index: int | None = 0,
                 column: int | None = None, converged_step: int | None = None,
                 steps_run: int | None = None, time_s: float | None = None, config: Mapping[str, Any] | None = None,
                 error: str | None = None, fields: Mapping[str, Any] | None = None, **run: Any) -> dict[str, Any]:
    """One image record (schema :data:`SCHEMA_VERSION`).

    ``history`` is the render's objective values per step, ``(steps, B)`` (higher is
    better, each under that step's random transforms); the record keeps column ``column``
    (default ``image_index``) and its last value as ``final_value_transformed``.
    ``final_value`` is the objective on the saved image without transforms (what
    ``RenderResult.final_values`` holds); when not given it is ``None`` (not measured): the
    value under transforms never stands in for it.
    ``fields`` are the objective's own fields (``objective_type``,
    ``n``, ``channels``, ...), stored flat; ``run`` fills the :data:`RUN_KEYS` (``step``,
    ``layer``, ``channel``, ...) and may add further keys. ``channel``/``image_number``
    default to what a ``channel``/``channels`` objective says about image ``image_index``.
    """
    col = image_index if column is None else column
    hist = [float(row[col]) for row in history] if col is not None else []
    fields = dict(fields or {})
    channel, number = image_component(fields, image_index)
    rec = dio.metadata(KIND)
    rec["schema_version"] = SCHEMA_VERSION
    rec.update(image_file=None, image_index=image_index, objective=objective, layers=list(layers),
               final_value=final_value,
               final_value_transformed=hist[-1] if hist else None, history=hist, status=status,
               converged=status == "converged", converged_step=converged_step,
               steps_run=len(hist) if steps_run is None else steps_run, time_s=time_s, config=dict(config or {}),
               error=error)
    rec.update({k: None for k in RUN_KEYS})
    rec.update(layer=fields.get("layer"), channel=channel, image_number=number)
    rec.update({k: v for k, v in fields.items() if k not in RECORD_KEYS})
    rec.update(run)
    if rec["neuron"] is not None:
        rec["neuron"] = list(rec["neuron"])
    return rec


def write_image(output_dir: PathLike, stem: str, image: ImageBatch | None, record: Mapping[str, Any]) -> list[Path]:
    """Write ``STEM.jpg`` (``image``: ``(C, H, W)`` in [0, 1]) and ``STEM.json`` (``record``) atomically.

    A transparent image (4 channels, RGBA: ``param.image(..., alpha=True)``) is written as
    ``STEM.png`` with its alpha channel; the record's ``image_file`` names the file either way.
    With ``image=None`` (a failed render) any older ``STEM.jpg``/``STEM.png`` is removed, so no
    image stands beside a record that says it failed. Returns the paths written (image first).
    """
    folder = Path(output_dir)
    rgba = image is not None and tuple(image.shape)[0] == 4
    img_path, json_path = folder / f"{stem}.{'png' if rgba else 'jpg'}", folder / f"{stem}.json"
    rec = dict(record)
    written = []
    if image is not None:
        if rgba:
            dio.atomic_write_bytes(img_path, _rgba_png(image))
        else:
            dio.write_image(img_path, image)
        rec["image_file"] = img_path.name
        written.append(img_path)
    else:
        for suffix in (".jpg", ".png"):
            img_path.with_suffix(suffix).unlink(missing_ok=True)
        rec["image_file"] = None
    dio.write_json(json_path, rec)
    return written + [json_path]


def _rgba_png(image: ImageBatch) -> bytes:
    """PNG bytes of one RGBA image ``(4, H, W)`` in [0, 1], alpha kept."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(dio.to_uint8_hwc(image), mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------

def upgrade_record(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A record of any version as a current one (version 1 ``visualize`` and ``render`` records converted).

    Version 1 ``visualize`` records stored ``final_activation`` and ``loss_history`` (the
    negated objective values); they become ``history`` (objective values, higher is better).
    Versions 1 and 2 measured the final value on the last step's transformed image: it is kept as
    ``final_value_transformed``, and ``final_value`` (version 3: without transforms) is ``None``,
    since it was never measured. Unknown keys are kept; ``upgraded_from`` names the old version.
    """
    rec = dict(raw)
    if rec.get("schema_version") == SCHEMA_VERSION and rec.get("kind") == KIND:
        return rec
    old_kind, old_version = rec.get("kind"), rec.get("schema_version")
    if old_kind == "visualize":
        loss = rec.pop("loss_history", None) or []
        rec.setdefault("history", [None if v is None else -float(v) for v in loss])
        rec.setdefault("final_value", rec.pop("final_activation", None))
        rec.setdefault("steps_run", rec.pop("iterations", None))
        rec.setdefault("converged_step", rec.pop("converged_iteration", None))
        rec.setdefault("time_s", rec.pop("wall_time_s", None))
        rec.setdefault("layers", [rec["layer"]] if rec.get("layer") is not None else [])
        rec.setdefault("image_index", None)
    elif old_kind == "render":
        if "checkpoint" in rec and "checkpoint_path" not in rec:
            rec["checkpoint_path"] = rec.pop("checkpoint")
        channel, number = image_component(rec, rec.get("image_index"))
        rec.setdefault("channel", channel)
        rec.setdefault("image_number", number)
    for k in RECORD_KEYS:
        rec.setdefault(k, None)
    if rec.get("history") is None:
        rec["history"] = []
    # Before version 3, final_value was measured on the last step's *transformed* image: keep that
    # number under its own name, and say that the value without transforms was never measured.
    if rec.get("final_value_transformed") is None:
        rec["final_value_transformed"] = rec["history"][-1] if rec["history"] else rec.get("final_value")
    rec["final_value"] = None
    if rec.get("converged") is None:
        rec["converged"] = rec.get("status") == "converged"
    rec["upgraded_from"] = {"schema_version": old_version, "kind": old_kind}
    rec.update(schema_version=SCHEMA_VERSION, kind=KIND)
    return rec


def read_record(path: PathLike) -> dict[str, Any]:
    """The image record in ``path`` (a ``.json``), converted to the current schema.

    Raises :class:`~devvis.errors.OutputError` naming the file when it cannot be read or
    is not an image record.
    """
    try:
        raw = dio.read_json(path)
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot read image record {os.fspath(path)!r}: {e}") from None
    if not isinstance(raw, dict) or raw.get("kind") not in (KIND, "visualize", "render"):
        kind = raw.get("kind") if isinstance(raw, dict) else type(raw).__name__
        raise OutputError(f"{os.fspath(path)!r} is not an image record (kind {kind!r}; expected {KIND!r})")
    return upgrade_record(raw)


@dataclass(frozen=True)
class ResultEntry:
    """One image of a results folder: where it sits in the run, its files and its record."""

    step: int | None
    layer: str | None
    channel: int | None
    neuron: tuple[int, int] | None
    image_number: int
    image_path: Path | None
    json_path: Path
    record: dict[str, Any] = field(hash=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the render succeeded and its image is on disk."""
        return self.record.get("status") in SUCCESS and self.image_path is not None


@dataclass
class Results:
    """A results folder: its manifest (if any), checkpoints in step order and every image entry."""

    root: Path
    checkpoints: list[tuple[int | None, str]]
    entries: list[ResultEntry]
    manifest: dict[str, Any] | None = None

    @property
    def steps(self) -> list[int]:
        """Training steps of the folder's checkpoints, in order."""
        return [s for s, _ in self.checkpoints if s is not None]

    def __iter__(self) -> Iterator[ResultEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def select(self, *, step: int | None = None, layer: str | None = None, channel: int | None = None,
               image_number: int | None = None, ok: bool | None = None) -> list[ResultEntry]:
        """Entries matching every given field (``ok=True``: successes with an image)."""
        out = []
        for e in self.entries:
            if ((step is None or e.step == step) and (layer is None or e.layer == layer)
                    and (channel is None or e.channel == channel)
                    and (image_number is None or e.image_number == image_number) and (ok is None or e.ok == ok)):
                out.append(e)
        return out


def _manifest(root: Path) -> dict[str, Any] | None:
    for name in MANIFESTS:
        p = root / name
        if p.is_file():
            try:
                man = dio.read_json(p)
            except (OSError, ValueError) as e:
                raise OutputError(f"cannot read {str(p)!r}: {e}") from e
            if isinstance(man, dict):
                return man
    return None


def _checkpoints(root: Path, man: Mapping[str, Any] | None) -> list[tuple[int | None, str]]:
    """(step, folder) in training order: the manifest's list, else the ``step_*`` folders, else the folder itself."""
    out: list[tuple[int | None, str]] = []
    for ck in (man or {}).get("checkpoints") or []:
        if isinstance(ck, dict) and ck.get("dir"):
            out.append((None if ck.get("step") is None else int(ck["step"]), str(ck["dir"])))
    if out:
        return out
    found = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and d.is_dir():
            found.append((int(m.group(1)), d.name))
    return sorted(found) or [(None, ".")]  # no checkpoint folders: the images lie in the folder itself


def _entry(json_path: Path, step: int | None, rec: dict[str, Any]) -> ResultEntry:
    img = json_path.with_suffix(".jpg")
    if not img.is_file() and json_path.with_suffix(".png").is_file():  # a transparent (RGBA) image
        img = json_path.with_suffix(".png")
    layer, channel, number = rec.get("layer"), rec.get("channel"), rec.get("image_number")
    if layer is None or channel is None:  # a record without run fields: the file name says it
        m = _STEM.match(json_path.stem)
        if m:
            layer = layer if layer is not None else m.group("layer")
            channel, number = int(m.group("channel")), int(m.group("j"))
    neuron = rec.get("neuron")
    return ResultEntry(step=rec.get("step") if rec.get("step") is not None else step, layer=layer,
                       channel=None if channel is None else int(channel),
                       neuron=tuple(neuron) if neuron else None, image_number=int(number or 0),
                       image_path=img if img.is_file() else None, json_path=json_path, record=rec)


def open_results(path: PathLike) -> Results:
    """Read a results folder: ``manifest.json`` (or ``series_result.json``) for the checkpoint order, else its
    ``step_XXXXXX`` folders (else the images in ``path`` itself, as :meth:`RenderResult.save` writes them), and
    every image record in them (converted to the current schema).

    >>> import tempfile
    >>> open_results(tempfile.mkdtemp()).entries
    []

    Raises :class:`~devvis.errors.OutputError` when the folder does not exist.
    """
    root = Path(path)
    if not root.is_dir():
        raise OutputError(f"results folder {str(root)!r} does not exist")
    man = _manifest(root)
    checkpoints = _checkpoints(root, man)
    entries = []
    for step, dname in checkpoints:
        folder = root / dname
        for jpath in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                rec = read_record(jpath)
            except OutputError:
                continue  # another JSON in the folder (a grid's, a half-written one): not an image
            entries.append(_entry(jpath, step, rec))
    return Results(root, checkpoints, entries, man)
