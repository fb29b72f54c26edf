"""The offline Wikipedia index: paragraphs of a HotpotQA-format corpus in SQLite with an FTS5 table.

One SQLite file holds ``pages(id, title UNIQUE, body)`` (body = the paragraph's sentences, one per
line) and an external-content FTS5 table over title and body, ranked with FTS5's built-in BM25. The
``meta`` table records which source files (path, size, mtime) the index was built from, so a changed
source triggers a rebuild. Builds stream the corpus in batches into a temporary file that replaces the
index atomically, under a file lock, so concurrent processes never see half an index.

Corpus formats (jsonl, optionally .gz/.bz2, or a directory of such files, e.g. HotpotQA's fullwiki
``enwiki-...-abstracts`` tree): HotpotQA records (``{"context": [[title, [sentences]], ...]}``) or
one page per line (``{"title", "sentences": [...]}`` or ``{"title", "text": str | [sentences]}``).
"""
from __future__ import annotations

import bz2
import contextlib
import fcntl
import gzip
import json
import os
import re
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional

from fireharness.paths import DATA_DIR

SCHEMA_VERSION = "4"
SHIPPED_CORPUS = [DATA_DIR / "hotpotqa_distractor" / "dev.jsonl.gz",
                  DATA_DIR / "hotpotqa_distractor" / "train.jsonl.gz"]
INDEX_FILE = "wikipedia-fts5.sqlite"
CORPUS_SUFFIXES = (".jsonl", ".json", ".gz", ".bz2")
BATCH = 5000
TRIGRAM_BUDGET = 20000
BM25_BUDGET = 20000  # posting entries one ranking query may score (a cap for corpora of millions of pages)
# Words so common that OR-ing them into a ranking query only costs time (they match most rows).
STOPWORDS = frozenset("a an and are as at be by for from has he in is it its of on or that the to was were "
                      "what when where which who whom with".split())
