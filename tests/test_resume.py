"""A run killed with SIGKILL at random moments, and re-run each time, loses nothing.

Real model (hf backend, greedy), real Google tool code against a local HTTP server playing
SerpAPI (so that every search writes the cache), real trajectory files. At the end: every index
exactly once, every line valid JSON, the search cache valid JSON holding every result an
observation showed, EM/F1 equal to an uninterrupted run's, and the planted API key nowhere.
"""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fireharness.paths import ROOT
from servers import FakeAPI, Reply

PLANTED_KEY = "planted-serpapi-key-5f1c0e9a"
N_QUESTIONS = 4
KILLS = 4  # both kinds of kill (right after a search, at a random moment) twice each


def serp_answer(hits: threading.Event):
    def answer(path, params):
        hits.set()
        q = params.get("q", "")
        words = sorted(set(q.lower().split()))
        return Reply(body={"search_metadata": {"status": "Success"},
                           "organic_results": [{"snippet": f"{q} is described in {len(words)} sources: {' '.join(words[:6])}."}]})
    return answer


def command(out: Path, cache: Path) -> list:
    # The lenient protocol: one generation per step (FireAct's loop regenerates a text without `Action: ` up to
    # 5 times, most of a tiny run's time; the protocols have their own tests).
    return [sys.executable, str(ROOT / "generation.py"), "--task", "hotpotqa", "--task_split", "dev", "--random",
            "--task_end_index", str(N_QUESTIONS), "--evaluate", "--backend", "hf", "--method", "react",
            "--tool", "google", "--online", "--search_cache", str(cache), "--max_steps", "3", "--max_tokens", "40",
            "--protocol", "lenient", "--batch_size", "1", "--output_dir", str(out), "--run_name", "resume"]


def env_for(api) -> dict:
    env = dict(os.environ, SERPAPI_API_KEY=PLANTED_KEY, SERPAPI_BASE_URL=api.url, HF_HUB_OFFLINE="1")
    env.pop("OPENAI_API_KEY", None)
    return env


def run_to_end(cmd, env, log: Path):
    with open(log, "ab") as f:
        subprocess.run(cmd, env=env, stdout=f, stderr=f, check=True, timeout=900)


@pytest.mark.timeout(1500)
def test_sigkill_and_resume_loses_nothing(tmp_path):
    hits = threading.Event()
    with FakeAPI(serp_answer(hits)) as api:
        env = env_for(api)
        ref_out, out = tmp_path / "reference", tmp_path / "killed"
        log = tmp_path / "logs.txt"
        run_to_end(command(ref_out, tmp_path / "ref-cache.json"), env, log)

        cache = tmp_path / "cache.json"
        cmd = command(out, cache)
        rng = random.Random(7)
        kills = 0
        while kills < KILLS:
            hits.clear()
            with open(log, "ab") as f:
                proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=f)
                if kills % 2 == 0:
                    # Right after the server answered a search: the client is writing the cache.
                    hits.wait(timeout=120)
                    time.sleep(rng.uniform(0.0, 0.03))
                else:
                    time.sleep(rng.uniform(4.0, 14.0))
                if proc.poll() is not None:
                    break  # finished before this kill: the resume part is done
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
        run_to_end(cmd, env, log)

    assert kills >= KILLS, f"the run finished after only {kills} kills"
    trajs = out / "trajs" / "resume.jsonl"
    lines = trajs.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line valid JSON
    indices = [r["index"] for r in records]
    assert sorted(indices) == sorted(set(indices)) and len(indices) == N_QUESTIONS

    written = json.loads(cache.read_text())  # valid JSON
    from tools.search_cache import SHIPPED_CACHE
    shipped = json.loads(Path(SHIPPED_CACHE).read_text())
    for r in records:
        for step in r["steps"]:
            if step["action_type"] == "search" and step["source"] == "live":
                assert written[step["argument"].strip()] == step["observation"]
            elif step["action_type"] == "search" and step["source"] == "cache":
                q = step["argument"].strip()
                assert step["observation"] in (written.get(q), shipped.get(q))

    ref = {r["index"]: r for r in map(json.loads, (ref_out / "trajs" / "resume.jsonl").read_text().splitlines())}
    got = {r["index"]: r for r in records}
    assert {i: (r["em"], r["f1"], r["prediction"]) for i, r in got.items()} == \
           {i: (r["em"], r["f1"], r["prediction"]) for i, r in ref.items()}
    result = json.loads((out / "results" / "resume.json").read_text())
    ref_result = json.loads((ref_out / "results" / "resume.json").read_text())
    assert result["em"] == ref_result["em"] and result["f1"] == ref_result["f1"] and result["n_episodes"] == N_QUESTIONS

    # Secrets: the planted key is in no trajectory, result, cache or log.
    for path in list(tmp_path.rglob("*")):
        if path.is_file():
            assert PLANTED_KEY not in path.read_text(errors="replace"), path
