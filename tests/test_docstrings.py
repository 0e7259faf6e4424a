"""Every docstring example in devvis runs and prints what it says (the examples are the API's first documentation)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import pytest

import devvis

#: optional extras: a module that needs one of them is skipped, with the reason, where it is not installed
OPTIONAL = {"timm", "submitit"}

MODULES = sorted(m.name for m in pkgutil.walk_packages(devvis.__path__, "devvis."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name in OPTIONAL:
            pytest.skip(f"{name} needs the optional {e.name}")
        raise
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # examples may show unhealthy estimates on purpose
        for test in tests:
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed (output above)"


def test_the_docstring_examples_are_found():
    """The finder sees the examples (a broken walk would pass every test above by finding none)."""
    from devvis.slt import trajectory

    assert len(MODULES) > 50
    found = [t for t in doctest.DocTestFinder().find(trajectory) if t.examples]
    assert any(t.name.endswith("display_range") for t in found)
