"""Competition submission (report section 1.2, steps 4-6).

``submit``: train the head of a config on its training data (its own split and early stopping,
exactly as ``benchmark run`` trains it), embed a flat gallery folder with the frozen backbone (eval
view) + that head, index it in a faiss ``IndexFlatIP`` (saved with ``gallery_keys.json``), embed a
flat query folder and write ``submission.json``::

    {"<query file name>": ["<gallery file name>", ...k names, best first], ...}

Ranking is ``benchmark.evaluation.retrieval.search``: exact cosine, score descending, ties by file name order
(an ensemble with ``fusion: minmax``: its fused similarity, ``benchmark.evaluation.fusion``).

Its scoring (``score_submission``, ``score_files``) lives in ``benchmark.evaluation.scoring``, torch-free.

Input handling: a missing or empty folder, or one with no readable image, is an error naming the
folder; files that are not images (by suffix) and sub-folders are skipped; images that cannot be
decoded follow ``on_bad_image`` (error, the default: refused naming them; skip: skipped with the
reason); all skips are returned in the summary and raised as warnings, never silent. File names
equal up to case (``a.jpg`` / ``a.JPG``) are an error: they would be ambiguous keys. ``k`` larger
than the gallery is clamped to the gallery size with a warning.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from benchmark.evaluation import formats, fusion, remedies, validators
from benchmark.config import ENSEMBLE, Config
from benchmark.data.check import unreadable
from benchmark.data.imagefolder import IMAGE_SUFFIXES, is_hidden
from benchmark.features.cache import FeatureCache
from benchmark.features.engines import fuse, image_features
from benchmark.files import atomic_path, check_writable, write_atomic
from benchmark.models.backbones import adapt
from benchmark.models.head import embed
from benchmark.evaluation.retrieval import build_index, faiss, search
from benchmark.evaluation.scoring import InputError, score_files, score_submission  # noqa: F401 (the submit API)

INDEX_FILE = "gallery.index"
EMBEDDINGS_FILE = "gallery_embeddings.npy"  # written instead of the index when faiss is absent
KEYS_FILE = "gallery_keys.json"
HEAD_FILE = "head.pt"


# --- input folders --------------------------------------------------------------------------------
def scan_folder(folder: Path | str, role: str = "image") -> tuple[list[Path], list[dict]]:
    """Image files directly inside ``folder`` (sorted by name) and the entries skipped, with reasons.

    Raises InputError for a missing or empty folder, one without image files, and for file names
    that are equal up to case.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{role} folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{role} folder {folder} is not a folder")
    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    if not entries:
        raise InputError(f"{role} folder {folder} is empty; expected image files "
                         f"({', '.join(sorted(IMAGE_SUFFIXES))}) directly inside it")
    images, skipped = [], []
    for p in entries:
        if is_hidden(p):
            skipped.append({"name": p.name, "reason": "hidden (name starts with '.'): never an image"})
        elif p.is_dir():
            skipped.append({"name": p.name, "reason": "sub-folder ignored: a flat folder of images is expected"})
        elif not p.is_file():
            skipped.append({"name": p.name, "reason": "not a regular file"})
        elif p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append({"name": p.name, "reason": f"not an image file (suffix {p.suffix or 'none'!r})"})
        else:
            images.append(p)
    same = defaultdict(list)
    for p in images:
        same[p.name.casefold()].append(p.name)
    clashes = [names for names in same.values() if len(names) > 1]
    if clashes:
        shown = "; ".join(" / ".join(c) for c in clashes[:5])
        raise InputError(f"{role} folder {folder} has {len(clashes)} file name(s) that are equal up to case "
                         f"({shown}); submission keys must be unique: rename or remove the duplicates")
    if not images:
        raise InputError(f"{role} folder {folder} has no image files ({len(skipped)} other entries skipped, "
                         f"e.g. {skipped[0]['name']}); expected {', '.join(sorted(IMAGE_SUFFIXES))}")
    return images, skipped


def check_self_matches(query_paths: list[Path], gallery_paths: list[Path]) -> None:
    """Refuse queries that are also gallery images (the same file, or byte-identical copies under any
    name, by content hash): each would be retrieved as its own first match, a score that only looks real.
    Only files of a size some query has are hashed."""
    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    sizes = {p.stat().st_size for p in query_paths}
    in_gallery = defaultdict(list)
    for g in gallery_paths:
        if g.stat().st_size in sizes:
            in_gallery[digest(g)].append(g.name)
    if not in_gallery:
        return
    same = [(q.name, in_gallery[h]) for q in query_paths if (h := digest(q)) in in_gallery]
    if same:
        shown = "; ".join(f"query {q} = gallery {', '.join(g[:3])}" for q, g in same[:5])
        raise InputError(
            f"{len(same)} of {len(query_paths)} query image(s) are also in the gallery (identical content): {shown}"
            f"{' ...' if len(same) > 5 else ''}. Each would be retrieved as its own first match. Fix: remove them "
            "from the gallery folder, or give --query and --gallery folders that do not share images")


