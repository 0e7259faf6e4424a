"""Synthetic results folders for the report tests, and a static HTTP server.

``synthetic_results`` writes a run folder (``manifest.json`` + ``step_*/`` images and records, the
format of ``devvis visualize``) with planted settle steps, trust verdicts, a circuit, an LLC
trajectory with health verdicts, loss, stages and optionally a checkpoint that failed to load. It is
fast enough for 1,000 units x 20 checkpoints: one small JPEG per unit, hard-linked into every
checkpoint folder, and records written as plain JSON.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import random
import threading
from pathlib import Path

from PIL import Image

STEPS_20 = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 10000]
#: The steps of the small planted site (``site`` fixture in conftest.py).
STEPS = STEPS_20[:8]


def _record(layer: str, channel: int, step: int, *, ok: bool, value: float, error: str | None = None) -> dict:
    return {"schema_version": 3, "kind": "image", "image_file": f"layer_{layer}_channel_{channel}_average-0.jpg"
            if ok else None, "image_index": 0, "objective": f"channel({layer}, {channel})", "layers": [layer],
            "final_value": value, "final_value_transformed": value, "history": [], "status": "completed" if ok else "nan",
            "converged": False, "converged_step": None, "steps_run": 2, "time_s": 0.1, "config": {}, "error": error,
            "model": "synthetic", "checkpoint_path": f"ck/step_{step}.pt", "step": step, "layer": layer,
            "channel": channel, "neuron": None, "aggregation": "average", "image_number": 0, "seed": 0,
            "settings_hash": "x", "parameters": None}


def _picture(i: int, rng: random.Random) -> Image.Image:
    """A 128-pixel image like a visualization: smooth colour blobs (16x16 noise, upscaled) plus fine texture."""
    coarse = Image.frombytes("RGB", (16, 16), rng.randbytes(16 * 16 * 3))
    fine = Image.frombytes("L", (64, 64), rng.randbytes(64 * 64)).resize((128, 128))
    return Image.blend(coarse.resize((128, 128), Image.Resampling.BICUBIC), fine.convert("RGB"), 0.25)


def planted_settle(index: int, steps: list[int]) -> int | None:
    """Unit ``index``'s planted settle step: every third never settles, the rest early or late by turns."""
    if index % 3 == 0:
        return None
    return steps[len(steps) // 4] if index % 3 == 1 else steps[-2]


def synthetic_results(root: Path, *, layers: int = 2, units: int = 6, steps: list[int] | None = None,
                      failed_step: int | None = None, nan_unit: bool = False) -> Path:
    """Write a synthetic results folder into ``root`` (see the module docstring); returns ``root``.

    ``units``: total units, spread over ``layers`` layers (``layer1`` ...); ``failed_step``: a checkpoint
    whose file did not load (every unit failed there, with the loader's message); ``nan_unit``: the first
    unit's render became NaN at the last checkpoint.
    """
    steps = list(steps or STEPS_20[:8])
    root.mkdir(parents=True, exist_ok=True)
    names = [f"layer{i + 1}" for i in range(layers)]
    per = -(-units // layers)
    all_units = [(names[i // per], i % per) for i in range(units)]
    rng = random.Random(0)
    base = root / "base"
    base.mkdir(exist_ok=True)
    manifest_units = {}
    for s in steps:
        (root / f"step_{s:06d}").mkdir(exist_ok=True)
    for i, (layer, c) in enumerate(all_units):
        img = base / f"{layer}_{c}.jpg"
        _picture(i, rng).save(img, quality=85)
        for j, s in enumerate(steps):
            stem = root / f"step_{s:06d}" / f"layer_{layer}_channel_{c}_average-0"
            if s == failed_step:
                continue
            nan = nan_unit and i == 0 and j == len(steps) - 1
            if not nan:
                os.link(img, stem.with_suffix(".jpg"))
            stem.with_suffix(".json").write_text(json.dumps(_record(
                layer, c, s, ok=not nan, value=0.1 * j + 0.01 * c, error="the objective became NaN at step 3"
                if nan else None)))
        if failed_step is not None:
            manifest_units[f"step_{failed_step:06d}/{layer}/{c}"] = {
                "status": "failed", "checkpoint_dir": f"step_{failed_step:06d}", "layer": layer, "channels": [c],
                "error": f"cannot load checkpoint 'ck/step_{failed_step}.pt': not a checkpoint file"}
    (root / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "kind": "visualize-run", "settings": {"model": "synthetic", "checkpoint_path": "ck"},
        "checkpoints": [{"step": s, "dir": f"step_{s:06d}"} for s in steps], "units": manifest_units}))
    lon = root / "longitudinal"
    lon.mkdir(exist_ok=True)
    for i, (layer, c) in enumerate(all_units):
        st = planted_settle(i, steps)
        sim = [min(1.0, (j + 1) / len(steps)) if st is None else (0.9 if s >= st else 0.1)
               for j, s in enumerate(steps)]
        sim[-1] = 1.0
        (lon / f"{layer}_channel_{c}_feature_change.json").write_text(json.dumps({
            "kind": "feature_change", "layer": layer, "channel": c, "steps": steps, "similarity": sim,
            "threshold": 0.8, "baseline": "grey: constant", "settle_step": st,
            "settle_status": "settled" if st is not None else "not settled",
            "settle_reason": "planted", "final_activation": 1.0, "final_driven": 0.5}))
    trust = {}
    for i, (layer, c) in enumerate(all_units):
        bad = i % 4 == 0
        trust[f"{layer}:{c}"] = [{"layer": layer, "channel": c, "step": s, "verdict": "suspicious: planted" if bad
                                  else "trustworthy", "natural_max_ratio": 0.5 if bad else 1.5, "seed_similarity": 0.9,
                                  "transform_robustness": 0.8, "natural_robustness": 0.9, "path_similarity": 0.5,
                                  "spectral_distance": 0.3} for s in steps]
    (root / "trust").mkdir(exist_ok=True)
    (root / "trust" / "trust.json").write_text(json.dumps({"kind": "trust", "steps": steps, "units": trust}))
    if layers > 1:
        (root / "circuits").mkdir(exist_ok=True)
        (root / "circuits" / f"composition_{names[1]}_ch0_from_{names[0]}.json").write_text(json.dumps({
            "kind": "circuits_composition", "target_layer": names[1], "target_channel": 0, "source_layer": names[0],
            "steps": steps, "target": {"settle_step": planted_settle(per, steps), "settle_status": "settled"},
            "upstream": [{"channel": 1, "influence": 0.7, "settle_step": planted_settle(1, steps),
                          "settle_status": "settled", "earlier": True},
                         {"channel": 2, "influence": -0.2, "settle_step": None, "settle_status": "not settled",
                          "earlier": False}]}))
    (root / "slt").mkdir(exist_ok=True)
    (root / "slt" / "llc_trajectory.json").write_text(json.dumps({
        "kind": "llc_trajectory", "steps": steps, "llc_mean": [5.0 + j for j in range(len(steps))],
        "llc_std": [0.5] * len(steps), "health": ["healthy" if j % 2 else "unhealthy: planted" for j in range(len(steps))],
        "hyperparameters": {"lr": 1e-4}, "per_step": []}))
    (root / "checkpoints").mkdir(exist_ok=True)
    (root / "checkpoints" / "series.json").write_text(json.dumps({
        "kind": "train_series", "model_config": {"name": "synthetic_net", "kwargs": {"width": 4}},
        "settings": {"dataset": "Planted", "n_train": 100, "size": 32, "steps": steps[-1]}, "classes": ["a", "b"],
        "checkpoints": [{"step": s, "train_loss": 2.0 / (1 + j), "test_loss": 2.1 / (1 + j),
                         "test_accuracy": j / len(steps)} for j, s in enumerate(steps)]}))
    mid = steps[len(steps) // 2]
    (root / "stages").mkdir(exist_ok=True)
    (root / "stages" / "stages.json").write_text(json.dumps({
        "kind": "stages", "steps": steps, "boundaries": [{"index": len(steps) // 2, "step": mid,
                                                          "uncertainty_checkpoints": 1, "signals": ["loss"]}],
        "stages": [{"index": 0, "start": steps[0], "end": mid, "boundary": None, "units": [], "circuits": []},
                   {"index": 1, "start": mid, "end": steps[-1], "boundary": {"step": mid, "uncertainty_checkpoints": 1,
                                                                             "signals": ["loss"]},
                    "units": [], "circuits": []}],
        "signals": {"loss": {"values": [1.0] * len(steps), "z": [None] + [0.1] * (len(steps) - 2) + [None]}},
        "units_not_settled": []}))
    return root


# ------------------------------------------------------------------------------------------
# serving a site
# ------------------------------------------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class StaticServer:
    """``folder`` served over HTTP on 127.0.0.1 (a static host), as a context manager giving the base URL."""

    def __init__(self, folder: Path):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))

    def __enter__(self) -> str:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
