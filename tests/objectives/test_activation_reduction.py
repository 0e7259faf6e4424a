"""objectives.channel(reduction=...): the CLI's --aggregation sum as a library objective."""

import pytest
import torch

from devvis import objectives as O
from devvis.errors import ObjectiveError
from devvis.hooks import Activations


def test_sum_is_mean_times_positions_and_bad_reduction_is_named():
    t = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    acts = Activations({"l": t})
    mean = O.channel("l", 1)(acts)
    total = O.channel("l", 1, reduction="sum")(acts)
    assert torch.allclose(total, mean * 20) and torch.allclose(total, t[:, 1].sum(dim=(1, 2)))
    with pytest.raises(ObjectiveError, match="'max'.*mean, sum"):
        O.channel("l", 1, reduction="max")
