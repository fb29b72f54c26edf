"""A retrieval index over any documents: BM25 (SQLite FTS5) and dense vectors (sentence-transformers + FAISS).

One directory per index (``cache_dir("indexes", NAME)`` unless given): ``index.sqlite`` holds

- ``files(path, size, mtime_ns)``: what each source file looked like when it was read;
- ``chunks(id, file, title, text)`` and an FTS5 table over title and text (BM25, title weighted up);
- ``vectors(id, vec)``: each chunk's embedding (float32, L2-normalised) and, in ``meta``, the model id;

and ``dense.faiss``, the same vectors in a FAISS ``IndexFlatIP`` keyed by chunk id (exact inner product
= cosine), written from the table at the end of each build. A rebuild reads only files whose size or
mtime changed (and drops removed ones); only their chunks are embedded again. Changing the model
re-embeds everything.

Why FAISS and not sqlite-vec: sqlite-vec is a loadable SQLite extension, and Python builds without
``sqlite3.Connection.enable_load_extension`` (this project's venv Python among them) cannot load it;
FAISS is a plain wheel. Flat search over 13,386 384-d vectors takes well under a millisecond (see
benchmarks/retrieval.py), so no approximate index is needed at this size.

Hybrid retrieval is reciprocal rank fusion (Cormack et al., 2009): score = sum over rankings of
1 / (60 + rank), over the top ``FUSION_DEPTH`` of BM25 and of dense.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from fireharness.paths import cache_dir

from . import documents
from .wiki_index import STOPWORDS, TOKEN, CorpusError, ThreadConnections, _file_lock

SCHEMA = "1"
RETRIEVERS = ("bm25", "dense", "hybrid")
RRF_K = 60
FUSION_DEPTH = 50
EMBED_BATCH = 256


@dataclass
class Hit:
    title: str
    text: str
    score: float
    id: int


def index_dir(name: str) -> Path:
    """An index name (``NAME`` -> the cache dir) or a directory path (anything with a slash)."""
    if os.sep in name or name.startswith("."):
        return Path(name)
    return cache_dir("indexes", name)


def _fts_query(text: str) -> Optional[str]:
    words = TOKEN.findall(text.lower())
    kept = [w for w in words if w not in STOPWORDS] or words
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(kept)) if kept else None


SCHEMA_SQL = """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER);
    CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, file TEXT NOT NULL, title TEXT NOT NULL,
                                       text TEXT NOT NULL, UNIQUE (file, title, text));
    CREATE INDEX IF NOT EXISTS chunks_file ON chunks (file);
    CREATE TABLE IF NOT EXISTS vectors (id INTEGER PRIMARY KEY, vec BLOB NOT NULL);
    CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(title, text, content='chunks', content_rowid='id',
                                                      tokenize='unicode61 remove_diacritics 2');
    CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO fts (rowid, title, text) VALUES (new.id, new.title, new.text); END;
    CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO fts (fts, rowid, title, text) VALUES ('delete', old.id, old.title, old.text);
        DELETE FROM vectors WHERE id = old.id; END;
