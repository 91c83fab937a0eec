"""Scoring scores only well-formed truth and submissions (issue 23, rule 7): each malformed input is
an InputError (the CLI: ``error: ...``, exit 2) on one line naming the file, the entry and the fix,
never a score or a traceback."""

from __future__ import annotations

import json
import re

import pytest

from benchmark.cli import main
from benchmark.evaluation.scoring import InputError, score_files, score_submission

TRUTH = {"queries": {"q1": "A", "q2": "B"}, "gallery": {"gA": "A", "gB": "B", "gC": "C"}}
SUBMISSION = {"q1": ["gA", "gB"], "q2": ["gA", "gB"]}


def _files(tmp_path, truth=TRUTH, submission=SUBMISSION):
    """(submission path, truth path); a str is written as is (raw JSON), anything else as JSON."""
    paths = []
    for name, doc in (("sub.json", submission), ("truth.json", truth)):
        (tmp_path / name).write_text(doc if isinstance(doc, str) else json.dumps(doc))
        paths.append(tmp_path / name)
    return paths


def _refused(tmp_path, *pattern, truth=TRUTH, submission=SUBMISSION, blame="truth.json"):
    """score_files raises one line that names the blamed file and matches each of ``pattern``."""
    sub, tru = _files(tmp_path, truth, submission)
    with pytest.raises(InputError) as info:
        score_files(sub, tru)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / blame)), message
    for p in pattern:
        assert re.search(p, message), (p, message)


def test_well_formed_inputs_score():
    r = score_submission(SUBMISSION, TRUTH)
    assert (r["top1"], r["top5"], r["score"]) == (0.5, 1.0, 700.0)


def test_integer_identities_are_identities(tmp_path):
    """Organizers often number people: ints are legitimate identities (but never bools)."""
    sub, tru = _files(tmp_path, truth={"queries": {"q1": 7, "q2": 8}, "gallery": {"gA": 7, "gB": 8, "gC": 9}})
    assert score_files(sub, tru)["score"] == 700.0


# --- the truth: the cases issue 23 names --------------------------------------------------------
def test_empty_queries_is_refused_not_scored_zero(tmp_path):
    """It printed a score of 0.0 and exit 0."""
    _refused(tmp_path, '"queries" is empty', truth={"queries": {}, "gallery": TRUTH["gallery"]}, submission={})


def test_null_identities_do_not_match_each_other(tmp_path):
    """null == null counted as a hit: a score of 1000.0."""
    _refused(tmp_path, r'"queries" entry "q1": null is not an identity', "non-empty string",
             truth={"queries": {"q1": None, "q2": None}, "gallery": {"gA": None, "gB": None}})


def test_list_identities_name_the_file(tmp_path):
    """They raised a TypeError (unhashable list) naming no file."""
    _refused(tmp_path, r'"gallery" entry "gA": \["A"\] is not an identity',
             truth={"queries": TRUTH["queries"], "gallery": {"gA": ["A"], "gB": "B"}})


# --- the truth: siblings ------------------------------------------------------------------------
def test_empty_gallery(tmp_path):
    _refused(tmp_path, '"gallery" is empty', truth={"queries": TRUTH["queries"], "gallery": {}},
             submission={})


@pytest.mark.parametrize("identity", ["", "  ", 1.0, True, {"id": "A"}])
def test_blank_float_bool_and_object_identities(tmp_path, identity):
    truth = {"queries": {"q1": "A", "q2": identity}, "gallery": TRUTH["gallery"]}
    _refused(tmp_path, f'"queries" entry "q2": {re.escape(json.dumps(identity))} is not an identity',
             truth=truth)


def test_blank_file_name(tmp_path):
    _refused(tmp_path, '"gallery" has the file name ""', truth={"queries": TRUTH["queries"],
                                                              "gallery": {**TRUTH["gallery"], "": "A"}})


def test_non_string_file_name_from_python():
    truth = {"queries": {"q1": "A", 2: "B"}, "gallery": TRUTH["gallery"]}
    with pytest.raises(InputError, match='the truth: "queries" has the file name 2;'):
        score_submission({}, truth)


def test_mixed_string_and_integer_identities(tmp_path):
    """"7" never equals 7: half a truth written one way would score as all wrong."""
    _refused(tmp_path, 'mix strings and integers', '"q1": "7"', '"gA": 7',
             truth={"queries": {"q1": "7"}, "gallery": {"gA": 7}}, submission={"q1": ["gA"]})


def test_no_query_identity_in_the_gallery(tmp_path):
    """Every query would be wrong whatever is sent: a truth of another split, not a score of 0."""
    _refused(tmp_path, "nothing is scorable", truth={"queries": {"q1": "A"}, "gallery": {"gB": "B"}},
             submission={"q1": ["gB"]})


