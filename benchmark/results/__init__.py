"""The results layer, torch-free: what a run record holds (``schema``), its one reader/writer
(``record.RunRecord``), a folder of records as one table (``store``) and seed aggregation and
statistics over it (``stats``). ``choose``, ``report``, ``sweep`` and the W&B import all read
results through it; importing it (or them) never imports torch (a test)."""

from benchmark.results.record import RecordError, RunRecord
from benchmark.results.store import load

__all__ = ["RecordError", "RunRecord", "load"]
