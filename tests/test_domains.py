"""Declared parameter domains hold in every command (issue 22): for every declared parameter of every
registry (test-time remedies, styles, losses, miners) and every config key with a declared domain,
Hypothesis draws wrong-type and out-of-range values; ``benchmark run`` and ``benchmark submit`` each
answer with one line naming the key and its valid domain, exit 2, and write nothing (no record, no
cache entry, no submission or index file).
"""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark import cli, config
from benchmark.config import Config, dump_yaml
from benchmark.evaluation.remedies import REMEDIES
from benchmark.features import styles
from benchmark.params import Param
from benchmark.training import registry as losses

WRONG_TYPES = ["abc", [1, "x"], {"a": 1}]


def _targets() -> list[tuple[str, dict, str, Param]]:
    """(id, the overrides the parameter needs to be read, where its value goes, its Param)."""
    out = [(f"config.{name}", {}, name, p) for name, p in config.PARAMS.items()]
    qg = {"query_fraction": 0.5}
    out += [(f"remedy.{r}.{name}", {**qg, "rerank": r}, f"rerank_args.{name}", p)
            for r, remedy in REMEDIES.items() for name, p in remedy.params.items()]
    out += [(f"style.{s}.{name}", {}, f"style_args.{s}.{name}", p)
            for s in styles.STYLES for name, p in styles.params(s).items()]
    out += [(f"loss.{n}.{name}", {"loss": n}, f"loss_args.{name}", p)
            for n, cls in losses.LOSSES.items() for name, p in losses.declared(cls).items() if p.kind is not object]
    out += [(f"miner.{n}.{name}", {"loss": "triplet", "miner": n}, f"miner_args.{name}", p)
            for n, cls in losses.MINERS.items() if cls is not None
            for name, p in losses.declared(cls).items() if p.kind is not object]
    return out


TARGETS = _targets()


def _word(exclude=()) -> st.SearchStrategy:
    """Plain lowercase words (no YAML specials such as ``null``, ``yes``), outside ``exclude``."""
    return st.from_regex(r"x[a-z]{0,6}", fullmatch=True).filter(lambda s: s not in exclude)


def _outside(p: Param) -> list[st.SearchStrategy]:
    """Numbers outside the parameter's interval (or, for an odd integer, even ones inside it)."""
    integral = p.kind is int
    out = []
    if math.isfinite(p.low):
        out.append(st.integers(max_value=math.ceil(p.low) - (0 if p.open_low else 1), min_value=-10**6)
                   if integral else st.floats(min_value=p.low - 1e6, max_value=p.low, exclude_max=not p.open_low))
    if math.isfinite(p.high):
        out.append(st.integers(min_value=math.floor(p.high) + (0 if p.open_high else 1), max_value=2**40)
                   if integral else st.floats(min_value=p.high, max_value=p.high + 1e6, exclude_min=not p.open_high))
    if integral:  # a fraction where a whole number is declared
        lo = max(p.low, -1e6) if math.isfinite(p.low) else -1e6
        out.append(st.floats(min_value=lo, max_value=lo + 100).filter(lambda v: not v.is_integer()))
    if p.odd:
        out.append(st.integers(min_value=int(p.low), max_value=int(p.high)).filter(lambda v: v % 2 == 0))
    return out


def bad_values(p: Param) -> st.SearchStrategy:
    """Values the parameter's declared domain refuses: wrong types and values out of range."""
    if p.choices:
        return st.one_of(_word(p.choices), st.sampled_from([[1], {"a": 1}]))
    if p.kind is bool:
        return st.sampled_from(["maybe", 3, *WRONG_TYPES])
    if p.kind is list:  # of a fixed length, or (length None) of any
        inside = st.floats(min_value=p.low, max_value=p.high, allow_infinity=False)
        wrong_length = [] if p.length is None else \
            [st.lists(inside, max_size=p.length + 3).filter(lambda v: len(v) != p.length)]
        return st.one_of(st.sampled_from(WRONG_TYPES[:1] + [{"a": 1}]), *wrong_length,
                         st.tuples(*([inside] * ((p.length or 2) - 1)), st.one_of(*_outside(p))).map(list))
    return st.one_of(st.sampled_from(WRONG_TYPES), *_outside(p))


def _nested(where: str, value) -> tuple[str, object]:
    """``rerank_args.k`` = -3 -> (``rerank_args``, ``{"k": -3}``): the config key and its value."""
    key, *path = where.split(".")
    for name in reversed(path):
        value = {name: value}
    return key, value


def _domain_text(p: Param) -> str:
    return f"choose one of: {', '.join(p.choices)}" if p.choices else f"must be {p.domain().removesuffix(', or null')}"


def _sets(needs: dict, where: str, value) -> list[str]:
    key, value = _nested(where, value)
    return [f"{k}={json.dumps(v)}" for k, v in {**needs, key: value}.items()]


