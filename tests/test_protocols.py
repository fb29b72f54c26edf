"""The seed protocols (methods/protocols) reproduce the seeds' own loops, and ``lenient`` keeps today's.

How the comparison is split, to stay inside the suite's time (the seed loops are sequential: one
question's every step is a generate() over the whole prompt; ours batches and keeps KV caches):

- By hand, ``experiments/seed_protocols.py --protocol react|fireact|lenient --golden`` runs each seed's
  loop, re-typed from its published code in ``tests/seed_loops.py``, and ours on 20 questions (embedded
  model, fp32, greedy, the same offline tool answers), writes the comparison to
  ``results/seed_protocols_<protocol>.json`` and the seed's trajectories to
  ``tests/data/seed_golden/<protocol>.json``. For ``lenient`` the "seed" is the loop as committed before
  protocols existed (2cf286d), run from its own checkout.
- Here: ours against those golden trajectories on the GOLDEN_N shortest questions of each that the
  comparison found identical, and each seed's loop live against ours on the shortest one, so that a
  change to the seed loops' re-typing, to the protocols or to the backend shows up. Ours runs one
  question at a time here (the comparison ran them batched): the hf backend's rows compute what they
  would alone, and these tests check that too.

A trajectory is compared whole: the text the loop appended to the prompt after its few-shot examples
(question, every thought, action and observation, character for character) and the answer. Where
the committed comparison found a difference, the JSON names the question and the text around it; such
questions are left out of GOLDEN below (none so far: see the JSON files).
"""
import json
import sys
from pathlib import Path

import pytest

from generation import Run, RunConfig, RunError
from methods.protocols import default_protocol
from methods.protocols.fireact import FAILED as FIREACT_FAILED, prune_thought, split_action, split_step, strip_thought_label
from methods.protocols.react import env_action, parse_react

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
GOLDEN_DIR = Path(__file__).parent / "data" / "seed_golden"
GOLDEN_N = 1
LIVE_N = 1


# --- the rules, one by one ---------------------------------------------------------------------------
def test_react_split_is_the_notebooks():
    assert parse_react(" I search.\nAction 2: Search[Foo]", 2) == ("I search.", "Search[Foo]")
    assert parse_react(" I search.\nAction 3: Search[Foo]", 2) is None  # another step's number: repair
    assert parse_react("a\nAction 2: Search[x]\nAction 2: Finish[y]", 2) is None  # two: repair
    assert parse_react("a\naction 2: Search[x]", 2) is None  # case matters
    assert parse_react("a\nAction 2: Search[x]\nThought 3: more", 2) == ("a", "Search[x]\nThought 3: more")


def test_react_environment_gets_the_whole_action():
    assert env_action("Search[Foo Bar]") == ("search", "Foo Bar", "search[Foo Bar]")
    assert env_action("Finish[yes] ") == ("finish", "yes", "finish[yes]")
    assert env_action(" Finish[yes]") == ("", "", "Finish[yes]")  # the space was the letter lowered
    assert env_action("Search[Foo]\nThought 3: more")[0] == ""  # followed by more lines: invalid
    assert env_action("SEARCH[Foo]")[0] == ""  # only the first letter is lowered
    assert env_action("think[hmm]")[:2] == ("think", "hmm")
    assert env_action("") == ("", "", "")


def test_fireact_split_rules():
    assert split_step(" Look it up.\nAction: search[Foo]") == ("Look it up.", "search[Foo]")
    assert split_step("a\nAction: search[x]\nObservation: y\nAction: z") == ("a", "search[x]\nObservation: y")
    assert split_step("Action: finish[no]") == ("", "finish[no]")
    assert split_step(" x Action: finish[no]") == ("", "n: finish[no]")  # FireAct slices the unstripped text
    assert split_step("just thinking\nmore") == ("just thinking", None)
    assert split_step("Thought: t\nAction: ") == ("Thought: t", None)  # its one "Action: " ends it: repair
    assert split_action("search[Foo]") == ("search", "Foo")
    assert split_action("finish[yes] because") == ("finish", "yes] becaus")  # last character dropped
    assert split_action("no bracket") is None
    assert strip_thought_label("Thought: x") == "x" and strip_thought_label(" Thought: x") == " Thought: x"
    assert prune_thought("Thought: failed") == "failed"


def test_default_protocol_follows_the_prompt_family():
    assert default_protocol("react", "text", numbered_prompt=True) == "react"
    assert default_protocol("react", "text", numbered_prompt=False) == "fireact"
    assert default_protocol("react", "alpaca", numbered_prompt=False) == "fireact"
    assert default_protocol("react", "chat", numbered_prompt=False) == "lenient"
    for method in ("act", "reflexion", "io", "cot"):
        assert default_protocol(method, "text", numbered_prompt=True) == "lenient"


