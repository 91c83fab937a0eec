"""On-disk, content-addressed feature cache shared by all runs, processes and machines.

An entry's file name is the hash of its key (every input that changes a feature). Writes are atomic
(``benchmark.files.atomic_path``: a temporary sibling, then a rename); a checksum detects partial
or corrupt files, which are recomputed.

Locking semantics: computing an entry holds an exclusive lock on ``<entry>.lock``
(``benchmark.files.locked``: ``fcntl.flock``); a process that needs several missing entries (one
feature pass makes them all) takes their locks in file-name order, so processes never deadlock,
and re-reads each entry under its lock, so an entry is computed once. Readers take no lock: a rename is atomic, so they see the
whole old state or the whole new file. Across machines sharing the folder (several ``wandb agent``s
on a network filesystem) this holds where the filesystem carries the lock to every client: NFSv4,
NFSv3 with lockd (Linux maps ``flock`` to NFS byte-range locks), CephFS, Lustre/GPFS mounted with
flock. Where it does not (NFS mounted ``nolock``, most FUSE/object-store mounts) the lock is per
machine: each machine may compute an entry once, the last rename wins, and since every writer
computes the same key the results are the same; readers are never served half a file.

Beside each entry ``<hash>.pt`` a sidecar ``<hash>.json`` holds what ``entries()`` lists (key, meta,
shape, cost, creation time, SHA-1 of the entry file), so that ``benchmark cache ls`` reads and checks
the cache without importing torch. Entries without a sidecar (older ones), or whose file no longer
matches it, are read with torch as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from benchmark.files import atomic_path, locked, write_error

if TYPE_CHECKING:
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
    import torch

    return hashlib.sha1(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


class FeatureCache:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root else default_dir()

    def path(self, key: dict) -> Path:
        return self.root / f"{key_hash(key)}.pt"

    def _read(self, path: Path, key: dict) -> dict | None:
        """The entry at ``path`` if whole and for ``key``; a broken one is removed."""
        if not path.exists():
            return None
        import torch

        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if entry["key"] == key and _checksum(entry["features"]) == entry["checksum"]:
                return entry
        except Exception:  # truncated or corrupt file: recompute below
            pass
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)
        return None

    def get_or_compute(self, key: dict, compute: Callable[[], torch.Tensor], meta: dict | None = None) -> dict:
        """``{"features", "cost_s", "hit"}``; ``cost_s`` is what computing it took, even on a hit.
        ``meta``: what ``cache ls`` shows about the entry beside its key (e.g. the dataset of its images)."""
        return self.get_or_compute_many([key], lambda missing: [compute()], meta)[0]

    def get_or_compute_many(self, keys: list[dict], compute: Callable[[list[int]], list[torch.Tensor]],
                            meta: dict | None = None) -> list[dict]:
        """Entries for ``keys``; ``compute(missing)`` makes the features of ``keys[i]`` for every i in
        ``missing`` in one go (one pass over the images). Its time is shared among them by rows."""
        self.root.mkdir(parents=True, exist_ok=True)
        paths = [self.path(k) for k in keys]
        entries = [self._read(p, k) for p, k in zip(paths, keys)]
        hit = [e is not None for e in entries]
        if all(hit):
            return [{**e, "hit": True} for e in entries]
        todo = sorted((i for i, e in enumerate(entries) if e is None), key=lambda i: paths[i].name)
        with ExitStack() as locks:
            for i in todo:  # one global order: no two processes wait on each other
                locks.enter_context(locked(paths[i].with_suffix(".lock")))
            for i in todo:  # another process may have written it meanwhile
                entries[i] = self._read(paths[i], keys[i])
            missing = [i for i in todo if entries[i] is None]
            if missing:
                import torch

                t0 = time.perf_counter()
                features = [f.detach().cpu().contiguous() for f in compute(missing)]  # keep their dtype
                cost = time.perf_counter() - t0
                rows = sum(len(f) for f in features) or 1
                for i, f in zip(missing, features):
                    entries[i] = {"key": keys[i], "features": f, "checksum": _checksum(f),
                                  "cost_s": cost * len(f) / rows, "created": time.time(), "meta": meta or {}}
                    try:  # a full disk or ulimit -f ends in torch's "unexpected pos" naming no file
                        with atomic_path(paths[i]) as tmp:
                            torch.save(entries[i], tmp)
                            listed = {k: entries[i][k] for k in ("key", "cost_s", "created", "meta")}
                            listed |= {"shape": list(f.shape), "dtype": str(f.dtype).removeprefix("torch."),
                                       "sha1": _file_sha1(tmp)}
                        with atomic_path(_sidecar(paths[i])) as tmp:
                            tmp.write_text(json.dumps(listed))
                    except (OSError, RuntimeError) as exc:
                        raise write_error(paths[i], f.nelement() * f.element_size(), exc,
                                          f"point cache_dir (or ${ENV_VAR}) at another disk") from None
        computed = set(missing)
        return [{**e, "hit": i not in computed} for i, e in enumerate(entries)]

    def entries(self) -> list[dict]:
        """One dict per entry: its key, ``meta``, ``shape``, ``cost_s``, ``created``, ``bytes`` and
        ``check`` (``ok``, ``checksum mismatch``, ``unreadable``: such entries are recomputed on use).
        Read from the sidecars (no torch); an entry without one, or not matching it, is loaded."""
        out = []
        for path in sorted(self.root.glob("*.pt")):
            row = {"file": path.name, "bytes": path.stat().st_size}
            try:
                side = json.loads(_sidecar(path).read_text())
                if _file_sha1(path) == side["sha1"]:
                    out.append({**row, **side["key"], **side["meta"], "shape": side["shape"],
                                "cost_s": round(side["cost_s"], 2), "created": side["created"], "check": "ok",
                                "broken": False})
                    continue
            except (OSError, ValueError, KeyError, TypeError):  # no sidecar (an older entry) or a bad one
                pass
            out.append({**row, **self._load_listing(path)})
        return out

    @staticmethod
    def _load_listing(path: Path) -> dict:
        import torch

        try:
            e = torch.load(path, map_location="cpu", weights_only=True)
            check = "ok" if _checksum(e["features"]) == e["checksum"] else "checksum mismatch"
            return {**e["key"], **e.get("meta", {}), "shape": list(e["features"].shape),
                    "cost_s": round(e["cost_s"], 2), "created": e.get("created"), "check": check,
                    "broken": check != "ok"}
        except Exception:
            return {"broken": True, "check": "unreadable"}

    def clear(self) -> int:
        n = 0
        sidecars = [p for p in self.root.glob("*.json") if len(p.stem) == 32]  # <key hash>.json only
        for path in list(self.root.glob("*.pt")) + list(self.root.glob("*.lock")) + \
                list(self.root.glob(".tmp-*")) + sidecars + list(self.root.glob("onnx/*")):  # exports and verdicts
            path.unlink(missing_ok=True)
            n += path.suffix == ".pt"
        return n
