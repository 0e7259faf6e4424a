"""One image record and one reader: RenderResult.save and the CLI engine write the same schema, and
folders of the previous release (schema 1) open with the same entries as new ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from devvis import objectives, render, results
from devvis.errors import OutputError
from devvis.io import write_image as write_jpeg
from devvis.runs import RunSettings, run_visualize


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1))


def test_render_save_and_the_cli_write_the_same_record(tmp_path, monkeypatch):
    r = render(tiny(), objectives.channels("2", [1, 3]), steps=3, image_size=16, progress=False)
    saved = json.loads(r.save(tmp_path / "api", step=7)[1].with_suffix(".json").read_text())

    # the CLI engine on the same architecture ("package.module:callable" model spec)
    (tmp_path / "tinynet.py").write_text("from test_results import tiny\n")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.syspath_prepend(str(tmp_path))
    run_visualize(RunSettings(model="tinynet:tiny", layer_names=["2"], channels=[1, 3], image_size=16,
                              max_iterations=3, min_iterations=0, progress=False, output_path=str(tmp_path / "cli")))
    cli = json.loads((tmp_path / "cli" / "random_init" / "layer_2_channel_3_average-0.json").read_text())

    assert set(saved) == set(cli) and set(results.RECORD_KEYS) <= set(cli)
    assert (saved["schema_version"], saved["kind"]) == (cli["schema_version"], cli["kind"]) == (results.SCHEMA_VERSION, "image")
    for rec in (saved, cli):  # objective values under transforms, higher is better; the last one is kept apart
        assert rec["final_value_transformed"] == rec["history"][-1] and len(rec["history"]) == rec["steps_run"] == 3
        assert rec["final_value"] is not None  # measured on the saved image, without transforms
        assert (rec["layer"], rec["channel"], rec["image_number"], rec["image_index"]) == ("2", 3, 0, 1)
    assert saved["step"] == 7 and saved["settings_hash"] is None and cli["settings_hash"] is not None
    assert cli["final_value"] == pytest.approx(float(r.final_values[1]), rel=1e-5)  # the same render, seed 0


def _old_folder(root: Path, image) -> None:
    """A results folder as devvis 0.1 wrote it (schema 1, plain JSON)."""
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"schema_version": 1, "kind": "visualize-run", "checkpoints": [
        {"step": 10, "path": "ck/step_10.pt", "dir": "step_000010", "source": "name"},
        {"step": 20, "path": "ck/step_20.pt", "dir": "step_000020", "source": "name"}]}))
    for step, dname in ((10, "step_000010"), (20, "step_000020")):
        for c in (0, 2):
            stem = f"layer_conv_channel_{c}_average-0"
            write_jpeg(root / dname / f"{stem}.jpg", image)
            (root / dname / f"{stem}.json").write_text(json.dumps({
                "schema_version": 1, "kind": "visualize", "versions": {}, "written_at": "", "model": "m",
                "checkpoint_path": f"ck/step_{step}.pt", "step": step, "layer": "conv", "channel": c, "neuron": None,
                "aggregation": "average", "image_number": 0, "seed": 0, "settings_hash": "abc", "parameters": {},
                "status": "completed", "final_activation": step + c + 0.5, "converged": False,
                "converged_iteration": None, "iterations": 2, "loss_history": [-(step + c), -(step + c + 0.5)],
                "objective": "channels(conv, [0, 2])", "wall_time_s": 1.0, "image_file": f"{stem}.jpg"}))


def _new_folder(root: Path, image) -> None:
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"schema_version": 2, "kind": "visualize-run", "checkpoints": [
        {"step": 10, "path": "ck/step_10.pt", "dir": "step_000010", "source": "name"},
        {"step": 20, "path": "ck/step_20.pt", "dir": "step_000020", "source": "name"}]}))
    for step, dname in ((10, "step_000010"), (20, "step_000020")):
        for c in (0, 2):
            rec = results.image_record(objective="channels(conv, [0, 2])", layers=["conv"], status="completed",
                                       history=[[step + c], [step + c + 0.5]], model="m", final_value=None,
                                       checkpoint_path=f"ck/step_{step}.pt", step=step, layer="conv", channel=c,
                                       aggregation="average", image_number=0, seed=0, settings_hash="abc")
            results.write_image(root / dname, f"layer_conv_channel_{c}_average-0", image, rec)


def _summary(res: results.Results) -> list[tuple]:
    return [(e.step, e.layer, e.channel, e.neuron, e.image_number, str(e.image_path.relative_to(res.root)),
             e.record["final_value"], e.record["final_value_transformed"], e.record["history"], e.record["steps_run"],
             e.record["status"],
             e.record["checkpoint_path"], e.record["schema_version"], e.record["kind"]) for e in res]


def test_old_and_new_folders_open_with_identical_entries(tmp_path):
    image = torch.rand(3, 8, 8)
    _old_folder(tmp_path / "old", image)
    _new_folder(tmp_path / "new", image)
    old, new = results.open_results(tmp_path / "old"), results.open_results(tmp_path / "new")
    assert old.steps == new.steps == [10, 20] and len(old) == len(new) == 4
    assert _summary(old) == _summary(new)
    e = old.select(step=20, channel=2)[0]
    assert e.record["history"] == [22.0, 22.5]  # negated loss -> values
    # schema 1 measured the final value under transforms: kept apart, the untransformed value is unknown
    assert e.record["final_value_transformed"] == 22.5 and e.record["final_value"] is None
    assert e.record["upgraded_from"] == {"schema_version": 1, "kind": "visualize"} and e.ok

    # the grid reads both the same way
    from devvis.longitudinal import comparison_grid

    a, b = comparison_grid(tmp_path / "old"), comparison_grid(tmp_path / "new")
    assert a.size == b.size and a.tobytes() == b.tobytes()


def test_old_render_records_and_failures(tmp_path):
    d = tmp_path / "step_000005"
    write_jpeg(d / "layer_l_channel_3_average-0.jpg", torch.rand(3, 4, 4))
    (d / "layer_l_channel_3_average-0.json").write_text(json.dumps({
        "schema_version": 1, "kind": "render", "objective": "channels(l, [3, 4])", "layers": ["l"],
        "image_index": 0, "final_value": 1.0, "history": [0.5, 1.0], "status": "completed", "converged": False,
        "converged_step": None, "steps_run": 2, "time_s": 0.1, "config": {}, "layer": "l", "channels": [3, 4],
        "objective_type": "channels", "step": 5, "checkpoint": "x.pt"}))
    rec = results.read_record(d / "layer_l_channel_3_average-0.json")
    assert (rec["channel"], rec["image_number"], rec["checkpoint_path"], rec["kind"]) == (3, 0, "x.pt", "image")
    assert set(results.RECORD_KEYS) <= set(rec)
    failed = results.image_record(objective="o", layers=["l"], status="nan", error="became nan at step 1", step=5,
                                  layer="l", channel=4)
    results.write_image(d, "layer_l_channel_4_average-0", None, failed)
    res = results.open_results(tmp_path)
    assert [(e.channel, e.ok, e.image_path is None) for e in res] == [(3, True, False), (4, False, True)]
    (d / "notes.json").write_text(json.dumps({"kind": "comparison_grid"}))
    assert len(results.open_results(tmp_path)) == 2  # other JSONs are not image records
    with pytest.raises(OutputError, match="not an image record"):
        results.read_record(d / "notes.json")
    with pytest.raises(OutputError, match="does not exist"):
        results.open_results(tmp_path / "nowhere")
