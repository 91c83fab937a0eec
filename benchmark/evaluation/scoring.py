"""Scoring a competition submission (report section 1.1), torch-free: ``benchmark score-submission``
starts in a fraction of a second and the metric's weights are defined once, here.

``score_submission``: Top-1/5/10 and the competition score (600 Top-1 + 300 Top-5 + 100 Top-10,
0-1000) against a ``truth.json``::

    {"queries": {"<query file name>": "<identity>", ...},
     "gallery": {"<gallery file name>": "<identity>", ...}}

A query counts for Top-k when any of its first k gallery names has the query's identity. Every
query of the truth is in the denominator: a query missing from the submission counts as wrong; a
submission that answers none of them (``{}``, an empty ``images``, only empty lists) is refused, not
scored 0.

Only well-formed inputs are scored (``_check_truth``, ``_check_submission``, ``formats.load``):
anything else is an ``InputError`` naming the file, the entry and the fix, never a score.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

from benchmark.evaluation.formats import InputError, groupname_problem, load, problems, read

KS = (1, 5, 10)
SCORE_WEIGHTS = {1: 600, 5: 300, 10: 100}


def competition_score(top: dict[int, float]) -> float:
    return sum(w * top[k] for k, w in SCORE_WEIGHTS.items())


def _shown(value) -> str:
    """``value`` as it is written in the JSON file (``null``, ``["A"]``), on one short line."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_name(name) -> bool:
    return isinstance(name, str) and bool(name.strip())


def _is_identity(identity) -> bool:
    """A non-blank string, or an integer (organizers often number people); not a bool, which Python
    counts as an int but no truth means as an identity, and not a float, whose 1 == 1.0 is a trap."""
    return _is_name(identity) or (isinstance(identity, int) and not isinstance(identity, bool))


def _check_truth(truth, source: str = "the truth") -> tuple[dict, dict]:
    """(queries, gallery) of a truth that can be scored, else an InputError naming ``source``.

    A malformed truth must not score: an empty ``queries`` scored 0.0, ``null`` identities matched
    each other (1000.0), list identities raised a TypeError naming no file, a file that is both a
    query and a gallery image let a query answered with itself score 1000. So every entry is a
    file name -> identity (``_is_identity``), of one kind (``"7"`` never equals ``7``), both parts
    are non-empty and share no file, and at least one query's identity has a gallery image.
    """
    if not isinstance(truth, dict) or not isinstance(truth.get("queries"), dict) \
            or not isinstance(truth.get("gallery"), dict):
        raise InputError(f'{source}: a truth must look like {{"queries": {{file name: identity}}, '
                         '"gallery": {file name: identity}}')
    kinds: dict[type, str] = {}
    for part in ("queries", "gallery"):
        if not truth[part]:
            raise InputError(f'{source}: "{part}" is empty; give each {part} file name with its identity')
        for name, identity in truth[part].items():
            if not _is_name(name):
                raise InputError(f'{source}: "{part}" has the file name {_shown(name)}; '
                                 "give each file by its non-empty name")
            if not _is_identity(identity):
                raise InputError(f'{source}: "{part}" entry {_shown(name)}: {_shown(identity)} is not an identity; '
                                 "give a non-empty string (or an integer)")
            kinds.setdefault(type(identity), f"{_shown(name)}: {_shown(identity)}")
    if len(kinds) > 1:
        raise InputError(f"{source}: identities mix strings and integers ({', '.join(kinds.values())}), and "
                         '"7" never equals 7; write every identity the same way')
    queries, gallery = truth["queries"], truth["gallery"]
    both = sorted(set(queries) & set(gallery))
    if both:
        shown = ", ".join(_shown(n) for n in both[:5]) + (f" ... ({len(both)} in all)" if len(both) > 5 else "")
        raise InputError(f"{source}: {len(both)} file(s) are both in \"queries\" and in \"gallery\" ({shown}): a query "
                         "answered with itself would count as found; list each file in one of them only")
    if not set(queries.values()) & set(gallery.values()):
        raise InputError(f"{source}: no query's identity has a gallery image, so nothing is scorable; "
                         "queries and gallery must share identities (is this the truth of another split?)")
    return queries, gallery


