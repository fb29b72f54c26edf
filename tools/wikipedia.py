"""Wikipedia with ReAct's ``search[entity]`` / ``lookup[keyword]`` semantics (ReAct's ``wikienv.py``).

- search hit: the first 5 sentences of the page; the page becomes current and lookup state resets.
- search miss: ``Could not find X. Similar: ['T1', ...].`` (up to 5 titles; the current page is kept).
- lookup: ``(Result i / n) sentence`` for the next sentence of the current page containing the keyword
  (case-insensitive); a new keyword restarts at 1; past the end, ``No more results.``

Backends: ``offline`` (the SQLite FTS5 index of HotpotQA's Wikipedia paragraphs, see wiki_index.py)
and ``live`` (the MediaWiki action API; endpoint from ``WIKIPEDIA_API_URL``).

``python -m tools.wikipedia build-index --corpus FILE [--index-dir DIR]`` indexes a larger corpus.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import requests

from fireharness.paths import cache_dir

from . import wiki_index
from .base import InvalidAction, Observation, Tool, ToolConfig, ToolSession, ToolSetupError, register_tool
from .retrying import ToolFault, get_json

DEFAULT_API_URL = "https://en.wikipedia.org/w/api.php"
USER_AGENT = "fireharness/0.1 (benchmark harness for language agents; https://github.com/anchen1011/FireAct)"
N_PAGE_SENTENCES = 5  # ReAct's get_page_obs
N_SIMILAR = 5


def index_location(index_dir: Optional[str], corpus: Optional[list] = None) -> Path:
    """Where the offline index lives: ``index_dir``, else a cache dir per corpus (shipped: 'wikipedia')."""
    if index_dir:
        return Path(index_dir) / wiki_index.INDEX_FILE
    if corpus:
        key = "\n".join(str(Path(c).resolve()) for c in corpus)
        name = f"{Path(corpus[0]).name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
        return cache_dir("wikipedia", name) / wiki_index.INDEX_FILE
    return cache_dir("wikipedia") / wiki_index.INDEX_FILE


def react_sentences(page_text: str) -> list[str]:
    """ReAct's page splitting: paragraphs on newlines, sentences on '. ' (without its doubled '.')."""
    sentences = []
    for paragraph in (p.strip() for p in page_text.split("\n")):
        for s in paragraph.split(". "):
            s = s.strip()
            if s:
                sentences.append(s if s.endswith((".", "!", "?")) else s + ".")
    return sentences


def not_found(entity: str, titles: list[str]) -> str:
    return f"Could not find {entity}. Similar: {titles[:N_SIMILAR]}."


class WikipediaSession(ToolSession):
    """One episode's state: the current page and the lookup cursor (ReAct's WikiEnv fields)."""

    def __init__(self, tool: "WikipediaTool"):
        self.tool = tool
        self.page: Optional[list[str]] = None
        self.lookup_keyword: Optional[str] = None
        self.lookup_list: list[str] = []
        self.lookup_cnt = 0
        self._lock = threading.Lock()

    def act(self, verb: str, argument: str) -> Observation:
        verb = verb.strip().lower()
        if verb not in self.tool.verbs:
            raise InvalidAction(f"Invalid action {verb!r}: the wikipedia tool has {', '.join(self.tool.verbs)}"
                                " (and finish).")
        t0 = time.perf_counter()
        with self._lock:
            if verb == "search":
                obs = self._search(argument)
            else:
                obs = Observation(self._lookup(argument), source=self.tool.backend)
        obs.latency_s = time.perf_counter() - t0
        return obs

    def _search(self, entity: str) -> Observation:
        try:
            found, payload = self.tool.backend_search(entity)
        except ToolFault as e:
            return Observation(None, source=self.tool.backend, error=str(e))
        if found:
            self.page = payload
            self.lookup_keyword, self.lookup_list, self.lookup_cnt = None, [], 0
            return Observation(" ".join(payload[:N_PAGE_SENTENCES]), source=self.tool.backend)
        return Observation(not_found(entity, payload), source=self.tool.backend)

    def _lookup(self, keyword: str) -> str:
        if self.lookup_keyword != keyword:
            self.lookup_keyword = keyword
            self.lookup_list = [s for s in self.page or [] if keyword.lower() in s.lower()]
            self.lookup_cnt = 0
        if self.lookup_cnt >= len(self.lookup_list):
            return "No more results."
        self.lookup_cnt += 1
        return f"(Result {self.lookup_cnt} / {len(self.lookup_list)}) {self.lookup_list[self.lookup_cnt - 1]}"


