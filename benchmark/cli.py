"""``benchmark`` command line: one thin sub-command per task over the library functions."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from pathlib import Path

from benchmark.config import EXPERIMENTS_ENV, FIELDS, HEAD_KEYS, NO_HEAD, ConfigError, parse_overrides, resolve


class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (when it has one and the sentence does not say it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == [] \
            or action.default == argparse.SUPPRESS
        if "default" not in text and not unset and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _one_line(message, category, filename, lineno, line=None) -> str:
    """A warning as the command line shows it: ``warning: <message>``, without Python's source line."""
    return f"warning: {message}\n"


@contextlib.contextmanager
def _said_once(summary: list[str]):
    """Hold back the warnings of a command whose printed summary lists them (``choose``, ``submit``):
    each is said once, by the summary, or after it when the summary does not hold it (or the
    command failed before printing one)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            text = "\n".join(summary)
            for w in caught:
                if str(w.message) not in text:
                    print(_one_line(w.message, w.category, w.filename, w.lineno), end="", file=sys.stderr)


def _add_experiments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiments", nargs="+", action="extend", metavar="DIR",
                   help="also read named experiments (and sweeps/) from these folders; a name defined there "
                        "replaces the shipped one (same as $BENCHMARK_EXPERIMENTS; default: only the shipped ones)")


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
        from benchmark.sweep import environment_note, params_from_wandb

        note = environment_note()
        if note:
            print(note, file=sys.stderr)
        experiment, overrides = params_from_wandb(experiment, overrides, args.out, args.group)
    if not experiment:
        raise ConfigError("--experiment NAME is required: the named experiment to start from "
                          "(benchmark list experiments)")
    cfg = resolve(experiment, overrides)
    result = run(cfg, Path(args.out), run_id_for(cfg, overrides), group=args.group)
    keys = ["val/score", "test/top1", "test/top5", "test/top10", "test/map", "test/score", "time/total_s"]
    print(json.dumps({k: None if result.get(k) is None else round(result[k], 4) for k in keys}, indent=1))
    print(f"record: {Path(args.out) / run_id_for(cfg, overrides)}")
    return 0


def cmd_sweep(args) -> int:
    from benchmark import sweep

    df = sweep.run_sweep(args.sweep_file, args.out, parse_overrides(args.set), select=args.select, seeds=args.seeds,
                         rerun=args.rerun, rerun_failed=args.rerun_failed, budget=args.budget,
                         search_seed=args.search_seed)
    print(sweep.format_summary(df))
    if args.report:
        from benchmark.results import store
        from benchmark.report import build_report

        out = args.out or Path("results") / sweep.load(args.sweep_file)["name"]
        print(f"report: {build_report(store.load(out), Path(args.report))}")
    return sweep.exit_code(df)


def cmd_results(args) -> int:
    from benchmark.results import store

    for path in args.export:  # before reading the results, not after
        store.export_target(path)
    df = store.load(args.results_dir)
    if df.empty:
        print(f"no finished runs in {args.results_dir}")
        return 0
    cols = args.columns or [c for c in ("run_id", "status", "backbone", "lr", "epochs", "seed", "val/score",
                                        "test/top1", "test/top5", "test/top10", "test/map", "test/score",
                                        "time/cost_s", "error") if c in df]
    shown = df.sort_values("run_id")[cols]
    if "embedding" in df:  # frozen features: their lr/epochs/augment were never used (as in Table 2)
        frozen = df.loc[shown.index, "embedding"] == "backbone"
        for c in (c for c in cols if c in HEAD_KEYS):
            shown[c] = shown[c].astype(object).where(~frozen, NO_HEAD)
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", max_colwidth=50))
    for _, row in df[df["status"] == "damaged"].iterrows():  # the full reason: it names the file
        print(f"damaged: {row['run_id']}: {row['error']} (`benchmark sweep` reruns it)")
    for path in args.export:
        print(f"wrote {store.export(df, path)}")
    return 0


def cmd_report(args) -> int:
    from benchmark.files import check_writable
    from benchmark.results import store
    from benchmark.report import build_report
    from benchmark.tracking import report_tracker

    if bool(args.results_dir) == bool(args.from_wandb):
        raise ConfigError("give either RESULTS_DIR or --from-wandb ENTITY/PROJECT/SWEEP_ID")
    name = args.from_wandb.rstrip("/").split("/")[-1] if args.from_wandb else Path(args.results_dir[0]).resolve().name
    out = check_writable(Path(args.out or Path("reports") / name), "report folder (--out)", create=False)
    if args.from_wandb:  # per-epoch histories land in OUT/wandb-history/<run id>/history.csv
        df = store.fetch_wandb(args.from_wandb, out / "wandb-history")
        if df.attrs.get("in_progress"):
            print(f"{len(df.attrs['in_progress'])} run(s) still running or pending, left out: "
                  f"{', '.join(df.attrs['in_progress'])}")
    else:  # several folders: e.g. one search per method, compared in the search section
        import pandas as pd

        df = pd.concat([store.load(d) for d in args.results_dir], ignore_index=True)
    tracker = report_tracker(name, out) if args.log_wandb else None
    print(f"report: {build_report(df, out, tracker=tracker)}")
    if tracker:
        tracker.finish({})
    return 0


def cmd_choose(args) -> int:
    from benchmark.files import check_writable
    from benchmark.results import store
    from benchmark.choose import choose, format_choice, rule_columns, select, write_best

    rule_columns(args.by)  # a name that is no quality measure: one line before the results are read
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file, e.g. --out {out / 'best.yaml'}")
    check_writable(out.parent, "folder of --out", create=False)  # before reading the results, not after
    summary: list[str] = []
    with _said_once(summary):
        choice = choose(select(store.load(args.results_dir), args.select), args.by,
                        include_stopped=args.include_stopped)
        summary.append(format_choice(choice))
        print(summary[-1])
    print(f"wrote {write_best(choice, args.out)}")
    return 0


def cmd_submit(args) -> int:
    from benchmark.config import load_yaml
    from benchmark.submit import format_summary, submit

    cfg = load_yaml(args.config)
    overrides = parse_overrides(args.set)
    if overrides:
        cfg = cfg.replace(**overrides)
    summary: list[str] = []
    with _said_once(summary):
        summary.append(format_summary(submit(cfg, args.query, args.gallery, k=args.k, out=Path(args.out),
                                             index_dir=args.index_dir, train_dir=args.train,
                                             groupname=args.groupname)))
        print(summary[-1])
    return 0


def cmd_score(args) -> int:
    from benchmark.evaluation.scoring import score_files

    result = score_files(args.submission, args.truth)
    print(json.dumps(result, indent=1))
    return 0


def _style_keys(args) -> str:
    """The parameters ``--style-arg`` takes: those of ``--gallery-style`` (benchmark list styles)."""
    from benchmark.features import styles
    from benchmark.params import describe

    if (args.gallery_style or "none") not in styles.STYLES:
        return "the parameters of the --gallery-style (STYLE.KEY in a mix; benchmark list styles)"
    return describe(styles.params(args.gallery_style))


def cmd_check_submission(args) -> int:
    from benchmark.data.imagefolder import list_images
    from benchmark.evaluation import formats

    if args.k < 1:
        raise ConfigError(f"--k {args.k} must be >= 1 (the server reads {formats.K})")
    folders = {}
    for role, folder in (("query", args.query), ("gallery", args.gallery)):
        if not Path(folder).is_dir():
            raise ConfigError(f"--{role} {folder} is not a folder; give the test's {role} image folder")
        folders[role] = [p.name for p in list_images(Path(folder))]
        if not folders[role]:  # the folder's fault, not problems of the submission
            raise ConfigError(f"--{role} {folder} holds no image files; give the test's {role} image folder")
    if args.k > len(folders["gallery"]):
        raise ConfigError(f"--k {args.k} is larger than the gallery ({len(folders['gallery'])} images in "
                          f"{args.gallery}): no query can list {args.k} distinct gallery names; give the k the "
                          f"server reads (--k {formats.K}) and the test's gallery folder")
    # unreadable (not JSON, a key given twice): exit 2 here; problems of a readable submission: exit 1 below
    doc = formats.load(args.submission)
    found = formats.problems(doc, folders["query"], folders["gallery"], args.k)
    for line in found:
        print(f"problem: {line}")
    if found:
        print(f"{args.submission}: {len(found)} problem(s); the server would not read it as intended")
        return 1
    print(f"{args.submission}: ok: group {doc['groupname']!r}, {len(doc['images'])} queries x {args.k} distinct "
          "gallery names, every query answered, bare file names of these folders")
    return 0


def cmd_make_competition(args) -> int:
    from benchmark.competition import PRESETS, make_competition

    given = {k: v for k, v in {"train_min": args.train_min, "test_min": args.test_min, "test_max": args.test_max,
                               "n_query_per_identity": args.queries_per_identity,
                               "max_test_identities": args.max_test_identities,
                               "max_train_identities": args.max_train_identities,
                               "max_train_images_per_identity": args.max_train_images_per_identity,
                               "max_gallery_per_identity": args.max_gallery_per_identity}.items() if v is not None}
    gallery = {"gallery_style": "none" if args.gallery_style is None else args.gallery_style,
               "style_args": parse_overrides(args.style_arg, "--style-arg", _style_keys(args))}
    said: list[str] = []  # printed once the inputs are checked: never before an input error
    preset = PRESETS[args.preset] if args.preset else None
    if preset:  # the edition's shape and calibrated gallery; an option given on the line still wins
        from_preset = {k: v for k, v in preset["params"].items() if k not in given}
        given = {**preset["params"], **given}
        if args.gallery_style is None:
            mine = gallery["style_args"]
            gallery = {"gallery_style": preset["gallery"]["gallery_style"],
                       "style_args": {**preset["gallery"]["style_args"], **mine}}
            calibrated = (f"changed by --style-arg: frozen SFace {preset['gallery']['sface']} was measured without "
                          "the change" if mine else f"calibrated: frozen SFace {preset['gallery']['sface']} on it")
            said.append(f"preset {args.preset} gallery: {gallery['gallery_style']} "
                        f"{' '.join(f'{k}={v}' for k, v in gallery['style_args'].items())} ({calibrated})")
        said.append(f"preset {preset['note']}")
    try:
        manifest = make_competition(args.out, data_home=args.data_home, seed=args.seed, overwrite=args.overwrite,
                                    gallery_style=gallery["gallery_style"], style_args=gallery["style_args"] or None,
                                    train_styles=args.train_styles, train_render_fraction=args.train_render_fraction,
                                    announce=lambda: print("\n".join(said), file=sys.stderr) if said else None,
                                    **given)
    except ConfigError as exc:  # name the values the preset chose, which the user never typed
        named = [f"--{k.replace('_', '-')} {v}" for k, v in (from_preset.items() if preset else ())
                 if f"--{k.replace('_', '-')} " in str(exc)]
        if named:
            raise ConfigError(f"{exc} ({', '.join(named)} from --preset {args.preset}; give the option to "
                              "change it)") from None
        raise
    print(json.dumps({k: manifest[k] for k in ("counts", "paths")}, indent=1))
    return 0


def _entry_kind(entry: dict) -> str:
    """What a cache entry holds: the ``kind`` its writer recorded, else read from its key (every kind
    gets a label, not blank columns)."""
    if entry.get("check") == "unreadable":
        return "unreadable"
    if isinstance(entry.get("kind"), str):
        return entry["kind"]
    if "backbone" not in entry and "align" in entry:
        return "face detections"
    what = "boundary activations" if entry.get("trainable_blocks") else "features"
    view = entry.get("view")
    return f"{what}, eval view" if view == "eval" else f"{what}, augmented view {view}" if view is not None else what


def cmd_cache(args) -> int:
    from benchmark.features.cache import FeatureCache

    cache = FeatureCache(args.dir)
    if cache.root.exists() and not cache.root.is_dir():
        raise ConfigError(f"cache folder {cache.root} is a file; give the feature cache folder "
                          "(--dir, $BENCHMARK_CACHE_DIR or the default user cache)")
    if args.action == "clear":
        print(f"removed {cache.clear()} entries from {cache.root}")
        return 0
    if not cache.root.exists():
        print(f"{cache.root}: no such folder, 0 entries (nothing cached there yet)")
        return 0
    import pandas as pd

    entries = cache.entries()
    print(f"{cache.root}: {len(entries)} entries, {sum(e['bytes'] for e in entries) / 1e6:.1f} MB")
    if entries:
        df = pd.DataFrame(entries)
        df["kind"] = [_entry_kind(e) for e in entries]
        if "align" in df:  # face detections: the detector is their "backbone"
            faces = df["kind"] == "face detections"
            df.loc[faces, "backbone"] = df.loc[faces, "align"].astype(str).str.split(":").str[0]
            df.loc[faces, "weights"] = df.loc[faces, "align"].astype(str).str.split(":").str[1].str[:12]
        if "created" in df:
            df["created"] = pd.to_datetime(df["created"], unit="s").dt.strftime("%Y-%m-%d %H:%M")
        if "image_size" in df:
            df["size"] = [f"{i:.0f}/{r:.0f}" if not pd.isna(i) else "" for i, r in zip(df["image_size"], df["resize"])]
        df["file"] = df["file"].str[:12]
        df["images"] = df.get("images", pd.Series("", index=df.index)).astype(str).str[:8]
        df["MB"] = df["bytes"] / 1e6
        if "mean" in df:  # the key holds the statistics used (none: [0, 1] pixels)
            df["normalize"] = df["mean"].map(lambda m: "yes" if isinstance(m, list) else "no" if m is None else "")
        cols = ["file", "kind", "backbone", "weights", "dataset", "images", "shape", "normalize", "precision",
                "runtime", "size", "MB", "created", "cost_s", "check"]
        print(df[[c for c in cols if c in df]].fillna("").to_string(index=False, float_format=lambda v: f"{v:.1f}"))
        bad = int(df["broken"].sum())
        if bad:
            print(f"{bad} entries fail their checksum or cannot be read: they are recomputed on next use "
                  "(benchmark cache clear removes everything)")
    return 0


def _wrapped_table(df, width: int) -> str:
    """``df`` as left-aligned columns; a cell longer than ``width`` wraps onto the next lines (a fix
    text, a path is shown whole, never cut)."""
    import textwrap

    cells = [[textwrap.wrap(str(v), width, break_on_hyphens=False) or [""] for v in row]
             for row in df.astype(str).itertuples(index=False)]
    widths = [max([len(str(c))] + [len(line) for row in cells for line in row[i]]) for i, c in enumerate(df)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(df, widths)).rstrip()]
    for row in cells:
        for k in range(max(map(len, row))):
            line = "  ".join((cell[k] if k < len(cell) else "").ljust(w) for cell, w in zip(row, widths))
            lines.append(line.rstrip())
    return "\n".join(lines)


def cmd_list(args) -> int:
    from benchmark.catalog import LISTS

    df = LISTS[args.what]()
    print(_wrapped_table(df, args.width) if len(df) else f"no {args.what}")
    return 0


#: address space torch maps when imported: below it the import dies in a segfault, with no message
TORCH_ADDRESS_SPACE = 4 << 30


def _address_space_limit() -> int | None:
    """The soft ``ulimit -v`` in bytes, or None when unlimited."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _check_address_space() -> None:
    limit = _address_space_limit()
    if limit is not None and limit < TORCH_ADDRESS_SPACE:
        raise ConfigError(f"the virtual-memory limit (ulimit -v) is {limit / 2**30:.2f} GiB: torch maps about "
                          f"{TORCH_ADDRESS_SPACE >> 30} GiB of address space when it loads and crashes below it (a "
                          "segfault, no message), and a run's threads need about 12 GiB. Fix: ulimit -v unlimited "
                          "(address space is not memory used; limit memory with ulimit -m or a cgroup instead)")