def _check_submission(submission, queries: dict, gallery: dict, source: str = "the submission") -> None:
    """InputError naming ``source`` unless ``submission`` maps truth queries to lists of distinct
    truth gallery names: the competition's server expects k distinct files per query, and a file
    given twice would take two of the k places."""
    if not isinstance(submission, dict):
        raise InputError(f"{source}: a submission must be a JSON object {{query file name: [gallery file names]}}")
    unknown_q = sorted(map(str, (q for q in submission if q not in queries)))
    if unknown_q:
        raise InputError(f"{source}: {len(unknown_q)} submission queries are not in the truth's queries, "
                         f"e.g. {', '.join(unknown_q[:5])}")
    bad = [q for q, ranked in submission.items()
           if not isinstance(ranked, list) or not all(isinstance(g, str) for g in ranked)]
    if bad:
        raise InputError(f"{source}: {len(bad)} submission entries are not lists of gallery file names, "
                         f"e.g. {_shown(bad[0])}: {_shown(submission[bad[0]])}")
    unknown_g = set()
    for q, ranked in submission.items():
        twice = [g for g, n in Counter(ranked).items() if n > 1]
        if twice:
            raise InputError(f"{source}: query {_shown(q)} lists {_shown(twice[0])} more than once; "
                             "give k distinct gallery files, best first")
        unknown_g.update(g for g in ranked if g not in gallery)
    if unknown_g:
        shown = ", ".join(sorted(unknown_g)[:5])
        raise InputError(f"{source}: the submission names {len(unknown_g)} gallery files the truth does not know, "
                         f"e.g. {shown}")


def score_submission(submission: dict, truth: dict,
                     sources: tuple[str, str] = ("the submission", "the truth")) -> dict:
    """Top-1/5/10 (fractions in [0, 1]) and the competition score (0-1000) of ``submission``.

    Every query of ``truth`` counts; one missing from the submission counts as wrong
    (``n_missing``), but a submission answering none is an error. Only the first 10 names of a list can count. Query or gallery names the
    truth does not know are an error (a submission for another folder, or a typo), and so is a
    malformed truth. ``sources``: how errors name the submission and the truth (their files).
    ``n_unanswerable``: truth queries whose identity has no gallery image (wrong whatever is sent).
    """
    queries, gallery = _check_truth(truth, sources[1])
    _check_submission(submission, queries, gallery, sources[0])
    if not any(submission.get(q) for q in queries):  # {}, "images": {}, or only empty lists: nothing to score
        raise InputError(f"{sources[0]}: answers none of the truth's {len(queries)} queries; give each query file "
                         "name with its ranked gallery file names, {query: [gallery, ...]}")
    gallery_ids = set(gallery.values())
    hits = {k: 0 for k in KS}
    for q, identity in queries.items():
        ranked = submission.get(q, [])
        first = [gallery[g] == identity for g in ranked[:max(KS)]]
        for k in KS:
            hits[k] += any(first[:k])
    n = len(queries)
    top = {k: hits[k] / n for k in KS}
    return {**{f"top{k}": v for k, v in top.items()}, "score": competition_score(top),
            "n_queries": n, "n_submitted": len(submission), "n_missing": sum(q not in submission for q in queries),
            "n_short": sum(len(submission[q]) < max(KS) for q in queries if q in submission),
            "n_unanswerable": sum(i not in gallery_ids for i in queries.values())}


def score_files(submission_path: Path | str, truth_path: Path | str) -> dict:
    """``score_submission`` of two JSON files, the submission in the server's envelope or as the bare
    mapping (``form`` says which was read; the report's list form, and an envelope attempt that is not
    the envelope, are refused with what to write instead); every error names the file it is about. A
    group name the server would not take (``formats.groupname_problem``) does not change the score: it
    is a warning (``check-submission`` counts it as a problem)."""
    doc = load(submission_path)
    try:
        submission, form = read(doc)
    except InputError as exc:
        raise InputError(f"{submission_path}: {exc}") from None
    if form == "list":
        raise InputError(f"{submission_path}: {problems(doc, [], [])[0]}")
    why = groupname_problem(doc["groupname"]) if form == "envelope" else None
    if why:
        warnings.warn(f"{submission_path}: groupname {why} (scored all the same)", stacklevel=2)
    return score_submission(submission, load(truth_path), sources=(str(submission_path), str(truth_path))) \
        | {"form": form}
