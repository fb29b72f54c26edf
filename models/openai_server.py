"""``openai``: any OpenAI-compatible server (OpenAI itself, a local vLLM server, ...) via the ``openai`` client.

FireAct's ``--backend gpt-4`` / ``ft:gpt-3.5-...`` map here (see ``get_backend``). Text prompts
use the completions API, chat prompts chat completions. Requests go out concurrently from a
thread pool, and each comes back to the agent loop when its call returns (``continuous``); 429, 5xx and connection errors are retried with exponential backoff (tenacity). A
prompt the server rejects as longer than its context ends that request alone (``Generation.error``).
The API key is read from the environment and never logged or stored elsewhere.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Optional
from urllib.parse import urlparse

from .base import BackendConfig, BackendSetupError, ContinuousBackend, Generation, GenerationRequest, register_backend

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
MAX_WORKERS = 16
MAX_ATTEMPTS = 6


def is_local(base_url: Optional[str]) -> bool:
    return bool(base_url) and (urlparse(base_url).hostname or "") in LOCAL_HOSTS


def is_retryable(err: BaseException) -> bool:
    import openai

    if isinstance(err, (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError)):
        return True
    return isinstance(err, openai.APIStatusError) and err.status_code >= 500


def is_context_full(err) -> bool:
    """A 400 for a prompt longer than the model's context: OpenAI's code, or the wording OpenAI and
    vLLM's server share ("This model's maximum context length is N tokens...")."""
    return getattr(err, "code", None) == "context_length_exceeded" or "maximum context length" in str(err.message)


def _cached_tokens(usage) -> int:
    details = getattr(usage, "prompt_tokens_details", None)
    return int(getattr(details, "cached_tokens", 0) or 0) if details else 0


@register_backend("openai")
class OpenAIBackend(ContinuousBackend):  # every request is its own call: done when the call returns
    name = "openai"

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        import openai

        base_url = config.base_url or os.environ.get("OPENAI_BASE_URL")
        key = os.environ.get(config.api_key_env)
        if not key:
            if base_url and is_local(base_url):
                key = "EMPTY"  # a local server takes any key
            else:
                where = base_url or "api.openai.com"
                raise BackendSetupError(f"the openai backend needs an API key for {where}: set "
                                        f"${config.api_key_env} (or pass --base_url http://localhost:PORT/v1 "
                                        f"for a local server)")
        if not config.model_name:
            raise BackendSetupError("the openai backend needs --model_name (the model id on the server)")
        # The client's own retries are off: tenacity below decides, with one policy for all errors.
        self.client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=600)
        self.base_url = base_url
        self._pool: Optional[ThreadPoolExecutor] = None  # started at the first request
        self._calls: dict = {}  # future -> (request, time sent)

    @property
    def model_id(self) -> str:
        return self.config.model_name

    def submit(self, request: GenerationRequest, *, stop: Optional[list[str]] = None, max_tokens: int = 256,
               temperature: float = 0.0) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, self.config.batch_size)),
                                            thread_name_prefix="openai")
        future = self._pool.submit(self._one, request, stop, max_tokens, temperature)
        self._calls[future] = (request, time.perf_counter())

    def pending(self) -> int:
        return len(self._calls)

    def collect(self) -> list[tuple[GenerationRequest, Generation]]:
        """The calls that have returned (at least one), in the order they were made."""
        finished, _ = wait(self._calls, return_when=FIRST_COMPLETED)
        done = []
        for future in [f for f in self._calls if f in finished]:
            request, t0 = self._calls.pop(future)
            generation = future.result()  # an error that outlived the retries stops the run here
            generation.model_s = time.perf_counter() - t0
            done.append((request, generation))
        return done

    def cancel(self) -> None:
        for future in self._calls:
            future.cancel()
        self._calls = {}

    def _one(self, request: GenerationRequest, stop, max_tokens, temperature) -> Generation:
        from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

        @retry(retry=retry_if_exception(is_retryable), wait=wait_random_exponential(min=1, max=60),
               stop=stop_after_attempt(MAX_ATTEMPTS), reraise=True)
        def call():
            common = dict(model=self.config.model_name, max_tokens=max_tokens, temperature=temperature,
                          stop=list(stop) if stop else None,
                          seed=self.config.seed if request.seed is None else request.seed)
            if isinstance(request.prompt, str):
                response = self.client.completions.create(prompt=request.prompt, **common)
                text = response.choices[0].text
            else:
                response = self.client.chat.completions.create(messages=request.prompt, **common)
                text = response.choices[0].message.content or ""
            return response, text

        import openai
        try:
            response, text = call()
        except openai.BadRequestError as err:
            if not is_context_full(err):
                raise
            return Generation(text="", error=f"context full: the server says {err.message}")
        usage = response.usage
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        return Generation(text=text, prompt_tokens=prompt_tokens,
                          generated_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                          computed_prompt_tokens=prompt_tokens - _cached_tokens(usage))

    def close(self) -> None:
        self.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.client.close()
