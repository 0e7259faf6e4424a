"""Every script in examples/ and every python block of the README runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.py"))


def _env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # run against the installed package
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path, env=_env())
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip(), "examples print what they did"


def _readme_blocks(lang):
    text = (REPO / "README.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_readme_python_blocks_run(tmp_path):
    blocks = _readme_blocks("python")
    assert blocks, "README has python examples"
    for i, code in enumerate(blocks):
        f = tmp_path / f"block{i}.py"
        f.write_text(code)
        out = subprocess.run([sys.executable, str(f)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                             env=_env())
        assert out.returncode == 0, f"README python block {i} failed:\n{code}\n{out.stderr[-3000:]}"


def test_readme_cli_tour_runs(tmp_path):
    """The README's bash blocks run as written (the `devvis` of this environment on PATH)."""
    blocks = _readme_blocks("bash")
    assert blocks, "README has a command-line tour"
    env = _env()
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for i, code in enumerate(blocks):
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", code], capture_output=True, text=True, timeout=900,
                             cwd=tmp_path, env=env)
        assert out.returncode == 0, f"README bash block {i} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    # what the tour wrote
    for f in ("results/manifest.json", "results/grid.png", "results/report.html", "results/slt/llc_trajectory.json",
              "results/longitudinal/track.json"):
        assert (tmp_path / f).is_file(), f
    assert list((tmp_path / "results" / "circuits").glob("*.png"))
    assert len(list((tmp_path / "results").glob("step_*/layer_layer2.0_channel_2_average-0.jpg"))) >= 5
