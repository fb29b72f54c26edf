"""The loop's configuration: one dataclass, read from a YAML file with flags overriding it (as the trainers
and TRL take theirs), checked before any work: a bad field stops the loop with one line naming it."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional


class LoopConfigError(ValueError):
    """A bad config field: the message names it."""


@dataclass
class LoopConfig:
    output_dir: str = field(default="", metadata={"help": "the experiment directory (manifest, trajs/, data/, adapters/, results/)"})
    base_model: str = field(default="smollm2-135m", metadata={"help": "model every round fine-tunes (dir, hub id, smollm2-135m)"})
    # --- questions ------------------------------------------------------------------------------
    train: list[str] = field(default_factory=lambda: ["hotpotqa:train"],
                             metadata={"help": "questions the model samples: task:split[:start-end], one or more"})
    eval: list[str] = field(default_factory=lambda: ["hotpotqa:distractor-dev:0-500"],
                            metadata={"help": "held-out questions, greedy: task:split[:start-end], one or more"})
    method: str = field(default="react", metadata={"help": "the agent's method (react, act ...)"})
    tool: str = field(default="wikipedia", metadata={"help": "tool of sampling and evaluation (offline)"})
    search_fallback: Optional[str] = field(default=None, metadata={"help": "google: answer cache misses from the offline Wikipedia index"})
    max_steps: int = field(default=8, metadata={"help": "steps per episode"})
    max_tokens: int = field(default=256, metadata={"help": "tokens per step"})
    protocol: Optional[str] = field(default=None, metadata={"help": "agent loop of every generation run: react, fireact, lenient (methods/protocols); default: each prompt family's seed's. One protocol makes every row of the leaderboard comparable"})
    baselines: list[str] = field(default_factory=lambda: ["io", "cot", "react"],
                                 metadata={"help": "prompted methods evaluated once on the eval questions ('none': none)"})
    # --- round 0: a teacher's trajectories, or files --------------------------------------------
    teacher_files: list[str] = field(default_factory=list, metadata={"help": "trajectory / fine-tuning files (FireAct's too), FILE[:N|:RATIO]"})
    teacher_backend: str = field(default="", metadata={"help": "run a teacher on the train questions: vllm, hf, openai, gpt-4 ... ('': none)"})
    teacher_model: str = field(default="", metadata={"help": "teacher --modelpath (local) or model name (openai); '': base_model"})
    teacher_base_url: Optional[str] = field(default=None, metadata={"help": "teacher's OpenAI-compatible server"})
    teacher_adapter: str = field(default="", metadata={"help": "teacher's LoRA adapter dir (on base_model)"})
    teacher_method: str = field(default="", metadata={"help": "teacher's method ('': method)"})
    teacher_format: str = field(default="text", metadata={"help": "teacher's prompt: text (few-shot), chat, alpaca"})
    round0_adapter: str = field(default="", metadata={"help": "round 0's model: this LoRA adapter dir on base_model (e.g. data/adapters/smollm2-135m-fireact-multitask-lora), not one trained here; round 0's data still feeds mix_round0"})
    # --- rounds ---------------------------------------------------------------------------------
    rounds: int = field(default=2, metadata={"help": "self-training rounds after round 0"})
    num_samples: int = field(default=8, metadata={"help": "K samples per train question"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (evaluation is greedy)"})
    mix_round0: bool = field(default=False, metadata={"help": "rounds >= 1 also train on round 0's data"})
    # --- filter ---------------------------------------------------------------------------------
    keep_failed: bool = field(default=False, metadata={"help": "keep episodes with EM 0 (FireAct kept only successes)"})
    round0_keep_failed: bool = field(default=False, metadata={"help": "round 0 keeps them (FireAct's released sets hold 45 of 2,063)"})
    min_f1: Optional[float] = field(default=None, metadata={"help": "also require F1 >= this (Araft: 1.0)"})
    filter_max_steps: Optional[int] = field(default=None, metadata={"help": "drop episodes longer than this"})
    drop_tool_errors: bool = field(default=False, metadata={"help": "drop episodes with a tool error"})
    dedup: str = field(default="trajectory", metadata={"help": "trajectory (distinct successes kept), question, none"})
    # --- training (each in its own process) -----------------------------------------------------
    sft: str = field(default="lora", metadata={"help": "lora or qlora (4-bit base)"})
    sft_init: str = field(default="base", metadata={"help": "rounds >= 1 train a new LoRA on the base model (base: ReST-EM, STaR) or train the last round's adapter further (previous), on that round's data"})
    sft_epochs: float = 1.0
    sft_max_steps: int = field(default=-1, metadata={"help": "optimizer steps per round (-1: epochs)"})
    learning_rate: float = 3e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_target_modules: str = "q_proj,v_proj"
    train_batch_size: int = 16
    micro_batch_size: int = 8
    cutoff_len: int = 1024
    save_steps: int = field(default=50, metadata={"help": "checkpoint every this many steps (a killed loop resumes there)"})
    dpo: bool = field(default=False, metadata={"help": "a DPO stage on each round's SFT adapter (Araft's order)"})
    dpo_round0: bool = field(default=True, metadata={"help": "round 0 too (false: DPO on the self-training rounds' samples only)"})
    dpo_max_steps: int = -1
    dpo_epochs: float = 1.0
    dpo_learning_rate: float = 5e-6
    dpo_beta: float = 0.1
    # --- inference --------------------------------------------------------------------------------
    backend: str = field(default="vllm", metadata={"help": "vllm (an engine per model, shared by its stages), hf (one per stage)"})
    serve: str = field(default="merged", metadata={"help": "vllm: 'merged' (each round's adapter merged into its weights) or 'lora' (one engine, the adapter per request)"})
    max_model_len: int = 4096
    batch_size: int = field(default=64, metadata={"help": "episodes run side by side"})
    speculative: str = field(default="ngram", metadata={"help": "vllm: n-gram drafting in the greedy stages (baselines, evaluations)"})
    sample_speculative: str = field(default="none", metadata={"help": "vllm: drafting in the sampling stages (temperature > 0), where drafts are mostly rejected: 3.1x fewer steps/s with ngram, AMD EPYC Zen 3"})
    seed: int = 0

    @property
    def methods(self) -> list:
        return [] if self.baselines in ([], ["none"], [""]) else self.baselines


@dataclass(frozen=True)
class QuestionSet:
    task: str
    split: str
    start: int = 0
    end: int = -1  # -1: to the split's end

    @property
    def name(self) -> str:
        return f"{self.task}_{self.split}_{self.start}_{'all' if self.end < 0 else self.end}"


def parse_questions(spec: str, flag: str) -> QuestionSet:
    """``task:split[:start-end]``, the task and split checked against the registry."""
    from tasks import DataFileError, SplitError, get_task
    from fireharness.registry import UnknownNameError

    parts = str(spec).split(":")
    if len(parts) not in (2, 3):
        raise LoopConfigError(f"{flag}: {spec!r} is not task:split[:start-end]")
    start, end = 0, -1
    if len(parts) == 3:
        lo, sep, hi = parts[2].partition("-")
        if not (sep and lo.isdigit() and hi.isdigit() and int(lo) < int(hi)):
            raise LoopConfigError(f"{flag}: {spec!r}: the range must be start-end with start < end, e.g. 0-500")
        start, end = int(lo), int(hi)
    try:
        task = get_task(parts[0], parts[1])
    except (UnknownNameError, SplitError, DataFileError) as e:
        raise LoopConfigError(f"{flag}: {spec!r}: {e}") from None
    if end > len(task):
        raise LoopConfigError(f"{flag}: {spec!r}: {parts[0]} {parts[1]} has {len(task)} questions")
    if not task.has_answers:
        raise LoopConfigError(f"{flag}: {spec!r}: {parts[0]} {parts[1]} has no gold answers to filter or score by")
    return QuestionSet(parts[0], parts[1], start, end)


def has_round0_data(c: LoopConfig) -> bool:
    return bool(c.teacher_files or c.teacher_backend)


def validate(c: LoopConfig) -> dict:
    """Every check that needs no model weights, in field order; returns the parsed question sets."""
    from methods import METHODS
    from methods.protocols import PROTOCOLS
    from tools import TOOLS
    from fireharness.registry import UnknownNameError

    def registered(registry, name: str, value: str) -> str:
        """``value``'s canonical name in ``registry``, else one line naming the field (with did-you-mean)."""
        try:
            return registry.canonical(value)
        except UnknownNameError as e:
            raise LoopConfigError(f"{name}: {e}") from None

    if not c.output_dir:
        raise LoopConfigError("output_dir: required (the experiment directory)")
    out = Path(c.output_dir)
    if out.exists() and not out.is_dir():
        raise LoopConfigError(f"output_dir: {c.output_dir} is a file")
    from models.resolve import ModelPathError, check_model_path, resolve_model_path
    try:
        check_model_path(c.base_model)
    except ModelPathError as e:
        raise LoopConfigError(f"base_model: {e}") from None
    sets = {"train": [parse_questions(s, "train") for s in c.train], "eval": [parse_questions(s, "eval") for s in c.eval]}
    if not sets["train"] or not sets["eval"]:
        raise LoopConfigError(f"{'train' if not sets['train'] else 'eval'}: give at least one task:split[:start-end]")
    for name, value in (("method", c.method), ("teacher_method", c.teacher_method)):
        if value:
            registered(METHODS, name, value)
    for m in c.methods:
        registered(METHODS, "baselines", m)
    registered(TOOLS, "tool", c.tool)
    if c.protocol is not None:
        c.protocol = registered(PROTOCOLS, "protocol", c.protocol)
    from finetune.convert import InputSpec
    from finetune.readers import InputError
    for spec in c.teacher_files:
        try:
            path = InputSpec.parse(spec).path
        except InputError as e:
            raise LoopConfigError(f"teacher_files: {e}") from None
        if not path.is_file():
            raise LoopConfigError(f"teacher_files: {spec}: no such file")
    def fits(name: str, adapter: str, base: str) -> None:
        """The LoRA adapter dir loads on ``base`` (shapes checked before any weights load), else one line."""
        from models import BackendSetupError
        from models.adapters import prepare_adapter
        try:
            prepare_adapter(adapter, resolve_model_path(base))
        except BackendSetupError as e:
            raise LoopConfigError(f"{name}: {e}") from None

    if c.teacher_adapter:
        if not c.teacher_backend:
            raise LoopConfigError("teacher_adapter: needs teacher_backend (vllm or hf)")
        fits("teacher_adapter", c.teacher_adapter, c.teacher_model or c.base_model)
    if c.round0_adapter:
        fits("round0_adapter", c.round0_adapter, c.base_model)
    if c.teacher_format not in ("text", "chat", "alpaca"):
        raise LoopConfigError(f"teacher_format: {c.teacher_format!r}; valid: text, chat, alpaca")
    if not has_round0_data(c) and not c.round0_adapter:
        raise LoopConfigError("teacher_files: round 0 needs data to train on (teacher_files or teacher_backend) "
                              "or a trained model (round0_adapter)")
    if c.mix_round0 and not has_round0_data(c):
        raise LoopConfigError("mix_round0: round 0 has no data to mix in (give teacher_files or teacher_backend)")
    if c.rounds < 0:
        raise LoopConfigError(f"rounds: {c.rounds}; give 0 or more self-training rounds")
    if c.num_samples < 1:
        raise LoopConfigError(f"num_samples: {c.num_samples}; give at least 1 sample per question")
    if c.num_samples > 1 and not c.temperature > 0:
        raise LoopConfigError(f"temperature: {c.temperature} makes the {c.num_samples} samples identical; set it > 0")
    if c.dedup not in ("trajectory", "question", "none"):
        raise LoopConfigError(f"dedup: {c.dedup!r}; valid: trajectory, question, none")
    if c.sft_init not in ("base", "previous"):
        raise LoopConfigError(f"sft_init: {c.sft_init!r}; valid: base, previous")
    if c.sft not in ("lora", "qlora"):
        raise LoopConfigError(f"sft: {c.sft!r}; valid: lora, qlora (full fine-tuning: finetune.full, not in the loop yet)")
    for name in ("lora_r", "train_batch_size", "micro_batch_size", "cutoff_len", "save_steps", "max_steps",
                 "max_tokens", "batch_size", "max_model_len"):
        if getattr(c, name) < 1:
            raise LoopConfigError(f"{name}: {getattr(c, name)}; must be >= 1")
    for name in ("speculative", "sample_speculative"):
        if getattr(c, name) not in ("ngram", "none"):
            raise LoopConfigError(f"{name}: {getattr(c, name)!r}; valid: ngram, none")
    if c.serve not in ("merged", "lora"):
        raise LoopConfigError(f"serve: {c.serve!r}; valid: merged, lora")
    if c.backend not in ("vllm", "hf"):
        raise LoopConfigError(f"backend: {c.backend!r}; the loop's own models run on vllm or hf")
    return sets


