"""The one definition of every ranking metric (report section 3.1.1, and the retrieval-native ones
its section 4.5 asked for): a per-query value, reduced by the mean over the scorable queries.

Both ranking paths (``metrics.from_matches`` on a ranked match matrix, and the blockwise
``metrics.retrieval_metrics`` that never holds an N x N matrix) produce the same ``QueryStats`` and
call ``reduce``; the results schema reads the metric names and ranges from here. A new ranking
metric is one entry of ``MEASURES`` (from the statistics, or one more statistic both paths fill).
Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from benchmark.evaluation.scoring import KS, competition_score


@dataclass(frozen=True)
class QueryStats:
    """Per scorable query (one entry each): ``best``, the rank of its first same-identity item (inf:
    none ranked); ``precision_sum``, the sum of the precision at each same-identity item's rank;
    ``precision_sum_r``, that sum over the first R ranks only; ``hits_r``, same-identity items among
    the first R; ``n_rel`` = R, its same-identity items in the gallery."""

    best: np.ndarray
    precision_sum: np.ndarray
    precision_sum_r: np.ndarray
    hits_r: np.ndarray
    n_rel: np.ndarray


#: every ranking metric: its per-query value (Top-k; mAP; MAP@R and R-precision, Musgrave et al. 2020)
MEASURES: dict[str, Callable[[QueryStats], np.ndarray]] = {
    **{f"top{k}": (lambda s, k=k: s.best <= k) for k in KS},
    "map": lambda s: s.precision_sum / s.n_rel,
    "map_at_r": lambda s: s.precision_sum_r / s.n_rel,
    "r_precision": lambda s: s.hits_r / s.n_rel,
}
#: the per-split ranking metrics of a record: the measures, then the competition score
RANKING = (*MEASURES, "score")
#: their ranges (the results schema refuses a record outside them)
RANGES = {**dict.fromkeys(MEASURES, (0.0, 1.0)), "score": (0.0, 1000.0)}


def reduce(stats: QueryStats) -> dict[str, float]:
    """Every ranking metric (0.0 when no query is scorable) and the competition score."""
    out = {name: float(np.mean(fn(stats))) if len(stats.best) else 0.0 for name, fn in MEASURES.items()}
    out["score"] = competition_score({k: out[f"top{k}"] for k in KS})
    return out


def query_scores(best) -> np.ndarray:
    """Each query's own competition score (0-1000) from the rank of its first correct result."""
    best = np.asarray(best, dtype=np.float64)
    return competition_score({k: (best <= k).astype(np.float64) for k in KS})
