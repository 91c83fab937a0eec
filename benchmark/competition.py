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
from typing import Callable

import numpy as np
from tqdm import tqdm

from benchmark.config import ConfigError
from benchmark.data.imagefolder import visible
from benchmark.data.lfw import lfw_root
from benchmark.features import styles

TRUTH_FILE = "truth.json"
MANIFEST_FILE = "competition.json"
#: in train/: ``path,domain`` (photo | render) of every training file, for the competitor
DOMAINS_FILE = "domains.csv"
_OWNED = ("train", "test", TRUTH_FILE, MANIFEST_FILE)


#: the two editions of the course competition, scaled to what LFW here holds (62 people with >= 20
#: images, 81 with 11-19, 280 with 5-10): ``params`` for ``make_competition``, ``note`` what was scaled.
#: ``gallery``: the style mix (and parameters) calibrated so that frozen SFace lands in the edition's
#: band (2025: 950-980, where a frozen face model scored 970; 2026: 700-800, where the best scored 786),
#: measured with benchmarks/calibrate.py on the preset's layout, seed 0
PRESETS = {
    "2025": {"params": {"train_min": 11, "test_min": 5, "test_max": 10, "n_query_per_identity": 1,
                        "max_train_images_per_identity": 5, "max_gallery_per_identity": 1},
             "gallery": {"gallery_style": "grey,cast,lowres,dark", "style_args": {"lowres.size": 38, "dark.gain": 0.65},
                         "sface": 962.1},
             "note": "2025: 921 training people x 5 images, ~1,456 queries and ~1,481 gallery images (about one "
                     "of each per test person). LFW has 143 people with >= 11 images (training, 5 images each) "
                     "and 280 with 5-10 (test: 1 query + 1 gallery image each): 715 training images, 280 queries, "
                     "280 gallery images"},
    "2026": {"params": {"train_min": 20, "test_min": 11, "test_max": 19, "n_query_per_identity": 1,
                        "max_train_images_per_identity": 20, "max_gallery_per_identity": 10},
             "gallery": {"gallery_style": "stylization:5,cartoon", "style_args": {}, "sface": 703.7},
             "note": "2026: 250 training people x 20 images (5,000), 300 test people with 1 query + 10 gallery "
                     "images each (300 queries, 3,000 gallery). LFW has 62 people with >= 20 images (training, "
                     "20 each: 1,240 images) and 81 with 11-19 (test: 1 query + 10 gallery each: 81 queries, "
                     "810 gallery images)"},
}


def _write(src: Path, dst: Path, style: str, args: dict | None) -> None:
    """``src`` rendered in ``style`` (a copy for ``none``), written to ``dst`` as a JPEG (fresh file:
    nothing links it to LFW)."""
    from PIL import Image

    from benchmark.features.views import decode

    if style == styles.NONE:
        shutil.copyfile(src, dst)
        return
    rgb = styles.render(decode(str(src)), style, args).permute(1, 2, 0).numpy()
    Image.fromarray(rgb).save(dst, format="JPEG", quality=95)


def _drawn(mix: dict[str, float], rng: np.random.Generator) -> str:
    """One style of ``mix`` drawn by its probabilities (no draw for a single style)."""
    names = list(mix)
    return names[0] if len(names) == 1 else names[int(rng.choice(len(names), p=list(mix.values())))]


def _subset(files: list[Path], n: int | None, rng: np.random.Generator) -> list[Path]:
    """A seeded subset of ``n`` of ``files`` in their order (all of them when ``n`` is None or larger)."""
    if n is None or len(files) <= n:
        return files
    return [files[i] for i in sorted(rng.choice(len(files), size=n, replace=False))]


