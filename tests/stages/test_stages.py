"""Essential dynamics, unit settles, stages() and `devvis stages` on small series; the planted curriculum (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from devvis.data.synthetic import CURRICULUM_PHASES
from devvis.errors import ConfigError
from devvis.longitudinal import CheckpointSeries
from devvis.stages import (block_llc, default_blocks, default_layers, essential_dynamics, mean_group_response, stages,
                           unit_responses, unit_settles)
from devvis.stages.features import UnitResponses, response_change
from devvis.zoo import train_series


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small_curriculum(tmp_path_factory):
    out = tmp_path_factory.mktemp("cur")
    train_series(out, steps=12, curriculum=(4, 8), width=4, n_train=120, n_test=24, batch_size=16, progress=False)
    return out


def _linear_series(directions):
    """{step: Linear} whose weights move along ``directions`` (one per segment of 5 steps)."""
    torch.manual_seed(0)
    base = nn.Linear(12, 3)
    w, out = base.weight.detach().clone(), {}
    for i in range(5 * len(directions) + 1):
        m = nn.Linear(12, 3)
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(base.bias)
        out[i] = nn.Sequential(nn.Flatten(), m)
        if i < 5 * len(directions):
            w = w + directions[i // 5]
    return out


def test_essential_dynamics_turns_where_the_weights_turn():
    torch.manual_seed(1)
    d1, d2 = torch.randn(3, 12), torch.randn(3, 12)
    series = _linear_series([d1, d1, d2, d2])  # direction changes after step 10
    x = torch.rand(16, 3, 2, 2)
    ed = essential_dynamics(series, x, labels=torch.arange(16) % 3, n_components=3, keep_outputs=True)
    assert ed.pcs.shape == (21, 3) and ed.outputs.shape == (21, 16 * 3)
    assert np.isclose(ed.explained.sum(), 1.0)  # a model linear in its weights: the path lies in 2 PCs
    assert [p.step for p in ed.turning_points] == [10]
    assert len(ed.loss) == 21 and all(np.isfinite(ed.loss))
    d = ed.to_dict()
    assert d["turning_points"][0]["step"] == 10 and "turn" in d["definitions"]
    with pytest.raises(ConfigError, match="at least 3 checkpoints"):
        essential_dynamics({0: series[0], 1: series[1]}, x)


def test_unit_settles_and_blocks():
    nets = {s: nn.Sequential(nn.Conv2d(3, 2, 1)) for s in range(4)}
    with torch.no_grad():
        for s, m in nets.items():  # channel 0 fixed from step 0; channel 1 only at the end
            m[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0 if s == 3 else -1.0, 0]]).reshape(2, 3, 1, 1))
    x = torch.rand(12, 3, 4, 4)
    r = unit_responses(nets, x, ["0"])
    settles = {u.channel: u for u in unit_settles(r, labels=torch.arange(12), k=3)}
    assert settles[0].settle_step == 0 and settles[0].settle_status == "settled"
    assert settles[1].settle_step is None and settles[1].settle_status == "not settled"
    assert settles[0].top_labels == torch.argsort(x[:, 0].mean((1, 2)), descending=True)[:3].tolist()
    # response change: on the class profile with labels, so a reshuffle within a class is no change
    shuffled = UnitResponses([0, 1], {"0": np.array([[[1.0, 2.0, 5.0, 6.0]], [[2.0, 1.0, 6.0, 5.0]]])})
    assert response_change(shuffled)["0"][0, 0] == pytest.approx(2 / 17 ** 0.5)  # ‖(1, −1, 1, −1)‖ / ‖p − p̄‖
    assert response_change(shuffled, labels=[0, 0, 1, 1])["0"][0, 0] == pytest.approx(0.0)
    assert default_blocks(nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)]))) == \
        ["0", "2.0", "2.1"]


def test_unit_contrasts_hold_all_but_one_property_fixed():
    """A red-minus-green unit responds to colour and not to outlines; a luminance edge unit the reverse."""
    from devvis.data.synthetic import SyntheticShapes
    from devvis.stages.contrasts import LUMINANCE, desaturate, unit_contrasts

    net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.ReLU())
    lap = torch.tensor([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]])
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, 0, 1, 1], net[0].weight[0, 1, 1, 1] = 1.0, -1.0  # ReLU(R - G)
        for c, w in enumerate(LUMINANCE):  # ReLU(±Laplacian of the luminance): edges of either sign
            net[0].weight[1, c], net[0].weight[2, c] = w * lap, -w * lap
    x, y = SyntheticShapes(96, 16, 0, "probe").tensors()
    c = unit_contrasts(net, x, y, ["1"], groups=CURRICULUM_PHASES, preprocess="none")
    assert set(c) == {"colour", "outline"}
    assert c["colour"]["1"][0] > 0.5 and abs(c["outline"]["1"][0]) < 0.2
    assert np.allclose(c["colour"]["1"][1:], 0, atol=1e-5) and (c["outline"]["1"][1:] > 0.3).all()
    assert torch.allclose(desaturate(desaturate(x)), desaturate(x), atol=1e-6)
    assert set(unit_contrasts(net, x, y, ["1"], groups={"shape": [6]}, preprocess="none")) == {"outline"}
    with pytest.raises(ConfigError, match="one entry per probe image"):
        unit_contrasts(net, x, y[:3], ["1"], groups=CURRICULUM_PHASES)


def test_stages_writes_json_and_plots(small_curriculum, tmp_path):
    r = stages(small_curriculum, output_dir=tmp_path, threshold=2.0, assign="settle")
    assert {p.name for p in r.files} == {"stages.json", "stages_timeline.png", "essential_dynamics.png"}
    data = json.loads((tmp_path / "stages.json").read_text())
    assert data["kind"] == "stages" and data["steps"] == list(range(13))
    assert len(data["stages"]) == len(data["boundaries"]) + 1
    assert set(data["signals"]) == {"essential_dynamics", "loss", "features"}
    assert data["settings"]["layers"] == ["layer1", "layer2", "layer3"]
    # every settled unit sits in exactly one stage, within its span
    n_units = sum(len(s["units"]) for s in data["stages"])
    assert n_units + len(data["units_not_settled"]) == 4 + 8 + 16
    for st in data["stages"]:
        assert all(st["start"] <= u["settle_step"] <= st["end"] for u in st["units"])
    assert r.to_dict()["definitions"]["boundary"].startswith("a checkpoint where combined")
    assert {"persistence", "transient"} <= set(data["definitions"]) and data["settings"]["min_persistence"] == 0.5
    assert isinstance(data["transients"], list) and all(t["kind"] == "transient" for t in data["transients"])
    assert all(b["kind"] == "boundary" and set(b["persistence"]) == {"essential_dynamics", "features"}
               for b in data["boundaries"])
    # what the report reads (docs/stages.md): planted steps, combined score, coordinates, group responses
    assert data["planted"] == [{"phase": "shape", "step": 4}, {"phase": "texture", "step": 8}]
    assert len(data["combined"]) == 13 and data["combined"][0] is None and data["combined"][-1] is None
    assert all(b["step_range"][0] <= b["step"] <= b["step_range"][1] and b["signals"] for b in data["boundaries"])
    assert np.asarray(data["essential_dynamics"]["pcs"]).shape == (13, 3)
    assert data["settings"]["groups"]["shape"] == [6, 7, 8, 9] and data["settings"]["probe_size"] == 32
    unit = next(u for st in data["stages"] for u in st["units"])
    assert len(unit["change_share"]) == len(data["stages"]) and abs(sum(unit["change_share"]) - 1) < 1e-3
    assert all(st.units == r.settled_in(st.index) for st in r.stages)
    by_change = stages(small_curriculum, threshold=2.0)  # the default: the stage each unit formed in
    assert by_change.settings["assign"] == "change" and by_change.settings["change_of"] == "classes"
    assert sum(len(st.units) for st in by_change.stages) == 28  # every unit that changed at all
    assert all(st.units == by_change.formed_in(st.index) for st in by_change.stages)
    with pytest.raises(ConfigError, match="unknown assign"):
        stages(small_curriculum, assign="most")
    assert set(unit["group_response"]) == {"colour", "shape", "texture"} and len(unit["top_classes"]) == 9
    assert set(unit["contrast"]) == {"colour", "outline"} and set(data["stages"][0]["contrast"]) == {"colour", "outline"}
    assert set(data["stages"][0]["group_response"]) == {"colour", "shape", "texture"}


def test_stages_with_llc_block_attribution_and_circuits(small_curriculum):
    series = CheckpointSeries(small_curriculum)
    llc = {s: float(s > 6) * 5.0 + 0.01 * s for s in series.steps}
    fake = type("T", (), {})
    blocks = {}
    for name, jump in (("layer1", 0.0), ("layer3", 4.0)):
        t = fake()
        t.steps, t.llc_mean, t.llc_std = series.steps, [jump * (s > 6) for s in series.steps], [0.5] * 13
        blocks[name] = t
    r = stages(series, llc=llc, block_llc=blocks, circuits=[("layer2", "layer3", 0)], threshold=1.0, min_support=1)
    assert "llc" in r.settings["signals"]
    jump = [st for st in r.stages[1:] if abs(st.boundary.step - 7) <= 1]
    assert jump and jump[0].to_dict()["attributed_block"] == "layer3"
    assert all("circuit" in c for st in r.stages for c in st.circuits)
    with pytest.raises(ConfigError, match="unknown signals"):
        stages(series, signals=["loss", "speed"])
    with pytest.raises(ConfigError, match="every checkpoint"):
        stages(series, llc={0: 1.0})


def test_block_llc_runs_restricted_estimates():
    nets = {s: nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)) for s in (0, 1)}
    x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
    per = block_llc(nets, [(x, y)], nn.functional.cross_entropy, lr=1e-4, localization=100.0, num_chains=1,
                    num_draws=5, warn=False)
    assert list(per) == ["0", "2"] and all(t.steps == [0, 1] for t in per.values())
    with pytest.raises(ConfigError, match="blocks="):
        block_llc(nets, [(x, y)], nn.functional.cross_entropy, params=["0"])


def test_cli_stages(small_curriculum, tmp_path, capsys):
    from devvis.cli import main

    assert main(["stages", "--checkpoint-path", str(small_curriculum), "--output-path", str(tmp_path),
                 "--threshold", "2", "--assign", "settle"]) == 0
    out = capsys.readouterr().out
    assert "stage 0: steps 0-" in out and "units settled" in out and (tmp_path / "stages.json").is_file()
    assert "planted (curriculum): shape from step 4, texture from step 8" in out and "mean standardized response" in out
    assert json.loads((tmp_path / "stages.json").read_text())["settings"]["assign"] == "settle"
    # --min-persistence reaches the detection (0 turns the transient rule off) and is recorded
    assert main(["stages", "--checkpoint-path", str(small_curriculum), "--output-path", str(tmp_path / "p0"),
                 "--threshold", "2", "--min-persistence", "0"]) == 0
    written = json.loads((tmp_path / "p0" / "stages.json").read_text())
    assert written["settings"]["min_persistence"] == 0 and written["transients"] == []


#: The planted curriculum of the demo and the README (16 px images, so one run is ~20-40 s of one core):
#: colour classes from step 0, shapes from 100, gratings from 200; checkpoints every 10 steps.
CURRICULUM_RUN = dict(steps=300, curriculum=True, width=8, size=16, n_train=2400, n_test=240, batch_size=64,
                      optimizer="adam", lr=0.005, progress=False)
_runs: dict = {}


def _stages_of(tmp_path_factory, seed: int, curriculum: bool):
    """stages() of the planted run (or of the same run with no curriculum and a constant LR), trained once."""
    key = (seed, curriculum)
    if key not in _runs:
        out = tmp_path_factory.mktemp(f"run{seed}{'c' if curriculum else 'f'}")
        kw = dict(CURRICULUM_RUN, seed=seed)
        if not curriculum:
            kw.update(curriculum=None, schedule="constant", checkpoint_steps=list(range(0, 301, 10)))
        train_series(out, **kw)
        _runs[key] = stages(out)
    return _runs[key]


SEEDS = [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]


def _shape_minus_colour_in_examples(units) -> float:
    """Mean over ``units`` of (share of shape images − share of colour images) among their top probe examples."""
    shape, colour = list(CURRICULUM_PHASES["shape"]), list(CURRICULUM_PHASES["colour"])
    return float(np.mean([np.isin(u.top_labels, shape).mean() - np.isin(u.top_labels, colour).mean() for u in units]))


@pytest.mark.parametrize("seed", SEEDS)
def test_planted_curriculum_boundaries_within_one_checkpoint(tmp_path_factory, seed):
    r = _stages_of(tmp_path_factory, seed, True)
    assert r.planted == [{"phase": "shape", "step": 100}, {"phase": "texture", "step": 200}]
    assert len(r.boundaries) == 2
    for b, planted in zip(r.boundaries, (10, 20)):  # checkpoint indices of steps 100 and 200
        assert abs(b.index - planted) <= 1 and b.uncertainty >= abs(b.index - planted)
        assert len(b.signals) >= 2
    # the units that formed in the colour stage (most of their response change falls in it) respond more to
    # the colour images than to the shapes
    first = r.stages[0].group_response()
    assert first["colour"] > first["shape"] + 0.2


@pytest.mark.parametrize("seed", SEEDS)
def test_shape_stage_units_respond_more_to_shapes_than_colours(tmp_path_factory, seed):
    """Issue 21: the units assigned to the shape stage (by default those that formed in it: most of their class-level
    response change falls in it) respond more to the shapes than to the colours, in their standardized responses
    to the probe and in their top examples. Measured (docs/stages.md; seeds 0-2): 6, 4, 4 units; shape − colour
    +0.92, +1.09, +1.25 sd; top-9 examples 37, 58, 64 points more shapes than colours."""
    r = _stages_of(tmp_path_factory, seed, True)
    assert r.settings["assign"] == "change" and r.settings["change_of"] == "classes" and len(r.stages) == 3
    units = r.stages[1].units
    assert len(units) >= 2 and units == r.formed_in(1) and all(int(np.argmax(u.change_share)) == 1 for u in units)
    shape_stage = r.stages[1].group_response()
    assert shape_stage["shape"] > shape_stage["colour"] + 0.3
    assert _shape_minus_colour_in_examples(units) > 0.2  # "in their dataset examples": the top-9 probe images
    # controlled: on the same images with and without colour, the colour-stage units prefer colour and the
    # shape-stage units the images without it (-1.11, -1.01, -1.48 sd on seeds 0-2). Their outline contrast
    # (shapes vs the same shapes blurred) is near 0: this run does not learn to tell the shapes apart in its
    # 100-step shape phase (held-out shape accuracy ~0.25, chance), so it has no outline units (docs/stages.md)
    assert r.stages[0].contrast()["colour"] > 0.3 and r.stages[1].contrast()["colour"] < 0
    # settling is not forming: the units that *settle* in the shape stage were retuned there (their response
    # similarity to the end crosses 0.8 when the shapes arrive), but most of their change fell in the colour
    # stage (50 of 51 units over 7 seeds), and they prefer colours (docs/stages.md, "Forming and settling")
    settled = r.settled_in(1)
    assert settled and np.mean([int(np.argmax(u.change_share)) == 0 for u in settled]) >= 0.75
    assert mean_group_response(settled)["colour"] > mean_group_response(settled)["shape"]


@pytest.mark.parametrize("seed", SEEDS)
def test_constant_lr_without_curriculum_gives_at_most_one_boundary(tmp_path_factory, seed):
    """Issue 21: no more than one spurious boundary without a curriculum. Adam at this learning rate has loss
    spikes (seed 1: held-out loss 0.51 -> 1.42 at step 140, 0.37 -> 1.79 at 200, back within a checkpoint or
    two); the outputs jump away and come back (essential-dynamics persistence 0.31 and 0.16), so they are
    transients, not boundaries (docs/stages.md). Measured, one thread: seeds 0-2 give boundaries [200], [], []
    and transients [], [140, 200], [260]; two threads (a different floating-point order): [], [] and [], [200]
    on seeds 0-1."""
    r = _stages_of(tmp_path_factory, seed, False)
    assert r.planted is None and len(r.boundaries) <= 1
    assert all(t.kind == "transient" and max(t.persistence[k] for k in t.signals if k in t.persistence) < 0.5
               for t in r.transients)
