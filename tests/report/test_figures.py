"""Each figure has the expected axes, series and legend (inspected on the returned Figure)."""

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer, ErrorbarContainer

from benchmark.report import figures, palette, prepare, tables
from benchmark.results.schema import Unsupported

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def configs(synthetic):
    return prepare(synthetic).configs


def legend_labels(ax):
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def errorbars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_palette_is_one_colour_per_backbone():
    pal = palette(["efficientnet_b0", "vit_b_16", "resnet50", "my_net", "other_net"])
    assert len(set(pal.values())) == len(pal)
    assert palette()["efficientnet_b0"] == pal["efficientnet_b0"]  # stable whatever else is present
    assert palette(["my_net"])["my_net"] == pal["my_net"]


def test_figure1_lr(configs):
    fig = figures.figure1_lr(tables.lr_sweep(configs))
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert "Learning rate" in ax.get_xlabel() and "Test score" in ax.get_ylabel() and "points" in ax.get_ylabel()
    lines = errorbars(ax)
    assert len(lines) == 6  # 3 architectures x (3 epochs solid, 5 epochs dashed)
    assert legend_labels(ax)[:3] == ["EfficientNet-B0", "ViT-B/16", "ResNet50"]
    assert "ViT-B/16, 5 epochs" in legend_labels(ax)
    pal = palette()
    main = lines[0].lines[0]
    assert to_hex(main.get_color()) == pal["efficientnet_b0"]
    assert list(main.get_xdata()) == [0.001, 0.01, 0.1]
    assert main.get_ydata() == pytest.approx(tables.lr_sweep(configs).query("line == 'EfficientNet-B0'")["test/score"])
    assert lines[0].has_yerr  # the baseline has 3 seeds: error bars


def figure2(configs):
    t = tables.epoch_sweep(configs)
    return figures.figure2_epochs(t, tables.histories(t))


def test_figure2_epochs_and_curves(configs):
    fig = figure2(configs)
    a, b, c = fig.axes
    assert "epochs" in a.get_xlabel().lower() and "Test score" in a.get_ylabel()
    (curve,) = errorbars(a)
    assert list(curve.lines[0].get_xdata()) == [1, 2, 3, 5]
    assert b.get_xlabel() == "Epoch" and "Validation score" in b.get_ylabel()
    assert len(b.get_lines()) == 4 and len(legend_labels(b)) == 4
    assert legend_labels(b)[0].startswith("1-epoch run")
    assert legend_labels(c) == ["train loss", "validation loss"] and "loss" in c.get_ylabel().lower()
    assert len(c.get_lines()[0].get_xdata()) == 5


def test_figure2_without_histories_has_one_panel(configs):
    fig = figure2(configs.assign(run_dirs=[(None,)] * len(configs)))
    assert len(fig.axes) == 1


def test_figure3_ablations(configs):
    t = tables.ablations(configs)
    fig = figures.figure3_ablations(t)
    (ax,) = [x for x in fig.axes if x.get_xlabel()]
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 4
    assert [p.get_width() for p in bars] == pytest.approx(list(t["delta"]))
    assert [x.get_text() for x in ax.get_yticklabels()] == list(t["ablation"])
    assert "Δ test score" in ax.get_xlabel() and "points" in ax.get_xlabel()
    assert legend_labels(ax) == ["EfficientNet-B0"]
    assert to_hex(bars[0].get_facecolor()) == palette()["efficientnet_b0"]


def test_figure4_efficiency(configs):
    t = tables.efficiency(configs)
    fig = figures.figure4_efficiency(t, configs)
    (ax,) = fig.axes
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [p.get_height() for p in bars] == pytest.approx(list(t["score_per_minute"]))
    assert [to_hex(p.get_facecolor()) for p in bars] == [palette()[b] for b in t["backbone"]]
    assert "per minute" in ax.get_ylabel().lower() and ax.get_xlabel() == "Architecture"
    assert legend_labels(ax)[-1] == "one configuration"
    assert legend_labels(ax)[0].startswith("EfficientNet-B0")
    assert sum(len(c.lines[0].get_xdata()) for c in errorbars(ax)) == 24  # one dot per configuration


def test_figure5_tradeoff(configs):
    fig = figures.figure5_tradeoff(tables.pareto(configs))
    (ax,) = fig.axes
    assert "Cost of the configuration" in ax.get_xlabel() and "(s)" in ax.get_xlabel() and "Test score" in ax.get_ylabel()
    assert legend_labels(ax) == ["Pareto front", "EfficientNet-B0", "ViT-B/16", "ResNet50"]
    pts = errorbars(ax)
    assert [len(c.lines[0].get_xdata()) for c in pts] == [12, 6, 6]
    assert [to_hex(c.lines[0].get_color()) for c in pts] == [palette()[b] for b in
                                                            ("efficientnet_b0", "vit_b_16", "resnet50")]
    assert ax.get_xscale() == "log"


