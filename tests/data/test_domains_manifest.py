"""Validation a team can run on the day (issue 24): ``dataset=imagefolder`` with a ``domains`` manifest
(make-competition's train/domains.csv) makes val/test the competition's condition — photo queries
against the renders of held-out training people — with no test label used."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from benchmark.competition import make_competition
from benchmark.config import Config, ConfigError
from benchmark.pipeline import prepare


def _lfw_home() -> str:
    for home in (os.environ.get("SCIKIT_LEARN_DATA"), Path(__file__).resolve().parents[3] / "shared" / "data"):
        if home and (Path(home) / "lfw_home" / "lfw_funneled").is_dir():
            return str(home)
    pytest.skip("LFW is not on this machine")


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    pytest.importorskip("cv2")
    out = tmp_path_factory.mktemp("day")
    make_competition(out, data_home=_lfw_home(), seed=1, max_train_identities=9, max_test_identities=2,
                     max_train_images_per_identity=6, train_styles="lowres,grey", train_render_fraction=0.5)
    return out / "train"


def _cfg(train, **kw):
    return Config(**{**dict(experiment="day", dataset="imagefolder", data_home=str(train), domains="domains.csv",
                            min_faces_per_person=2, protocol="open-set", split=(0.34, 0.33, 0.33),
                            backbone="resnet18", weights="random", embedding="backbone", image_size=32, resize=36,
                            tracking="none", device="cpu", num_workers=0), **kw})


def test_validation_is_photo_queries_against_renders_of_held_out_training_people(train, cache_dir):
    df = prepare(_cfg(train, cache_dir=str(cache_dir))).df
    rendered = {str((train / line.split(",")[0]).resolve()) for line in (train / "domains.csv").read_text().splitlines()[1:]
                if line.endswith(",render")}
    for split in ("val", "test"):
        part = df[df["split"] == split]
        assert len(part) and set(part["side"]) == {"query", "gallery"}
        assert set(part.loc[part["side"] == "gallery", "path"]) <= rendered  # the gallery: renders only
        assert not set(part.loc[part["side"] == "query", "path"]) & rendered  # the queries: photos only
    train_ids = set(df.loc[df["split"] == "train", "identity"])
    assert not train_ids & set(df.loc[df["split"] != "train", "identity"])  # held-out people
    assert df.loc[df["split"] == "train", "path"].isin(rendered).any()  # training sees both domains


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.write_text(t.read_text() + "Ghost/x.jpg,photo\n"), "listed file(s) are not images of data_home"),
    (lambda t: t.write_text(t.read_text().replace(",render", ",sketch", 1)), "domain(s) 'sketch'; the two domains"),
    (lambda t: t.write_text("\n".join(t.read_text().splitlines()[:-1]) + "\n"), "image(s) of data_home have no domain"),
    (lambda t: t.write_text("file,kind\n"), "expected a header path,domain"),
])
def test_a_manifest_that_does_not_match_the_folder_is_one_line(train, tmp_path, edit, message):
    bad = tmp_path / "domains.csv"
    bad.write_text((train / "domains.csv").read_text())
    edit(bad)
    with pytest.raises(ConfigError, match=re.escape(message)):
        prepare(_cfg(train, domains=str(bad), cache_dir=str(tmp_path / "c")))


def test_domains_need_an_imagefolder_and_exclude_a_rendered_gallery(train):
    with pytest.raises(ConfigError, match="domains .* needs dataset=imagefolder and excludes"):
        _cfg(train, gallery_style="cartoon")
    with pytest.raises(ConfigError, match="domains=nope.csv: no such file"):
        prepare(_cfg(train, domains="nope.csv"))
    assert _cfg(train).query_gallery  # val/test are query -> gallery retrieval
