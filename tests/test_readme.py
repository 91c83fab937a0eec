"""The README claims only what is measured, and the make-competition paragraph says where LFW comes
from with options the command really has (issue 16, section 5). The manual moved from README.md into
docs/*.md (issue 22, item 6): these checks read both; the README's own shape is tests/test_docs.py's."""

from __future__ import annotations

import re
from pathlib import Path

from test_cli import _subparsers

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
#: the README and every page of the manual, as one text
TEXT = "\n\n".join([README, *(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))])


def test_no_unmeasured_gpu_claim():
    """It promised the sweep "on a GPU in about a minute" although the GPU path has never run."""
    assert "about a minute" not in TEXT
    intro = README.split("```")[0]
    assert "GPU" in intro and "not been measured" in intro
    assert re.search(r"\| one LFW run on a GPU \| not measured \|", README)  # the wall-time table agrees


def test_the_submission_section_says_where_lfw_comes_from(monkeypatch):
    paragraph = next(p for p in TEXT.split("\n\n") if p.startswith("`make-competition` reads LFW"))
    assert "`$SCIKIT_LEARN_DATA`" in paragraph and "`--data-home DIR`" in paragraph
    named = set(re.findall(r"`(--[a-z-]+)", paragraph))
    assert {"--data-home", "--out", "--overwrite"} <= named
    options = {o for a in _subparsers(monkeypatch)["make-competition"]._actions for o in a.option_strings}
    assert named - {"--set"} <= options  # no option the command lacks