"""


def build(corpus: Iterable[os.PathLike | str], directory: Path, *, dense: bool = True, model: Optional[str] = None,
          chunk_words: int = documents.CHUNK_WORDS, overlap_words: int = documents.OVERLAP_WORDS,
          progress: bool = True) -> dict:
    """Bring the index in ``directory`` up to date with ``corpus``; returns a summary. Every input
    problem (missing path, empty folder, unreadable or unsupported file) raises CorpusError first."""
    files = documents.document_files(corpus)
    embedder = None
    if dense:
        from fireharness.embeddings import get_embedder
        embedder = get_embedder(model)  # EmbedderError before any file is read
    directory.mkdir(parents=True, exist_ok=True)
    with _file_lock(directory / "build.lock"):
        return _build_locked(files, directory, embedder, chunk_words, overlap_words, progress)


def _build_locked(files, directory, embedder, chunk_words, overlap_words, progress) -> dict:
    t0 = time.perf_counter()
    path = directory / "index.sqlite"
    fresh = not path.exists()
    con = sqlite3.connect(path)
    try:
        con.executescript(SCHEMA_SQL)
        meta = dict(con.execute("SELECT key, value FROM meta"))
        chunking = json.dumps([chunk_words, overlap_words])
        if meta and (meta.get("schema") != SCHEMA or meta.get("chunking") != chunking):
            con.executescript("DELETE FROM chunks; DELETE FROM files; DELETE FROM vectors;")  # rebuild all
        stamps = {str(f.resolve()): (f.stat().st_size, f.stat().st_mtime_ns) for f in files}
        known = {p: (s, m) for p, s, m in con.execute("SELECT path, size, mtime_ns FROM files")}
        changed = [p for p in stamps if known.get(p) != stamps[p]]
        removed = [p for p in known if p not in stamps]
        with con:
            for p in changed + removed:
                con.execute("DELETE FROM chunks WHERE file = ?", (p,))
                con.execute("DELETE FROM files WHERE path = ?", (p,))
            n_new = 0
            by_path = {str(f.resolve()): f for f in files}
            for p in changed:
                rows = [(p, ps.title, ps.text) for _, ps in documents.passages([by_path[p]], chunk_words, overlap_words)]
                con.executemany("INSERT OR IGNORE INTO chunks (file, title, text) VALUES (?, ?, ?)", rows)
                con.execute("INSERT INTO files VALUES (?, ?, ?)", (p, *stamps[p]))
                n_new += len(rows)
        n_embedded = 0
        if embedder is not None:
            if meta.get("embedder") not in (None, embedder.id):
                con.execute("DELETE FROM vectors")  # another model: every vector is stale
            n_embedded = _embed_missing(con, embedder, progress)
            con.execute("INSERT OR REPLACE INTO meta VALUES ('embedder', ?)", (embedder.id,))
            con.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(embedder.dim),))
        n_chunks = con.execute("SELECT count(*) FROM chunks").fetchone()[0]
        if n_chunks == 0:
            raise CorpusError(f"--corpus: the files ({len(files)}) hold no text to index")
        summary = {"schema": SCHEMA, "chunking": chunking, "n_files": str(len(files)), "n_chunks": str(n_chunks),
                   "files_read": str(len(changed)), "files_removed": str(len(removed)),
                   "chunks_added": str(n_new), "chunks_embedded": str(n_embedded),
                   "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with con:
            con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", summary.items())
        if embedder is not None and (changed or removed or n_embedded or not (directory / "dense.faiss").exists()):
            _write_faiss(con, directory, embedder.dim)
        summary["build_s"] = f"{time.perf_counter() - t0:.2f}"
        with con:
            con.execute("INSERT OR REPLACE INTO meta VALUES ('build_s', ?)", (summary["build_s"],))
    except BaseException:
        con.close()
        if fresh:  # a first build that failed (an unreadable file...) leaves no half index behind
            path.unlink(missing_ok=True)
        raise
    con.close()
    return summary


def _embed_missing(con: sqlite3.Connection, embedder, progress: bool) -> int:
    import numpy as np
    from tqdm import tqdm

    todo = con.execute("SELECT count(*) FROM chunks WHERE id NOT IN (SELECT id FROM vectors)").fetchone()[0]
    if not todo:
        return 0
    bar = tqdm(total=todo, desc="embedding chunks", unit="chunk", disable=not progress or todo < EMBED_BATCH,
               file=sys.stderr, dynamic_ncols=True)
    done = 0
    while True:
        rows = con.execute("SELECT id, title, text FROM chunks WHERE id NOT IN (SELECT id FROM vectors) LIMIT ?",
                           (EMBED_BATCH,)).fetchall()
        if not rows:
            break
        # The title is part of what is embedded: a passage about "X" often never names X.
        vecs = embedder.encode([f"{t}: {x}" for _, t, x in rows])
        with con:
            con.executemany("INSERT INTO vectors VALUES (?, ?)",
                            [(r[0], np.ascontiguousarray(v).tobytes()) for r, v in zip(rows, vecs)])
        done += len(rows)
        bar.update(len(rows))
    bar.close()
    return done


def _write_faiss(con: sqlite3.Connection, directory: Path, dim: int) -> None:
    import faiss
    import numpy as np

    rows = con.execute("SELECT id, vec FROM vectors ORDER BY id").fetchall()
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if rows:
        ids = np.array([r[0] for r in rows], dtype="int64")
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="float32").reshape(len(rows), dim)
        index.add_with_ids(vecs, ids)
    tmp = directory / f"dense.faiss.tmp-{os.getpid()}"
    faiss.write_index(index, str(tmp))
    os.replace(tmp, directory / "dense.faiss")


class RetrievalIndex:
    """Queries on a built index; thread-safe (one SQLite connection per thread, FAISS searches are reentrant)."""

    def __init__(self, directory: Path, model: Optional[str] = None):
        self.dir = Path(directory)
        self.path = self.dir / "index.sqlite"
        if not self.path.exists():
            raise CorpusError(f"no index at {self.dir}; build one with `python -m tools build-index --corpus DOCS "
                              f"--name NAME`")
        self._connections = ThreadConnections(self.path)
        self._lock = threading.Lock()
        self.meta = dict(self._con().execute("SELECT key, value FROM meta"))
        self.model = model
        self._faiss = None
        self._embedder = None

    def _con(self) -> sqlite3.Connection:
        return self._connections.get()

    @property
    def has_dense(self) -> bool:
        return "embedder" in self.meta and (self.dir / "dense.faiss").exists()

    def load_dense(self) -> None:
        """Load the vectors and the query encoder (the model the index was built with)."""
        with self._lock:
            if self._faiss is not None:
                return
            if not self.has_dense:
                raise CorpusError(f"the index at {self.dir} has no dense vectors; rebuild it without --no-dense")
            import faiss

            from fireharness.embeddings import get_embedder
            self._embedder = get_embedder(self.model or self._model_for_queries())
            self._faiss = faiss.read_index(str(self.dir / "dense.faiss"))

    def _model_for_queries(self) -> Optional[str]:
        from fireharness.embeddings import HUB_DEFAULT
        recorded = self.meta.get("embedder")
        return None if recorded in (None, HUB_DEFAULT) else recorded  # the packaged copy for the default

    def _rows(self, ids: list[int]) -> dict[int, tuple[str, str]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return {r[0]: (r[1], r[2]) for r in
                self._con().execute(f"SELECT id, title, text FROM chunks WHERE id IN ({marks})", ids)}

    def bm25(self, query: str, k: int) -> list[tuple[int, float]]:
        expr = _fts_query(query)
        if expr is None:
            return []
        rows = self._con().execute("SELECT rowid, bm25(fts, 5.0, 1.0) FROM fts WHERE fts MATCH ? "
                                   "ORDER BY bm25(fts, 5.0, 1.0) LIMIT ?", (expr, k)).fetchall()
        return [(r[0], -r[1]) for r in rows]

    def dense(self, query: str, k: int) -> list[tuple[int, float]]:
        self.load_dense()
        scores, ids = self._faiss.search(self._embedder.encode([query]), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def hybrid(self, query: str, k: int) -> list[tuple[int, float]]:
        fused: dict[int, float] = {}
        for ranking in (self.bm25(query, FUSION_DEPTH), self.dense(query, FUSION_DEPTH)):
            for rank, (i, _) in enumerate(ranking, 1):
                fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank)
        return sorted(fused.items(), key=lambda kv: -kv[1])[:k]

    def search(self, query: str, k: int = 5, retriever: str = "hybrid") -> list[Hit]:
        """The top ``k`` passages; the same title and text from two files is returned once."""
        if retriever not in RETRIEVERS:
            raise ValueError(f"unknown retriever {retriever!r}; valid: {', '.join(RETRIEVERS)}")
        ranked = getattr(self, retriever)(query, k * 2)
        rows = self._rows([i for i, _ in ranked])
        hits, seen = [], set()
        for i, score in ranked:
            if i in rows and rows[i] not in seen:
                seen.add(rows[i])
                hits.append(Hit(rows[i][0], rows[i][1], score, i))
        return hits[:k]

    def close(self) -> None:
        self._connections.close()


# --- CLI: python -m tools build-index --corpus DOCS... --name NAME ------------------------------
def build_index_main(argv: Optional[list[str]] = None) -> int:
    import argparse

    from fireharness.embeddings import EmbedderError

    parser = argparse.ArgumentParser(
        prog="python -m tools build-index",
        description="Index documents (folders of .txt/.md/.html/.jsonl, .pdf with pypdf) for the retrieve tool: "
                    "BM25 and dense vectors. Re-running reads only the files that changed.")
    parser.add_argument("--corpus", nargs="+", required=True, help="files and folders of documents")
    parser.add_argument("--name", required=True,
                        help="index name (stored under the cache dir, FIREHARNESS_CACHE) or a directory path")
    parser.add_argument("--model", default=None, help="sentence-transformers model dir or hub id "
                                                      "(default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--no-dense", action="store_true", help="BM25 only: no embedding model needed")
    parser.add_argument("--chunk-words", type=int, default=documents.CHUNK_WORDS, help="words per chunk")
    parser.add_argument("--overlap-words", type=int, default=documents.OVERLAP_WORDS, help="words shared by neighbours")
    args = parser.parse_args(argv)
    if not 0 <= args.overlap_words < args.chunk_words:
        parser.error(f"--overlap-words {args.overlap_words} must be >= 0 and below --chunk-words {args.chunk_words}")
    directory = index_dir(args.name)
    try:
        summary = build(args.corpus, directory, dense=not args.no_dense, model=args.model,
                        chunk_words=args.chunk_words, overlap_words=args.overlap_words)
    except (CorpusError, EmbedderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"index": str(directory), **{k: summary[k] for k in ("n_files", "n_chunks", "files_read",
                                                                           "chunks_embedded", "build_s")}}))
    return 0
