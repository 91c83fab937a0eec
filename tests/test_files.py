"""The package's one lock and one atomic write."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmark.files import atomic_path, clean_stale, locked, write_atomic


def test_lock_is_exclusive_across_processes_and_released_when_the_holder_dies(tmp_path):
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from benchmark.files import locked
with locked({str(lock)!r}) as got:
    print(got, flush=True)
    time.sleep(60)
"""], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert holder.stdout.readline().strip() == "True"
    with locked(lock, blocking=False) as got:
        assert got is False
    holder.kill()  # like kill -9: the OS releases the lock
    holder.wait()
    with locked(lock, blocking=False) as got:
        assert got is True


def test_atomic_path_keeps_the_old_content_until_the_new_is_whole(tmp_path):
    target = tmp_path / "run"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no leftover
    with atomic_path(target, directory=True) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert write_atomic(tmp_path / "f.json", "{}").read_text() == "{}"


def test_clean_stale_removes_only_dead_writers_leftovers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".tmp-run-{dead.pid}").mkdir()
    (tmp_path / f".tmp-f.json-{dead.pid}").write_text("half")
    (tmp_path / f".tmp-live-{os.getpid()}").mkdir()
    clean_stale(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".tmp-live-{os.getpid()}"]
