"""Synthetic data for demos and tests, and probe images for activations.

>>> from devvis.data import SyntheticShapes, CLASSES
>>> len(SyntheticShapes(n=10)), len(CLASSES)
(10, 12)
"""

from devvis.data.synthetic import (CLASSES, CURRICULUM_PHASES, SPLITS, Curriculum, SyntheticShapes, make_loaders,
                                   num_classes, probe_batch, render_sample)

__all__ = ["CLASSES", "SPLITS", "SyntheticShapes", "make_loaders", "num_classes", "probe_batch", "render_sample",
           "Curriculum", "CURRICULUM_PHASES"]
