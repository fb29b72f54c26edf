"""Loss mask, format detection and bad inputs of finetune.data (tokenizer only: fast)."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from fireharness.paths import DATA_DIR
from finetune.data import (ALPACA_PROMPT, IGNORE_INDEX, DataFormatError, build_sft_dataset, load_rows,
                           tokenize_example)

ALPACA = DATA_DIR / "fireact/data/finetune/alpaca_format/hotpotqa.json"
GPT = DATA_DIR / "fireact/data/finetune/gpt_format/hotpotqa.jsonl"


@pytest.fixture(scope="module")
def tokenizer():
    from finetune.common import load_tokenizer
    from models.resolve import resolve_model_path

    return load_tokenizer(resolve_model_path("smollm2-135m"))


def trained_and_masked(example, tokenizer):
    ids, labels = example["input_ids"], example["labels"]
    trained = tokenizer.decode([i for i, l in zip(ids, labels) if l != IGNORE_INDEX])
    masked = tokenizer.decode([i for i, l in zip(ids, labels) if l == IGNORE_INDEX])
    return trained, masked


def test_alpaca_loss_only_on_thoughts_and_actions(tokenizer):
    fmt, rows = load_rows(ALPACA)
    assert fmt == "alpaca"
    row = rows[0]
    example = tokenize_example(row, fmt, tokenizer)
    trained, masked = trained_and_masked(example, tokenizer)
    agent = "".join(line + "\n" for line in row["output"].splitlines()
                    if line.startswith(("Thought:", "Action:")))
    # Exactly the agent's lines (and the EOS that ends the response) are trained on.
    assert trained == agent + tokenizer.eos_token
    assert "Observation" not in trained and "Badr Hari (born" not in trained
    # The prompt (FireAct's wrapper + question) and every observation line carry -100.
    assert masked.startswith(ALPACA_PROMPT.format(instruction=row["instruction"]))
    assert "Observation: Badr Hari (born 8 December 1984)" in masked
    assert masked.rstrip().endswith("Observation: Episode finished, reward = True")
    # the first response token is the first labelled one: the prompt boundary is token-exact
    prompt_len = len(tokenizer(ALPACA_PROMPT.format(instruction=row["instruction"]))["input_ids"])
    assert all(l == IGNORE_INDEX for l in example["labels"][:prompt_len])
    assert example["labels"][prompt_len] != IGNORE_INDEX


def test_gpt_format_trains_assistant_turns_only(tokenizer):
    fmt, rows = load_rows(GPT)
    assert fmt == "gpt"
    row = rows[0]
    trained, masked = trained_and_masked(tokenize_example(row, fmt, tokenizer), tokenizer)
    for message in row["messages"]:
        assert message["content"] in (trained if message["role"] == "assistant" else masked)
        if message["role"] == "user":
            assert message["content"] not in trained
    assert trained.count(tokenizer.eos_token) == sum(m["role"] == "assistant" for m in row["messages"])


def test_train_on_inputs_and_cutoff(tokenizer):
    fmt, rows = load_rows(ALPACA)
    full = tokenize_example(rows[0], fmt, tokenizer, train_on_inputs=True)
    assert sum(l == IGNORE_INDEX for l in full["labels"]) <= 1  # only a token with no characters, if any
    short = tokenize_example(rows[0], fmt, tokenizer, cutoff_len=50)
    assert len(short["input_ids"]) == 50


def test_format_detection_and_bad_inputs(tmp_path, tokenizer):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    assert load_rows(pairs)[0] == "dpo"
    with pytest.raises(DataFormatError, match="dpo rows, but this trainer takes alpaca or gpt"):
        build_sft_dataset(pairs, tokenizer)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"question": "q", "answer": "a"}]))
    with pytest.raises(DataFormatError, match=r"unknown data format, row 0 has keys \['answer', 'question'\]"):
        load_rows(unknown)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_rows(tmp_path / "missing.json")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": []}\n{not json\n')
    with pytest.raises(DataFormatError, match="line 2 is not JSON"):
        load_rows(broken)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps({"messages": []}) + "\n" + json.dumps({"instruction": "x", "output": "y"}) + "\n")
    with pytest.raises(DataFormatError, match="row 1 lacks"):
        load_rows(mixed)


def test_cli_fails_before_loading_the_model(tmp_path):
    from finetune import sft

    with pytest.raises(FileNotFoundError, match="--data_path .*missing.json: no such file"):
        sft.main(["--base_model", "smollm2-135m", "--data_path", str(tmp_path / "missing.json"),
                  "--output_dir", str(tmp_path / "out")])