# --- bad input, before any work -------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(protocol="reactt"), "--protocol"),
    (dict(protocol="react", tool="google"), "--protocol react"),
    (dict(protocol="fireact", tool="wikipedia"), "--protocol fireact"),
    (dict(protocol="fireact", chatgpt_format=True), "--protocol fireact"),
    (dict(empty_result="null"), "--empty_result"),
])
def test_bad_protocol_input(tmp_path, kwargs, message):
    config = dict(task="hotpotqa", task_split="distractor-dev", task_end_index=2, tool="wikipedia",
                  output_dir=str(tmp_path), backend="hf")
    with pytest.raises(RunError, match=message):
        Run(RunConfig(**{**config, **kwargs}))
    assert not list(tmp_path.rglob("*.jsonl"))


def test_defaults_and_run_names_differ_by_protocol(tmp_path):
    base = dict(task="hotpotqa", task_split="distractor-dev", task_end_index=2, output_dir=str(tmp_path), backend="hf")
    react = Run(RunConfig(**base, tool="wikipedia"))
    fireact = Run(RunConfig(**base, tool="google"))
    lenient = Run(RunConfig(**base, tool="wikipedia", protocol="lenient"))
    assert (react.c.protocol, react.c.max_steps, react.c.max_tokens) == ("react", 7, 100)
    assert (fireact.c.protocol, fireact.c.max_steps, fireact.c.max_tokens) == ("fireact", 11, 1000)
    assert (lenient.c.protocol, lenient.c.max_steps, lenient.c.max_tokens) == ("lenient", 11, 256)
    assert react.run_name != lenient.run_name and "_react_" in react.run_name and "_lenient_" in lenient.run_name
    assert Run(RunConfig(**base, tool="wikipedia", max_tokens=64)).c.max_tokens == 64  # given: kept


# --- ours against the seeds, on the real model ------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_fp32(model_dir):
    from models import BackendConfig, get_backend

    backend = get_backend("hf", BackendConfig(modelpath=model_dir, dtype="float32", batch_size=4))
    yield backend
    backend.close()


# FireAct's loop writes its FAILED step after 5 regenerations without an ``Action: ``, each up to 1,000
# tokens: the shortest text and the most expensive question (20 min here on 2 cores), so not a cheap check.
REGENERATIONS_EXHAUSTED = f"\n{FIREACT_FAILED}\n"


def shortest(protocol: str, k: int) -> list:
    """Positions (in the run's question order) of the k shortest golden trajectories that the committed
    comparison found identical: the cheapest questions that still check the whole loop."""
    golden = json.loads((GOLDEN_DIR / f"{protocol}.json").read_text())["trajectories"]
    compared = json.loads((ROOT / "results" / f"seed_protocols_{protocol}.json").read_text())["questions"]
    same = {q["index"] for q in compared if q["identical"]}
    positions = sorted((len(g["trajectory"]), pos) for pos, g in enumerate(golden)
                       if g["index"] in same and REGENERATIONS_EXHAUSTED not in g["trajectory"])
    return [(pos, golden[pos]) for _, pos in positions[:k]]


def run_ours(protocol, position, out, backend):
    import seed_protocols

    run = Run(seed_protocols.our_config(protocol, 1, str(out / f"q{position}"), batch_size=1, start=position))
    result = run.execute(backend=backend)
    return run, result, seed_protocols.trajectories(run)


@pytest.mark.parametrize("protocol", ["react", "fireact", "lenient"])
def test_ours_matches_the_seed_golden_trajectories(protocol, hf_fp32, tmp_path):
    """lenient: the golden trajectories are the loop's as committed before protocols (the regression test)."""
    for position, expected in shortest(protocol, GOLDEN_N):
        run, result, ours = run_ours(protocol, position, tmp_path, hf_fp32)
        (i,) = run.indices
        assert i == expected["index"]
        trajectory, answer = ours[i]
        assert trajectory == expected["trajectory"], f"{protocol} question {i}"
        assert (answer or None) == (expected["answer"] or None), f"{protocol} question {i}"
    # The protocol is on every record, in the results and in the leaderboard's label.
    assert result["protocol"] == result["config"]["protocol"] == protocol
    from fireharness.view.sources import read_path
    from fireharness.records import read_episodes
    assert {ep.protocol for ep in read_episodes(run.trajs_path)} == {protocol}
    (board,) = read_path(run.results_path)
    assert board.protocol == protocol and f"[{protocol}]" in board.label
    if protocol != "lenient":  # the same file under another protocol: refused, nothing mixed
        with pytest.raises(RunError, match="protocol"):
            Run(RunConfig(**{**run.c.__dict__, "protocol": "lenient", "max_steps": None, "max_tokens": None}))


@pytest.mark.parametrize("protocol", ["react", "fireact"])
def test_seed_loop_live_matches_ours(protocol, hf_fp32, tmp_path):
    """The re-typed seed loop itself, run now, on the shortest compared question."""
    import seed_protocols

    for position, _ in shortest(protocol, LIVE_N):
        run, _, ours = run_ours(protocol, position, tmp_path, hf_fp32)
        seed = {i: (trajectory, answer) for i, trajectory, answer in seed_protocols.run_seed(protocol, run.indices)}
        (i,) = run.indices
        assert ours[i][0] == seed[i][0]
        assert (ours[i][1] or None) == (seed[i][1] or None)
