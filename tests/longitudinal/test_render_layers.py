"""render_layers: several layers' channels in one render per checkpoint, the same images as one render per layer.

Also the pieces it is built from: objectives.stacked, param.stack and RenderResult.rows.
"""

from __future__ import annotations

import pytest
import torch

from devvis import objectives, param as P
from devvis.errors import ObjectiveError, ParameterizationError, ConfigError
from devvis.hooks import Activations
from devvis.longitudinal import CheckpointSeries, render_layers, render_series, render_stacked, track
from devvis.render import render
from devvis.render.stopping import Convergence
from devvis.trust.batch import given_renders

LAYERS = {"layer1.0": [0, 3], "layer2.0": [1, 2, 5]}
RENDER = dict(steps=12, image_size=16, progress=False)


def _per_layer(series, **kw):
    return {layer: render_series(series, objectives.channels(layer, chans), **RENDER, **kw)
            for layer, chans in LAYERS.items()}


@pytest.mark.parametrize("transforms", ["standard", "standard-separate"])
def test_stacked_render_gives_each_layer_the_images_of_its_own_render(series_dir, transforms):
    s = CheckpointSeries(series_dir)
    together = render_layers(s, LAYERS, seed=3, transforms=transforms, **RENDER)
    apart = _per_layer(s, seed=3, transforms=transforms)
    assert list(together) == list(LAYERS)
    for layer in LAYERS:
        a, b = together[layer], apart[layer]
        assert a.steps == b.steps == s.steps and a.objective == b.objective and a.seed == b.seed == 3
        for step in s.steps:
            ra, rb = a[step], b[step]
            # the same start, transform draws and per-image optimization: equal to float rounding
            assert torch.allclose(ra.images, rb.images, atol=1e-4), (layer, step, (ra.images - rb.images).abs().max())
            assert torch.allclose(ra.history, rb.history, atol=1e-4)
            assert torch.allclose(ra.final_values, rb.final_values, atol=1e-4)
            assert ra.fields == rb.fields and ra.layers == rb.layers and ra.objective == rb.objective
            assert ra.config == rb.config and ra.config["batch"] == len(LAYERS[layer])
            assert ra.steps_run == 12 and ra.status == "completed"


def test_render_stacked_a_circuits_target_and_sources_as_their_own_renders(series_dir):
    s = CheckpointSeries(series_dir)
    parts = {"target": objectives.channel("layer2.0", 1), "sources": objectives.channels("layer1.0", [0, 2, 3]),
             "plain": objectives.channel("layer1.0", 1) - 0.5 * objectives.total_variation()}
    together = render_stacked(s, parts, seed=1, **RENDER)
    for name, obj in parts.items():
        alone = render_series(s, obj, seed=1, **RENDER)
        for step in s.steps:
            a, b = together[name][step], alone[step]
            # equal to float rounding: batch 5 against batch 1 rounds the convolutions differently, and Adam
            # turns a near-zero gradient's rounding into a full step (with BatchNorm folded, up to 9e-4 here)
            assert torch.allclose(a.images, b.images, atol=2e-3), (name, step, (a.images - b.images).abs().max())
            assert a.fields == b.fields and a.objective == b.objective and sorted(a.layers) == sorted(b.layers)
    assert together["target"][s.steps[0]].images.shape[0] == 1 and together["sources"][s.steps[0]].images.shape[0] == 3


def test_undeclared_layers_render_apart(series_dir):
    s = CheckpointSeries(series_dir)
    plain = lambda acts: acts["layer1.0"][:, 0].mean(dim=(1, 2))  # noqa: E731 - a user's callable: layers found by probing
    together = render_stacked(s, {"a": plain, "b": "layer2.0:1"}, seed=0, **RENDER)
    assert torch.equal(together["a"][s.steps[-1]].images, render_series(s, plain, **RENDER)[s.steps[-1]].images)


def test_not_stackable_settings_render_layer_by_layer(series_dir):
    s = CheckpointSeries(series_dir)
    stop = Convergence(tol=10.0, window=4)  # a rule over the batch mean: the layers' batches must stay apart
    together = render_layers(s, LAYERS, seed=0, stop_when=stop, **RENDER)
    apart = _per_layer(s, seed=0, stop_when=stop)
    for layer in LAYERS:
        for step in s.steps:
            assert torch.equal(together[layer][step].images, apart[layer][step].images)
            assert together[layer][step].steps_run == apart[layer][step].steps_run < 12