def _assert_one_line_naming(capsys, code: int, where: str, p: Param) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {where}="), err
    assert _domain_text(p) in err, err


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A results folder, a cache folder, a config file and query/gallery folders that must stay untouched."""
    root = tmp_path_factory.mktemp("domains")
    (root / "q").mkdir()
    (root / "g").mkdir()
    (root / "best.yaml").write_text(dump_yaml(Config(experiment="baseline", tracking="none")))
    return root


def _untouched(root) -> None:
    assert sorted(p.name for p in root.iterdir()) == ["best.yaml", "g", "q"]
    assert not any((root / "q").iterdir()) and not any((root / "g").iterdir())


@pytest.mark.parametrize("target", TARGETS, ids=[t[0] for t in TARGETS])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_value_outside_its_declared_domain_is_one_line_before_anything_is_written(target, data, folders, capsys,
                                                                                    monkeypatch):
    _, needs, where, p = target
    value = data.draw(bad_values(p), label=where)
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(folders / "cache"))
    code = cli.main(["run", "--experiment", "efficientnet_b0-lr0.001-ep3", "--out", str(folders / "results"),
                     "--set", *_sets({"tracking": "none", **needs}, where, value)])
    _assert_one_line_naming(capsys, code, where, p)
    code = cli.main(["submit", "--config", str(folders / "best.yaml"), "--query", str(folders / "q"),
                     "--gallery", str(folders / "g"), "--out", str(folders / "submission.json"),
                     "--set", *_sets(needs, where, value)])
    _assert_one_line_naming(capsys, code, where, p)
    _untouched(folders)


def test_every_registry_declares_a_domain_for_every_parameter():
    """No registry entry leaves a parameter undeclared (the property test above would skip it), except
    the PML parameters whose domain is the library's (``object``: passed on as given)."""
    assert {t[0].split(".")[0] for t in TARGETS} == {"config", "remedy", "style", "loss", "miner"}
    assert all(p.kind is not object for _, _, _, p in TARGETS)
    for name, remedy in REMEDIES.items():
        assert all(isinstance(p, Param) for p in remedy.params.values()), name
    assert {"rerank_args.k", "rerank_args.lambda_value", "style_args.cartoon.edge_block", "loss_args.margin",
            "miner_args.type_of_triplets", "epochs", "seed", "query_fraction"} <= {t[2] for t in TARGETS}


@pytest.mark.parametrize("sets, message", [
    (["query_fraction=0.5", "rerank=kreciprocal", "rerank_args={lambda_value: 7}"],
     "rerank_args.lambda_value=7 is not valid: must be a number in [0, 1]"),  # recorded 92.5 as ok before
    (["query_fraction=0.5", "rerank=kreciprocal", "rerank_args={k1: -5}"],
     "rerank_args.k1=-5 is not valid: must be an integer in [1, inf)"),
    (["query_fraction=0.5", "rerank=aqe", "rerank_args={k: -3}"],  # silently did nothing before
     "rerank_args.k=-3 is not valid: must be an integer in [1, inf)"),
    (["query_fraction=0.5", "rerank=aqe", "rerank_args={k: abc}"],  # failed after every feature was extracted
     "rerank_args.k='abc' is not valid: must be an integer in [1, inf)"),
    (["epochs=true"], "epochs=True is not valid: must be an integer in [1, inf)"),  # a bool is no number
])
def test_the_issue_cases(sets, message, folders, capsys, monkeypatch):
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(folders / "cache"))
    assert cli.main(["run", "--experiment", "efficientnet_b0-lr0.001-ep3", "--out", str(folders / "results"), "--set", *sets]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    _untouched(folders)
    assert not os.path.exists(folders / "cache")


@pytest.mark.parametrize("argv, message", [
    (["make-competition", "--out", "{tmp}/c", "--gallery-style", "cartoon", "--style-arg", "colors=3", "colors=5"],
     "--style-arg gives colors twice (colors=3 and 'colors=5'); give it once"),  # the last won silently
    (["make-competition", "--out", "{tmp}/c", "--gallery-style", "lowres", "--style-arg", "size"],
     "--style-arg 'size' must look like key=value; valid keys: size=24 (an integer in [1, 4096])"),  # said --set
    (["make-competition", "--out", "{tmp}/c", "--gallery-style", "cartoon", "--style-arg", "edge_block=8"],
     "--style-arg cartoon.edge_block=8 is not valid: must be an odd integer in [3, 99]"),
    (["run", "--experiment", "efficientnet_b0-lr0.001-ep3", "--set", "lr=0.1", "lr=0.2"],
     "--set gives lr twice (lr=0.1 and 'lr=0.2'); give it once"),
])
def test_command_line_key_values_are_checked_once_each(argv, message, tmp_path, capsys):
    assert cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not any(tmp_path.iterdir())


def test_a_numeric_style_parameter_in_exponent_notation_is_a_number():
    """YAML 1.1 reads ``1e2`` as a string: ``--style-arg sigma_s=1e2`` said "must be a number"."""
    assert styles.check("stylization", {"sigma_s": "1e2"})["sigma_s"] == 100.0
