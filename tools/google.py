"""Google search through SerpAPI, FireAct's ``tools/search.py`` done carefully.

- Answer extraction in FireAct's order: answer box answer, answer box snippet, first highlighted word
  of the answer box, first organic snippet; nothing -> null (shown as "No results found ...").
- Every answer is cached (search_cache.py: FireAct's search.json format, durable before returning).
- Offline: replay the cache; a miss is never invented. ``search_fallback="wikipedia"`` answers a miss
  with the best matching sentences of the offline Wikipedia index (source "fallback:wikipedia").
- Live: ``SERPAPI_API_KEY`` from the environment, endpoint ``SERPAPI_BASE_URL`` (default serpapi.com),
  retried on timeouts, connection errors, 429 (honouring Retry-After), 5xx and malformed JSON. The key
  never reaches the cache, an observation or an error message.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from serpapi import GoogleSearch

from fireharness.paths import cache_dir

from .base import InvalidAction, Observation, Tool, ToolConfig, ToolSession, ToolSetupError, register_tool
from .retrying import ToolFault, get_json, redact
from .search_cache import MISSING, SHIPPED_CACHE, CacheFileError, SearchCache

DEFAULT_BASE_URL = "https://serpapi.com"
# SerpAPI answers HTTP 200 with this error when Google has nothing: a real (empty) answer, not a fault.
NO_RESULTS_ERROR = "hasn't returned any results"


def extract_answer(res: dict) -> Optional[str]:
    """FireAct's extraction order (tools/search.py), tolerant of empty lists."""
    box = res.get("answer_box") or {}
    if isinstance(box, list):  # SerpAPI sometimes returns several answer boxes
        box = box[0] if box else {}
    if "answer" in box:
        return str(box["answer"])
    if "snippet" in box:
        return str(box["snippet"])
    if box.get("snippet_highlighted_words"):
        return str(box["snippet_highlighted_words"][0])
    organic = res.get("organic_results") or []
    if organic and "snippet" in organic[0]:
        return str(organic[0]["snippet"])
    return None


def no_result_text(query: str) -> str:
    return f"No results found for {query!r}."


def not_cached_text(query: str) -> str:
    return f"No cached Google result for {query!r} (offline mode replays the SerpAPI cache; nothing was searched)."


class GoogleSession(ToolSession):
    def __init__(self, tool: "GoogleTool"):
        self.tool = tool

    def act(self, verb: str, argument: str) -> Observation:
        verb = verb.strip().lower()
        if verb not in self.tool.verbs:
            raise InvalidAction(f"Invalid action {verb!r}: the google tool has {', '.join(self.tool.verbs)}"
                                " (and finish).")
        t0 = time.perf_counter()
        obs = self.tool.search(argument)
        obs.latency_s = time.perf_counter() - t0
        return obs


@register_tool("google", "serpapi")
class GoogleTool(Tool):
    name = "google"
    verbs = ("search",)

    def __init__(self, config: ToolConfig):
        super().__init__(config)
        self.cache_path = Path(config.cache_path) if config.cache_path else cache_dir("google") / "search.json"
        self.base_url = os.environ.get("SERPAPI_BASE_URL", DEFAULT_BASE_URL).rstrip("/")
        self._cache: Optional[SearchCache] = None
        self._wikipedia = None

    @property
    def api_key(self) -> Optional[str]:
        return os.environ.get("SERPAPI_API_KEY") or None

    def check(self) -> None:
        if self.config.search_fallback not in (None, "none", "wikipedia"):
            raise ToolSetupError(f"unknown search fallback {self.config.search_fallback!r}; use 'wikipedia' or none")
        if not self.config.offline and not self.api_key:
            raise ToolSetupError("the google tool needs SERPAPI_API_KEY in the environment for live search; "
                                 "set it, or pass --offline to replay the shipped SerpAPI cache")
        self.cache
        if self.config.search_fallback == "wikipedia" and self.config.offline:
            self.wikipedia.check()

    @property
    def cache(self) -> SearchCache:
        if self._cache is None:
            try:
                self._cache = SearchCache(self.cache_path, read_only=[*self.config.extra_caches, SHIPPED_CACHE])
            except CacheFileError as e:
                raise ToolSetupError(str(e)) from None
        return self._cache

    @property
    def wikipedia(self):
        if self._wikipedia is None:
            from .wikipedia import WikipediaTool  # the offline index, for --search-fallback wikipedia
            self._wikipedia = WikipediaTool(ToolConfig(offline=True, index_dir=self.config.index_dir,
                                                       corpus=self.config.corpus))
        return self._wikipedia

    def session(self) -> GoogleSession:
        return GoogleSession(self)

    def close(self) -> None:
        if self._wikipedia is not None:
            self._wikipedia.close()

    # --- answering -------------------------------------------------------------------------------
    def search(self, query: str) -> Observation:
        query = query.strip()
        cached = self.cache.get(query)
        if cached is not MISSING:
            return Observation(cached if cached is not None else no_result_text(query), source="cache",
                               empty=cached is None)
        if self.config.offline:
            if self.config.search_fallback == "wikipedia":
                best = self.wikipedia.index().best_sentences(query)
                if best is not None:
                    return Observation(best[1], source="fallback:wikipedia")
            return Observation(not_cached_text(query), source="none")
        try:
            answer = self.live_answer(query)
        except ToolFault as e:
            return Observation(None, source="live", error=str(e))
        self.cache.put(query, answer)  # on disk before the agent sees it
        return Observation(answer if answer is not None else no_result_text(query), source="live",
                           empty=answer is None)

    def live_answer(self, query: str) -> Optional[str]:
        key = self.api_key
        if not key:
            raise ToolFault("SERPAPI_API_KEY is not set")
        params = {"api_key": key, "engine": "google", "q": query, "google_domain": "google.com",
                  "gl": "us", "hl": "en", "output": "json"}

        def request():
            client = GoogleSearch(dict(params))
            client.BACKEND = self.base_url
            client.timeout = self.config.timeout_s  # the client's default is 60000 s
            return client.get_response()

        data = get_json(request, self.config, "SerpAPI", secrets=[key])
        error = data.get("error")
        if error:
            if NO_RESULTS_ERROR in str(error):
                return None
            raise ToolFault(redact(f"SerpAPI error: {error}", [key]))
        if "search_metadata" not in data and "organic_results" not in data and "answer_box" not in data:
            raise ToolFault("SerpAPI: the response is JSON but not a search result")
        return extract_answer(data)
