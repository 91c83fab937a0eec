"""Splits: closed-set per-identity counts, open-set identity disjointness, determinism, JSON round trip."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmark import splits
from benchmark.config import Config, ConfigError
from benchmark.data import from_files

#: images per identity -> (train, val, test) for the default 50/20/30 split, worked out by hand from
#: the rule in splits._counts: round() each of train and val (Python rounds halves to even), keep at
#: least one test item when n >= 3, and one val item when at least two remain
EXPECTED_COUNTS = {
    3: (1, 1, 1),  # round(1.5)=2 + round(0.6)=1 leaves no test item -> one train item moves to test
    4: (2, 1, 1),
    5: (2, 1, 2),  # round(2.5) = 2
    6: (3, 1, 2),
    7: (4, 1, 2),  # round(3.5) = 4
    9: (4, 2, 3),  # round(4.5) = 4
    11: (6, 2, 3),  # round(5.5) = 6
    20: (10, 4, 6),
    21: (10, 4, 7),  # round(10.5) = 10
    77: (38, 15, 24),  # round(38.5) = 38, round(15.4) = 15
    530: (265, 106, 159),
}


def _table(sizes: dict[str, int]) -> pd.DataFrame:
    paths, ids = [], []
    for person, n in sizes.items():
        paths += [f"/data/{person}/{person}_{i:04d}.jpg" for i in range(n)]
        ids += [person] * n
    return from_files(paths, ids)


@pytest.fixture
def table():
    return _table({f"p{n:03d}": n for n in EXPECTED_COUNTS})


def test_closed_set_counts_per_identity(table):
    split = splits.closed_set(table, (0.5, 0.2, 0.3), seed=0)
    assert split.index.equals(table.index)
    counts = pd.crosstab(table["identity"], split).reindex(columns=list(splits.SPLITS), fill_value=0)
    for person, row in counts.iterrows():
        n = int(person[1:])
        assert tuple(row) == EXPECTED_COUNTS[n], person
    assert (counts > 0).all().all()  # every identity in every split


@pytest.mark.parametrize("n, expected", [(1, (0, 0, 1)), (2, (1, 0, 1)), (10, (5, 2, 3))])
def test_counts_small(n, expected):
    assert splits._counts(n, (0.5, 0.2, 0.3)) == expected


def test_closed_set_deterministic_per_seed(table):
    a = splits.closed_set(table, seed=0)
    b = splits.closed_set(table, seed=0)
    c = splits.closed_set(table, seed=1)
    pd.testing.assert_series_equal(a, b)
    assert not a.equals(c)
    # another seed moves items but not the per-identity counts
    pd.testing.assert_frame_equal(pd.crosstab(table["identity"], a), pd.crosstab(table["identity"], c))


def test_make_split_closed_set_on_config(table):
    cfg = Config(split_seed=3)
    out = splits.make_split(table, cfg)
    pd.testing.assert_series_equal(out["split"], splits.closed_set(table, (0.5, 0.2, 0.3), 3),
                                   check_names=False)
    assert out.drop(columns="split").equals(table)


def test_open_set_identities_disjoint():
    people = _table({f"id{i:02d}": 3 + i % 4 for i in range(20)})
    cfg = Config(protocol="open-set", split_seed=5)
    out = splits.make_split(people, cfg)
    splits.assert_identity_disjoint(out)
    assert out.groupby("identity")["split"].nunique().max() == 1
    per_split = out.groupby("split")["identity"].nunique()
    assert (per_split["train"], per_split["val"], per_split["test"]) == (10, 4, 6)
    # deterministic per seed, different for another seed
    again = splits.make_split(people, cfg)
    pd.testing.assert_frame_equal(out, again)
    other = splits.make_split(people, cfg.replace(split_seed=6))
    assert not out["split"].equals(other["split"])


def test_assert_identity_disjoint_raises_on_overlap(table):
    out = splits.make_split(table, Config())  # closed-set: every identity in every split
    with pytest.raises(AssertionError, match="identities appear in several splits"):
        splits.assert_identity_disjoint(out)
    people = splits.make_split(_table({f"id{i}": 4 for i in range(10)}), Config(protocol="open-set"))
    leak = people.copy()
    first_test = leak.index[leak["split"] == "test"][0]
    leak.loc[first_test, "split"] = "train"
    with pytest.raises(AssertionError, match="1 identities"):
        splits.assert_identity_disjoint(leak)


def test_empty_test_split_is_a_config_error():
    with pytest.raises(ConfigError, match="test split empty"):
        splits.make_split(_table({"a": 4, "b": 4}), Config(split=(0.5, 0.5, 0.0)))


def test_json_round_trip(table, tmp_path):
    cfg = Config(split_seed=2)
    out = splits.make_split(table, cfg)
    path = tmp_path / "split.json"
    path.write_text(splits.to_json(out, cfg))
    doc = json.loads(path.read_text())
    assert doc["protocol"] == "closed-set" and doc["seed"] == 2 and doc["ratios"] == [0.5, 0.2, 0.3]
    assert doc["counts"] == {s: int((out["split"] == s).sum()) for s in splits.SPLITS}
    assert doc["identities"] == {s: len(EXPECTED_COUNTS) for s in splits.SPLITS}
    assert sum(doc["counts"].values()) == len(table) == len(doc["items"])
    back = splits.load(path)
    # closed_set builds an object column, the reloaded one is pandas' str dtype: same values
    pd.testing.assert_frame_equal(back, out, check_dtype=False)
    assert back["split"].tolist() == out["split"].tolist()


def test_json_round_trip_open_set(tmp_path):
    people = _table({f"id{i:02d}": 2 + i % 3 for i in range(12)})
    cfg = Config(protocol="open-set", split=(0.6, 0.2, 0.2), split_seed=9)
    out = splits.make_split(people, cfg)
    path = tmp_path / "split.json"
    path.write_text(splits.to_json(out, cfg))
    back = splits.load(path)
    pd.testing.assert_frame_equal(back, out)
    splits.assert_identity_disjoint(back)


@pytest.mark.parametrize("ratios", [(0.5, 0.5, 0.0), (0.9, 0.1, 0.0), (1.0, 0.0, 0.0), (0.7, 0.2, 0.1),
                                    (0.5, 0.2, 0.3), (0.34, 0.33, 0.33), (0.0, 0.5, 0.5)])
def test_counts_are_a_partition_honouring_zero_fractions(ratios):
    for n in range(1, 60):
        counts = splits._counts(n, ratios)
        assert sum(counts) == n and min(counts) >= 0, (n, counts)
        for r, c in zip(ratios, counts):
            if r == 0:
                assert c == 0, (n, counts)
            elif n >= 3:
                assert c >= 1, (n, counts)  # every non-empty fraction keeps an item per identity


def test_zero_test_fraction_leaves_no_test_item():
    # 5 images at 90/10/0 once gave (4, 0, 1): a test item although the test fraction is 0
    df = _table({"a": 5, "b": 3})
    assert set(splits.closed_set(df, (0.9, 0.1, 0.0))) == {"train", "val"}
    with pytest.raises(ConfigError, match="test split empty"):
        splits.make_split(df, Config(split=(0.9, 0.1, 0.0)))


# --- query -> gallery sides (issue 17) ----------------------------------------------------------------
def _people_with(counts: dict[str, int]) -> pd.DataFrame:
    return from_files([f"/x/{p}/{i}.jpg" for p, n in counts.items() for i in range(n)],
                      [p for p, n in counts.items() for _ in range(n)])


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.8])
def test_sides_divide_each_val_test_identity_by_query_fraction_fixed_by_split_seed(fraction):
    df = _people_with({f"p{i}": n for i, n in enumerate([2, 3, 5, 8, 13, 20, 4, 6, 9, 11])})
    cfg = Config(protocol="open-set", query_fraction=fraction, split_seed=3)
    out = splits.make_split(df, cfg)
    assert (out.loc[out["split"] == "train", "side"] == "").all()
    for _, part in out[out["split"] != "train"].groupby("identity"):
        n, n_q = len(part), int((part["side"] == "query").sum())
        assert n_q == min(max(1, round(fraction * n)), n - 1) and (part["side"] == "gallery").sum() == n - n_q
    again = splits.make_split(df, cfg.replace(seed=7))  # the run seed does not move it
    assert again["side"].equals(out["side"])
    other = splits.make_split(df, cfg.replace(split_seed=4))
    assert not other[["split", "side"]].equals(out[["split", "side"]])
    assert "side" not in splits.make_split(df, Config(protocol="open-set"))  # same-domain: no sides


def test_closed_set_sides_divide_val_and_test_separately():
    """closed-set: every identity is in val and in test; each split gets its own queries and gallery."""
    df = _people_with({f"p{i}": 10 for i in range(8)})
    out = splits.make_split(df, Config(protocol="closed-set", query_fraction=0.5))
    for (split, _), part in out[out["split"] != "train"].groupby(["split", "identity"]):
        n = len(part)
        assert (part["side"] == "query").sum() == min(max(1, round(0.5 * n)), n - 1) >= 1
        assert (part["side"] == "gallery").sum() >= 1
    assert splits.one_sided(out, "val") == ([], []) and splits.one_sided(out, "test") == ([], [])


def test_a_split_too_small_for_a_query_and_a_gallery_item_is_refused_with_the_numbers():
    df = _people_with({"a": 1, "b": 6, "c": 1, "d": 6})
    with pytest.raises(ConfigError, match=r"needs >= 2 images of every identity in val and in test .*but 2 of 4 "
                                          r"have fewer \(e.g. a in test: 1\)"):
        splits.make_split(df, Config(protocol="closed-set", split=(0.0, 0.0, 1.0), gallery_style="grey"))


def test_real_other_domain_rows_are_the_gallery_and_one_sided_identities_are_named():
    df = _people_with({"a": 4, "b": 4, "c": 4, "d": 4})
    df["domain"] = ["gallery" if i % 4 == 0 else "query" for i in range(len(df))]
    df.loc[df["identity"] == "d", "domain"] = "query"  # d has photos only
    out = df.assign(split="test")
    out["side"] = splits.sides(out, Config(query_fraction=0.5))
    assert (out["side"] == out["domain"]).all()
    assert splits.one_sided(out, "test") == (["d"], [])


def test_extra_test_identities_join_the_test_split_and_sides_round_trip(tmp_path):
    df = _people_with({f"p{i}": 10 for i in range(10)} | {f"x{i}": 5 for i in range(3)})
    df["extra_test"] = df["identity"].str.startswith("x")
    cfg = Config(protocol="open-set", min_faces_per_person=10, extra_test_min_faces=5, query_fraction=0.5)
    out = splits.make_split(df, cfg)
    assert (out.loc[out["extra_test"], "split"] == "test").all()
    assert out.loc[~out["extra_test"], "split"].eq("train").sum() == 50  # the others split as before
    path = tmp_path / "split.json"
    path.write_text(splits.to_json(out, cfg))
    back = splits.load(path).set_index("path")
    assert back.loc[out["path"], "side"].tolist() == out["side"].tolist()


def _people(n_people: int, n_images: int) -> pd.DataFrame:
    return from_files([f"/d/p{i}/{j}.jpg" for i in range(n_people) for j in range(n_images)],
                      [f"p{i}" for i in range(n_people) for _ in range(n_images)])


def test_samples_per_class_is_checked_against_the_training_split():
    """samples_per_class larger than the training images per identity was accepted at batch 8 (batches
    repeating images as their own positives) and refused at batch 32 advising to raise it."""
    df = _people(4, 10)  # closed-set 50/20/30: 5 training images of each of 4 people
    with pytest.raises(ConfigError, match=r"samples_per_class=8 but the training split holds only 5 images of p0 "
                                          r"\(the fewest of its 4 identities\).*use samples_per_class <= 5"):
        splits.make_split(df, Config(samples_per_class=8, batch_size=8))
    with pytest.raises(ConfigError, match=r"batch_size=32 with samples_per_class=4 needs 8 identities x 4 images per "
                                          r"batch, but the training split has 4 identities \(20 images\); lower "
                                          r"batch_size to <= 16 \(a multiple of 4\)$"):
        splits.make_split(df, Config(samples_per_class=4, batch_size=32))
    assert (splits.make_split(df, Config(samples_per_class=4, batch_size=16))["split"] == "train").sum() == 20
    splits.make_split(df, Config(samples_per_class=8, batch_size=8, embedding="backbone"))  # no training: no batches
