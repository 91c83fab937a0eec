"""Weights & Biases tracking that never costs the local record.

Mode: ``tracking: none`` or ``WANDB_MODE=disabled`` or no wandb installed -> nothing is logged;
otherwise online when credentials exist, else offline with the run files under the output folder
(``wandb sync <out>/wandb/offline-run-*`` uploads them later). Every W&B call is guarded: an error
is reported once and tracking stops, the run goes on.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from benchmark.config import Config

try:
    import wandb
except ImportError:  # the GPU machine has no wandb: runs still work
    wandb = None


def _has_credentials() -> bool:
    """Whether wandb itself finds an API key for its host (``WANDB_API_KEY``, an identity token, or
    the netrc file it would read: ``$NETRC`` or ``~/.netrc``), asked through wandb's own reader and
    without verifying it online. A netrc that cannot be read (a folder, no permission, malformed)
    counts as no credentials: wandb warns about it and the run goes offline."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        from wandb.sdk.lib import wbauth

        return bool(wbauth.read_netrc_auth(host=wandb.Settings().base_url))
    except Exception:
        return False


def wandb_mode(cfg: Config) -> str | None:
    """online | offline | None (no tracking)."""
    if cfg.tracking == "none" or wandb is None or os.environ.get("WANDB_MODE") == "disabled":
        if cfg.tracking == "wandb" and wandb is None:
            warnings.warn("tracking=wandb but wandb is not installed; the run is recorded locally only")
        return None
    if os.environ.get("WANDB_MODE") in ("online", "offline"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_credentials() or os.environ.get("WANDB_SWEEP_ID") else "offline"


def agent_run():
    """The W&B run ``wandb agent`` started for this process (``sweep.params_from_wandb``), else None."""
    return wandb.run if wandb is not None and os.environ.get("WANDB_SWEEP_ID") else None


class Tracker:
    """One W&B run per benchmark run; a no-op when tracking is off or after a W&B error.

    Under ``wandb agent`` the agent's run is used whatever ``tracking`` says, and always finished
    with the summary: the agent waits for it."""

    def __init__(self, cfg: Config, out_dir: Path, run_id: str, group: str | None = None,
                 job_type: str = "benchmark-run"):
        self.run = None
        mode = wandb_mode(cfg)
        if mode is None and agent_run() is None:
            return
        self._guard(lambda: self._init(cfg, out_dir, run_id, group, mode, job_type))

    def _init(self, cfg, out_dir, run_id, group, mode, job_type):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.run = agent_run()
        if self.run is not None:
            self.run.name = run_id  # its group was given at init (sweep.params_from_wandb)
        else:
            self.run = wandb.init(
                project=cfg.wandb_project, group=group or cfg.wandb_group, name=run_id,
                job_type=job_type, config=cfg.to_dict(), dir=str(out_dir), mode=mode,
                settings=wandb.Settings(init_timeout=60, silent=True))
        # keys the sweep set are locked by W&B: writing them again only prints warnings
        own = {**cfg.to_dict(), "run_id": run_id}
        self.run.config.update({k: v for k, v in own.items() if k not in self.run.config}, allow_val_change=True)

    def _guard(self, fn):
        try:
            return fn()
        except Exception as exc:  # W&B trouble must never lose or block the local record
            warnings.warn(f"W&B tracking stopped: {type(exc).__name__}: {exc}")
            self.run = None

    def log_epoch(self, row: dict) -> None:
        if self.run is not None:
            self._guard(lambda: self.run.log({k: v for k, v in row.items() if k != "epoch"},
                                             step=int(row["epoch"])))

    def log_examples(self, emb: np.ndarray, labels: np.ndarray, identities: list[str], paths: list[str],
                     sides: np.ndarray | None = None, seen: list[str | None] | None = None,
                     n_queries: int = 8, k: int = 10) -> None:
        """A table of example queries and their top-k; ``sides``/``seen``: a query -> gallery split and
        the style each item was evaluated in (thumbnails show what the backbone saw)."""
        if self.run is not None:
            self._guard(lambda: self.run.log({"retrieval_examples": examples_table(
                emb, labels, identities, paths, n_queries, k, sides, seen)}))

    def log_files(self, **items) -> None:
        """Tables (DataFrames) and figures (PNG paths) of a report."""
        if self.run is None:
            return

        def log():
            import pandas as pd

            self.run.log({name: wandb.Table(dataframe=v) if isinstance(v, pd.DataFrame) else wandb.Image(str(v))
                          for name, v in items.items()})
        self._guard(log)

    def finish(self, summary: dict, failed: bool = False) -> None:
        if self.run is not None:
            def end():
                self.run.summary.update(summary)
                self.run.finish(exit_code=1 if failed else 0)
            self._guard(end)
            self.run = None


def report_tracker(name: str, out_dir: Path) -> Tracker:
    """A W&B run of job type ``report`` to log a report's tables and figures."""
    from benchmark.config import Config

    return Tracker(Config(experiment=f"report-{name}", tracking="wandb"), out_dir, f"report-{name}", group=name,
                   job_type="report")


def examples_table(emb, labels, identities, paths, n_queries, k, sides=None, seen=None):
    from benchmark.examples import pick_queries, thumbnail, top_k

    seen = seen if seen is not None else [None] * len(paths)
    queries = pick_queries(labels, n_queries, sides=sides)
    rows = list(zip(queries, top_k(emb, labels, queries, k, sides)))
    # a gallery smaller than k ranks fewer: as many rank columns as the longest list (a fixed k made
    # W&B refuse the table, "expects 13 columns, found 9", and stop tracking the run)
    ranks = max((len(ranked) for _, ranked in rows), default=0)
    table = wandb.Table(columns=["query", "identity", "hits@k"] + [f"rank{r}" for r in range(1, ranks + 1)])
    for q, ranked in rows:
        cells = [wandb.Image(thumbnail(paths[i], ok, style=seen[i]), caption=f"{'✓' if ok else '✗'} {identities[i]}")
                 for i, ok in ranked]
        table.add_data(wandb.Image(thumbnail(paths[q], style=seen[q])), identities[q], sum(ok for _, ok in ranked),
                       *cells, *[None] * (ranks - len(cells)))
    return table
