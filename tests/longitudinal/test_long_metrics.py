"""Feature-change metrics: settle_step, the cross-checkpoint matrix, top-k examples, track()."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from devvis import objectives
from devvis.data import SyntheticShapes
from devvis.errors import ConfigError
from devvis.io import read_json
from devvis.longitudinal import (CheckpointSeries, cross_checkpoint_matrix, feature_change, plot_matrix,
                                 plot_similarity, render_series, settle_step, top_k_examples, track)
from devvis.longitudinal.settle import Settle, baseline_image, settle
from devvis.models import load_checkpoint, read_model_config, save_checkpoint

from long_series_steps import STEPS

LAYER, CHANNEL, S = "layer1.0.conv1", 1, 4
# A high learning rate so that four steps move the images far enough to tell checkpoints apart.
RENDER = dict(steps=4, image_size=20, lr=0.5, preprocess="none", progress=False)


def test_settle_step_definition():
    steps = [0, 10, 100, 1000]
    assert settle_step(steps, [0.1, 0.9, 0.7, 1.0]) is None  # only the final checkpoint: not settled, no label
    assert settle_step(steps, [0.1, 0.9, 0.85, 1.0]) == 10
    assert settle_step(steps, [0.9, 0.9, 0.9, 1.0]) == 0
    assert settle_step(steps, [0.9, 0.9, 0.9, 0.5]) is None
    assert settle_step(steps, [0.9, float("nan"), 0.9, 1.0]) == 100  # NaN counts as below
    assert settle_step(steps, [0.9, None, 0.96, 1.0], threshold=0.95) == 100
    with pytest.raises(ConfigError, match="align"):
        settle_step(steps, [1.0])
    with pytest.raises(ConfigError, match="increasing"):
        settle_step([0, 5, 5], [1.0, 1.0, 1.0])


def test_settle_statuses_refuse_similarities_above_one_and_last_step_labels():
    steps = [0, 10, 100, 1000]
    assert settle(steps, [0.1, 0.9, 0.85, 1.0]) == Settle(10, "settled", settle(steps, [0.1, 0.9, 0.85, 1.0]).reason)
    r = settle(steps, [0.1, 0.5, 0.6, 1.0])
    assert (r.step, r.status) == (None, "not settled") and "no checkpoint before the final" in r.reason
    # an earlier visualization drives the final unit 1.4x as much as the final one: not comparable, not "settled"
    r = settle(steps, [0.9, 1.4, 0.95, 1.0])
    assert (r.step, r.status) == (None, "not comparable") and "step 10" in r.reason
    assert settle(steps, [0.9, 1.04, 0.95, 1.0]).step == 0  # within the tolerance (0.05)
    assert settle(steps, [0.9, 1.04, 0.95, 1.0], tolerance=0.01).status == "not comparable"
    # ... but a value above 1 before a checkpoint below the threshold does not reach the settled run
    assert settle(steps, [1.4, 0.5, 0.95, 1.0]).step == 100
    assert settle(steps, [0.9, 0.9, 0.9, float("nan")]).status == "not comparable"  # undefined at the end
    assert settle([5], [1.0]).status == "not settled"


def _one_by_one(w, bias):
    """A 1x1 conv whose channel 0 is ``w . rgb + bias`` (channel 1 is all zero)."""
    conv = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, :, 0, 0] = torch.tensor(w)
        conv.bias[0] = bias
    return torch.nn.Sequential(conv)


def test_planted_change_step_is_found_under_a_large_constant_baseline():
    """Channel 0 computes red - green before step 30 and green - blue from step 30 on, plus a constant bias
    about ten times its feature-driven part. Raw ratios are ~0.9 at every checkpoint (the old settle step: 0);
    on the feature-driven part the earlier feature scores below zero and the step is 30."""
    steps, change = [0, 10, 20, 30, 40, 50], 30
    bias = 1.5
    series = CheckpointSeries.from_models(
        {st: _one_by_one([1.0, -1.0, 0.0] if st < change else [0.0, 1.0, -1.0], bias) for st in steps})
    res = render_series(series, "0:0", steps=30, image_size=16, lr=0.1, transforms="none", preprocess="none",
                        progress=False)
    fc = feature_change(series, res, "0", 0, threshold=0.8)
    assert fc.baseline.startswith("grey") and fc.baseline_values == pytest.approx([bias] * 6, abs=1e-6)
    assert 8 * fc.final_driven < bias < 12 * fc.final_driven  # the bias is ~10x the feature-driven part
    m = torch.tensor(fc.matrix)
    raw = (m[:, -1] / m[-1, -1]).tolist()
    assert min(raw) > 0.8 and settle_step(steps, raw) == 0  # what dividing raw activations said
    assert (fc.settle_step, fc.settle_status) == (change, "settled")
    assert all(v < 0.8 for v in fc.similarity[:3]) and fc.similarity[3:] == pytest.approx([1.0] * 3)
    # without a baseline the same renders give the old answer, with the baseline stated as none
    raw_fc = feature_change(series, res, "0", 0, threshold=0.8, baseline=None)
    assert raw_fc.settle_step == 0 and raw_fc.baseline.startswith("none") and raw_fc.baseline_values == []
    rec = read_json_safe(fc.to_dict())
    assert (rec["settle_status"], rec["settle_step"], rec["baseline"]) == ("settled", change, fc.baseline)
    assert rec["baseline_values"] == fc.baseline_values and "b[-1]" in rec["definitions"]["similarity"]


def test_baselines_grey_dataset_mean_image_and_errors():
    like = torch.rand(2, 3, 8, 8)
    grey, text = baseline_image("grey", like)
    assert grey.shape == (1, 3, 8, 8) and torch.all(grey == 0.5) and text.startswith("grey")
    data = torch.rand(10, 3, 16, 16)
    mean, text = baseline_image("dataset_mean", like, loader=data)
    expected = torch.nn.functional.interpolate(data.mean(0, keepdim=True), size=(8, 8), mode="bilinear",
                                               align_corners=False)
    torch.testing.assert_close(mean, expected)
    assert "10 data-set images" in text
    given, text = baseline_image(torch.zeros(3, 8, 8), like)
    assert torch.all(given == 0) and text.startswith("a given image")
    assert baseline_image(None, like) == (None, "none: raw activations, nothing subtracted")
    with pytest.raises(ConfigError, match="needs a data set"):
        baseline_image("dataset_mean", like)
    with pytest.raises(ConfigError, match="unknown baseline 'black'; valid: 'grey', 'dataset_mean', 'none'"):
        baseline_image("black", like)
    with pytest.raises(ConfigError, match="C = 3"):
        baseline_image(torch.zeros(1, 8, 8), like)


@pytest.fixture(scope="module")
def frozen_series(series_dir, tmp_path_factory):
    """The trained series, except that from step S on everything channel CHANNEL of LAYER depends on
    (the stem conv1/bn1 and the channel's own incoming weights in LAYER) equals the final checkpoint's.
    From S on, that channel computes exactly the final model's function."""
    out = tmp_path_factory.mktemp("frozen")
    cfg = read_model_config(series_dir / "step_000024.safetensors")
    final = load_checkpoint(series_dir / "step_000024.safetensors")
    for step in STEPS:
        sd = load_checkpoint(series_dir / f"step_{step:06d}.safetensors")
        if step >= S:
            for k in sd:
                if k.startswith(("conv1.", "bn1.")):
                    sd[k] = final[k].clone()
            sd[f"{LAYER}.weight"][CHANNEL] = final[f"{LAYER}.weight"][CHANNEL]
        save_checkpoint(sd, out / f"step_{step:06d}.safetensors", step=step, model_config=cfg)
    return CheckpointSeries(out)


def test_settle_step_of_a_channel_frozen_from_step_S(frozen_series):
    res = render_series(frozen_series, objectives.channel(LAYER, CHANNEL), seed=0, **RENDER)
    fc = feature_change(frozen_series, res, LAYER, CHANNEL, threshold=0.999)
    sim = fc.similarity
    i_s = STEPS.index(S)
    assert fc.final_activation > 0, "the similarity needs a channel that responds to its final visualization"
    # from S on, the render is the final one's exactly, so the similarity is 1 up to float rounding ...
    for i in range(i_s, len(STEPS)):
        assert torch.equal(res[STEPS[i]].images, res[24].images)
        assert sim[i] == pytest.approx(1.0, abs=1e-6)
    # ... and the step before S was rendered from a different channel, which the final model likes less
    assert sim[i_s - 1] < 0.999
    assert (fc.settle_step, fc.settle_status) == (S, "settled")
    # the visualizations from S on are one image: they look the same (appearance distance 0), the earlier ones not
    ap = fc.appearance
    assert ap.to_final[i_s:] == [0.0] * (len(STEPS) - i_s) and ap.consecutive[i_s:] == [0.0] * (len(STEPS) - 1 - i_s)
    assert ap.to_final[i_s - 1] > 0 and ap.consecutive[i_s - 1] > 0 and ap.layers == ["conv1", "layer1.0.conv1"]
    assert settle_step(fc.steps, sim, threshold=0.999) == S


def test_cross_checkpoint_matrix_shape_and_diagonal(series_dir):
    series = CheckpointSeries(series_dir)
    res = render_series(series, objectives.channels(LAYER, [0, CHANNEL]), seed=1, **RENDER)
    m = cross_checkpoint_matrix(series, res, LAYER, CHANNEL)  # preprocess 'auto': the renders' own ('none')
    n = len(STEPS)
    assert m.shape == (n, n)
    obj = objectives.channel(LAYER, CHANNEL)
    for i, step in enumerate(STEPS):
        viz_i = res[step].images[1:2]  # image 1 of channels(LAYER, [0, CHANNEL]) targets CHANNEL
        own = objectives.evaluate(series[step], obj, viz_i, preprocess="none")
        torch.testing.assert_close(m[i, i], own[0], rtol=1e-5, atol=1e-6)
    # off-diagonal: the final model on the first checkpoint's visualization
    torch.testing.assert_close(m[0, -1], objectives.evaluate(series[24], obj, res[0].images[1:2],
                                                             preprocess="none")[0], rtol=1e-5, atol=1e-6)
    fc = feature_change(series, res, LAYER, CHANNEL)
    torch.testing.assert_close(torch.tensor(fc.matrix), m)
    assert fc.final_activation == pytest.approx(float(m[-1, -1]))
    grey = torch.full((1, 3, 20, 20), 0.5)
    b = torch.stack([objectives.evaluate(series[st], obj, grey, preprocess="none")[0] for st in STEPS])
    torch.testing.assert_close(torch.tensor(fc.baseline_values), b)
    if fc.final_driven > 0:
        torch.testing.assert_close(torch.tensor(fc.similarity), (m[:, -1] - b[-1]) / (m[-1, -1] - b[-1]))
    with pytest.raises(ConfigError, match="no image of layer1.0.conv1:3; it has layer1.0.conv1:0, layer1.0.conv1:1"):
        cross_checkpoint_matrix(series, res, LAYER, 3)


def test_dead_final_channel_gives_nan_similarity_and_a_note():
    conv = torch.nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(-1.0)
    s = CheckpointSeries.from_models({0: torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1)), 1: torch.nn.Sequential(conv)})
    res = render_series(s, "0:0", steps=2, image_size=8, transforms="none", progress=False)
    fc = feature_change(s, res, "0", 0)
    assert all(math.isnan(v) for v in fc.similarity) and fc.settle_step is None
    assert "does not respond" in fc.notes[0]
    assert read_json_safe(fc.to_dict())["similarity"] == [None, None]


