"""``check_images``: identities are identities (issue 23 rule 5). An image filed under two identities
(a symlinked identity folder, a hard link, a byte copy) would land in train and test under two
labels: refused naming both files, or with ``on_bad_image=skip`` every copy left out and recorded.
Whatever is skipped, the rest must still hold two identities (rule 2: a 1-class head trained on
what the skip left is no run)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmark.config import Config, ConfigError
from benchmark.data import load_dataset
from benchmark.data.check import check_images


def _folder(root, people=("ann", "bob", "cat"), n=3):
    rng = np.random.default_rng(0)
    for person in people:
        (root / person).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / person / f"{i}.png")
    return root


def _check(root, tmp_path, **overrides):
    cfg = Config(dataset="imagefolder", data_home=str(root), min_faces_per_person=1, cache_dir=str(tmp_path / "c"),
                 **overrides)
    return check_images(load_dataset(cfg), cfg)


def test_a_symlinked_identity_folder_is_refused_naming_both(tmp_path):
    root = _folder(tmp_path / "d")
    os.symlink(root / "ann", root / "dan")  # dan's "photos" are ann's: leakage across splits, no warning before
    with pytest.raises(ConfigError, match=r"3 image\(s\) of dataset=imagefolder are filed under two identities: "
                                          r"\S*ann/0.png \(ann\) = \S*dan/0.png \(dan\): the same file;"):
        _check(root, tmp_path)


def test_a_byte_copy_under_another_identity_is_refused_or_every_copy_skipped(tmp_path):
    root = _folder(tmp_path / "d")
    shutil.copy(root / "bob" / "1.png", root / "cat" / "copy.png")
    with pytest.raises(ConfigError, match=r"\S*bob/1.png \(bob\) = \S*cat/copy.png \(cat\): byte-identical\. "):
        _check(root, tmp_path)
    df, skipped = _check(root, tmp_path, on_bad_image="skip")
    gone = {os.path.relpath(s["path"], root) for s in skipped}
    assert gone == {"bob/1.png", "cat/copy.png"}  # both labels are suspect: neither copy is kept
    assert len(df) == 8 and not df["path"].str.endswith(("bob/1.png", "copy.png")).any()


def test_siblings_hard_link_three_identities_and_a_copy_within_one_identity(tmp_path):
    root = _folder(tmp_path / "d")
    os.link(root / "ann" / "0.png", root / "bob" / "linked.png")  # a hard link: one file, two names
    with pytest.raises(ConfigError, match=r"ann/0.png \(ann\) = \S*bob/linked.png \(bob\): the same file"):
        _check(root, tmp_path)
    os.remove(root / "bob" / "linked.png")
    shutil.copy(root / "ann" / "2.png", root / "ann" / "again.png")  # one person twice: no cross-identity leak
    df, skipped = _check(root, tmp_path)
    assert skipped == [] and len(df) == 10
    for person in ("bob", "cat"):
        shutil.copy(root / "ann" / "1.png", root / person / "dup.png")
    _, skipped = _check(root, tmp_path, on_bad_image="skip")
    assert len(skipped) == 3 and all(s["reason"].startswith("filed under two identities: ") for s in skipped)


def test_a_skip_that_leaves_one_identity_is_refused_before_training(tmp_path):
    root = _folder(tmp_path / "d", people=("ann", "bob"))
    for i in range(3):
        (root / "bob" / f"{i}.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match=r"on_bad_image=skip left 1 identity .*3 images skipped.*retrieval needs at "
                                          r"least 2"):
        _check(root, tmp_path, on_bad_image="skip")
