"""The backend interface: prompts in, texts out, with stop strings.

Two ways in: ``generate(requests)``, a batch that returns when all of it is done, and
``submit(request)`` / ``collect()``, which the agent loop uses. A ``ContinuousBackend`` (vllm's
engine, an OpenAI-compatible server) returns each request as soon as it is done, so an episode
takes its next step while the others are still generating, and builds ``generate`` on that; for
the others, ``collect`` runs what was submitted as batches of ``generate``.

Each request carries the episode's ``key`` so that a backend can keep that episode's state
between steps (the ``hf`` backend keeps its KV cache; vLLM's prefix cache needs no key) and
``release(key)`` when the episode ends.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Union

from fireharness.registry import Registry

BACKENDS: Registry = Registry("backend", package="models")

Prompt = Union[str, list]  # plain text, or chat messages [{"role": ..., "content": ...}]


def encode_prompt(tokenizer, prompt: Prompt) -> list:
    """Token ids of a prompt for a local model; chat messages go through its chat template."""
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"]
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class BackendSetupError(RuntimeError):
    """A clear, one-line reason the backend cannot start (missing model, adapter, key...)."""


def default_dtype() -> str:
    """bfloat16 on a GPU; on a CPU whichever of float32 and bfloat16 it computes faster, measured once per
    machine (``models/cpu.py``: an Intel Xeon with AMX runs bfloat16 3x faster; an AMD EPYC with
    AVX512-BF16 but no AMX, or with AVX2 only, runs float32 faster)."""
    import torch
    if torch.cuda.is_available():
        return "bfloat16"
    from .cpu import fastest_dtype
    return fastest_dtype()["dtype"]


@dataclass
class BackendConfig:
    modelpath: str = "smollm2-135m"
    peftpath: Optional[str] = None
    add_lora: bool = False
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    model_name: Optional[str] = None  # openai: the model id on the server (FireAct's --backend gpt-4)
    base_url: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"
    tensor_parallel_size: int = 1
    max_model_len: Optional[int] = None
    dtype: Optional[str] = None  # None: default_dtype() (bfloat16 where the hardware computes it)
    seed: int = 0
    trust_remote_code: bool = False
    batch_size: int = 64  # most requests a backend runs at once
    speculative: str = "ngram"  # vllm: "ngram" (draft tokens copied from the prompt) or "none"
    max_lora_rank: int = 0  # vllm: > 0 also serves per-request LoRA adapters (GenerationRequest.adapter) up to this rank
    compile: Optional[bool] = None  # vllm: torch.compile the model at start (None: the device's default, vllm_engine.py)


@dataclass
class GenerationRequest:
    key: str  # episode id, stable across the episode's steps
    prompt: Prompt
    seed: Optional[int] = None  # sampling seed of this request (the episode's); None: the backend's --seed
    # LoRA adapter dir to answer with, so that one engine serves several fine-tuned models and the base
    # (backends with ``per_request_adapters``); None: the backend's own model (its --peftpath, if any).
    adapter: Optional[str] = None


@dataclass
class Generation:
    text: str  # without the stop string
    prompt_tokens: int = 0
    generated_tokens: int = 0
    computed_prompt_tokens: int = 0  # prompt tokens actually run through the model (after KV/prefix reuse)
    # Set when this one prompt could not run (its context is full); text is then "". The agent loop
    # ends that episode alone, unfinished, and the rest of the batch goes on.
    error: Optional[str] = None
    model_s: float = 0.0  # backend time charged to this request: its share of each batch or engine step it ran in


def fits_context(prompt_tokens: int, limit: int) -> bool:
    """Room for the prompt and at least one generated token."""
    return prompt_tokens + 1 <= limit


def context_full(prompt_tokens: int, limit: int) -> Generation:
    return Generation(text="", prompt_tokens=prompt_tokens,
                      error=f"context full: the prompt has {prompt_tokens} tokens, the model's context {limit} "
                            f"(--max_model_len)")


def generate_within_context(prompts: list, limit: int, run) -> list[Generation]:
    """``run(rows)`` generates for the rows whose token ids fit ``limit``; every other prompt comes back
    with ``error`` "context full", and the batch is not stopped by it."""
    rows = [i for i, ids in enumerate(prompts) if fits_context(len(ids), limit)]
    out = [context_full(len(ids), limit) for ids in prompts]  # replaced below where run
    for i, g in zip(rows, run(rows) if rows else []):
        out[i] = g
    return out


class Backend:
    name: str = ""
    continuous = False  # True: collect() returns each request when it is done, not a whole batch
    per_request_adapters = False  # True: honours GenerationRequest.adapter

    def __init__(self, config: BackendConfig):
        self.config = config
        self._submitted: list = []  # (request, stop, max_tokens, temperature) waiting for collect()

    def generate(self, requests: list[GenerationRequest], *, stop: Optional[list[str]] = None,
                 max_tokens: int = 256, temperature: float = 0.0) -> list[Generation]:
        raise NotImplementedError

    def submit(self, request: GenerationRequest, *, stop: Optional[list[str]] = None, max_tokens: int = 256,
               temperature: float = 0.0) -> None:
        """Queue one request; ``collect()`` returns it."""
        self._submitted.append((request, tuple(stop or ()), max_tokens, temperature))

    def pending(self) -> int:
        """Requests submitted and not yet returned by ``collect()``."""
        return len(self._submitted)

    def collect(self) -> list[tuple[GenerationRequest, Generation]]:
        """Requests that are done, each with its generation. Here: everything submitted, one ``generate``
        batch per (stop, max_tokens, temperature), each request charged its share of its batch's time."""
        batches: dict = {}
        for request, *params in self._submitted:
            batches.setdefault(tuple(params), []).append(request)
        self._submitted = []
        done = []
        for (stop, max_tokens, temperature), requests in batches.items():
            t0 = time.perf_counter()
            gens = self.generate(requests, stop=list(stop), max_tokens=max_tokens, temperature=temperature)
            for g in gens:
                g.model_s = (time.perf_counter() - t0) / len(requests)
            done += zip(requests, gens)
        return done

    def cancel(self) -> None:
        """Drop every submitted request (a run stopped halfway; the backend may serve another)."""
        self._submitted = []

    @property
    def context_length(self) -> Optional[int]:
        """Most tokens (prompt + generated) a request can hold; None where only the server knows."""
        return None

    @property
    def settings(self) -> dict:
        """How this backend computes (dtype, attention, ...) as chosen for this machine: kept in the results."""
        return {}

    def release(self, key: str) -> None:
        """The episode is over: drop whatever state was kept for it."""

    def close(self) -> None:
        pass

    @property
    def model_id(self) -> str:
        return self.config.model_name or self.config.modelpath


class ContinuousBackend(Backend):
    """A backend whose ``collect()`` returns each request when it is done; ``generate`` is built on it."""
    continuous = True

    def generate(self, requests: list[GenerationRequest], *, stop: Optional[list[str]] = None,
                 max_tokens: int = 256, temperature: float = 0.0) -> list[Generation]:
        if self.pending():
            raise RuntimeError("generate() while submitted requests are running: collect() them first")
        for r in requests:
            self.submit(r, stop=stop, max_tokens=max_tokens, temperature=temperature)
        results = {}
        while self.pending():
            results.update((id(r), g) for r, g in self.collect())
        return [results[id(r)] for r in requests]


def register_backend(name: str, *aliases: str):
    return BACKENDS.register(name, *aliases)


def get_backend(name: str, config: BackendConfig) -> Backend:
    """A registered backend, or FireAct's OpenAI model names (``gpt-4``, ``ft:gpt-3.5-...``)."""
    if name not in BACKENDS and name.startswith(("gpt-", "ft:", "o1", "o3", "o4")):
        config.model_name = config.model_name or name
        name = "openai"
    return BACKENDS.get(name)(config)
