"""make_competition: a competition-like layout from real LFW (unseen test people, anonymous names)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from benchmark.competition import make_competition
from benchmark.config import ConfigError


def _lfw_home() -> str:
    """The folder holding lfw_home/ ($SCIKIT_LEARN_DATA, else ../shared/data beside the checkout)."""
    for home in (os.environ.get("SCIKIT_LEARN_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"):
        if home and (Path(home) / "lfw_home" / "lfw_funneled").is_dir():
            return str(home)
    pytest.skip("LFW not found: set SCIKIT_LEARN_DATA to the folder holding lfw_home/")


SMALL = dict(max_train_identities=4, max_test_identities=5, max_train_images_per_identity=5)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    out = tmp_path_factory.mktemp("competition")
    manifest = make_competition(out, data_home=_lfw_home(), n_query_per_identity=2, seed=3, **SMALL)
    return out, manifest


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_train_and_test_people_are_disjoint(layout):
    out, m = layout
    train = {p.name for p in (out / "train").iterdir() if p.is_dir()}
    truth = json.loads((out / "truth.json").read_text())
    test = set(truth["queries"].values()) | set(truth["gallery"].values())
    assert len(train) == 4 and len(test) == 5 and not train & test
    assert train == set(m["train_identities"]) and test == set(m["test_identities"])
    for person in train:
        assert len(list((out / "train" / person).glob("*.jpg"))) == 5


def test_truth_covers_every_query_and_gallery_file(layout):
    out, m = layout
    truth = json.loads((out / "truth.json").read_text())
    assert set(truth) == {"queries", "gallery"}
    assert _files(out / "test" / "query") == set(truth["queries"])
    assert _files(out / "test" / "gallery") == set(truth["gallery"])
    assert not set(truth["queries"]) & set(truth["gallery"])
    for person in m["test_identities"]:  # 2 queries each, and every query is answerable
        assert list(truth["queries"].values()).count(person) == 2
        assert person in truth["gallery"].values()
    # people with 5..19 LFW images: all of each one's images are used
    root = Path(m["source"])
    for person in m["test_identities"]:
        n = len(list((root / person).glob("*.jpg")))
        assert 5 <= n <= 19
        assert sum(v == person for part in truth.values() for v in part.values()) == n


def test_names_are_anonymous_copies(layout):
    out, m = layout
    names = _files(out / "test" / "query") | _files(out / "test" / "gallery")
    for name in names:
        assert re.fullmatch(r"[0-9a-f]{16}\.jpg", name)  # random hex: no name, no LFW image number
    # the names' order says nothing about identity: not grouped by person
    truth = json.loads((out / "truth.json").read_text())["gallery"]
    ordered = [truth[n] for n in sorted(truth)]
    assert ordered != sorted(ordered)
    for name in names:
        path = next(p for p in ((out / "test" / "query" / name), (out / "test" / "gallery" / name)) if p.exists())
        assert not path.is_symlink() and path.stat().st_nlink == 1  # a copy: no link back to LFW
        assert path.read_bytes() == (Path(m["source"]) / m["sources"][name]).read_bytes()


def test_deterministic_per_seed(layout, tmp_path):
    out, m = layout
    again = make_competition(tmp_path / "same", data_home=_lfw_home(), n_query_per_identity=2, seed=3, **SMALL)
    assert (tmp_path / "same" / "truth.json").read_text() == (out / "truth.json").read_text()
    assert again["sources"] == m["sources"]
    other = make_competition(tmp_path / "other", data_home=_lfw_home(), n_query_per_identity=2, seed=4, **SMALL)
    assert other["sources"] != m["sources"]


def test_refuses_to_mix_layouts_and_bad_parameters(layout, tmp_path):
    out, _ = layout
    with pytest.raises(ConfigError, match="already holds"):
        make_competition(out, data_home=_lfw_home(), **SMALL)
    with pytest.raises(ConfigError, match="--test-max 19 must be < --train-min 10"):
        make_competition(tmp_path / "x", data_home=_lfw_home(), train_min=10, test_max=19)
    with pytest.raises(ConfigError, match="--queries-per-identity 5 must be"):
        make_competition(tmp_path / "y", data_home=_lfw_home(), n_query_per_identity=5, test_min=5)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_overwrite_replaces_only_its_own_files(tmp_path):
    out = tmp_path / "c"
    make_competition(out, data_home=_lfw_home(), seed=1, **SMALL)
    (out / "notes.txt").write_text("mine")
    m = make_competition(out, data_home=_lfw_home(), seed=2, overwrite=True, **SMALL)
    assert (out / "notes.txt").read_text() == "mine"
    truth = json.loads((out / "truth.json").read_text())
    assert _files(out / "test" / "query") == set(truth["queries"])
    assert {p.name for p in (out / "train").iterdir() if p.is_dir()} == set(m["train_identities"])


def test_hidden_folders_and_files_are_never_people_or_images(tmp_path):
    """A `.ipynb_checkpoints/` beside the people of an LFW-layout folder used to become a training person."""
    from PIL import Image

    root = tmp_path / "home" / "lfw_home" / "lfw_funneled"
    people = {"Train_A": 4, "Train_B": 4, ".ipynb_checkpoints": 4, "Test_C": 3, "Test_D": 3}
    for person, n in people.items():
        (root / person).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16, 16), (10 * i, 0, 0)).save(root / person / f"{person}_{i:04d}.jpg")
    Image.new("RGB", (16, 16)).save(root / "Test_C" / ".Test_C_0000.jpg")  # hidden copy: not a 4th image
    with pytest.warns(UserWarning, match="hidden"):
        manifest = make_competition(tmp_path / "out", data_home=str(tmp_path / "home"), train_min=4, test_min=2,
                                    test_max=3)
    assert sorted(p.name for p in (tmp_path / "out" / "train").iterdir()) == ["Train_A", "Train_B", "domains.csv"]
    truth = json.loads((tmp_path / "out" / "truth.json").read_text())
    assert sorted(set(truth["queries"].values()) | set(truth["gallery"].values())) == ["Test_C", "Test_D"]
    assert len(truth["queries"]) + len(truth["gallery"]) == 6 and manifest["counts"]


# --- the domain gap (issue 17) --------------------------------------------------------------------------
def test_gallery_style_renders_the_gallery_as_jpegs_and_keeps_query_photos(layout, tmp_path, capfd):
    import numpy as np

    from benchmark.features import styles
    from benchmark.features.views import decode

    pytest.importorskip("cv2")
    out, plain = layout
    m = make_competition(tmp_path, data_home=_lfw_home(), n_query_per_identity=2, seed=3, gallery_style="lowres",
                         style_args={"size": 16}, **SMALL)
    n_test = m["counts"]["queries"] + m["counts"]["gallery"]  # rendering shows progress (it was silent for minutes)
    err = capfd.readouterr().err
    assert "make-competition: test images, rendering the gallery (lowres): 100%|" in err and f"{n_test}/{n_test}" in err
    assert json.loads((tmp_path / "truth.json").read_text()) == json.loads((out / "truth.json").read_text())
    assert m["gallery_style"] == {"style": "lowres", "v": 1, "size": 16}
    source = Path(m["source"])
    for name in m["sources"]:
        q = (tmp_path / "test" / "query" / name)
        if q.exists():  # queries: byte copies of the photos
            assert q.read_bytes() == (source / m["sources"][name]).read_bytes()
            continue
        g = tmp_path / "test" / "gallery" / name
        photo = decode(str(source / m["sources"][name]))
        want = styles.render(photo, "lowres", {"size": 16}).numpy().astype(int)
        got = decode(str(g)).numpy().astype(int)
        assert g.read_bytes()[:2] == b"\xff\xd8" and np.abs(got - want).mean() < 3  # JPEG of the render
        assert np.abs(got - photo.numpy()).mean() > 5


def test_unknown_gallery_style_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="--gallery-style 'anime': unknown style 'anime'; valid styles: none, "
                                          "stylization"):
        make_competition(tmp_path, data_home=_lfw_home(), gallery_style="anime", **SMALL)
    assert not (tmp_path / "test").exists()


def _tiny_lfw(home: Path, people: dict[str, int]) -> str:
    from PIL import Image

    root = home / "lfw_home" / "lfw_funneled"
    for person, n in people.items():
        (root / person).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16, 16), (10 * i, 0, 0)).save(root / person / f"{person}_{i:04d}.jpg")
    return str(home)


def test_a_data_home_that_does_not_exist_is_refused_not_created(tmp_path, monkeypatch, capsys):
    """--data-home /nonexistent used to create the folders and try to download; the fix named --set data_home."""
    from benchmark.cli import main

    missing = tmp_path / "no" / "such"
    monkeypatch.delenv("SCIKIT_LEARN_DATA", raising=False)
    assert main(["make-competition", "--out", str(tmp_path / "c"), "--data-home", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"LFW data home {missing} (--data-home {missing}) does not exist" in err
    assert "Fix: --data-home <folder holding lfw_home/>" in err and "--set" not in err
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(missing))  # the same typo in the environment
    assert main(["make-competition", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"($SCIKIT_LEARN_DATA={missing}) does not exist" in err and "--data-home" in err and "--set" not in err
    assert not (tmp_path / "no").exists() and not (tmp_path / "c").exists()


def test_errors_name_the_command_options(tmp_path):
    home = _tiny_lfw(tmp_path / "home", {"Train_A": 4, "Train_B": 4, "Test_C": 3})
    with pytest.raises(ConfigError, match=r"^--max-train-identities 1 must be >= 2 \(training needs two people"):
        make_competition(tmp_path / "a", data_home=home, train_min=4, test_min=2, test_max=3, max_train_identities=1)
    make_competition(tmp_path / "b", data_home=home, train_min=4, test_min=2, test_max=3)
    with pytest.raises(ConfigError, match="use another --out folder or --overwrite$"):
        make_competition(tmp_path / "b", data_home=home, train_min=4, test_min=2, test_max=3)
    with pytest.raises(ConfigError, match="lower --train-min$"):
        make_competition(tmp_path / "c", data_home=home, train_min=5, test_min=2, test_max=3)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_a_non_empty_folder_without_a_layout_needs_overwrite(tmp_path):
    home = _tiny_lfw(tmp_path / "home", {"Train_A": 4, "Train_B": 4, "Test_C": 3})
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(ConfigError, match=r"mine is not empty and holds no competition layout \(1 other entries, "
                                          r"e.g. thesis.tex\); give a new or empty --out folder, or --overwrite"):
        make_competition(out, data_home=home, train_min=4, test_min=2, test_max=3)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    make_competition(out, data_home=home, train_min=4, test_min=2, test_max=3, overwrite=True)
    assert (out / "thesis.tex").read_text() == "mine" and (out / "truth.json").is_file()
    (tmp_path / "empty").mkdir()  # an empty folder is fine without --overwrite
    make_competition(tmp_path / "empty", data_home=home, train_min=4, test_min=2, test_max=3)


def test_style_args_without_a_gallery_style_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"--style-arg size=16 without a --gallery-style"):
        make_competition(tmp_path, data_home=_lfw_home(), style_args={"size": 16}, **SMALL)
    assert not (tmp_path / "test").exists()


# --- the competition as it really was (issue 24) ---------------------------------------------------------
def test_training_folders_hold_photos_and_renders_listed_in_domains_csv(tmp_path, layout):
    """Each training person's folder holds their photos and renders of a seeded fraction of them, each
    in a style drawn from --train-styles; domains.csv and competition.json say which file is which."""
    import csv

    pytest.importorskip("cv2")
    m = make_competition(tmp_path, data_home=_lfw_home(), n_query_per_identity=2, seed=3,
                         train_styles="lowres,grey", train_render_fraction=0.4, **SMALL)
    rows = list(csv.DictReader((tmp_path / "train" / "domains.csv").open()))
    on_disk = {f"{p.parent.name}/{p.name}" for p in (tmp_path / "train").glob("*/*.jpg")}
    assert {r["path"] for r in rows} == on_disk and {r["domain"] for r in rows} == {"photo", "render"}
    for person in m["train_identities"]:
        photos = [r for r in rows if r["path"].startswith(person + "/") and r["domain"] == "photo"]
        renders = [r for r in rows if r["path"].startswith(person + "/") and r["domain"] == "render"]
        assert len(photos) == 5 and len(renders) == 2  # round(0.4 x 5)
        for r in renders:
            style = m["train_domains"][r["path"]].split(":")[1]
            source = Path(m["source"]) / m["sources"][f"train/{r['path']}"]
            assert style in ("lowres", "grey") and source.parent.name == person
            assert (tmp_path / "train" / r["path"]).read_bytes() != source.read_bytes()  # a render, not a copy
    assert m["counts"]["train_renders"] == 8 and m["counts"]["train_images"] == 28
    # the test side and the photos are the layout the same seed made without renders
    assert json.loads((tmp_path / "truth.json").read_text()) == json.loads((layout[0] / "truth.json").read_text())


def test_a_gallery_of_several_styles_is_drawn_per_image_seeded_and_recorded(tmp_path):
    pytest.importorskip("cv2")
    kw = dict(data_home=_lfw_home(), seed=5, gallery_style="lowres:3,grey,none", **SMALL)
    m = make_competition(tmp_path / "a", **kw)
    drawn = m["gallery_styles"]
    gallery = json.loads((tmp_path / "a" / "truth.json").read_text())["gallery"]
    assert set(drawn) == {g for g, _ in gallery.items() if drawn.get(g) != "none"} | {
        g for g, s in drawn.items() if s == "none"} and set(drawn) == set(gallery)
    assert set(drawn.values()) == {"lowres", "grey", "none"}
    assert m["gallery_mix"]["lowres"]["weight"] == pytest.approx(0.6)
    assert make_competition(tmp_path / "b", **kw)["gallery_styles"] == drawn  # seeded
    capped = make_competition(tmp_path / "c", data_home=_lfw_home(), seed=5, max_gallery_per_identity=2, **SMALL)
    per_person = {}
    for person in json.loads((tmp_path / "c" / "truth.json").read_text())["gallery"].values():
        per_person[person] = per_person.get(person, 0) + 1
    assert max(per_person.values()) == 2


@pytest.mark.parametrize("kw, message", [
    ({"gallery_style": "cartoon,anime"}, "--gallery-style 'cartoon,anime': unknown style 'anime'"),
    ({"gallery_style": "cartoon:0,sketch"}, "the weight of cartoon must be a number > 0"),
    ({"gallery_style": "cartoon:-1"}, "the weight of cartoon must be a number > 0"),
    ({"gallery_style": "sketch,sketch"}, "names sketch twice"),
    ({"train_styles": "cartoon"}, "--train-styles and --train-render-fraction go together"),
    ({"train_render_fraction": 0.5}, "--train-styles none names no style to render them in"),
    ({"train_styles": "grey", "train_render_fraction": 1.5}, "--train-render-fraction 1.5 must be in [0, 1]"),
    ({"gallery_style": "lowres,grey", "style_args": {"size": 8}}, "the renders mix lowres, grey; name the style"),
    # hostile round: the fix named the first style (grey), which has no size; an empty weight or name was
    # read as weight 1 or as photographs; 'none' as the training styles was "go together" though both were given
    ({"gallery_style": "grey,lowres", "style_args": {"size": 16}}, "name the style, e.g. --style-arg lowres.size=16"),
    ({"gallery_style": "cartoon:,sketch"}, "cartoon: has no weight after the colon; give one (e.g. cartoon:2)"),
    ({"gallery_style": ""}, "--gallery-style '' has an empty style name"),
    ({"gallery_style": "sketch,sketch:2"}, "names sketch twice; name each style once, its weight after a colon"),
    ({"train_styles": "none", "train_render_fraction": 0.5}, "--train-styles none names no style to render them in"),
    ({"train_styles": "lowres", "train_render_fraction": 0.5, "style_args": {"lowres.size": 0}},
     "--style-arg lowres.size=0 is not valid"),  # training renders take parameters too
    ({"gallery_style": "lowres,sketch", "style_args": {"lowres.size": -2}},
     "--style-arg lowres.size=-2 is not valid: must be an integer in [1, 4096]"),
    ({"max_gallery_per_identity": 0}, "--max-gallery-per-identity 0 must be >= 1"),
])
def test_bad_style_mixes_are_one_line_before_anything_is_written(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_competition(tmp_path / "out", data_home=_lfw_home(), **{**SMALL, **kw})
    assert not (tmp_path / "out").exists()


def test_an_out_under_a_file_is_refused_before_any_work(tmp_path):
    """--out afile/sub failed after 3.5 s of work with NotADirectoryError."""
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=re.escape(f"--out {tmp_path}/afile/sub: {tmp_path}/afile is a file")):
        make_competition(tmp_path / "afile" / "sub", data_home=_lfw_home(), **SMALL)


def test_preset_lines_come_after_the_checks_and_name_what_the_preset_chose(tmp_path, capsys, monkeypatch):
    """A preset printed its lines before an input error, claimed calibration for a gallery the user's
    --style-arg changed, and "--test-min 11 > --test-max 8" named a value the user never gave."""
    from benchmark import cli, competition

    assert cli.main(["make-competition", "--out", str(tmp_path / "c"), "--data-home", _lfw_home(), "--preset", "2026",
                     "--test-max", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --test-min 11 > --test-max 8 (--test-min 11 from --preset 2026; give the option to "
                   "change it)")  # one line: no preset line before it
    monkeypatch.setattr(competition, "make_competition",
                        lambda out, announce, **kw: announce() or {"counts": {}, "paths": {}})
    assert cli.main(["make-competition", "--out", str(tmp_path / "d"), "--preset", "2025",
                     "--style-arg", "lowres.size=16"]) == 0
    err = capsys.readouterr().err
    assert "lowres.size=16 dark.gain=0.65 (changed by --style-arg: frozen SFace 962.1 was measured without the " \
           "change)" in err and "calibrated:" not in err


def test_presets_shape_the_two_editions_and_say_what_was_scaled(tmp_path, capsys):
    from benchmark import cli
    from benchmark.competition import PRESETS

    assert cli.main(["make-competition", "--out", str(tmp_path / "c"), "--data-home", _lfw_home(), "--preset", "2026",
                     "--max-train-identities", "3", "--max-test-identities", "4"]) == 0
    out, err = capsys.readouterr()
    counts = json.loads(out)["counts"]
    assert "preset 2026: 250 training people x 20 images" in err and "LFW has 62 people with >= 20 images" in err
    assert counts == {"train_identities": 3, "train_images": 60, "train_renders": 0, "test_identities": 4,
                      "queries": 4, "gallery": 40}  # 20 images each; 1 query + 10 gallery per test person
    assert "preset 2026 gallery: stylization:5,cartoon  (calibrated: frozen SFace 703.7 on it)" in err
    manifest = json.loads((tmp_path / "c" / "competition.json").read_text())
    assert set(manifest["gallery_mix"]) == {"stylization", "cartoon"}  # the calibrated gallery, unless given
    assert PRESETS["2025"]["params"]["max_gallery_per_identity"] == 1
    assert PRESETS["2025"]["gallery"]["style_args"] == {"lowres.size": 38, "dark.gain": 0.65}
