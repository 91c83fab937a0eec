"""Run records on disk, the source of truth: ``<out>/<run_id>/`` (files: ``schema.FILES``).

``RunRecord`` is the one reader and writer of a record. A record is assembled in a hidden
temporary folder and renamed into place (``benchmark.files.atomic_path``), so a killed run leaves
no half record. ``metrics.json`` exists exactly when the run has metrics: it succeeded (``ok``) or a
sweep's early termination stopped it (``stopped``, with ``stopped_epoch`` in ``status.json``); a
failed run's record has ``status.json`` with its error instead. Every read is validated: a file
that is missing, truncated or malformed, or that contradicts another file of the record
(``schema``'s rules), raises ``RecordError`` naming the file; ``check()`` reads every file through
these readers and is what ``row()`` (hence ``store.load`` and the sweep) goes through, turning a
failure into a *damaged* run (listed, rerun by the sweep) instead of a crash of every command that
reads the folder.
"""

from __future__ import annotations

import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
import zipfile
from collections import Counter
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmark.config import FIELDS, ConfigError, from_dict
from benchmark.files import atomic_path
from benchmark.results import schema

PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "faiss-cpu", "wandb", "pillow")
EMBEDDING_ARRAYS = ("embeddings", "labels", "identities", "paths")


class RecordError(ConfigError):
    """A record file that is missing, unreadable or invalid; the message names the file (a
    ConfigError: the command line reports it in one line)."""


class RunRecord:
    """The record folder of one run."""

    def __init__(self, run_dir: Path | str):
        self.dir = Path(run_dir)

    @property
    def run_id(self) -> str:
        return self.dir.name

    @classmethod
    def write(cls, out_dir: Path | str, run_id: str, files: dict[str, str | bytes], status_doc: dict) -> RunRecord:
        """Write ``files`` and ``status.json`` as ``out_dir/run_id`` in one atomic rename (a previous
        record, on ``--rerun``, is swapped out only once the new one is whole). ``status.json`` names the
        config keys this version has (``schema.CONFIG_KEYS``): what its config.yaml must hold."""
        status_doc = {**status_doc, schema.CONFIG_KEYS: list(FIELDS)}
        with atomic_path(Path(out_dir) / run_id, directory=True) as tmp:
            for name, content in {**files, schema.STATUS: json.dumps(status_doc, indent=1)}.items():
                (tmp / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        return cls(Path(out_dir) / run_id)

    def is_complete(self) -> bool:
        """A finished record (ok or failed) exists for this run."""
        return (self.dir / schema.STATUS).exists()

    def _read(self, name: str, parse):
        path = self.dir / name
        if not path.is_file():
            raise RecordError(f"{path} is missing")
        try:
            return parse(path)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            if isinstance(exc, schema.Inconsistent):
                raise RecordError(f"{path} contradicts the record: {first}") from None
            raise RecordError(f"{path} is unreadable ({type(exc).__name__}: {first})") from None

    def status(self) -> dict:
        def parse(path):
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict) or doc.get("status") not in schema.RECORDED:
                raise ValueError(f"no 'status' of {', '.join(schema.RECORDED)}")
            if doc["status"] == "failed" and not isinstance(doc.get("error"), str):
                raise ValueError("a failed run without its 'error'")
            if not isinstance(doc.get("warnings", []), list):
                raise ValueError("'warnings' is not a list")
            keys = doc.get(schema.CONFIG_KEYS, [])
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise ValueError(f"'{schema.CONFIG_KEYS}' is not a list of key names")
            return doc
        return self._read(schema.STATUS, parse)

    def config(self) -> dict:
        """The run's full config (validated, as ``Config.to_dict``), every key its writer had present
        (``schema.check_config_keys``, against ``status.json``)."""
        status = self.status()

        def parse(path):
            doc = yaml.safe_load(path.read_text()) or {}
            try:
                cfg = from_dict(doc).to_dict()
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            schema.check_config_keys(doc, status)
            return cfg
        return self._read(schema.CONFIG, parse)

    def metrics(self) -> dict:
        """Validated against what a successful record holds (``schema.check_record_metrics``)."""
        return self._read(schema.METRICS, lambda p: schema.check_record_metrics(json.loads(p.read_text())))

    def history(self) -> pd.DataFrame:
        """One row per epoch (``epoch``, ``train/loss``, val metrics, ``epoch_s``: numbers, a value that
        could not be computed empty); empty without training."""
        def parse(path):
            try:
                df = pd.read_csv(path)
            except pd.errors.EmptyDataError:  # embedding=backbone: no epoch, an empty file
                return pd.DataFrame()
            text = [c for c in df.columns if len(df) and not pd.api.types.is_numeric_dtype(df[c])]
            if text:
                raise ValueError(f"column {text[0]!r} holds text ({df[text[0]].iloc[0]!r} ...), not numbers")
            return df
        return self._read(schema.HISTORY, parse)

    def embeddings(self) -> dict[str, np.ndarray]:
        """Test embeddings with their labels, identities and image paths (one row each)."""
        def parse(path):
            with np.load(path, allow_pickle=False) as z:
                out = {k: z[k] for k in EMBEDDING_ARRAYS}
            if out["embeddings"].ndim != 2 or len({len(v) for v in out.values()}) != 1:
                raise ValueError(f"arrays of different lengths: {({k: v.shape for k, v in out.items()})}")
            return out
        return self._read(schema.EMBEDDINGS, parse)

    def split(self) -> dict:
        """``items`` [path, identity, split], and ``counts`` per split that agree with them."""
        def parse(path):
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
                raise ValueError("no 'items' list of [path, identity, split]")
            tally = Counter(split for _, _, split in doc["items"])  # an item not of 3 raises
            counts = doc.get("counts", {})
            if not isinstance(counts, dict) or any(tally[s] != n for s, n in counts.items()):
                raise ValueError(f"'counts' {counts} disagree with its items ({dict(tally)})")
            return doc
        return self._read(schema.SPLIT, parse)

    def environment(self) -> dict:
        def parse(path):
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict):
                raise ValueError(f"expected a mapping, got a {type(doc).__name__}")
            return doc
        return self._read(schema.ENVIRONMENT, parse)

    def check(self, row: dict | None = None) -> dict:
        """The record whole and consistent (``schema`` module docstring), as one flat row of the results
        table: status, config keys, metrics. Every file is read through its validating reader (the
        embeddings for their facts only: ``_embedding_facts``) and checked against the others;
        RecordError names the first that fails. ``row`` is filled as the files pass, so a caught
        failure keeps what was read."""
        row = {} if row is None else row
        st = self.status()
        row |= {"status": st["status"], "error": st.get("error"), "warnings": _joined(st.get("warnings")),
                **{k: st[k] for k in schema.META if k in st and k not in ("status", "error", "warnings")}}
        row |= schema.flat_config(self.config())
        if st["status"] in schema.WITH_METRICS:
            metrics = self.metrics()
            row |= metrics
            self.history()
            self.environment()
            split = self.split()
            self._read(schema.EMBEDDINGS, lambda p: schema.check_embeddings(
                **_embedding_facts(p), metrics=metrics, split=split))
        return row

    def row(self) -> dict:
        """``check()``'s row; a record that fails it is a row with status ``damaged`` and the reason as
        its error (never listed as ok, ranked or quoted)."""
        row = {"run_id": self.run_id, "run_dir": str(self.dir)}
        try:
            self.check(row)
        except RecordError as exc:
            row |= {"status": "damaged", "error": f"damaged record: {exc}"}
        return row


