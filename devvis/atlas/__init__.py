"""Activation atlases (Carter et al. 2019), and the same atlas layout at every checkpoint of a series.

>>> from devvis.atlas import activation_atlas, atlas_series
"""

from devvis.atlas.atlas import Atlas, AtlasSeries, activation_atlas, atlas_series, render_cells
from devvis.atlas.layout import (
    METHODS,
    Cell,
    Samples,
    activations_at,
    grid_cells,
    mean_directions,
    reduce_2d,
    sample_activations,
)

__all__ = [
    "activation_atlas", "atlas_series", "Atlas", "AtlasSeries", "render_cells", "sample_activations",
    "activations_at", "reduce_2d", "grid_cells", "mean_directions", "Samples", "Cell", "METHODS",
]
