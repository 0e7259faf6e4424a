"""File names of rendered components: one function, used by the CLI and ``render_series`` alike.

>>> component_stem("layer3.1", 7)
'layer_layer3.1_channel_7_average-0'
"""

from __future__ import annotations

import re


def component_stem(layer: str, channel: int | str, aggregation: str = "average", j: int = 0) -> str:
    """File stem of one component's image: ``layer_{layer}_channel_{c}_{aggregation}-{j}``."""
    safe = re.sub(r"[^A-Za-z0-9._\-\[\]]", "_", layer)
    return f"layer_{safe}_channel_{channel}_{aggregation}-{j}"
