"""``hf`` (alias ``llama``, FireAct's name): transformers, optional LoRA adapter, optional 4-bit.

A ReAct prompt grows by one thought/action/observation per step, so re-encoding it every step
is most of the cost. We keep each episode's KV cache (keyed by ``GenerationRequest.key``) and on
the next step run only the tokens after the longest common token prefix with what is cached.

Episodes with different cached and new lengths share one forward pass: caches are right-aligned
(left-padded) to the longest, the new tokens are left-padded likewise, and the attention mask
hides both gaps; positions come from the mask, so each row sees exactly what it would alone.
HF ``generate`` cannot take such a ragged cache, hence the small decode loop below. Its cache is a
StaticCache sized for the whole call, written in place (a DynamicCache concatenates every layer at every
token: 70% of a decode step at 64 rows), and on CPU attention runs through ``models/attention.py``
(masked GQA without repeating the cache).

Episodes that start together share their first prompt up to the question (the few-shot examples,
~1k tokens): that prefix is computed once, kept as a shared cache, and every new episode starts
from it, as vLLM's prefix caching does.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional

import torch

from .base import (Backend, BackendConfig, BackendSetupError, Generation, GenerationRequest, Prompt, default_dtype, encode_prompt, generate_within_context,
                   register_backend)
from .resolve import resolve_model_path


@dataclass
class EpisodeCache:
    ids: list[int]  # the tokens whose keys/values are held below
    layers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # per layer [heads, len, dim]


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def first_stop(text: str, stop: list[str]) -> int:
    """Index of the earliest stop string in text, or -1."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(hits) if hits else -1


