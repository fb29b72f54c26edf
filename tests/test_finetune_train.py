"""LoRA, QLoRA, full and DPO runs of a few steps on FireAct's hotpotqa.json; merge; padding-free numerics.

Kept small for CI: the two shortest trajectories, cutoff 256, a handful of optimizer steps each. The
20-step / 64-example runs of the issue are in benchmarks/ and the README (too slow for CI on 2 cores).
"""
import json
import math
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from fireharness.paths import DATA_DIR

ALPACA = DATA_DIR / "fireact/data/finetune/alpaca_format/hotpotqa.json"


@pytest.fixture(scope="module")
def base():
    from models.resolve import resolve_model_path

    return resolve_model_path("smollm2-135m")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    rows = json.loads(ALPACA.read_text())
    shortest = sorted(rows[:64], key=lambda r: len(r["instruction"]) + len(r["output"]))[:2]
    path = tmp_path_factory.mktemp("data") / "hotpotqa_tiny.json"
    path.write_text(json.dumps(shortest))
    return path


def lora_flags(data, out, *extra):
    return ["--base_model", "smollm2-135m", "--data_path", str(data), "--output_dir", str(out),
            "--micro_batch_size", "2", "--batch_size", "2", "--num_epochs", "100", "--cutoff_len", "256",
            "--learning_rate", "3e-3", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0.0",
            "--lora_target_modules", "[q_proj,v_proj]", *extra]


@pytest.fixture(scope="module")
def lora_adapter(tiny_data, tmp_path_factory):
    from finetune import sft

    out = tmp_path_factory.mktemp("lora")
    (args,) = sft.parse_config([sft.LoraArguments], lora_flags(tiny_data, out, "--max_steps", "5"))
    assert args.lora_target_modules == ["q_proj", "v_proj"]  # FireAct's fire-style list parsed
    summary = sft.train(args)
    return out, summary


def greedy(model, tokenizer, prompt, n=24):
    enc = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:])


