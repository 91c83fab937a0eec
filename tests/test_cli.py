"""The command line: every option of every sub-command says what it does and its default."""

from __future__ import annotations

import argparse
import re

import pytest

from benchmark import cli


def _subparsers(monkeypatch) -> dict[str, argparse.ArgumentParser]:
    seen = {}
    real = argparse.ArgumentParser.parse_known_args

    def capture(self, *a, **k):
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                seen.update(action.choices)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(SystemExit):
        cli.main(["run"])
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", real)
    return seen


def test_every_option_has_a_sentence_and_its_default(monkeypatch):
    subs = _subparsers(monkeypatch)
    assert {"run", "sweep", "results", "report", "choose", "submit", "score-submission", "make-competition",
            "cache", "list"} <= set(subs)
    for name, parser in subs.items():
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name} {action.option_strings or action.dest}"
            assert action.help and len(action.help.split()) >= 3, f"{label} has no sentence"
            shown = parser._get_formatter()._get_help_string(action) % {"default": action.default}
            if action.option_strings and action.default not in (None, False, []):
                assert f"default: {action.default}" in shown or "default" in action.help, label
            assert shown.split("(")[0].split()[0] in text, label


def test_list_prints_one_row_per_item(capsys):
    from benchmark.config import FIELDS

    assert cli.main(["list", "keys", "--width", "40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == list(FIELDS)
    assert max(map(len, lines)) <= 5 * 40 + 4  # five columns of at most 40 characters
    docs = [re.search(r"\S.*$", line[lines[0].index("doc"):]).group() for line in lines[1:]]
    assert all(len(d) <= 40 for d in docs) and any(d.endswith("...") and len(d) == 40 for d in docs)