@register_tool("wikipedia", "wiki")
class WikipediaTool(Tool):
    name = "wikipedia"
    verbs = ("search", "lookup")

    def __init__(self, config: ToolConfig):
        super().__init__(config)
        self.corpus = [config.corpus] if config.corpus else None
        self.index_path = index_location(config.index_dir, self.corpus)
        self._index: Optional[wiki_index.WikiIndex] = None
        self._retrieval = None  # with config.retriever: misses ranked by tools/retrieval.py
        self._index_lock = threading.Lock()
        self.api_url = os.environ.get("WIKIPEDIA_API_URL", DEFAULT_API_URL)
        self._http = threading.local()

    # --- setup ---------------------------------------------------------------------------------
    def check(self) -> None:
        if self.config.retriever and self.config.retriever not in ("bm25", "dense", "hybrid"):
            raise ToolSetupError(f"--retriever {self.config.retriever!r}: valid: bm25, dense, hybrid")
        if self.config.offline:
            self.index()
            if self.config.retriever:
                self.retrieval()

    def index(self) -> wiki_index.WikiIndex:
        """The offline index, built (or rebuilt when its source changed) on first use."""
        with self._index_lock:
            if self._index is None:
                try:
                    wiki_index.ensure(self.corpus, self.index_path)
                except wiki_index.CorpusError as e:
                    raise ToolSetupError(f"offline Wikipedia index: {e}") from None
                self._index = wiki_index.WikiIndex(self.index_path)
            return self._index

    def session(self) -> WikipediaSession:
        return WikipediaSession(self)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        if self._retrieval is not None:
            self._retrieval.close()

    # --- backends: (True, sentences) for a page, (False, similar titles) for a miss --------------
    def backend_search(self, entity: str) -> tuple[bool, list[str]]:
        return self.offline_search(entity) if self.config.offline else self.live_search(entity)

    def offline_search(self, entity: str) -> tuple[bool, list[str]]:
        index = self.index()
        hit = index.page(entity)
        if hit is not None:
            return True, hit[1]
        if self.config.retriever:  # bm25 / dense / hybrid over the same paragraphs (tools/retrieve.py)
            return False, list(dict.fromkeys(h.title for h in self.retrieval().search(entity, N_SIMILAR,
                                                                                     self.config.retriever)))
        return False, index.similar_titles(entity, N_SIMILAR)

    def retrieval(self):
        """The retrieval index of this tool's corpus (the shipped one: the retrieve tool's default index)."""
        from .retrieve import SHIPPED_INDEX, open_index

        with self._index_lock:
            if self._retrieval is None:
                name = SHIPPED_INDEX if self.corpus is None else str(self.index_path.parent / "retrieval")
                self._retrieval = open_index(name, self.config.corpus, dense=self.config.retriever != "bm25")
            return self._retrieval

    def _get(self, params: dict) -> dict:
        session = getattr(self._http, "session", None)
        if session is None:
            session = self._http.session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
        params = {"action": "query", "format": "json", "formatversion": "2", **params}
        data = get_json(lambda: session.get(self.api_url, params=params, timeout=self.config.timeout_s),
                        self.config, "Wikipedia API")
        if "error" in data:
            err = data["error"]
            raise ToolFault(f"Wikipedia API error {err.get('code')}: {err.get('info')}")
        if "query" not in data and not data.get("batchcomplete"):
            raise ToolFault("Wikipedia API: response has no 'query' field")
        return data

    def live_search(self, entity: str) -> tuple[bool, list[str]]:
        page = self._live_page(entity)
        if page is None:
            titles = self._live_titles(entity)
            # Wikipedia's search page "goes" to a title that matches up to case; so do we.
            if titles and titles[0].lower() == entity.strip().lower() and titles[0] != entity.strip():
                page = self._live_page(titles[0])
            if page is None:
                return False, titles
        return True, page

    def _live_page(self, title: str) -> Optional[list[str]]:
        data = self._get({"prop": "extracts|pageprops", "explaintext": "1", "exsectionformat": "plain",
                          "redirects": "1", "titles": title.strip()})
        pages = data.get("query", {}).get("pages", [])
        if not pages or pages[0].get("missing") or pages[0].get("invalid"):
            return None
        page = pages[0]
        text = page.get("extract") or ""
        # ReAct re-searches a disambiguation page ("may refer to:"), which lands on the search results.
        if "disambiguation" in page.get("pageprops", {}) or "may refer to:" in text[:500]:
            return None
        sentences = react_sentences(text)
        return sentences or None

    def _live_titles(self, entity: str) -> list[str]:
        data = self._get({"list": "search", "srsearch": entity, "srlimit": str(N_SIMILAR), "srprop": ""})
        return [r["title"] for r in data.get("query", {}).get("search", [])]


# --- CLI: build-index --------------------------------------------------------------------------
def build_index_main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools build-index",
        description="Index a HotpotQA-format corpus (jsonl(.gz/.bz2) files or a directory of them) for the "
                    "offline Wikipedia tool; streams the corpus, so any size fits in memory. With --name NAME: any "
                    "documents (.txt/.md/.html/.jsonl) for the retrieve tool, BM25 + dense (--name NAME --help).")
    parser.add_argument("--corpus", nargs="+", default=None,
                        help="corpus files/directories (default: the shipped HotpotQA distractor paragraphs)")
    parser.add_argument("--index-dir", default=None,
                        help=f"where to write {wiki_index.INDEX_FILE} (default: the tool's cache dir); "
                             "run with --index-dir DIR to use it")
    parser.add_argument("--force", action="store_true", help="rebuild even if the index is up to date")
    args = parser.parse_args(argv)
    corpus = args.corpus or wiki_index.SHIPPED_CORPUS
    path = index_location(args.index_dir, args.corpus)
    try:
        if args.force:
            meta = wiki_index.build(corpus, path, progress=True)
        else:
            meta = wiki_index.ensure(corpus, path, progress=True)
    except wiki_index.CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"index": str(path), "n_pages": int(meta["n_pages"]), "build_s": float(meta["build_s"])}))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["build-index"]:
        sys.exit(build_index_main(sys.argv[2:]))
    sys.exit("usage: python -m tools.wikipedia build-index --corpus FILE [--index-dir DIR]")
