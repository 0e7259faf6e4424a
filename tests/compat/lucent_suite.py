"""Run Lucent's own optvis suite on Lucent 0.1.8 and on devvis.compat.lucent; list what passes only on Lucent.

The check behind the README's "zero tests that pass on Lucent and fail on devvis" (docs/lucent-suite.md),
as one command::

    benchmarks/setup_lucent.sh                       # Lucent 0.1.8 into benchmarks/.deps
    .venv/bin/python tests/compat/lucent_suite.py LUCENT_CHECKOUT [--work DIR]

``LUCENT_CHECKOUT`` is a checkout of greentfrapp/lucent (its ``tests/optvis``; Lucent's tests are not
in its wheel). Two copies of ``tests/optvis`` are made under ``--work``, each with a ``conftest.py``
that loads Lucent through ``benchmarks/lucent_shim.py``; the devvis copy changes only import lines
(:func:`rewrite_imports`). Both run with ``pytest -rA``; the script prints the counts and every test
that passes on Lucent and not on devvis, and exits 1 when there is one, 2 when Lucent's own run passed
nothing (not settled), 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Import lines of Lucent's suite and what the devvis copy says instead (the model stays Lucent's).
IMPORTS = (
    (r"^from lucent\.optvis\.param\.gan import", "from devvis.compat.lucent.optvis.param.gan import"),
    (r"^from lucent\.optvis import", "from devvis.compat.lucent.optvis import"),
    (r"^from lucent\.util import", "from devvis.compat.lucent.util import"),
)

#: The class named in test_mul_div_raises's expected message.
MESSAGE_CLASS = ("lucent.optvis.objectives.Objective", "devvis.compat.lucent.optvis.objectives.Objective")

CONFTEST = f"""import sys
sys.path.insert(0, {str(REPO / "benchmarks")!r})
from lucent_shim import load_lucent
_mods, _msg = load_lucent()
assert _mods is not None, _msg
"""

_RESULT = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)")


def rewrite_imports(text: str) -> str:
    """Lucent's test source with devvis's import lines (and the message's class); nothing else changes.

    >>> rewrite_imports("from lucent.optvis import render\\nfrom lucent.modelzoo import inceptionv1\\n")
    'from devvis.compat.lucent.optvis import render\\nfrom lucent.modelzoo import inceptionv1\\n'
    """
    for pattern, new in IMPORTS:
        text = re.sub(pattern, new, text, flags=re.MULTILINE)
    return text.replace(*MESSAGE_CLASS)


def parse_results(output: str) -> dict[str, str]:
    """``{test id: status}`` from the short summary of ``pytest -rA`` (a module that failed to import: its path)."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        m = _RESULT.match(line)
        if m:
            found[m.group(2)] = m.group(1)
    return found


def regressions(lucent: dict[str, str], devvis: dict[str, str]) -> list[str]:
    """Tests that pass on Lucent and do not pass on devvis (missing counts as not passing), sorted."""
    return sorted(t for t, s in lucent.items() if s == "PASSED" and devvis.get(t) != "PASSED")


def counts(results: dict[str, str]) -> dict[str, int]:
    """``{status: number of tests}`` (a module-level ERROR counts once)."""
    out: dict[str, int] = {}
    for s in results.values():
        out[s] = out.get(s, 0) + 1
    return out


def _copy(src: Path, dst: Path, devvis: bool) -> None:
    shutil.copytree(src, dst)
    for f in dst.rglob("*.py"):
        if devvis:
            f.write_text(rewrite_imports(f.read_text()))
    (dst / "conftest.py").write_text(CONFTEST)


def _run(suite_root: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
                           "--continue-on-collection-errors", "tests/optvis"], cwd=suite_root, env=env,
                          capture_output=True, text=True)
    (suite_root / "pytest.log").write_text(done.stdout + done.stderr)
    return parse_results(done.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lucent_checkout", type=Path, help="a checkout of greentfrapp/lucent (with tests/optvis)")
    p.add_argument("--work", type=Path, default=None, help="where the two copies go (default: a temporary folder)")
    args = p.parse_args(argv)
    src = args.lucent_checkout / "tests" / "optvis"
    if not src.is_dir():
        p.error(f"{src} is not a folder; give a checkout of greentfrapp/lucent")
    work = args.work or Path(tempfile.mkdtemp(prefix="lucent-suite-"))
    results = {}
    for name in ("lucent", "devvis"):
        root = work / name
        shutil.rmtree(root, ignore_errors=True)
        _copy(src, root / "tests" / "optvis", devvis=name == "devvis")
        results[name] = _run(root)
        print(f"{name:7s} {counts(results[name])}  (log: {root / 'pytest.log'})")
    if not counts(results["lucent"]).get("PASSED"):
        print("Lucent's own run passed nothing (is benchmarks/.deps set up?): the comparison is not settled")
        return 2
    bad = regressions(results["lucent"], results["devvis"])
    print(f"pass on Lucent, not on devvis: {len(bad)}")
    for t in bad:
        print(f"  {t}: {results['devvis'].get(t, 'not run')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
