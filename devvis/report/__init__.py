"""``devvis report``: a static site over a results folder, the page a researcher keeps open while studying a run.

:func:`write_report` writes the overview page (``report.html``: model, data, checkpoints, stages, the LLC
with its health verdicts, loss, and per layer a summary and preview) and beside it ``report_files/`` with a
page per layer (a grid of all units with settle steps and trust verdicts, sortable and filterable) and per
unit (its visualization at each checkpoint with a step slider, dataset examples at the same checkpoint,
curves with the current step marked, trust metrics, and the units it is built from and feeds). Failed
checkpoints and units are shown in place with their reason. Every page reads without JavaScript; the
script adds the slider, sorting and deep links (``unit-layer2.0-3.html#step=64``, or
``report.html#/unit/layer2.0:3/step/64``). See ``docs/report.md``.

Modules: :mod:`~devvis.report.data` (reads the results folder), :mod:`~devvis.report.site` (writes the
site), :mod:`~devvis.report.overview`, :mod:`~devvis.report.layer`, :mod:`~devvis.report.unit` (the
pages), :mod:`~devvis.report.links` (paths and page shell), :mod:`~devvis.report.svg` (charts),
:mod:`~devvis.report.thumbs` (thumbnails).

>>> import tempfile
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> page = write_report(d)
>>> page.name, "<html" in page.read_text(), (d / "report_files" / "report.js").is_file()
('report.html', True, True)
"""

from devvis.report.site import write_report

__all__ = ["write_report"]
