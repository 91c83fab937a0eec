"""A wheel built from the checkout's files carries the named experiments and sweep files: installed
into a fresh venv (dependencies taken from this environment), ``benchmark`` finds them from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from benchmark.config import load_experiments

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, **kw):
    """Outside the checkout's import path: PYTHONPATH would show the checkout's code and metadata."""
    env = kw.pop("env", {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BENCHMARK_EXPERIMENTS")})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=True, env=env, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files a clean clone has")
    tmp = tmp_path_factory.mktemp("wheel")
    files = _run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT).stdout.split()
    src = tmp / "src"
    for f in files:  # what a clean clone holds (plus uncommitted work), symlinks kept
        if (ROOT / f).is_file() or (ROOT / f).is_symlink():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f, follow_symlinks=False)
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp / "dist"), str(src)])
    (wheel,) = (tmp / "dist").glob("retrieval_benchmark-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)])
    # dependencies: this environment's packages, after the venv's own (a plain path line does not run
    # that folder's .pth files, so an editable install of the checkout there stays invisible)
    shared = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "shared-deps.pth").write_text("\n".join(shared) + "\n")
    return env_dir


def _benchmark(env_dir: Path, *args, cwd: Path) -> str:
    return _run([str(env_dir / "bin" / "benchmark"), *args], cwd=cwd).stdout


@pytest.mark.slow
def test_installed_wheel_lists_the_shipped_experiments_from_another_folder(installed, tmp_path):
    where = _run([str(installed / "bin" / "python"), "-c", "import benchmark; print(benchmark.__file__)"],
                 cwd=tmp_path).stdout
    assert where.startswith(str(installed))  # the wheel's code, not the checkout's
    out = _benchmark(installed, "list", "experiments", "--width", "300", cwd=tmp_path)
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert sorted(names) == sorted(load_experiments(ROOT / "experiments"))
    assert all(str(installed) in line for line in out.splitlines()[1:])  # read from the installed package
    sweeps = _benchmark(installed, "list", "sweeps", cwd=tmp_path)
    rows = {line.split()[0]: line.split() for line in sweeps.splitlines()[1:]}
    assert rows["report"][1:3] == ["report-ablation", "24"] and rows["protocols"][1:3] == ["protocol-audit", "48"]
    assert rows["demo"][1:3] == ["demo", "10"]


def test_user_experiments_folder_adds_and_replaces(installed, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x.yaml").write_text("experiments:\n  my-exp: {lr: 0.5}\n  demo-lr0.01-ep3: {lr: 0.2}\n")
    out = _benchmark(installed, "list", "experiments", "--experiments", "mine", "--width", "300", cwd=tmp_path)
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "lr=0.5" in rows["my-exp"] and str(tmp_path / "mine" / "x.yaml") in rows["my-exp"]
    assert rows["demo-lr0.01-ep3"].split()[1:] == ["lr=0.2", str(tmp_path / "mine" / "x.yaml")]
