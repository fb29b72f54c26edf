"""What the fine-tuners share: loading the base model and tokenizer, bf16 detection, CLI parsing."""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path


def hardware_bf16() -> bool:
    """bf16 is worth using where the hardware computes it natively: a CUDA GPU with bf16, or a CPU with
    AMX-BF16 / AVX512-BF16 (oneDNN then runs bf16 matmuls at twice the fp32 rate or more)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_bf16(value: str | bool | None) -> bool:
    if isinstance(value, bool):
        return value
    value = (value or "auto").lower()
    if value == "auto":
        return hardware_bf16()
    if value in {"true", "1", "yes"}:
        return True
    if value in {"false", "0", "no"}:
        return False
    raise ValueError(f"--bf16 {value}: use true, false or auto")


def resolve_base(name: str, flag: str = "--base_model") -> str:
    from models.resolve import resolve_model_path

    if not name:
        raise SystemExit(f"error: {flag} is required (a model dir, a hub id, or smollm2-135m for the embedded model)")
    return resolve_model_path(name)


@lru_cache(maxsize=None)
def _clean_config(path: str):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    # The embedded model's dir was written from a GGUF load and still names the GGUF quantizer in its
    # config although its weights are plain float32: drop it, or transformers treats the model as quantized
    # (no training, and every saved model would carry the stale entry).
    quant = getattr(config, "quantization_config", None)
    if isinstance(quant, dict) and quant.get("quant_method") == "gguf":
        gguf = quant.get("gguf_file")
        if not gguf or not (Path(path) / gguf).exists():
            del config.quantization_config
    return config


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding-free batches never show it to the model
    return tokenizer


def resolve_attention(value: str | None) -> str | None:
    """`auto`: per-example causal SDPA for padding-free rows on CPU (finetune/attention.py: 1.42x the trained
    tokens/s of a LoRA run here), the model's default (sdpa, or flash-attention if installed) on GPUs."""
    import torch

    if value in (None, "", "auto"):
        if torch.cuda.is_available():
            return None
        value = "sdpa_varlen"
    if value == "sdpa_varlen":
        import finetune.attention  # noqa: F401  (registers it)
    return value


def load_causal_lm(path: str, *, load_in_4bit: bool = False, load_in_8bit: bool = False, bf16: bool = False,
                   dtype=None, attn_implementation: str | None = "auto"):
    """The base model for training; 4-/8-bit through bitsandbytes (its CPU backend works too)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if load_in_4bit and load_in_8bit:
        raise SystemExit("error: --load_in_4bit and --load_in_8bit exclude each other; pick one")
    kwargs = {"config": _clean_config(path)}
    if load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float32)
    elif load_in_8bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    # Master weights stay fp32 and bf16 comes from autocast (Trainer's --bf16): fp32 optimizer state keeps
    # small LoRA updates from rounding away.
    kwargs["dtype"] = dtype or torch.float32
    attn = resolve_attention(attn_implementation)
    if attn:
        kwargs["attn_implementation"] = attn
    if torch.cuda.is_available() and (load_in_4bit or load_in_8bit):
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    # A KV cache in training both wastes memory and (transformers 5) disables the block-diagonal mask that
    # padding-free batches need: with it, packed examples would attend to each other.
    model.config.use_cache = False
    return model


def parse_config(dataclass_types, argv=None):
    """Dataclass configs from flags and/or a YAML file (`--config file.yaml`; flags override it), as TRL's
    scripts do. A single .json/.yaml argument is read as the config, as HfArgumentParser's examples do."""
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml", ".json")):
        argv = ["--config", argv[0]]
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv) or not Path(argv[i + 1]).exists():
            raise SystemExit(f"error: --config {argv[i + 1] if i + 1 < len(argv) else ''}: no such file")
    return TrlParser(dataclass_types).parse_args_and_config(args=argv)


def check_output_dir(output_dir: str):
    if not output_dir:
        raise SystemExit("error: --output_dir is required")
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise SystemExit(f"error: --output_dir {output_dir} is a file")
    return path


def score_only_trained_tokens() -> None:
    """Run the LM head only where a label is trained, on CPU too.

    TRL's SFTTrainer projects hidden states through the vocabulary in a fused, chunked head. It scores
    only the labelled positions on Triton devices but every position elsewhere, to keep tile shapes
    fixed for compilers (Neuron), and masks the loss afterwards. Eager CPU has no such need, and in agent
    trajectories only the Thought/Action tokens carry a label (43% of FireAct's hotpotqa.json), while the
    head is a fifth of SmolLM2's forward (576 x 49,152). Same loss and gradients: checked on one packed
    LoRA row (loss equal to 6 digits, gradients within 2e-9). A TRL without this switch is left alone.
    """
    import torch

    if torch.cuda.is_available():
        return
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:
        return
    if hasattr(trl_utils, "_use_triton"):  # read by add_fused_lm_head's forward at each call
        trl_utils._use_triton = lambda device: True
