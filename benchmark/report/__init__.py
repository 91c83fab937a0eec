"""The ablation report: the student report's Tables 1-2 and Figures 1-6 regenerated from a results
set, with seed confidence intervals, a protocol audit and the published numbers beside ours.

Entry point: ``build_report(store.load(RESULTS_DIR), OUT_DIR)`` -> ``OUT_DIR/report.md``.

The names below are imported on first use, so that importing ``benchmark.report`` costs
nothing; matplotlib and seaborn are only needed by ``build`` and ``figures``. Seed aggregation and
statistics live in ``benchmark.results.stats`` (shared with ``choose``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmark.report.build import build_report
    from benchmark.report.common import palette
    from benchmark.report.results import ReportData, prepare

#: public name -> the submodule that defines it
_EXPORTS = {"build_report": "build", "palette": "common", "ReportData": "results", "prepare": "results"}

__all__ = ["build_report", "prepare", "ReportData", "palette"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