TOKEN = re.compile(r"\w+", re.UNICODE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class CorpusError(ValueError):
    """A corpus file is missing or not in a HotpotQA format."""


# --- reading corpora ---------------------------------------------------------------------------
def corpus_files(paths: Iterable[os.PathLike | str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(CORPUS_SUFFIXES))
            if not found:
                raise CorpusError(f"corpus directory {p} holds no .jsonl/.gz/.bz2 files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise CorpusError(f"corpus file {p} does not exist; pass an existing jsonl(.gz/.bz2) file or directory")
    return files


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def _sentences(value) -> list[str]:
    if isinstance(value, str):
        return split_sentences(value)
    out: list[str] = []
    for item in value or []:  # fullwiki pages: a list of paragraphs, each a list of sentences
        out += _sentences(item) if isinstance(item, list) else [str(item).strip()]
    return [s.replace("\n", " ") for s in out if s]


def iter_paragraphs(paths: Iterable[os.PathLike | str]) -> Iterator[tuple[str, list[str]]]:
    """Yield (title, sentences) one at a time; never holds more than one line of the corpus."""
    for path in corpus_files(paths):
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{path}:{lineno}: not JSON lines ({e.msg}); the corpus must be jsonl, "
                                      "one record per line") from None
                if "context" in rec:
                    for title, sents in rec["context"]:
                        yield title.strip(), _sentences(sents)
                elif "title" in rec and ("sentences" in rec or "text" in rec):
                    yield str(rec["title"]).strip(), _sentences(rec.get("sentences", rec.get("text")))
                else:
                    raise CorpusError(f"{path}:{lineno}: a record needs 'title' and 'text' or 'sentences' "
                                      f"(or HotpotQA's 'context'); found keys {sorted(rec)[:6]}")


def fingerprint(files: Iterable[Path]) -> str:
    stamp = []
    for f in files:
        st = f.stat()
        stamp.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return json.dumps({"schema": SCHEMA_VERSION, "sources": stamp})


# --- building ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_meta(index_path: Path) -> dict:
    if not index_path.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True)
        try:
            return dict(con.execute("SELECT key, value FROM meta"))
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return {}  # unreadable or half-written by something else: treat as absent, rebuild


def build(corpus: Iterable[os.PathLike | str], index_path: Path, progress: bool = False) -> dict:
    """Build the index from ``corpus`` into ``index_path`` (atomically replaced). Returns its meta."""
    files = corpus_files(corpus)
    stamp = fingerprint(files)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_path.with_name(f"{index_path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.unlink(missing_ok=True)
    t0 = time.perf_counter()
    con = sqlite3.connect(tmp)
    try:
        con.executescript("""
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -200000;
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE pages (id INTEGER PRIMARY KEY, title TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
        """)
        n_read = 0
        batch: list[tuple[str, str]] = []

        def flush():
            con.executemany("INSERT OR IGNORE INTO pages (title, body) VALUES (?, ?)", batch)
            batch.clear()

        for title, sentences in iter_paragraphs(files):
            n_read += 1
            if title and sentences:
                batch.append((title, "\n".join(sentences)))
            if len(batch) >= BATCH:
                flush()
                if progress and n_read % (BATCH * 20) == 0:
                    print(f"build-index: {n_read:,} paragraphs read ({time.perf_counter() - t0:.0f} s)",
                          file=sys.stderr, flush=True)
        flush()
        con.executescript("""
            CREATE INDEX pages_title_nocase ON pages (title COLLATE NOCASE);
            CREATE VIRTUAL TABLE fts USING fts5(title, body, content='pages', content_rowid='id',
                                                tokenize='unicode61 remove_diacritics 2');
            INSERT INTO fts (fts) VALUES ('rebuild');
            INSERT INTO fts (fts) VALUES ('optimize');
            -- Misspelt entities: titles ranked by shared character trigrams (FTS5's trigram tokenizer).
            CREATE VIRTUAL TABLE title_trigrams USING fts5(title, content='pages', content_rowid='id',
                                                           tokenize='trigram');
            INSERT INTO title_trigrams (title_trigrams) VALUES ('rebuild');
            -- Document frequencies, stored: fts5vocab counts a term's pages by walking its whole posting
            -- list on every lookup (tens of ms for a common word at 1 M pages; a B-tree read here).
            CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, fts, 'row');
            CREATE VIRTUAL TABLE temp.trigram_vocab USING fts5vocab(main, title_trigrams, 'row');
            CREATE TABLE term_df (term TEXT PRIMARY KEY, doc INTEGER NOT NULL) WITHOUT ROWID;
            INSERT INTO term_df SELECT term, doc FROM temp.vocab;
            CREATE TABLE trigram_df (term TEXT PRIMARY KEY, doc INTEGER NOT NULL) WITHOUT ROWID;
            INSERT INTO trigram_df SELECT term, doc FROM temp.trigram_vocab;
        """)
        n_pages = con.execute("SELECT count(*) FROM pages").fetchone()[0]
        meta = {"schema": SCHEMA_VERSION, "stamp": stamp, "n_pages": str(n_pages), "n_read": str(n_read),
                "build_s": f"{time.perf_counter() - t0:.2f}", "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "sources": json.dumps([str(f) for f in files])}
        con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        con.commit()
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    os.replace(tmp, index_path)
    if progress:
        print(f"build-index: {n_pages:,} pages ({n_read:,} paragraphs read) in {meta['build_s']} s -> {index_path}",
              file=sys.stderr, flush=True)
    return meta


def ensure(corpus: Optional[Iterable[os.PathLike | str]], index_path: Path, progress: bool = True) -> dict:
    """Return the meta of an up-to-date index at ``index_path``, building it if missing or stale.

    ``corpus=None`` means "whatever the index was built from" when an index exists (a user's prebuilt
    ``build-index`` output), else the shipped HotpotQA paragraphs.
    """
    meta = read_meta(index_path)
    if corpus is None:
        if meta and meta.get("schema") == SCHEMA_VERSION:
            recorded = [Path(p) for p in json.loads(meta.get("sources", "[]"))]
            if not all(p.exists() for p in recorded):
                return meta  # sources moved away: the prebuilt index is all there is, use it as is
            corpus = recorded
        else:
            corpus = SHIPPED_CORPUS
    files = corpus_files(corpus)
    if meta.get("stamp") == fingerprint(files):
        return meta
    with _file_lock(index_path.with_name(index_path.name + ".lock")):
        meta = read_meta(index_path)  # another process may have built it while we waited
        if meta.get("stamp") == fingerprint(files):
            return meta
        return build(files, index_path, progress=progress)


# --- querying ----------------------------------------------------------------------------------
def match_expression(text: str) -> Optional[str]:
    """An FTS5 query OR-ing the text's words (quoted, so no word is read as FTS5 syntax)."""
    words = [w for w in TOKEN.findall(text.lower())]
    kept = [w for w in words if w not in STOPWORDS] or words
    if not kept:
        return None
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(kept))


def _doc_freqs(con: sqlite3.Connection, table: str, terms: Iterable[str]) -> dict[str, int]:
    """Pages holding each term (0 if none), from a stored frequency table (term_df or trigram_df)."""
    query = f"SELECT doc FROM {table} WHERE term = ?"
    return {t: (con.execute(query, (t,)).fetchone() or (0,))[0] for t in terms}


class ThreadConnections:
    """Read-only connections to one SQLite file, one per thread (sqlite3 connections are not shareable)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._local.con = con
            with self._lock:
                self._opened.append(con)
        return con

    def close(self) -> None:
        with self._lock:
            for con in self._opened:
                con.close()
            self._opened.clear()
        self._local = threading.local()


class WikiIndex:
    """Read-only queries; one SQLite connection per thread."""

    def __init__(self, index_path: Path):
        self.path = Path(index_path)
        self._connections = ThreadConnections(self.path)
        self._local = threading.local()  # per-thread page count

    def _con(self) -> sqlite3.Connection:
        return self._connections.get()

    def page(self, title: str) -> Optional[tuple[str, list[str]]]:
        """Exact title first, then case-insensitive."""
        title = title.strip()
        con = self._con()
        row = con.execute("SELECT title, body FROM pages WHERE title = ?", (title,)).fetchone()
        if row is None:
            row = con.execute("SELECT title, body FROM pages WHERE title = ? COLLATE NOCASE LIMIT 1",
                              (title,)).fetchone()
        return (row[0], row[1].split("\n")) if row else None

    def _n_pages(self) -> int:
        n = getattr(self._local, "n_pages", None)
        if n is None:
            n = self._local.n_pages = self._con().execute("SELECT max(id) FROM pages").fetchone()[0] or 1
        return n

    def _selective(self, text: str) -> Optional[tuple[str, list[str]]]:
        """(FTS5 expression, unknown words): the known words OR-ed as an FTS5 expression, rarest first, without
        those in over 2% of pages and stopping once their pages add up to BM25_BUDGET (BM25 scores every page
        that holds any word: this caps the work at millions of pages); the rarest word is always kept."""
        words = [w for w in dict.fromkeys(TOKEN.findall(text.lower())) if w not in STOPWORDS] \
            or TOKEN.findall(text.lower())
        if not words:
            return None
        con = self._con()
        df = _doc_freqs(con, "term_df", words)
        known = sorted((w for w in words if df[w]), key=df.get)
        if not known:
            return None
        limit = max(50, self._n_pages() // 50)
        kept, postings = [], 0
        for w in known:  # rarest first, so the budget drops the least selective words
            if df[w] > limit or postings + df[w] > BM25_BUDGET:
                break
            kept.append(w)
            postings += df[w]
        kept = kept or known[:1]
        return " OR ".join(f'"{w}"' for w in kept), [w for w in words if not df[w]]

    def similar_titles(self, text: str, k: int = 5) -> list[str]:
        """Titles ranked by BM25 over title and text; when a word is unknown to the index (a typo),
        titles sharing the rarest character trigrams with the unknown words come first."""
        selective = self._selective(text)
        expr, unknown = selective if selective else (None, TOKEN.findall(text.lower()))
        con = self._con()
        titles: list[str] = []
        grams = {w[i:i + 3] for w in unknown for i in range(len(w) - 2)}
        if grams:
            df = _doc_freqs(con, "trigram_df", grams)
            # Cap the work at TRIGRAM_BUDGET posting entries: a typo query over millions of titles
            # built from common trigrams would otherwise take seconds.
            rare, total = [], 0
            for g in sorted((g for g in grams if df[g]), key=df.get)[:8]:
                if total + df[g] > TRIGRAM_BUDGET:
                    break
                rare.append(g)
                total += df[g]
            if len(rare) >= 2:
                rows = con.execute("SELECT title FROM title_trigrams WHERE title_trigrams MATCH ? "
                                   "ORDER BY rank LIMIT ?", (" OR ".join(f'"{g}"' for g in rare), k))
                titles += [r[0] for r in rows]
        if expr:
            rows = con.execute("SELECT title FROM fts WHERE fts MATCH ? ORDER BY bm25(fts, 10.0, 1.0) LIMIT ?",
                               (expr, k))
            titles += [r[0] for r in rows]
        return list(dict.fromkeys(titles))[:k]

    def best_sentences(self, text: str, n_pages: int = 3, n_sentences: int = 3) -> Optional[tuple[str, str]]:
        """The sentences sharing most words with ``text`` among the best-ranked pages: (title, text)."""
        selective = self._selective(text)
        if selective is None:
            return None
        rows = self._con().execute(
            "SELECT title, body FROM fts WHERE fts MATCH ? ORDER BY bm25(fts, 2.0, 1.0) LIMIT ?",
            (selective[0], n_pages)).fetchall()
        if not rows:
            return None
        words = set(match_expression(text).replace('"', "").split(" OR "))
        title, body = rows[0]
        sentences = body.split("\n")
        overlap = [len(words & set(TOKEN.findall(s.lower()))) for s in sentences]
        chosen = sorted(sorted(range(len(sentences)), key=lambda i: -overlap[i])[:n_sentences])
        return title, " ".join(sentences[i] for i in chosen)

    def close(self) -> None:
        self._connections.close()
        self._local = threading.local()