def _style_args(given: dict, mix: dict[str, float]) -> dict[str, dict]:
    """``--style-arg`` values as ``{style: {param: value}}``: ``KEY=V`` for a single rendered style,
    ``STYLE.KEY=V`` among several (``mix``: the gallery's and the training renders' styles); each
    checked against its style's declared parameters."""
    rendered = [name for name in mix if name != styles.NONE]
    if given and not rendered:
        raise ConfigError(f"--style-arg {', '.join(f'{k}={v}' for k, v in given.items())} without a "
                          "--gallery-style or --train-styles: give the style they are parameters of "
                          "(benchmark list styles)")
    out: dict[str, dict] = {}
    for key, value in given.items():
        style, _, param = key.rpartition(".")
        if not style:
            if len(rendered) > 1:
                owners = [s for s in rendered if param in styles.params(s)] or rendered
                raise ConfigError(f"--style-arg {key}={value}: the renders mix {', '.join(rendered)}; name the "
                                  f"style, e.g. --style-arg {owners[0]}.{key}={value}")
            style = rendered[0]
        if style not in rendered:
            raise ConfigError(f"--style-arg {key}={value}: {style!r} is not a style of --gallery-style or "
                              f"--train-styles ({', '.join(rendered)})")
        out.setdefault(style, {})[param] = value
    for style, params in out.items():  # one line naming the parameter and its domain
        styles.check(style, params, key=f"--style-arg {style}")
    return out


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
                     max_gallery_per_identity: int | None = None,
                     overwrite: bool = False, gallery_style: str = "none", style_args: dict | None = None,
                     train_styles: str = "none", train_render_fraction: float = 0.0,
                     announce: Callable[[], None] | None = None) -> dict:
    """Write the layout (module docstring) under ``out_dir``; returns the manifest (counts, paths).

    ``max_*_identities``: a seeded random subset of the eligible people (all by default);
    ``max_train_images_per_identity``: a seeded random subset of each training person's images
    (small, fast layouts). ``overwrite``: replace a layout already in ``out_dir`` (only the files
    this function writes are removed); otherwise an existing one, or a non-empty folder that holds
    no layout, is an error. Errors name the ``make-competition`` options (the function's user).
    ``gallery_style``: render the gallery in this style, or a mix drawn per gallery image
    (``cartoon,stylization:2,sketch``; ``style_args``: parameters, ``STYLE.KEY`` in a mix); queries
    stay photos. ``train_styles`` + ``train_render_fraction``: each training person's folder also
    holds renders of that fraction of their photos (seeded, at least one), each in a style drawn from
    ``train_styles`` — as the real competition's training folders held both; ``train/domains.csv``
    says which file is which (``path,domain``: photo | render), ``competition.json`` each file's style.
    ``max_gallery_per_identity``: a seeded subset of each test person's gallery images.
    ``announce``: called once every input is checked, before anything is written (what the caller
    says about the layout comes after any input error, never before it).
    """
    gallery_mix = styles.mix(gallery_style, "--gallery-style")
    train_mix = styles.mix(train_styles, "--train-styles")
    args = _style_args(style_args or {}, {**gallery_mix, **train_mix})
    identities = {name: styles.identity(name, args.get(name)) for name in {*gallery_mix, *train_mix}}
    rendered_gallery = set(gallery_mix) != {styles.NONE}
    if not 0 <= train_render_fraction <= 1:
        raise ConfigError(f"--train-render-fraction {train_render_fraction} must be in [0, 1]")
    if train_render_fraction > 0 and set(train_mix) == {styles.NONE}:
        raise ConfigError(f"--train-render-fraction {train_render_fraction} renders training photos, but "
                          f"--train-styles {train_styles} names no style to render them in; give styles (e.g. "
                          "--train-styles cartoon,stylization)")
    if (train_render_fraction > 0) != (set(train_mix) != {styles.NONE}):
        raise ConfigError("--train-styles and --train-render-fraction go together: the styles of the training "
                          "renders and the fraction of each person's photos rendered (e.g. --train-styles "
                          "cartoon,stylization --train-render-fraction 0.5)")
    if max_gallery_per_identity is not None and max_gallery_per_identity < 1:
        raise ConfigError(f"--max-gallery-per-identity {max_gallery_per_identity} must be >= 1")
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
    above = next(p for p in out.absolute().parents if p.exists())
    if not out.exists() and not above.is_dir():  # it failed after seconds of work, in mkdir
        raise ConfigError(f"--out {out}: {above} is a file, so no folder can be made under it; give another --out")
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
    if announce is not None:
        announce()

    for p in existing:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    query_dir, gallery_dir = out / "test" / "query", out / "test" / "gallery"
    for d in (out / "train", query_dir, gallery_dir):
        d.mkdir(parents=True)

    sources: dict[str, str] = {}
    used: set[str] = set()

    def anonymous(generator: np.random.Generator) -> str:
        while True:
            name = generator.bytes(8).hex() + ".jpg"
            if name not in used:
                used.add(name)
                return name

    # separate seeded streams for the style draws: a layout without them is the same as before they existed
    draw_gallery, draw_train = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    train_files = {person: _subset(people[person], max_train_images_per_identity, rng) for person in train_people}
    n_renders = {p: max(1, round(train_render_fraction * len(f))) if train_render_fraction else 0
                 for p, f in train_files.items()}
    domains: dict[str, str] = {}  # train/<person>/<file> -> photo | render:<style>
    rendering = f", rendering ({train_styles})" if any(n_renders.values()) else ""
    bar = tqdm(total=sum(map(len, train_files.values())) + sum(n_renders.values()), unit="img", file=sys.stderr,
               desc=f"make-competition: training images{rendering}", mininterval=1.0)
    for person, files in train_files.items():
        (out / "train" / person).mkdir()
        for f in files:
            shutil.copyfile(f, out / "train" / person / f.name)
            domains[f"{person}/{f.name}"] = "photo"
            bar.update()
        for i in sorted(draw_train.choice(len(files), size=n_renders[person], replace=False)):
            name = _drawn(train_mix, draw_train)
            file = anonymous(draw_train)
            _write(files[i], out / "train" / person / file, name, args.get(name))
            domains[f"{person}/{file}"] = f"render:{name}"
            sources[f"train/{person}/{file}"] = f"{person}/{files[i].name}"
            bar.update()
    bar.close()
    n_train = len(domains)
    (out / "train" / DOMAINS_FILE).write_text("path,domain\n" + "".join(
        f"{path},{domain.split(':')[0]}\n" for path, domain in domains.items()))

    truth: dict[str, dict[str, str]] = {"queries": {}, "gallery": {}}
    gallery_styles: dict[str, str] = {}

    what = f"rendering the gallery ({gallery_style})" if rendered_gallery else "copying"
    bar = tqdm(total=sum(len(people[p]) for p in test_people), desc=f"make-competition: test images, {what}",
               unit="img", file=sys.stderr, mininterval=1.0)  # rendering LFW's 2,601 test images takes minutes
    for person in test_people:
        files = people[person]
        is_query = np.zeros(len(files), dtype=bool)
        is_query[rng.choice(len(files), size=n_query_per_identity, replace=False)] = True
        in_gallery = np.flatnonzero(~is_query)
        if max_gallery_per_identity is not None and len(in_gallery) > max_gallery_per_identity:
            in_gallery = draw_gallery.choice(in_gallery, size=max_gallery_per_identity, replace=False)
        for i, (f, q) in enumerate(zip(files, is_query)):
            if not q and i not in in_gallery:
                bar.update()
                continue
            name = anonymous(rng)
            if q or not rendered_gallery:
                shutil.copyfile(f, (query_dir if q else gallery_dir) / name)
            else:
                drawn = _drawn(gallery_mix, draw_gallery)
                _write(f, gallery_dir / name, drawn, args.get(drawn))
                gallery_styles[name] = drawn
            truth["queries" if q else "gallery"][name] = person
            sources[name] = f"{person}/{f.name}"
            bar.update()
    bar.close()
    truth = {part: dict(sorted(d.items())) for part, d in truth.items()}
    (out / TRUTH_FILE).write_text(json.dumps(truth, indent=1))
    manifest = {
        "source": str(root), "copy": "copyfile" if not rendered_gallery else "copyfile (queries, train); gallery rendered",
        "gallery_style": identities[gallery_style] if gallery_style in identities else None,
        "gallery_mix": {name: {"weight": w, "style": identities[name]} for name, w in gallery_mix.items()},
        "train_mix": {name: {"weight": w, "style": identities[name]} for name, w in train_mix.items()}
        if any(n_renders.values()) else None,
        "params": {"train_min": train_min, "test_min": test_min, "test_max": test_max,
                   "n_query_per_identity": n_query_per_identity, "seed": seed,
                   "max_test_identities": max_test_identities, "max_train_identities": max_train_identities,
                   "max_train_images_per_identity": max_train_images_per_identity,
                   "max_gallery_per_identity": max_gallery_per_identity,
                   "gallery_style": gallery_style, "style_args": style_args or {},
                   "train_styles": train_styles, "train_render_fraction": train_render_fraction},
        "counts": {"train_identities": len(train_people), "train_images": n_train,
                   "train_renders": sum(n_renders.values()),
                   "test_identities": len(test_people), "queries": len(truth["queries"]),
                   "gallery": len(truth["gallery"])},
        "paths": {"train": str(out / "train"), "query": str(query_dir), "gallery": str(gallery_dir),
                  "truth": str(out / TRUTH_FILE)},
        "train_identities": train_people, "test_identities": test_people,
        "sources": dict(sorted(sources.items())),
        "gallery_styles": dict(sorted(gallery_styles.items())),
        "train_domains": domains,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return manifest
