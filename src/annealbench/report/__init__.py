"""The report: the paper's tables and figures from a results store, with paired statistics and
the published numbers side by side.

Pure functions over the store's DataFrames (:func:`analyze`, the ``stats``, ``tables`` and
``figures`` modules) plus :func:`write_report` (files) and :func:`report_store` (store -> files).
"""

from __future__ import annotations

from annealbench.report.build import (
    DEFINITIONS,
    Analysis,
    ReportError,
    ReportFiles,
    analyze,
    report_store,
    write_report,
)

__all__ = [
    "DEFINITIONS",
    "Analysis",
    "ReportError",
    "ReportFiles",
    "analyze",
    "report_store",
    "write_report",
]
