"""Retrieval over any documents: ``search[query]`` returns the top-k passages with their titles.

    python -m tools build-index --corpus my_docs/ --name mydocs
    python -m tools retrieve search "what does the scheduler do" --index mydocs --retriever hybrid

The index (tools/retrieval.py) holds BM25 (FTS5) and dense vectors; ``retriever`` picks bm25, dense or
hybrid (reciprocal rank fusion; the default). Without ``index`` the tool serves the shipped HotpotQA
Wikipedia paragraphs, building that index on first use (minutes for the vectors; a progress bar shows).
Each observation reads ``[1] Title: text [2] Title: text ...`` and its source is
``retrieve:<index>/<retriever>``.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

from . import retrieval, wiki_index
from .base import InvalidAction, Observation, Tool, ToolConfig, ToolSession, ToolSetupError, register_tool

SHIPPED_INDEX = "wikipedia-paragraphs"


def format_hits(hits: list) -> str:
    return " ".join(f"[{i}] {h.title}: {h.text}" for i, h in enumerate(hits, 1))


class RetrieveSession(ToolSession):
    def __init__(self, tool: "RetrieveTool"):
        self.tool = tool

    def act(self, verb: str, argument: str) -> Observation:
        if verb.strip().lower() not in self.tool.verbs:
            raise InvalidAction(f"Invalid action {verb!r}: the retrieve tool has search (and finish).")
        t0 = time.perf_counter()
        hits = self.tool.search(argument)
        text = format_hits(hits) if hits else f"No passage matches {argument.strip()!r}."
        return Observation(text, source=self.tool.source, latency_s=time.perf_counter() - t0)


@register_tool("retrieve")
class RetrieveTool(Tool):
    name = "retrieve"
    verbs = ("search",)

    def __init__(self, config: ToolConfig):
        super().__init__(config)
        self.retriever = config.retriever or "hybrid"
        self.index_name = config.index or SHIPPED_INDEX
        self.directory = retrieval.index_dir(self.index_name)
        self._index: Optional[retrieval.RetrievalIndex] = None
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        return f"retrieve:{Path(self.index_name).name}/{self.retriever}"

    def check(self) -> None:
        if self.retriever not in retrieval.RETRIEVERS:
            raise ToolSetupError(f"--retriever {self.retriever!r}: valid: {', '.join(retrieval.RETRIEVERS)}")
        if self.config.top_k < 1:
            raise ToolSetupError(f"--top_k {self.config.top_k}: must be >= 1")
        self.index()

    def index(self) -> retrieval.RetrievalIndex:
        with self._lock:
            if self._index is None:
                self._index = open_index(self.index_name, self.config.corpus, dense=self.retriever != "bm25")
            return self._index

    def search(self, query: str) -> list:
        return self.index().search(query, self.config.top_k, self.retriever)

    def session(self) -> RetrieveSession:
        return RetrieveSession(self)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()

    @property
    def backend(self) -> str:
        return "offline"


def open_index(name: str, corpus: Optional[str] = None, dense: bool = True) -> retrieval.RetrievalIndex:
    """The named index, brought up to date first when a corpus is given or it is the shipped one;
    a ToolSetupError (one line) when it cannot be built or opened."""
    from fireharness.embeddings import EmbedderError

    directory = retrieval.index_dir(name)
    try:
        if corpus or (name == SHIPPED_INDEX and not _built(directory, dense)):
            retrieval.build([corpus] if corpus else wiki_index.SHIPPED_CORPUS, directory, dense=dense)
        index = retrieval.RetrievalIndex(directory)
        if dense:
            index.load_dense()
        return index
    except (wiki_index.CorpusError, EmbedderError) as e:
        raise ToolSetupError(f"retrieve index {name!r}: {e}") from None


def _built(directory: Path, dense: bool) -> bool:
    return (directory / "index.sqlite").exists() and (not dense or (directory / "dense.faiss").exists())
