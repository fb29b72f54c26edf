"""finetune.convert against FireAct's released files, and on trajectories written by our own schema."""
import collections
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fireharness.paths import DATA_DIR  # noqa: E402
from fireharness.records import Episode, Step, append_episode, read_episodes  # noqa: E402
from finetune.convert import Filters, convert, main, run_conversion  # noqa: E402

FT = DATA_DIR / "fireact" / "data" / "finetune"
TRAJS = DATA_DIR / "fireact" / "trajs"
LLAMA_7B = next(TRAJS.glob("hotpotqa_dev_0_500_llama_models_lora_llama-2-7b-*.json"))
AS_IS = dict(filters=Filters(keep_failed=True), dedup="none", shuffle=False)


def conversation_key(messages):
    messages = [dict(m) for m in messages]
    messages[0]["content"] = messages[0]["content"].strip()
    return json.dumps(messages, ensure_ascii=False)


def released_gpt(name):
    with open(FT / "gpt_format" / f"{name}.jsonl") as f:
        return collections.Counter(conversation_key(json.loads(line)["messages"]) for line in f)


@pytest.mark.parametrize("name,common", [("hotpotqa", 500), ("hotpotqa_multimethod", 733)])
def test_alpaca_to_gpt_reproduces_fireacts_gpt_files(name, common):
    rows = convert([FT / "alpaca_format" / f"{name}.json"], "gpt", **AS_IS)
    ours = collections.Counter(conversation_key(r["messages"]) for r in rows)
    assert sum((ours & released_gpt(name)).values()) == common


def test_fireact_files_round_trip_exactly():
    # Parsing to Episodes and rendering back gives FireAct's rows byte for byte, MMLU options
    # (split between instruction and output) and "reward = 1" / "True" / CoT's missing newline included.
    released = json.loads((FT / "alpaca_format" / "multitask.json").read_text())
    assert convert([FT / "alpaca_format" / "multitask.json"], "alpaca", **AS_IS) == released
    with open(FT / "gpt_format" / "hotpotqa_multimethod.jsonl") as f:
        released = [json.loads(line) for line in f]
    assert convert([FT / "gpt_format" / "hotpotqa_multimethod.jsonl"], "gpt", **AS_IS) == released


def test_llama_7b_lora_trajs_give_131_successes():
    result = run_conversion([LLAMA_7B], "alpaca")
    (report,) = result.reports
    assert (report.read, report.kept) == (500, 131)
    # 3 of them called FireAct's nonexistent "reflect" tool; --drop_tool_errors drops those.
    assert len(convert([LLAMA_7B], "alpaca", filters=Filters(drop_tool_errors=True))) == 128
    row = result.rows[0]
    assert set(row) == {"instruction", "input", "output"} and row["output"].startswith("Thought: ")
    assert row["output"].endswith("Observation: Episode finished, reward = True\n")


def our_episodes():
    search = Step(thought="I need to search Milhouse's namesake.", action="search[Milhouse Van Houten]",
                  action_type="search", argument="Milhouse Van Houten", tool="google", source="offline",
                  observation="Milhouse Mussolini Van Houten is named after Richard Nixon's middle name.")
    finish = Step(thought="Milhouse was named after Richard Nixon.", action="finish[Richard Nixon]",
                  action_type="finish", argument="Richard Nixon")
    good = Episode(task="hotpotqa", split="train", index=0, question="Who was Milhouse named after?",
                   gold="Richard Nixon", prediction="Richard Nixon", em=1.0, f1=1.0, reward=1.0,
                   finished=True, steps=[search, finish], method="react", model="smollm2-135m")
    wrong = Step(thought="Milhouse is a Simpsons character.", action="finish[Bart]", action_type="finish",
                 argument="Bart")
    bad = Episode(task="hotpotqa", split="train", index=0, question="Who was Milhouse named after?",
                  gold="Richard Nixon", prediction="Bart", finished=True, steps=[wrong], method="react")
    mmlu = Episode(task="mmlu", split="train", index=1, question="Question: 2+2=\nA. 3\nB. 4\nC. 5\nD. 6",
                   gold="B", prediction="B", em=1.0, f1=1.0, reward=1.0, finished=True, method="react",
                   steps=[Step(thought="2+2 is 4.", action="finish[B]", action_type="finish", argument="B")])
    return good, bad, mmlu


