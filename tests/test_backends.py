"""The model backends on the real embedded model: hf (KV reuse), vllm, an OpenAI-compatible server,
and LoRA adapters in FireAct's released (peft 0.4) layout.

Engines are module-scoped: a vLLM engine or server costs tens of seconds to build.
"""
import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from models import BACKENDS, BackendConfig, BackendSetupError, GenerationRequest, get_backend  # noqa: E402
from models.hf import common_prefix_len  # noqa: E402

STOP = ["\nObservation:"]
FEWSHOT = ("Answer questions with Thought, Action, Observation steps.\n"
           "Question: What is the capital of Italy?\nThought: I need to search Italy.\n"
           "Action: search[Italy]\nObservation: Italy's capital is Rome.\nThought: The answer is Rome.\n"
           "Action: finish[Rome]\n\n")
QUESTIONS = ["Who wrote the play Hamlet?", "What is the largest planet in the Solar System?",
             "Which river flows through Paris, the capital city of France?"]
OBSERVATIONS = ["Nothing relevant was found.", "The result mentions a long list of possible related facts.",
                "It is a well-known fact."]


@pytest.fixture(scope="module")
def hf(model_dir):
    backend = get_backend("hf", BackendConfig(modelpath=model_dir, batch_size=2, dtype="float32"))  # 2: 4 requests = 2 batches
    yield backend
    backend.close()


def reference_text(backend, prompt, max_tokens):
    """Plain per-prompt HF generate, no cache reuse, cut at the stop string."""
    ids = torch.tensor([backend.encode(prompt)])
    out = backend.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                 do_sample=False, pad_token_id=backend.pad_id)
    text = backend.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    return text.split(STOP[0])[0]


def test_registry_names_and_fireact_aliases(monkeypatch):
    assert {"hf", "vllm", "openai"} <= set(BACKENDS.names())
    assert BACKENDS.canonical("llama") == "hf"
    monkeypatch.delenv("FIREHARNESS_NO_SUCH_KEY", raising=False)
    # FireAct's --backend gpt-4 goes to the openai backend, which wants a key before doing anything.
    with pytest.raises(BackendSetupError, match=r"FIREHARNESS_NO_SUCH_KEY"):
        get_backend("gpt-4", BackendConfig(api_key_env="FIREHARNESS_NO_SUCH_KEY"))
    with pytest.raises(ValueError, match="Did you mean 'vllm'"):
        get_backend("vlm", BackendConfig())


def test_hf_kv_reuse_matches_plain_generate(hf):
    """Three steps of four episodes (one chat) in ragged batches equal per-prompt generate, greedy.
    The batches are masked, so they run models/attention.py's GQA path; the reference is unmasked sdpa."""
    assert hf.model.config._attn_implementation == "sdpa_gqa"
    prompts = [FEWSHOT + f"Question: {q}\n" for q in QUESTIONS]
    prompts.append([{"role": "user", "content": FEWSHOT + "Question: Who painted the Mona Lisa?"}])
    max_tokens = 24
    for step in range(3):
        requests = [GenerationRequest(key=f"ep{i}", prompt=p) for i, p in enumerate(prompts)]
        generations = hf.generate(requests, stop=STOP, max_tokens=max_tokens, temperature=0.0)
        assert len(generations) == len(prompts)
        for i, (prompt, gen) in enumerate(zip(prompts, generations)):
            assert gen.text == reference_text(hf, prompt, max_tokens), (step, i)
            assert STOP[0] not in gen.text
            assert gen.prompt_tokens == len(hf.encode(prompt))
            assert 0 < gen.generated_tokens <= max_tokens
            if step == 0:  # the few-shot prefix of the three text prompts ran once, charged to the first
                ids = hf.encode(prompt)
                shared = 0 if i in (0, 3) else min(common_prefix_len(ids, hf.encode(prompts[0])), len(ids) - 1)
                assert shared > len(hf.encode(FEWSHOT)) - 2 or i in (0, 3)
                assert gen.computed_prompt_tokens == gen.prompt_tokens - shared, (i, gen)
            else:  # only the new observation (and the boundary tokens) ran
                assert gen.computed_prompt_tokens < gen.prompt_tokens / 3, (step, i, gen)
        # The next step: what was generated plus an observation of a different length per episode.
        for i, gen in enumerate(generations):
            obs = OBSERVATIONS[(i + step) % len(OBSERVATIONS)]
            if isinstance(prompts[i], str):
                prompts[i] = prompts[i] + gen.text + f"\nObservation: {obs}\n"
            else:
                prompts[i] = prompts[i] + [{"role": "assistant", "content": gen.text},
                                           {"role": "user", "content": f"Observation: {obs}"}]
    assert len(hf.shared) == 1  # the chat prompt shares no prefix with the others
    hf.release("ep0")
    again = hf.generate([GenerationRequest(key="ep0", prompt=prompts[0])], stop=STOP, max_tokens=4)[0]
    (shared,) = hf.shared.values()  # released: only the shared few-shot prefix is reused
    assert again.computed_prompt_tokens == again.prompt_tokens - len(shared.ids)


