"""The default thresholds on a trained model: most ordinary units are trustworthy, the planted fooling unit is not."""

from __future__ import annotations

from devvis.data import SyntheticShapes
from devvis.longitudinal import CheckpointSeries
from devvis.trust import trust
from devvis.zoo import train_series
from trust_planted import PlantedNet, blocky_images

UNITS = ["layer1.0:0", "layer1.0:4", "layer2.0:0", "layer2.0:8", "layer3.0:0", "layer3.0:8", "layer3.0:16",
         "layer3.0:24"]


def test_default_thresholds_pass_trained_units_and_flag_the_fooling_unit(tmp_path):
    # the demo's compact ResNet, briefly trained; the demo's render settings (40 steps)
    train_series(tmp_path / "ck", steps=60, checkpoint_steps=[60], width=8, n_train=512, n_test=64, batch_size=32,
                 seed=0, progress=False)
    res = trust(CheckpointSeries(tmp_path / "ck"), UNITS, SyntheticShapes(128, size=32, seed=0, split="test"), k=6,
                seeds=2, steps=40, image_size=32, progress=False)
    verdicts = {label: rows[-1].verdict for label, rows in res.units.items()}
    assert sum(v == "trustworthy" for v in verdicts.values()) > len(UNITS) / 2, verdicts
    fooled = trust(CheckpointSeries.from_models({0: PlantedNet(fool=True)}), ["unit:0", "unit:1"], blocky_images(200),
                   k=8, seeds=2, steps=40, image_size=32, progress=False)
    bad, ok = fooled.units["unit:0"][0], fooled.units["unit:1"][0]
    assert not bad.trustworthy and "another path" in bad.verdict, bad.verdict
    assert ok.trustworthy, ok.verdict
