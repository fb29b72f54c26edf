"""generation.py end to end on the embedded model, offline: every method, task and prompt format on
the real vLLM engine, the hf backend through the real CLI, and the openai backend against a real
vLLM server on localhost. Each run: trajectories and results written, in the one record schema."""
import json
import subprocess
import sys

import pytest

import generation
from fireharness.paths import ROOT
from fireharness.records import read_episodes
from models import BackendConfig, get_backend

N = 2  # questions per run: enough to batch, cheap enough for CI
COMMON = ["--evaluate", "--task_end_index", str(N), "--max_steps", "3", "--max_tokens", "48"]


@pytest.fixture(scope="module")
def vllm_engine(model_dir):
    # Not conftest's session engine: a later module (test_loop) starts and closes vLLM engines in this process,
    # and closing one tears down vLLM's process-wide parallel state ("pipeline model parallel group is not
    # initialized" in an engine made before it). This one is closed before that module runs.
    pytest.importorskip("vllm")
    backend = get_backend("vllm", BackendConfig(modelpath=model_dir, max_model_len=4096, batch_size=16))
    yield backend
    backend.close()


def run(args, tmp_path, backend=None):
    run = generation.Run(generation.parse_args(args + ["--output_dir", str(tmp_path)]))
    result = run.execute(backend=backend)
    episodes = list(read_episodes(run.trajs_path))
    return run, result, episodes


def check(result, episodes, *, method, fmt="text", n=N):
    assert len(episodes) == n and sorted(e.index for e in episodes) == sorted(set(e.index for e in episodes))
    assert result["n_intended"] == n and result["n_episodes"] == n
    assert 0 <= result["em"]["mean"] <= 1 and result["em"]["lo"] <= result["em"]["mean"] <= result["em"]["hi"]
    assert "f1" in result and result["versions"]["transformers"] and result["config"]["method"] == method
    for ep in episodes:
        assert ep.method == method and ep.format == fmt and ep.steps and ep.model
        assert ep.tokens["prompt"] > 0 and ep.tokens["generated"] > 0
        assert (ep.prediction is not None) == ep.finished
        if ep.finished:
            assert ep.steps[-1].action_type == "finish"
            assert ep.steps[-1].observation.startswith("Episode finished, reward = ")