def read_json_safe(d):
    from devvis.io import dumps_json
    import json

    return json.loads(dumps_json(d))


def test_top_k_examples(series_dir):
    series = CheckpointSeries(series_dir)[-3:]
    data = SyntheticShapes(30, 32, seed=0, split="test")
    top = top_k_examples(series, LAYER, CHANNEL, data, k=5, preprocess="none")
    assert top.steps == [16, 20, 24] and top.indices.shape == (3, 5) and top.values.shape == (3, 5)
    x, _ = data.tensors()
    acts = objectives.evaluate(series[24], objectives.channel(LAYER, CHANNEL), x, preprocess="none")
    assert set(top.indices[-1].tolist()) == set(torch.topk(acts, 5).indices.tolist())
    torch.testing.assert_close(top.values[-1], torch.topk(acts, 5).values)
    assert top.jaccard_final[-1] == 1.0 and len(top.jaccard_consecutive) == 2
    assert all(0.0 <= v <= 1.0 for v in top.jaccard_consecutive + top.jaccard_final)
    a, b = set(top.indices[0].tolist()), set(top.indices[1].tolist())
    assert top.jaccard_consecutive[0] == pytest.approx(len(a & b) / len(a | b))
    with pytest.raises(ConfigError, match="k=31 exceeds the 30 examples"):
        top_k_examples(series, LAYER, CHANNEL, data, k=31)


