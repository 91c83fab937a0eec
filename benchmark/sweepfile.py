"""A sweep file: found by name or path, validated by W&B's own schema (PyPI ``sweeps``) and this
project's checks, and expanded into grid points.

A light module (no torch): ``benchmark list sweeps`` and the runner (``benchmark.sweep``) both read
sweep files through it. Every violation is one line naming its key (``parameters.lr.values: ...``);
all of them are reported together in one ``ConfigError`` (exit 2).
"""

from __future__ import annotations

import itertools
import typing
import warnings
from pathlib import Path

import numpy as np
import yaml

from benchmark import config
from benchmark.config import FIELDS, ConfigError, read_yaml
from benchmark.results.schema import RANKING

#: the methods the offline runner runs (W&B's ``custom`` needs W&B's server)
METHODS = ("grid", "random", "bayes")
#: top-level keys W&B's server accepts that the ``sweeps`` package's schema does not list
SERVER_KEYS = ("run_cap",)
#: config keys whose value is a mapping (member_weights: one weight per member by name): the only ones a
#: nested ``parameters:`` block may set
NESTABLE = (*(k for k, h in typing.get_type_hints(config.Config).items() if h is dict),
            "member_weights")  # a weight per member by name: what a search samples, one parameter each


def sweep_files() -> dict[str, Path]:
    """Named sweep files: ``sweeps/*.yaml`` of every experiments folder, by file stem (later folders win)."""
    return {p.stem: p for d in config.experiments_dirs() for p in sorted((d / "sweeps").glob("*.yaml"))}


def find_sweep(name_or_path: str | Path) -> Path:
    """A sweep file path as given, else the named sweep (file stem or the file's ``name:``)."""
    path = Path(name_or_path)
    if path.exists():  # a file, or a folder given by mistake (read_yaml says so)
        return path
    files = sweep_files()
    if str(name_or_path) in files:
        return files[str(name_or_path)]
    by_name = {(yaml.safe_load(p.read_text()) or {}).get("name"): p for p in files.values()}
    if str(name_or_path) in by_name:
        return by_name[str(name_or_path)]
    raise ConfigError(f"sweep file {name_or_path} not found, and no named sweep is called so; named sweeps: "
                      f"{', '.join(sorted(files))} (benchmark list sweeps)")