RUNS = {
    "react-google": (["--task", "hotpotqa", "--task_split", "dev", "--random", "--tool", "google"], "react", "text"),
    "cot": (["--task", "hotpotqa", "--task_split", "dev", "--random", "--method", "cot"], "cot", "text"),
    "io": (["--task", "hotpotqa", "--task_split", "dev", "--random", "--method", "io"], "io", "text"),
    "reflexion": (["--task", "hotpotqa", "--task_split", "distractor-dev", "--method", "reflexion", "--tool", "wikipedia",
                   "--reflect_at", "2", "--max_steps", "3"], "reflexion", "text"),
    "act-wikipedia": (["--task", "hotpotqa", "--task_split", "distractor-dev", "--method", "act", "--tool", "wikipedia"], "act", "text"),
    "strategyqa": (["--task", "strategyqa", "--task_split", "dev", "--question_prefix", "Yes or no: "], "react", "text"),
    "mmlu": (["--task", "mmlu", "--task_split", "test", "--random"], "react", "text"),
    "bamboogle": (["--task", "bamboogle", "--task_split", "test", "--search-fallback", "wikipedia"], "react", "text"),
    "chat": (["--task", "hotpotqa", "--task_split", "dev", "--random", "--chatgpt_format"], "react", "chat"),
    "alpaca": (["--task", "hotpotqa", "--task_split", "dev", "--random", "--alpaca_format"], "react", "alpaca"),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_vllm_runs(name, vllm_engine, tmp_path):
    args, method, fmt = RUNS[name]
    r, result, episodes = run(args + COMMON + ["--backend", "vllm"], tmp_path, backend=vllm_engine)
    check(result, episodes, method=method, fmt=fmt)
    if name == "reflexion":
        reflected = [s for e in episodes for s in e.steps if s.reflection]
        long_enough = [e for e in episodes if e.n_steps >= 2]
        assert len(reflected) == len(long_enough)  # every episode that reached step 2 reflected first
    if name in ("react-google", "bamboogle"):
        sources = {s.source for e in episodes for s in e.steps if s.action_type == "search"}
        assert sources <= {"cache", "none", "fallback:wikipedia"}  # offline: nothing live
    if name == "mmlu":
        assert all(e.meta["subject"] for e in episodes) and "subject" in result["breakdown"]


def test_rerun_resumes_and_skips_finished(vllm_engine, tmp_path):
    args = ["--task", "hotpotqa", "--task_split", "dev", "--random", "--backend", "vllm"] + COMMON
    r, first, episodes = run(args, tmp_path, backend=vllm_engine)
    r2, second, again = run(args, tmp_path, backend=vllm_engine)
    assert second["steps_this_invocation"] == 0 and [e.index for e in again] == [e.index for e in episodes]
    assert second["em"] == first["em"]
    # Nothing ran the second time: the first invocation's speed and code stand, wall time adds up.
    assert second["steps_per_s"] == first["steps_per_s"] > 0 and second["git_commit"] == first["git_commit"]
    assert second["wall_time_s"] >= first["wall_time_s"]


def test_the_same_command_gives_the_same_trajectories(vllm_engine, tmp_path):
    """Episodes run continuously (each joins the engine's batch when its last step is done), but offline
    tools are waited for, so the engine sees the same requests in the same order every time."""
    args = ["--task", "hotpotqa", "--task_split", "dev", "--random", "--backend", "vllm", "--evaluate",
            "--task_end_index", "6", "--max_steps", "3", "--max_tokens", "40"]
    # Each run starts from an empty prefix cache, as in a new process: what earlier tests left cached
    # changes how many tokens a step computes, so the batch shapes and the bfloat16 rounding.
    vllm_engine.llm.reset_prefix_cache()
    _, _, first = run(args, tmp_path / "first", backend=vllm_engine)
    vllm_engine.llm.reset_prefix_cache()
    _, _, second = run(args, tmp_path / "second", backend=vllm_engine)
    texts = lambda episodes: {e.index: [s.raw for s in e.steps] for e in episodes}  # noqa: E731
    assert texts(first) == texts(second) and sum(len(t) for t in texts(first).values()) > 8


def test_hf_backend_through_the_cli(tmp_path):
    """The real command line, as a user types it; FireAct's --backend llama name."""
    out = subprocess.run([sys.executable, str(ROOT / "generation.py"), "--task", "hotpotqa", "--task_split", "dev",
                          "--random", "--backend", "llama", "--tool", "google", "--offline", "--output_dir", str(tmp_path)]
                         + COMMON, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "EM % [95% CI]" in out.stdout and "hotpotqa_dev_0_2_random_react_text_fireact_google-offline_llama" in out.stdout
    (results,) = (tmp_path / "results").glob("*.json")
    result = json.loads(results.read_text())
    episodes = list(read_episodes(tmp_path / "trajs" / f"{result['run']}.jsonl"))
    check(result, episodes, method="react")
    settings = result["backend_settings"]  # what this machine was measured to compute fastest
    assert settings["dtype"] == settings["dtype_probe"]["dtype"] and settings["attention"] == "sdpa_gqa"
    # KV reuse: later steps compute only their new tokens.
    multi = [e for e in episodes if e.n_steps > 1]
    assert all(e.tokens["computed"] < e.tokens["prompt"] for e in multi)


PLANTED_OPENAI_KEY = "sk-planted-9d2e71c4b0a5"


def test_openai_backend_against_a_local_vllm_server(vllm_server, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED_OPENAI_KEY)  # a secret that must not leak anywhere
    args = ["--task", "hotpotqa", "--task_split", "dev", "--random", "--backend", "openai", "--base_url", vllm_server,
            "--model_name", "smollm2"] + COMMON
    r, result, episodes = run(args, tmp_path)
    check(result, episodes, method="react")
    assert result["model"] == "smollm2" and "openai" in r.run_name
    chat_args = args + ["--chatgpt_format"]
    r, result, episodes = run(chat_args, tmp_path)
    check(result, episodes, method="react", fmt="chat")
    logs = capfd.readouterr()
    for text in [logs.out, logs.err] + [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]:
        assert PLANTED_OPENAI_KEY not in text


LONG = " Context:" + " the" * 5000  # ~5,000 tokens: past the engine's 4,096


def test_a_prompt_past_the_context_ends_its_episode_alone(vllm_engine, tmp_path):
    """One episode whose prompt outgrows the context (an MMLU episode's 8th step did) ends unfinished,
    "context full"; the others in the batch go on, and the run with them."""
    from methods.agent import AgentLoop
    from methods.base import AgentState

    r = generation.Run(generation.parse_args(["--task", "hotpotqa", "--task_split", "dev", "--random", "--tool", "google",
                                              "--offline", "--backend", "vllm", "--output_dir", str(tmp_path)] + COMMON))
    tool = r.build_tool()
    loop = AgentLoop(method=r.method, backend=vllm_engine, tool=tool, task=r.task, max_tokens=48)
    short, long = r.indices
    states = [AgentState("short", short, r.task[short]), AgentState("long", long, r.task[long] + LONG)]
    ended = []
    loop.run(states, ended.append)
    tool.close()
    by_key = {s.key: r.episode(s, tool) for s in ended}
    assert set(by_key) == {"short", "long"}
    over = by_key["long"]
    assert over.error.startswith("context full") and "4096" in over.error and not over.finished and not over.steps
    assert by_key["short"].steps and not (by_key["short"].error or "").startswith("context full")


def test_a_first_prompt_past_the_context_stops_before_any_work(vllm_engine, tmp_path):
    r = generation.Run(generation.parse_args(["--task", "hotpotqa", "--task_split", "dev", "--backend", "vllm",
                                              "--question_prefix", LONG, "--output_dir", str(tmp_path)] + COMMON))
    with pytest.raises(generation.RunError, match="first prompt .* more than the model's context of 4096"):
        r.execute(backend=vllm_engine)
    assert not r.trajs_path.exists()
