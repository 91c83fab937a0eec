"""submit + score_submission: the competition's submission.json, end to end on a tiny LFW layout."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.competition import make_competition
from benchmark.config import ConfigError, from_dict
from benchmark.evaluation.metrics import from_matches
from benchmark.models.backbones import build_backbone
from benchmark.models.head import ProjectionHead
from benchmark.evaluation.retrieval import faiss
from benchmark.submit import InputError, format_summary, score_files, score_submission, submit
from benchmark.features.views import eval_view, to_input
from benchmark import submit as submit_module
from tiny_prep import make_prep


def _lfw_home() -> str:
    for home in (os.environ.get("SCIKIT_LEARN_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"):
        if home and (Path(home) / "lfw_home" / "lfw_funneled").is_dir():
            return str(home)
    pytest.skip("LFW not found: set SCIKIT_LEARN_DATA to the folder holding lfw_home/")


def _tiny_cfg(train_dir, **kw):
    return from_dict(dict(dataset="imagefolder", data_home=str(train_dir), min_faces_per_person=5,
                          backbone="resnet18", weights="random", image_size=64, resize=72, epochs=1,
                          tracking="none", num_workers=0, **{"runtime": "torch", **kw}))


def _torch_features(paths, net, cfg):
    """Eval-view features recomputed image by image (PIL decode, torch network): (features, names)."""
    prep = make_prep(cfg.image_size, cfg.resize, mean=net.spec.mean, std=net.spec.std)
    imgs = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths]
    with torch.no_grad():
        return net(to_input(torch.stack([eval_view(i, prep) for i in imgs]), prep)), [p.name for p in paths]


# --- scoring on a hand-made submission ---------------------------------------------------------
def _hand_made():
    """5 queries; gallery: one image each of A, B, C, F and ten of E (distractors)."""
    gallery = {"gA": "A", "gB": "B", "gC": "C", "gF": "F"} | {f"e{i}": "E" for i in range(10)}
    truth = {"queries": {"q1": "A", "q2": "B", "q3": "C", "q4": "D", "q5": "F"}, "gallery": gallery}
    e = [f"e{i}" for i in range(10)]
    submission = {
        "q1": ["gA"] + e[:9],                 # rank 1: top1, top5, top10
        "q2": e[:3] + ["gB"] + e[3:9],        # rank 4: top5, top10
        "q3": e[:6] + ["gC"] + e[6:9],        # rank 7: top10 only
        # q4 missing: wrong (and D has no gallery image: unanswerable)
        "q5": e[:10] + ["gF"],                # rank 11: beyond top10, wrong
    }
    return submission, truth


def test_score_known_answer():
    submission, truth = _hand_made()
    r = score_submission(submission, truth)
    # by hand: top1 = 1/5, top5 = 2/5, top10 = 3/5; score = 600*0.2 + 300*0.4 + 100*0.6 = 300
    assert (r["top1"], r["top5"], r["top10"]) == (0.2, 0.4, 0.6)
    assert r["score"] == pytest.approx(300.0)
    assert r["n_queries"] == 5 and r["n_submitted"] == 4 and r["n_missing"] == 1
    assert r["n_unanswerable"] == 1 and r["n_short"] == 0


def test_score_rejects_unknown_names_and_bad_shapes(tmp_path):
    submission, truth = _hand_made()
    with pytest.raises(InputError, match="gallery files the truth does not know.*nope.jpg"):
        score_submission({**submission, "q1": ["nope.jpg"]}, truth)
    with pytest.raises(InputError, match="not in the truth's queries.*q9"):
        score_submission({**submission, "q9": ["gA"]}, truth)
    with pytest.raises(InputError, match="not lists"):
        score_submission({**submission, "q1": "gA"}, truth)
    with pytest.raises(InputError, match='"queries"'):
        score_submission(submission, {"gallery": truth["gallery"]})
    (tmp_path / "s.json").write_text("{not json")
    (tmp_path / "t.json").write_text(json.dumps(truth))
    with pytest.raises(InputError, match="s.json is not valid JSON"):
        score_files(tmp_path / "s.json", tmp_path / "t.json")
    assert isinstance(InputError("x"), ConfigError)  # the CLI reports it as a usage error


# --- end to end on LFW -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def comp(tmp_path_factory):
    root = tmp_path_factory.mktemp("submit")
    make_competition(root / "comp", data_home=_lfw_home(), max_train_identities=4, max_test_identities=5,
                     max_train_images_per_identity=10, seed=0)
    return root


@pytest.fixture(scope="module")
def submitted(comp):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCHMARK_CACHE_DIR", str(comp / "cache"))
        cfg = _tiny_cfg(comp / "comp" / "train")
        summary = submit(cfg, comp / "comp" / "test" / "query", comp / "comp" / "test" / "gallery", k=10,
                         out=comp / "out" / "submission.json", index_dir=comp / "index")
    return cfg, summary


def test_submission_has_every_query_with_k_gallery_names(comp, submitted):
    _, summary = submitted
    sub = json.loads((comp / "out" / "submission.json").read_text())
    queries = {p.name for p in (comp / "comp" / "test" / "query").iterdir()}
    gallery = {p.name for p in (comp / "comp" / "test" / "gallery").iterdir()}
    assert set(sub) == queries and summary["n_queries"] == len(queries)
    for ranked in sub.values():
        assert len(ranked) == 10 and len(set(ranked)) == 10 and set(ranked) <= gallery
    assert summary["k"] == 10 and not summary["warnings"]
    assert summary["query"]["skipped"] == [] and summary["gallery"]["skipped"] == []
    t = summary["train"]
    assert t["trained"] and t["n_train_identities"] == 4 and 0 <= t["val/score"] <= 1000
    assert "head trained on" in format_summary(summary)


def test_score_of_the_submission_matches_an_independent_recomputation(comp, submitted):
    sub = json.loads((comp / "out" / "submission.json").read_text())
    truth = json.loads((comp / "comp" / "truth.json").read_text())
    r = score_files(comp / "out" / "submission.json", comp / "comp" / "truth.json")
    for k in ("top1", "top5", "top10"):
        assert 0.0 <= r[k] <= 1.0
    assert r["top1"] <= r["top5"] <= r["top10"] and r["n_missing"] == 0
    names = sorted(truth["queries"])
    matches = np.array([[truth["gallery"][g] == truth["queries"][q] for g in sub[q]] for q in names])
    expected = from_matches(matches, n_relevant=np.ones(len(names)))  # every query is answerable
    for key in ("top1", "top5", "top10", "score"):
        assert r[key] == pytest.approx(expected[key])


def test_saved_index_keys_and_head_reproduce_the_submission(comp, submitted):
    """What is saved beside the submission is enough to answer new queries the same way."""
    cfg, summary = submitted
    keys = json.loads((comp / "index" / "submission.gallery_keys.json").read_text())
    assert keys == sorted(p.name for p in (comp / "comp" / "test" / "gallery").iterdir())
    head = ProjectionHead(512, cfg.embedding_dim)
    head.load_state_dict(torch.load(comp / "index" / "submission.head.pt", weights_only=True))
    queries = sorted((comp / "comp" / "test" / "query").iterdir())
    feats, names = _torch_features(queries, build_backbone(cfg), cfg)
    with torch.no_grad():
        q = head.eval()(feats).numpy()
    if faiss is not None:
        index = faiss.read_index(summary["files"]["index"])
        assert index.ntotal == len(keys)
        _, idx = index.search(q, 1)
    else:
        idx = (q @ np.load(summary["files"]["index"]).T).argmax(1)[:, None]
    sub = json.loads((comp / "out" / "submission.json").read_text())
    assert {n: keys[i[0]] for n, i in zip(names, idx)} == {n: sub[n][0] for n in names}


def test_submit_with_a_trainable_block_embeds_through_it(comp, tmp_path, monkeypatch):
    """trainable_blocks=1: the saved head holds the trained block; frozen part -> block -> head
    reproduces the submission's rankings."""
    from benchmark.models.backbones import TrainableBlocks, split
    from benchmark.models.head import Embedder, embed

    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(comp / "cache"))
    cfg = _tiny_cfg(comp / "comp" / "train", trainable_blocks=1, lr=0.01)
    q_dir, g_dir = comp / "comp" / "test" / "query", comp / "comp" / "test" / "gallery"
    submit(cfg, q_dir, g_dir, k=3, out=tmp_path / "s.json", index_dir=tmp_path)
    state = torch.load(tmp_path / "s.head.pt", weights_only=True)
    assert any(k.startswith("trunk.") for k in state)
    frozen, units = split(build_backbone(cfg), 1)
    model = Embedder(TrainableBlocks(units), ProjectionHead(512, cfg.embedding_dim))
    model.load_state_dict(state)
    q_feats, q_names = _torch_features(sorted(q_dir.iterdir()), frozen, cfg)
    g_feats, g_names = _torch_features(sorted(g_dir.iterdir()), frozen, cfg)
    scores = embed(model, q_feats).numpy() @ embed(model, g_feats).numpy().T
    sub = json.loads((tmp_path / "s.json").read_text())
    assert {n: g_names[i] for n, i in zip(q_names, scores.argmax(1))} == {n: sub[n][0] for n in q_names}
    # the block was trained: its weights differ from the pretrained (here: fixed random) ones
    assert not torch.equal(state["trunk.units.0.conv1.weight"], units[0].conv1.weight)


