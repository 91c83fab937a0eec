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

A top-level object with a ``groupname`` or ``images`` key (in any case) is an *envelope attempt*, never
a bare mapping: its problems are said as the envelope's (``envelope_problems``: a key spelled
``groupName``, an unexpected key, ``images`` that is not a mapping, a group name that is not one),
not as queries called "groupname" and "images". ``groupname_problem`` is the one rule for a team name,
shared by ``submit --groupname`` (``envelope``), ``check-submission`` and ``score-submission``.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from pathlib import Path

from benchmark.params import ConfigError


class InputError(ConfigError):
    """Unusable submission or scoring input (a ConfigError, so the CLI reports it as a usage error)."""

#: the server's envelope keys
ENVELOPE = ("groupname", "images")
#: gallery files per query the server scored (Top-10)
K = 10
#: the longest team name taken (a name is a label on a leaderboard, not a document)
GROUPNAME_MAX = 100
#: bidirectional-text controls: they make a name display as another (U+202E shows "7maet" as "team7")
BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def groupname_problem(name) -> str | None:
    """Why ``name`` cannot be the team name the server files a submission under (None: it can), as the
    rest of a sentence that starts with the name's source (``groupname``, ``--groupname``): not a
    string, blank, holding a control or line-break character or a bidi override, or longer than
    ``GROUPNAME_MAX`` characters."""
    example = "e.g. --groupname team7"
    if not isinstance(name, str):
        return f"{json.dumps(name, default=repr)} is not a team name: give a string, {example}"
    if not name.strip():
        return f"{name!r} is empty: name the team (the server files the submission under it), {example}"
    odd = [c for c in name if c in BIDI or unicodedata.category(c) in ("Cc", "Zl", "Zp")]
    if odd:
        what = "a bidi control" if odd[0] in BIDI else "a control or line-break"
        return (f"{name[:40]!r} holds {what} character (U+{ord(odd[0]):04X}): write the team name on one line "
                f"with visible characters only, {example}")
    if len(name) > GROUPNAME_MAX:
        return (f"{name[:20]!r}... has {len(name)} characters: give a team name of at most {GROUPNAME_MAX}, "
                f"{example}")
    return None


def is_envelope_attempt(doc) -> bool:
    """A top-level object with a ``groupname`` or ``images`` key in any case: meant as the envelope."""
    return isinstance(doc, dict) and any(str(k).casefold() in ENVELOPE for k in doc)


def _shape(value) -> str:
    return {type(None): "null", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def envelope_problems(doc: dict, groupname: bool = True) -> list[str]:
    """One line per way an envelope attempt (``is_envelope_attempt``) differs from the server's
    ``{"groupname": NAME, "images": {query file name: [gallery file names]}}``: a key spelled
    otherwise (``groupName``), a key missing, a key beside the two, ``images`` that is not a mapping,
    and (``groupname``) a group name that is not one (``groupname_problem``)."""
    out = []
    spelled = {str(k).casefold(): k for k in doc if str(k).casefold() in ENVELOPE}
    for key in ENVELOPE:
        if key in spelled and spelled[key] != key:
            out.append(f"the envelope key {json.dumps(spelled[key])} is spelled {json.dumps(key)} (lower case): "
                       "the server reads that key only")
    unexpected = [k for k in doc if str(k).casefold() not in ENVELOPE]
    if unexpected:
        out.append(f"unexpected envelope key(s) {_named(json.dumps(k) for k in unexpected)}: the server reads "
                   '{"groupname": NAME, "images": {...}} only; move queries inside "images" and drop the rest')
    if "groupname" not in spelled:
        out.append('the envelope has no "groupname": the server files the submission under it '
                   "(benchmark submit --groupname team7)")
    if "images" not in spelled:
        out.append('the envelope has no "images": it must hold the mapping {query file name: [gallery file names]}')
    elif not isinstance(doc[spelled["images"]], dict):
        out.append(f'"images" is {_shape(doc[spelled["images"]])}: it must be a mapping '
                   "{query file name: [gallery file names]}")
    if groupname and "groupname" in spelled:
        why = groupname_problem(doc[spelled["groupname"]])
        if why:
            out.append(f"groupname {why}")
    return out


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
    document; a document of none of these shapes is an InputError saying what was expected, and so is
    an envelope attempt that is not the envelope (one line: its ``envelope_problems`` but the group
    name's, which does not change what is scored)."""
    if is_envelope_attempt(doc):
        found = envelope_problems(doc, groupname=False)
        if found:
            raise InputError("; ".join(found))
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
    gallery file names of the test folders: not the envelope (or a list instead of a mapping), the
    envelope's own problems (``envelope_problems``: its keys, ``images`` not a mapping, a group name
    that is not one), folder-prefixed or absolute paths, names not in the folders, missing or extra
    queries, fewer or more than ``k`` or repeated gallery names, a query answered with itself."""
    out = []
    if is_envelope_attempt(doc):  # said as envelope problems, never as queries named "groupname", "images"
        out = envelope_problems(doc)
        images = next((v for k, v in doc.items() if str(k).casefold() == "images"), None)
        if not isinstance(images, dict):
            return out
        mapping, form = images, "envelope"
    else:
        try:
            mapping, form = read(doc)
        except InputError as exc:
            return [str(exc)]
    if form == "list":
        out.append("a list of {filename, gallery_images} objects instead of a mapping: the server reads "
                   '{"groupname": NAME, "images": {query file name: [gallery file names]}}')
    elif form == "mapping":
        out.append('no envelope: the server reads {"groupname": NAME, "images": {...}} (benchmark submit --groupname)')
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
    """The server's form of a ``{query: [gallery, ...]}`` mapping; a group name ``check-submission``
    would refuse (``groupname_problem``) is an InputError naming ``--groupname``."""
    why = groupname_problem(groupname)
    if why:
        raise InputError(f"--groupname {why}")
    return {"groupname": groupname, "images": mapping}
