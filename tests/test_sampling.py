"""Repeated sampling (generation.py --num_samples K): pass@k and majority vote against hand-computed
cases, the leaderboard's columns, and a K-sample run on the real vLLM engine that resumes by
(index, sample) and re-draws a lost sample with its own seed (derived from run, index and sample)."""
import itertools
import json

import pytest

import generation
import leaderboard
from fireharness.records import Episode, Step, append_episode, read_episodes, sample_seed
from fireharness.stats import majority_vote, pass_at_k, repeated_sampling, sample_ks


def brute_pass_at_k(n, c, k):
    """The fraction of k-subsets of n samples (c correct) holding a correct one, by enumeration."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_hand_cases():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)            # c / n
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)     # 1 - C(3,2)/C(5,2)
    assert pass_at_k(8, 1, 8) == 1.0 and pass_at_k(8, 0, 4) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0                           # n - c < k: every pair holds a right one
    for n, c, k in [(8, 3, 4), (6, 1, 3), (7, 2, 5), (10, 4, 1)]:
        assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k))
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)
    assert sample_ks(8) == [1, 2, 4, 8] and sample_ks(6) == [1, 2, 4, 6] and sample_ks(1) == [1]


def test_speculation_defaults_to_ngram_when_greedy_and_none_when_sampling(tmp_path):
    base = ["--task", "hotpotqa", "--task_split", "dev", "--task_end_index", "2", "--backend", "vllm",
            "--tool", "google", "--output_dir", str(tmp_path)]
    assert generation.Run(generation.parse_args(base)).c.speculative == "ngram"
    sampled = base + ["--num_samples", "4", "--temperature", "0.7"]
    assert generation.Run(generation.parse_args(sampled)).c.speculative == "none"
    asked = generation.Run(generation.parse_args(sampled + ["--speculative", "ngram"]))
    assert asked.c.speculative == "ngram"


def test_majority_vote_hand_cases():
    assert majority_vote(["paris", "london", "london", None]) == 1
    assert majority_vote(["a", "b"]) == 0                      # a tie goes to the answer given first
    assert majority_vote([None, "b", "a", "a", "b"]) == 1      # tie: "b" was given first
    assert majority_vote([None, None]) is None and majority_vote([]) is None
    # Two questions, K = 3: q0 has one right sample out of 3 but votes wrong; q1 votes right.
    stats = repeated_sampling([[(1.0, "x"), (0.0, "y"), (0.0, "y")],
                               [(1.0, "z"), (1.0, "z"), (0.0, None)]], 3)
    assert stats["pass@1"]["mean"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert stats["pass@2"]["mean"] == pytest.approx(((1 - 1 / 3) + 1.0) / 2)
    assert stats["pass@3"]["mean"] == 1.0
    assert stats["majority_em"]["mean"] == 0.5
    # A question asked but never sampled counts 0.
    assert repeated_sampling([[(1.0, "a")], []], 2)["pass@2"]["mean"] == 0.5


def test_sample_seed_is_the_episodes_identity():
    assert sample_seed("run", 3, 1) == sample_seed("run", 3, 1)
    seeds = {sample_seed("run", i, s) for i in range(20) for s in range(8)} | {sample_seed("other", 0, 0)}
    assert len(seeds) == 161 and all(0 <= s < 2**31 for s in seeds)
    assert sample_seed("run", 0, 0, seed=1) != sample_seed("run", 0, 0)


def _episode(index, sample, em, prediction):
    finish = Step(thought="t", action=f"finish[{prediction}]", action_type="finish", argument=prediction)
    return Episode(task="hotpotqa", split="dev", index=index, question=f"q{index}", gold="x",
                   prediction=prediction, em=em, f1=em, reward=em, finished=prediction is not None,
                   steps=[finish], method="react", model="m", run="k3", sample=sample)


def test_leaderboard_reports_pass_at_k_and_majority(tmp_path, capsys):
    # q0: 1 of 3 right, vote "Y" (wrong); q1: 2 of 3 right, vote "x" (right, after normalisation).
    path = tmp_path / "trajs" / "k3.jsonl"
    path.parent.mkdir()
    for ep in [_episode(0, 0, 1.0, "x"), _episode(0, 1, 0.0, "y"), _episode(0, 2, 0.0, "Y."),
               _episode(1, 0, 1.0, "The x"), _episode(1, 1, 0.0, None), _episode(1, 2, 1.0, "x"),
               _episode(1, 2, 1.0, "x")]:  # the last: a re-done sample, counted once
        append_episode(path, ep)
    df = leaderboard.leaderboard_frame(leaderboard.load_runs([str(path)]))
    row = df.iloc[0]
    assert row["k"] == 3 and row["em"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert row["pass@1"] == pytest.approx(0.5) and row["pass@2"] == pytest.approx(((1 - 1 / 3) + 1) / 2)
    assert row["pass@3"] == 1.0 and row["majority_em"] == 0.5
    assert leaderboard.main([str(path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    header, cells = ([c.strip() for c in line.strip("|").split("|")] for line in (lines[0], lines[2]))
    shown = dict(zip(header, cells))
    assert (shown["K"], shown["pass@K"], shown["Maj. EM"], shown["EM"]) == ("3", "100.0", "50.0", "50.0")


def test_bad_num_samples_stop_before_any_work(tmp_path):
    base = ["--task", "hotpotqa", "--task_split", "dev", "--output_dir", str(tmp_path)]
    for extra, flag in ((["--num_samples", "0"], "--num_samples 0"),
                        (["--num_samples", "4"], "--temperature")):
        with pytest.raises(generation.RunError, match=flag):
            generation.Run(generation.parse_args(base + extra))
    assert not list(tmp_path.rglob("*.jsonl"))


def test_num_samples_resume_by_index_and_sample(shared_vllm_engine, tmp_path, monkeypatch):
    args = ["--task", "hotpotqa", "--task_split", "dev", "--task_end_index", "1", "--evaluate", "--backend", "vllm",
            "--tool", "wikipedia", "--max_steps", "2", "--max_tokens", "24", "--num_samples", "2",
            "--temperature", "0.9", "--output_dir", str(tmp_path)]
    # Record the seed and temperature of every request the real engine receives.
    sent, temperatures = [], set()
    submit = shared_vllm_engine.submit

    def recording_submit(request, **kwargs):
        sent.append((request.key, request.seed))
        temperatures.add(kwargs.get("temperature"))
        return submit(request, **kwargs)

    monkeypatch.setattr(shared_vllm_engine, "submit", recording_submit)
    run = generation.Run(generation.parse_args(args))
    first = run.execute(backend=shared_vllm_engine)
    episodes = list(read_episodes(run.trajs_path))
    assert sorted((e.index, e.sample) for e in episodes) == [(0, 0), (0, 1)]
    assert first["num_samples"] == 2 and set(first["sampling"]) == {"pass@1", "pass@2", "majority_em"}
    first_seeds = dict(sent)
    # K samples, not K copies: each is sent sampling, under its own seed. (Their texts are not compared: what
    # vLLM draws is its business, and with the ngram drafter proposing the prompt's own example, CI once drew
    # the same 24 tokens for both seeds.)
    assert len(first_seeds) == 2 and len(set(first_seeds.values())) == 2 and temperatures == {0.9}
    # Lose one (as a kill mid-run would) and re-run: only it is redone, under its own seed. (Not compared token
    # by token: with the ngram drafter and another batch, vLLM on CPU need not redraw the same tokens.)
    lines = run.trajs_path.read_text().splitlines(keepends=True)
    lost = Episode.from_dict(json.loads(lines[-1]))
    run.trajs_path.write_text("".join(lines[:-1]))
    sent.clear()
    again = generation.Run(generation.parse_args(args))
    assert len(again.done) == 1
    again.execute(backend=shared_vllm_engine)
    redone = list(read_episodes(run.trajs_path))
    assert sorted((e.index, e.sample) for e in redone) == [(0, 0), (0, 1)]
    new = redone[-1]
    assert (new.index, new.sample) == (lost.index, lost.sample)
    (resent_key,) = {key for key, _ in sent}
    assert {seed for _, seed in sent} == {first_seeds[resent_key]} == \
        {sample_seed(run.run_name, lost.index, lost.sample, run.c.seed)}


def test_seeded_sampling_survives_a_prefill_cut_in_two(shared_vllm_engine):
    """Two ~2,500-token prompts sampled with seeds overflow one engine step's 4,096-token budget, so the second's
    prefill is cut in two and the token drawn after its first part dropped: vLLM's CPU runner then rewound a CPU
    generator by CUDA offsets and died ("CPU Generator does not use offset"). Both are answered now."""
    from fireharness.paths import DATA_DIR
    from models import GenerationRequest

    words = (DATA_DIR / "fireact" / "prompts" / "react_hotpotqa_google.txt").read_text().split() * 3

    def prompt(k):
        return f"Document {k}.\n" + " ".join(words[k * 7:][:5200]) + f"\nQuestion {k}: what is it?\n"

    out = shared_vllm_engine.generate([GenerationRequest(f"long{k}", prompt(k), seed=k) for k in range(2)],
                                      max_tokens=4, temperature=0.7)
    assert all(g.prompt_tokens > 2048 and g.generated_tokens > 0 and not g.error for g in out)
