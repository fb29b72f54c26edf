"""A user's documents -> titled passages for the retrieval index (tools/retrieval.py).

Files: ``.txt``, ``.md``, ``.html``/``.htm``, ``.jsonl`` (optionally ``.gz``/``.bz2``: one record per line,
``{"title", "text"}`` / ``{"title", "sentences"}`` or HotpotQA's ``{"context": [[title, sentences]...]}``)
and ``.pdf`` when ``pypdf`` is installed. A directory is read recursively for those suffixes.

Titles: a jsonl record's own title; an HTML file's ``<title>`` (else its first heading); a Markdown file's
first ``#`` heading; otherwise the file name. Long texts are cut into chunks of about ``chunk_words`` words
that overlap by ``overlap_words`` and end at a sentence boundary where one is near; every chunk keeps the
document's title (a chunk after the first is "Title (2)", so titles stay unique keys).
"""
from __future__ import annotations

import html.parser
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .wiki_index import CorpusError, _open_text, iter_paragraphs

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.bz2", ".json.gz")
SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES
CHUNK_WORDS = 200
OVERLAP_WORDS = 40


@dataclass
class Passage:
    title: str
    text: str


def document_files(paths: Iterable[os.PathLike | str]) -> list[Path]:
    """The readable files under ``paths``; one clear CorpusError for a missing path, an empty folder,
    an unsupported or unreadable file."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(SUFFIXES))
            if not found:
                raise CorpusError(f"--corpus {p}: the folder holds no {'/'.join(s.lstrip('.') for s in TEXT_SUFFIXES)}"
                                  f"/jsonl files")
            files += found
        elif p.is_file():
            if not p.name.lower().endswith(SUFFIXES):
                raise CorpusError(f"--corpus {p}: unsupported file type; give "
                                  f"{', '.join(TEXT_SUFFIXES + ('.jsonl',))} files or folders of them")
            files.append(p)
        else:
            raise CorpusError(f"--corpus {p}: no such file or folder")
    for f in files:
        if not os.access(f, os.R_OK):
            raise CorpusError(f"--corpus: cannot read {f} (permission denied)")
    return files


class _HTMLText(html.parser.HTMLParser):
    """The visible text of an HTML page, one line per block, and its title."""

    BLOCKS = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "pre", "dd", "dt"}
    SKIP = {"script", "style", "head", "nav", "noscript"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self.heading = ""
        self._skip = 0
        self._in = ""

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip += 1
        if tag in self.BLOCKS:
            self.parts.append("\n")
        if tag in ("title", "h1"):
            self._in = tag

    def handle_endtag(self, tag):
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        if tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == self._in:
            self._in = ""

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in == "h1":
            self.heading = self.heading or data.strip()
        if not self._skip and not (self._in == "h1" and data.strip() == " ".join(self.title.split())):
            self.parts.append(data)


def _read_text(path: Path) -> tuple[str, str]:
    """(title, text) of one text-like file."""
    name = path.name.lower()
    if name.endswith(".pdf"):
        try:
            from pypdf import PdfReader
        except ImportError:
            raise CorpusError(f"--corpus {path}: reading PDF needs pypdf (pip install pypdf)") from None
        try:
            reader = PdfReader(str(path))
            text = "\n".join(page.extract_text() or "" for page in reader.pages)
            title = (reader.metadata.title if reader.metadata else None) or path.stem
        except Exception as e:  # pypdf raises many types for a broken file
            raise CorpusError(f"--corpus {path}: not a readable PDF ({e})") from None
        return str(title), text
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"--corpus {path}: not UTF-8 text (byte {e.start}); convert it or leave it out") from None
    except OSError as e:
        raise CorpusError(f"--corpus {path}: cannot read ({e.strerror})") from None
    if name.endswith((".html", ".htm")):
        parser = _HTMLText()
        parser.feed(raw)
        return " ".join(parser.title.split()) or parser.heading or path.stem, "".join(parser.parts)
    if name.endswith((".md", ".markdown")):
        m = re.search(r"^#\s+(.+)$", raw, re.M)
        return (m.group(1).strip() if m else path.stem), raw
    return path.stem, raw


_SENTENCE_END = re.compile(r"[.!?][\"')\]]?$")


def chunk_words(words: list[str], size: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS) -> list[str]:
    """Windows of about ``size`` words overlapping by ``overlap``; a window ends after the last
    sentence end in its final quarter, if any, so chunks rarely cut a sentence."""
    if overlap >= size:
        raise ValueError(f"chunk overlap ({overlap}) must be smaller than the chunk size ({size})")
    chunks, start = [], 0
    while start < len(words):
        end = min(start + size, len(words))
        if end < len(words):
            for i in range(end, start + size * 3 // 4, -1):
                if _SENTENCE_END.search(words[i - 1]):
                    end = i
                    break
        chunks.append(" ".join(words[start:end]))
        if end >= len(words):
            break
        start = max(end - overlap, start + 1)
    return chunks


def passages(files: Iterable[Path], size: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS) -> Iterator[tuple[Path, Passage]]:
    """(file, passage) for every chunk of every file, in file order."""
    for path in files:
        if path.name.lower().endswith(JSONL_SUFFIXES):
            try:
                with _open_text(path):
                    pass
            except OSError as e:
                raise CorpusError(f"--corpus {path}: cannot read ({e.strerror})") from None
            for title, sentences in iter_paragraphs([path]):
                yield from ((path, p) for p in _chunk(title, " ".join(sentences), size, overlap))
        else:
            title, text = _read_text(path)
            yield from ((path, p) for p in _chunk(title, text, size, overlap))


def _chunk(title: str, text: str, size: int, overlap: int) -> list[Passage]:
    words = text.split()
    if not words:
        return []
    return [Passage(title if i == 0 else f"{title} ({i + 1})", chunk)
            for i, chunk in enumerate(chunk_words(words, size, overlap))]