# --- input handling ----------------------------------------------------------------------------
@pytest.fixture()
def folders(comp, tmp_path, monkeypatch):
    """Small query/gallery folders copied from the layout; config without training (fast)."""
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(comp / "cache"))
    src_q = sorted((comp / "comp" / "test" / "query").iterdir())
    src_g = sorted((comp / "comp" / "test" / "gallery").iterdir())
    q, g = tmp_path / "query", tmp_path / "gallery"
    q.mkdir()
    g.mkdir()
    for p in src_q[:2]:
        shutil.copyfile(p, q / p.name)
    for p in src_g[:4]:
        shutil.copyfile(p, g / p.name)
    return _tiny_cfg(comp / "comp" / "train", embedding="backbone"), q, g, tmp_path


def test_submit_embeds_through_the_runs_pass_with_progress_and_cached_gallery(folders, monkeypatch, capsys):
    """One extraction path: the streaming pass (its progress bar on stderr) and the feature cache; a
    second submit on the same gallery computes nothing, and gives the same submission."""
    from benchmark.features import engines

    cfg, q, g, tmp = folders
    passes = []
    real = engines.extract_views
    monkeypatch.setattr(engines, "extract_views", lambda net, paths, *a: passes.append(len(paths)) or
                        real(net, paths, *a))
    submit(cfg, q, g, k=3, out=tmp / "a.json")
    assert passes == [4, 2]  # gallery, then queries
    assert "resnet18 (torch): eval view" in capsys.readouterr().err
    submit(cfg, q, g, k=3, out=tmp / "b.json")
    assert passes == [4, 2]  # both read from the cache
    assert (tmp / "a.json").read_text() == (tmp / "b.json").read_text()


