"""Merge a LoRA adapter into its base model and save a plain model dir::

    python -m finetune.merge --base_model smollm2-135m --peftpath models/lora/hotpotqa --output_dir models/merged

The adapter must have been trained on this base: its shapes are checked against the base before merging
(peft would otherwise fail deep inside with a size mismatch, or, worse, load a same-shaped foreign adapter).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from finetune.common import load_causal_lm, load_tokenizer, resolve_base


class AdapterMismatchError(ValueError):
    pass


def adapter_weights(peftpath: Path) -> dict:
    """name -> shape of the adapter's tensors, from safetensors or peft 0.4's adapter_model.bin."""
    st, pt = peftpath / "adapter_model.safetensors", peftpath / "adapter_model.bin"
    if st.exists():
        from safetensors import safe_open

        with safe_open(str(st), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if pt.exists():
        import torch

        return {k: tuple(v.shape) for k, v in torch.load(pt, map_location="cpu", weights_only=True).items()}
    raise FileNotFoundError(f"--peftpath {peftpath}: no adapter_model.safetensors or adapter_model.bin there")


def check_adapter_fits(model, peftpath: Path, base_name: str) -> None:
    """Every LoRA A/B pair must sit on a module of the base with matching in/out features."""
    modules = dict(model.named_modules())
    for name, shape in adapter_weights(peftpath).items():
        if "lora_A" not in name and "lora_B" not in name:
            continue
        # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight -> model.layers.0.self_attn.q_proj
        target = name.split(".lora_")[0].removeprefix("base_model.model.")
        module = modules.get(target)
        if module is None or not hasattr(module, "in_features"):
            raise AdapterMismatchError(
                f"adapter {peftpath} targets {target}, which base model {base_name} does not have: "
                f"the adapter was trained on another base (see base_model_name_or_path in its adapter_config.json)")
        want = module.in_features if "lora_A" in name else module.out_features
        got = shape[1] if "lora_A" in name else shape[0]
        if want != got:
            trained_on = json.loads((peftpath / "adapter_config.json").read_text()).get("base_model_name_or_path")
            raise AdapterMismatchError(
                f"adapter {peftpath} does not fit base model {base_name}: {target} has "
                f"{'in' if 'lora_A' in name else 'out'}_features {want}, the adapter {got} "
                f"(it was trained on {trained_on!r}); pass that model as --base_model")


def merge(base_model: str, peftpath: str, output_dir: str) -> Path:
    from peft import PeftModel

    adapter = Path(peftpath)
    if not (adapter / "adapter_config.json").exists():
        raise FileNotFoundError(f"--peftpath {peftpath}: no adapter_config.json, so it is not a PEFT adapter dir")
    base = resolve_base(base_model)
    model = load_causal_lm(base)
    check_adapter_fits(model, adapter, base_model)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.config.use_cache = True
    out = Path(output_dir)
    merged.save_pretrained(out, safe_serialization=True)
    load_tokenizer(base).save_pretrained(out)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base_model", required=True)
    parser.add_argument("--peftpath", "--lora_weights", required=True, help="the adapter dir")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    try:
        print(f"merged model saved to {merge(args.base_model, args.peftpath, args.output_dir)}")
    except (AdapterMismatchError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
