"""`devvis atlas` on a tiny trained series: the final checkpoint's atlas and the same layout at every checkpoint."""

import json

import pytest
from PIL import Image

from devvis.cli import main
from devvis.zoo.train import train_series


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("atlas_ckpts")
    train_series(d, steps=4, checkpoint_steps=[0, 4], width=4, n_train=64, n_test=16, batch_size=16, progress=False)
    return d


ARGS = ["--layer", "layer2.0", "--n-inputs", "24", "--grid", "2", "--min-count", "1", "--steps", "3",
        "--cell-size", "16", "--method", "pca"]


def test_atlas_at_the_final_checkpoint(ckpts, tmp_path, capsys):
    assert main(["atlas", "--checkpoint-path", str(ckpts), *ARGS, "--output-path", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "atlas.json").read_text())
    assert rec["kind"] == "atlas" and rec["step"] == 4 and rec["layer"] == "layer2.0" and rec["grid"] == 2
    assert sum(c["count"] for c in rec["cells"]) == 24 * 4                 # every sample lies in a cell
    assert Image.open(tmp_path / "atlas.png").size == (32, 32)
    assert "atlas of layer2.0 at step 4" in capsys.readouterr().out


def test_atlas_every_checkpoint_shares_the_layout(ckpts, tmp_path):
    assert main(["atlas", "--checkpoint-path", str(ckpts), *ARGS, "--every-checkpoint",
                 "--output-path", str(tmp_path)]) == 0
    series = json.loads((tmp_path / "atlas_series.json").read_text())
    assert series["steps"] == [0, 4] and series["reference_step"] == 4
    cells = [[(c["row"], c["col"], c["count"]) for c in json.loads((tmp_path / f).with_suffix(".json").read_text())
              ["cells"]] for f in series["files"]]
    assert cells[0] == cells[1]


def test_atlas_bad_flags_exit_2(ckpts, tmp_path, capsys):
    assert main(["atlas", "--checkpoint-path", str(ckpts), *ARGS, "--grid", "0", "--output-path", str(tmp_path)]) == 2
    assert "--grid must be a positive integer" in capsys.readouterr().err
    assert main(["atlas", "--checkpoint-path", str(ckpts), *ARGS, "--layer", "nope",
                 "--output-path", str(tmp_path)]) == 2
