"""tests/compat/lucent_suite.py, the runner of Lucent's own suite: its import rewrite, parsing and verdict."""

from __future__ import annotations

import pytest

from lucent_suite import counts, main, parse_results, regressions, rewrite_imports

LUCENT_SOURCE = '''from lucent.util import set_seed
from lucent.optvis import objectives, param, render
from lucent.optvis.param.gan import upconvGAN
from lucent.modelzoo import inceptionv1
    assert str(e) == "Received type <class 'lucent.optvis.objectives.Objective'>"
x = "from lucent.optvis import render"  # not an import line
'''


def test_rewrite_changes_only_import_lines_and_the_message_class():
    out = rewrite_imports(LUCENT_SOURCE).splitlines()
    assert out == [
        "from devvis.compat.lucent.util import set_seed",
        "from devvis.compat.lucent.optvis import objectives, param, render",
        "from devvis.compat.lucent.optvis.param.gan import upconvGAN",
        "from lucent.modelzoo import inceptionv1",  # the model under test stays Lucent's
        "    assert str(e) == \"Received type <class 'devvis.compat.lucent.optvis.objectives.Objective'>\"",
        'x = "from lucent.optvis import render"  # not an import line',
    ]


SUMMARY = """....F
=========================== short test summary info ============================
PASSED tests/optvis/test_render.py::test_render_vis
PASSED tests/optvis/test_transform.py::test_pad[2]
FAILED tests/optvis/test_objectives.py::test_linear_transform - assert tensor(0.) > 0
ERROR tests/optvis/param/test_gan.py
2 passed, 1 failed, 1 error in 3.2s
"""


def test_parse_and_verdict_on_a_planted_summary():
    lucent = parse_results(SUMMARY)
    assert lucent == {"tests/optvis/test_render.py::test_render_vis": "PASSED",
                      "tests/optvis/test_transform.py::test_pad[2]": "PASSED",
                      "tests/optvis/test_objectives.py::test_linear_transform": "FAILED",
                      "tests/optvis/param/test_gan.py": "ERROR"}
    assert counts(lucent) == {"PASSED": 2, "FAILED": 1, "ERROR": 1}
    devvis = dict(lucent, **{"tests/optvis/test_transform.py::test_pad[2]": "FAILED"})
    del devvis["tests/optvis/test_render.py::test_render_vis"]  # not run counts as not passing
    assert regressions(lucent, devvis) == ["tests/optvis/test_render.py::test_render_vis",
                                           "tests/optvis/test_transform.py::test_pad[2]"]
    assert regressions(lucent, lucent) == []


def test_main_rejects_a_folder_without_lucents_tests(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path)])
    assert e.value.code == 2 and "greentfrapp/lucent" in capsys.readouterr().err
