"""CheckpointSeries (discovery, lazy loading, indexing) and render_series (same start everywhere)."""

from __future__ import annotations

import copy

import pytest
import torch

from devvis import param as P
from devvis.errors import CheckpointError, ConfigError
from devvis.longitudinal import CheckpointSeries, SeriesResult, StepNotFoundError, render_series
from devvis.render.pipeline import auto_preprocess
from devvis.models import find_checkpoints, load_checkpoint
from devvis.zoo import compact_resnet

from long_series_steps import STEPS

RENDER = dict(steps=3, image_size=16, preprocess="none", progress=False)


def _same_weights(model, path) -> bool:
    sd = load_checkpoint(path)
    return all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


def test_series_from_folder_orders_and_loads_each_step(series_dir):
    s = CheckpointSeries(series_dir)  # architecture from model_config.json
    assert s.steps == STEPS and len(s) == len(STEPS)
    assert [p.name for p in s.paths] == [f"step_{k:06d}.safetensors" for k in STEPS]
    assert [r.step for r in s.refs] == STEPS
    for step, model in s:
        assert not model.training
        assert _same_weights(model, series_dir / f"step_{step:06d}.safetensors")
    assert _same_weights(s[8], series_dir / "step_000008.safetensors")
    assert _same_weights(s.at(-1), series_dir / "step_000024.safetensors")
    assert auto_preprocess("auto", s[24]) == "none"  # zoo models carry their default: raw [0, 1] images


def test_series_model_name_and_factory_and_template(series_dir):
    kwargs = dict(num_classes=12, width=4, blocks=(1, 1))
    by_name = CheckpointSeries(series_dir, "compact_resnet")
    assert _same_weights(by_name[12], series_dir / "step_000012.safetensors")
    builds = []

    def factory():
        builds.append(1)
        return compact_resnet(**kwargs)

    by_fn = CheckpointSeries(series_dir, factory)
    a = by_fn[4]
    assert by_fn[4] is a and len(builds) == 1  # the current model is cached
    by_fn[8]
    assert len(builds) == 2 and _same_weights(by_fn[8], series_dir / "step_000008.safetensors")
    template = compact_resnet(**kwargs)
    reused = CheckpointSeries(series_dir, model=template)
    assert reused[0] is template and reused[24] is template  # weights loaded into the same module
    assert _same_weights(template, series_dir / "step_000024.safetensors")
    kept = CheckpointSeries(series_dir, model=template, keep_in_memory=True)
    m0, m24 = kept[0], kept[24]
    assert m0 is not m24 and _same_weights(m0, series_dir / "step_000000.safetensors")


def test_series_indexing_errors_and_slices(series_dir):
    s = CheckpointSeries(series_dir)
    with pytest.raises(StepNotFoundError, match=r"step 5 is not in the checkpoint series; valid steps: 0, 4, 8"):
        s[5]
    with pytest.raises(LookupError):
        s[5]
    with pytest.raises(StepNotFoundError, match="out of range"):
        s.at(7)
    sub = s[2:5]
    assert isinstance(sub, CheckpointSeries) and sub.steps == [8, 12, 16]
    assert [st for st, _ in s[::3]] == [0, 12, 24]
    with pytest.raises(ConfigError, match="either model_fn"):
        CheckpointSeries(series_dir, "compact_resnet", model=compact_resnet())


def test_series_rejects_duplicate_and_missing_steps(series_dir, tmp_path):
    import shutil

    (tmp_path / "a").mkdir()
    shutil.copy(series_dir / "step_000004.safetensors", tmp_path / "a" / "step_4.safetensors")
    shutil.copy(series_dir / "step_000004.safetensors", tmp_path / "a" / "ckpt-4.safetensors")
    with pytest.raises(CheckpointError, match="two checkpoints claim step 4"):
        CheckpointSeries(tmp_path / "a")
    with pytest.raises(CheckpointError, match="does not exist"):
        CheckpointSeries(tmp_path / "nope")
    refs = find_checkpoints(series_dir)[:2]
    assert CheckpointSeries(refs).steps == [0, 4]


def test_from_models_validates():
    s = CheckpointSeries.from_models({10: torch.nn.Linear(2, 2), 1: torch.nn.Linear(2, 2)})
    assert s.steps == [1, 10] and s.paths == [None, None]
    with pytest.raises(ConfigError, match="int step"):
        CheckpointSeries.from_models({"a": torch.nn.Linear(2, 2)})


