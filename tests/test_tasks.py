"""Task registry, shipped data sizes and official scoring."""

import pytest

from tasks import DataFileError, NoAnswersError, SplitError, eval_indices, get_task
from tasks.metrics import f1_score, normalize_answer, parse_letter, score_letter, score_open, score_yes_no
from fireharness.registry import UnknownNameError
from fireharness.stats import mean_ci

SIZES = [("hotpotqa", "dev", 7405, True), ("hotpotqa", "test", 7405, False), ("hotpotqa", "train", 700, True),
         ("hotpotqa", "distractor-dev", 682, True), ("bamboogle", "test", 125, True),
         ("strategyqa", "dev", 229, True), ("strategyqa", "test", 490, False), ("strategyqa", "train", 2821, True),
         ("mmlu", "test", 14042, True), ("mmlu", "dev", 285, True), ("mmlu", "val", 1531, True),
         ("mmlu", "abstract_algebra_test", 100, True)]


@pytest.mark.parametrize("name,split,size,answers", SIZES)
def test_sizes_and_answers(name, split, size, answers):
    t = get_task(name, split)
    assert len(t) == size
    assert t.has_answers is answers
    assert isinstance(t[0], str) and t[0]


def test_issue_examples():
    t = get_task("hotpotqa", "dev")
    assert t[0] == "Were Scott Derrickson and Ed Wood of the same nationality?"
    r, info = t.evaluate(0, "Yes")
    assert (r, info["em"], info["f1"]) == (1.0, 1.0, 1.0)
    r, info = t.evaluate(0, "no")
    assert (r, info["em"], info["f1"]) == (0.0, 0.0, 0.0)


def test_records_keep_metadata():
    d = get_task("hotpotqa", "distractor-dev")
    rec = d.record(0)
    assert rec["type"] in ("bridge", "comparison") and rec["level"] in ("easy", "medium", "hard")
    assert len(rec["context"]) == 10 and d.meta(0)["id"] == rec["id"]
    m = get_task("mmlu", "test")
    assert m[0].startswith("Question: ") and "\nA. " in m[0] and "\nD. " in m[0]
    assert m.meta(0)["subject"] == "abstract_algebra" and m.gold(0) in "ABCD"


def test_mmlu_subject_split_matches_whole_split():
    whole = get_task("mmlu", "test")
    one = get_task("mmlu", "anatomy_test")
    anatomy = [whole[i] for i in range(len(whole)) if whole.meta(i)["subject"] == "anatomy"]
    assert anatomy == [one[i] for i in range(len(one))]


def test_answerless_split_refuses_to_score():
    with pytest.raises(NoAnswersError, match="no gold answers"):
        get_task("hotpotqa", "test").evaluate(0, "yes")
    with pytest.raises(NoAnswersError):
        get_task("strategyqa", "test").evaluate(0, "yes")


def test_unknown_names_list_valid_ones():
    with pytest.raises(UnknownNameError, match=r"unknown task 'hotpot'.*Did you mean 'hotpotqa'.*Valid: bamboogle"):
        get_task("hotpot", "dev")
    with pytest.raises(SplitError, match=r"'distractor_dev'.*'distractor-dev'.*Valid: dev, distractor-dev"):
        get_task("hotpotqa", "distractor_dev")
    with pytest.raises(SplitError, match=r"abstract_algebra_tst.*<subject>_<split>"):
        get_task("mmlu", "abstract_algebra_tst")


def test_random_subset_is_fireacts():
    import random
    idx = list(range(7405))
    random.Random(233).shuffle(idx)
    assert eval_indices(7405, 0, 500, shuffle=True) == idx[:500]
    assert eval_indices(10, 2, 5) == [2, 3, 4]


@pytest.mark.parametrize("raw,norm", [("The  Beatles!", "beatles"), ("An apple, a day", "apple day"),
                                      ("U.S.A.", "usa"), ("  Yes. ", "yes"), ("theatre", "theatre"),
                                      ("1,800 to 7,000 ft", "1800 to 7000 ft")])
def test_normalisation(raw, norm):
    assert normalize_answer(raw) == norm


def test_f1_official_cases():
    assert f1_score("Richard Nixon", "richard nixon")[0] == 1.0
    f1, p, r = f1_score("president Richard Nixon", "Richard Nixon")
    assert (round(p, 4), r, round(f1, 4)) == (0.6667, 1.0, 0.8)
    # The yes/no/noanswer rule: a yes/no answer scores only against the same word.
    assert f1_score("yes", "yes it is")[0] == 0.0
    assert f1_score("yes it is", "yes")[0] == 0.0
    assert f1_score("no", "No")[0] == 1.0
    assert f1_score("", "Paris")[0] == 0.0
    info = score_open("The Saimaa Gesture", "Saimaa Gesture")
    assert info["em"] == 1.0 and info["f1"] == 1.0


def test_yes_no_and_letter_scoring():
    assert score_yes_no("Yes, because...", True)["em"] == 1.0
    assert score_yes_no("no", True)["em"] == 0.0
    assert score_yes_no("maybe", False)["em"] == 0.0
    for text, letter in [("B", "B"), ("b.", "B"), ("(C) a galaxy", "C"), ("D. the solar system", "D"),
                         ("Answer: A", "A"), ("about", None), ("", None), ("E", None)]:
        assert parse_letter(text) == letter, text
    assert score_letter("a galaxy", "A")["em"] == 1.0
    assert score_letter("about", "A")["em"] == 0.0


def test_mean_ci():
    m = mean_ci([1, 0, 1, 1], n=8)  # FireAct divides by the questions asked
    assert m["mean"] == 0.375 and 0 < m["lo"] < 0.375 < m["hi"] < 1
    f = mean_ci([0.5, 0.25, 1.0])
    assert abs(f["mean"] - 0.58333) < 1e-4 and f["lo"] < f["mean"] < f["hi"]
    # All wrong / all right: the interval still holds the mean exactly (Wilson's lower bound at 0 came
    # out as 3e-18, and the leaderboard's plot refused the negative error bar).
    none, every = mean_ci([0] * 100), mean_ci([1] * 100)
    assert none["lo"] == 0.0 < none["hi"] and every["lo"] < every["hi"] == 1.0


def test_corrupt_data_file_is_named(tmp_path, monkeypatch):
    import tasks.base as base
    import tasks.strategyqa as sq
    bad = tmp_path / "strategyqa"
    bad.mkdir()
    src = base.FIREACT_DATA / "strategyqa" / "strategyqa_dev.json"
    (bad / "strategyqa_dev.json").write_text(src.read_text()[:5000])  # truncated
    monkeypatch.setattr(sq, "FIREACT_DATA", tmp_path)
    with pytest.raises(DataFileError, match=r"strategyqa_dev.json is corrupt or truncated"):
        get_task("strategyqa", "dev")


def test_tasks_cli_lists_everything():
    import subprocess, sys
    out = subprocess.run([sys.executable, "-m", "tasks"], capture_output=True, text=True, check=True).stdout
    assert "distractor-dev" in out and "14042" in out and "| test" in out
