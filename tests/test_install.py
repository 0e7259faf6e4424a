"""The tests run against the installed package, and its public face is complete."""

import subprocess
import sys
from pathlib import Path

import devvis


def test_imports_installed_package_not_source_tree():
    here = Path(__file__).resolve().parents[1]
    pkg = Path(devvis.__file__).resolve()
    assert here / "devvis" not in pkg.parents and "site-packages" in str(pkg), pkg


def test_public_api_from_top_level():
    from devvis import objectives, param, render, transforms  # noqa: F401

    for name in ("render", "objectives", "param", "transforms", "list_layers", "__version__", "load_model",
                 "longitudinal", "circuits", "slt"):
        assert hasattr(devvis, name), name


def test_console_script_help():
    exe = Path(sys.executable).with_name("devvis")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "visualize" in out.stdout