def readable(paths: list[Path], cfg: Config, role: str) -> tuple[list[Path], list[dict]]:
    """The images of ``paths`` that decode, and those left out with their reason, by the config's
    ``on_bad_image`` (as for a run's dataset): ``error`` (the default) refuses with every unreadable
    file named, ``skip`` leaves them out (listed in the summary and warned)."""
    bad = unreadable([str(p) for p in paths], cfg.cache_dir, cfg.num_workers)
    if bad and cfg.on_bad_image == "error":
        listed = "; ".join(f"{Path(p).name} ({r})" for p, r in list(bad.items())[:10])
        raise InputError(f"{role} folder {paths[0].parent}: {len(bad)} of {len(paths)} images cannot be read: "
                         f"{listed}. Fix or remove them, or --set on_bad_image=skip to leave them out")
    if len(bad) == len(paths):
        raise InputError(f"{role} folder {paths[0].parent}: none of its {len(paths)} image files could be read "
                         f"(e.g. {next(iter(bad.values()))})")
    return [p for p in paths if str(p) not in bad], \
        [{"name": Path(p).name, "reason": f"unreadable image {Path(p).name}: {r}"} for p, r in bad.items()]


# --- model ----------------------------------------------------------------------------------------
def _model(cfg: Config):
    """(engine or None, what embeds images): the config's engine with its training data when the
    embedding needs a trained head (None for ``embedding=backbone``), and per backbone (each member of
    an ensemble) the (preprocessing, plan, frozen network, device, cache) that ``image_features`` embeds
    the folders with."""
    from benchmark.models.backbones import split
    from benchmark.pipeline import feature_spec, frozen_backbone, member_configs, prepare, resolve_device

    if cfg.embedding == "head":
        engine = prepare(cfg).engine
        return engine, [(engine.prep, engine.plan, engine.frozen, engine.device, engine.cache)]
    device = resolve_device(cfg)  # normalized frozen features: no training data needed
    cache = FeatureCache(cfg.cache_dir)
    members = []
    for one in member_configs(cfg):
        frozen, _ = split(frozen_backbone(one, device), one.trainable_blocks)
        members.append((*feature_spec(one, frozen, device, cache), frozen, device, cache))
    return None, members


def _features(paths: list[Path], members: list[tuple], cfg: Config, style: str | None = None) -> torch.Tensor:
    """Features of ``paths`` through each backbone of ``members`` (``_model``), an ensemble's ``fuse``d."""
    got = [image_features(list(map(str, paths)), *member, style=style)[0] for member in members]
    return fuse(got, fusion.member_weights(cfg)) if cfg.backbone == ENSEMBLE else got[0]


def _train(cfg: Config, engine) -> tuple[torch.nn.Module | None, dict]:
    from benchmark.training.fit import fit

    if engine is None:
        return None, {"embedding": "backbone", "trained": False}
    t0 = time.perf_counter()
    model, history, best_epoch = fit(cfg, engine)
    best = next((row for row in history if row["epoch"] == best_epoch), {})
    info = {"embedding": "head", "trained": True, "n_train_images": int(len(engine.train_idx)),
            "n_train_identities": int(engine.n_classes), "epochs_run": len(history), "best_epoch": best_epoch,
            "train_s": time.perf_counter() - t0,
            **{k: v for k, v in best.items() if k.startswith("val/")}}
    return model.head, info


# --- submission -----------------------------------------------------------------------------------
def _write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1))


def index_files(out: Path, index_dir: Path) -> dict[str, Path]:
    """The files a submission ``out`` is written with, named after it (``submission.gallery.index``
    ...): the index of one submission is never left beside another's."""
    index = INDEX_FILE if faiss is not None else EMBEDDINGS_FILE
    return {name: index_dir / f"{out.stem}.{file}" for name, file in
            (("index", index), ("gallery_keys", KEYS_FILE), ("head", HEAD_FILE))}


