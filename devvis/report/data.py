"""What the report shows, gathered from a results folder into one :class:`Run`.

Every reader of the results folder's files lives here, so the pages (:mod:`devvis.report.pages`)
only format. Sources, each optional:

* rendered images: a run (``manifest.json`` + ``step_*/``, ``devvis visualize``/``sweep``) and the renders of
  ``devvis track`` (``longitudinal/renders/*/series_result.json``), read with :func:`devvis.results.open_results`;
  a failed render or a unit whose checkpoint did not load keeps its reason in place of its image;
* settle steps and similarity curves: ``longitudinal/*_feature_change.json``, else ``stages/stages.json``;
* activation on probe images: ``longitudinal/activations/*.json``;
* dataset examples and trust verdicts: ``trust/trust.json``, ``trust/examples/``, ``trust/visualizations/``;
* circuits: ``circuits/*.json`` (upstream channels with influence and settle steps);
* LLC with health verdicts: ``slt/llc_trajectory.json``; loss: ``checkpoints/series.json``;
* stages: ``stages/stages.json``; run settings: ``demo.json``, ``manifest.json``, ``longitudinal/track.json``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devvis import io as dio

#: How a unit's settle step is classed on the layer pages.
SETTLE_CLASSES = ("early", "late", "never")


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (a report shows what it can)."""
    try:
        return dio.read_json(path)
    except (OSError, ValueError):
        return None


