"""Dataset examples and trust metrics: what natural images drive a unit, and how far its picture can be trusted.

* :func:`dataset_examples` — each unit's top-k natural images and their receptive-field crops at
  every checkpoint, from an image folder, a tensor, a Dataset or a DataLoader;
* :func:`receptive_field` — a layer's receptive fields, measured by gradient support;
* :func:`top_k_examples` — one unit's top-k examples and how they change (also in
  :mod:`devvis.longitudinal`);

Definitions of every number: ``docs/trust.md``.
"""

from devvis.trust.examples import (DatasetExamples, TopKExamples, UnitExamples, dataset_examples, parse_units,
                                   top_k_examples, unit_label)
from devvis.trust.receptive import ReceptiveField, receptive_field

__all__ = ["dataset_examples", "DatasetExamples", "UnitExamples", "top_k_examples", "TopKExamples", "parse_units",
           "unit_label", "receptive_field", "ReceptiveField"]
