"""Simulated LLC draws for the health tests: ``benchmarks/llc_extension_rates.py`` loaded as a module (its AR(1)
chains and the extension's rates), so the tests and the benchmark draw the same chains."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "llc_extension_rates.py"
_spec = importlib.util.spec_from_file_location("llc_extension_rates", _PATH)
rates_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rates_module)

ar1 = rates_module.ar1
rates = rates_module.rates