def test_hf_drops_finished_rows_and_splits_padded_prefill_same_text(hf, monkeypatch):
    """Six episodes in one batch whose generations stop at different tokens: finished rows leave the batch
    (their caches stored when they leave), and a second step whose observations differ ~20x in length is
    prefilled in groups of similar lengths. Greedy text and the next step's reuse stay those of plain generate."""
    monkeypatch.setattr(hf.config, "batch_size", 8)
    dropped, groups = [], []
    keep_rows, split = hf._keep_rows, hf._groups
    monkeypatch.setattr(hf, "_keep_rows", lambda past, rows: dropped.append(len(rows)) or keep_rows(past, rows))
    monkeypatch.setattr(hf, "_groups", lambda new_tokens: groups.append(split(new_tokens)) or groups[-1])
    questions = QUESTIONS + ["Who was the first person to walk on the Moon?", "What is 2 + 2?", "Name a color."]
    prompts = [FEWSHOT + f"Question: {q}\n" for q in questions]
    long_observation = " ".join(f"Fact {n}: the archive lists another record of the place." for n in range(30))
    previous = []  # each episode's prompt tokens at the step before
    for step, max_tokens in enumerate((20, 12)):
        requests = [GenerationRequest(key=f"drop{i}", prompt=p) for i, p in enumerate(prompts)]
        generations = hf.generate(requests, stop=STOP, max_tokens=max_tokens)
        for i, (prompt, gen) in enumerate(zip(prompts, generations)):
            assert gen.text == reference_text(hf, prompt, max_tokens), (step, i)
            if step:  # the stored cache (the last prompt and generation) was reused: only the rest ran
                assert gen.computed_prompt_tokens <= gen.prompt_tokens - previous[i] + 2, (i, gen)
        previous = [g.prompt_tokens for g in generations]
        observations = [long_observation if i == 0 else "Nothing." for i in range(len(prompts))]
        prompts = [p + g.text + f"\nObservation: {o}\n" for p, g, o in zip(prompts, generations, observations)]
    assert dropped, "no finished row left the batch"
    assert len(groups[-1]) > 1, groups  # the long observation was not padded onto the five short ones
    for i in range(len(prompts)):
        hf.release(f"drop{i}")


def test_hf_sampling_and_max_tokens(hf):
    request = [GenerationRequest(key="s", prompt="Once upon a time")]
    gen = hf.generate(request, max_tokens=5, temperature=1.0)[0]
    assert gen.generated_tokens <= 5 and gen.text


