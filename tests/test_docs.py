"""The README is the front door and the manual lives in docs/ (issue 22, item 6): the README stays
short, links every page, every relative link of README.md and docs/*.md leads somewhere, and every
`benchmark` command the pages show is one the command line really has, with options it really takes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from test_cli import _subparsers

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
FILES = [README, *PAGES]
#: accepted anywhere on a command line, before the sub-command parser sees it
GLOBAL_OPTIONS = {"--debug", "--help", "-h"}


def _prose(text: str) -> str:
    """``text`` without its fenced code blocks (a ``# comment`` in a bash block is no heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _links(text: str) -> list[str]:
    return re.findall(r"\[[^\]\n]*\]\(([^)\s]+)\)", _prose(text))


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", _prose(page.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", re.sub(r"\]\([^)]*\)", "]", h).lower()).replace(" ", "-") for h in headings}


def _local(page: Path, link: str) -> tuple[Path, str] | None:
    """(file, anchor) a relative link points to; None for a web address."""
    if re.match(r"^[a-z][a-z+.-]*:", link):
        return None
    path, _, anchor = link.partition("#")
    return ((page.parent / path).resolve() if path else page), anchor


def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text) <= 12_000, f"README.md has {len(text)} characters; move the manual into docs/"
    assert "make demo" in text and "make test" in text and "make test-fast" in text
    headings = re.findall(r"^## .+$", text, flags=re.M)
    assert headings, "README.md has no sections"
    for h in headings:  # every section after the intro points to its page
        assert re.search(r"→ \[docs/[\w-]+\.md\]\(docs/[\w-]+\.md\)$", h), h


def test_every_page_is_linked_from_the_readme_and_the_index():
    assert PAGES and (ROOT / "docs" / "index.md") in PAGES
    for source in (README, ROOT / "docs" / "index.md"):
        targets = {t[0] for t in (_local(source, link) for link in _links(source.read_text())) if t}
        missing = [p.name for p in PAGES if p not in targets and p != source]
        assert not missing, f"{source.relative_to(ROOT)} does not link {missing}"


@pytest.mark.parametrize("page", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(page):
    links = [(link, _local(page, link)) for link in _links(page.read_text())]
    broken = [link for link, target in links if target and not target[0].exists()]
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files {broken}"
    bad_anchor = [link for link, target in links if target and target[1] and target[0].suffix == ".md"
                  and target[1] not in _anchors(target[0])]
    assert not bad_anchor, f"{page.relative_to(ROOT)}: links to missing headings {bad_anchor}"


def _commands(text: str) -> list[str]:
    """Every ``benchmark ...`` command of the ```bash blocks (continuation lines joined, comments and
    what follows ``&&``, ``;`` or ``|`` cut off) and of the inline code spans of the prose."""
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        lines += [re.sub(r"(^|\s)#.*$", "", ln) for ln in block.replace("\\\n", " ").splitlines()]
    lines += [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", _prose(text))]  # a span may wrap
    out = []
    for line in lines:
        for segment in re.split(r"&&|\|\||;|\|", line):
            m = re.search(r"(?:^|[\s/])benchmark\s+([a-z].*)$", segment.strip())
            if m:
                out.append(m.group(1).strip())
    return out


def test_shown_commands_and_options_exist(monkeypatch):
    subs = _subparsers(monkeypatch)
    shown = [(page, cmd) for page in FILES for cmd in _commands(page.read_text())]
    assert len(shown) > 30  # the reading found the commands
    assert any(cmd.startswith("list remedies") for _, cmd in shown)
    problems = []
    for page, cmd in shown:
        name, *rest = cmd.split()
        where = f"{page.relative_to(ROOT)}: benchmark {cmd}"
        if name not in subs:
            problems.append(f"{where}: no sub-command {name!r}")
            continue
        parser = subs[name]
        options = {o for a in parser._actions for o in a.option_strings} | GLOBAL_OPTIONS
        tokens = [t.strip("[]") for t in rest]  # [--out DIR]: an optional part
        for opt in (re.match(r"--?[a-zA-Z][\w-]*", t).group() for t in tokens if re.match(r"--?[a-zA-Z]", t)):
            if opt not in options:
                problems.append(f"{where}: {name} has no option {opt}")
        positional = next((a for a in parser._actions if not a.option_strings and a.dest != "help"), None)
        first = next((t for t in tokens if not t.startswith("-")), None)
        placeholder = first is not None and (first == "..." or first.isupper())  # benchmark list ..., cache WHAT
        if positional is not None and positional.choices and first is not None and not placeholder \
                and first not in positional.choices:
            problems.append(f"{where}: {first!r} is not one of {sorted(positional.choices)}")
    assert not problems, "\n".join(problems)


def test_every_benchmark_list_named_anywhere_is_a_choice(monkeypatch):
    """`benchmark list WHAT` in prose too (e.g. a config key's doc pointing to `benchmark list styles`)."""
    choices = next(a.choices for a in _subparsers(monkeypatch)["list"]._actions if a.dest == "what")
    named = {(p.name, w) for p in FILES for w in re.findall(r"benchmark list (\w+)", p.read_text())}
    assert {w for _, w in named} and not {(p, w) for p, w in named if w not in choices}
