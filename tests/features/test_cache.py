"""Feature cache under concurrency, and its command line."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmark.features.cache import FeatureCache

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


@pytest.mark.slow
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


@pytest.mark.slow
def test_cache_ls_tells_entries_apart_and_flags_bad_checksums(tmp_path):
    root = tmp_path / "c"
    cache = FeatureCache(root)
    base = {"backbone": "resnet18", "weights": "random:0", "precision": "cpu-fp32", "image_size": 64, "resize": 72,
            "normalize": True, "images": "ab" * 16}
    cache.get_or_compute({**base, "view": "eval"}, lambda: torch.ones(5, 2), {"dataset": "orl"})
    cache.get_or_compute({**base, "view": 1, "normalize": False}, lambda: torch.zeros(3, 2), {"dataset": "lfw"})
    # a well-formed file whose features no longer match its checksum (bit rot, a partial copy)
    path = cache.path({**base, "view": 1, "normalize": False})
    entry = torch.load(path, weights_only=True)
    entry["features"][0, 0] = 7.0
    torch.save(entry, path)
    rows = {str(e["view"]): e for e in cache.entries()}
    assert rows["eval"]["check"] == "ok" and rows["1"]["check"] == "checksum mismatch"
    assert (rows["eval"]["dataset"], rows["1"]["dataset"]) == ("orl", "lfw")
    assert rows["eval"]["created"] <= time.time() and rows["eval"]["shape"] == [5, 2]
    listing = subprocess.run([sys.executable, "-m", "benchmark", "cache", "ls", "--dir", str(root)],
                             capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]).stdout
    lines = listing.splitlines()
    header = lines[1].split()
    assert header == ["file", "kind", "backbone", "weights", "dataset", "images", "shape", "normalize", "precision",
                      "size", "MB", "created", "cost_s", "check"]
    by_view = {("eval" if "features, eval view" in line else "1" if "features, augmented view 1" in line else None):
               line for line in lines[2:4]}
    assert "orl" in by_view["eval"] and by_view["eval"].endswith("ok") and "64/72" in by_view["eval"]
    assert by_view["1"].endswith("checksum mismatch") and "False" in by_view["1"]
    assert "1 entries fail their checksum" in listing
    # and the bad entry is recomputed on use
    assert torch.equal(cache.get_or_compute({**base, "view": 1, "normalize": False},
                                            lambda: torch.zeros(3, 2))["features"], torch.zeros(3, 2))


def _many_worker(root: str, log: str, start: float, order: list[int]) -> None:
    while time.time() < start:
        time.sleep(0.001)
    keys = [{"backbone": "x", "view": v} for v in order]

    def compute(missing):  # one "pass" makes every missing entry
        with open(log, "a") as fh:
            fh.writelines(f"{keys[i]['view']}\n" for i in missing)
        time.sleep(0.3)
        return [torch.full((2, 3), float(keys[i]["view"])) for i in missing]

    for key, entry in zip(keys, FeatureCache(root).get_or_compute_many(keys, compute)):
        assert torch.equal(entry["features"], torch.full((2, 3), float(key["view"])))


@pytest.mark.slow
def test_processes_needing_overlapping_entries_compute_each_once(tmp_path):
    """Several entries per pass, asked for in different orders by 4 processes (as N agents sharing
    one cache folder do): no deadlock, every entry computed exactly once, every process served."""
    log = tmp_path / "log"
    start = time.time() + 1.0
    orders = [[0, 1, 2], [2, 1, 0], [3, 1], [1, 3, 0, 2]]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_many_worker, args=(str(tmp_path / "c"), str(log), start, o)) for o in orders]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert sorted(log.read_text().split()) == ["0", "1", "2", "3"]
    assert len(list((tmp_path / "c").glob("*.pt"))) == 4


def test_a_pass_cost_is_shared_by_rows(tmp_path):
    cache = FeatureCache(tmp_path)
    keys = [{"v": "eval"}, {"v": 0}]
    rows = [30, 10]

    def compute(missing):  # features for keys[i], i in missing, in that order
        time.sleep(0.2)
        return [torch.zeros(rows[i], 2) for i in missing]

    a, b = cache.get_or_compute_many(keys, compute)
    assert not a["hit"] and not b["hit"]
    assert a["features"].shape == (30, 2) and b["features"].shape == (10, 2)
    assert a["cost_s"] == pytest.approx(3 * b["cost_s"]) and a["cost_s"] + b["cost_s"] >= 0.199
    again = cache.get_or_compute_many([{"v": 0}, {"v": "eval"}], compute)
    assert [e["hit"] for e in again] == [True, True] and again[0]["cost_s"] == b["cost_s"]


def _ls(root: Path, *python_args: str) -> subprocess.CompletedProcess:
    """``benchmark cache ls`` in a fresh interpreter that also reports whether torch was imported."""
    code = ("import sys; from benchmark.cli import main; rc = main(['cache', 'ls', '--dir', sys.argv[1]]); "
            "print('torch imported:', 'torch' in sys.modules); sys.exit(rc)")
    return subprocess.run([sys.executable, *python_args, "-c", code, str(root)], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2])


@pytest.mark.slow
def test_cache_ls_labels_every_kind_of_entry_without_importing_torch(tmp_path):
    """Face detections used to show blank backbone and weights; ``cache ls`` took 4 s and 1 GB importing torch."""
    cache = FeatureCache(tmp_path / "c")
    base = {"backbone": "resnet18", "weights": "random:0", "precision": "cpu-fp32", "image_size": 64, "resize": 72,
            "normalize": True, "images": "ab" * 16}
    cache.get_or_compute({**base, "view": "eval"}, lambda: torch.ones(5, 2), {"dataset": "orl"})
    cache.get_or_compute({**base, "view": 2, "trainable_blocks": 1, "dtype": "float16"},
                         lambda: torch.ones(5, 2, 2, 2, dtype=torch.float16), {"dataset": "orl"})
    cache.get_or_compute({"align": "yunet:0123456789abcdef:score0.6", "images": "cd" * 16}, lambda: torch.zeros(5, 15),
                         {"dataset": "lfw"})
    assert len(list((tmp_path / "c").glob("*.json"))) == 3  # one sidecar per entry
    out = _ls(tmp_path / "c")
    assert out.returncode == 0, out.stderr
    rows = out.stdout.splitlines()[2:5]
    kinds = {"features, eval view": "resnet18", "boundary activations, augmented view 2": "resnet18",
             "face detections": "yunet"}
    for kind, backbone in kinds.items():
        line = next(r for r in rows if f" {kind} " in r)
        assert line.split(kind)[1].split()[0] == backbone and line.endswith(" ok"), line
    face = next(r for r in rows if "face detections" in r)
    assert "0123456789ab" in face and "[5, 15]" in face  # the detector's digest is its weights
    assert out.stdout.splitlines()[-1] == "torch imported: False"
    # an entry written before sidecars existed is still listed (read with torch)
    for sidecar in (tmp_path / "c").glob("*.json"):
        sidecar.unlink()
    old = _ls(tmp_path / "c")
    assert old.stdout.splitlines()[2:5] == out.stdout.splitlines()[2:5]
    assert FeatureCache(tmp_path / "c").clear() == 3 and list((tmp_path / "c").iterdir()) == []


def test_cache_ls_on_a_file_or_a_missing_folder(tmp_path):
    """A file used to list as "0 entries"."""
    (tmp_path / "f").write_text("not a cache")
    out = _ls(tmp_path / "f")
    assert out.returncode == 2 and out.stderr.strip() == (
        f"error: cache folder {tmp_path / 'f'} is a file; give the feature cache folder (--dir, $BENCHMARK_CACHE_DIR "
        "or the default user cache)")
    out = _ls(tmp_path / "nope")
    assert out.returncode == 0 and out.stdout.startswith(f"{tmp_path / 'nope'}: no such folder, 0 entries")
    assert not (tmp_path / "nope").exists()
