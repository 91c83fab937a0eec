"""On-disk, content-addressed feature cache shared by all runs and processes.

An entry's file name is the hash of its key (every input that changes a feature). Writes are atomic
(write a temporary file, then rename); a per-entry lock makes concurrent processes compute an entry
once; a checksum detects partial or corrupt files, which are recomputed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

ENV_VAR = "BENCHMARK_CACHE_DIR"


def default_dir() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("retrieval-benchmark")) / "features"


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _checksum(t: torch.Tensor) -> str:
    return hashlib.sha1(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


@contextmanager
def _locked(path: Path):
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class FeatureCache:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root else default_dir()

    def path(self, key: dict) -> Path:
        return self.root / f"{key_hash(key)}.pt"

    def _read(self, path: Path, key: dict) -> dict | None:
        """The entry at ``path`` if whole and for ``key``; a broken one is removed."""
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if entry["key"] == key and _checksum(entry["features"]) == entry["checksum"]:
                return entry
        except Exception:  # truncated or corrupt file: recompute below
            pass
        path.unlink(missing_ok=True)
        return None

    def get_or_compute(self, key: dict, compute: Callable[[], torch.Tensor]) -> dict:
        """``{"features", "cost_s", "hit"}``; ``cost_s`` is what computing it took, even on a hit."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        entry = self._read(path, key)
        if entry is None:
            with _locked(path.with_suffix(".lock")):
                entry = self._read(path, key)  # another process may have written it meanwhile
                if entry is None:
                    t0 = time.perf_counter()
                    features = compute().detach().cpu().contiguous()  # keeps its dtype
                    entry = {"key": key, "features": features, "checksum": _checksum(features),
                             "cost_s": time.perf_counter() - t0, "created": time.time()}
                    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
                    torch.save(entry, tmp)
                    os.replace(tmp, path)
                    return {**entry, "hit": False}
        return {**entry, "hit": True}

    def entries(self) -> list[dict]:
        out = []
        for path in sorted(self.root.glob("*.pt")):
            try:
                e = torch.load(path, map_location="cpu", weights_only=True)
                out.append({"file": path.name, **e["key"], "shape": list(e["features"].shape),
                            "cost_s": round(e["cost_s"], 2), "bytes": path.stat().st_size})
            except Exception:
                out.append({"file": path.name, "broken": True, "bytes": path.stat().st_size})
        return out

    def clear(self) -> int:
        n = 0
        for path in list(self.root.glob("*.pt")) + list(self.root.glob("*.lock")) + \
                list(self.root.glob("*.tmp*")):
            path.unlink(missing_ok=True)
            n += path.suffix == ".pt"
        return n
