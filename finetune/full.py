"""Full fine-tuning (every weight) on TRL's SFTTrainer, with FireAct's llama_full flags.

FireAct's command (stanford_alpaca's train.py) runs unchanged, on one device or several::

    python -m finetune.full --model_name_or_path smollm2-135m \\
        --data_path data/fireact/data/finetune/alpaca_format/hotpotqa.json --output_dir models/full/hotpotqa \\
        --bf16 True --num_train_epochs 30 --per_device_train_batch_size 4 --gradient_accumulation_steps 8 \\
        --learning_rate 2e-5 --warmup_ratio 0.03 --lr_scheduler_type cosine --save_strategy no
    accelerate launch --config_file finetune/configs/fsdp.yaml -m finetune.full ...   # several GPUs (FSDP)

Every Hugging Face ``TrainingArguments`` flag is accepted (the training dataclass is TRL's ``SFTConfig``,
a subclass), and so is ``--config file.yaml``. The output dir is a model dir with its tokenizer, which
``generation.py --modelpath DIR`` and ``AutoModelForCausalLM.from_pretrained`` load.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from trl import SFTConfig

from finetune.common import (check_output_dir, load_causal_lm, load_tokenizer, parse_config, resolve_base,
                             score_only_trained_tokens)
from finetune.data import build_sft_dataset, split_train_val


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default="", metadata={"help": "model dir, hub id, or smollm2-135m (embedded)"})


@dataclass
class DataArguments:
    data_path: str = field(default="", metadata={"help": "Alpaca .json or GPT-messages .jsonl (detected)"})
    model_max_length: int = field(default=512, metadata={"help": "FireAct's cutoff (tokens per example)"})
    val_set_size: float = 0
    max_examples: Optional[int] = None
    train_on_inputs: bool = False


@dataclass
class FullTrainingArguments(SFTConfig):
    # Defaults that fit pre-tokenized padding-free data; FireAct's own flags override the rest.
    output_dir: str = field(default="")
    padding_free: bool = field(default=True)
    max_length: Optional[int] = field(default=None, metadata={"help": "unused: see --model_max_length"})
    remove_unused_columns: bool = field(default=False)
    save_strategy: str = field(default="no")
    report_to: str = field(default="none")
    logging_steps: float = field(default=1)
    dataset_kwargs: Optional[dict] = field(default_factory=lambda: {"skip_prepare_dataset": True})
    # FireAct's full fine-tune passes --warmup_ratio; transformers 5 dropped it for a float --warmup_steps.
    warmup_ratio: Optional[float] = field(default=None, metadata={"help": "warmup as a fraction of the steps "
                                                                          "(same as a float --warmup_steps < 1)"})

    def __post_init__(self):
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio {self.warmup_ratio}: give a fraction in [0, 1)")
            self.warmup_steps = self.warmup_ratio
        super().__post_init__()


def train(model_args: ModelArguments, data_args: DataArguments, training_args: FullTrainingArguments) -> dict:
    from trl import SFTTrainer

    from finetune.sft import write_summary

    output_dir = check_output_dir(training_args.output_dir)
    base = resolve_base(model_args.model_name_or_path, "--model_name_or_path")
    tokenizer = load_tokenizer(base)
    fmt, dataset = build_sft_dataset(data_args.data_path, tokenizer, data_args.model_max_length,
                                     data_args.max_examples, data_args.train_on_inputs)
    train_ds, val_ds = split_train_val(dataset, data_args.val_set_size, training_args.seed)
    model = load_causal_lm(base)
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=val_ds,
                         processing_class=tokenizer)
    score_only_trained_tokens()
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    seconds = time.perf_counter() - start
    trainer.model.config.use_cache = True  # off for training only; generation wants it
    trainer.save_model(str(output_dir))  # weights (safetensors), config, tokenizer; FSDP-aware
    if trainer.args.should_save:
        trainer.save_state()
    return write_summary(output_dir, trainer, result, seconds, train_ds, fmt, base, training_args.bf16,
                         {**asdict(model_args), **asdict(data_args)})


def main(argv=None):
    model_args, data_args, training_args = parse_config([ModelArguments, DataArguments, FullTrainingArguments], argv)
    summary = train(model_args, data_args, training_args)
    print(f"saved {training_args.output_dir}: {summary['optimizer_steps']} steps, loss {summary['losses'][:1]} -> "
          f"{summary['losses'][-1:]}")


if __name__ == "__main__":
    main()