def _address_space_hint(exc: Exception) -> str:
    """Why a MemoryError or a thread that cannot start happened, when ``ulimit -v`` is what ran out."""
    limit = _address_space_limit()
    ran_out = ("can't start new thread", "failed to map segment", "Cannot allocate memory")
    if limit is None or not (isinstance(exc, MemoryError) or any(s in str(exc) for s in ran_out)):
        return ""
    return (f"; the virtual-memory limit (ulimit -v {limit / 2**30:.2f} GiB) ran out, not memory: a run's threads "
            "need about 12 GiB of address space. Fix: ulimit -v unlimited")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("BENCHMARK_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    parser = argparse.ArgumentParser(prog="benchmark", description=__doc__, formatter_class=_Help,
                                     epilog="`benchmark COMMAND --help` describes each command's options. "
                                            "--debug (anywhere) or BENCHMARK_DEBUG=1: show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run one named experiment and write its record")
    p.add_argument("--experiment", help="a named experiment (benchmark list experiments); under `wandb agent` "
                                        "the sweep's parameter decides")
    _add_set(p)
    _add_experiments(p)
    p.add_argument("--out", default="results/runs", help="results folder; the record goes to OUT/<run id>")
    p.add_argument("--group", help="W&B group of the run (default: none; under `wandb agent`: the sweep id)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("sweep", help="run a sweep file offline (resumable, shareable by processes)")
    p.add_argument("sweep_file", help="a sweep file (e.g. sweep.yaml) or a named sweep (benchmark list sweeps)")
    _add_set(p)
    _add_experiments(p)
    p.add_argument("--out", help="results folder (default: results/<sweep name>)")
    p.add_argument("--select", nargs="+", metavar="PATTERN",
                   help="only experiments matching these globs (default: all of the sweep)")
    p.add_argument("--seeds", type=int, help="repeat every experiment with seeds 0..N-1 (default: the config's seed)")
    p.add_argument("--rerun", action="store_true", help="run again even when a record exists")
    p.add_argument("--rerun-failed", action="store_true", help="run again the runs recorded as failed")
    p.add_argument("--budget", type=float, metavar="MINUTES",
                   help="start no run that would likely not end within MINUTES (estimate: the mean wall time "
                        "of the sweep's recorded runs); the run in progress is always finished and recorded")
    p.add_argument("--search-seed", type=int, default=0,
                   help="seed of the random/bayes proposals: the same seed and folder propose the same runs")
    p.add_argument("--report", metavar="DIR",
                   help="write the report of the results folder there at the end (default: no report)")
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("results", help="print a results folder as a table; export CSV/Parquet")
    p.add_argument("results_dir", help="a results folder of run records (e.g. results/report-ablation)")
    p.add_argument("--export", nargs="+", default=[], metavar="FILE",
                   help="also write the full table as *.csv or *.parquet (default: no export)")
    p.add_argument("--columns", nargs="+", help="columns to print (default: id, status, main config keys and metrics)")
    p.set_defaults(fn=cmd_results)

    p = sub.add_parser("report", help="tables, figures and report.md from a results folder or a W&B sweep")
    p.add_argument("results_dir", nargs="*", help="a results folder (e.g. results/report-ablation), or several "
                                                  "read as one (e.g. one search per method)")
    p.add_argument("--from-wandb", metavar="ENTITY/PROJECT/SWEEP_ID",
                   help="pull the runs of a W&B sweep with their per-epoch history instead (runs still running "
                        "or pending are left out)")
    p.add_argument("--out", help="output folder (default: reports/<results folder or sweep name>)")
    p.add_argument("--log-wandb", action="store_true",
                   help="also log the tables and figures to a W&B run of job type report")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("choose", help="pick the best configuration by VALIDATION metric; write best.yaml")
    p.add_argument("results_dir", help="a results folder of run records")
    from benchmark.evaluation.validators import RECORDED

    directions = ", ".join(f"{n}: {'higher' if v.higher else 'lower'} is better" for n, v in RECORDED.items())
    from benchmark.evaluation.measures import RANKING

    p.add_argument("--by", "--metric", dest="by", default="val/score", metavar="NAME",
                   help="what to rank by, a quality measure: a validation ranking metric (val/"
                        f"{', val/'.join(RANKING)}: higher is better; a bare name such as score is val/'s); a "
                        f"label-free validator ({directions}) by its bare name (snd), validator/NAME (both = "
                        "val/validator/NAME) or test/validator/NAME (the test split's: it reads no test label, so "
                        "it may choose); or a rank average of several distinct ones joined by '+', e.g. "
                        "val/score+snd (each run's percentile per component, averaged). Anything else (times, "
                        "val/degenerate, val/n_queries) is refused. --metric is the old name (default: val/score)")
    p.add_argument("--out", default="best.yaml", help="where to write the chosen config (default: best.yaml)")
    p.add_argument("--include-stopped", action="store_true",
                   help="also rank runs a sweep's early termination stopped (their metrics at the stop)")
    p.add_argument("--select", nargs="+", metavar="PATTERN",
                   help="only experiments matching these globs, e.g. 'xd-*-cartoon' (one test condition of a "
                        "study; default: all)")
    p.set_defaults(fn=cmd_choose)

    p = sub.add_parser("submit", help="train the chosen config, index the gallery, write submission.json")
    p.add_argument("--config", required=True, help="a config file, e.g. best.yaml from `benchmark choose`")
    _add_set(p)
    p.add_argument("--query", required=True, help="folder of query images")
    p.add_argument("--gallery", required=True, help="folder of gallery images")
    p.add_argument("--k", type=int, default=10, help="gallery images listed per query")
    p.add_argument("--out", default="submission.json", help="the submission file to write")
    p.add_argument("--index-dir", help="where <out>.gallery.index + <out>.gallery_keys.json go (default: beside --out)")
    p.add_argument("--groupname", help="write the competition server's form: {\"groupname\": NAME, \"images\": "
                                       "{query: [k gallery names]}} (default: the bare {query: [...]} mapping)")
    p.add_argument("--train", metavar="DIR",
                   help="train the head on this <identity>/<image> folder, e.g. the competition's train/ "
                        "(default: the config's dataset)")
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("score-submission", help="score a submission.json as the competition did")
    p.add_argument("submission", help="a submission.json: {query file: [gallery files, best first]}")
    p.add_argument("--truth", required=True, help='{"queries": {name: identity}, "gallery": {name: identity}}')
    p.set_defaults(fn=cmd_score)

    p = sub.add_parser("check-submission", help="check a submission file before upload (no truth needed)")
    p.add_argument("submission", help="the file to upload, e.g. submission.json from `benchmark submit --groupname`")
    p.add_argument("--query", required=True, help="the test's query image folder")
    p.add_argument("--gallery", required=True, help="the test's gallery image folder")
    p.add_argument("--k", type=int, default=10, help="gallery names the server reads per query")
    p.set_defaults(fn=cmd_check_submission)

    p = sub.add_parser("make-competition", help="materialize a competition-like query/gallery layout from LFW")
    p.add_argument("--out", required=True, help="folder to write train/, test/query, test/gallery, truth.json to")
    p.add_argument("--data-home", help="folder holding lfw_home/ (default: $SCIKIT_LEARN_DATA)")
    p.add_argument("--preset", choices=["2025", "2026"],
                   help="the course competition's edition shape, scaled to LFW (it prints what was scaled); "
                        "options given on the line still win")
    p.add_argument("--train-min", type=int, help="training people have >= this many images (default: 20)")
    p.add_argument("--test-min", type=int, help="test people (unseen in training) have >= this many images (default: 5)")
    p.add_argument("--test-max", type=int, help="test people (unseen) have test-min..test-max images (default: 19)")
    p.add_argument("--queries-per-identity", type=int,
                   help="query images per test person; the rest of their images go to the gallery (default: 1)")
    p.add_argument("--max-test-identities", type=int, help="keep at most this many test people (default: all)")
    p.add_argument("--max-train-identities", type=int, help="keep at most this many training people (default: all)")
    p.add_argument("--max-train-images-per-identity", type=int,
                   help="a seeded subset of each training person's images (default: all)")
    p.add_argument("--max-gallery-per-identity", type=int,
                   help="a seeded subset of each test person's gallery images (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query/gallery choice and the anonymized names")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder (default: refuse)")
    p.add_argument("--gallery-style",
                   help="render the gallery in this style, or a mix drawn per image, e.g. cartoon,stylization:2,sketch "
                        "(benchmark list styles; none in a mix keeps photos): the competition's real-photo -> "
                        "synthetic-render gap; queries stay photographs (default: none, or the --preset's "
                        "calibrated mix)")
    p.add_argument("--style-arg", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="parameters of the gallery style, e.g. --style-arg size=16, or STYLE.KEY=VALUE in a mix "
                        "(default: its defaults)")
    p.add_argument("--train-styles", default="none",
                   help="training folders also hold renders of each person's photos, each in a style drawn from "
                        "this mix (as the real competition's did); train/domains.csv says which file is which")
    p.add_argument("--train-render-fraction", type=float, default=0.0,
                   help="the fraction of each training person's photos rendered (seeded; at least one)")
    p.set_defaults(fn=cmd_make_competition)

    p = sub.add_parser("cache", help="list or clear the feature cache")
    p.add_argument("action", choices=["ls", "clear"],
                   help="ls: every entry (kind, backbone, weights, images, precision, size, created, cost, "
                        "checksum); clear: remove them all")
    p.add_argument("--dir", help="cache folder (default: $BENCHMARK_CACHE_DIR or the user cache)")
    p.set_defaults(fn=cmd_cache)

    p = sub.add_parser("list", help="named experiments, config keys, backbones, sweeps, styles or remedies")
    p.add_argument("what", choices=["experiments", "keys", "backbones", "sweeps", "styles", "remedies"],
                   help="experiments: names and overrides; keys: every config key with type, default and doc; "
                        "backbones: dimension, input size, weights on this machine; sweeps: named sweep files; "
                        "styles: the renderers of gallery_style/query_style/train_styles and their parameters; "
                        "remedies: the test-time remedies (centering, rerank) and their parameters' domains")
    _add_experiments(p)
    p.add_argument("--width", type=int, default=100, help="wrap longer cells onto more lines at this many characters")
    p.set_defaults(fn=cmd_list)

    for p in sub.choices.values():
        p.formatter_class = _Help

    warnings.formatwarning = _one_line
    args, extra = parser.parse_known_args(argv)
    if args.command == "run":
        args.extra = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "experiments", None):  # for this process and the runs it starts
        os.environ[EXPERIMENTS_ENV] = os.pathsep.join(
            [*(str(Path(d).resolve()) for d in args.experiments), *filter(None, [os.environ.get(EXPERIMENTS_ENV)])])
    try:
        if args.fn in (cmd_run, cmd_sweep, cmd_submit):
            _check_address_space()
        code = args.fn(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:  # `benchmark ... | head`: the reader has seen enough; no traceback, no error line
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush is quiet too
        return 141  # as a process stopped by SIGPIPE
    except KeyboardInterrupt:  # Ctrl-C: one line; records, cache entries and outputs are atomic writes
        if debug:
            raise
        print(f"\ninterrupted: `benchmark {args.command}` stopped by Ctrl-C; what was finished is kept whole and "
              "the unfinished part was discarded (nothing half-written): run the same command again to continue",
              file=sys.stderr)
        return 130
    except ConfigError as exc:  # bad input (a damaged record too): one line naming the input and the fix
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug or a fault: still one line, the traceback on request
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc}{_address_space_hint(exc)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
