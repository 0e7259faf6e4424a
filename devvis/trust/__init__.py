"""Dataset examples and trust metrics: what natural images drive a unit, and how far its picture can be trusted.

* :func:`dataset_examples` — each unit's top-k natural images and their receptive-field crops at
  every checkpoint, from an image folder, a tensor, a Dataset or a DataLoader;
* :func:`receptive_field` — a layer's receptive fields, measured by gradient support;
* :func:`trust` — five trust metrics per unit per checkpoint (natural-max ratio, seed stability,
  transform robustness, path similarity, spectral naturalness) and a verdict, ``trustworthy`` or
  ``suspicious: reason``;
* :func:`top_k_examples` — one unit's top-k examples and how they change (also in
  :mod:`devvis.longitudinal`);

Definitions of every number: ``docs/trust.md``.
"""

from devvis.trust.examples import (DatasetExamples, TopKExamples, UnitExamples, dataset_examples, parse_units,
                                   top_k_examples, unit_label)
from devvis.trust.receptive import ReceptiveField, receptive_field
from devvis.trust.check import Thresholds, TrustResult, UnitTrust, trust
from devvis.trust.metrics import PathSimilarity, default_path_layers, path_similarity

__all__ = ["dataset_examples", "DatasetExamples", "UnitExamples", "top_k_examples", "TopKExamples", "parse_units",
           "unit_label", "receptive_field", "ReceptiveField", "trust", "TrustResult", "UnitTrust", "Thresholds",
           "PathSimilarity", "path_similarity", "default_path_layers"]
