"""``python -m fireharness.loop``: a two-round loop on the real model and vLLM engine ending in a leaderboard,
the same kind of loop SIGKILLed at random points and re-run, and bad configs stopped before any work."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fireharness.loop import Loop, LoopConfigError, parse_config
from fireharness.loop.__main__ import main
from fireharness.paths import DATA_DIR, ROOT
from fireharness.records import read_episodes

FIREACT_HOTPOTQA = DATA_DIR / "fireact" / "data" / "finetune" / "alpaca_format" / "hotpotqa.json"


def tiny(out, **over) -> list:
    """Flags of a loop small enough for CI: 4 train and 4 eval questions, K = 2, two training steps."""
    fields = {"output_dir": out, "train": ["hotpotqa:train:0-4"], "eval": ["hotpotqa:dev:0-4"], "rounds": 1,
              "num_samples": 2, "temperature": 0.9, "teacher_files": [f"{FIREACT_HOTPOTQA}:8"], "keep_failed": True,
              "baselines": ["io"], "max_steps": 2, "max_tokens": 32, "sft_max_steps": 2, "train_batch_size": 2,
              "micro_batch_size": 2, "cutoff_len": 512, "lora_r": 8, "lora_alpha": 16, "batch_size": 16,
              "speculative": "none"}  # as the sampling stages': one engine per model, not two
    fields.update(over)
    argv = []
    for k, v in fields.items():
        argv += ([f"--{k}", *map(str, v)] if v else [f"--{k}="]) if isinstance(v, list) else [f"--{k}", str(v)]
    return argv


def episodes_once(out: Path) -> dict:
    """Every trajectory file's (index, sample) keys, each asserted to occur once."""
    counts = {}
    for path in (out / "trajs").glob("*.jsonl"):
        keys = [(e.index, e.sample) for e in read_episodes(path)]
        assert len(keys) == len(set(keys)), path
        counts[path.stem] = len(keys)
    return counts


def test_two_round_loop_ends_in_a_leaderboard(tmp_path, capfd):
    """The loop starts its own engines: the base model's, then each round's merged model's."""
    out = tmp_path / "exp"
    manifest = Loop(parse_config(tiny(out))).execute()
    stages = manifest["stages"]
    assert list(stages) == ["baseline_io", "r0_filter", "r0_sft", "r0_sft_eval", "r1_sample", "r1_filter", "r1_sft",
                            "r1_sft_eval", "leaderboard"]
    assert all(s["status"] == "done" for s in stages.values())
    # Round 1 sampled each train question twice with round 0's adapter, and trained on what it kept.
    sample = list(read_episodes(out / "trajs" / "r1_sample_hotpotqa_train_0_4.jsonl"))
    assert sorted((e.index, e.sample) for e in sample) == [(i, s) for i in range(4) for s in range(2)]
    assert {e.model for e in sample} == {str(out.resolve() / "adapters" / "r0_sft_merged")}
    results = json.loads((out / "results" / "r1_sample_hotpotqa_train_0_4.json").read_text())
    assert set(results["sampling"]) == {"pass@1", "pass@2", "majority_em"}
    for r in (0, 1):
        train = json.loads((out / "adapters" / f"r{r}_sft" / "fireharness_train.json").read_text())
        assert train["optimizer_steps"] == 2
    assert len(json.loads((out / "data" / "r1_sft.json").read_text())) >= 1
    board = (out / "leaderboard.md").read_text()
    for row in ("r0_sft_merged", "r1_sft_merged", "| io "):
        assert row in board
    assert "## r1_sft_eval vs r0_sft_eval" in board and "## r1_sft_eval vs baseline_io" in board
    assert "McNemar" in board and (out / "leaderboard.png").stat().st_size > 0
    assert manifest["last_invocation"]["overhead"] >= 1.0

    # The same command again: nothing to do.
    capfd.readouterr()
    again = Loop(parse_config(tiny(out))).execute()
    assert {n: s["key"] for n, s in again["stages"].items()} == {n: s["key"] for n, s in stages.items()}
    assert capfd.readouterr().err.count("skipped") == len(stages)

    # A changed field re-runs exactly what depends on it, and says which field changed.
    mixed = Loop(parse_config(tiny(out, mix_round0=True)))
    rerun = {s.name for s in mixed.stages if s.key != stages[s.name]["key"]}
    assert rerun == {"r1_filter", "r1_sft", "r1_sft_eval", "leaderboard"}
    fewer = Loop(parse_config(tiny(out, baselines=["none"]))).execute()
    err = capfd.readouterr().err
    assert "leaderboard: baselines changed: re-running it" in err and "baseline_io: no longer in the config" in err
    assert err.count("skipped") == len(stages) - 2
    assert "| io " not in (out / "leaderboard.md").read_text() and "baseline_io" not in fewer["stages"]