def _embedding_facts(path: Path) -> dict:
    """What ``schema.check_embeddings`` needs of an ``embeddings.npz``: each array's shape, whether the
    embeddings are finite and how many rows are on the gallery side (no array is kept)."""
    with np.load(path, allow_pickle=False) as z:
        absent = [k for k in EMBEDDING_ARRAYS if k not in z.files]
        if absent:
            raise ValueError(f"array(s) {', '.join(absent)} missing")
        emb = z["embeddings"]
        if emb.dtype.kind != "f":
            raise ValueError(f"embeddings of type {emb.dtype}, not floats")
        return {"shapes": {k: emb.shape if k == "embeddings" else z[k].shape for k in z.files},
                "finite": bool(np.isfinite(emb).all()),
                "gallery": int((z["sides"] == "gallery").sum()) if "sides" in z.files else None}


def _joined(notes) -> str | None:
    return "; ".join(notes) if notes else None


def write(out_dir: Path | str, run_id: str, files: dict[str, str | bytes], status_doc: dict) -> Path:
    """``RunRecord.write``, returning the record's folder."""
    return RunRecord.write(out_dir, run_id, files, status_doc).dir


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """Arrays as the bytes of an ``.npz`` (``embeddings.npz``): float arrays stored as they are, the
    others compressed. Embeddings compress by a few percent, and every reader of the record reads them
    (``check``: are they finite?): stored, that is a copy, about 10x faster than inflating them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, a in arrays.items():
            a, member = np.asanyarray(a), io.BytesIO()
            np.lib.format.write_array(member, a, allow_pickle=False)
            zf.writestr(f"{name}.npy", member.getvalue(),
                        zipfile.ZIP_STORED if a.dtype.kind == "f" else zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device) -> dict:
    """Facts needed to trust or reproduce a number: versions, device, commit, host."""
    import torch  # only a run that has torch loaded writes this; reading records stays torch-free

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpu = torch.cuda.get_device_name(device) if getattr(device, "type", "") == "cuda" else None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "host": socket.gethostname(),
            "device": str(device), "gpu": gpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "git_commit": _git_commit(), "packages": versions, "argv": sys.argv,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
