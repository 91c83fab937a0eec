"""``benchmark`` command line: one thin sub-command per task over the library functions."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmark.config import FIELDS, ConfigError, parse_overrides, resolve


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. --set weights=random lr=0.01")


def _key_args(extra: list[str]) -> list[str]:
    """``--lr=0.01 --seed 1`` (as ``wandb agent`` passes parameters) -> ``["lr=0.01", "seed=1"]``."""
    out, i = [], 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(extra):
                raise ConfigError(f"{arg} needs a value")
            value, i = extra[i + 1], i + 1
        if key.replace("-", "_") not in FIELDS:
            raise ConfigError(f"unknown option --{key}; config keys: {', '.join(FIELDS)}")
        out.append(f"{key.replace('-', '_')}={value}")
        i += 1
    return out


def cmd_run(args) -> int:
    from benchmark.run import run, run_id_for

    overrides = parse_overrides(_key_args(args.extra) + args.set)
    experiment = args.experiment
    if os.environ.get("WANDB_SWEEP_ID"):  # under `wandb agent`: the sweep's parameters decide
        from benchmark.sweep import params_from_wandb

        experiment, overrides = params_from_wandb(experiment, overrides, args.out)
    if not experiment:
        raise ConfigError("--experiment NAME is required (see experiments/*.yaml)")
    cfg = resolve(experiment, overrides)
    result = run(cfg, Path(args.out), run_id_for(cfg, overrides), group=args.group)
    keys = ["val/score", "test/top1", "test/top5", "test/top10", "test/map", "test/score", "time/total_s"]
    print(json.dumps({k: round(result[k], 4) for k in keys}, indent=1))
    print(f"record: {Path(args.out) / run_id_for(cfg, overrides)}")
    return 0


def cmd_sweep(args) -> int:
    from benchmark import sweep

    df = sweep.run_sweep(args.sweep_file, args.out, parse_overrides(args.set), args.select, args.seeds,
                         args.rerun, args.rerun_failed)
    print(sweep.format_summary(df))
    if args.report:
        from benchmark.results import store
        from benchmark.report import build_report

        out = args.out or Path("results") / sweep.load(args.sweep_file)["name"]
        print(f"report: {build_report(store.load(out), Path(args.report))}")
    return sweep.exit_code(df)


def cmd_results(args) -> int:
    from benchmark.results import store

    df = store.load(args.results_dir)
    if df.empty:
        print(f"no finished runs in {args.results_dir}")
        return 0
    cols = args.columns or [c for c in ("run_id", "status", "backbone", "lr", "epochs", "seed", "val/score",
                                        "test/top1", "test/top5", "test/top10", "test/map", "test/score",
                                        "time/cost_s", "error") if c in df]
    print(df.sort_values("run_id")[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}",
                                                   max_colwidth=50))
    for _, row in df[df["status"] == "damaged"].iterrows():  # the full reason: it names the file
        print(f"damaged: {row['run_id']}: {row['error']} (`benchmark sweep` reruns it)")
    for path in args.export:
        print(f"wrote {store.export(df, path)}")
    return 0


def cmd_report(args) -> int:
    from benchmark.results import store
    from benchmark.report import build_report
    from benchmark.tracking import report_tracker

    if bool(args.results_dir) == bool(args.from_wandb):
        raise ConfigError("give either RESULTS_DIR or --from-wandb ENTITY/PROJECT/SWEEP_ID")
    if args.from_wandb:
        df, name = store.fetch_wandb(args.from_wandb), args.from_wandb.rstrip("/").split("/")[-1]
    else:
        df, name = store.load(args.results_dir), Path(args.results_dir).resolve().name
    out = Path(args.out or Path("reports") / name)
    tracker = report_tracker(name, out) if args.log_wandb else None
    print(f"report: {build_report(df, out, tracker=tracker)}")
    if tracker:
        tracker.finish({})
    return 0


def cmd_choose(args) -> int:
    from benchmark.results import store
    from benchmark.choose import choose, format_choice, write_best

    choice = choose(store.load(args.results_dir), args.metric)
    print(format_choice(choice))
    print(f"wrote {write_best(choice, args.out)}")
    return 0


def cmd_submit(args) -> int:
    from benchmark.config import load_yaml
    from benchmark.submit import format_summary, submit

    cfg = load_yaml(args.config)
    overrides = parse_overrides(args.set)
    if overrides:
        cfg = cfg.replace(**overrides)
    print(format_summary(submit(cfg, args.query, args.gallery, args.k, Path(args.out), args.index_dir)))
    return 0


def cmd_score(args) -> int:
    from benchmark.submit import score_files

    result = score_files(args.submission, args.truth)
    print(json.dumps(result, indent=1))
    return 0


def cmd_make_competition(args) -> int:
    from benchmark.competition import make_competition

    manifest = make_competition(args.out, args.data_home, args.train_min, args.test_min, args.test_max,
                                args.queries_per_identity, args.seed, args.max_test_identities,
                                args.max_train_identities, overwrite=args.overwrite)
    print(json.dumps({k: manifest[k] for k in ("counts", "paths")}, indent=1))
    return 0


def cmd_cache(args) -> int:
    from benchmark.cache import FeatureCache

    cache = FeatureCache(args.dir)
    if args.action == "clear":
        print(f"removed {cache.clear()} entries from {cache.root}")
        return 0
    import pandas as pd

    entries = cache.entries()
    print(f"{cache.root}: {len(entries)} entries")
    if entries:
        cols = ["file", "backbone", "weights", "view", "precision", "shape", "cost_s", "bytes"]
        df = pd.DataFrame(entries)
        print(df[[c for c in cols if c in df]].to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("BENCHMARK_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    parser = argparse.ArgumentParser(prog="benchmark", description=__doc__,
                                     epilog="--debug (anywhere) or BENCHMARK_DEBUG=1: show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run one named experiment and write its record")
    p.add_argument("--experiment", help="a name from experiments/*.yaml")
    _add_set(p)
    p.add_argument("--out", default="results/runs", help="results folder (default: results/runs)")
    p.add_argument("--group", help="W&B group")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("sweep", help="run a sweep file offline (resumable, shareable by processes)")
    p.add_argument("sweep_file", help="e.g. sweep.yaml")
    _add_set(p)
    p.add_argument("--out", help="results folder (default: results/<sweep name>)")
    p.add_argument("--select", nargs="+", metavar="PATTERN", help="only experiments matching these globs")
    p.add_argument("--seeds", type=int, help="repeat every experiment with seeds 0..N-1")
    p.add_argument("--rerun", action="store_true", help="run again even when a record exists")
    p.add_argument("--rerun-failed", action="store_true", help="run again the runs recorded as failed")
    p.add_argument("--report", metavar="DIR", help="write the report of the results folder there at the end")
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("results", help="print a results folder as a table; export CSV/Parquet")
    p.add_argument("results_dir")
    p.add_argument("--export", nargs="+", default=[], metavar="FILE", help="*.csv or *.parquet")
    p.add_argument("--columns", nargs="+", help="columns to print")
    p.set_defaults(fn=cmd_results)

    p = sub.add_parser("report", help="tables, figures and report.md from a results folder or a W&B sweep")
    p.add_argument("results_dir", nargs="?", help="a results folder (e.g. results/report-ablation)")
    p.add_argument("--from-wandb", metavar="ENTITY/PROJECT/SWEEP_ID", help="pull the runs of a W&B sweep")
    p.add_argument("--out", help="output folder (default: reports/<results folder or sweep name>)")
    p.add_argument("--log-wandb", action="store_true", help="also log the tables and figures to W&B")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("choose", help="pick the best configuration by VALIDATION metric; write best.yaml")
    p.add_argument("results_dir")
    p.add_argument("--metric", default="val/score", help="a val/ metric (default: val/score)")
    p.add_argument("--out", default="best.yaml", help="where to write the chosen config (default: best.yaml)")
    p.set_defaults(fn=cmd_choose)

    p = sub.add_parser("submit", help="train the chosen config, index the gallery, write submission.json")
    p.add_argument("--config", required=True, help="a config file, e.g. best.yaml from `benchmark choose`")
    _add_set(p)
    p.add_argument("--query", required=True, help="folder of query images")
    p.add_argument("--gallery", required=True, help="folder of gallery images")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", default="submission.json")
    p.add_argument("--index-dir", help="where gallery.index + gallery_keys.json go (default: beside --out)")
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("score-submission", help="score a submission.json as the competition did")
    p.add_argument("submission")
    p.add_argument("--truth", required=True, help='{"queries": {name: identity}, "gallery": {name: identity}}')
    p.set_defaults(fn=cmd_score)

    p = sub.add_parser("make-competition", help="materialize a competition-like query/gallery layout from LFW")
    p.add_argument("--out", required=True)
    p.add_argument("--data-home", help="folder holding lfw_home/ (default: $SCIKIT_LEARN_DATA)")
    p.add_argument("--train-min", type=int, default=20, help="training people have >= this many images")
    p.add_argument("--test-min", type=int, default=5)
    p.add_argument("--test-max", type=int, default=19, help="test people (unseen) have test-min..test-max images")
    p.add_argument("--queries-per-identity", type=int, default=1)
    p.add_argument("--max-test-identities", type=int)
    p.add_argument("--max-train-identities", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=cmd_make_competition)

    p = sub.add_parser("cache", help="list or clear the feature cache")
    p.add_argument("action", choices=["ls", "clear"])
    p.add_argument("--dir", help="cache folder (default: $BENCHMARK_CACHE_DIR or the user cache)")
    p.set_defaults(fn=cmd_cache)

    args, extra = parser.parse_known_args(argv)
    if args.command == "run":
        args.extra = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.fn(args)
    except ConfigError as exc:  # bad input (a damaged record too): one line naming the input and the fix
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug or a fault: still one line, the traceback on request
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