def safe_name(layer: str) -> str:
    """``layer`` with every character outside ``[A-Za-z0-9._-]`` replaced (the trust folders' rule)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", layer)


@dataclass
class StepView:
    """One unit at one checkpoint: its visualization (or why it failed), dataset examples and trust row."""

    step: int
    image: Path | None = None
    error: str | None = None
    value: float | None = None
    examples: Path | None = None
    seeds: Path | None = None
    trust: dict[str, Any] | None = None

    @property
    def picture(self) -> Path | None:
        """The image shown for this step: the render, else the trust visualizations (one per start)."""
        return self.image or self.seeds


@dataclass
class Unit:
    """One channel of one layer across training, with everything the results folder says about it."""

    layer: str
    channel: int
    steps: dict[int, StepView] = field(default_factory=dict)
    settle_step: int | None = None
    settle_status: str | None = None
    settle_reason: str | None = None
    settle_source: str | None = None
    threshold: float | None = None
    similarity: tuple[list[int], list[float | None]] | None = None
    activation: dict[str, list[Any]] | None = None
    figures: list[tuple[Path, str]] = field(default_factory=list)
    upstream: list[dict[str, Any]] = field(default_factory=list)
    downstream: list[dict[str, Any]] = field(default_factory=list)
    change: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.layer}:{self.channel}"

    def view(self, step: int) -> StepView:
        return self.steps.setdefault(step, StepView(step))

    @property
    def ordered(self) -> list[StepView]:
        return [self.steps[s] for s in sorted(self.steps)]

    @property
    def verdict(self) -> str | None:
        """The trust verdict at the last checkpoint that has one (``trustworthy`` / ``suspicious: ...``)."""
        rows = [v.trust for v in self.ordered if v.trust]
        return str(rows[-1].get("verdict")) if rows else None

    @property
    def suspicious(self) -> bool:
        return self.verdict is not None and not self.verdict.startswith("trustworthy")

    @property
    def failures(self) -> list[StepView]:
        return [v for v in self.ordered if v.error]

    @property
    def thumb_step(self) -> StepView | None:
        """The last checkpoint with a picture (what the layer grid shows)."""
        shown = [v for v in self.ordered if v.picture is not None]
        return shown[-1] if shown else None


@dataclass
class Run:
    """A results folder as the report shows it."""

    root: Path
    steps: list[int] = field(default_factory=list)
    units: dict[str, Unit] = field(default_factory=dict)
    summary: str | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)
    loss: dict[str, list[Any]] | None = None
    llc: dict[str, Any] | None = None
    stages: dict[str, Any] | None = None
    circuits: list[dict[str, Any]] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)
    parameters: list[tuple[str, Any]] = field(default_factory=list)
    figures: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def layers(self) -> dict[str, list[Unit]]:
        """``{layer: units in channel order}``, layers in the order they were first seen."""
        out: dict[str, list[Unit]] = {}
        for u in self.units.values():
            out.setdefault(u.layer, []).append(u)
        return {k: sorted(v, key=lambda u: u.channel) for k, v in out.items()}

    def unit(self, layer: str, channel: int) -> Unit:
        label = f"{layer}:{int(channel)}"
        if label not in self.units:
            self.units[label] = Unit(layer, int(channel))
        return self.units[label]

    def settle_class(self, unit: Unit) -> str:
        """``early`` (settles at or before the middle checkpoint), ``late`` or ``never`` (no settle step)."""
        if unit.settle_step is None or not self.steps:
            return "never"
        middle = self.steps[(len(self.steps) - 1) // 2]
        return "early" if unit.settle_step <= middle else "late"


# ------------------------------------------------------------------------------------------
# readers, one per source
# ------------------------------------------------------------------------------------------

def _images(run: Run, folder: Path) -> None:
    """The first image of every channel component of a results folder, and the reason of every failure."""
    from devvis.results import open_results

    res = open_results(folder)
    for e in res.select(image_number=0):
        if e.step is None or e.layer is None or e.channel is None or e.neuron:
            continue
        v = run.unit(e.layer, e.channel).view(int(e.step))
        if v.image is None and e.image_path is not None:
            v.image, v.error = e.image_path, None
            v.value = e.record.get("final_value")
        elif v.image is None and v.error is None:
            v.error = str(e.record.get("error") or e.record.get("status") or "no image")
    steps = dict((d, s) for s, d in res.checkpoints)
    for unit in ((res.manifest or {}).get("units") or {}).values():  # failed units (a checkpoint that did not load)
        step = steps.get(unit.get("checkpoint_dir")) if isinstance(unit, dict) else None
        if step is None or unit.get("status") != "failed" or unit.get("layer") is None:
            continue
        for c in unit.get("channels") or []:
            v = run.unit(unit["layer"], int(c)).view(int(step))
            if v.image is None and v.error is None:
                v.error = str(unit.get("error"))
    run.steps.extend(s for s in res.steps if s not in run.steps)


def _feature_changes(run: Run) -> None:
    lon = run.root / "longitudinal"
    for p in sorted(lon.glob("*_feature_change.json")):
        fc = read_json(p)
        if not isinstance(fc, dict) or fc.get("layer") is None:
            continue
        u = run.unit(fc["layer"], fc["channel"])
        u.change = fc
        u.settle_step, u.settle_status = fc.get("settle_step"), fc.get("settle_status")
        u.settle_reason, u.settle_source, u.threshold = fc.get("settle_reason"), "visualization", fc.get("threshold")
        u.similarity = (list(fc.get("steps") or []), list(fc.get("similarity") or []))
        stem = p.name[: -len("_feature_change.json")]
        for f, cap in ((lon / f"{stem}_matrix.png", "cross-checkpoint matrix M[i, j]"),
                       (lon / "activations" / f"{stem}.png", "activation on probe images over training")):
            if f.is_file():
                u.figures.append((f, cap))
    for p in sorted((lon / "activations").glob("*.json")) if (lon / "activations").is_dir() else []:
        a = read_json(p)
        if isinstance(a, dict) and a.get("layer") is not None and a.get("mean"):
            run.unit(a["layer"], a["channel"]).activation = {k: a.get(k) for k in ("steps", "mean", "q25", "q75")}


def _trust(run: Run) -> None:
    d = run.root / "trust"
    data = read_json(d / "trust.json")
    if not isinstance(data, dict):
        return
    for label, rows in (data.get("units") or {}).items():
        layer, _, c = str(label).rpartition(":")
        if not layer or not c.isdigit() or not isinstance(rows, list):
            continue  # not a channel unit: nothing to place it under
        u = run.unit(layer, int(c))
        stem = f"{safe_name(layer)}_channel_{c}"
        present = {sub: _listing(d / sub / stem) for sub in ("examples", "visualizations")}
        for r in rows:
            if r.get("step") is None:
                continue
            v = u.view(int(r["step"]))
            v.trust = r
            name = f"step_{int(r['step']):06d}.png"
            for attr, sub in (("examples", "examples"), ("seeds", "visualizations")):
                if name in present[sub]:
                    setattr(v, attr, d / sub / stem / name)


def _listing(folder: Path) -> set[str]:
    """Names of the files in ``folder`` (empty when it does not exist): one listing instead of a check per file."""
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _stages(run: Run) -> None:
    data = read_json(run.root / "stages" / "stages.json")
    if not isinstance(data, dict):
        return
    run.stages = data
    for st in data.get("stages") or []:
        for d in st.get("units") or []:
            layer, _, c = str(d.get("unit", "")).rpartition(":")
            if layer and c.isdigit() and f"{layer}:{c}" in run.units:
                u = run.units[f"{layer}:{c}"]
                if u.settle_source is None:  # the visualization's settle step comes first
                    u.settle_step, u.settle_status, u.settle_source = d.get("settle_step"), d.get("settle_status"), \
                        "response"
    for f, cap in ((run.root / "stages" / "stages_timeline.png", "stage timeline"),
                   (run.root / "stages" / "essential_dynamics.png", "essential dynamics")):
        if f.is_file():
            run.figures.append((f, cap))


def _circuits(run: Run) -> None:
    for p in sorted((run.root / "circuits").glob("*.json")) if (run.root / "circuits").is_dir() else []:
        meta = read_json(p)
        if not isinstance(meta, dict) or "upstream" not in meta:
            continue
        png = p.with_suffix(".png")
        tl, tc, sl = meta.get("target_layer"), meta.get("target_channel"), meta.get("source_layer")
        if tl is None or tc is None or sl is None:
            continue
        target = run.unit(tl, tc)
        ups = []
        for up in meta["upstream"]:
            row = {"layer": sl, "channel": int(up.get("channel")), "influence": up.get("influence"),
                   "settle_step": up.get("settle_step"), "settle_status": up.get("settle_status"),
                   "earlier": up.get("earlier"), "circuit": p.stem}
            ups.append(row)
            target.upstream.append(row)
            run.unit(sl, row["channel"]).downstream.append(
                dict(row, layer=tl, channel=int(tc), settle_step=(meta.get("target") or {}).get("settle_step"),
                     settle_status=(meta.get("target") or {}).get("settle_status")))
        if png.is_file():
            target.figures.append((png, f"expanded weights from {sl} ({p.stem})"))
        run.circuits.append({"name": p.stem, "meta": meta, "png": png if png.is_file() else None,
                             "target": target.label, "upstream": ups})


def _facts(run: Run) -> None:
    """Model, data, checkpoints and loss, from the run's own records."""
    demo = read_json(run.root / "demo.json") or {}
    run.summary = demo.get("summary") if isinstance(demo, dict) else None
    series = read_json(run.root / "checkpoints" / "series.json")
    manifest = read_json(run.root / "manifest.json")
    track = read_json(run.root / "longitudinal" / "track.json")
    trust = read_json(run.root / "trust" / "trust.json")
    if isinstance(series, dict):
        mc = series.get("model_config") or {}
        kw = ", ".join(f"{k}={v}" for k, v in (mc.get("kwargs") or {}).items())
        run.facts.append(("model", f"{mc.get('name', '?')}({kw})"))
        st = series.get("settings") or {}
        run.facts.append(("data", f"{st.get('dataset', '?')}: {st.get('n_train', '?')} training images of size "
                                  f"{st.get('size', '?')}, {len(series.get('classes') or [])} classes"))
        run.facts.append(("training", f"{st.get('steps', '?')} steps, {st.get('optimizer', '?')}, lr {st.get('lr', '?')}, "
                                      f"batch {st.get('batch_size', '?')}, seed {st.get('seed', '?')}"))
        cks = [c for c in series.get("checkpoints") or [] if isinstance(c, dict)]
        if cks:
            run.loss = {k: [c.get(k) for c in cks] for k in ("step", "train_loss", "test_loss", "test_accuracy")}
    elif isinstance(manifest, dict):
        st = manifest.get("settings") or {}
        run.facts.append(("model", str(st.get("model"))))
        run.facts.append(("checkpoints from", str(st.get("checkpoint_path"))))
    elif isinstance(track, dict):
        run.facts.append(("model", str((track.get("series") or {}).get("model"))))
    if isinstance(trust, dict) and (trust.get("settings") or {}).get("dataset"):
        run.facts.append(("dataset examples from", str(trust["settings"]["dataset"].get("repr"))))
    for src in (track, manifest):
        ser = (src or {}).get("series") if isinstance(src, dict) else None
        for lo in (ser or {}).get("left_out") or []:
            run.left_out.append((str(lo.get("path")), str(lo.get("reason"))))
    for rs in sorted((run.root / "longitudinal" / "renders").glob("*/series_result.json")):
        for lo in ((read_json(rs) or {}).get("series") or {}).get("left_out") or []:
            if (str(lo.get("path")), str(lo.get("reason"))) not in run.left_out:
                run.left_out.append((str(lo.get("path")), str(lo.get("reason"))))
    for name, data in (("demo.json", demo or None), ("manifest.json", manifest), ("longitudinal/track.json", track),
                       ("checkpoints/series.json", series)):
        if data is not None:
            shown = {k: v for k, v in data.items() if k not in ("units", "files", "per_step")} \
                if isinstance(data, dict) else data
            run.parameters.append((name, shown))


def _llc(run: Run) -> None:
    data = read_json(run.root / "slt" / "llc_trajectory.json")
    if isinstance(data, dict) and data.get("steps"):
        run.llc = data
    for f in sorted((run.root / "slt").glob("*.png")) if (run.root / "slt").is_dir() else []:
        run.figures.append((f, f.stem.replace("_", " ")))


def gather(root: str | Path) -> Run:
    """Read everything the report shows from the results folder ``root``."""
    run = Run(Path(root))
    if (run.root / "manifest.json").is_file():
        _images(run, run.root)
    for manifest in sorted((run.root / "longitudinal" / "renders").glob("*/series_result.json")):
        _images(run, manifest.parent)
    _feature_changes(run)
    _trust(run)
    _stages(run)
    _circuits(run)
    _facts(run)
    _llc(run)
    for u in run.units.values():
        run.steps.extend(s for s in u.steps if s not in run.steps)
    for extra in (run.loss or {}).get("step") or [], (run.llc or {}).get("steps") or []:
        if not run.steps:
            run.steps.extend(int(s) for s in extra if s is not None)
    run.steps.sort()
    return run
