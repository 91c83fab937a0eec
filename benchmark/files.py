"""The package's one lock and one atomic write (records, claims, cache entries, submissions, report
folders: ``replaced_folder``).

Both are plain POSIX mechanisms that survive ``kill -9``: a lock is ``flock`` on an open file, which
the operating system releases when its holder dies; an atomic write builds the result under a
hidden ``.tmp-<name>-<pid>`` sibling and renames it into place, so readers see the old result or
the new one, never half of one, and ``clean_stale`` can tell a dead writer's leftovers by its pid.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from benchmark.config import ConfigError


@contextmanager
def locked(path: Path | str, blocking: bool = True):
    """Hold an exclusive lock on ``path`` (created if needed); yields whether it was acquired
    (always True when ``blocking``; False when another process holds it)."""
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def atomic_path(final: Path | str, directory: bool = False, keep: tuple[str, ...] = ()):
    """Yield a temporary sibling of ``final`` to fill (a folder when ``directory``); on success it
    replaces ``final`` in one rename (an existing folder is renamed away first and removed once the
    new one is in place, after its entries named in ``keep`` were moved into the new one); on error
    or Ctrl-C, even between those two renames, the temporary one is removed and ``final`` is as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    _remove(tmp)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if directory and final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        if old.exists() and not final.exists():  # stopped between the two renames: the old one goes back
            os.replace(old, final)
        _remove(tmp)
        raise
    finally:
        for name in keep if old.exists() else ():  # the new folder is in place
            if (old / name).exists() and not (final / name).exists():
                os.replace(old / name, final / name)
        _remove(old)


@contextmanager
def replaced_folder(path: Path | str, what: str, owns: tuple[str, ...] = (), keep: tuple[str, ...] = ()):
    """Yield an empty folder to build the new content of the folder ``path`` in: a sibling under a
    temporary name, swapped in whole at the end (``atomic_path``), so no reader ever sees old and new
    files side by side and no stale file of the old content stays; on an error or Ctrl-C the new one is
    removed and the old folder is left byte for byte as it was. ``keep``: entries of the old folder
    that are not rebuilt but live on in the new one (moved in at the swap).

    Refused before any work, in one line (ConfigError naming ``what``): ``path`` a file, a parent where
    nothing can be written (the swap renames in it), or an existing folder holding entries other than
    ``owns`` and ``keep`` (a mistyped --out such as a results folder is not replaced with a report)."""
    path = Path(os.path.abspath(path))
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file; give a folder")
    foreign = sorted(p.name for p in path.iterdir() if p.name not in (*owns, *keep)) if path.is_dir() else []
    if foreign:
        raise ConfigError(f"{what} {path} holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, "
                          "which it does not write; the folder is replaced whole: give a new folder or one of its own")
    check_writable(path.parent, f"folder holding the {what}")
    with atomic_path(path, directory=True, keep=keep) as tmp:
        yield tmp


def write_atomic(path: Path | str, content: str | bytes) -> Path:
    """Write one file atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(content if isinstance(content, bytes) else content.encode())
    return Path(path)


class WriteError(ConfigError):
    """A file could not be written (full disk, ``ulimit -f``, quota): the message names the path, what
    the write needed and the fix (a ConfigError: the command line reports it in one line)."""


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000


def write_error(path: Path | str, need: int, exc: BaseException, fix: str) -> WriteError:
    """The ``WriteError`` for a failed write of ``need`` bytes to ``path``: free space of its disk and
    the file-size limit of this process, so the reader sees which one stopped it."""
    import resource

    path = Path(path)
    folder = next((p for p in (path, *path.parents) if p.is_dir()), Path("."))
    try:
        free = f"{_size(shutil.disk_usage(folder).free)} free there"
    except OSError:
        free = "free space unknown"
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    limit = "" if soft == resource.RLIM_INFINITY else f", file-size limit (ulimit -f) {_size(soft)}"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "the write stopped short"
    return WriteError(f"could not write {path} ({_size(need)} needed, {free}{limit}): {reason}. Fix: free disk "
                      f"space there or raise the file-size limit (ulimit -f), or {fix}")


def check_writable(folder: Path | str, what: str, create: bool = True) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it: called before any work,
    so an unwritable output or cache folder fails in a second, not after training. ``create=False``:
    make nothing, prove it in the nearest folder that exists (``folder`` is made later, after the
    inputs were checked)."""
    folder = Path(folder).expanduser()
    probe = folder if create else next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        elif not probe.is_dir():
            raise NotADirectoryError(20, f"{probe} is a file")
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".probe-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {folder} is not writable ({exc.strerror or exc}); choose another folder "
                          "or fix its permissions") from None
    return folder


def clean_stale(folder: Path | str) -> None:
    """Remove the temporary files and folders of ``atomic_path`` writers that died before their rename."""
    for tmp in [*Path(folder).glob(".tmp-*"), *Path(folder).glob(".old-*")]:
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
