"""DPO on preference pairs, on TRL's DPOTrainer, starting from the base, an SFT adapter or an SFT model::

    python -m finetune.dpo --base_model smollm2-135m --peftpath models/lora/hotpotqa \\
        --data_path data/pairs.jsonl --output_dir models/dpo/hotpotqa --max_steps 100

Pairs are JSON lines ``{"prompt", "chosen", "rejected"}`` (TRL's format; ``finetune.convert`` writes them).
A plain-string prompt that is not already wrapped gets FireAct's Alpaca wrapper, the text the SFT
adapter was trained on; a list of messages is a conversation and goes through the chat template.
Trains LoRA: a new adapter (the base model is the reference), or the given one further (TRL keeps a frozen
copy of it as the reference adapter, "ref": the SFT model, as DPO means).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from finetune.common import check_output_dir, load_causal_lm, load_tokenizer, parse_config, resolve_base, resolve_bf16
from finetune.data import ALPACA_PROMPT, load_rows


@dataclass
class DPOArguments:
    base_model: str = field(default="", metadata={"help": "model dir (an SFT model too), hub id, or smollm2-135m"})
    peftpath: Optional[str] = field(default=None, metadata={"help": "SFT LoRA adapter to start from"})
    data_path: str = ""
    output_dir: str = ""
    micro_batch_size: int = 2
    batch_size: int = 8
    num_epochs: float = 1
    max_steps: int = -1
    learning_rate: float = 5e-6
    beta: float = 0.1
    cutoff_len: int = 512
    max_examples: Optional[int] = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    bf16: str = "auto"
    logging_steps: int = 1
    report_to: str = "none"
    seed: int = 42
    save_steps: int = field(default=0, metadata={"help": "checkpoint every this many steps (0: none)"})
    resume_from_checkpoint: Optional[str] = None


def wrap_prompt(prompt):
    if isinstance(prompt, str) and not prompt.startswith("Below is an instruction"):
        return ALPACA_PROMPT.format(instruction=prompt)
    return prompt


def load_pairs(path: str, max_examples: Optional[int] = None):
    from datasets import Dataset

    _, rows = load_rows(path, expect=("dpo",))
    rows = rows[:max_examples] if max_examples else rows
    return Dataset.from_list([{"prompt": wrap_prompt(r["prompt"]), "chosen": r["chosen"], "rejected": r["rejected"]}
                              for r in rows])


def load_trained_adapter(model, checkpoint: Path) -> None:
    """The trained adapter of a checkpoint into the model, before the Trainer resumes from it. A checkpoint of a
    given adapter holds two: the trained one at its root, TRL's reference copy in ``ref/``; transformers' Trainer
    (5.19), seeing an adapter subfolder, loads only the subfolders (transformers#30478), so a resumed run would
    go on from the untrained adapter with the optimizer state of the trained one, its reward margins at 0."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = checkpoint / "adapter_model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"error: --resume_from_checkpoint {checkpoint}: no adapter_model.safetensors in it")
    result = set_peft_model_state_dict(model, load_file(weights), adapter_name=model.active_adapter)
    if getattr(result, "unexpected_keys", None):
        raise SystemExit(f"error: --resume_from_checkpoint {checkpoint}: its adapter does not fit the model "
                         f"({len(result.unexpected_keys)} unexpected weights, e.g. {result.unexpected_keys[0]})")


def train(args: DPOArguments) -> dict:
    import torch
    from peft import LoraConfig, PeftModel
    from trl import DPOConfig, DPOTrainer

    from finetune.merge import check_adapter_fits

    output_dir = check_output_dir(args.output_dir)
    base = resolve_base(args.base_model)
    dataset = load_pairs(args.data_path, args.max_examples)  # before loading weights: bad files fail fast
    tokenizer = load_tokenizer(base)
    bf16 = resolve_bf16(args.bf16)
    model = load_causal_lm(base)
    peft_config = None
    if args.peftpath:
        check_adapter_fits(model, Path(args.peftpath), args.base_model)
        model = PeftModel.from_pretrained(model, args.peftpath, is_trainable=True)
    else:
        peft_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                 target_modules=args.lora_target_modules, bias="none", task_type="CAUSAL_LM")
    config = DPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=max(1, args.batch_size // args.micro_batch_size),
        num_train_epochs=args.num_epochs, max_steps=args.max_steps, learning_rate=args.learning_rate,
        beta=args.beta, max_length=args.cutoff_len, logging_steps=args.logging_steps, report_to=args.report_to,
        seed=args.seed, bf16=bf16, save_strategy="steps" if args.save_steps else "no", save_steps=args.save_steps or 500,
        use_cpu=not torch.cuda.is_available())
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    if args.resume_from_checkpoint and args.peftpath:
        load_trained_adapter(trainer.model, Path(args.resume_from_checkpoint))
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(str(output_dir))
    # TRL's frozen reference copy is saved beside the adapter (ref/); it is the given adapter, at --peftpath.
    shutil.rmtree(output_dir / "ref", ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {"optimizer_steps": trainer.state.global_step, "losses": losses, "train_loss": result.training_loss,
               "train_seconds": time.perf_counter() - start, "config": asdict(args)}
    (output_dir / "fireharness_train.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def main(argv=None):
    (args,) = parse_config([DPOArguments], argv)
    summary = train(args)
    print(f"saved {args.output_dir}: {summary['optimizer_steps']} DPO steps, losses {summary['losses']}")


if __name__ == "__main__":
    main()
