"""Ships the top-level ``experiments/`` (named experiments, sweep files) inside the package as
``benchmark/experiments``: a wheel or a regular install then has them (``config.shipped_experiments_dir``
reads them with importlib.resources), while a checkout keeps them at the top level. The rest of the
build is declared in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithExperiments(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "benchmark" / "experiments"
        for src in sorted((ROOT / "experiments").rglob("*.yaml")):  # symlinks are copied as files
            dest = target / src.relative_to(ROOT / "experiments")
            self.mkpath(str(dest.parent))
            self.copy_file(str(src), str(dest))


setup(cmdclass={"build_py": BuildPyWithExperiments})
