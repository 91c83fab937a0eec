"""Run records on disk, the source of truth: ``<out>/<run_id>/`` written atomically.

A record is assembled in a hidden temporary folder and renamed into place, so a killed run leaves
no half record. ``metrics.json`` exists exactly when the run succeeded; a failed run's record has
``status.json`` with its error instead.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

STATUS = "status.json"
METRICS = "metrics.json"
PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "faiss-cpu", "wandb", "pillow")


def is_complete(run_dir: Path) -> bool:
    """A finished record (ok or failed) exists for this run."""
    return (run_dir / STATUS).exists()


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / STATUS).read_text())


def write(out_dir: Path, run_id: str, files: dict[str, str | bytes], status_doc: dict) -> Path:
    """Write ``files`` and ``status.json`` as ``out_dir/run_id`` in one atomic rename."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".tmp-{run_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, content in {**files, STATUS: json.dumps(status_doc, indent=1)}.items():
        (tmp / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    final = out_dir / run_id
    if final.exists():  # --rerun: swap the old record out only once the new one is whole
        old = out_dir / f".old-{run_id}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def clean_stale(out_dir: Path) -> None:
    """Remove the temporary folders of writers that died (e.g. ``kill -9``) before their rename."""
    for tmp in list(out_dir.glob(".tmp-*")) + list(out_dir.glob(".old-*")):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device) -> dict:
    """Facts needed to trust or reproduce a number: versions, device, commit, host."""
    import torch

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