def test_hf_per_request_seeds_redraw_the_same_sample(hf):
    """An episode's seed (``GenerationRequest.seed``) fixes its draws: the same two requests sent again (a resumed
    run) get the same texts, although the backend's own stream moved on; two seeds on one prompt differ."""
    def draw(call):
        requests = [GenerationRequest(key=f"{call}{s}", prompt="Once upon a time", seed=s) for s in (11, 12)]
        texts = [g.text for g in hf.generate(requests, max_tokens=16, temperature=1.0)]
        for r in requests:
            hf.release(r.key)
        return texts

    first = draw("a")
    hf.generate([GenerationRequest(key="other", prompt="Once upon a time")], max_tokens=8, temperature=1.0)
    hf.release("other")
    assert draw("b") == first and first[0] != first[1]


def test_hf_4bit_generates(model_dir):
    backend = get_backend("hf", BackendConfig(modelpath=model_dir, load_in_4bit=True))
    assert any("4bit" in type(m).__name__ for m in backend.model.modules())
    gen = backend.generate([GenerationRequest("q", "The capital of France is")], max_tokens=6)[0]
    assert gen.generated_tokens > 0 and gen.text.strip()
    backend.close()


# --- adapters --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def old_layout_adapter(tmp_path_factory, model_dir):
    """A LoRA for the embedded model saved the way peft 0.4 saved FireAct's adapters."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero; randomise it so that the adapter changes outputs
            torch.nn.init.normal_(param, std=0.2)
    out = tmp_path_factory.mktemp("fireact_lora")
    peft_model.save_pretrained(out)
    state = load_file(str(out / "adapter_model.safetensors"))
    (out / "adapter_model.safetensors").unlink()
    torch.save(state, out / "adapter_model.bin")
    (out / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": "meta-llama/Llama-2-7b-hf", "bias": "none", "enable_lora": None,
        "fan_in_fan_out": False, "inference_mode": True, "lora_alpha": 16, "lora_dropout": 0.05,
        "merge_weights": False, "modules_to_save": None, "peft_type": "LORA", "r": 8,
        "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}))
    return out


def test_prepare_adapter_normalises_old_layout(old_layout_adapter, model_dir):
    from peft import LoraConfig
    from safetensors.torch import load_file

    from models.adapters import prepare_adapter
    ready = Path(prepare_adapter(str(old_layout_adapter), model_dir))
    assert (ready / "adapter_model.safetensors").is_file()
    config = json.loads((ready / "adapter_config.json").read_text())
    assert "enable_lora" not in config and "merge_weights" not in config
    LoraConfig(**{k: v for k, v in config.items() if k != "peft_type"})  # today's peft accepts it
    keys = list(load_file(str(ready / "adapter_model.safetensors")))
    assert keys and all(k.startswith("base_model.model.model.layers.") for k in keys)
    assert prepare_adapter(str(old_layout_adapter), model_dir) == str(ready)  # cached


def test_normalise_key_layouts():
    from models.adapters import normalise_key
    want = "base_model.model.model.layers.3.mlp.up_proj.lora_B.weight"
    for saved in [want, "base_model.model.model.layers.3.mlp.up_proj.lora_B.default.weight",
                  "model.layers.3.mlp.up_proj.lora_B.weight"]:
        assert normalise_key(saved) == want, saved


def test_adapter_errors(tmp_path, model_dir):
    from models.adapters import prepare_adapter
    with pytest.raises(BackendSetupError, match="no such directory"):
        prepare_adapter(str(tmp_path / "nope"), model_dir)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    with pytest.raises(BackendSetupError, match="no adapter weights"):
        prepare_adapter(str(tmp_path), model_dir)
    # An adapter made for a model of hidden size 64 (not 576, the embedded model's).
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    torch.save({f"{prefix}.lora_A.weight": torch.zeros(8, 64), f"{prefix}.lora_B.weight": torch.zeros(64, 8)},
               tmp_path / "adapter_model.bin")
    with pytest.raises(BackendSetupError, match="hidden size 64, --modelpath .* has 576"):
        prepare_adapter(str(tmp_path), model_dir)
    with pytest.raises(BackendSetupError, match="--add_lora and --peftpath"):
        get_backend("hf", BackendConfig(modelpath=model_dir, peftpath=str(tmp_path)))


PROBES = [FEWSHOT + "Question: Who wrote the play Hamlet?\n",
          [{"role": "user", "content": "Name three colours."}]]


def test_hf_adapter_changes_outputs(hf, old_layout_adapter, model_dir):
    adapted = get_backend("hf", BackendConfig(modelpath=model_dir, add_lora=True, peftpath=str(old_layout_adapter),
                                              dtype="float32"))
    requests = [GenerationRequest(f"a{i}", p) for i, p in enumerate(PROBES)]
    base_texts = [g.text for g in hf.generate(requests, stop=STOP, max_tokens=16)]
    lora_texts = [g.text for g in adapted.generate(requests, stop=STOP, max_tokens=16)]
    assert base_texts != lora_texts
    adapted.close()


# --- vllm and the OpenAI-compatible server ---------------------------------------------------------

@pytest.fixture(scope="module")
def vllm_backend(model_dir, old_layout_adapter):
    pytest.importorskip("vllm")
    backend = get_backend("vllm", BackendConfig(modelpath=model_dir, add_lora=True, peftpath=str(old_layout_adapter),
                                                max_model_len=2048, batch_size=8, dtype="float32"))
    yield backend
    backend.close()


def test_vllm_prefix_cache_lora_and_same_answer_as_hf(vllm_backend, hf):
    prompt = FEWSHOT + "Question: Who wrote the play Hamlet?\n"
    requests = [GenerationRequest("v0", prompt), GenerationRequest("v1", PROBES[1])]
    with vllm_backend.without_adapter():
        base = vllm_backend.generate(requests, stop=STOP, max_tokens=16)
    hf_base = hf.generate([GenerationRequest("h0", prompt), GenerationRequest("h1", PROBES[1])],
                          stop=STOP, max_tokens=16)
    assert [g.text for g in base] == [g.text for g in hf_base]  # same model, both float32, greedy
    assert all(STOP[0] not in g.text for g in base)
    assert [g.prompt_tokens for g in base] == [g.prompt_tokens for g in hf_base]
    # The next step shares the whole previous prompt: vllm's prefix cache serves it in whole KV blocks
    # (32 tokens here; vLLM's CPU default is 128), on FireAct's real few-shot prompt (~930 tokens).
    react = (Path(__file__).resolve().parent.parent / "data/fireact/prompts/react_hotpotqa_google.txt").read_text()
    react += "\n\nWho wrote the play Hamlet?\n"
    with vllm_backend.without_adapter():
        first = vllm_backend.generate([GenerationRequest("v2", react)], stop=STOP, max_tokens=8)[0]
        longer = react + first.text + "\nObservation: Hamlet is a tragedy by William Shakespeare.\n"
        second = vllm_backend.generate([GenerationRequest("v2", longer)], stop=STOP, max_tokens=8)[0]
    assert second.computed_prompt_tokens < second.prompt_tokens / 2
    # Recomputed: what the step added, plus at most the unfinished block of what the last one ended with.
    block = vllm_backend.llm.llm_engine.vllm_config.cache_config.block_size
    assert block == 32
    shared = common_prefix_len(vllm_backend.encode(react), vllm_backend.encode(longer))
    assert second.computed_prompt_tokens <= second.prompt_tokens - shared + block - 1, (second, shared)
    adapted = vllm_backend.generate(requests, stop=STOP, max_tokens=16)
    assert [g.text for g in adapted] != [g.text for g in base]  # the LoRA is applied
    # All of this with n-gram speculation on (the default): drafts checked, greedy text as hf's.
    assert vllm_backend.llm.llm_engine.vllm_config.speculative_config.method == "ngram"


def test_unknown_speculation_is_named_before_the_engine_starts():
    with pytest.raises(BackendSetupError, match="unknown --speculative 'medusa'; valid: ngram, none"):
        get_backend("vllm", BackendConfig(speculative="medusa"))


def test_continuous_backends_return_each_request_when_it_is_done(hf, vllm_backend, vllm_server, monkeypatch):
    """vllm and a server hand back a 1-token request while a long one still runs (the agent loop's
    episodes do not wait for each other); hf returns what was submitted as batches."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    served = get_backend("openai", BackendConfig(base_url=vllm_server, model_name="smollm2"))
    counting = "Count from 1 to 200: 1, 2, 3, 4, 5, 6,"
    for backend in (vllm_backend, served):
        backend.submit(GenerationRequest("long", counting), max_tokens=160)
        backend.submit(GenerationRequest("short", PROBES[0]), max_tokens=1)
        first = []
        while not first:
            first = backend.collect()
        assert [r.key for r, _ in first] == ["short"] and backend.pending() == 1, backend.name
        rest = []
        while backend.pending():
            rest += backend.collect()
        assert [r.key for r, _ in rest] == ["long"] and rest[0][1].generated_tokens > 20, backend.name
    served.close()
    hf.submit(GenerationRequest("long", counting), max_tokens=24)
    hf.submit(GenerationRequest("short", PROBES[0]), max_tokens=1)
    assert not hf.continuous and sorted(r.key for r, _ in hf.collect()) == ["long", "short"] and not hf.pending()


