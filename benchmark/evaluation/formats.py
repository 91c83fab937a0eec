"""The shapes a competition submission file takes, and the check a team runs before uploading one.

The course competition's server read the *envelope*::

    {"groupname": "<team>", "images": {"<query file name>": ["<gallery file name>", ... k names]}}

with bare file names and exactly k (10) distinct gallery files per query. Two other shapes exist:
the bare ``{query: [gallery, ...]}`` *mapping* (this suite's ``submit`` without ``--groupname``, and
what ``score-submission`` scores), and the student report's own *list* of
``{"filename": "test_folder/query_images/x.jpg", "gallery_images": [...]}`` objects with
folder-prefixed paths and k=2 — the likely cause of its 37/1000. ``read`` turns any of them into the
mapping and says which it was; ``problems`` lists, without any truth file, everything that would
make the server read a file otherwise than intended. Torch-free.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from benchmark.params import ConfigError


class InputError(ConfigError):
    """Unusable submission or scoring input (a ConfigError, so the CLI reports it as a usage error)."""

#: the server's envelope keys
ENVELOPE = ("groupname", "images")
#: gallery files per query the server scored (Top-10)
K = 10


def load(path: Path | str):
    """The JSON document of ``path``. Any reason it cannot be used is an InputError naming the file,
    a key given twice in one object too: ``json`` would keep the last silently (a query answered
    twice, a gallery file with two identities)."""
    def unique(pairs):
        twice = [k for k, n in Counter(k for k, _ in pairs).items() if n > 1]
        if twice:
            raise InputError(f"{path}: the key {json.dumps(twice[0])} is given twice; JSON keeps only the last, "
                             "give it once")
        return dict(pairs)

    try:
        return json.loads(Path(path).read_text(), object_pairs_hook=unique)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder; give the JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None


def read(doc) -> tuple[dict, str]:
    """``(the {query: [gallery, ...]} mapping, its form: envelope | mapping | list)`` of a submission
    document; a document of none of these shapes is a ConfigError saying what was expected."""
    if isinstance(doc, dict) and set(doc) == set(ENVELOPE) and isinstance(doc["images"], dict):
        return doc["images"], "envelope"
    if isinstance(doc, dict):
        return doc, "mapping"
    if isinstance(doc, list) and all(isinstance(e, dict) and {"filename", "gallery_images"} <= set(e) for e in doc):
        out: dict = {}
        for e in doc:
            out.setdefault(e["filename"], e["gallery_images"])
        return out, "list"
    raise InputError('a submission must look like {"groupname": NAME, "images": {query file name: [gallery file '
                     'names]}} (the server\'s form) or {query file name: [gallery file names]}')


def _named(names, n: int = 3) -> str:
    names = sorted(map(str, names))
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


def problems(doc, queries: list[str], gallery: list[str], k: int = K) -> list[str]:
    """One line per way the server would read ``doc`` otherwise than intended, for the query and
    gallery file names of the test folders: not the envelope (or a list instead of a mapping), a
    missing group name, folder-prefixed or absolute paths, names not in the folders, missing or
    extra queries, fewer or more than ``k`` or repeated gallery names, a query answered with itself."""
    try:
        mapping, form = read(doc)
    except InputError as exc:
        return [str(exc)]
    out = []
    if form == "list":
        out.append("a list of {filename, gallery_images} objects instead of a mapping: the server reads "
                   '{"groupname": NAME, "images": {query file name: [gallery file names]}}')
    elif form == "mapping":
        out.append('no envelope: the server reads {"groupname": NAME, "images": {...}} (benchmark submit --groupname)')
    elif not isinstance(doc["groupname"], str) or not doc["groupname"].strip():
        out.append(f"groupname {doc['groupname']!r} is not a team name")
    entries = [(q, g) for q, ranked in mapping.items() for g in (ranked if isinstance(ranked, list) else [])]
    pathy = sorted({str(n) for n in [*mapping, *(g for _, g in entries)] if "/" in str(n) or "\\" in str(n)})
    if pathy:
        out.append(f"{len(pathy)} names carry folders or absolute paths (e.g. {pathy[0]}): the server matches bare "
                   "file names; write Path(name).name")
    bad_lists = [q for q, ranked in mapping.items() if not isinstance(ranked, list)
                 or not all(isinstance(g, str) for g in ranked)]
    if bad_lists:
        out.append(f"{len(bad_lists)} queries are not answered with a list of file names: {_named(bad_lists)}")
    names = {Path(str(n)).name for n in mapping}
    missing, extra = set(queries) - names, names - set(queries)
    if missing:
        out.append(f"{len(missing)} of {len(queries)} queries are not answered (each counts as wrong): {_named(missing)}")
    if extra:
        out.append(f"{len(extra)} answered names are not in the query folder: {_named(extra)}")
    unknown = {Path(g).name for _, g in entries if isinstance(g, str)} - set(gallery)
    if unknown:
        out.append(f"{len(unknown)} gallery names are not in the gallery folder: {_named(unknown)}")
    lists = {q: ranked for q, ranked in mapping.items() if isinstance(ranked, list)}
    wrong_k = Counter(len(r) for r in lists.values() if len(r) != k)
    if wrong_k:
        sizes = ", ".join(f"{n} with {size}" for size, n in sorted(wrong_k.items()))
        out.append(f"queries must list exactly k={k} gallery names: {sizes}")
    repeated = [q for q, r in lists.items() if len(set(map(str, r))) < len(r)]
    if repeated:
        out.append(f"{len(repeated)} queries list a gallery name twice (the server needs {k} distinct): "
                   f"{_named(repeated)}")
    itself = [q for q, r in lists.items() if Path(str(q)).name in {Path(str(g)).name for g in r}]
    if itself:
        out.append(f"{len(itself)} queries are answered with their own file name: {_named(itself)}")
    return out


def envelope(groupname: str, mapping: dict) -> dict:
    """The server's form of a ``{query: [gallery, ...]}`` mapping."""
    if not groupname.strip():
        raise InputError("--groupname must name the team (the server files the submission under it)")
    return {"groupname": groupname, "images": mapping}