def test_a_gallery_file_given_twice_in_the_truth(tmp_path):
    """json.loads kept the last of two identities silently."""
    _refused(tmp_path, 'the key "gA" is given twice',
             truth='{"queries": {"q1": "A"}, "gallery": {"gA": "A", "gA": "B"}}', submission={})


# --- the submission -----------------------------------------------------------------------------
def test_a_gallery_file_twice_in_one_list(tmp_path):
    """It counted twice toward k; the server expects k distinct files."""
    _refused(tmp_path, 'query "q1" lists "gA" more than once', "distinct", blame="sub.json",
             submission={"q1": ["gA", "gB", "gA"]})


def test_a_query_given_twice(tmp_path):
    """json.loads kept the last of the two lists silently."""
    _refused(tmp_path, 'the key "q1" is given twice', blame="sub.json",
             submission='{"q1": ["gB"], "q2": ["gB"], "q1": ["gA"]}')


@pytest.mark.parametrize("ranked", ["gA", None, {"gA": 1}, ["gA", 3]])
def test_a_value_that_is_not_a_list_of_names(tmp_path, ranked):
    _refused(tmp_path, f'not lists of gallery file names, e.g. "q1": {re.escape(json.dumps(ranked))}',
             blame="sub.json", submission={"q1": ranked})


def test_a_file_that_is_not_text(tmp_path):
    sub, tru = _files(tmp_path)
    sub.write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(InputError, match="sub.json is not valid JSON"):
        score_files(sub, tru)


def test_the_command_line_says_one_line_and_exits_2(tmp_path, capsys):
    """It printed a score of 1000.0 and exit 0 (null == null)."""
    sub, tru = _files(tmp_path, truth={"queries": {"q1": None}, "gallery": {"gA": None}},
                      submission={"q1": ["gA"]})
    assert main(["score-submission", str(sub), "--truth", str(tru)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and out.err.startswith(f"error: {tru}: ")


# --- hostile round: nothing answered, a file on both sides of the truth, envelope variants ---------
@pytest.mark.parametrize("submission", [{}, {"groupname": "team7", "images": {}}, {"q1": [], "q2": []},
                                        {"groupname": "team7", "images": {"q1": []}}])
def test_a_submission_answering_no_query_is_refused_not_scored_zero(tmp_path, submission):
    """Each printed "score": 0.0 and exit 0."""
    _refused(tmp_path, r"answers none of the truth's 2 queries", blame="sub.json", submission=submission)


def test_a_submission_answering_some_queries_still_scores_the_rest_as_wrong(tmp_path):
    sub, tru = _files(tmp_path, submission={"q1": ["gA"], "q2": []})
    r = score_files(sub, tru)
    assert (r["top1"], r["score"], r["n_missing"]) == (0.5, 500.0, 0)
    sub, tru = _files(tmp_path, submission={"q1": ["gA"]})
    assert score_files(sub, tru)["n_missing"] == 1


def test_a_file_both_query_and_gallery_in_the_truth_is_refused(tmp_path):
    """A submission answering that query with itself scored 1000."""
    truth = {"queries": {"q1": "A", "q2": "B"}, "gallery": {"q1": "A", "q2": "B", "gC": "C"}}
    _refused(tmp_path, r'2 file\(s\) are both in "queries" and in "gallery" \("q1", "q2"\)',
             "list each file in one of them only", truth=truth, submission={"q1": ["q1"], "q2": ["q2"]})


@pytest.mark.parametrize("submission, expected", [
    ({"groupname": "t", "images": SUBMISSION, "extra": 1}, 'unexpected envelope key\\(s\\) "extra"'),
    ({"groupname": "t", "images": None}, '"images" is null: it must be a mapping'),
    ({"groupname": "t", "images": [["gA"]]}, '"images" is a list'),
    ({"groupName": "t", "Images": SUBMISSION}, 'the envelope key "groupName" is spelled "groupname".*'
                                               'the envelope key "Images" is spelled "images"'),
])
def test_envelope_variants_are_refused_as_envelope_problems(tmp_path, submission, expected):
    """They were read as a bare mapping: "3 submission queries are not in the truth's queries, e.g.
    extra, groupname, images"."""
    _refused(tmp_path, expected, blame="sub.json", submission=submission)


@pytest.mark.parametrize("groupname", ["", 7, "a\nb"])
def test_a_group_name_the_server_would_refuse_is_scored_with_a_warning(tmp_path, groupname):
    sub, tru = _files(tmp_path, submission={"groupname": groupname, "images": SUBMISSION})
    with pytest.warns(UserWarning, match=r"sub.json: groupname .* \(scored all the same\)"):
        assert score_files(sub, tru)["score"] == 700.0
    import subprocess
    import sys

    code = "import sys; from benchmark.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "score-submission", str(sub), "--truth", str(tru)],
                          capture_output=True, text=True)
    assert done.returncode == 0 and json.loads(done.stdout)["score"] == 700.0
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"warning: {sub}: groupname "), done.stderr