def _write_submission(out: Path, index_dir: Path, submission: dict, gallery: np.ndarray, g_names: list[str],
                      head, msgs: list[str]) -> dict[str, Path]:
    """Write the index files, then the submission last (each atomically), once everything is
    computed: a failure before leaves the folder as it was. Replacing an earlier submission's files is
    said (``msgs`` and a warning)."""
    files = index_files(out, index_dir)
    if head is None:
        del files["head"]
    earlier = [p for p in (out, *files.values()) if p.exists()]
    if earlier:
        note = f"replaced an earlier submission's files: {', '.join(str(p) for p in earlier)}"
        warnings.warn(note, stacklevel=3)
        msgs.append(note)
    index_dir.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    index = build_index(gallery)
    with atomic_path(files["index"]) as tmp:
        if index is not None:
            faiss.write_index(index, str(tmp))
        else:
            with open(tmp, "wb") as f:
                np.save(f, gallery)
    _write_json(files["gallery_keys"], g_names)
    if head is not None:
        with atomic_path(files["head"]) as tmp:
            torch.save({k: v.cpu() for k, v in head.state_dict().items()}, tmp)
    _write_json(out, submission)
    return {**files, "submission": out}


def submit(cfg: Config, query_dir: Path | str, gallery_dir: Path | str, *, k: int = 10,
           out: Path | str = Path("submission.json"), index_dir: Path | str | None = None,
           train_dir: Path | str | None = None, groupname: str | None = None) -> dict:
    """Train ``cfg``'s head, index the gallery, retrieve the top-``k`` for every query, write ``out``.

    ``train_dir``: train on this ``<identity>/<image>`` folder (the competition's own ``train/``)
    instead of the config's dataset. The config's test-time remedies apply: ``query_style`` renders
    the queries, ``centering`` / ``rerank`` re-score query -> gallery (``benchmark.evaluation.remedies``) from the
    unlabeled query and gallery embeddings.

    ``index_dir`` (default: ``out``'s folder) receives, named after ``out`` (``index_files``):
    ``<stem>.gallery.index`` (faiss IndexFlatIP; without faiss ``<stem>.gallery_embeddings.npy``),
    ``<stem>.gallery_keys.json`` (file name of each index row, in order) and ``<stem>.head.pt`` (the
    trained head's state_dict, when the config trains one). Nothing is written before the ranking is
    done. ``groupname``: write the server's envelope (``benchmark.evaluation.formats``) with exactly
    ``k`` gallery names per query (a gallery smaller than ``k`` is then refused, not clamped; a ``k``
    other than the server's 10 is said in a warning); a group name ``check-submission`` would refuse
    (``formats.groupname_problem``) is refused before any work.

    Returns a summary: out, files written, k (used) and k_requested, n_queries, n_gallery, per folder
    (``query``, ``gallery``) the images used and every entry skipped with its reason, ``warnings``
    (other than skips: the k clamp, an envelope k other than 10), training facts (val/ metrics of the kept epoch), device, search,
    time and ``validators``: the label-free validators of these queries and gallery
    (``benchmark.evaluation.validators``, None where one cannot be computed, with a warning). Skips
    and the k clamp are also raised as ``UserWarning``. Input problems raise ``InputError`` before
    any training.
    """
    t0 = time.perf_counter()
    if train_dir is not None:
        if not Path(train_dir).is_dir():
            raise InputError(f"training folder {train_dir} is not a folder; give the competition's train/ "
                             "(<identity>/<image> files)")
        cfg = cfg.replace(dataset="imagefolder", data_home=str(train_dir), max_identities=None)
    cfg = adapt(cfg)  # the input size the backbone requires (aligned faces: 112x112)
    if k < 1:
        raise InputError(f"k={k} must be >= 1")
    if groupname is not None:
        formats.envelope(groupname, {})  # a blank name fails here, before any work
    out = Path(out)
    if out.is_dir():
        raise InputError(f"submission path {out} is a folder; give a file, e.g. --out {out / 'submission.json'}")
    index_dir = Path(index_dir) if index_dir is not None else out.parent
    check_writable(out.parent, "submission folder")
    check_writable(index_dir, "index folder")
    query_paths, query_skipped = scan_folder(query_dir, "query")
    gallery_paths, gallery_skipped = scan_folder(gallery_dir, "gallery")
    check_self_matches(query_paths, gallery_paths)

    engine, members = _model(cfg)  # fails fast (weights, training data) before any warning or work
    gallery_paths, g_bad = readable(gallery_paths, cfg, "gallery")
    query_paths, q_bad = readable(query_paths, cfg, "query")
    query_skipped += q_bad
    gallery_skipped += g_bad
    g_names, q_names = [p.name for p in gallery_paths], [p.name for p in query_paths]
    for role, folder, skipped in (("query", query_dir, query_skipped), ("gallery", gallery_dir, gallery_skipped)):
        if skipped:
            names = ", ".join(s["name"] for s in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
            warnings.warn(f"{role} folder {folder}: skipped {len(skipped)} entries: {names}", stacklevel=2)
    msgs = []  # warnings other than skips (those are listed entry by entry in the summary)
    k_used = k
    if k > len(g_names) and groupname is not None:
        raise InputError(f"the gallery holds {len(g_names)} images but the server reads exactly k={k} per query; "
                         "check --gallery, or give a smaller --k")
    if k > len(g_names):
        k_used = len(g_names)
        msgs.append(f"k={k} is larger than the gallery ({len(g_names)} images): clamped to k={k_used}")
    if groupname is not None and k != formats.K:  # the envelope is for the server, which reads Top-10
        msgs.append(f"--groupname with k={k}: the server reads exactly {formats.K} gallery names per query, so "
                    f"check-submission (--k {formats.K}) will refuse this file; submit with --k {formats.K} to upload it")
    for m in msgs:
        warnings.warn(m, stacklevel=2)

    head, train_info = _train(cfg, engine)
    # the same streaming pass as a run's (progress bar, decoder fallbacks, alignment), cached: a second
    # submit on the same gallery reads its features
    gallery = embed(head, _features(gallery_paths, members, cfg)).cpu().numpy().astype(np.float32)
    from benchmark.pipeline import style_tag

    query_style = style_tag(cfg, cfg.query_style)  # a test-time remedy: the queries rendered too
    queries = embed(head, _features(query_paths, members, cfg, query_style)).cpu().numpy().astype(np.float32)
    device = members[0][3]

    chain = remedies.chain(cfg)
    if chain or fusion.fused(cfg):  # test-time remedies (or an ensemble's fusion) score every query x gallery pair
        skipped: dict[str, str] = {}
        idx = np.argsort(-fusion.scores(queries, gallery, cfg, skipped), axis=1, kind="stable")[:, :k_used]
        for note in remedies.skip_notes(skipped):
            warnings.warn(note, stacklevel=2)
            msgs.append(note)
        chain = [name for name in chain if name not in skipped]
    else:
        _, idx = search(queries, gallery, k_used)
    submission = {q: [g_names[j] for j in row] for q, row in zip(q_names, idx)}
    found, unfound = validators.measure(queries, gallery, cfg)  # label-free: what choose --by test/validator/ reads
    for note in unfound:
        warnings.warn(note, stacklevel=2)
        msgs.append(note)
    if groupname is not None:
        submission = formats.envelope(groupname, submission)
    files = _write_submission(out, index_dir, submission, gallery, g_names, head, msgs)
    return {
        "out": str(out), "files": {name: str(p) for name, p in files.items()},
        "k": k_used, "k_requested": k, "n_queries": len(q_names), "n_gallery": len(g_names),
        "query": {"folder": str(query_dir), "n_images": len(q_names), "n_skipped": len(query_skipped),
                  "skipped": query_skipped},
        "gallery": {"folder": str(gallery_dir), "n_images": len(g_names), "n_skipped": len(gallery_skipped),
                    "skipped": gallery_skipped},
        "warnings": msgs, "train": train_info, "device": str(device), "validators": found,
        "search": f"minmax fusion of {' + '.join(cfg.members)}" if fusion.fused(cfg) else
        f"exact scores after {' + '.join(chain)}" if chain else
        "faiss IndexFlatIP" if faiss is not None else "torch exact top-k",
        "query_style": cfg.query_style, "form": "envelope" if groupname is not None else "mapping",
        "time_s": time.perf_counter() - t0,
    }


def format_summary(summary: dict) -> str:
    """Human summary of a ``submit`` result (for the CLI), every skipped entry named with its reason."""
    lines = [f"wrote {summary['out']}: {summary['n_queries']} queries x top-{summary['k']} of "
             f"{summary['n_gallery']} gallery images ({summary['search']}, {summary['device']}, "
             f"{summary['time_s']:.1f}s)"]
    t = summary["train"]
    if t.get("trained"):
        val = ", ".join(f"{k}={'n/a' if v is None else format(v, '.4g')}" for k, v in t.items() if k.startswith("val/"))
        lines.append(f"head trained on {t['n_train_images']} images of {t['n_train_identities']} identities, "
                     f"kept epoch {t['best_epoch']}/{t['epochs_run']}" + (f" ({val})" if val else ""))
    else:
        lines.append("embedding=backbone: normalized frozen features, no training")
    for role in ("query", "gallery"):
        for s in summary[role]["skipped"]:
            lines.append(f"skipped {role} {s['name']}: {s['reason']}")
    found = summary.get("validators", {})  # label-free numbers of this query -> gallery, as a run's test/validator/
    if found:
        lines.append("validators of these queries and gallery (label-free): "
                     + ", ".join(f"{k}={'n/a' if v is None else format(v, '.4g')}" for k, v in found.items()))
    lines += [f"warning: {w}" for w in summary["warnings"]]
    lines += [f"{name}: {path}" for name, path in summary["files"].items() if name != "submission"]
    return "\n".join(lines)
