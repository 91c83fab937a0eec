"""``check-submission`` (issue 24): without the truth, every way the server would read a submission
otherwise than intended is named, one line each; the server's envelope from ``submit --groupname``
passes."""

from __future__ import annotations

import json

import pytest

from benchmark import cli
from benchmark.evaluation import formats
from benchmark.params import ConfigError

QUERIES = ["q1.jpg", "q2.jpg", "q3.jpg"]
GALLERY = [f"g{i}.jpg" for i in range(1, 13)]


def _envelope(**images):
    return {"groupname": "team7", "images": {q: GALLERY[:10] for q in QUERIES} | images}


def test_the_reports_own_output_names_its_three_problems():
    """A list of {filename, gallery_images} with folder-prefixed paths and K=2: the report's 37/1000."""
    doc = [{"filename": f"test_folder/query_images/{q}", "gallery_images": [f"test_folder/gallery/{g}" for g in
                                                                              GALLERY[:2]]} for q in QUERIES]
    found = formats.problems(doc, QUERIES, GALLERY)
    assert len(found) == 3
    assert found[0].startswith("a list of {filename, gallery_images} objects instead of a mapping")
    assert found[1].startswith("5 names carry folders or absolute paths (e.g. test_folder/gallery/g1.jpg)")
    assert found[2] == "queries must list exactly k=10 gallery names: 3 with 2"


def test_the_servers_envelope_passes_and_each_sibling_problem_is_named():
    assert formats.problems(_envelope(), QUERIES, GALLERY) == []
    cases = {
        "no envelope": {q: GALLERY[:10] for q in QUERIES},
        "1 of 3 queries are not answered": {"groupname": "t", "images": {q: GALLERY[:10] for q in QUERIES[:2]}},
        "1 answered names are not in the query folder": _envelope(**{"q9.jpg": GALLERY[:10]}),
        "1 gallery names are not in the gallery folder": _envelope(q1=None) | {"images": {
            **_envelope()["images"], "q1.jpg": GALLERY[:9] + ["nope.jpg"]}},
        "1 queries list a gallery name twice": {"groupname": "t", "images": {
            **_envelope()["images"], "q2.jpg": GALLERY[:9] + [GALLERY[0]]}},
        "1 queries are answered with their own file name": {"groupname": "t", "images": {
            **_envelope()["images"], "q3.jpg": ["q3.jpg", *GALLERY[:9]]}},
        "groupname '' is not a team name": {"groupname": "", "images": _envelope()["images"]},
        "queries must list exactly k=10 gallery names: 1 with 11": {"groupname": "t", "images": {
            **_envelope()["images"], "q1.jpg": GALLERY[:11]}},
    }
    for expected, doc in cases.items():
        found = formats.problems(doc, QUERIES, GALLERY)
        assert any(line.startswith(expected) for line in found), (expected, found)


def test_the_command_exits_non_zero_naming_each_problem_and_zero_for_the_envelope(tmp_path, capsys):
    q, g = tmp_path / "query", tmp_path / "gallery"
    for folder, names in ((q, QUERIES), (g, GALLERY)):
        folder.mkdir()
        for n in names:
            (folder / n).write_bytes(b"")
    report = [{"filename": f"test/{n}", "gallery_images": [f"test/{x}" for x in GALLERY[:2]]} for n in QUERIES]
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert cli.main(["check-submission", str(tmp_path / "report.json"), "--query", str(q), "--gallery", str(g)]) == 1
    out = capsys.readouterr().out
    assert out.count("problem: ") == 3 and "3 problem(s)" in out
    (tmp_path / "ok.json").write_text(json.dumps(_envelope()))
    assert cli.main(["check-submission", str(tmp_path / "ok.json"), "--query", str(q), "--gallery", str(g)]) == 0
    assert "ok: group 'team7', 3 queries x 10" in capsys.readouterr().out
    text = json.dumps(_envelope())[:-2] + ', "q1.jpg": ' + json.dumps(GALLERY[2:12]) + "}}"  # q1 answered twice
    (tmp_path / "twice.json").write_text(text)
    assert cli.main(["check-submission", str(tmp_path / "twice.json"), "--query", str(q), "--gallery", str(g)]) == 2
    assert 'the key "q1.jpg" is given twice; JSON keeps only the last, give it once' in capsys.readouterr().err
    assert cli.main(["check-submission", str(tmp_path / "none.json"), "--query", str(q), "--gallery", str(g)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_blank_groupname_is_refused():
    with pytest.raises(ConfigError, match="--groupname must name the team"):
        formats.envelope("  ", {})


def test_score_submission_reads_the_envelope_and_the_mapping_and_says_which(tmp_path):
    """The envelope was read as two queries ("groupname", "images") and refused."""
    from benchmark.evaluation.scoring import InputError, score_files

    truth = {"queries": {q: f"p{i}" for i, q in enumerate(QUERIES)},
             "gallery": {g: f"p{i % 3}" for i, g in enumerate(GALLERY)}}
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    mapping = {q: sorted(GALLERY, key=lambda g: truth["gallery"][g] != truth["queries"][q])[:10] for q in QUERIES}
    for name, doc, form in (("env.json", {"groupname": "t", "images": mapping}, "envelope"),
                            ("map.json", mapping, "mapping")):
        (tmp_path / name).write_text(json.dumps(doc))
        result = score_files(tmp_path / name, tmp_path / "truth.json")
        assert result["form"] == form and result["score"] == 1000.0
    (tmp_path / "list.json").write_text(json.dumps([{"filename": q, "gallery_images": v} for q, v in mapping.items()]))
    with pytest.raises(InputError, match=r"list.json: a list of \{filename, gallery_images\} objects instead of a "
                                         "mapping"):
        score_files(tmp_path / "list.json", tmp_path / "truth.json")
