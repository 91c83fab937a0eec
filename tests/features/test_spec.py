"""The features package works from one typed value: every field of ``Preprocessing`` (and of the
``View``) is part of the cache key by construction, no function of the package takes the whole
``Config``, and the package has no import circle."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import benchmark
import benchmark.features
from benchmark.features.spec import EVAL, MIRRORED, Preprocessing, View, entry_key
from tiny_prep import make_prep

#: a different value for every field (same type), so that each change is a real change
CHANGED = {"backbone": "other", "weights": "random:1", "image_size": 48, "resize": 56, "mean": (0.1, 0.2, 0.3),
           "std": (0.3, 0.2, 0.1), "decoder": "torchvision", "device": "cuda", "precision": "bf16",
           "runtime": "onnxruntime", "align": "yunet:abc", "trainable_blocks": 1, "dtype": "float16",
           "style": '{"style": "grey", "v": 1}', "adabn": "batch=64"}


def test_every_preprocessing_field_changes_the_key():
    fields = [f.name for f in dataclasses.fields(Preprocessing)]
    assert set(fields) == set(CHANGED), "a new Preprocessing field needs a CHANGED value here"
    base = make_prep()
    keys = {repr(entry_key(base, EVAL, "h"))}
    for name in fields:
        changed = base.replace(**{name: CHANGED[name]})
        keys.add(repr(entry_key(changed, EVAL, "h")))
        assert entry_key(changed, EVAL, "h") != entry_key(base, EVAL, "h"), name
    assert len(keys) == len(fields) + 1


def test_every_view_field_and_the_images_change_the_key():
    prep = make_prep()
    keys = [entry_key(prep, v, "h") for v in (EVAL, MIRRORED, View("report", 0), View("report", 1), View("strong", 0),
                                              View("none", 0))]  # a style-augmented bank without augmentation
    keys.append(entry_key(prep, EVAL, "other images"))
    assert len({repr(k) for k in keys}) == len(keys)
    assert str(EVAL) == "eval view" and str(View("report", 2)) == "report view 2"
    assert str(MIRRORED) == "mirrored eval view"
    # the mirror (tta: flip) is a key of its own: the plain eval view's entries keep the key they had
    assert EVAL.key() == {"view": "eval"} and MIRRORED.key() == {"view": "eval", "mirror": "horizontal"}


def _package_modules(package) -> list[str]:
    return [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]


def test_no_function_of_the_package_takes_the_config():
    from benchmark.config import Config

    for name in _package_modules(benchmark.features):
        module = importlib.import_module(name)
        for obj_name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != name:
                continue
            functions = [obj] if inspect.isfunction(obj) else \
                [f for f in vars(obj).values() if inspect.isfunction(f)] if inspect.isclass(obj) else []
            for fn in functions:
                hints = inspect.signature(fn).parameters.values()
                for p in hints:
                    assert p.annotation not in (Config, "Config") and p.name != "cfg", \
                        f"{name}.{obj_name}: parameter {p.name} takes the whole Config"


def _imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``path`` imports, at module level or inside functions (a lazy import
    is an import: two modules that need each other are one piece in two files)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith(package)}
    return out


def _module_graph(root: Path) -> dict[str, set[str]]:
    files = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    # a package's __init__ runs before any of its modules: an edge up to an enclosing package is no circle
    return {m: {i for i in _imports(p, root.name) if i in files and i != m and not m.startswith(i + ".")}
            for m, p in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


@pytest.mark.parametrize("package", ["benchmark.features", "benchmark"])
def test_no_import_circle(package):
    root = Path(benchmark.__file__).parent
    graph = _module_graph(root)
    if package != "benchmark":
        graph = {m: {n for n in deps if n.startswith(package)} for m, deps in graph.items() if m.startswith(package)}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