@pytest.mark.timeout(1800)
def test_sigkill_anywhere_then_rerun_ends_with_the_same_manifest(tmp_path):
    """SIGKILL at random moments (generation, a trainer's process, the manifest's write), rerun each time:
    the final manifest has every planned stage done with the planned key, and each episode is on disk once.
    The hf backend here: a restart loads it in seconds (vllm's engine would take a minute each time)."""
    out = tmp_path / "exp"
    # The lenient protocol: one generation per step (FireAct's, the Alpaca models' default, regenerates a text
    # without `Action: ` up to 5 times: most of a tiny loop's time).
    argv = tiny(out, backend="hf", baselines=["none"], train=["hotpotqa:train:0-2"], eval=["hotpotqa:dev:0-2"],
                save_steps=1, protocol="lenient")
    cmd = [sys.executable, "-m", "fireharness.loop", *argv]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log = open(tmp_path / "log.txt", "ab")
    rng = random.Random(18)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        time.sleep(rng.uniform(8, 40))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, check=True, timeout=1500)
    log.close()
    assert kills >= 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert 2 <= len(manifest["invocations"]) <= kills + 2  # a killed one too, once it reached its first stage
    assert all(i["cpu"] and i["wall_s"] >= 0 for i in manifest["invocations"])
    planned = Loop(parse_config(argv)).stages
    assert {n: (s["key"], s["status"]) for n, s in manifest["stages"].items()} == \
        {s.name: (s.key, "done") for s in planned}
    counts = episodes_once(out)
    assert counts["r1_sample_hotpotqa_train_0_2"] == 4 and counts["r0_sft_eval_hotpotqa_dev_0_2"] == 2
    runs = [json.loads(p.read_text()) for p in (out / "results").glob("*.json")]
    assert len(runs) == 3 and {r["protocol"] for r in runs} == {"lenient"}  # every generation under one loop
    assert not list(out.glob("adapters/*/checkpoint-*"))


def one_stage_loop(out: Path, run) -> Loop:
    """A loop of one stage running ``run``, its heartbeat every 50 ms."""
    from fireharness.loop.run import Stage

    loop = Loop(parse_config(tiny(out)))
    loop.heartbeat_s = 0.05
    loop.stages = [Stage("work", "generate", {}, run=run, key="k1")]
    return loop


def test_a_killed_stage_keeps_its_time(tmp_path):
    """A stage killed after hours (a session's end) keeps them: a heartbeat writes the running stage's seconds and
    the invocation's wall time into the manifest while it runs, and the rerun adds its own to them."""
    out = tmp_path / "exp"
    seen = {}

    def killed():
        time.sleep(0.6)
        seen.update(json.loads((out / "manifest.json").read_text()))
        raise KeyboardInterrupt  # the stage never finishes, as under SIGKILL

    with pytest.raises(KeyboardInterrupt):
        one_stage_loop(out, killed).execute()
    stage, invocation = seen["stages"]["work"], seen["invocations"][-1]
    assert stage["status"] == "running" and 0.4 < stage["seconds"] <= 0.6
    assert invocation["wall_s"] >= 0.4 and invocation["stage_work_s"]["work"] >= 0.4
    manifest = one_stage_loop(out, lambda: time.sleep(0.3)).execute()
    assert manifest["stages"]["work"]["status"] == "done" and manifest["stages"]["work"]["seconds"] >= 0.7
    assert len(manifest["invocations"]) == 2 and manifest["invocations"][0]["wall_s"] >= 0.4


