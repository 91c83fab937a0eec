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


def _contents(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_replaced_folder_swaps_in_the_new_content_whole_or_leaves_the_old(tmp_path):
    from benchmark.files import replaced_folder

    target, owns, keep = tmp_path / "out", ("a.txt", "sub"), ("live",)
    with replaced_folder(target, "output folder", owns, keep) as new:
        (new / "sub").mkdir()
        (new / "a.txt").write_text("old")
        (new / "sub" / "only-old.txt").write_text("x")
    (target / "live").mkdir()  # e.g. a tracker's folder, written beside the output
    (target / "live" / "log").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with replaced_folder(target, "output folder", owns, keep) as new:
            (new / "a.txt").write_text("half")
            raise KeyboardInterrupt
    assert _contents(target) == {"a.txt": b"old", "live/log": b"1", "sub/only-old.txt": b"x"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder behind
    with replaced_folder(target, "output folder", owns, keep) as new:
        (new / "a.txt").write_text("new")
    assert _contents(target) == {"a.txt": b"new", "live/log": b"1"}  # nothing else of the old content stays
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_interrupt_between_the_two_renames_puts_the_old_folder_back(tmp_path, monkeypatch):
    """The old folder was renamed away and a Ctrl-C came before the new one was renamed in: the
    folder was gone, the old content left under a hidden name."""
    target = tmp_path / "run"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "a.txt").write_text("old")
    real, calls = os.replace, []

    def replace(src, dst):
        real(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "a.txt").write_text("new")
    assert _contents(target) == {"a.txt": b"old"} and [p.name for p in tmp_path.iterdir()] == ["run"]
