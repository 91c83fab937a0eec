"""The ablation report: the student report's Tables 1-2 and Figures 1-6 regenerated from a results
set, with seed confidence intervals, a protocol audit and the published numbers beside ours.

Entry point: ``build_report(store.load(RESULTS_DIR), OUT_DIR)`` -> ``OUT_DIR/report.md``.

The names below are imported on first use, so that ``benchmark.report.common`` and
``benchmark.report.stats`` (shared with ``benchmark.choose``) can be imported without matplotlib
and seaborn, which only ``build`` and ``figures`` need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmark.report.build import build_report
    from benchmark.report.common import Unsupported, palette
    from benchmark.report.results import ReportData, prepare
    from benchmark.report.stats import SEPARABILITY_RULE, aggregate, protocol_audit, separability, t_ci

#: public name -> the submodule that defines it
_EXPORTS = {"build_report": "build", "Unsupported": "common", "palette": "common", "ReportData": "results",
            "prepare": "results", "SEPARABILITY_RULE": "stats", "aggregate": "stats",
            "protocol_audit": "stats", "separability": "stats", "t_ci": "stats"}

__all__ = ["build_report", "prepare", "ReportData", "aggregate", "t_ci", "separability", "protocol_audit",
           "SEPARABILITY_RULE", "palette", "Unsupported"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
