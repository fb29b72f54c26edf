"""LoRA / QLoRA fine-tuning of a language agent, on TRL's SFTTrainer and PEFT.

Takes FireAct's alpaca-lora flags (``finetune/llama_lora/finetune.py``), so its commands run unchanged::

    python -m finetune.sft --base_model smollm2-135m \\
        --data_path data/fireact/data/finetune/alpaca_format/hotpotqa.json \\
        --output_dir models/lora/hotpotqa --micro_batch_size 16 --num_epochs 30 --cutoff_len 512
    python -m finetune.sft --config finetune/configs/lora_smollm2.yaml   # same, from a file; flags override

Differences from alpaca-lora, all on purpose: loss only on the agent's Thought/Action text (alpaca-lora
trains on everything by default, observations included); padding-free batches (examples concatenated,
block-diagonal attention) instead of padding to the longest; bf16 autocast where the hardware has it;
``--load_in_4bit`` QLoRA (nf4). The output dir is a PEFT adapter (``adapter_model.safetensors``) that
``generation.py --add_lora --peftpath DIR`` loads.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from finetune.common import (check_output_dir, load_causal_lm, load_tokenizer, parse_config, resolve_base,
                             resolve_bf16, score_only_trained_tokens)
from finetune.data import build_sft_dataset, count_trained_tokens, split_train_val


@dataclass
class LoraArguments:
    # FireAct's names and defaults (alpaca-lora), except where noted.
    base_model: str = field(default="", metadata={"help": "model dir, hub id, or smollm2-135m (embedded)"})
    data_path: str = field(default="", metadata={"help": "Alpaca .json or GPT-messages .jsonl (detected)"})
    peftpath: Optional[str] = field(default=None, metadata={"help": "a LoRA adapter to train further (a previous "
                                                                    "round's model); its rank, alpha and modules "
                                                                    "stand, the lora_* flags are not used"})
    output_dir: str = field(default="./lora-alpaca")
    batch_size: int = field(default=128, metadata={"help": "examples per optimizer step"})
    micro_batch_size: int = field(default=4, metadata={"help": "examples per forward pass"})
    num_epochs: float = 3
    learning_rate: float = 3e-4
    cutoff_len: int = 512
    val_set_size: float = field(default=0, metadata={"help": "count (>=1) or fraction (<1); FireAct's default 2000 "
                                                              "exceeds most agent data sets, so 0 here"})
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"],
                                           metadata={"help": "e.g. q_proj v_proj, or FireAct's '[q_proj,v_proj]'"})
    train_on_inputs: bool = field(default=False, metadata={"help": "also train on prompt and observations "
                                                                   "(alpaca-lora's default; not ours)"})
    group_by_length: bool = field(default=False, metadata={"help": "length-grouped sampling (padding-free makes "
                                                                   "it unnecessary)"})
    # Ours.
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: nf4 base weights (bitsandbytes)"})
    load_in_8bit: bool = field(default=False, metadata={"help": "int8 base weights (bitsandbytes)"})
    bf16: str = field(default="auto", metadata={"help": "true/false/auto (auto: where the GPU/CPU computes bf16)"})
    padding_free: bool = field(default=True, metadata={"help": "concatenate a micro-batch, no padding"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (overrides epochs)"})
    max_examples: Optional[int] = field(default=None, metadata={"help": "use only the first N examples"})
    warmup_steps: int = field(default=0, metadata={"help": "alpaca-lora uses 100 (too many for short runs)"})
    lr_scheduler_type: str = "linear"
    logging_steps: int = 1
    save_strategy: str = field(default="no", metadata={"help": "checkpoints during training; the adapter is "
                                                               "always saved at the end"})
    save_steps: int = 200
    report_to: str = field(default="none", metadata={"help": "none, tensorboard, wandb ... (passed to TRL)"})
    seed: int = 42
    gradient_checkpointing: bool = False
    attn_implementation: str = field(default="auto", metadata={"help": "auto (CPU: sdpa_varlen, per-example causal "
                                                                       "SDPA; GPU: model default), sdpa, eager, "
                                                                       "flash_attention_2 ..."})
    resume_from_checkpoint: Optional[str] = None

    def __post_init__(self):
        # FireAct passes the list through python-fire as one string "[q_proj,v_proj]".
        modules = []
        for item in self.lora_target_modules:
            modules += [m.strip(" []'\"") for m in item.split(",") if m.strip(" []'\"")]
        self.lora_target_modules = modules
        if self.peftpath and not (Path(self.peftpath) / "adapter_config.json").is_file():
            raise SystemExit(f"error: --peftpath {self.peftpath}: no LoRA adapter there (no adapter_config.json)")
        if self.micro_batch_size < 1 or self.batch_size < self.micro_batch_size:
            raise SystemExit(f"error: --batch_size {self.batch_size} must be >= --micro_batch_size "
                             f"{self.micro_batch_size} >= 1")


def gradient_accumulation(batch_size: int, micro_batch_size: int) -> int:
    import os

    world = int(os.environ.get("WORLD_SIZE", 1))
    return max(1, batch_size // micro_batch_size // world)  # alpaca-lora's split of the batch over ranks


def sft_config(args, bf16: bool, *, output_dir: str, per_device: int, grad_accum: int, epochs: float,
               has_eval: bool, **extra):
    """TRL's SFTConfig for already-tokenized, already-truncated, padding-free data."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=output_dir,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        lr_scheduler_type=args.lr_scheduler_type,
        logging_steps=args.logging_steps,
        save_strategy=args.save_strategy,
        save_steps=args.save_steps,
        eval_strategy="epoch" if has_eval else "no",
        report_to=args.report_to,
        seed=args.seed,
        bf16=bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        padding_free=args.padding_free,
        max_length=None,  # data.py truncated to cutoff_len already (TRL demands None with padding-free)
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        dataset_kwargs={"skip_prepare_dataset": True},  # input_ids + labels are final
        remove_unused_columns=False,
        use_cpu=not _cuda(),
        **extra,
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def train(args: LoraArguments) -> dict:
    """Train a LoRA adapter into args.output_dir; returns a summary (also written as fireharness_train.json)."""
    from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training
    from trl import SFTTrainer

    from finetune.merge import check_adapter_fits

    output_dir = check_output_dir(args.output_dir)
    base = resolve_base(args.base_model)
    tokenizer = load_tokenizer(base)
    # Data before model: a bad file fails in a second, not after loading weights.
    fmt, dataset = build_sft_dataset(args.data_path, tokenizer, args.cutoff_len, args.max_examples,
                                     args.train_on_inputs)
    train_ds, val_ds = split_train_val(dataset, args.val_set_size, args.seed)
    bf16 = resolve_bf16(args.bf16)
    model = load_causal_lm(base, load_in_4bit=args.load_in_4bit, load_in_8bit=args.load_in_8bit, bf16=bf16,
                           attn_implementation=args.attn_implementation)
    if args.load_in_4bit or args.load_in_8bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
    peft_config = None
    if args.peftpath:  # continued training: the adapter's own weights and shape, trainable
        check_adapter_fits(model, Path(args.peftpath), args.base_model)
        model = PeftModel.from_pretrained(model, args.peftpath, is_trainable=True)
    else:
        peft_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                 target_modules=args.lora_target_modules, bias="none", task_type="CAUSAL_LM")
    config = sft_config(args, bf16, output_dir=str(output_dir), per_device=args.micro_batch_size,
                        grad_accum=gradient_accumulation(args.batch_size, args.micro_batch_size),
                        epochs=args.num_epochs, has_eval=val_ds is not None)
    trainer = SFTTrainer(model=model, args=config, train_dataset=train_ds, eval_dataset=val_ds,
                         processing_class=tokenizer, peft_config=peft_config)
    score_only_trained_tokens()
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    seconds = time.perf_counter() - start
    trainer.save_model(str(output_dir))  # adapter_model.safetensors + adapter_config.json + tokenizer
    return write_summary(output_dir, trainer, result, seconds, train_ds, fmt, base, bf16, asdict(args))


def write_summary(output_dir, trainer, result, seconds, train_ds, fmt, base, bf16, config) -> dict:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    steps = trainer.state.global_step
    # Trained tokens actually seen: an epoch's labelled tokens times the epochs the run covered.
    epochs = trainer.state.epoch or 0
    trained = count_trained_tokens(train_ds)
    summary = {
        "base_model": base, "data_format": fmt, "n_train": len(train_ds), "optimizer_steps": steps,
        "epochs": epochs, "losses": losses, "train_loss": result.training_loss, "train_seconds": seconds,
        "trained_tokens_per_epoch": trained, "trained_tokens_per_s": trained * epochs / seconds if seconds else None,
        "bf16": bf16, "config": config,
    }
    (output_dir / "fireharness_train.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def main(argv=None):
    (args,) = parse_config([LoraArguments], argv)
    summary = train(args)
    print(f"saved {args.output_dir}: {summary['optimizer_steps']} steps, loss {summary['losses'][:1]} -> "
          f"{summary['losses'][-1:]}, {summary['trained_tokens_per_s'] or 0:.1f} trained tokens/s")


if __name__ == "__main__":
    main()
