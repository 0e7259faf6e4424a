"""composition() on a trained checkpoint series: files written, and numbers that agree with the
longitudinal module and the circuit primitives run directly; the ``devvis circuits`` command."""

import argparse

import pytest
import torch
from PIL import Image

from devvis import io as dio
from devvis.circuits import channel_influence, composition, expanded_weights
from devvis.data import probe_batch
from devvis.errors import ConfigError, LayerNotFoundError
from devvis.longitudinal import CheckpointSeries, feature_change, render_series
from devvis.objectives import channel

RENDER = {"steps": 8, "image_size": 32}
TARGET, CHANNEL, SOURCE = "layer2.0", 3, "layer1.0"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from devvis.zoo import train_series

    d = tmp_path_factory.mktemp("zoo")
    train_series(d, steps=40, checkpoint_steps=[0, 10, 20, 40], width=8, n_train=128, batch_size=32, n_test=24,
                 progress=False)
    return d


@pytest.mark.slow
def test_composition_writes_figure_and_json_that_agree_with_direct_computation(trained, tmp_path):
    series = CheckpointSeries(trained)
    probes = probe_batch(8, 32)
    res = composition(series, SOURCE, TARGET, CHANNEL, k=3, inputs=probes, output_dir=tmp_path,
                      render_kwargs=RENDER)
    assert res.steps == [0, 10, 20, 40] and len(res.upstream) == 3
    assert res.figure_path == tmp_path / "composition_layer2.0_ch3_from_layer1.0.png"
    with Image.open(res.figure_path) as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 300

    # influences: the final row of channel_influence, top 3 by magnitude, strongest first
    final = series[40]
    row = channel_influence(final, SOURCE, TARGET, probes, target_channel=CHANNEL, preprocess="none")
    expected_top = torch.argsort(row.abs(), descending=True, stable=True)[:3].tolist()
    assert res.channels == expected_top
    for u in res.upstream:
        assert u.influence == pytest.approx(float(row[u.channel]), rel=1e-5, abs=1e-7)
        assert u.trajectory[-1] == pytest.approx(u.influence)
        assert len(u.trajectory) == 4
    first = channel_influence(series[0], SOURCE, TARGET, probes, target_channel=CHANNEL, preprocess="none")
    assert [u.trajectory[0] for u in res.upstream] == pytest.approx([float(first[c]) for c in res.channels],
                                                                      rel=1e-5, abs=1e-7)

    # expanded weights: the (target, source) kernels of the final model
    w = expanded_weights(final, SOURCE, TARGET, crop=5, input_shape=(3, 32, 32))
    for u in res.upstream:
        torch.testing.assert_close(u.expanded_weight, w[CHANNEL, u.channel])

    # settle steps: the longitudinal module's functions, run directly on fresh renders, agree
    direct_target = feature_change(
        series, render_series(series, channel(TARGET, CHANNEL), seed=0, progress=False, preprocess="none", **RENDER),
        TARGET, CHANNEL, threshold=0.8, preprocess="none")
    assert res.target_settle_step == direct_target.settle_step
    assert res.target_similarity == pytest.approx(direct_target.similarity, rel=1e-4, nan_ok=True)
    # (the upstream channels' renders are one channels() render; their metrics, recomputed directly)
    assert res.renders["sources"][40].fields["channels"] == res.channels
    for u in res.upstream:
        fc = feature_change(series, res.renders["sources"], SOURCE, u.channel, threshold=0.8, preprocess="none")
        assert u.settle_step == fc.settle_step
        assert u.similarity == pytest.approx(fc.similarity, rel=1e-4, nan_ok=True)
        before = u.settle_step is not None and (res.target_settle_step is None or u.settle_step < res.target_settle_step)
        assert u.earlier == before

    # the JSON holds the same numbers
    data = dio.read_json(res.json_path)
    assert data["kind"] == "circuits_composition" and data["schema_version"] == dio.SCHEMA_VERSION
    assert data["target"]["settle_step"] == res.target_settle_step and data["steps"] == [0, 10, 20, 40]
    assert [u["channel"] for u in data["upstream"]] == res.channels
    assert [u["settle_step"] for u in data["upstream"]] == [u.settle_step for u in res.upstream]
    torch.testing.assert_close(torch.tensor(data["upstream"][0]["expanded_weight"]), res.upstream[0].expanded_weight)
    assert data["influence"]["influence"]["40"][res.channels[0]] == pytest.approx(res.upstream[0].influence)
    assert data["settings"]["render"]["steps"] == 8 and data["figure"] == res.figure_path.name


def test_composition_rejects_bad_arguments():
    nets = {0: torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3))}
    with pytest.raises(ConfigError, match="k must be"):
        composition(nets, "1", "2", 0, k=0)
    with pytest.raises(ConfigError, match="seed"):
        composition(nets, "1", "2", 0, k=1, inputs=torch.rand(2, 3, 8, 8), render_kwargs={"seed": 3})
    with pytest.raises(ConfigError, match=r"target_layer must be a layer name; got 0.*source_layer, target_layer"):
        composition(nets, "2", 0, "1", k=1)  # the order before source-then-target
    with pytest.raises(LayerNotFoundError, match="layer .relu. not found.*0, 1, 2"):
        composition(nets, "relu", "2", 0, k=1, inputs=torch.rand(2, 3, 8, 8))


def _parser():
    from devvis.cli import _Parser
    from devvis.commands import circuits

    parser = _Parser(prog="devvis")
    circuits.register(parser.add_subparsers(dest="command", parser_class=_Parser))
    return parser


@pytest.mark.slow
def test_cli_writes_figure_and_json(trained, tmp_path, capsys):
    files = [str(trained / "step_000000.safetensors"), str(trained / "step_000040.safetensors")]
    args = _parser().parse_args([
        "circuits", "--checkpoint-path", *files, "--source-layer", "layer1.0", "--target-layer", "layer2.0",
        "--channel", "1", "-k", "2", "--steps", "4", "--image-size", "24", "--probe-images", "4",
        "--output-path", str(tmp_path), "--no-progress"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "settles" in out and "top 2 upstream channels in layer1.0 at step 40" in out
    folder = tmp_path / "circuits"
    assert (folder / "composition_layer2.0_ch1_from_layer1.0.png").is_file()
    data = dio.read_json(folder / "composition_layer2.0_ch1_from_layer1.0.json")
    assert data["target_channel"] == 1 and data["steps"] == [0, 40]
    assert len(data["upstream"]) == 2 and data["settings"]["n_inputs"] == 4 and data["settings"]["render"]["steps"] == 4


def test_cli_errors_name_the_bad_value(trained, tmp_path):
    parser = _parser()
    args = parser.parse_args(["circuits", "--checkpoint-path", str(trained), "--source-layer", "layer1.7",
                              "--target-layer", "layer2.0", "--channel", "0", "--output-path", str(tmp_path)])
    with pytest.raises(LayerNotFoundError, match="layer1.7"):
        args.func(args)
    args = parser.parse_args(["circuits", "--checkpoint-path", str(trained), "--source-layer", "layer1.0",
                              "--target-layer", "layer2.0", "--channel", "0", "-k", "0"])
    with pytest.raises(ConfigError, match="--top-k"):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["circuits", "--checkpoint-path", str(trained), "--source-layer", "layer1.0",
                           "--channel", "0"])  # --target-layer missing
    assert not (tmp_path / "circuits").exists()