def test_a_stopped_loop_does_not_count_the_pause_as_work(tmp_path):
    """`kill -STOP` lends a shared machine's cores to another job for minutes: the heartbeat, woken far later than
    due, counts that time as paused, not as the running stage's work nor in the loop's overhead."""
    def stopped():
        time.sleep(0.3)
        subprocess.Popen(["sh", "-c", f"sleep 1.8; kill -CONT {os.getpid()}"])
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGSTOP)  # this whole process, heartbeat and all, as `kill -STOP` from a shell
        time.sleep(0.3)

    manifest = one_stage_loop(tmp_path / "exp", stopped).execute()
    stage, invocation = manifest["stages"]["work"], manifest["invocations"][-1]
    assert 1.2 <= invocation["paused_s"] <= invocation["wall_s"] - 0.6  # the ~1.7 s stopped, less a beat
    assert 0.6 <= stage["seconds"] <= 1.2 and stage["work_seconds"] == stage["seconds"]
    assert manifest["last_invocation"]["overhead"] < 1.5  # (wall - paused) / work


def test_round0_adapter_is_round_0s_model_without_training(tmp_path):
    """A released adapter as round 0 (no teacher data): copied in as r0_sft and evaluated, nothing trained."""
    released = DATA_DIR / "adapters" / "smollm2-135m-fireact-multitask-lora"
    out = tmp_path / "exp"
    argv = tiny(out, backend="hf", baselines=["none"], eval=["hotpotqa:dev:0-2"], rounds=0, teacher_files=[],
                round0_adapter=released, dpo=True, protocol="lenient")
    manifest = Loop(parse_config(argv)).execute()
    assert list(manifest["stages"]) == ["r0_sft", "r0_sft_eval", "leaderboard"]  # no filter, no DPO: no data
    for f in released.iterdir():
        assert (out / "adapters" / "r0_sft" / f.name).read_bytes() == f.read_bytes()
    episodes = list(read_episodes(out / "trajs" / "r0_sft_eval_hotpotqa_dev_0_2.jsonl"))
    assert len(episodes) == 2 and {e.adapter for e in episodes} == {str(out.resolve() / "adapters" / "r0_sft")}
    assert manifest["stages"]["r0_sft"]["kind"] == "given_adapter"
    again = Loop(parse_config(argv)).execute()
    assert [i["stage_work_s"] for i in again["invocations"]] == [manifest["last_invocation"]["stage_work_s"], {}]


def test_the_committed_experiment_keeps_its_keys(monkeypatch):
    """results/self_training is resumed from a clone: a code change that changed its finished stages' keys would
    silently re-run hours of them. A stage's key holds every RunConfig field: a new generation.py field must be
    left out of it while at its default (as output_dir is), or this fails."""
    monkeypatch.chdir(ROOT)
    manifest = json.loads(Path("results/self_training/manifest.json").read_text())
    planned = {s.name: s.key for s in Loop(parse_config(["experiments/self_training.yaml"])).stages}
    done = {n: s["key"] for n, s in manifest["stages"].items() if s["status"] == "done"}
    assert "baseline_io" in done and {n: planned.get(n) for n in done} == done


