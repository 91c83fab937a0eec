"""``benchmark`` command line: one thin sub-command per task over the library functions."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmark.config import ConfigError, parse_overrides, resolve


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys, e.g. --set weights=random lr=0.01")


def cmd_run(args) -> int:
    from benchmark.run import run, run_id_for

    overrides = parse_overrides(args.set)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run one named experiment and write its record")
    p.add_argument("--experiment", help="a name from experiments/*.yaml")
    _add_set(p)
    p.add_argument("--out", default="results/runs", help="results folder (default: results/runs)")
    p.add_argument("--group", help="W&B group")
    p.set_defaults(fn=cmd_run)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
