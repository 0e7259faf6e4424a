"""Trust metrics: the planted fooling circuit is flagged by path similarity, an ordinary unit is not."""

from __future__ import annotations

import json
import math

import pytest
import torch

from devvis.cli import main
from devvis.longitudinal import CheckpointSeries
from devvis.trust import Thresholds, dataset_examples, path_similarity, trust
from devvis.trust.metrics import seed_stability, spectral_distance, transform_robustness
from trust_planted import PlantedNet, blocky_images


def test_planted_fooling_circuit_is_flagged_by_path_similarity():
    data = blocky_images(200)
    honest, fooled = PlantedNet(fool=False), PlantedNet(fool=True)
    with torch.no_grad():
        assert float(fooled.hf(data).abs().max()) == 0.0  # the fooling path never fires on the dataset
    units = ["unit:0", "unit:1"]
    ex_h = dataset_examples(CheckpointSeries.from_models({0: honest}), units, data, k=8, progress=False)
    res = trust(CheckpointSeries.from_models({0: fooled}), units, data, k=8, seeds=3, steps=128, image_size=32,
                progress=False)
    for u in units:  # natural examples unchanged by the planted circuit
        assert res.examples.units[u].indices.tolist() == ex_h.units[u].indices.tolist()
        torch.testing.assert_close(res.examples.units[u].values, ex_h.units[u].values)
    bad, ok = res.units["unit:0"][0], res.units["unit:1"][0]
    assert bad.path.score < Thresholds().min_path_similarity == 0.0 < 0.5 < ok.path.score
    assert bad.verdict.startswith("suspicious:") and "another path" in bad.verdict
    assert ok.verdict == "trustworthy"  # the ordinary unit of the same model passes every metric
    assert bad.path.per_layer["hf"] is None  # zero on every natural image: not informative
    assert bad.natural_max_ratio > 10  # the fooled picture drives the unit far beyond any natural image


def test_trust_writes_json_and_images(tmp_path):
    torch.manual_seed(0)
    nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
            for s in (0, 5)}
    res = trust(CheckpointSeries.from_models(nets), ["2:0", "2:1"], torch.rand(30, 3, 16, 16), k=4, seeds=2,
                steps=3, image_size=16, progress=False)
    res.save(tmp_path)
    rec = json.loads((tmp_path / "trust.json").read_text())
    assert set(rec["verdicts"]) == {"2:0", "2:1"} and set(rec["verdicts"]["2:0"]) == {"0", "5"}
    for rows in rec["units"].values():
        for r in rows:
            assert r["verdict"] == "trustworthy" or r["verdict"].startswith("suspicious: ")
            assert r["path"]["per_layer"].keys() == {"0", "1"}
    assert (tmp_path / "visualizations" / "2_channel_1" / "step_000005.png").is_file()
    assert (tmp_path / "examples" / "2_channel_0" / "step_000000.png").is_file()
    assert len(res.summary_lines()) == 2


def test_metric_definitions_on_known_values():
    n = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    r = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.5, 0.5]])
    close = path_similarity({"a": n.clone()}, {"a": n}, {"a": r}, ["a"])
    far = path_similarity({"a": torch.tensor([[0.0, 3.0]])}, {"a": n}, {"a": r}, ["a"])
    assert close.score == pytest.approx(1.0, abs=0.02) and far.score < 0
    flat = path_similarity({"a": n}, {"a": torch.zeros(2, 2)}, {"a": torch.zeros(3, 2)}, ["a"])
    assert flat.per_layer == {"a": None} and math.isnan(flat.score)
    # seed stability leaves the unit's own channel out: both seeds maximize it whatever they show
    opposite = torch.tensor([[5.0, 1.0, 0.0, 2.0], [9.0, -1.0, 0.0, -2.0]])
    assert seed_stability(opposite, torch.zeros(3, 4), exclude=0) == pytest.approx(-1.0)
    assert seed_stability(opposite, torch.zeros(3, 4)) > 0.5  # with it, they would look alike
    assert seed_stability(torch.tensor([[5.0, 1.0, 1.0, 1.0], [9.0, 1.0, 1.0, 1.0]]), torch.zeros(3, 4),
                          exclude=0) == pytest.approx(1.0)
    assert math.isnan(seed_stability(opposite[:, :3], torch.zeros(3, 3), exclude=0))  # two channels left: no reading
    assert transform_robustness(torch.tensor([2.0]), torch.tensor([[1.0], [2.0]])) == pytest.approx(0.75)
    smooth = torch.nn.functional.interpolate(torch.rand(8, 3, 4, 4), size=32, mode="bilinear")
    noise = torch.rand(4, 3, 32, 32)
    assert spectral_distance(noise, smooth) > 1.0 > spectral_distance(smooth.flip(-1), smooth)


def test_cli_trust_and_examples(tmp_path, capsys):
    from devvis.zoo import train_series

    ck = tmp_path / "ckpts"
    train_series(ck, steps=4, checkpoint_steps=[0, 4], width=4, blocks=(1, 1), n_train=32, n_test=8, batch_size=16,
                 seed=0, progress=False)
    data = tmp_path / "images.pt"
    torch.save(torch.rand(20, 3, 32, 32), data)
    out = tmp_path / "trust"
    rc = main(["trust", "--checkpoint-path", str(ck), "--units", "layer1.0:1", "--dataset", str(data), "--k", "3",
               "--seeds", "2", "--steps", "2", "--image-size", "24", "--output-path", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and "layer1.0:1: trustworthy at" in text
    rec = json.loads((out / "trust.json").read_text())
    assert list(rec["verdicts"]["layer1.0:1"]) == ["0", "4"]
    rc = main(["examples", "--checkpoint-path", str(ck), "--units", "layer1.0:1", "layer1.0:2", "--dataset",
               "synthetic", "--n-images", "24", "--dataset-size", "32", "--k", "4", "--output-path",
               str(tmp_path / "ex"), "--no-progress"])
    assert rc == 0 and "layer1.0:2: top-4 of 24 images at 2 checkpoints" in capsys.readouterr().out
    assert (tmp_path / "ex" / "layer1.0_channel_2" / "step_000004.png").is_file()
    rc = main(["trust", "--checkpoint-path", str(ck), "--units", "layer1.0:1", "--dataset", str(tmp_path / "no")])
    assert rc == 2 and "neither an image folder" in capsys.readouterr().err