def _independent_embeddings(cfg, paths):
    """Normalized backbone embeddings of ``paths`` recomputed with PIL + numpy."""
    net = build_backbone(cfg)
    imgs = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths]
    prep = make_prep(cfg.image_size, cfg.resize, mean=net.spec.mean, std=net.spec.std)
    x = to_input(torch.stack([eval_view(i, prep) for i in imgs]), prep)
    f = net(x).numpy().astype(np.float64)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def _independent_ranking(cfg, q_dir, g_dir, k):
    """Backbone-embedding ranking recomputed with PIL + numpy (stable ties by gallery name)."""
    qp, gp = sorted(q_dir.iterdir()), sorted(g_dir.iterdir())
    sims = _independent_embeddings(cfg, qp) @ _independent_embeddings(cfg, gp).T
    return {q.name: [gp[j].name for j in np.argsort(-s, kind="stable")[:k]] for q, s in zip(qp, sims)}


def test_backbone_embedding_ranking_matches_independent_computation(folders):
    cfg, q, g, tmp = folders
    summary = submit(cfg, q, g, k=3, out=tmp / "s.json")
    assert summary["train"] == {"embedding": "backbone", "trained": False}
    assert not (tmp / "s.head.pt").exists() and (tmp / "s.gallery_keys.json").exists()
    assert json.loads((tmp / "s.json").read_text()) == _independent_ranking(cfg, q, g, 3)