def test_render_series_same_initial_image_at_every_checkpoint(series_dir):
    """The image each render starts from (what the first step's callback sees, before any
    update) is bit-identical at every checkpoint and equals the seeded default param's image."""
    s = CheckpointSeries(series_dir)
    first_images = []

    def cb(step, images, values):
        if step == 1:
            first_images.append(images.clone())

    res = render_series(s, "layer1.0.conv1:1", seed=7, callbacks=[cb], **RENDER)
    assert res.steps == STEPS and len(first_images) == len(STEPS)
    expected = P.image(16, batch=1, seed=7)()
    for img in first_images:
        assert torch.equal(img, expected)
    # the models differ, so the optimized images do
    assert not torch.equal(res[0].images, res[24].images)
    assert res[12].config["seed"] == 7 and res.series["steps"] == STEPS


def test_render_series_same_transform_stream():
    """Two checkpoints with identical weights give bit-identical renders under the random
    standard transforms: the transform stream is the same at every checkpoint."""
    torch.manual_seed(0)
    m = compact_resnet(width=4, blocks=(1,))
    s = CheckpointSeries.from_models({0: m, 5: copy.deepcopy(m)})
    res = render_series(s, "layer1.0:2", seed=3, transforms="standard", **RENDER)
    assert torch.equal(res[0].images, res[5].images)
    assert torch.equal(res[0].history, res[5].history)


def test_render_series_given_param_is_copied_not_consumed():
    torch.manual_seed(0)
    s = CheckpointSeries.from_models({0: compact_resnet(width=4, blocks=(1,)), 1: compact_resnet(width=4, blocks=(1,))})
    p = P.image(16, seed=1)
    before = [t.clone() for t in p.parameters()]
    starts = []
    res = render_series(s, "conv1:0", p, callbacks=[lambda st, im, v: starts.append(im.clone()) if st == 1 else None],
                        **RENDER)
    assert all(torch.equal(a, b) for a, b in zip(before, p.parameters()))
    assert torch.equal(starts[0], starts[1]) and torch.equal(starts[0], p())
    assert res[1].config["param"] == "ImageParam"


def test_series_result_save_and_load(tmp_path):
    torch.manual_seed(0)
    s = CheckpointSeries.from_models({0: compact_resnet(width=4, blocks=(1,)), 10: compact_resnet(width=4, blocks=(1,))})
    from devvis import objectives

    res = render_series(s, objectives.channels("layer1.0", [1, 3]), **RENDER)
    manifest = res.save(tmp_path / "out")
    assert manifest.name == "series_result.json"
    names = sorted(p.name for p in (tmp_path / "out" / "step_000010").iterdir())
    assert names == ["layer_layer1.0_channel_1_average-0.jpg", "layer_layer1.0_channel_1_average-0.json",
                     "layer_layer1.0_channel_3_average-0.jpg", "layer_layer1.0_channel_3_average-0.json"]
    back = SeriesResult.load(tmp_path / "out")
    assert back.steps == [0, 10] and back.objective == res.objective and back.seed == 0
    for step in (0, 10):
        assert back[step].images.shape == res[step].images.shape
        assert (back[step].images - res[step].images).abs().max() < 0.08  # JPEG rounding
        assert torch.allclose(back[step].history, res[step].history)
        assert back[step].fields["channels"] == [1, 3] and back[step].steps_run == 3
    with pytest.raises(StepNotFoundError, match="valid steps: 0, 10"):
        back[3]


def test_series_keeps_the_files_it_left_out(tmp_path):
    import warnings

    from torch import nn

    from devvis.longitudinal import CheckpointSeries

    net = nn.Linear(2, 2)
    for s in (1, 2):
        torch.save(net.state_dict(), tmp_path / f"step_{s}.pt")
    torch.save({"w": torch.ones(3)}, tmp_path / "notes.pt")          # no step anywhere, other weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series = CheckpointSeries(tmp_path, model=net)
    assert series.steps == [1, 2]
    assert [p.name for p, _ in series.left_out] == ["notes.pt"]
    assert series.describe()["left_out"][0]["path"].endswith("notes.pt")
