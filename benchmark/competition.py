"""A competition-like layout from LFW, to rehearse ``submit`` + ``score_submission`` end to end.

The competition (report section 1.1) trained on labelled identities and was scored on *other*,
unseen identities whose query and gallery files carried no label. ``make_competition`` builds the
same shape from LFW::

    out_dir/train/<identity>/<image>.jpg    people with >= train_min images (labelled training data)
    out_dir/test/query/<hex>.jpg            n_query_per_identity images of each unseen test person
    out_dir/test/gallery/<hex>.jpg          that person's other images
    out_dir/truth.json                      {"queries": {name: identity}, "gallery": {name: identity}}
    out_dir/competition.json                parameters, counts and each anonymous file's LFW source

Test people have test_min..test_max images, so with test_max < train_min they are never training
people (checked). Test file names are 16 random hex digits drawn from the seeded generator, unique
across query and gallery, so a name says nothing about its identity or its LFW file; the whole
layout is a function of the parameters and ``seed``.

Files are *copied* (``shutil.copyfile``: bytes only, fresh timestamps). A symlink would reveal
the LFW path (and so the identity) to ``readlink``, and a hard link shares its inode with the LFW
file (``find -samefile``), which defeats the anonymous names; copies cost ~90 MB for all of LFW.
The real competition's domain gap (its gallery held synthetic renders of the people whose photos were
the queries) is reproduced by ``gallery_style``: each gallery file is then the LFW photo rendered in
that style (``benchmark.features.styles``) and written as a JPEG (quality 95); queries stay
photographs. truth.json and competition.json are the organizer's files: hand out ``test/`` alone.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmark.config import ConfigError
from benchmark.data.imagefolder import visible
from benchmark.data.lfw import lfw_root
from benchmark.features import styles

TRUTH_FILE = "truth.json"
MANIFEST_FILE = "competition.json"
_OWNED = ("train", "test", TRUTH_FILE, MANIFEST_FILE)


def _render(src: Path, dst: Path, style: str, args: dict | None) -> None:
    """``src`` rendered in ``style``, written to ``dst`` as a JPEG (fresh file: nothing links it to LFW)."""
    from PIL import Image

    from benchmark.features.views import decode

    rgb = styles.render(decode(str(src)), style, args).permute(1, 2, 0).numpy()
    Image.fromarray(rgb).save(dst, format="JPEG", quality=95)


def _people(root: Path) -> dict[str, list[Path]]:
    return {p.name: visible(p.glob("*.jpg"), p) for p in visible(root.iterdir(), root) if p.is_dir()}


def _pick(names: list[str], n: int | None, rng: np.random.Generator) -> list[str]:
    if n is None or n >= len(names):
        return names
    return sorted(rng.choice(names, size=n, replace=False).tolist())


def make_competition(out_dir: Path | str, *, data_home: str | None = None, train_min: int = 20,
                     test_min: int = 5, test_max: int = 19, n_query_per_identity: int = 1,
                     seed: int = 0, max_test_identities: int | None = None,
                     max_train_identities: int | None = None,
                     max_train_images_per_identity: int | None = None,
                     overwrite: bool = False, gallery_style: str = "none", style_args: dict | None = None) -> dict:
    """Write the layout (module docstring) under ``out_dir``; returns the manifest (counts, paths).

    ``max_*_identities``: a seeded random subset of the eligible people (all by default);
    ``max_train_images_per_identity``: a seeded random subset of each training person's images
    (small, fast layouts). ``overwrite``: replace a layout already in ``out_dir`` (only the files
    this function writes are removed); otherwise an existing one, or a non-empty folder that holds
    no layout, is an error. Errors name the ``make-competition`` options (the function's user).
    ``gallery_style``: render the gallery in this style (``style_args``: its parameters), queries
    stay photos.
    """
    if gallery_style == styles.NONE and style_args:
        raise ConfigError(f"--style-arg {', '.join(f'{k}={v}' for k, v in style_args.items())} without a "
                          "--gallery-style: give the style they are parameters of (benchmark list styles)")
    if gallery_style != styles.NONE and gallery_style not in styles.STYLES:
        raise ConfigError(f"--gallery-style: unknown style {gallery_style!r}; valid styles: "
                          f"{', '.join([styles.NONE, *styles.STYLES])} (benchmark list styles)")
    styles.check(gallery_style, style_args, key="--style-arg ")  # one line naming the parameter and its domain
    style = styles.identity(gallery_style, style_args)
    if not 1 <= n_query_per_identity < test_min:
        raise ConfigError(f"--queries-per-identity {n_query_per_identity} must be >= 1 and < --test-min "
                          f"{test_min}, so that every test person keeps >= 1 gallery image")
    if test_min > test_max:
        raise ConfigError(f"--test-min {test_min} > --test-max {test_max}")
    if test_max >= train_min:
        raise ConfigError(f"--test-max {test_max} must be < --train-min {train_min}: test people must never be "
                          "training people (the competition's identities were unseen)")
    for name, v, least in (("--max-test-identities", max_test_identities, 1),
                           ("--max-train-identities", max_train_identities, 2),
                           ("max_train_images_per_identity", max_train_images_per_identity, 1)):
        if v is not None and v < least:
            why = " (training needs two people to tell apart)" if least == 2 else ""
            raise ConfigError(f"{name} {v} must be >= {least}{why}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    existing = [out / n for n in _OWNED if (out / n).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{out} already holds a layout ({', '.join(p.name for p in existing)}); "
                          "use another --out folder or --overwrite")
    others = sorted(p.name for p in out.iterdir() if p.name not in _OWNED) if out.is_dir() else []
    if others and not existing and not overwrite:
        raise ConfigError(f"{out} is not empty and holds no competition layout ({len(others)} other entries, "
                          f"e.g. {others[0]}); give a new or empty --out folder, or --overwrite to write the "
                          "layout beside them")
    root = lfw_root(data_home, "--data-home ")
    people = _people(root)
    rng = np.random.default_rng(seed)
    train_people = _pick(sorted(p for p, f in people.items() if len(f) >= train_min), max_train_identities, rng)
    test_people = _pick(sorted(p for p, f in people.items() if test_min <= len(f) <= test_max),
                        max_test_identities, rng)
    if len(train_people) < 2:
        raise ConfigError(f"only {len(train_people)} LFW people in {root} have >= {train_min} images; "
                          "lower --train-min")
    if not test_people:
        raise ConfigError(f"no LFW people in {root} have {test_min}..{test_max} images; widen --test-min/--test-max")
    assert not set(train_people) & set(test_people)

    for p in existing:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    query_dir, gallery_dir = out / "test" / "query", out / "test" / "gallery"
    for d in (out / "train", query_dir, gallery_dir):
        d.mkdir(parents=True)

    sources: dict[str, str] = {}
    n_train = 0
    for person in train_people:
        files = people[person]
        if max_train_images_per_identity is not None and len(files) > max_train_images_per_identity:
            keep = rng.choice(len(files), size=max_train_images_per_identity, replace=False)
            files = [files[i] for i in sorted(keep)]
        (out / "train" / person).mkdir()
        for f in files:
            shutil.copyfile(f, out / "train" / person / f.name)
        n_train += len(files)

    truth: dict[str, dict[str, str]] = {"queries": {}, "gallery": {}}
    used: set[str] = set()

    def anonymous() -> str:
        while True:
            name = rng.bytes(8).hex() + ".jpg"
            if name not in used:
                used.add(name)
                return name

    what = f"rendering the gallery ({gallery_style})" if style is not None else "copying"
    bar = tqdm(total=sum(len(people[p]) for p in test_people), desc=f"make-competition: test images, {what}",
               unit="img", file=sys.stderr, mininterval=1.0)  # rendering LFW's 2,601 test images takes minutes
    for person in test_people:
        files = people[person]
        is_query = np.zeros(len(files), dtype=bool)
        is_query[rng.choice(len(files), size=n_query_per_identity, replace=False)] = True
        for f, q in zip(files, is_query):
            name = anonymous()
            if q or style is None:
                shutil.copyfile(f, (query_dir if q else gallery_dir) / name)
            else:
                _render(f, gallery_dir / name, gallery_style, style_args)
            truth["queries" if q else "gallery"][name] = person
            sources[name] = f"{person}/{f.name}"
            bar.update()
    bar.close()
    truth = {part: dict(sorted(d.items())) for part, d in truth.items()}
    (out / TRUTH_FILE).write_text(json.dumps(truth, indent=1))
    manifest = {
        "source": str(root), "copy": "copyfile" if style is None else "copyfile (queries, train); gallery rendered",
        "gallery_style": style,
        "params": {"train_min": train_min, "test_min": test_min, "test_max": test_max,
                   "n_query_per_identity": n_query_per_identity, "seed": seed,
                   "max_test_identities": max_test_identities, "max_train_identities": max_train_identities,
                   "max_train_images_per_identity": max_train_images_per_identity,
                   "gallery_style": gallery_style, "style_args": style_args or {}},
        "counts": {"train_identities": len(train_people), "train_images": n_train,
                   "test_identities": len(test_people), "queries": len(truth["queries"]),
                   "gallery": len(truth["gallery"])},
        "paths": {"train": str(out / "train"), "query": str(query_dir), "gallery": str(gallery_dir),
                  "truth": str(out / TRUTH_FILE)},
        "train_identities": train_people, "test_identities": test_people,
        "sources": dict(sorted(sources.items())),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return manifest