def test_padding_free_batch_equals_separate_examples(base, tiny_data):
    """Concatenated examples must not attend to each other: same loss as one at a time."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from finetune.common import load_causal_lm, load_tokenizer
    from finetune.data import build_sft_dataset

    tokenizer = load_tokenizer(base)
    _, ds = build_sft_dataset(tiny_data, tokenizer, 256)
    model = load_causal_lm(base).eval()
    examples = [ds[i] for i in range(len(ds))]
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(examples)
    with torch.no_grad():
        packed = model(**batch).loss.item()
        total = n = 0
        for e in examples:
            labels = torch.tensor([e["labels"]])
            k = (labels[:, 1:] != -100).sum().item()
            total += model(input_ids=torch.tensor([e["input_ids"]]), labels=labels).loss.item() * k
            n += k
    assert packed == pytest.approx(total / n, rel=1e-4)


def test_varlen_attention_equals_the_block_diagonal_mask(base):
    """sdpa_varlen (per-example causal SDPA, the CPU default) against transformers' sdpa with its
    block-diagonal mask: same loss and gradients on a packed row; a padded batch falls through to sdpa."""
    from finetune.attention import packed_example_bounds
    from finetune.common import load_causal_lm

    lens = [37, 120, 5, 64]
    ids = torch.randint(0, 49000, (1, sum(lens)), generator=torch.Generator().manual_seed(0))
    positions = torch.cat([torch.arange(n) for n in lens])[None]
    assert packed_example_bounds(positions) == [(0, 37), (37, 157), (157, 162), (162, 226)]
    assert packed_example_bounds(torch.arange(9)[None]) is None  # one example
    assert packed_example_bounds(torch.tensor([[1, 1, 0, 1, 2]])) is None  # left padding, not packing
    results = {}
    for attn in ("sdpa", "sdpa_varlen"):
        model = load_causal_lm(base, attn_implementation=attn)
        assert model.config._attn_implementation == attn
        out = model(input_ids=ids, position_ids=positions, labels=ids)
        out.loss.backward()
        padded = model(input_ids=ids[:, :40].repeat(2, 1), attention_mask=torch.tensor([[1] * 40, [0] * 10 + [1] * 30]))
        results[attn] = out.loss.item(), model.model.layers[3].self_attn.q_proj.weight.grad, padded.logits.detach()
    (loss_a, grad_a, pad_a), (loss_b, grad_b, pad_b) = results.values()
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    assert ((grad_a - grad_b).norm() / grad_a.norm()).item() < 1e-4
    assert torch.allclose(pad_a, pad_b, atol=1e-4)


def test_lm_head_on_trained_tokens_only_keeps_loss_and_gradients(base, tiny_data, monkeypatch):
    """finetune.common.score_only_trained_tokens: TRL's fused head scores only the labelled positions on
    CPU, with the loss, metrics and gradients of scoring every position."""
    import trl.trainer.utils as trl_utils
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from finetune.common import load_causal_lm, load_tokenizer, score_only_trained_tokens
    from finetune.data import build_sft_dataset

    tokenizer = load_tokenizer(base)
    _, ds = build_sft_dataset(tiny_data, tokenizer, 256)
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(
        [ds[i] for i in range(len(ds))])
    labels = batch["labels"][:, 1:]
    assert 0 < (labels != -100).sum() < labels.numel()  # a prompt part to skip
    model = load_causal_lm(base)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    assert not trl_utils._use_triton(torch.device("cpu"))  # TRL alone: every position on CPU
    results = []
    for switch in (False, True):
        if switch:
            monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton)  # undone after the test
            score_only_trained_tokens()
        model.zero_grad()
        out = model(**batch, fused_lm_head=True)
        out.loss.backward()
        results.append((out.loss.item(), out.entropy.sum().item(), out.is_top1.sum().item(),
                        model.model.layers[3].self_attn.q_proj.weight.grad.clone()))
    (loss_a, ent_a, top_a, grad_a), (loss_b, ent_b, top_b, grad_b) = results
    assert trl_utils._use_triton(torch.device("cpu"))
    assert loss_b == pytest.approx(loss_a, rel=1e-5) and ent_b == pytest.approx(ent_a, rel=1e-4) and top_a == top_b
    assert ((grad_a - grad_b).norm() / grad_a.norm()).item() < 1e-4


def test_lora_loss_falls_and_adapter_changes_greedy_output(lora_adapter, base, tiny_data):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.data import alpaca_prompt

    out, summary = lora_adapter
    assert summary["optimizer_steps"] == 5
    assert summary["losses"][-1] < summary["losses"][0]
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(out)
    # A trained prompt: the base model echoes the question, the adapter has learnt to start a Thought.
    prompt = alpaca_prompt(json.loads(tiny_data.read_text())[0])
    model = AutoModelForCausalLM.from_pretrained(base)
    before = greedy(model, tokenizer, prompt)
    tuned = PeftModel.from_pretrained(model, str(out))
    assert greedy(tuned, tokenizer, prompt) != before


def test_sft_trains_a_given_adapter_further(lora_adapter, tiny_data, tmp_path):
    """--peftpath: the loop's sft_init: previous. Training starts from the adapter's weights (its first loss is
    where the adapter's run ended, not where a fresh LoRA starts) and keeps its shape (r 8, not --lora_r 4)."""
    from finetune import sft

    adapter, fresh = lora_adapter
    (args,) = sft.parse_config([sft.LoraArguments], lora_flags(tiny_data, tmp_path, "--max_steps", "1",
                                                               "--peftpath", str(adapter), "--lora_r", "4"))
    summary = sft.train(args)
    assert summary["losses"][0] < fresh["losses"][0] - 0.3 and summary["losses"][0] <= fresh["losses"][-1] + 0.05
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == 8
    with pytest.raises(SystemExit, match="--peftpath .*: no LoRA adapter there"):
        sft.parse_config([sft.LoraArguments], lora_flags(tiny_data, tmp_path, "--peftpath", str(tmp_path / "none")))


def test_qlora_4bit_loss_falls(tiny_data, tmp_path):
    from finetune import sft

    (args,) = sft.parse_config([sft.LoraArguments], lora_flags(tiny_data, tmp_path, "--max_steps", "4",
                                                               "--load_in_4bit"))
    summary = sft.train(args)
    assert summary["losses"][-1] < summary["losses"][0]
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 8 and (tmp_path / "adapter_model.safetensors").exists()


def test_merge_matches_adapter_and_rejects_a_foreign_adapter(lora_adapter, base, tmp_path, tiny_data):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from finetune.data import alpaca_prompt
    from finetune.merge import AdapterMismatchError, main as merge_main, merge

    adapter, _ = lora_adapter
    merged_dir = merge("smollm2-135m", str(adapter), str(tmp_path / "merged"))
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    prompt = alpaca_prompt(json.loads(tiny_data.read_text())[0])
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert getattr(merged.config, "quantization_config", None) is None
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))
    assert greedy(merged, tokenizer, prompt) == greedy(tuned, tokenizer, prompt)

    # An adapter trained on another (tiny, random) llama: a clear error naming the mismatch.
    other = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=128)
    foreign = get_peft_model(AutoModelForCausalLM.from_config(other),
                             LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    foreign.save_pretrained(tmp_path / "foreign")
    with pytest.raises(AdapterMismatchError, match="does not fit base model smollm2-135m"):
        merge("smollm2-135m", str(tmp_path / "foreign"), str(tmp_path / "never"))
    with pytest.raises(SystemExit, match="error: adapter .* does not fit"):
        merge_main(["--base_model", "smollm2-135m", "--peftpath", str(tmp_path / "foreign"),
                    "--output_dir", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()


def test_full_finetune_saves_a_loadable_model(tiny_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune import full

    full.main(["--model_name_or_path", "smollm2-135m", "--data_path", str(tiny_data), "--output_dir", str(tmp_path),
               "--model_max_length", "128", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
               "--max_steps", "2", "--learning_rate", "1e-5", "--warmup_ratio", "0.03", "--lr_scheduler_type", "cosine",
               "--bf16", "False", "--save_strategy", "no", "--num_train_epochs", "1"])
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert model.config.use_cache and AutoTokenizer.from_pretrained(tmp_path).eos_token == "<|im_end|>"
    summary = json.loads((tmp_path / "fireharness_train.json").read_text())
    assert summary["optimizer_steps"] == 2
    # The saved dir is what generation.py --modelpath takes: one question, one step, on the hf backend.
    import generation
    from fireharness.records import read_episodes

    run = generation.Run(generation.parse_args([
        "--task", "hotpotqa", "--task_split", "dev", "--task_end_index", "1", "--backend", "hf", "--modelpath",
        str(tmp_path), "--max_steps", "1", "--max_tokens", "16", "--evaluate", "--output_dir", str(tmp_path / "gen")]))
    result = run.execute()
    (episode,) = read_episodes(run.trajs_path)
    assert result["model"] == str(tmp_path) and episode.model == str(tmp_path) and episode.tokens["generated"] > 0


def dpo_pairs(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for r in json.loads(ALPACA.read_text())[:n]:
            good = r["output"].split("\nObservation:")[0]
            f.write(json.dumps({"prompt": r["instruction"], "chosen": good,
                                "rejected": "Thought: I will guess.\nAction: finish[no idea]"}) + "\n")
    return path


def dpo_args(adapter, pairs, out, *extra):
    from finetune import dpo

    (args,) = dpo.parse_config([dpo.DPOArguments], [
        "--base_model", "smollm2-135m", "--peftpath", str(adapter), "--data_path", str(pairs),
        "--output_dir", str(out), "--micro_batch_size", "2", "--batch_size", "2", "--max_steps", "2",
        "--cutoff_len", "192", "--learning_rate", "1e-4", *extra])
    return args


def test_dpo_trains_the_sft_adapter_and_a_resumed_run_ends_where_an_unbroken_one_does(lora_adapter, tmp_path):
    """The loop resumes a killed DPO stage from its last checkpoint (a session's end cuts hours of it). A kill
    after step 1 leaves checkpoint-1 and nothing after; the rerun must train the given adapter (not TRL's frozen
    reference copy of it) on from there, to the unbroken run's weights and losses."""
    from safetensors.torch import load_file

    from finetune import dpo

    adapter, _ = lora_adapter
    pairs = dpo_pairs(tmp_path / "pairs.jsonl", 4)
    unbroken, killed = tmp_path / "unbroken", tmp_path / "killed"
    summary = dpo.train(dpo_args(adapter, pairs, unbroken, "--save_steps", "1"))
    assert summary["optimizer_steps"] == 2 and len(summary["losses"]) == 2
    assert summary["losses"][0] == pytest.approx(math.log(2), abs=1e-4)  # the reference is the SFT adapter itself
    assert {p.name for p in unbroken.glob("*.safetensors")} == {"adapter_model.safetensors"}
    assert not (unbroken / "ref").exists()  # TRL's reference copy is the given adapter: not saved again
    killed.mkdir()
    shutil.copytree(unbroken / "checkpoint-1", killed / "checkpoint-1")
    resumed = dpo.train(dpo_args(adapter, pairs, killed, "--save_steps", "1",
                                 "--resume_from_checkpoint", str(killed / "checkpoint-1")))
    # Without loading the checkpoint's trained adapter, step 2 starts from the given one: its loss is log 2 again.
    assert resumed["optimizer_steps"] == 2 and resumed["losses"] == pytest.approx(summary["losses"], rel=1e-4)
    a, b = (load_file(d / "adapter_model.safetensors") for d in (unbroken, killed))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    start = load_file(adapter / "adapter_model.safetensors")
    assert any(not torch.equal(start[k], b[k]) for k in b if k in start)  # it trained
