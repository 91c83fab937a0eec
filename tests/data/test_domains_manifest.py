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
from benchmark.data import load_dataset
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
    (lambda t: t.write_text("file,kind\n"), "line 1 is 'file,kind'; expected the header path,domain"),
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


# --- the manifest as a spreadsheet or an editor writes it (no LFW needed: files are listed, not decoded) ---
ROWS = ["A/0.png,photo", "A/1.png,render", "B/0.png,photo", "B/1.png,render", "C/x, y.png,photo", "C/z.png,render"]


@pytest.fixture
def folder(tmp_path):
    for row in ROWS:
        path = tmp_path / "faces" / row.rsplit(",", 1)[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return tmp_path / "faces"


def _quoted(rows=ROWS):
    return [f'"{r.rsplit(",", 1)[0]}",{r.rsplit(",", 1)[1]}' if r.count(",") > 1 else r for r in rows]


def _load(folder, text: str | bytes, **kw):
    manifest = folder / "domains.csv"
    manifest.write_bytes(text if isinstance(text, bytes) else text.encode())
    return load_dataset(Config(**{**dict(dataset="imagefolder", data_home=str(folder), domains="domains.csv",
                                         min_faces_per_person=1), **kw}))


def _sides(df) -> dict[str, str]:
    return {str(Path(p).relative_to(Path(p).parents[1])): d for p, d in zip(df["path"], df["domain"])}


@pytest.mark.parametrize("text", [
    "\ufeffpath,domain\n" + "\n".join(_quoted()) + "\n",  # a spreadsheet's UTF-8 byte-order mark
    "path , domain\r\n" + "\r\n".join(r.replace(",photo", ", photo ") for r in _quoted()) + "\r\n",  # spaces, CRLF
    "Domain,Path\n" + "\n".join(f"{r.rsplit(',', 1)[1]},{r.rsplit(',', 1)[0]}" for r in _quoted()) + "\n\n",
], ids=["bom", "spaces-crlf", "columns-swapped"])
def test_a_bom_spaces_and_either_column_order_are_read_as_written(folder, text):
    """A UTF-8 BOM or ``path, domain`` was refused as 'expected a header path,domain', though that is the header."""
    want = {r.rsplit(",", 1)[0]: {"photo": "query", "render": "gallery"}[r.rsplit(",", 1)[1]] for r in ROWS}
    assert _sides(_load(folder, text)) == want


@pytest.mark.parametrize("text, message", [
    ("", "the file is empty; expected a header path,domain"),
    ("\n \n", "the file is empty; expected a header path,domain"),
    ("path,domain\n", "a header and no line; list each image of data_home"),
    ("\n".join(_quoted()) + "\n", "line 1 is 'A/0.png,photo'; it has no header: add the line path,domain at the top"),
    ("path;domain\n" + "\n".join(r.replace(",", ";") for r in ROWS[:4]) + "\n",
     "line 1 is 'path;domain'; its fields are separated by ';': use commas (path,domain)"),
    ("file,kind\n", "line 1 is 'file,kind'; expected the header path,domain"),
    ("path,domain\n" + "\n".join(ROWS) + "\n",  # the comma in C/x, y.png unquoted
     "line 6: more than 2 fields; a path that contains a comma must be quoted: \"A/x, y.jpg\",photo"),
    ("path,domain\n" + "\n".join(_quoted()[:2]) + '\n"B/0.png,photo\n' + "\n".join(_quoted()[3:]) + "\n",
     "line 4: a quote opened on this line does not close where its field ends"),  # a quote opened on line 4 and never closed: was "domain(s) None"
    ("path,domain\nA/0.png\n", "line 2: fewer than 2 fields; each line is path,domain"),
    ("path,domain\n" + "\n".join(_quoted()) + "\n,photo\n", "line 8: no path"),
    ("path,domain\n" + "\n".join(_quoted()).replace("B/1.png,render", "B/1.png,Render").replace("A/1.png,render", "A/1.png,sketch")
     + "\n", "lines 3, 5: domain(s) 'Render', 'sketch'; the two domains are photo, render"),
    ("path,domain\n" + "\n".join(_quoted()) + "\n./A/1.png,photo\n",
     "A/1.png is listed on lines 3, 8; list each file once, with one domain"),
    ("path,domain\n" + "\n".join(r.replace("render", "photo") for r in _quoted()) + "\n",
     "lists no render (every file is photo); a two-domain dataset needs both photo and render files"),
    ("path,domain\n" + "\n".join(r.replace("photo", "render") for r in _quoted()) + "\n",
     "lists no photo (every file is render); a two-domain dataset needs both photo and render files"),
    (b"path,domain\n\xff\xfeA/0.png,photo\n", "not UTF-8 text (byte 12); save it as a UTF-8 CSV"),
], ids=["empty", "blank", "header-only", "no-header", "semicolons", "wrong-header", "unquoted-comma", "broken-quote",
        "one-field", "no-path", "third-domain", "listed-twice", "all-photo", "all-render", "not-utf8"])
def test_every_manifest_error_is_one_line_naming_the_line_and_the_fix(folder, text, message):
    with pytest.raises(ConfigError) as err:
        _load(folder, text)
    assert str(err.value) == f"domains={folder / 'domains.csv'}: {message}" or \
        str(err.value).startswith(f"domains={folder / 'domains.csv'}: {message}"), str(err.value)


def test_the_images_kept_need_both_domains_and_a_person_left_out_may_be_listed(folder):
    """The manifest is checked against every image of data_home: a listed image of a person the filters
    leave out (here max_identities=2 drops C) was reported as 'not an image of data_home'. What the
    filters keep must still hold both domains."""
    text = "path,domain\n" + "\n".join(_quoted()) + "\n"
    df = _load(folder, text, max_identities=2)  # C's two images listed, C left out
    assert set(df["identity"]) == {"A", "B"} and set(df["domain"]) == {"query", "gallery"}
    renders_of_c_only = text.replace("A/1.png,render", "A/1.png,photo").replace("B/1.png,render", "B/1.png,photo")
    with pytest.raises(ConfigError, match=re.escape("the 4 images kept (min_faces_per_person=1, max_identities=2) "
                                                    "hold no render (every one is photo); a two-domain dataset")):
        _load(folder, renders_of_c_only, max_identities=2)
