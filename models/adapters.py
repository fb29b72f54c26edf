"""Load a LoRA adapter dir, in today's PEFT layout or in FireAct's released one, as a clean copy.

FireAct's adapters (e.g. ``forestai/fireact_llama_2_7b_lora``) were saved by peft 0.4: the weights
are a pickled ``adapter_model.bin`` and the config has keys peft has since dropped
(``enable_lora``, ``merge_weights``) while lacking ones it now expects. vLLM reads only
safetensors, and peft 0.21 rejects unknown config keys, so ``prepare_adapter`` writes one
normalised copy (safetensors, current keys, ``base_model.model.<module>.lora_X.weight`` names)
into the cache and both the ``hf`` and ``vllm`` backends load that.

The adapter is checked against the base model's module shapes *before* any weights load, because
a wrong pairing otherwise fails deep inside peft/vLLM with a tensor-size error.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from fireharness.paths import cache_dir

from .base import BackendSetupError

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
# A LoRA weight: "<prefix><module>.lora_A[.<adapter name>].weight"
LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
                      r"(?:\.(?P<adapter>[^.]+))?(?:\.weight)?$")
PREFIX = "base_model.model."


def _find_weights(adapter_dir: Path) -> Path:
    for name in WEIGHT_FILES:
        if (adapter_dir / name).is_file():
            return adapter_dir / name
    raise BackendSetupError(f"--peftpath {adapter_dir}: no adapter weights in it (expected one of "
                            f"{', '.join(WEIGHT_FILES)}); point it at a PEFT LoRA output directory")


def _load_state_dict(weights: Path) -> dict:
    import torch

    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(weights))
    # weights_only: a pickled .bin may carry code; we take tensors only.
    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise BackendSetupError(f"{weights}: not a state dict of tensors")
    return state


def normalise_key(key: str) -> str:
    """``base_model.model.<module>.lora_A.weight`` whatever prefix or adapter name it was saved with."""
    match = LORA_KEY.match(key)
    if not match:
        return key if key.startswith(PREFIX) else PREFIX + key
    module = match["module"]
    if not module.startswith(PREFIX):
        module = PREFIX + module
    suffix = "" if match["part"].startswith("lora_embedding") else ".weight"
    return f"{module}.{match['part']}{suffix}"


def normalise_config(raw: dict) -> dict:
    """The config with only the keys the installed peft's LoraConfig accepts (old ones dropped)."""
    from dataclasses import fields

    from peft import LoraConfig

    if str(raw.get("peft_type", "LORA")).upper() != "LORA":
        raise BackendSetupError(f"adapter type {raw.get('peft_type')!r} is not supported; only LoRA adapters are")
    accepted = {f.name for f in fields(LoraConfig)}
    config = {k: v for k, v in raw.items() if k in accepted}
    config["peft_type"] = "LORA"
    config.setdefault("task_type", "CAUSAL_LM")
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(set(config["target_modules"]))
    # peft 0.4 had no DoRA and no rank pattern; say so explicitly rather than leave them to defaults.
    config.setdefault("use_dora", False)
    config["inference_mode"] = True
    return config


def _base_linear_shapes(base_model_path: str, trust_remote_code: bool = False) -> tuple[dict, object]:
    """{module name: (in_features, out_features)} of the base model, built on the meta device (no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_model_path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes[name] = (module.in_features, module.out_features)
        elif isinstance(module, torch.nn.Embedding):
            shapes[name] = (module.num_embeddings, module.embedding_dim)
    return shapes, config


def check_adapter_matches(adapter_dir: Path, state: dict, base_model_path: str) -> None:
    shapes, config = _base_linear_shapes(base_model_path)
    hidden = getattr(config.get_text_config(), "hidden_size", None)
    problems = []
    adapter_hidden = None
    for key, tensor in state.items():
        match = LORA_KEY.match(key)
        if not match or match["part"] not in ("lora_A", "lora_B"):
            continue
        module = match["module"].removeprefix(PREFIX)
        if module not in shapes:
            problems.append(f"it adapts module {module!r}, which the base model does not have")
            continue
        base_in, base_out = shapes[module]
        if match["part"] == "lora_A":  # [r, in_features]
            got, want = tensor.shape[1], base_in
            if base_in == hidden and got != want:
                adapter_hidden = got
        else:  # [out_features, r]
            got, want = tensor.shape[0], base_out
            if base_out == hidden and got != want:
                adapter_hidden = got
        if got != want:
            problems.append(f"{module}.{match['part']} has size {got} where the base model has {want}")
    if adapter_hidden is not None:
        raise BackendSetupError(f"adapter {adapter_dir} was made for a model with hidden size {adapter_hidden}, "
                                f"--modelpath {base_model_path} has {hidden}; pass the base model it was trained on")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BackendSetupError(f"adapter {adapter_dir} does not fit --modelpath {base_model_path}: "
                                f"{problems[0]}{more}")


def _fingerprint(adapter_dir: Path, files: list[Path], base_model_path: str) -> str:
    digest = hashlib.sha256(str(adapter_dir.resolve()).encode())
    digest.update(str(base_model_path).encode())
    for f in files:
        st = f.stat()
        digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def prepare_adapter(peftpath: str, base_model_path: str) -> str:
    """A normalised, checked copy of the adapter at ``peftpath`` (cached; made once per source version)."""
    adapter_dir = Path(peftpath).expanduser()
    if not adapter_dir.is_dir():
        raise BackendSetupError(f"--peftpath {peftpath}: no such directory (give the output dir of a LoRA fine-tune)")
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise BackendSetupError(f"--peftpath {peftpath}: no adapter_config.json in it, so it is not a PEFT adapter")
    weights = _find_weights(adapter_dir)
    target = cache_dir("adapters") / _fingerprint(adapter_dir, [config_file, weights], base_model_path)
    if (target / "adapter_config.json").is_file() and (target / "adapter_model.safetensors").is_file():
        return str(target)

    try:
        raw_config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise BackendSetupError(f"{config_file}: not valid JSON ({err})") from None
    state = {normalise_key(k): v for k, v in _load_state_dict(weights).items()}
    if not any(LORA_KEY.match(k) for k in state):
        raise BackendSetupError(f"{weights}: holds no LoRA weights (an empty adapter, as some peft versions "
                                f"saved by mistake); re-save the adapter")
    check_adapter_matches(adapter_dir, state, base_model_path)
    config = normalise_config(raw_config)
    if "r" not in config:  # rank from the weights when an old config lacks it
        config["r"] = next(v.shape[0] for k, v in state.items() if ".lora_A." in k)

    from safetensors.torch import save_file

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (tmp / "fireharness_source.json").write_text(json.dumps({"source": str(adapter_dir.resolve()),
                                                             "weights": weights.name}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: never a half-written copy
    return str(target)


def adapter_rank(adapter_dir: str) -> int:
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    ranks = [config.get("r", 8), *(config.get("rank_pattern") or {}).values()]
    return int(max(ranks))
