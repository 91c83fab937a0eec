"""Scoring a competition submission (report section 1.1), torch-free: ``benchmark score-submission``
starts in a fraction of a second and the metric's weights are defined once, here.

``score_submission``: Top-1/5/10 and the competition score (600 Top-1 + 300 Top-5 + 100 Top-10,
0-1000) against a ``truth.json``::

    {"queries": {"<query file name>": "<identity>", ...},
     "gallery": {"<gallery file name>": "<identity>", ...}}

A query counts for Top-k when any of its first k gallery names has the query's identity. Every
query of the truth is in the denominator: a query missing from the submission counts as wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.params import ConfigError

KS = (1, 5, 10)
SCORE_WEIGHTS = {1: 600, 5: 300, 10: 100}


class InputError(ConfigError):
    """Unusable submission or scoring input (a ConfigError, so the CLI reports it as a usage error)."""


def competition_score(top: dict[int, float]) -> float:
    return sum(w * top[k] for k, w in SCORE_WEIGHTS.items())


def _check_truth(truth: dict) -> tuple[dict, dict]:
    if not isinstance(truth, dict) or not isinstance(truth.get("queries"), dict) \
            or not isinstance(truth.get("gallery"), dict):
        raise InputError('truth must look like {"queries": {file name: identity}, '
                         '"gallery": {file name: identity}}')
    return truth["queries"], truth["gallery"]


def score_submission(submission: dict, truth: dict) -> dict:
    """Top-1/5/10 (fractions in [0, 1]) and the competition score (0-1000) of ``submission``.

    Every query of ``truth`` counts; one missing from the submission counts as wrong
    (``n_missing``). Only the first 10 names of a list can count. Query or gallery names the
    truth does not know are an error (a submission for another folder, or a typo).
    ``n_unanswerable``: truth queries whose identity has no gallery image (wrong whatever is sent).
    """
    queries, gallery = _check_truth(truth)
    if not isinstance(submission, dict):
        raise InputError("submission must be a JSON object {query file name: [gallery file names]}")
    unknown_q = sorted(q for q in submission if q not in queries)
    if unknown_q:
        raise InputError(f"{len(unknown_q)} submission queries are not in the truth's queries, "
                         f"e.g. {', '.join(unknown_q[:5])}")
    unknown_g, bad = set(), []
    for q, ranked in submission.items():
        if not isinstance(ranked, list) or not all(isinstance(g, str) for g in ranked):
            bad.append(q)
            continue
        unknown_g.update(g for g in ranked if g not in gallery)
    if bad:
        raise InputError(f"{len(bad)} submission entries are not lists of gallery file names, e.g. {bad[0]!r}")
    if unknown_g:
        shown = ", ".join(sorted(unknown_g)[:5])
        raise InputError(f"the submission names {len(unknown_g)} gallery files the truth does not know, "
                         f"e.g. {shown}")
    gallery_ids = set(gallery.values())
    hits = {k: 0 for k in KS}
    for q, identity in queries.items():
        ranked = submission.get(q, [])
        first = [gallery[g] == identity for g in ranked[:max(KS)]]
        for k in KS:
            hits[k] += any(first[:k])
    n = len(queries)
    top = {k: hits[k] / n if n else 0.0 for k in KS}
    return {**{f"top{k}": v for k, v in top.items()}, "score": competition_score(top),
            "n_queries": n, "n_submitted": len(submission), "n_missing": sum(q not in submission for q in queries),
            "n_short": sum(len(submission[q]) < max(KS) for q in queries if q in submission),
            "n_unanswerable": sum(i not in gallery_ids for i in queries.values())}


def score_files(submission_path: Path | str, truth_path: Path | str) -> dict:
    """``score_submission`` of two JSON files; unreadable JSON is an InputError naming the file."""
    docs = []
    for path in (submission_path, truth_path):
        try:
            docs.append(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise InputError(f"{path} does not exist") from None
        except IsADirectoryError:
            raise InputError(f"{path} is a folder; give the JSON file") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} is not valid JSON: {exc}") from None
    return score_submission(*docs)
