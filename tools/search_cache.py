"""Google answers cache in FireAct's ``search.json`` format (a JSON object: query -> answer or null).

Layers, first hit wins: the writable file (new live answers), then FireAct ``search.json`` files given as
extras, then the shipped ``data/serpapi_cache/fireact_queries.json`` (read-only, never written).

Crash safety: ``put`` writes the whole writable file to a temporary file in the same directory, fsyncs
it and ``os.replace``s it over the old one (atomic on POSIX), then fsyncs the directory, all before it
returns; so at any instant the file on disk is a complete JSON object holding every entry ``put`` has
returned for. A thread lock serialises writers in a process and an ``fcntl`` lock on ``<file>.lock``
across processes; each writer first merges entries other processes wrote meanwhile.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Optional

from fireharness.paths import DATA_DIR

SHIPPED_CACHE = DATA_DIR / "serpapi_cache" / "fireact_queries.json"
MISSING = object()


class CacheFileError(ValueError):
    pass


def normalize(query: str) -> str:
    """Google ignores case and spacing; so does a cache lookup's second try."""
    return " ".join(query.split()).lower()


def load_search_json(path: Path, must_exist: bool = True) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        if must_exist:
            raise CacheFileError(f"search cache {path} does not exist; check the path") from None
        return {}
    except json.JSONDecodeError as e:
        raise CacheFileError(f"search cache {path} is not valid JSON ({e.msg} at line {e.lineno}); "
                             "fix or remove it") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                             for k, v in data.items()):
        raise CacheFileError(f"search cache {path} is not in FireAct's search.json format "
                             "(a JSON object mapping each query to its answer string or null)")
    return data


class SearchCache:
    def __init__(self, path: os.PathLike | str, read_only: Iterable[os.PathLike | str] = (SHIPPED_CACHE,)):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock = threading.Lock()
        base: dict = {}
        for layer in reversed(list(read_only)):  # earlier layers win: update with them last
            base.update(load_search_json(Path(layer)))
        self._base = base
        self._own = load_search_json(self.path, must_exist=False)
        self._own_stat = self._stat()
        self._normalized: Optional[dict] = None

    def _stat(self):
        try:
            st = self.path.stat()
            return st.st_mtime_ns, st.st_size, st.st_ino
        except FileNotFoundError:
            return None

    def __len__(self) -> int:
        return len(self._base.keys() | self._own.keys())

    def get(self, query: str, default=MISSING):
        """The cached answer (a string, or None for a query Google answered with nothing)."""
        with self._lock:
            if query in self._own:
                return self._own[query]
            if query in self._base:
                return self._base[query]
            if self._normalized is None:
                self._normalized = {normalize(k): v for k, v in self._base.items()}
                self._normalized.update({normalize(k): v for k, v in self._own.items()})
            return self._normalized.get(normalize(query), default)

    @contextlib.contextmanager
    def _process_lock(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def put(self, query: str, answer: Optional[str]) -> None:
        """Store and make durable; returns only once the entry is on disk."""
        with self._lock, self._process_lock():
            stat = self._stat()
            if stat != self._own_stat:  # another process wrote since we last looked: keep its entries
                on_disk = load_search_json(self.path, must_exist=False)
                on_disk.update(self._own)
                self._own = on_disk
            self._own[query] = answer
            self._write()
            self._own_stat = self._stat()
            if self._normalized is not None:
                self._normalized[normalize(query)] = answer

    def _write(self) -> None:
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._own, f, indent=2, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