def yaml_to_flags(path: str) -> list:
    """A YAML config as flags, so that argparse checks every value's type (``rounds: two`` names the field)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise LoopConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LoopConfigError(f"{path}: expected field: value lines")
    known = {f.name for f in fields(LoopConfig)}
    argv = []
    for key, value in data.items():
        if key not in known:
            import difflib
            close = difflib.get_close_matches(str(key), known, n=1)
            raise LoopConfigError(f"{key}: no such field" + (f" (did you mean {close[0]}?)" if close else ""))
        if isinstance(value, list):
            # An empty list is applied after parsing (see parse_config): argparse's list flags want one value.
            argv += [f"--{key}", *(str(v) for v in value)] if value else [f"--{key}="]
        elif value is None:
            continue
        else:
            argv += [f"--{key}", str(value)]
    return argv


def parse_config(argv=None) -> LoopConfig:
    """``CONFIG.yaml [--field value ...]``: the file's fields, then flags over them."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message):  # one line naming the field, not argparse's usage block
            raise LoopConfigError(message.replace("argument ", "", 1))

    argv = list(sys.argv[1:] if argv is None else argv)
    flags = []
    if argv and argv[0].endswith((".yaml", ".yml")):
        if not Path(argv[0]).is_file():
            raise LoopConfigError(f"{argv[0]}: no such config file")
        flags, argv = yaml_to_flags(argv[0]), argv[1:]
    parser = Parser(LoopConfig, description="The agent-tuning loop: sample -> filter -> SFT -> DPO -> evaluate -> repeat")
    try:
        (config,) = parser.parse_args_into_dataclasses(args=flags + argv)
    except ValueError as e:  # HfArgumentParser's "arguments are not used"
        raise LoopConfigError(str(e)) from None
    for f in fields(LoopConfig):  # `field: []` in the file, or --field= : an empty list
        if getattr(config, f.name) == [""]:
            setattr(config, f.name, [])
    return config
