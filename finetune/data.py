"""Training data for the fine-tuners: load a file, detect its format, tokenize with a loss mask.

Three formats, told apart by their rows, not by the file name:

* ``alpaca``: a JSON list (or JSON lines) of ``{"instruction", "input", "output"}``, FireAct's
  ``data/finetune/alpaca_format/*.json``. The model sees FireAct's alpaca-lora wrapper (``ALPACA_PROMPT``,
  the same text ``generation.py --alpaca_format`` shows it) followed by the output.
* ``gpt``: JSON lines of ``{"messages": [...]}`` (``gpt_format/*.jsonl``), rendered with the tokenizer's
  chat template.
* ``dpo``: JSON lines of ``{"prompt", "chosen", "rejected"}``, for ``finetune.dpo``.

Loss goes only on the agent's own text (Thought/Action lines, assistant turns): the instruction and
every observation carry label -100. The mask is made on characters and mapped to tokens through the
tokenizer's offsets, so it is exact to the token whatever the tokenizer merges.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

from methods.prompts import ALPACA_TEMPLATE

IGNORE_INDEX = -100

# FireAct's alpaca-lora `generate_prompt` (train time) is byte for byte its generation.py `prepare_prompt`
# (inference): one template, in methods/prompts.py, so that the two can never drift apart.
ALPACA_PROMPT = ALPACA_TEMPLATE
ALPACA_PROMPT_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                            "further context. Write a response that appropriately completes the request.\n\n"
                            "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")

FORMAT_KEYS = {
    "alpaca": {"instruction", "output"},
    "gpt": {"messages"},
    "dpo": {"prompt", "chosen", "rejected"},
}

# An observation runs from "Observation:" at the start of a line up to the next line the agent writes
# (Thought/Action/Reflection) or the end: observations may span lines (multiple-choice options...).
OBSERVATION_SPAN = re.compile(r"(?ms)^Observation:.*?(?=^(?:Thought|Action|Reflection)\b|\Z)")


class DataFormatError(ValueError):
    pass


def alpaca_prompt(row: dict) -> str:
    if row.get("input"):
        return ALPACA_PROMPT_WITH_INPUT.format(instruction=row["instruction"], input=row["input"])
    return ALPACA_PROMPT.format(instruction=row["instruction"])


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a JSON list or a JSON-lines file (either extension), with one clear error when neither."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data_path {path}: no such file (FireAct's data is under "
                                f"data/fireact/data/finetune/alpaca_format/ and gpt_format/)")
    if path.is_dir():
        raise DataFormatError(f"--data_path {path} is a directory; give a .json or .jsonl file")
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
        rows = rows if isinstance(rows, list) else [rows]
    except json.JSONDecodeError:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataFormatError(f"--data_path {path}: line {n} is not JSON ({e.msg}); expected a JSON "
                                      f"list (Alpaca) or JSON lines (GPT messages / DPO pairs)") from None
    if not rows:
        raise DataFormatError(f"--data_path {path}: the file holds no examples")
    return rows


def detect_format(rows: list[dict], source: str = "data") -> str:
    """'alpaca', 'gpt' or 'dpo' from the keys of the rows; every row must agree."""
    first = rows[0]
    if not isinstance(first, dict):
        raise DataFormatError(f"{source}: rows must be JSON objects, found {type(first).__name__}")
    for name, keys in FORMAT_KEYS.items():
        if keys <= first.keys():
            bad = next((i for i, r in enumerate(rows) if not (isinstance(r, dict) and keys <= r.keys())), None)
            if bad is not None:
                raise DataFormatError(f"{source}: row {bad} lacks {sorted(keys)} that row 0 has ({name} format)")
            return name
    raise DataFormatError(
        f"{source}: unknown data format, row 0 has keys {sorted(first.keys())}; expected Alpaca "
        f"{{instruction, input, output}}, GPT {{messages}} or DPO {{prompt, chosen, rejected}}")


def load_rows(path: str | Path, expect: Iterable[str] | None = None) -> tuple[str, list[dict]]:
    rows = read_rows(path)
    fmt = detect_format(rows, f"--data_path {path}")
    if expect is not None and fmt not in set(expect):
        raise DataFormatError(f"--data_path {path}: found {fmt} rows, but this trainer takes "
                              f"{' or '.join(sorted(expect))}")
    return fmt, rows


# ---------------------------------------------------------------- character-level agent spans

def alpaca_text_and_spans(row: dict) -> tuple[str, list[tuple[int, int]]]:
    """The training text and the character spans that carry loss: the output minus its observations."""
    prompt, output = alpaca_prompt(row), row["output"]
    start, end = len(prompt), len(prompt) + len(output)
    spans, cursor = [], start
    for m in OBSERVATION_SPAN.finditer(output):
        if m.start() + start > cursor:
            spans.append((cursor, m.start() + start))
        cursor = m.end() + start
    if cursor < end:
        spans.append((cursor, end))
    return prompt + output, spans


def chat_text_and_spans(row: dict, tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """Chat-template text; spans are the assistant turns (content and end-of-turn, so it learns to stop).

    Rendering each prefix (with the generation prompt) gives where an assistant turn starts, and the
    prefix through that turn where it ends; this needs a template whose renders extend each other
    (ChatML, Llama-2/3 ... do), and we check it rather than assume it.
    """
    messages = row["messages"]
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataFormatError("GPT-format data needs a tokenizer with a chat template; this one has none "
                              "(use Alpaca-format data instead)")
    render = lambda msgs, gen: tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
    text = render(messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(messages[:i], True), render(messages[: i + 1], False)
        if not (through.startswith(before) and text.startswith(through)):
            raise DataFormatError("the tokenizer's chat template does not render conversations as prefixes of "
                                  "each other, so assistant turns cannot be located; use Alpaca-format data")
        spans.append((len(before), len(through)))
    return text, spans


# ---------------------------------------------------------------- tokens and labels

def labels_from_spans(input_ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """A token is trained on iff every character it covers lies in an agent span (none leaks from an observation)."""
    labels = []
    for token_id, (a, b) in zip(input_ids, offsets):
        inside = b > a and any(s <= a and b <= e for s, e in spans)
        labels.append(token_id if inside else IGNORE_INDEX)
    return labels


def tokenize_example(row: dict, fmt: str, tokenizer, cutoff_len: int | None = None,
                     train_on_inputs: bool = False) -> dict:
    if fmt == "alpaca":
        text, spans = alpaca_text_and_spans(row)
        add_special = True  # BOS where the model uses one, as alpaca-lora's tokenizer call does
    elif fmt == "gpt":
        text, spans = chat_text_and_spans(row, tokenizer)
        add_special = False  # the template already wrote the special tokens
    else:
        raise DataFormatError(f"{fmt} rows are preference pairs: train them with finetune.dpo, not SFT")
    if train_on_inputs:
        spans = [(0, len(text))]
    enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    input_ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    labels = labels_from_spans(input_ids, offsets, spans)
    if fmt == "alpaca" and tokenizer.eos_token_id is not None and input_ids[-1] != tokenizer.eos_token_id:
        # alpaca-lora appends EOS and trains on it: the model learns to end the response.
        input_ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    if cutoff_len:
        input_ids, labels = input_ids[:cutoff_len], labels[:cutoff_len]
    return {"input_ids": input_ids, "labels": labels}


def build_sft_dataset(path: str | Path, tokenizer, cutoff_len: int | None = 512, max_examples: int | None = None,
                      train_on_inputs: bool = False):
    """A `datasets.Dataset` of input_ids/labels that TRL's SFTTrainer takes as already processed."""
    from datasets import Dataset

    fmt, rows = load_rows(path, expect=("alpaca", "gpt"))
    if max_examples:
        rows = rows[:max_examples]
    examples = [tokenize_example(r, fmt, tokenizer, cutoff_len, train_on_inputs) for r in rows]
    examples = [e for e in examples if any(l != IGNORE_INDEX for l in e["labels"])]
    if not examples:
        raise DataFormatError(f"--data_path {path}: no example keeps a trained token within cutoff_len={cutoff_len}")
    ds = Dataset.from_list(examples)
    ds.info.description = fmt
    return fmt, ds


def split_train_val(ds, val_set_size: float, seed: int = 42):
    """FireAct's --val_set_size: a count (>= 1) or a fraction (< 1, as its README's 0.01)."""
    if not val_set_size:
        return ds, None
    n_val = int(val_set_size) if val_set_size >= 1 else max(1, round(val_set_size * len(ds)))
    if n_val >= len(ds):
        raise DataFormatError(f"--val_set_size {val_set_size} leaves no training examples out of {len(ds)}")
    split = ds.train_test_split(test_size=n_val, shuffle=True, seed=seed)
    return split["train"], split["test"]


def count_trained_tokens(ds) -> int:
    return sum(sum(1 for l in labels if l != IGNORE_INDEX) for labels in ds["labels"])