def test_sft_init_previous_trains_the_last_rounds_final_model_further(tmp_path, monkeypatch):
    """Each round's SFT starts from the model that sampled its data (round 1 from r0_sft, as round 0 has no DPO
    here; round 2 from r1_dpo) and depends on it; the default trains a new adapter and keeps the keys it had."""
    argv = tiny(tmp_path / "exp", rounds=2, dpo=True, dpo_round0=False)
    fresh = {s.name: s for s in Loop(parse_config(argv)).stages}
    further = {s.name: s for s in Loop(parse_config(argv + ["--sft_init", "previous"])).stages}
    for r, previous in ((1, "r0_sft"), (2, "r1_dpo")):
        sft = further[f"r{r}_sft"]
        assert sft.params["peftpath"] == f"adapters/{previous}" and previous in sft.deps
        assert "peftpath" not in fresh[f"r{r}_sft"].params and fresh[f"r{r}_sft"].deps == [f"r{r}_filter"]
    assert {n for n in fresh if fresh[n].key != further[n].key} == \
        {"r1_sft", "r1_sft_eval", "r1_dpo", "r1_dpo_eval", "r2_sample", "r2_filter", "r2_sft", "r2_sft_eval", "r2_dpo",
         "r2_dpo_eval", "leaderboard"}
    # Every training stage's arguments are flags its trainer takes (no test here runs a DPO stage to its end).
    from finetune import dpo, sft
    from fireharness.loop.run import trainer_flags

    trainers = {"sft": (sft, sft.LoraArguments), "dpo": (dpo, dpo.DPOArguments)}
    trained = [s for s in [*fresh.values(), *further.values()] if s.kind in trainers]
    assert sorted({s.name for s in trained}) == ["r0_sft", "r1_dpo", "r1_sft", "r2_dpo", "r2_sft"]
    monkeypatch.chdir(tmp_path)  # the stages' paths are relative to the experiment dir; the trainers check adapters
    for stage in trained:
        if "peftpath" in stage.params:
            (tmp_path / stage.params["peftpath"]).mkdir(parents=True, exist_ok=True)
            (tmp_path / stage.params["peftpath"] / "adapter_config.json").write_text("{}")
        module, config = trainers[stage.kind]
        (args,) = module.parse_config([config], trainer_flags(stage.params))
        assert args.output_dir == f"adapters/{stage.name}" and args.save_steps == stage.params["save_steps"]


BAD = {
    "unknown task": ({"train": ["hotpotqa-x:train"]}, "train: 'hotpotqa-x:train': unknown task"),
    "unknown split": ({"eval": ["hotpotqa:dve:0-4"]}, "eval: 'hotpotqa:dve:0-4': unknown split"),
    "missing teacher file": ({"teacher_files": ["no/such/file.json:8"]}, "teacher_files: no/such/file.json:8: no such file"),
    "K < 1": ({"num_samples": 0}, "num_samples: 0"),
    "unknown sft_init": ({"sft_init": "last"}, "sft_init: 'last'; valid: base, previous"),
    "unknown protocol": ({"protocol": "fireac"}, "protocol: unknown protocol 'fireac'. Did you mean 'fireact'"),
    "rounds not a number": ({"rounds": "two"}, "--rounds: invalid int value: 'two'"),
    "unknown field": ({"round": 2}, "round: no such field (did you mean rounds?)"),
    "no round 0": ({"teacher_files": []}, "teacher_files: round 0 needs data to train on"),
    "mix without round 0 data": ({"teacher_files": [], "mix_round0": True,
                                  "round0_adapter": str(DATA_DIR / "adapters" / "smollm2-135m-fireact-multitask-lora")},
                                 "mix_round0: round 0 has no data to mix in"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_configs_stop_before_any_work(case, tmp_path, capsys):
    import yaml

    over, message = BAD[case]
    out = tmp_path / "exp"
    config = {"output_dir": str(out), "train": ["hotpotqa:train:0-4"], "eval": ["hotpotqa:dev:0-4"],
              "teacher_files": [f"{FIREACT_HOTPOTQA}:8"], **over}
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {message}"] or (len(err) == 1 and err[0].startswith(f"error: {message}")), err
    assert not out.exists()


def test_an_adapter_for_another_base_model_is_named(tmp_path, capsys):
    import torch

    adapter = tmp_path / "other"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"  # hidden size 64, not the embedded model's 576
    torch.save({f"{prefix}.lora_A.weight": torch.zeros(8, 64), f"{prefix}.lora_B.weight": torch.zeros(64, 8)},
               adapter / "adapter_model.bin")
    out = tmp_path / "exp"
    for field in ("teacher_adapter", "round0_adapter"):
        assert main(tiny(out, teacher_backend="vllm", **{field: str(adapter)})) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {field}: adapter") and "hidden size 64" in err[0]
        assert not out.exists()
    with pytest.raises(LoopConfigError, match="rounds"):
        parse_config(["--output_dir", str(out), "--rounds", "1.5"])
