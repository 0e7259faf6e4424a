"""transforms.standard(): the one builder of the robustness stack, also behind the CLI's flags."""

import torch

from devvis import transforms as T
from devvis.runs import RunSettings
from devvis.runs.unit import unit_transforms


def _apply(t, seed=3):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return t(x, generator=torch.Generator().manual_seed(seed))


def test_cli_defaults_are_the_standard_stack_and_switches_drop_parts():
    s = RunSettings(checkpoint_paths=["unused"], output_path="unused")
    assert torch.equal(_apply(unit_transforms(s)), _apply(T.standard()))
    assert len(T.standard(fused=False)) == 5 and len(T.standard(blur=0.5, fused=False)) == 6
    assert len(T.standard(fused=True)) == 1 and len(T.standard(blur=0.5, fused=True)) == 2
    for fused in (False, True):
        assert len(T.standard(pad_px=0, jitter_px=0, scale=(1.0, 1.0), degrees=0, fused=fused)) == 0
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(T.standard(pad_px=0, jitter_px=0, scale=(1.0, 1.0), degrees=0)(x), x)