def test_non_images_and_corrupt_images_are_skipped_and_reported(folders):
    cfg, q, g, tmp = folders
    (g / "notes.txt").write_text("not an image")
    (g / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (g / "empty.png").write_bytes(b"")
    (g / "nested").mkdir()
    (q / ".DS_Store").write_bytes(b"\x00")
    # on_bad_image=error (the default, as for a run's dataset): refused, every unreadable file named
    with pytest.raises(InputError, match=r"2 of 6 images cannot be read: broken.jpg .*empty.png .*on_bad_image=skip"):
        submit(cfg, q, g, k=3, out=tmp / "s.json")
    with pytest.warns(UserWarning, match="skipped") as rec:
        summary = submit(cfg.replace(on_bad_image="skip"), q, g, k=3, out=tmp / "s.json")
    skipped = {s["name"]: s["reason"] for s in summary["gallery"]["skipped"]}
    assert set(skipped) == {"notes.txt", "broken.jpg", "empty.png", "nested"}
    assert "not an image" in skipped["notes.txt"] and "sub-folder" in skipped["nested"]
    assert "unreadable image" in skipped["broken.jpg"] and "broken.jpg" in skipped["broken.jpg"]
    assert summary["gallery"]["n_skipped"] == 4 and summary["gallery"]["n_images"] == 4
    assert [s["name"] for s in summary["query"]["skipped"]] == [".DS_Store"]
    text = format_summary(summary)
    assert "skipped gallery broken.jpg: unreadable image" in text and "skipped query .DS_Store" in text
    assert any("broken.jpg" in str(w.message) for w in rec)
    sub = json.loads((tmp / "s.json").read_text())
    assert all(set(r) <= {p.name for p in g.glob("*.jpg")} - {"broken.jpg"} for r in sub.values())


def test_unreadable_images_follow_on_bad_image_which_defaults_to_error(folders):
    """submit skipped an unreadable query with a warning although on_bad_image defaults to error."""
    cfg, q, g, tmp = folders
    assert cfg.on_bad_image == "error"
    (q / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (q / "notes.txt").write_text("not an image: skipped whatever the policy")
    n = len(list(q.glob("*.jpg")))
    with pytest.raises(InputError, match=rf"^query folder {q}: 1 of {n} images cannot be read: broken.jpg \(.*\)\. "
                                         "Fix or remove them, or --set on_bad_image=skip to leave them out$"):
        submit(cfg, q, g, k=3, out=tmp / "s.json")
    assert not (tmp / "s.json").exists()
    with pytest.warns(UserWarning, match="skipped 2 entries: notes.txt, broken.jpg"):
        summary = submit(cfg.replace(on_bad_image="skip"), q, g, k=3, out=tmp / "s.json")
    assert summary["n_queries"] == n - 1 and "broken.jpg" not in json.loads((tmp / "s.json").read_text())


def test_k_larger_than_gallery_is_clamped_with_a_warning(folders):
    cfg, q, g, tmp = folders
    with pytest.warns(UserWarning, match="clamped to k=4"):
        summary = submit(cfg, q, g, k=10, out=tmp / "s.json")
    assert summary["k"] == 4 and summary["k_requested"] == 10 and summary["warnings"]
    assert all(len(r) == 4 for r in json.loads((tmp / "s.json").read_text()).values())
    with pytest.raises(InputError, match="k=0"):
        submit(cfg, q, g, k=0, out=tmp / "s.json")


def test_bad_folders_are_clear_errors(folders):
    cfg, q, g, tmp = folders
    empty = tmp / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=re.escape(f"gallery folder {empty} is empty")):
        submit(cfg, q, empty, out=tmp / "s.json")
    with pytest.raises(InputError, match="does not exist"):
        submit(cfg, tmp / "nowhere", g, out=tmp / "s.json")
    only_text = tmp / "text"
    only_text.mkdir()
    (only_text / "a.txt").write_text("x")
    with pytest.raises(InputError, match="has no image files"):
        submit(cfg, only_text, g, out=tmp / "s.json")
    bad = tmp / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(InputError, match="1 of 1 images cannot be read: x.jpg"):
        submit(cfg, q, bad, out=tmp / "s.json")
    with pytest.raises(InputError, match="none of its 1 image files could be read"):
        cfg = cfg.replace(on_bad_image="skip")
        submit(cfg, q, bad, out=tmp / "s.json")
    assert not (tmp / "s.json").exists()


def test_duplicate_names_are_an_error(folders):
    cfg, q, g, tmp = folders
    first = sorted(g.iterdir())[0]
    shutil.copyfile(first, g / (first.stem + ".JPG"))
    with pytest.raises(InputError, match="equal up to case.*" + re.escape(first.stem)):
        submit(cfg, q, g, out=tmp / "s.json")


@pytest.mark.parametrize("how", ["same folder", "copy under another name", "copy under the same name"])
def test_queries_that_are_also_gallery_images_are_refused_before_any_work(folders, monkeypatch, how):
    """With the queries also in the gallery every query's first result was itself, without a word."""
    cfg, q, g, tmp = folders
    monkeypatch.setattr(submit_module, "_model", lambda cfg: pytest.fail("features computed before the check"))
    query = sorted(q.iterdir())[1]
    if how == "same folder":
        g = q
        expect = f"2 of 2 query image(s) are also in the gallery (identical content): query {sorted(q.iterdir())[0].name}"
    else:
        name = "zz-copy.jpg" if how == "copy under another name" else query.name
        shutil.copyfile(query, g / name)
        expect = f"1 of 2 query image(s) are also in the gallery (identical content): query {query.name} = gallery {name}"
    with pytest.raises(InputError, match=re.escape(expect) + ".*own first match. Fix: remove them from the gallery"):
        submit(cfg, q, g, out=tmp / "s.json")
    assert not (tmp / "s.json").exists()


def test_same_names_with_other_content_are_not_self_matches(folders):
    cfg, q, g, tmp = folders
    query, other = sorted(q.iterdir())[0], sorted(g.iterdir())[0]
    shutil.copyfile(other, g / query.name)  # a gallery file named like a query, holding another image
    submit_module.check_self_matches(sorted(q.iterdir()), sorted(g.iterdir()))  # no error


def test_without_faiss_the_torch_search_gives_the_same_submission(folders, monkeypatch):
    import benchmark.evaluation.retrieval
    import benchmark.submit

    cfg, q, g, tmp = folders
    submit(cfg, q, g, k=3, out=tmp / "with.json", index_dir=tmp / "with")
    monkeypatch.setattr(benchmark.evaluation.retrieval, "faiss", None)
    monkeypatch.setattr(benchmark.submit, "faiss", None)
    summary = submit(cfg, q, g, k=3, out=tmp / "without.json", index_dir=tmp / "without")
    assert summary["search"] == "torch exact top-k"
    assert summary["files"]["index"].endswith("gallery_embeddings.npy")
    assert np.load(summary["files"]["index"]).shape == (4, 512)
    assert (tmp / "with.json").read_text() == (tmp / "without.json").read_text()


def test_hidden_images_are_skipped_and_a_folder_as_output_is_an_error_before_any_work(folders):
    cfg, q, g, tmp = folders
    shutil.copyfile(sorted(g.iterdir())[0], g / ".copy.jpg")  # a valid image, but hidden
    with pytest.warns(UserWarning, match="skipped"):
        summary = submit(cfg, q, g, k=3, out=tmp / "s.json")
    assert [s["name"] for s in summary["gallery"]["skipped"]] == [".copy.jpg"]
    assert "hidden" in summary["gallery"]["skipped"][0]["reason"]
    assert all(".copy.jpg" not in r for r in json.loads((tmp / "s.json").read_text()).values())
    (tmp / "out_dir").mkdir()
    with pytest.raises(InputError, match=re.escape(f"submission path {tmp / 'out_dir'} is a folder")):
        submit(cfg, q, g, out=tmp / "out_dir")
    with pytest.raises(InputError, match=re.escape(f"{tmp / 'out_dir'} is a folder; give the JSON file")):
        score_files(tmp / "out_dir", tmp / "s.json")
    (tmp / "file").write_text("")
    with pytest.raises(ConfigError, match="is not writable"):
        submit(cfg, q, g, out=tmp / "file" / "s.json")


# --- issue 17: --train DIR and the test-time remedies ---------------------------------------------------
def test_train_dir_replaces_the_configs_dataset(comp, tmp_path, monkeypatch):
    """A config for another dataset trains on the competition's own train/ when given --train."""
    monkeypatch.setenv("BENCHMARK_CACHE_DIR", str(comp / "cache"))
    cfg = _tiny_cfg(tmp_path / "elsewhere").replace(dataset="orl", data_home=None, max_identities=3)
    train = comp / "comp" / "train"
    summary = submit(cfg, comp / "comp" / "test" / "query", comp / "comp" / "test" / "gallery", k=3,
                     out=tmp_path / "s.json", train_dir=train)
    n_images = sum(1 for p in train.glob("*/*") if p.is_file())
    assert summary["train"]["n_train_identities"] == 4  # the folder's 4 people (closed-set), not ORL's 3
    assert summary["train"]["n_train_images"] == n_images // 2  # 50% of each person's 10 images
    with pytest.raises(InputError, match="training folder .* is not a folder"):
        submit(cfg, comp / "comp" / "test" / "query", comp / "comp" / "test" / "gallery", out=tmp_path / "t.json",
               train_dir=tmp_path / "missing")


def test_test_time_remedies_rank_by_the_rerank_scores(folders):
    from benchmark.evaluation import remedies

    cfg, q, g, tmp = folders
    plain = submit(cfg, q, g, k=4, out=tmp / "plain.json", index_dir=tmp / "i1")
    assert plain["search"].startswith(("faiss", "torch"))
    cfg = cfg.replace(query_fraction=0.5, centering=True, rerank="dba", rerank_args={"k": 1})
    summary = submit(cfg, q, g, k=4, out=tmp / "s.json", index_dir=tmp / "i2")
    assert summary["search"] == "exact scores after centering + dba"
    qp, gp = sorted(q.iterdir()), sorted(g.iterdir())
    scores = remedies.scores(_independent_embeddings(cfg, qp), _independent_embeddings(cfg, gp), cfg)
    want = {p.name: [gp[j].name for j in row] for p, row in zip(qp, np.argsort(-scores, axis=1, kind="stable"))}
    assert json.loads((tmp / "s.json").read_text()) == want


def test_query_style_renders_the_queries_before_embedding(folders):
    from benchmark.features import styles
    from benchmark.features.views import decode

    cfg, q, g, tmp = folders
    cfg = cfg.replace(query_fraction=0.5, query_style="grey")
    summary = submit(cfg, q, g, k=4, out=tmp / "s.json", index_dir=tmp / "i")
    assert summary["query_style"] == "grey"
    rendered = tmp / "rendered"
    rendered.mkdir()
    for p in sorted(q.iterdir()):  # lossless copies of the grey renders: the ranking they must give
        Image.fromarray(styles.render(decode(str(p)), "grey").permute(1, 2, 0).numpy()).save(rendered / f"{p.name}.png")
    want = _independent_ranking(cfg, rendered, g, 4)
    assert json.loads((tmp / "s.json").read_text()) == {k.removesuffix(".png"): v for k, v in want.items()}


def test_index_files_belong_to_their_submission_and_a_failed_submit_writes_nothing(folders, monkeypatch):
    """Issue 23 rule 2: the index files are named after --out, written only once the ranking is done;
    a submit that fails leaves the folder as it was, and replacing an earlier submission is said."""
    import benchmark.submit as submit_module

    cfg, q, g, tmp = folders
    submit(cfg, q, g, k=3, out=tmp / "a.json")
    before = {p.name: p.read_bytes() for p in tmp.iterdir() if p.is_file()}
    assert {"a.json", "a.gallery_keys.json"} <= set(before) and any(n.startswith("a.gallery_") for n in before)

    def broken(*args, **kwargs):
        raise RuntimeError("search failed")

    monkeypatch.setattr(submit_module, "search", broken)
    with pytest.raises(RuntimeError, match="search failed"):
        submit(cfg, q, g, k=3, out=tmp / "a.json")
    with pytest.raises(RuntimeError, match="search failed"):
        submit(cfg, q, g, k=3, out=tmp / "b.json")  # another submission: nothing of it, nothing touched
    assert {p.name: p.read_bytes() for p in tmp.iterdir() if p.is_file()} == before
    monkeypatch.undo()
    with pytest.warns(UserWarning, match=r"replaced an earlier submission's files: \S*a.json, \S*a.gallery"):
        summary = submit(cfg, q, g, k=3, out=tmp / "a.json")
    assert any(w.startswith("replaced an earlier submission's files") for w in summary["warnings"])
    summary = submit(cfg, q, g, k=3, out=tmp / "c.json")  # a new submission beside it replaces nothing
    assert not any("replaced" in w for w in summary["warnings"])
    assert set(summary["files"]) == {"index", "gallery_keys", "submission"}
    assert all(Path(f).name.startswith("c.") for f in summary["files"].values())


def test_the_summary_of_an_unscorable_validation_says_n_a():
    """``submit --train`` on 3 people: validation had nothing to score; the summary printed
    ``TypeError: unsupported format string passed to NoneType`` after submission.json was written."""
    from benchmark.submit import format_summary

    summary = {"out": "s.json", "n_queries": 2, "k": 10, "n_gallery": 9, "search": "faiss IndexFlatIP",
               "device": "cpu", "time_s": 1.0, "warnings": [], "files": {"submission": "s.json"},
               "query": {"skipped": []}, "gallery": {"skipped": []},
               "train": {"trained": True, "n_train_images": 15, "n_train_identities": 3, "best_epoch": 1,
                         "epochs_run": 1, "val/score": None, "val/loss": 1.25}}
    assert "(val/score=n/a, val/loss=1.25)" in format_summary(summary)


def test_submit_groupname_writes_the_servers_envelope_that_check_submission_passes(folders, capsys):
    """Issue 24: the server read {"groupname", "images": {query basename: [k gallery basenames]}}."""
    from benchmark import cli

    cfg, q, g, tmp = folders
    with pytest.raises(InputError, match="the gallery holds 4 images but the server reads exactly k=10"):
        submit(cfg, q, g, k=10, out=tmp / "s.json", groupname="team7")  # refused, not clamped
    assert not (tmp / "s.json").exists()
    for bad in ("team\n7", "\u202e7maet", "t" * 101, " "):  # what check-submission would refuse: before any work
        with pytest.raises(InputError, match=r"^--groupname .*e\.g\. --groupname team7"):
            submit(cfg, q, g, k=3, out=tmp / "s.json", groupname=bad)
    assert not (tmp / "s.json").exists()
    # k=3 is written (a study's envelope) but said: the server reads 10, check-submission --k 10 refuses it
    with pytest.warns(UserWarning, match=r"--groupname with k=3: the server reads exactly 10 gallery names"):
        summary = submit(cfg, q, g, k=3, out=tmp / "s.json", groupname="team7")
    assert any("submit with --k 10" in w for w in summary["warnings"])
    doc = json.loads((tmp / "s.json").read_text())
    assert summary["form"] == "envelope" and doc["groupname"] == "team7"
    assert set(doc["images"]) == {p.name for p in q.iterdir()}
    assert all(len(set(v)) == 3 and all("/" not in n for n in v) for v in doc["images"].values())
    capsys.readouterr()
    assert cli.main(["check-submission", str(tmp / "s.json"), "--query", str(q), "--gallery", str(g), "--k", "3"]) == 0