def load_tokenizer_and_model(config: BackendConfig):
    """(tokenizer, model, resolved model path) with the adapter merged when possible."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(config.modelpath)
    dtype = getattr(torch, config.dtype if config.dtype and config.dtype != "auto" else default_dtype())
    kwargs = dict(dtype=dtype, trust_remote_code=config.trust_remote_code, use_safetensors=None)
    if config.load_in_4bit or config.load_in_8bit:
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
            if config.load_in_4bit else BitsAndBytesConfig(load_in_8bit=True))
    adapter = None
    if config.add_lora and config.peftpath:
        from .adapters import prepare_adapter
        adapter = prepare_adapter(config.peftpath, path)  # checked before the base weights load
    elif config.add_lora or config.peftpath:
        raise BackendSetupError("a LoRA adapter needs both --add_lora and --peftpath DIR")
    if not torch.cuda.is_available() and not config.trust_remote_code:
        from . import attention  # registers sdpa_gqa: masked GQA attention without repeating the cache
        kwargs["attn_implementation"] = attention.NAME
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter)
        if not (config.load_in_4bit or config.load_in_8bit):
            model = model.merge_and_unload()  # plain Linear layers again: faster, and no peft in the loop
    model.eval()
    return tokenizer, model, path


@register_backend("hf", "llama")
class HFBackend(Backend):
    name = "hf"
    PREFILL_TOKENS = 4096
    PREFILL_PADDING = 1.25  # a prefill group computes at most this many times its rows' new tokens...
    PREFILL_SLACK = 64      # ...plus this many (small groups are not worth splitting further)
    DROP_FINISHED = 0.25    # decoding drops finished rows once they are this share of the batch
    SHARED_PREFIX_MIN = 64  # tokens: a shorter common prefix is not worth a forward of its own
    SHARED_PREFIXES = 4     # kept at once (a run uses one per prompt; the oldest goes first)

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        self.tokenizer, self.model, self.path = load_tokenizer_and_model(config)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos, self.tokenizer.eos_token_id] if i is not None}
        self.cache: dict[str, EpisodeCache] = {}
        self.shared: dict[str, EpisodeCache] = {}  # common prompt prefixes, reused by every episode
        self._shared_ids = itertools.count()
        self.generator = torch.Generator().manual_seed(config.seed)

    def encode(self, prompt: Prompt) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)

    def release(self, key: str) -> None:
        self.cache.pop(key, None)

    def close(self) -> None:
        self.cache.clear()
        self.shared.clear()

    def generate(self, requests: list[GenerationRequest], *, stop: Optional[list[str]] = None,
                 max_tokens: int = 256, temperature: float = 0.0) -> list[Generation]:
        prompts = [self.encode(r.prompt) for r in requests]
        return generate_within_context(prompts, self.context_length, lambda rows: self._generate_runnable(
            [requests[i] for i in rows], [prompts[i] for i in rows], stop, max_tokens, temperature))

    @property
    def settings(self) -> dict:
        chosen = {"dtype": str(self.model.dtype).removeprefix("torch."),
                  "attention": self.model.config._attn_implementation,
                  "cache": "static per batch, finished rows dropped", "torch_threads": torch.get_num_threads()}
        if not self.config.dtype or self.config.dtype == "auto":
            from .cpu import fastest_dtype
            chosen["dtype_probe"] = fastest_dtype() if not torch.cuda.is_available() else None
        return chosen

    @property
    def context_length(self) -> int:
        return self.config.max_model_len or getattr(self.model.config, "max_position_embeddings", None) or 2048

    def _generate_runnable(self, requests, prompts, stop, max_tokens, temperature) -> list[Generation]:
        shared_cost = self._share_prefix(requests, prompts)
        reused = [self._state(r.key, ids)[1] for r, ids in zip(requests, prompts)]
        groups = self._groups([len(ids) - n for ids, n in zip(prompts, reused)])
        if len(groups) > 1:
            # Too many new tokens for one padded forward: prefill group by group (all but each prompt's
            # last token, which the decode pass below runs), so that decoding still batches every row.
            for group in groups:
                rows = [i for i in group if len(prompts[i]) > 1]
                if rows:
                    self._generate_batch([requests[i] for i in rows], [prompts[i][:-1] for i in rows], [], 1, 0.0)
        out: list[Generation] = []
        size = max(1, self.config.batch_size)
        for start in range(0, len(requests), size):
            out.extend(self._generate_batch(requests[start:start + size], prompts[start:start + size],
                                            list(stop or []), max_tokens, temperature))
        for g, n in zip(out, reused):  # the prefill pass computed tokens too: count from before it
            g.computed_prompt_tokens = g.prompt_tokens - n
        for row, n in shared_cost.items():  # a shared prefix is computed once: charged to one episode
            out[row].computed_prompt_tokens += n
        return out

    def _state(self, key: str, ids: list[int]) -> tuple[Optional[EpisodeCache], int]:
        """The cache to start from, and how many prompt tokens it holds: the episode's own or a shared
        prefix, whichever covers more. The last token always runs (its logits)."""
        best, best_n = None, 0
        for state in (self.cache.get(key), *self.shared.values()):
            n = min(common_prefix_len(state.ids, ids), len(ids) - 1) if state else 0
            if n > best_n:
                best, best_n = state, n
        return best, best_n

    def _share_prefix(self, requests, prompts) -> dict[int, int]:
        """Compute once the prefix that episodes without a usable cache have in common (per group of
        prompts that start alike: a run has one; a mix of prompts has several). Returns {row: tokens
        computed}, each prefix charged to one row of its group."""
        groups: dict[tuple, list[int]] = {}
        for i, (r, ids) in enumerate(zip(requests, prompts)):
            if len(ids) > self.SHARED_PREFIX_MIN and self._state(r.key, ids)[1] < self.SHARED_PREFIX_MIN:
                groups.setdefault(tuple(ids[:self.SHARED_PREFIX_MIN]), []).append(i)
        charged = {}
        for rows in groups.values():
            if len(rows) < 2:
                continue
            first = prompts[rows[0]]
            n = min(len(prompts[i]) for i in rows) - 1
            for i in rows[1:]:
                n = min(n, common_prefix_len(first, prompts[i]))
            key = f"shared-prefix-{next(self._shared_ids)}"
            # A one-token generation stores the prefix's cache (the generated token has no keys/values).
            self._generate_batch([GenerationRequest(key=key, prompt="")], [first[:n]], [], 1, 0.0)
            while len(self.shared) >= self.SHARED_PREFIXES:
                self.shared.pop(next(iter(self.shared)))
            self.shared[key] = self.cache.pop(key)
            charged[rows[0]] = n
        return charged

    def _groups(self, new_tokens: list[int]) -> list[list[int]]:
        """Row groups of at most ``batch_size`` rows, about ``PREFILL_TOKENS`` padded new tokens, and
        padding of at most ``PREFILL_PADDING`` times the tokens they hold.

        A first ReAct step prefills the whole few-shot prompt (~1k tokens) for every episode; one
        padded forward over 64 such rows spends its time in the masked attention (rows x len^2)
        rather than in the matmuls. Later steps add an observation a row, from a few tokens to
        hundreds: padded to the longest, most of a batch's prefill would be pad tokens, and on a CPU
        the matmuls cost per token, pad or not (profiled: 75% of the loop is in Linear layers).
        """
        groups, current, longest, held = [], [], 0, 0
        for i in sorted(range(len(new_tokens)), key=lambda i: new_tokens[i]):
            longest_if, held_if = max(longest, new_tokens[i]), held + new_tokens[i]
            padded = (len(current) + 1) * longest_if
            if current and (len(current) >= self.config.batch_size or padded > self.PREFILL_TOKENS or
                            padded > self.PREFILL_PADDING * held_if + self.PREFILL_SLACK):
                groups.append(current)
                current, longest_if, held_if = [], new_tokens[i], new_tokens[i]
            current.append(i)
            longest, held = longest_if, held_if
        if current:
            groups.append(current)
        return groups

    @torch.inference_mode()
    def _generate_batch(self, requests, prompts, stop, max_tokens, temperature) -> list[Generation]:
        batch = len(requests)
        states, reused = zip(*(self._state(r.key, ids) for r, ids in zip(requests, prompts)))
        past_len = max(reused)
        new_len = max(len(ids) - n for ids, n in zip(prompts, reused))

        # The cache and the mask are allocated once for the whole call (prefix, new tokens, every token
        # that can be generated) and written in place: a growing cache copies every layer per token.
        total = past_len + new_len + max_tokens
        mask = torch.zeros(batch, total, dtype=torch.long)
        input_ids = torch.full((batch, new_len), self.pad_id, dtype=torch.long)
        for i, (ids, n) in enumerate(zip(prompts, reused)):
            mask[i, past_len - n:past_len] = 1
            suffix = ids[n:]
            mask[i, past_len + new_len - len(suffix):past_len + new_len] = 1
            input_ids[i, new_len - len(suffix):] = torch.tensor(suffix)
        past = self._batched_cache(states, reused, past_len, total)
        for request in requests:  # copied into ``past``; stored again at the end (64 rows: ~4 GB in float32)
            self.cache.pop(request.key, None)
        del states
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past_len:past_len + new_len]
        written = past_len + new_len  # cache slots filled after the next forward

        limit = self.context_length
        generators = [None if r.seed is None else torch.Generator().manual_seed(r.seed) for r in requests]
        generated: list[list[int]] = [[] for _ in range(batch)]
        texts = [""] * batch
        alive = [True] * batch
        rows = list(range(batch))  # the request of each row of the tensors (finished rows leave them)
        while True:
            result = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                past_key_values=past, use_cache=True, logits_to_keep=1)
            past = result.past_key_values
            logits = result.logits[:, -1, :].float()
            if temperature and temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                if any(generators):  # each episode draws from its own stream: a resumed sample redraws its tokens
                    next_ids = torch.cat([torch.multinomial(probs[row], 1, generator=generators[i] or self.generator)
                                          for row, i in enumerate(rows)])
                else:
                    next_ids = torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
            else:
                next_ids = logits.argmax(-1)
            for row, i in enumerate(rows):
                if not alive[i]:
                    continue
                token = int(next_ids[row])
                generated[i].append(token)
                if token in self.eos_ids:
                    alive[i] = False
                    continue
                # Decode the whole continuation: a stop string can span tokens.
                texts[i] = self.tokenizer.decode(generated[i], skip_special_tokens=False)
                cut = first_stop(texts[i], stop) if stop else -1
                if cut >= 0:
                    texts[i] = texts[i][:cut]
                    alive[i] = False
                elif len(generated[i]) >= max_tokens or len(prompts[i]) + len(generated[i]) >= limit:
                    alive[i] = False
            if not any(alive):
                break
            finished = [row for row, i in enumerate(rows) if not alive[i]]
            if len(finished) >= self.DROP_FINISHED * len(rows):
                # Every row costs a full decode step until the batch's longest generation ends (64 rows:
                # a few run to max_tokens, most stop after a few dozen): store the finished rows' caches
                # and go on with the others. Copying the live rows' cache costs about one step's reads.
                self._store([(i, row) for row, i in enumerate(rows) if not alive[i]], requests, prompts,
                            generated, past, mask, written)
                live = [row for row, i in enumerate(rows) if alive[i]]
                past, mask, rows = self._keep_rows(past, live), mask[live], [rows[row] for row in live]
            # Finished rows still in the tensors are fed a masked pad token so the batch stays rectangular.
            step = torch.tensor([generated[i][-1] if alive[i] else self.pad_id for i in rows])
            input_ids = step[:, None]
            positions = mask.sum(-1, keepdim=True)
            mask[:, written] = torch.tensor([alive[i] for i in rows], dtype=torch.long)
            written += 1

        self._store(list(zip(rows, range(len(rows)))), requests, prompts, generated, past, mask, written)
        return [Generation(text=texts[i], prompt_tokens=len(prompts[i]), generated_tokens=len(generated[i]),
                           computed_prompt_tokens=len(prompts[i]) - reused[i]) for i in range(batch)]

    def _batched_cache(self, states, reused, past_len, total):
        """A StaticCache of ``total`` slots per row, holding every row's reused prefix right-aligned to
        ``past_len``; the forward passes then write in place from ``past_len`` on."""
        from transformers import StaticCache

        cache = StaticCache(config=self.model.config, max_cache_len=total)
        text = self.model.config.get_text_config(decoder=True)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        cache.early_initialization(len(states), text.num_key_value_heads, head_dim, self.model.dtype,
                                   self.model.device)
        for layer_idx, layer in enumerate(cache.layers):
            for i, (state, n) in enumerate(zip(states, reused)):
                if n:
                    layer.keys[i, :, past_len - n:past_len] = state.layers[layer_idx][0][:, :n]
                    layer.values[i, :, past_len - n:past_len] = state.layers[layer_idx][1][:, :n]
            layer.cumulative_length.fill_(past_len)
        return cache

    @staticmethod
    def _keep_rows(past, rows: list[int]):
        """The cache with only these rows (in this order)."""
        index = torch.tensor(rows)
        for layer in past.layers:
            layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)
            layer.batch_size = len(rows)
        return past

    def _store(self, pairs, requests, prompts, generated, past, mask, written):
        """Keep the cache of each (request, row of the tensors) without its padding, with the token ids it holds."""
        assert int(past.get_seq_length()) == written, "cache and mask out of step"
        keep = mask[:, :written].bool()
        for i, row in pairs:
            # The last generated token was never fed through the model, so it has no keys/values.
            ids = prompts[i] + generated[i][:-1]
            layers = [(layer.keys[row, :, :written][:, keep[row]].clone(),
                       layer.values[row, :, :written][:, keep[row]].clone()) for layer in past.layers]
            assert layers[0][0].shape[1] == len(ids), (layers[0][0].shape, len(ids))
            self.cache[requests[i].key] = EpisodeCache(ids=ids, layers=layers)