def test_openai_backend_against_local_server(vllm_server, vllm_backend, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # localhost needs no key
    backend = get_backend("openai", BackendConfig(base_url=vllm_server, model_name="smollm2"))
    requests = [GenerationRequest("o0", FEWSHOT + "Question: Who wrote the play Hamlet?\n"),
                GenerationRequest("o1", PROBES[1])]
    served = backend.generate(requests, stop=STOP, max_tokens=16)
    with vllm_backend.without_adapter():
        offline = vllm_backend.generate(requests, stop=STOP, max_tokens=16)
    assert [g.text for g in served] == [g.text for g in offline]  # text and chat, same greedy answers
    assert [g.prompt_tokens for g in served] == [g.prompt_tokens for g in offline]
    assert all(g.generated_tokens > 0 for g in served)
    backend.close()


def test_a_prompt_past_the_context_fails_alone(hf, vllm_backend, vllm_server, monkeypatch):
    """Each backend answers the prompts that fit and marks the one that does not; none raises."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    served = get_backend("openai", BackendConfig(base_url=vllm_server, model_name="smollm2"))
    too_long = PROBES[0] + " the" * 9000  # past hf's 8,192 (SmolLM2's positions) and the 2,048 of vllm and the server
    for backend in (hf, vllm_backend, served):
        short, over = backend.generate([GenerationRequest("c0", PROBES[0]), GenerationRequest("c1", too_long)],
                                       stop=STOP, max_tokens=8)
        assert short.error is None and short.generated_tokens > 0, backend.name
        assert over.text == "" and over.error.startswith("context full"), (backend.name, over.error)
    served.close()


def test_openai_needs_key_for_remote_server(monkeypatch):
    monkeypatch.delenv("FIREHARNESS_NO_SUCH_KEY", raising=False)
    with pytest.raises(BackendSetupError, match="FIREHARNESS_NO_SUCH_KEY"):
        get_backend("openai", BackendConfig(base_url="https://api.example.com/v1", model_name="m",
                                            api_key_env="FIREHARNESS_NO_SUCH_KEY"))


def test_vllm_cpu_engine_layout_leaves_a_callers_choice_alone(monkeypatch):
    """On CPU the engine runs in-process on every core, unless the caller chose a layout."""
    from models.vllm_engine import cpu_engine_env

    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU",
                 "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    cpus = sorted(os.sched_getaffinity(0))
    assert cpu_engine_env() == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cpus)),
                                "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": str(len(cpus))}
    assert cpu_engine_env(tensor_parallel_size=2) == {}  # one process per rank: vllm's own binding
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert "OMP_NUM_THREADS" not in cpu_engine_env()
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    assert cpu_engine_env() == {}
