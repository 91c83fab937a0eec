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

#: the methods the offline runner runs (W&B's ``custom`` needs W&B's server)
METHODS = ("grid", "random", "bayes")
#: top-level keys W&B's server accepts that the ``sweeps`` package's schema does not list
SERVER_KEYS = ("run_cap",)
#: config keys whose value is a mapping: the only ones a nested ``parameters:`` block may set
NESTABLE = tuple(k for k, h in typing.get_type_hints(config.Config).items() if h is dict)


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


def _parameter_problem(key: str, spec) -> str:
    """One line saying why W&B's schema refuses the parameter ``spec`` (its ``anyOf`` says only 'not valid')."""
    _, schema = engine()
    if not isinstance(spec, dict):
        return f"{key}: must be a mapping such as {{values: [...]}}, {{value: x}} or {{min: a, max: b}}, got {spec!r}"
    if "values" in spec:
        v = spec["values"]
        if not isinstance(v, list):
            return (f"{key}.values: must be a list, got a {type(v).__name__} ({v!r}); write values: [{v!r}]"
                    if not isinstance(v, dict) else f"{key}.values: must be a list, got a mapping ({v!r})")
        if not v:
            return f"{key}.values: is empty; list at least one value"
    variants = [v for n, d in schema.sweep_config_jsonschema["definitions"].items() if n.startswith("param_")
                for v in d.get("anyOf", [d])]  # a definition is one schema or a choice of several

    def distributions(v):
        return v.get("properties", {}).get("distribution", {}).get("enum", [])

    dist = spec.get("distribution")
    if dist is not None:
        named = [v for v in variants if dist in distributions(v)]
        if not named:
            known = sorted({e for v in variants for e in distributions(v)})
            return f"{key}.distribution: {dist!r} is not a W&B distribution; choose one of: {', '.join(known)}"
        need = sorted(set(named[0].get("required", [])) - set(spec) - {"distribution"})
        if need:
            return f"{key}: distribution {dist} needs {' and '.join(need)}"
        extra = sorted(set(spec) - set(named[0].get("properties", {})))
        if extra:
            return f"{key}: distribution {dist} takes no {', '.join(extra)}"
    if ("min" in spec) != ("max" in spec):
        return f"{key}: a range needs both min and max (got only {'min' if 'min' in spec else 'max'})"
    return (f"{key}: {spec!r} is not a W&B parameter; use values: [...], value: x, or a distribution "
            "with its bounds (min/max, mu/sigma, q)")


def schema_problems(doc: dict) -> list[str]:
    """W&B's schema (``sweeps``' JSON schema and its min/max/probability checks) on ``doc``: one line
    per violation, naming the key. W&B server keys the package lacks (``run_cap``) are checked here."""
    sweeps, schema = engine()
    body = {k: v for k, v in doc.items() if k not in SERVER_KEYS}
    out = []
    order = {k: i for i, k in enumerate([*body, *(body.get("parameters") or {})])}

    def in_file_order(err):  # jsonschema's order varies between runs: report in the file's order
        path = [str(p) for p in err.absolute_path]
        return [order.get(p, len(order)) for p in path[:1] + path[1:2]]

    for err in sorted(schema.validator.iter_errors(body), key=in_file_order):
        path = list(err.absolute_path)
        if len(path) >= 2 and path[0] == "parameters" and err.validator == "anyOf":
            out.append(_parameter_problem(_where(path), _nested(body["parameters"], path[1:])))
        elif err.validator == "enum":
            out.append(f"{_where(path)}: {err.instance!r} is not one of {', '.join(map(str, err.validator_value))}")
        else:
            out.append(f"{_where(path)}: {err.message}")
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
    if "run_cap" in doc:
        cap = doc["run_cap"]
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            out.append(f"run_cap: {cap!r} must be a positive whole number of runs (or leave it out: no cap)")
    return list(dict.fromkeys(out))


def _nested(params: dict, path: list):
    spec = params
    for p in path:
        spec = spec[p]
    return spec


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


def project_problems(doc: dict, overrides: dict | None = None) -> list[str]:
    """This project's checks: a method the offline runner runs, config keys (nested only under
    mapping keys), named experiments, values each key accepts, whole numbers for integer keys."""
    out = []
    method = doc.get("method")
    if method not in METHODS:
        out.append(f"method: {method!r} cannot run offline; choose one of: {', '.join(METHODS)}")
    metric = (doc.get("metric") or {}).get("name")
    if metric is None and (method == "bayes" or "early_terminate" in doc):
        out.append(f"metric: {'bayes' if method == 'bayes' else 'early_terminate'} needs the metric to "
                   "optimize, e.g. metric: {name: val/score, goal: maximize}")
    elif metric is not None and (metric.startswith("test/") or metric == "score_per_minute"):
        out.append(f"metric.name: {metric} is a test-split metric; searching on it makes the test number a biased "
                   "estimate of the pick: use a validation metric such as val/score")
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