def test_our_trajs_convert_to_every_format_and_the_trainers_read_them(tmp_path):
    from finetune.data import load_rows  # the fine-tuners' reader

    traj = tmp_path / "run.jsonl"
    good, bad, mmlu = our_episodes()
    for ep in (good, bad, mmlu):
        append_episode(traj, ep)

    out = tmp_path / "train.json"
    assert main([str(traj), "--format", "alpaca", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows == [
        {"instruction": "Who was Milhouse named after?", "input": "",
         "output": "Thought: I need to search Milhouse's namesake.\nAction: search[Milhouse Van Houten]\n"
                   "Observation: Milhouse Mussolini Van Houten is named after Richard Nixon's middle name.\n"
                   "Thought: Milhouse was named after Richard Nixon.\nAction: finish[Richard Nixon]\n"
                   "Observation: Episode finished, reward = True\n"},
        {"instruction": "Question: 2+2=", "input": "",  # FireAct's MMLU split and int reward
         "output": "A. 3\nB. 4\nC. 5\nD. 6\nThought: 2+2 is 4.\nAction: finish[B]\n"
                   "Observation: Episode finished, reward = 1\n"}]
    assert load_rows(out)[0] == "alpaca"

    gpt = tmp_path / "train.jsonl"
    assert main([str(traj), "-f", "gpt", "-o", str(gpt), "--no-shuffle"]) == 0
    first = json.loads(gpt.read_text().splitlines()[0])["messages"]
    assert [m["role"] for m in first] == ["user", "assistant", "user", "assistant", "user"]
    assert first[1]["content"] == "Thought: I need to search Milhouse's namesake.\nAction: search[Milhouse Van Houten]"
    assert first[-1]["content"] == "Observation: Episode finished, reward = True"
    assert load_rows(gpt)[0] == "gpt"

    dpo, ds_dir = tmp_path / "dpo.jsonl", tmp_path / "dpo_ds"
    assert main([str(traj), "-f", "dpo", "-o", str(dpo), "--hf_dataset", str(ds_dir)]) == 0
    pairs = [json.loads(line) for line in dpo.read_text().splitlines()]
    # step 0 of the successful episode vs the failing episode's step 0 on the same question
    failed = next(p for p in pairs if p["rejected"].endswith("finish[Bart]"))
    assert failed["chosen"].endswith("Action: search[Milhouse Van Houten]")
    assert failed["prompt"].endswith("### Instruction:\nWho was Milhouse named after?\n\n### Response:\n")
    # Araft's rejected step: re-issuing the previous search instead of finishing
    repeat = next(p for p in pairs if p["chosen"].endswith("finish[Richard Nixon]"))
    assert repeat["rejected"].endswith("Action: search[Milhouse Van Houten]")
    assert repeat["prompt"].endswith("middle name.\n")
    assert load_rows(dpo)[0] == "dpo"
    import datasets

    assert datasets.load_from_disk(str(ds_dir)).column_names == ["prompt", "chosen", "rejected"]

    steps = convert([traj], "steps", shuffle=False, prompt_style="chat")
    assert len(steps) == 3 and steps[1]["prompt"][-1]["content"].startswith("Observation: Milhouse")
    assert steps[1]["completion"] == [{"role": "assistant", "content":
                                       "Thought: Milhouse was named after Richard Nixon.\nAction: finish[Richard Nixon]"}]


def test_mix_counts_ratios_dedup_and_seed():
    a, g = FT / "alpaca_format" / "hotpotqa.json", FT / "gpt_format" / "multitask.jsonl"
    result = run_conversion([f"{a}:200", f"{g}:0.5"], "gpt", seed=1)
    first, second = result.reports
    assert first.kept == 200
    # multitask.jsonl holds the same 500 HotpotQA questions: those already taken are duplicates, the
    # 300 not sampled from the first input stay available
    assert second.dropped["duplicate"] == 200 + 1  # + one question repeated inside multitask
    assert second.kept == round((1344 - 201) * 0.5)
    questions = [" ".join(r["messages"][0]["content"].split()).lower() for r in result.rows]
    assert len(set(questions)) == len(questions) == 200 + second.kept
    again = convert([f"{a}:200", f"{g}:0.5"], "gpt", seed=1)
    assert again == result.rows and convert([f"{a}:200", f"{g}:0.5"], "gpt", seed=2) != result.rows


def test_dedup_keeps_each_method_of_a_question():
    """FireAct's multimethod file holds 1,765 questions in 2,063 rows (ReAct, CoT, Reflexion of the same
    question): one-per-question dedup would drop 290 of them."""
    result = run_conversion([FT / "alpaca_format" / "multitask_multimethod.json"], "alpaca")
    (report,) = result.reports
    assert report.dropped["duplicate"] < 10 and report.kept > 2000
    questions = collections.Counter(" ".join(r["instruction"].split()).lower() for r in result.rows)
    assert sum(n > 1 for n in questions.values()) > 250  # questions kept under several methods


def test_filters_min_f1_and_max_steps():
    result = run_conversion([LLAMA_7B], "alpaca", filters=Filters(keep_failed=True, min_f1=0.5, max_steps=3))
    (report,) = result.reports
    assert report.dropped["low_f1"] > 0 and report.dropped["too_many_steps"] > 0
    assert report.kept + sum(report.dropped.values()) == report.read
    assert all(r["output"].count("\nAction: ") <= 3 for r in result.rows)


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "x.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "missing.jsonl: no such file" in err and not (tmp_path / "x.json").exists()
    with pytest.raises(SystemExit):
        main([f"{LLAMA_7B}:1.5"])
    assert "ratio must be within" in capsys.readouterr().err


def test_oracle_trajectories_read_the_offline_tool_and_mix_with_fireacts(tmp_path, capsys):
    """Gold-evidence trajectories on HotpotQA train: every kept one shows its answer in the last search's
    observation (the evaluation tool's own text), finishes right after it, and mixes with FireAct's file."""
    from finetune import oracle
    from tasks.base import get_task
    from tasks.metrics import normalize_answer
    from tools.base import ToolConfig, get_tool

    out = tmp_path / "oracle.jsonl"
    assert oracle.main(["--split", "train", "--tool", "google", "--offline", "--search-fallback", "wikipedia",
                        "--out", str(out)]) == 0
    episodes = list(read_episodes(out))
    summary = capsys.readouterr().out
    assert f"kept {len(episodes)}" in summary and 500 < len(episodes) < 700  # 593 when written
    task = get_task("hotpotqa", "train")
    tool = get_tool("google", ToolConfig(offline=True, search_fallback="wikipedia"))
    for ep in episodes[:50]:
        *searches, finish = ep.steps
        assert finish.action == f"finish[{task.gold(ep.index)}]" and ep.reward == 1 and ep.finished
        answer = normalize_answer(str(ep.gold))
        assert answer in ("yes", "no") or answer in normalize_answer(searches[-1].observation)
        session = tool.session()  # the observation is what the evaluation's tool answers to that search
        assert searches[0].observation == session.act("search", searches[0].argument).text
    rows = convert([FT / "alpaca_format" / "hotpotqa.json", out], "alpaca", shuffle=False)
    assert 500 + len(episodes) - 50 < len(rows) <= 500 + len(episodes)  # a few questions are in both
    assert rows[-1]["output"].endswith("Observation: Episode finished, reward = True\n")
    with pytest.raises(SystemExit):  # an existing output is never overwritten
        oracle.main(["--out", str(out)])
    assert "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        oracle.main(["--split", "dev", "--out", str(tmp_path / "dev.jsonl")])
    assert "no supporting_facts" in capsys.readouterr().err and not (tmp_path / "dev.jsonl").exists()
