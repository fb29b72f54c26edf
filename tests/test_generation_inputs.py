"""Bad input to generation.py: one clear line naming the problem, exit code 2, before any work,
and nothing already written is lost."""
import json

import pytest

import generation


def run(args, capsys, tmp_path):
    code = generation.main(args + ["--output_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    return code, [line for line in err if line.startswith("error:")]


CASES = [
    (["--task", "hotpot"], r"unknown task 'hotpot'. Did you mean 'hotpotqa'"),
    (["--task", "hotpotqa", "--task_split", "distractor_dev"], r"Did you mean 'distractor-dev'"),
    (["--task", "hotpotqa", "--method", "recat"], r"unknown method 'recat'. Did you mean 'react'"),
    (["--task", "hotpotqa", "--tool", "wikipeda"], r"unknown tool 'wikipeda'. Did you mean 'wikipedia'"),
    (["--task", "hotpotqa", "--backend", "vlm"], r"unknown backend 'vlm'. Did you mean 'vllm'"),
    (["--task", "hotpotqa", "--task_split", "test", "--evaluate"], r"hotpotqa test has no gold answers; drop --evaluate"),
    (["--task", "bamboogle", "--task_split", "test", "--task_start_index", "200", "--task_end_index", "300"],
     r"selects no question of bamboogle test \(125 questions\)"),
    (["--task", "hotpotqa", "--backend", "hf", "--modelpath", "/no/such/model"], r"--modelpath /no/such/model: no such directory"),
    (["--task", "hotpotqa", "--add_lora", "--peftpath", "/no/such/adapter"], r"--peftpath /no/such/adapter: no such adapter directory"),
    (["--task", "hotpotqa", "--add_lora"], r"--add_lora needs --peftpath"),
    (["--task", "hotpotqa", "--promptpath", "react_hotpot"], r"unknown prompt 'react_hotpot'"),
    (["--task", "hotpotqa", "--search-fallback", "bing"], r"the only fallback is 'wikipedia'"),
    (["--task", "hotpotqa", "--online", "--offline"], r"--online and --offline contradict"),
]


@pytest.mark.parametrize("args,message", CASES)
def test_bad_input_is_one_clear_line(args, message, capsys, tmp_path):
    code, errors = run(args, capsys, tmp_path)
    assert code == 2
    assert len(errors) == 1
    assert __import__("re").search(message, errors[0]), errors[0]
    assert not list((tmp_path / "trajs").glob("*.jsonl"))


def test_missing_serpapi_key_when_online(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    code, errors = run(["--task", "hotpotqa", "--tool", "google", "--online", "--task_end_index", "2"], capsys, tmp_path)
    assert code == 2 and "SERPAPI_API_KEY" in errors[0]


def test_missing_openai_key(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, errors = run(["--task", "hotpotqa", "--backend", "gpt-4", "--task_end_index", "2"], capsys, tmp_path)
    assert code == 2 and "OPENAI_API_KEY" in errors[0]


def test_output_dir_not_writable(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = generation.main(["--task", "hotpotqa", "--output_dir", str(blocker / "out")])
    err = capsys.readouterr().err
    assert code == 2 and f"--output_dir {blocker / 'out'}: cannot write" in err


def test_corrupt_data_file(capsys, tmp_path, monkeypatch):
    import tasks.base
    import tasks.bamboogle
    root = tmp_path / "data"
    (root / "bamboogle").mkdir(parents=True)
    (root / "bamboogle" / "test.csv").write_text("Quest,Ans\nwho?,me\n")
    monkeypatch.setattr(tasks.bamboogle, "FIREACT_DATA", root)
    code, errors = run(["--task", "bamboogle", "--task_split", "test"], capsys, tmp_path)
    assert code == 2 and "lacks the Question/Answer columns" in errors[0]


def test_resume_refuses_a_foreign_trajectory_file(capsys, tmp_path):
    (tmp_path / "trajs").mkdir()
    line = {"task": "mmlu", "split": "test", "index": 0, "question": "q", "method": "io", "format": "text"}
    (tmp_path / "trajs" / "mine.jsonl").write_text(json.dumps(line) + "\n")
    code, errors = run(["--task", "hotpotqa", "--run_name", "mine"], capsys, tmp_path)
    assert code == 2 and "holds episodes of another run" in errors[0]
    assert (tmp_path / "trajs" / "mine.jsonl").read_text() == json.dumps(line) + "\n"  # nothing lost


def test_adapter_for_another_base_model(capsys, tmp_path):
    import torch
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                                              "target_modules": ["q_proj"]}))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"  # made for hidden size 64, not 576
    torch.save({f"{prefix}.lora_A.weight": torch.zeros(8, 64), f"{prefix}.lora_B.weight": torch.zeros(64, 8)},
               adapter / "adapter_model.bin")
    code, errors = run(["--task", "hotpotqa", "--backend", "hf", "--add_lora", "--peftpath", str(adapter)], capsys, tmp_path)
    assert code == 2 and len(errors) == 1
    assert "was made for a model with hidden size 64" in errors[0] and "576" in errors[0]
