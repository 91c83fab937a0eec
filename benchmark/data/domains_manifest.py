"""A two-domain imagefolder's manifest (``domains``: make-competition's ``train/domains.csv``), read and
checked before any work: a ``path,domain`` CSV with one line per image of ``data_home``, each ``photo``
(a val/test query) or ``render`` (a val/test gallery item).

Read as a spreadsheet or an editor writes it: a UTF-8 byte-order mark and spaces around header names
and values are accepted, header names in any case and order. Everything else that would make the
manifest mean something other than what it says is one ConfigError naming the file, the line
number(s) and the fix: no header, another separator, a row with too many fields (an unquoted comma
in a path) or too few, a broken quote, a third domain, a file listed twice, a listed file that is
not an image of ``data_home``, an image without a line, and a manifest without both domains.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from benchmark.config import ConfigError

#: a manifest's domains -> the side of a val/test query -> gallery split they take
DOMAIN_SIDES = {"photo": "query", "render": "gallery"}
HEADER = ("path", "domain")


def _lines(numbers: list[int], most: int = 5) -> str:
    """``line 4`` / ``lines 4, 9, 12`` / ``lines 4, 9, 12, 15, 20 and 3 more``."""
    shown = ", ".join(map(str, numbers[:most])) + (f" and {len(numbers) - most} more" if len(numbers) > most else "")
    return f"line{'s' if len(numbers) > 1 else ''} {shown}"


def manifest_path(cfg) -> Path:
    """``cfg.domains``, a relative path read from ``data_home``."""
    manifest = Path(cfg.domains).expanduser()
    return manifest if manifest.is_absolute() else Path(cfg.data_home).expanduser().resolve() / manifest


def read_rows(manifest: Path) -> list[tuple[int, str, str]]:
    """``(line number, path, domain)`` of each row of ``manifest`` (blank lines skipped), the values
    stripped; one ConfigError naming the line and the fix for anything that is not such a row."""
    where = f"domains={manifest}"
    try:
        text = manifest.read_bytes().decode("utf-8-sig")  # a spreadsheet's byte-order mark is no header
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start}); save it as a UTF-8 CSV") from None
    if not text.strip():
        raise ConfigError(f"{where}: the file is empty; expected a header path,domain and one line per image")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows, start = [], 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # a quote opened at ``start`` and not closed where the field ends
            raise ConfigError(f"{where}: line {start}: a quote opened on this line does not close where its field "
                              f"ends ({exc}); quote a whole path as \"A/x, y.jpg\" and double a quote inside it "
                              "(\"\")") from None
        if any(c.strip() for c in row):
            rows.append((start, [c.strip() for c in row]))
        start = reader.line_num + 1
    if not rows:
        raise ConfigError(f"{where}: the file holds no values; expected a header path,domain and one line per image")
    first_line, header = rows[0]
    names = [c.lower() for c in header]
    if sorted(names) != sorted(HEADER):
        shown = text.lstrip().splitlines()[0]
        if len(header) >= 2 and header[1] in DOMAIN_SIDES:
            hint = "it has no header: add the line path,domain at the top"
        elif len(header) == 1 and any(s in header[0] for s in ";\t|"):
            sep = next(s for s in ";\t|" if s in header[0])
            hint = f"its fields are separated by {sep!r}: use commas (path,domain)"
        else:
            hint = "expected the header path,domain (then one path,domain line per image)"
        raise ConfigError(f"{where}: line {first_line} is {shown!r}; {hint}")
    col = {name: names.index(name) for name in HEADER}
    out, short, long = [], [], []
    for number, row in rows[1:]:
        if len(row) != len(header):
            (long if len(row) > len(header) else short).append(number)
            continue
        out.append((number, row[col["path"]], row[col["domain"]]))
    if long:
        raise ConfigError(f"{where}: {_lines(long)}: more than {len(header)} fields; a path that contains a comma "
                          "must be quoted: \"A/x, y.jpg\",photo")
    if short:
        raise ConfigError(f"{where}: {_lines(short)}: fewer than {len(header)} fields; each line is path,domain")
    empty = [n for n, p, _ in out if not p]
    if empty:
        raise ConfigError(f"{where}: {_lines(empty)}: no path; each line is path,domain")
    return out


def read_domains(cfg, images: list[str]) -> dict[str, str]:
    """``{image path: domain}`` (photo | render) of every image of ``data_home`` (``images``: all of
    them, absolute, before any identity is filtered out) from ``cfg.domains``; every check of the
    module docstring, each one ConfigError."""
    manifest = manifest_path(cfg)
    where = f"domains={manifest}"
    if not manifest.is_file():
        raise ConfigError(f"domains={cfg.domains}: no such file ({manifest}); give the path,domain CSV, e.g. "
                          "make-competition's train/domains.csv")
    rows = read_rows(manifest)
    if not rows:
        raise ConfigError(f"{where}: a header and no line; list each image of data_home as path,photo or path,render")
    bad = [(n, d) for n, _, d in rows if d not in DOMAIN_SIDES]
    if bad:
        values = sorted({d for _, d in bad})
        raise ConfigError(f"{where}: {_lines([n for n, _ in bad])}: domain(s) {', '.join(map(repr, values))}; the two "
                          f"domains are {', '.join(DOMAIN_SIDES)}")
    root = Path(cfg.data_home).expanduser().resolve()
    lines: dict[str, list[int]] = {}
    listed: dict[str, str] = {}
    spelled: dict[str, str] = {}
    for number, path, domain in rows:
        key = str((root / path).resolve())  # A/x.jpg and ./A/x.jpg are one file
        lines.setdefault(key, []).append(number)
        listed[key] = domain
        spelled.setdefault(key, path)
    twice = {k: v for k, v in lines.items() if len(v) > 1}
    if twice:
        key, numbers = next(iter(twice.items()))
        more = f" ({len(twice) - 1} more file(s) are listed more than once)" if len(twice) > 1 else ""
        raise ConfigError(f"{where}: {spelled[key]} is listed on {_lines(numbers)}{more}; list each file once, "
                          "with one domain")
    on_disk = set(images)
    absent = sorted(set(listed) - on_disk)
    if absent:
        first = lines[absent[0]][0]
        raise ConfigError(f"{where}: {len(absent)} listed file(s) are not images of data_home={root} (e.g. line "
                          f"{first}: {absent[0]}); fix the manifest or the folder")
    unlisted = sorted(on_disk - set(listed))
    if unlisted:
        raise ConfigError(f"{where}: {len(unlisted)} image(s) of data_home have no domain (e.g. "
                          f"{unlisted[0]}); list each as photo or render")
    check_both(listed.values(), where, "lists no {missing} (every file is {present})")
    return listed


def check_both(domains, where: str, what: str) -> None:
    """One ConfigError when ``domains`` (photo/render values) lack one of the two: ``what`` says
    whose, with ``{missing}`` and ``{present}``."""
    present = set(domains)
    for missing in DOMAIN_SIDES:
        if missing not in present:
            other = next(iter(present), "none")
            raise ConfigError(f"{where}: {what.format(missing=missing, present=other)}; a two-domain dataset "
                              "needs both photo and render files")