def engine():
    """W&B's sweep engine (``sweeps``) and its config schema, imported quietly (its pydantic v1
    config style warns on import under pydantic 2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
        from sweeps.config import schema
    return sweeps, schema


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


#: what a JSON-schema type asks for, in words; a Python value's type as the file's reader knows it
NEEDS = {"array": "a list", "object": "a mapping", "number": "a number", "integer": "a whole number",
         "string": "text", "boolean": "true or false", "null": "null"}
GOT = {"dict": "mapping", "NoneType": "null"}


def _alternatives(err) -> list[list]:
    """The sub-errors of a failed ``anyOf``/``oneOf``, one list per alternative; an alternative that is
    itself a choice at the same place (W&B's ``param_uniform``) counts as its alternatives."""
    alts: dict = {}
    for sub in err.context:
        alts.setdefault(sub.relative_schema_path[0], []).append(sub)
    out = []
    for errs in alts.values():
        one = errs[0]
        nested = len(errs) == 1 and one.validator in ("anyOf", "oneOf") and one.context and not one.path
        out.extend(_alternatives(one) if nested else [errs])
    return out


def _unexpected(err) -> list[str]:
    """The keys an ``additionalProperties`` failure refuses."""
    if err.validator != "additionalProperties" or not isinstance(err.instance, dict):
        return []
    return sorted(set(err.instance) - set(err.schema.get("properties", {})))


def _missing(errs: list) -> list[str]:
    """The keys the ``required`` failures among ``errs`` miss."""
    return sorted({k for e in errs if e.validator == "required" for k in e.validator_value if k not in e.instance})


def _misfit(errs: list) -> tuple:
    """How far one alternative is from the value (lower: closer): a failed or missing discriminator
    (an ``enum``/``const``: another ``distribution``, another ``type``) or another type of the value
    itself count first, then keys it does not take, then its other errors (paths are the alternative's)."""
    props = next((e.schema.get("properties", {}) for e in errs if e.validator == "required"), {})
    kind = sum(e.validator in ("enum", "const") or (e.validator == "type" and not e.path) for e in errs) \
        + sum("enum" in props.get(k, {}) for k in _missing(errs))
    return kind, sum(len(_unexpected(e)) for e in errs), len(errs)


def _chosen_by(err) -> str:
    """The discriminating values that select the alternative ``err`` failed in (``distribution uniform ``)."""
    props, inst = err.schema.get("properties", {}), err.instance
    return "".join(f"{k} {inst[k]} " for k, p in props.items()
                   if isinstance(inst, dict) and "enum" in p and len(p["enum"]) == 1 and inst.get(k) in p["enum"])


def _keys_needed(errs: list) -> str:
    """The keys ``required`` failures of one alternative ask for (``max and min``); with the allowed
    values of a key that has them (``type (one of: hyperband)``)."""
    props = errs[0].schema.get("properties", {})
    return " and ".join(k + (f" (one of: {', '.join(map(str, props[k]['enum']))})" if "enum" in props.get(k, {})
                             else "") for k in _missing(errs))


def _needs(errs: list, ways: list[list] | None = None) -> str:
    """``distribution uniform needs max``; with ``ways``, each alternative's keys (``needs max_iter and
    s, or min_iter``)."""
    return f"{_chosen_by(errs[0])}needs " + ", or ".join(dict.fromkeys(map(_keys_needed, ways or [errs])))


def _say(err) -> str:
    """What one failing keyword needed, in words (jsonschema's own message for the rare others)."""
    v, want, inst = err.validator, err.validator_value, err.instance
    if v == "type":
        need = " or ".join(NEEDS.get(t, t) for t in ([want] if isinstance(want, str) else want))
        return f"must be {need}, got a {GOT.get(type(inst).__name__, type(inst).__name__)} ({inst!r})"
    if v == "required":
        return _needs([err])
    if v in ("enum", "const"):
        return f"{inst!r} is not one of {', '.join(map(str, want if v == 'enum' else [want]))}"
    if v in ("minItems", "minProperties") and not inst:
        return "is empty; give at least one"
    if v == "additionalProperties":
        return (f"{_chosen_by(err)}takes no {', '.join(_unexpected(err))} "
                f"(it takes: {', '.join(err.schema.get('properties', {}))})")
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if v in bounds:
        return f"must be {bounds[v]} {want}, got {inst!r}"
    return err.message


def _explain(err) -> list[str]:
    """A W&B schema failure as one line per failing field, ``<dotted path>: <what it needed>``.

    jsonschema says only "is not valid under any of the given schemas" for a failed ``anyOf``/``oneOf``
    (every parameter form, ``early_terminate``). The value is matched to its closest alternative
    (``_misfit``: the one for its ``distribution``/``type``) and that alternative's failures are said,
    each at its own field; a value no alternative allows is said with every allowed value; when the
    closest alternatives only miss keys, each is a way out (``needs max_iter and s, or min_iter``)."""
    if err.validator not in ("anyOf", "oneOf") or not err.context:
        return [f"{_where(err.absolute_path)}: {_say(err)}"]
    alts = _alternatives(err)
    for key in dict.fromkeys(e.path[0] for a in alts for e in a if e.validator == "enum" and len(e.path) == 1):
        refusals = [[e for e in a if (e.validator == "enum" and list(e.path) == [key]) or key in _unexpected(e)]
                    for a in alts]
        if all(refusals):  # every alternative refuses this key's value (or the key)
            allowed = dict.fromkeys(x for r in refusals for e in r if e.validator == "enum" for x in e.validator_value)
            return [f"{_where([*err.absolute_path, key])}: {err.instance[key]!r} is not one of "
                    f"{', '.join(map(str, allowed))}"]
    scores = [_misfit(a) for a in alts]
    closest = alts[scores.index(min(scores))]
    if all(e.validator == "required" for e in closest):
        ways = [a for a, s in zip(alts, scores)
                if s[:2] == min(scores)[:2] and all(e.validator == "required" for e in a)]
        return [f"{_where(err.absolute_path)}: {_needs(closest, ways)}"]
    said: dict = {}
    needed = [e for e in closest if e.validator == "required"]
    if needed:
        said[_where(needed[0].absolute_path)] = [_needs(needed)]
    typed = {tuple(e.path) for e in closest if e.validator == "type"}
    for e in closest:
        if e.validator == "required" or (e.validator == "format" and tuple(e.path) in typed):
            continue
        for line in _explain(e):
            where, _, what = line.partition(": ")
            said.setdefault(where, []).append(what)
    return [f"{where}: {'; '.join(dict.fromkeys(whats))}" for where, whats in said.items()]


def schema_problems(doc: dict) -> list[str]:
    """W&B's schema (``sweeps``' JSON schema and its min/max/probability checks) on ``doc``: one line
    per violation, naming the key (``_explain``). W&B server keys the package lacks (``run_cap``)
    are checked here, and ``early_terminate`` by W&B's engine (``hyperband_problem``)."""
    sweeps, schema = engine()
    body = {k: v for k, v in doc.items() if k not in SERVER_KEYS}
    out = []
    order = {k: i for i, k in enumerate([*body, *(body.get("parameters") or {})])}

    def in_file_order(err):  # jsonschema's order varies between runs: report in the file's order
        path = [str(p) for p in err.absolute_path]
        return [order.get(p, len(order)) for p in path[:1] + path[1:2]]

    for err in sorted(schema.validator.iter_errors(body), key=in_file_order):
        out.extend(_explain(err))
    if not out:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, spec in (body.get("parameters") or {}).items():
                for check in (schema.validate_min_max, schema.validate_categorical_prob,
                              schema.check_for_deprecated_distributions):
                    try:
                        check(name, spec)
                    except ValueError as exc:
                        out.append(f"parameters.{exc.args[0].removeprefix('Parameter ')}")
        out.extend(hyperband_problem(body))
    if "run_cap" in doc:
        cap = doc["run_cap"]
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            out.append(f"run_cap: {cap!r} must be a positive whole number of runs (or leave it out: no cap)")
    return list(dict.fromkeys(out))


#: W&B's documented Hyperband settings (bands at epochs 3 and 9): the fix a refused setting is shown
HYPERBAND_EXAMPLE = {"max_iter": 27, "s": 2, "eta": 3}


def _hyperband_refuses(early_terminate: dict) -> Exception | None:
    """What W&B's engine says of these Hyperband settings before any run: ``sweeps.stop_runs`` on no
    runs computes the bands (they depend on ``early_terminate`` only, not on the metric)."""
    sweeps = engine()[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sweeps.stop_runs({"metric": {"name": "metric"}, "early_terminate": early_terminate}, [])
    except (ValueError, TypeError) as exc:  # TypeError: a fractional s (``range(s)``)
        return exc
    return None


def hyperband_problem(body: dict) -> list[str]:
    """``early_terminate`` settings W&B's engine refuses (``max_iter`` 0, ``s`` 0: no bands; ``s``
    1.5), which would otherwise fail every run: the field is the one that, set as in
    ``HYPERBAND_EXAMPLE``, makes the engine accept them (the engine is the only judge)."""
    et = body.get("early_terminate")
    exc = _hyperband_refuses(et) if isinstance(et, dict) else None
    if exc is None:
        return []
    why = ("gives Hyperband no bands (its bands are max_iter/eta, max_iter/eta^2, ... s of them, each at "
           "least 1 epoch)" if "Bands" in str(exc) else f"is refused by W&B's Hyperband ({exc})")
    for key, good in HYPERBAND_EXAMPLE.items():
        if et.get(key, good) != good and _hyperband_refuses({**et, key: good}) is None:
            return [f"early_terminate.{key}: {et[key]!r} {why}; use e.g. {key}: {good}"]
    example = ", ".join(f"{k}: {v}" for k, v in HYPERBAND_EXAMPLE.items())
    return [f"early_terminate: {et} {why}; use e.g. {{type: hyperband, {example}}}"]


def parameter_kind(name: str, spec: dict) -> str:
    """``sweeps``' type name of a parameter spec (``param_categorical``, ``param_loguniform_v2`` ...)."""
    _, schema = engine()
    try:
        return schema.fill_parameter(name, spec)[0]
    except schema.ParamValidationError:  # raised for a nested block
        return "param_dict"


#: kinds whose ``min``/``max`` are values of the key itself (log_uniform v1 bounds are exponents)
BOUNDED_BY_VALUES = ("param_uniform", "param_int_uniform", "param_quniform", "param_loguniform_v2",
                     "param_qloguniform_v2", "param_inv_loguniform_v2")


def _probes(name: str, spec: dict) -> list:
    """The values of a spec that can be checked as config values without sampling (values, bounds)."""
    if "values" in spec:
        return list(spec["values"])
    if "value" in spec:
        return [spec["value"]]
    return [spec["min"], spec["max"]] if parameter_kind(name, spec) in BOUNDED_BY_VALUES else []


#: what W&B's grid enumerates (``sweeps.grid_search``); integer keys take only whole-valued kinds
GRID_KINDS = ("param_categorical", "param_single_value", "param_int_uniform", "param_quniform")
INT_KINDS = ("param_categorical", "param_single_value", "param_int_uniform", "param_categorical_w_probabilities")


#: validation metrics every run records in its summary (``metrics.json``) and in every epoch of its
#: history (``history.csv``): the results schema's ranking metrics
VALIDATION = tuple(f"val/{m}" for m in RANKING)
#: what else each epoch of a run's history holds (``benchmark.training.fit``): Hyperband reads these too
EPOCH_ONLY = ("val/loss", "train/loss", "lr", "epoch_s")


def metric_problems(doc: dict) -> list[str]:
    """``metric`` must mean what it says: a number the runs record where its readers read it, in the
    direction it improves.

    bayes and ``metric.target`` read each run's summary, Hyperband (``early_terminate``) each epoch of
    its history. A search optimizes validation: ``benchmark choose`` picks on ``val/`` metrics only,
    and a ``test/`` goal would make the test number a biased estimate of the pick. So the metrics
    allowed are the validation ranking metrics (``VALIDATION``: ``val/score``, ``val/top1`` ...),
    plus for Hyperband alone the other per-epoch columns (``EPOCH_ONLY``: ``val/loss``, ``lr`` ...);
    a file nothing reads the metric of (grid, random) may name any of these. ``goal`` must be the
    metric's direction where it has one (ranking metrics: maximize, losses: minimize; W&B minimizes
    when ``goal`` is left out)."""
    metric = doc.get("metric") or {}
    name, method = metric.get("name"), doc.get("method")
    readers = [r for r, reads in (("bayes", method == "bayes"), ("metric.target", "target" in metric),
                                  ("early_terminate", "early_terminate" in doc)) if reads]
    if name is None:
        return [f"metric: {readers[0]} needs the metric to optimize, e.g. metric: {{name: val/score, goal: "
                "maximize}"] if readers else []
    if name.startswith("test/") or name == "score_per_minute":
        return [f"metric.name: {name} is a test-split metric; searching on it makes the test number a biased "
                "estimate of the pick: use a validation metric such as val/score"]
    allowed = VALIDATION if set(readers) - {"early_terminate"} else (*VALIDATION, *EPOCH_ONLY)
    if name not in allowed:
        where = " and ".join(readers) or "the sweep"
        return [f"metric.name: {name!r} is not a validation metric the runs record for {where}; use one of: "
                f"{', '.join(allowed)}"]
    better = "maximize" if name in VALIDATION else "minimize" if name.endswith("loss") else None
    goal = metric.get("goal")
    if better and goal != better:
        return [f"metric.goal: {goal or 'left out, so W&B minimizes'}: that searches for the worst {name}; "
                f"write goal: {better}"]
    return []


def project_problems(doc: dict, overrides: dict | None = None) -> list[str]:
    """This project's checks: a method the offline runner runs, config keys (nested only under
    mapping keys), named experiments, values each key accepts, whole numbers for integer keys."""
    out = []
    method = doc.get("method")
    if method not in METHODS:
        out.append(f"method: {method!r} cannot run offline; choose one of: {', '.join(METHODS)}")
    out += metric_problems(doc)
    params = doc.get("parameters") or {}
    if "experiment" not in params:
        out.append("parameters.experiment: missing; give the named experiment(s) to start from "
                   "(value: NAME or values: [...], from `benchmark list experiments`)")
        return out
    exp_spec = params["experiment"]
    exps = _probes("experiment", exp_spec)
    if not exps or parameter_kind("experiment", exp_spec) not in ("param_categorical", "param_single_value",
                                                                  "param_categorical_w_probabilities"):
        out.append("parameters.experiment: must be value: NAME or values: [NAME, ...]")
        return out
    known = config.load_experiments()
    bad = [e for e in exps if e not in known]
    if bad:
        out.append(f"parameters.experiment: unknown experiment(s) {', '.join(map(str, bad))} "
                   "(benchmark list experiments)")
        return out
    hints = typing.get_type_hints(config.Config)
    for name, spec in params.items():
        if name == "experiment":
            continue
        where = f"parameters.{name}"
        if name not in FIELDS:
            out.append(f"{where}: {name!r} is not a config key; valid: {', '.join(FIELDS)}")
            continue
        kind = parameter_kind(name, spec)
        if kind == "param_dict":
            if name not in NESTABLE:
                out.append(f"{where}.parameters: only mapping keys ({', '.join(NESTABLE)}) take nested parameters")
            continue
        if method == "grid" and kind not in GRID_KINDS:
            out.append(f"{where}: a grid needs values: [...], value: x, or an int_uniform/q_uniform range; "
                       f"{spec.get('distribution', kind)} is for random or bayes")
            continue
        if hints[name] is int and kind not in INT_KINDS and not (kind.startswith("param_q")
                                                                   and float(spec.get("q", 1)).is_integer()):
            out.append(f"{where}: {name} is a whole number; use values, int_uniform or a q_ distribution with "
                       "a whole q")
            continue
        for probe in _probes(name, spec):
            try:
                config.resolve(exps[0], {**(overrides or {}), name: probe})
            except ConfigError as exc:
                out.append(f"{where}: {exc}")
                break
    return out


def load(path: Path | str, overrides: dict | None = None) -> dict:
    """A sweep file (a path, or a named sweep of ``benchmark list sweeps``), validated by W&B's schema
    and this project's checks; every violation in one ``ConfigError``, one line each naming the key."""
    path = find_sweep(path)
    doc = read_yaml(path, "sweep file")
    problems = schema_problems(doc)
    if not problems:
        problems = project_problems(doc, overrides)
    if problems:
        raise ConfigError(f"{path}: " + f"\n{path}: ".join(problems))
    doc.setdefault("name", path.stem)
    return doc


def grid_axis(name: str, spec: dict) -> list:
    """The values of one grid parameter, as W&B's grid enumerates them (int_uniform and q_uniform
    ranges become their values, ``sweeps.grid_search``'s conversion)."""
    if "values" in spec:
        return list(spec["values"])
    if "value" in spec:
        return [spec["value"]]
    kind = parameter_kind(name, spec)
    if kind == "param_int_uniform":
        return list(range(spec["min"], spec["max"] + 1))
    return np.arange(spec["min"], spec["max"], spec["q"]).tolist()  # param_quniform


def expand(sweep: dict) -> list[dict]:
    """Every grid point: a cartesian product over the parameters, in the file's order (today's plans)."""
    params = sweep["parameters"]
    names = list(params)
    axes = [grid_axis(n, params[n]) for n in names]
    return [dict(zip(names, point)) for point in itertools.product(*axes)]


def describe(sweep: dict) -> tuple[int | str, str]:
    """(runs, parameters) as ``benchmark list sweeps`` shows them: grid sizes, else method and cap."""
    grid = sweep["method"] == "grid"

    def one(k, v):
        if "parameters" in v:
            return f"{k} (nested)"
        if grid or "values" in v or "value" in v:
            return f"{k} ({len(grid_axis(k, v))})"
        bounds = f" {v['min']}..{v['max']}" if "min" in v else ""
        return f"{k} ({v.get('distribution', 'range')}{bounds})"

    runs = len(expand(sweep)) if grid else f"{sweep['method']}, " + (
        f"cap {sweep['run_cap']}" if "run_cap" in sweep else "no cap")
    return runs, ", ".join(one(k, v) for k, v in sweep["parameters"].items())
