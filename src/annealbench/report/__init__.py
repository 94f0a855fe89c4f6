"""The report: the paper's tables and figures from a results store, with paired statistics and
the published numbers side by side.

Pure functions over the store's DataFrames (:func:`analyze`, the ``stats``, ``tables`` and
``figures`` modules) plus :func:`write_report` (files), :func:`load_analysis` (store ->
DataFrames) and :func:`report_store` (store -> files). A study with a validation split is
selected on validation and reported on the test set at the selected points; one without
follows the paper's protocol (selected and reported on the test set): see ``stats``.
:func:`stats.distance_to_paper` measures how far each row is from the paper's Tables 2 and 3
(the section "Distance to the paper", rendered by ``distance``).
"""

from __future__ import annotations

from annealbench.report.build import (
    DEFINITIONS,
    Analysis,
    ReportError,
    ReportFiles,
    analyze,
    load_analysis,
    report_store,
    write_report,
)

__all__ = [
    "DEFINITIONS",
    "Analysis",
    "ReportError",
    "ReportFiles",
    "analyze",
    "load_analysis",
    "report_store",
    "write_report",
]
