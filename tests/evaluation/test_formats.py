"""``check-submission`` (issue 24): without the truth, every way the server would read a submission
otherwise than intended is named, one line each; the server's envelope from ``submit --groupname``
passes."""

from __future__ import annotations

import json
import re

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
        "groupname '' is empty": {"groupname": "", "images": _envelope()["images"]},
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
    with pytest.raises(ConfigError, match=r"--groupname '  ' is empty: name the team .*e\.g\. --groupname team7"):
        formats.envelope("  ", {})


# --- hostile round: envelope variants, group names, the command's own inputs -------------------------
@pytest.mark.parametrize("doc, expected", [
    (_envelope() | {"extra": 1}, 'unexpected envelope key(s) "extra"'),
    ({"groupname": "team7", "images": None}, '"images" is null: it must be a mapping {query file name: '),
    ({"groupname": "team7", "images": [GALLERY[:10]]}, '"images" is a list: it must be a mapping'),
    ({"groupName": "team7", "images": _envelope()["images"]}, 'the envelope key "groupName" is spelled "groupname"'),
    ({"groupname": "team7", "Images": _envelope()["images"]}, 'the envelope key "Images" is spelled "images"'),
    ({"images": _envelope()["images"]}, 'the envelope has no "groupname"'),
    ({"groupname": "team7"}, 'the envelope has no "images"'),
])
def test_an_envelope_attempt_is_named_as_the_envelope_not_as_queries(doc, expected):
    """They were read as a bare mapping: "3 queries are not answered with a list of file names:
    extra, groupname, images"."""
    found = formats.problems(doc, QUERIES, GALLERY)
    assert found and found[0].startswith(expected), found
    assert not any("groupname, images" in line or "queries are not answered with a list" in line for line in found)
    with pytest.raises(formats.InputError, match=re.escape(expected)):  # score-submission: refused the same way
        formats.read(doc)


def test_a_misspelled_envelope_key_still_has_its_images_checked():
    doc = {"groupName": "team7", "images": {**_envelope()["images"], "q1.jpg": GALLERY[:9]}}
    found = formats.problems(doc, QUERIES, GALLERY)
    assert len(found) == 2 and found[1] == "queries must list exactly k=10 gallery names: 1 with 9"


@pytest.mark.parametrize("name, expected", [
    ("team\n7", r"holds a control or line-break character \(U\+000A\)"),
    ("\u202e7maet", r"holds a bidi control character \(U\+202E\)"),
    ("team\u20287", r"line-break character \(U\+2028\)"),
    ("t" * 101, "has 101 characters: give a team name of at most 100"),
    ("", "is empty: name the team"),
    (7, "7 is not a team name: give a string"),
    (None, "null is not a team name"),
])
def test_a_group_name_the_server_should_not_get_is_a_problem_and_refused_by_submit(name, expected):
    found = formats.problems({"groupname": name, "images": _envelope()["images"]}, QUERIES, GALLERY)
    assert len(found) == 1 and found[0].startswith("groupname ") and re.search(expected, found[0]), found
    assert "\n" not in found[0] and "\u202e" not in found[0]  # the line says the character, never prints it
    if isinstance(name, str):
        with pytest.raises(formats.InputError, match="^--groupname .*" + expected + ".*e\\.g\\. --groupname team7"):
            formats.envelope(name, {})
    assert formats.groupname_problem("t" * 100) is None and formats.groupname_problem("Team 7 (Ünï)") is None


def _folders(tmp_path, queries=QUERIES, gallery=GALLERY):
    q, g = tmp_path / "query", tmp_path / "gallery"
    for folder, names in ((q, queries), (g, gallery)):
        folder.mkdir()
        for n in names:
            (folder / n).write_bytes(b"")
    return q, g


def test_a_k_larger_than_the_gallery_and_empty_folders_are_the_commands_input_not_the_submissions(tmp_path, capsys):
    """``--k 100`` on a 12-image gallery listed "queries must list exactly k=100" for a right file;
    an empty --query listed every answered query as "not in the query folder"."""
    q, g = _folders(tmp_path)
    (tmp_path / "ok.json").write_text(json.dumps(_envelope()))
    ok = str(tmp_path / "ok.json")
    assert cli.main(["check-submission", ok, "--query", str(q), "--gallery", str(g), "--k", "100"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert f"--k 100 is larger than the gallery (12 images in {g})" in err and "--k 10" in err
    for role, folder in (("query", tmp_path / "no_q"), ("gallery", tmp_path / "no_g")):
        folder.mkdir()
        args = {"query": str(q), "gallery": str(g), role: str(folder)}
        assert cli.main(["check-submission", ok, "--query", args["query"], "--gallery", args["gallery"]]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"error: --{role} {folder} holds no image files; give the test's {role} image folder\n"


def test_the_command_says_envelope_and_group_name_problems_and_exits_1(tmp_path, capsys):
    q, g = _folders(tmp_path)
    path = tmp_path / "s.json"
    for doc, expected in (({"groupname": "a\nb", "images": _envelope()["images"]}, "holds a control"),
                          (_envelope() | {"extra": 1}, 'unexpected envelope key(s) "extra"'),
                          ({"groupname": "", "images": _envelope()["images"]}, "groupname '' is empty")):
        path.write_text(json.dumps(doc))
        assert cli.main(["check-submission", str(path), "--query", str(q), "--gallery", str(g)]) == 1
        out = capsys.readouterr().out
        assert out.count("problem: ") == 1 and expected in out, out


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