def test_plots_and_track(series_dir, tmp_path):
    series = CheckpointSeries(series_dir)[::2]  # steps 0, 8, 16, 24
    out = track(series, ["layer1.0.conv1:2", ("layer2.0", 1), "layer1.0.conv1:0"], tmp_path / "track", seed=0,
                threshold=0.5, loader=SyntheticShapes(12, 32, split="test"), k=3, steps=3, image_size=16,
                preprocess="none", progress=False)
    assert list(out.changes) == ["layer1.0.conv1:2", "layer2.0:1", "layer1.0.conv1:0"]
    assert list(out.renders) == ["layer1.0.conv1", "layer2.0"]  # one render per layer and checkpoint
    summary = read_json(tmp_path / "track" / "track.json")
    assert summary["settle_steps"] == {k: v.settle_step for k, v in out.changes.items()}
    assert summary["settings"]["baseline"] == "grey" and summary["settings"]["tolerance"] == 0.05
    for label, fc in out.changes.items():
        line = summary["features"][label]
        assert line["settle_status"] in ("settled", "not settled", "not comparable")
        assert (line["settle_step"] is None) is (line["settle_status"] != "settled")
        assert line["baseline"].startswith("grey") and line["appearance_to_final"] == fc.appearance.to_final
        assert len(fc.appearance.to_final) == 4 and fc.appearance.to_final[-1] == 0.0
    for stem in ("layer1.0.conv1_channel_2", "layer2.0_channel_1", "layer1.0.conv1_channel_0"):
        for kind in ("similarity", "matrix"):
            png = tmp_path / "track" / f"{stem}_{kind}.png"
            with Image.open(png) as im:
                im.verify()
            assert read_json(png.with_suffix(".json"))["steps"] == [0, 8, 16, 24]
        rec = read_json(tmp_path / "track" / f"{stem}_feature_change.json")
        assert len(rec["matrix"]) == 4 and rec["top_k"]["k"] == 3
        assert len(rec["baseline_values"]) == 4 and rec["settle_status"] in ("settled", "not settled", "not comparable")
        assert len(rec["appearance"]["consecutive"]) == 3 and rec["appearance"]["layers"] == ["conv1", "layer1.0.conv1"]
    with Image.open(tmp_path / "track" / "grid.png") as im:
        assert im.size[0] > 4 * 64
    assert (tmp_path / "track" / "renders" / "layer_layer2.0" / "series_result.json").is_file()
    fc = out.changes["layer2.0:1"]
    plot_similarity(fc, tmp_path / "s.png")
    plot_matrix(fc, tmp_path / "m.png")
    assert (tmp_path / "s.png").stat().st_size > 1000 and (tmp_path / "m.json").is_file()