def test_figure6_example(configs):
    ex = figures.retrieval_example(configs)
    assert ex["best"] and ex["config"] == tables.table2(configs)["config"].iloc[0]
    assert len(ex["results"]) == 10
    fig = figures.figure6_example(ex)
    assert len(fig.axes) == 11
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("QUERY")
    assert sum("✓" in t for t in titles[1:]) == ex["hits"] == sum(ok for _, _, ok, _ in ex["results"])
    assert all(len(ax.get_images()) == 1 for ax in fig.axes)


def test_figure6_of_a_query_gallery_run_ranks_its_gallery_side_as_rendered(tmp_path):
    """A query -> gallery run: the query comes from the query side, only gallery items are ranked (by
    an independent cosine sort), and the thumbnails show the gallery as the backbone saw it."""
    pytest.importorskip("cv2")
    import io

    from PIL import Image

    from benchmark.config import Config
    from benchmark.features import styles
    from benchmark.results import store
    from synthetic_results import make_images, metrics_for, write_run

    emb, labels, ids, paths = make_images(tmp_path / "images")
    sides = np.tile(["query", "gallery"], len(paths) // 2)  # 2 of each person's 4 images per side
    buf = io.BytesIO()
    np.savez_compressed(buf, embeddings=emb, labels=labels, identities=np.array(ids), paths=np.array(paths),
                        sides=sides)
    cfg = Config(experiment="xd", embedding="backbone", protocol="open-set", gallery_style="dark", query_fraction=0.5)
    write_run(tmp_path / "runs", "xd", cfg, metrics_for(500.0, 500.0, cfg.backbone, cfg.epochs,
                                                          np.random.default_rng(0)), buf.getvalue())
    ex = figures.retrieval_example(prepare(store.load(tmp_path / "runs")).configs, k=4)
    q = paths.index(ex["query"][0])
    assert sides[q] == "query" and ex["query"][2] is None and ex["gallery_style"] == "dark"
    gallery = np.flatnonzero(sides == "gallery")
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    want = gallery[np.argsort(-(unit[gallery] @ unit[q]), kind="stable")[:4]]
    assert [paths.index(p) for p, *_ in ex["results"]] == list(want)
    assert ex["possible_total"] == 2 and all(s == styles.tag("dark") for *_, s in ex["results"])
    fig = figures.figure6_example(ex)
    shown = fig.axes[1].get_images()[0].get_array()
    rendered = styles.render_array(np.asarray(Image.open(ex["results"][0][0]).convert("RGB")), "dark")
    photo = np.asarray(Image.open(ex["results"][0][0]).convert("RGB"))
    inner = np.asarray(shown)[8:-8, 8:-8].astype(float)  # inside the border, resized: compare mean brightness
    assert abs(inner.mean() - rendered.mean()) < 0.25 * abs(photo.mean() - rendered.mean())


def test_figure6_skips_missing_images(configs, tmp_path):
    import shutil

    src = configs.sort_values("test/score").iloc[-1]["best_run_dir"]
    with np.load(f"{src}/embeddings.npz") as z:
        d = {k: z[k] for k in z.files}
    d["paths"] = np.array([str(tmp_path / f"gone{i}.png") for i in range(len(d["paths"]))])
    shutil.copytree(src, tmp_path / "run")
    np.savez(tmp_path / "run" / "embeddings.npz", **d)
    moved = configs.copy()
    moved.loc[moved["test/score"].idxmax(), "best_run_dir"] = str(tmp_path / "run")
    with pytest.raises(Unsupported, match="not on this machine"):
        figures.retrieval_example(moved)


def test_save_writes_png(configs, tmp_path):
    p = figures.save(figures.figure1_lr(tables.lr_sweep(configs)), tmp_path / "f" / "fig1.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure6_skips_unreadable_embeddings(configs, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "embeddings.npz").write_bytes(b"")
    moved = configs.assign(best_run_dir=str(tmp_path / "run"))
    with pytest.raises(Unsupported, match="unreadable"):
        figures.retrieval_example(moved)


def test_figure3_with_several_references_labels_them(demo_df):
    c = prepare(demo_df).configs
    fig = figures.figure3_ablations(tables.ablations(c))
    (ax,) = [x for x in fig.axes if x.get_xlabel()]
    assert [x.get_text() for x in ax.get_yticklabels()] == ["no normalization"]  # one reference: in the title
    assert "demo-lr0.01-ep3" in ax.get_title()