def test_track_saves_each_layer_from_the_stacked_render(series_dir, tmp_path):
    s = CheckpointSeries(series_dir)
    out = track(s, ["layer1.0:0", "layer2.0:1", "layer1.0:3"], tmp_path, steps=4, image_size=16, progress=False)
    assert sorted(out.renders) == ["layer1.0", "layer2.0"]
    assert out.renders["layer1.0"][s.steps[-1]].fields["channels"] == [0, 3]
    assert (tmp_path / "renders" / "layer_layer2.0" / "series_result.json").is_file()
    alone = render_series(s, objectives.channels("layer2.0", [1]), steps=4, image_size=16, progress=False)
    assert torch.allclose(out.renders["layer2.0"][s.steps[-1]].images, alone[s.steps[-1]].images, atol=1e-4)
    # the trust check takes them as each unit's first seed (its settings match the split results' configs)
    given = given_renders(out.renders, [("layer1.0", 3), ("layer2.0", 1)], steps=4, image_size=16,
                          transforms="standard")
    assert torch.equal(given[("layer1.0", 3)][s.steps[-1]], out.renders["layer1.0"][s.steps[-1]].images[1:2])
    assert sorted(given[("layer2.0", 1)]) == s.steps


def test_stacked_objective_scores_each_block_on_its_own_rows():
    obj = objectives.stacked([(objectives.channels("a", [1, 0]), 2), (objectives.channel("b", 2), 1)])
    acts = Activations({"a": torch.arange(12.0).view(3, 2, 2, 1), "b": torch.arange(27.0).view(3, 3, 3, 1)}, {})
    # image 0: channel 1 of "a" (2, 3) -> 2.5; image 1: channel 0 of its own row (4, 5) -> 4.5; image 2: "b" row 2 ch 2
    assert obj(acts).tolist() == [2.5, 4.5, 25.0]
    assert sorted(obj.layers) == ["a", "b"] and obj.fields["counts"] == [2, 1]
    with pytest.raises(ObjectiveError, match="batch of 3 images, got 2"):
        obj(Activations({"a": torch.zeros(2, 2, 2, 1), "b": torch.zeros(2, 3, 3, 1)}, {}))
    with pytest.raises(ObjectiveError, match="positive image count"):
        objectives.stacked([(objectives.channel("a", 0), 0)])


def test_param_stack_starts_each_block_as_its_part_and_rejects_mismatches():
    a, b = P.image(8, batch=2, seed=0), P.image(8, batch=3, seed=1)
    s = P.stack([a, b])
    assert tuple(s().shape) == (5, 3, 8, 8)
    assert torch.equal(s()[:2], a()) and torch.equal(s()[2:], b())
    s.basis.spectrum.data.add_(1.0)  # the parts are copied, not shared
    assert torch.equal(a(), P.image(8, batch=2, seed=0)())
    with pytest.raises(ParameterizationError, match="same basis"):
        P.stack([a, P.pixel(8, seed=0)])
    with pytest.raises(ParameterizationError, match="same basis"):
        P.stack([a, P.image(16, seed=0)])
    with pytest.raises(ParameterizationError, match="ImageParam"):
        P.stack([P.cppn(8, seed=0)])


def test_render_result_rows_cut_every_per_image_field():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    res = render(net, objectives.channels("1", [0, 1, 2]), steps=3, image_size=12, thresholds=[2, 3],
                 preprocess="none", progress=False)
    part = res.rows(1, 3, objective="part", layers=["1"], fields={"channels": [1, 2]})
    assert torch.equal(part.images, res.images[1:3]) and torch.equal(part.snapshots[2], res.snapshots[2][1:3])
    assert torch.equal(part.history, res.history[:, 1:3]) and torch.equal(part.final_values, res.final_values[1:3])
    assert part.config["batch"] == 2 and res.config["batch"] == 3
    assert part.time_s == pytest.approx(res.time_s * 2 / 3)
    with pytest.raises(ConfigError, match="outside"):
        res.rows(2, 4, objective="x", layers=[], fields={})