def test_metrics_score_the_renders_with_the_renders_preprocessing():
    """'auto' in the metrics means the renders' own preprocessing (here 'none', while 'auto' for these plain
    modules would be ImageNet); None is identity; a custom callable must be passed again; the old argument
    order still works, with a DeprecationWarning."""
    from devvis.longitudinal import render_preprocess

    torch.manual_seed(0)
    nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3)) for s in (0, 5)}
    s = CheckpointSeries.from_models(nets)
    res = render_series(s, "0:1", steps=2, image_size=8, transforms="none", preprocess="none", progress=False)
    assert render_preprocess(res) == "none" and render_preprocess(res, "imagenet") == "imagenet"
    obj = objectives.channel("0", 1)
    batch = torch.cat([res[0].images, res[5].images])

    def expected(pre):
        return torch.stack([objectives.evaluate(nets[st], obj, batch, preprocess=pre) for st in (0, 5)], dim=1)

    auto = cross_checkpoint_matrix(s, res, "0", 1)
    torch.testing.assert_close(auto, expected("none"))
    torch.testing.assert_close(cross_checkpoint_matrix(s, res, "0", 1, preprocess=None), expected("none"))
    imagenet = cross_checkpoint_matrix(s, res, "0", 1, preprocess="imagenet")
    torch.testing.assert_close(imagenet, expected("imagenet"))
    assert not torch.allclose(auto, imagenet)
    with pytest.warns(DeprecationWarning, match="pass the series first"):
        old = feature_change(res, s, "0", 1)
    assert old.matrix == auto.tolist()

    def double(t):
        return 2 * t

    custom = render_series(s, "0:1", steps=2, image_size=8, transforms="none", preprocess=double, progress=False)
    with pytest.raises(ConfigError, match="custom preprocess .*pass the same callable"):
        cross_checkpoint_matrix(s, custom, "0", 1)
    torch.testing.assert_close(cross_checkpoint_matrix(s, custom, "0", 1, preprocess=double),
                               torch.stack([objectives.evaluate(nets[st], obj, torch.cat([custom[0].images,
                                            custom[5].images]), preprocess=double) for st in (0, 5)], dim=1))
