"""One benchmark run: dataset -> split -> features -> head -> embeddings -> retrieval -> metrics -> record.

Metrics keys (flat, in ``metrics.json`` and the W&B summary):
``val/{top1,top5,top10,map,map_at_r,r_precision,score}``, the same for ``test/``, ``test/{nmi,intra,inter,...}``,
``<split>/validator/{snd,entropy,cycle}`` (label-free, query -> gallery splits; ``benchmark.evaluation.validators``),
``time/train_s`` (head training incl. per-epoch validation, without the time spent obtaining
features), ``time/fetch_s`` (what this run spent obtaining features: extraction or a cache read),
``time/total_s`` (the whole run), ``time/features_s`` (what the frozen features this run uses cost to
compute, even when read from the cache), ``time/cost_s`` = total - fetch + features (the cost of this
configuration on its own), ``score_per_minute`` = test/score / (time/cost_s / 60) and ``diverged``
(1.0 when the training loss blew up, ``benchmark.divergence``). A metric that could not be computed
(a split without a scorable query) is null, never 0 (``benchmark.results.schema.mark_missing``).

An ensemble (``backbone: ensemble``) records its members in ``status.json`` (``members``: each one's
backbone, weight, feature size, preprocessing and feature-cache files) and, as its test embeddings,
the members' side by side (``benchmark.evaluation.fusion``); with ``fusion: minmax`` its rankings come
from the fused similarity, and it has no ``test/{nmi,intra,inter,...}`` (no embedding space).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import splits
from benchmark.config import RUN_INDEPENDENT_KEYS, Config, ConfigError, dump_yaml
from benchmark.divergence import divergence
from benchmark.evaluation import fusion, remedies
from benchmark.evaluation.evaluate import split_evaluation, split_validators
from benchmark.evaluation.metrics import degenerate, embedding_metrics
from benchmark.features.cache import FeatureCache
from benchmark.features.engines import EnsembleEngine
from benchmark.files import check_writable, write_error
from benchmark.models.backbones import check_align
from benchmark.models.head import embed
from benchmark.pipeline import Checked, preflight, prepare
from benchmark.results import record, schema
from benchmark.tracking import Tracker, agent_run
from benchmark.training.fit import fit


def run_id_for(cfg: Config, overrides: dict | None = None) -> str:
    """Deterministic folder name: the experiment, its seed, and any extra overrides (spelled out
    when short, e.g. ``-protocol=open-set``, else a hash of them). Keys that cannot change a result
    (``RUN_INDEPENDENT_KEYS``: tracking, device, cache_dir ...) are left out: the same run, same folder."""
    rid = cfg.experiment if cfg.seed == 0 else f"{cfg.experiment}-seed{cfg.seed}"
    extra = {k: v for k, v in sorted((overrides or {}).items())
             if k not in ("experiment", "seed", *RUN_INDEPENDENT_KEYS)}
    if extra:
        spelled = "-".join(f"{k}={v}" for k, v in extra.items())
        if len(spelled) <= 40 and re.fullmatch(r"[\w.=+-]+", spelled):
            return f"{rid}-{spelled}"
        rid += "-" + hashlib.sha1(json.dumps(extra, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return rid


def execute(cfg: Config, tracker: Tracker | None = None, should_stop=None, checked: Checked | None = None):
    """Run ``cfg``; returns (metrics, history, head or None, prepared, test embeddings).

    ``should_stop(history) -> bool``: asked between epochs (``benchmark.training.fit``); when it says
    stop, the run is evaluated there and ``prepared.stopped_epoch`` is the last epoch trained.
    ``checked``: the config's ``preflight`` when the caller ran it (``run``); the run's time counts from it."""
    t_start = checked.started if checked is not None else time.perf_counter()
    prep = prepare(cfg, checked)
    cfg, engine = prep.cfg, prep.engine
    t_train, fetch_before = time.perf_counter(), engine.fetch_s
    head, history, best_epoch, diverged = None, [], 0, None
    if cfg.embedding == "head":
        def stop(history):
            prep.stopped_epoch = len(history) if should_stop(history) else None
            return prep.stopped_epoch is not None

        model, history, best_epoch = fit(cfg, engine, tracker.log_epoch if tracker else None,
                                         stop if should_stop else None)
        head = model.head
        diverged = divergence(history, engine.n_classes)
        prep.warnings += [diverged] if diverged else []
    # head training only: features extracted (or read) lazily during the epochs are not training
    train_s = time.perf_counter() - t_train - (engine.fetch_s - fetch_before)
    metrics: dict[str, float] = {}
    labels = prep.df["label"].to_numpy()
    test_emb = None
    for split in ("val", "test"):
        idx = engine.split_index(split)
        if not len(idx):  # e.g. open-set on 2 people: every key present, the metrics missing
            metrics |= {f"{split}/{k}": v for k, v in schema.empty_split().items()}
            continue
        emb = embed(head, engine.eval_features(split)).cpu().numpy()
        why = degenerate(emb)  # flagged (1.0) with a warning; non-finite values give no number at all
        finite = bool(np.isfinite(emb).all())
        sides = prep.df["side"].to_numpy()[idx] if "side" in prep.df else None
        skipped: dict[str, str] = {}
        values, per_query = split_evaluation(emb, labels[idx], sides, cfg, skipped) if finite else \
            ({k: None for k in (*schema.RANKING, "n_queries")} | schema.split_facts(labels[idx]), None)
        found, unfound = split_validators(emb, sides, cfg)
        prep.warnings += [f"{split}: {note}" for note in remedies.skip_notes(skipped) + unfound]
        if split == "test":
            prep.test_query_scores = per_query
        metrics |= {f"{split}/{k}": v for k, v in (values | found).items()}
        metrics[f"{split}/degenerate"] = float(why is not None)
        if why:
            prep.warnings.append(f"{split} embeddings are degenerate: {why}; its metrics are flagged "
                                 f"({split}/degenerate = 1) and mean nothing. Fix: real weights (or a backbone "
                                 "whose random init does not collapse, e.g. resnet18), a lower lr, normalize=true")
        if split == "test":
            test_emb = emb
            if finite and not fusion.fused(cfg):
                metrics |= {f"test/{k}": v for k, v in embedding_metrics(emb, labels[idx], cfg.seed).items()}
    total_s = time.perf_counter() - t_start
    cost_s = total_s - engine.fetch_s + engine.features_s
    test_score = metrics.get("test/score")
    metrics |= {"best_epoch": best_epoch, "time/train_s": train_s, "time/fetch_s": engine.fetch_s,
                "time/total_s": total_s,
                "time/features_s": engine.features_s, "time/cost_s": cost_s,
                "score_per_minute": None if test_score is None else test_score / (cost_s / 60)}
    if cfg.embedding == "head":  # 1.0 / 0.0, so that its mean over seeds is the fraction that diverged
        metrics["diverged"] = float(diverged is not None)
    no_face = engine.no_face()
    if no_face is not None:  # face backbones: images that fell back to the central square
        metrics |= {"align/no_face": no_face, "align/images": len(prep.df)}
        metrics |= {f"align/no_face_{style}": n for style, n in engine.no_face_styled().items()}
    metrics, notes = schema.mark_missing(schema.check_metrics(metrics))  # NaN -> null, never 0
    if "val" in schema.unscorable(metrics):  # the per-epoch validation numbers are the same zeros
        for row in history:
            row.update({k: None for k in row if k.startswith("val/") and k != "val/loss"})
    prep.warnings += notes
    for note in prep.warnings:
        warnings.warn(f"{cfg.experiment}: {note}", stacklevel=2)
    return metrics, history, head, prep, test_emb


def run(cfg: Config, out_dir: Path | str, run_id: str | None = None, group: str | None = None,
        raise_errors: bool = True, should_stop=None, status: dict | None = None) -> dict:
    """Run ``cfg`` and write its record ``out_dir/run_id``; a failure is recorded with its reason.

    Bad input is refused before anything is written: the config's ``preflight`` (dataset, domains
    manifest, identity counts, backbone, members and their weights, images, split) runs before the
    record folder and the W&B run exist, and its ConfigError reaches the caller with nothing written
    (the command line's one line, exit 2). With ``raise_errors=False`` (a sweep) and under ``wandb
    agent`` such a run is recorded as failed instead, so the sweep goes on and the agent's run ends.
    Any other failure (the preflight's included: a decode that crashes, memory) is recorded as failed.

    ``should_stop``: a sweep's early termination, asked between epochs (``execute``); a run it stops
    is recorded with status ``stopped``, its metrics at the stop and ``stopped_epoch``. ``status``:
    extra facts for ``status.json`` (the sweep that started the run)."""
    check_align(cfg)  # a face detector this machine lacks: one line, no failed record
    # before any work, not after training; the folder itself is made by the record or the W&B run
    out_dir = check_writable(out_dir, "output folder (--out)", create=False)
    if cfg.engine == "cached":
        check_writable(FeatureCache(cfg.cache_dir).root, "feature cache folder (cache_dir or $BENCHMARK_CACHE_DIR)")
    run_id = run_id or run_id_for(cfg)
    files = {"config.yaml": dump_yaml(cfg)}
    t0 = time.time()
    tracker: Tracker | None = None

    def fail(exc: BaseException) -> dict:
        """Record the run as failed (called inside the ``except``); a disk too full even for that
        small record is reported, and the caller (a sweep) goes on."""
        nonlocal tracker
        doc = {**(status or {}), "status": "failed", "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc(), "started": t0, "ended": time.time()}
        try:
            record.write(out_dir, run_id, {"config.yaml": dump_yaml(cfg)}, doc)
        except OSError as again:
            warnings.warn(f"{run_id}: its failure could not be recorded either ({again.strerror or again}): "
                          f"{doc['error']}", stacklevel=3)
        tracker = tracker or Tracker(cfg, out_dir, run_id, group)
        tracker.finish({"status": "failed", "error": doc["error"]}, failed=True)
        if raise_errors:
            raise exc
        return {"status": "failed", "error": doc["error"]}

    try:
        checked = preflight(cfg)
    except ConfigError as exc:
        if raise_errors and agent_run() is None:
            raise  # bad input: one line, no record, no W&B run
        return fail(exc)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return fail(exc)
    tracker = Tracker(cfg, out_dir, run_id, group)
    try:
        metrics, history, _, prep, test_emb = execute(cfg, tracker, should_stop, checked)
    except KeyboardInterrupt:  # nothing recorded: the run is not finished, a resumed sweep runs it
        tracker.finish({"status": "failed", "error": "interrupted"}, failed=True)
        raise
    except BaseException as exc:
        return fail(exc)
    files["config.yaml"] = dump_yaml(prep.cfg)  # with the input size the backbone required
    df = prep.df
    test = df[df["split"] == "test"]
    query_gallery = {"sides": test["side"].to_numpy(dtype=str)} if "side" in test else {}
    if prep.test_query_scores is not None:  # for paired comparisons (report)
        query_gallery["query_scores"] = prep.test_query_scores
    embeddings = record.npz_bytes(embeddings=test_emb.astype(np.float32), labels=test["label"].to_numpy(),
                                  identities=test["identity"].to_numpy(dtype=str),
                                  paths=test["path"].to_numpy(dtype=str), **query_gallery)
    files |= {
        "metrics.json": json.dumps(metrics, indent=1),
        "history.csv": pd.DataFrame(history).to_csv(index=False),
        "embeddings.npz": embeddings,
        "environment.json": json.dumps(record.environment(prep.device), indent=1),
        "split.json": splits.to_json(df, cfg),
    }
    outcome = {"status": "ok"} if prep.stopped_epoch is None else \
        {"status": "stopped", "stopped_epoch": prep.stopped_epoch}
    members = {"members": prep.engine.describe()} if isinstance(prep.engine, EnsembleEngine) else {}
    try:  # atomic: a full disk leaves no half record, only this failure
        record.write(out_dir, run_id, files, {**(status or {}), **outcome, **members, "started": t0,
                                              "ended": time.time(), "warnings": prep.warnings,
                                              "skipped_images": prep.skipped_images})
    except OSError as exc:
        return fail(write_error(out_dir / run_id, sum(len(v) for v in files.values()), exc,
                                "give --out a folder on another disk"))
    tracker.log_examples(test_emb, test["label"].to_numpy(), test["identity"].tolist(), test["path"].tolist(),
                         query_gallery.get("sides"), test["style"].tolist() if "style" in test else None)
    tracker.finish({**outcome, **metrics})
    return {**outcome, **metrics}
