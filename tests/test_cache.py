"""Feature cache under concurrency, and its command line."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmark.cache import FeatureCache

KEY = {"backbone": "x", "view": 0}


def _worker(root: str, log: str, start: float) -> None:
    while time.time() < start:  # both processes ask at the same moment
        time.sleep(0.001)

    def compute():
        with open(log, "a") as fh:
            fh.write("computed\n")
        time.sleep(0.5)
        return torch.arange(12.0).reshape(3, 4)

    entry = FeatureCache(root).get_or_compute(KEY, compute)
    assert torch.equal(entry["features"], torch.arange(12.0).reshape(3, 4))


def test_concurrent_writers_compute_an_entry_once(tmp_path):
    log = tmp_path / "log"
    start = time.time() + 1.0
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "c"), str(log), start)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text().count("computed") == 1
    assert [p.name for p in (tmp_path / "c").iterdir() if ".tmp" in p.name] == []


def test_cache_ls_and_clear_commands(tmp_path):
    root = tmp_path / "c"
    FeatureCache(root).get_or_compute({"backbone": "resnet18", "weights": "random:0", "view": "eval",
                                       "precision": "cpu-fp32"}, lambda: torch.ones(5, 2))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "benchmark", "cache", *args, "--dir", str(root)],
                              capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]).stdout

    listing = cli("ls")
    assert "1 entries" in listing and "resnet18" in listing and "[5, 2]" in listing
    assert "removed 1 entries" in cli("clear")
    assert list(root.glob("*.pt")) == []
