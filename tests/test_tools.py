"""Tools: offline Wikipedia (real HotpotQA paragraphs), Google cache replay, the CLI, index builds."""
from __future__ import annotations

import bz2
import gzip
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from fireharness.paths import ROOT
from tools import InvalidAction, ToolConfig, ToolSetupError, get_tool
from tools import wiki_index
from tools.search_cache import SHIPPED_CACHE

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("wiki-index"))


@pytest.fixture(scope="module")
def wiki(index_dir):
    tool = get_tool("wikipedia", ToolConfig(offline=True, index_dir=index_dir))
    tool.check()
    yield tool
    tool.close()


def test_index_holds_every_shipped_paragraph(wiki):
    meta = wiki_index.read_meta(wiki.index_path)
    assert int(meta["n_pages"]) == 13386


def test_search_hit_lookup_and_miss_follow_react(wiki):
    s = wiki.session()
    obs = s.act("search", "Scott Derrickson")
    assert obs.source == "offline" and obs.error is None
    assert obs.text.startswith("Scott Derrickson (born July 16, 1966) is an American director")
    assert s.act("lookup", "Los Angeles").text == "(Result 1 / 1) He lives in Los Angeles, California."
    assert s.act("lookup", "Los Angeles").text == "No more results."
    assert s.act("lookup", "DIRECTOR").text.startswith("(Result 1 / 1) Scott Derrickson (born")  # new keyword restarts
    miss = s.act("search", "Scot Derickson")
    assert miss.text.startswith("Could not find Scot Derickson. Similar: [")
    assert "'Scott Derrickson'" in miss.text  # the typo still finds the page through title trigrams
    # ReAct keeps the current page after a miss, so lookup still reads Scott Derrickson's page.
    assert "Sinister" in s.act("lookup", "Sinister").text
    assert s.act("search", "scott derrickson").text == obs.text  # case-insensitive title match
    words = wiki.session().act("search", "Ed Wood film")  # not a title: ranked similar titles
    assert words.text.startswith("Could not find") and "'Ed Wood (film)'" in words.text


def test_search_returns_at_most_five_sentences(wiki):
    with wiki_index.WikiIndex(wiki.index_path)._con() as con:
        title, body = con.execute("SELECT title, body FROM pages WHERE length(body) - length(replace(body, "
                                  "char(10), '')) >= 7 LIMIT 1").fetchone()
    text = wiki.session().act("search", title).text
    assert text == " ".join(body.split("\n")[:5])


def test_unknown_verb_and_fts_syntax_in_queries(wiki):
    s = wiki.session()
    with pytest.raises(InvalidAction, match="search, lookup"):
        s.act("jump", "x")
    assert s.act("lookup", "anything").text == "No more results."  # no page yet
    odd = s.act("search", 'AND "quote (paren* NEAR/3 -x:')  # FTS5 operators are quoted, never parsed
    assert odd.error is None and odd.text.startswith("Could not find")


def test_sessions_are_independent_under_threads(wiki):
    titles = ["Scott Derrickson", "Ed Wood", "Kansas City jazz", "University of Kansas"] * 5

    def episode(title):
        s = wiki.session()
        return s.act("search", title).text, s.act("lookup", title.split()[-1]).text

    serial = {t: episode(t) for t in set(titles)}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(episode, titles))
    assert results == [serial[t] for t in titles]
    assert all(lookup.startswith("(Result 1 /") for _, lookup in results)


def write_jsonl_gz(path, records):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def test_index_rebuilds_when_the_corpus_changes(tmp_path):
    corpus = tmp_path / "corpus.jsonl.gz"
    write_jsonl_gz(corpus, [{"title": "Alpha Page", "sentences": ["Alpha is first.", "It has two sentences."]}])
    cfg = ToolConfig(offline=True, corpus=str(corpus), index_dir=str(tmp_path / "idx"))
    tool = get_tool("wikipedia", cfg)
    assert tool.session().act("search", "Alpha Page").text == "Alpha is first. It has two sentences."
    tool.close()
    write_jsonl_gz(corpus, [{"title": "Beta Page", "text": "Beta replaced alpha. Then it grew."}])
    os.utime(corpus, ns=(1, 1))  # a different mtime even on coarse clocks
    tool = get_tool("wikipedia", cfg)
    s = tool.session()
    assert s.act("search", "Beta Page").text == "Beta replaced alpha. Then it grew."
    assert s.act("search", "Alpha Page").text.startswith("Could not find Alpha Page.")
    tool.close()


def test_build_index_cli_streams_fullwiki_style_bz2_directory(tmp_path):
    tree = tmp_path / "enwiki-abstracts" / "AA"
    tree.mkdir(parents=True)
    for shard in range(2):
        with bz2.open(tree / f"wiki_0{shard}.bz2", "wt", encoding="utf-8") as f:
            for i in range(3):
                f.write(json.dumps({"id": str(shard * 10 + i), "url": "https://en.wikipedia.org/wiki?curid=1",
                                    "title": f"Shard {shard} Page {i}",
                                    "text": [f"Page {i} of shard {shard} is short.", " It is synthetic."]}) + "\n")
    out = subprocess.run([sys.executable, "-m", "tools", "build-index", "--corpus", str(tmp_path / "enwiki-abstracts"),
                          "--index-dir", str(tmp_path / "idx")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["n_pages"] == 6
    tool = get_tool("wikipedia", ToolConfig(offline=True, index_dir=str(tmp_path / "idx")))
    assert tool.session().act("search", "shard 1 page 2").text == "Page 2 of shard 1 is short. It is synthetic."
    tool.close()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "no title"}\n')
    out = subprocess.run([sys.executable, "-m", "tools", "build-index", "--corpus", str(bad), "--index-dir",
                          str(tmp_path / "bad-idx")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "needs 'title'" in out.stderr and out.stderr.count("\n") == 1


# --- Google, offline ------------------------------------------------------------------------------
@pytest.fixture
def google_offline(tmp_path, index_dir):
    def make(**kw):
        cfg = ToolConfig(offline=True, cache_path=str(tmp_path / "search.json"), index_dir=index_dir, **kw)
        tool = get_tool("google", cfg)
        tool.check()
        return tool
    return make


def test_google_replays_the_shipped_cache_and_never_invents(google_offline, monkeypatch):
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    shipped_before = SHIPPED_CACHE.read_bytes()
    tool = google_offline()
    s = tool.session()
    hit = s.act("search", "Canadian rock band Vices and Virtues")
    assert hit.source == "cache" and "Art of Dying" in hit.text
    assert s.act("search", "  canadian ROCK band vices and virtues ").text == hit.text  # case/space-insensitive
    miss = s.act("search", "a query nobody ever cached 8231")
    assert miss.source == "none" and miss.error is None and "No cached Google result" in miss.text
    with pytest.raises(InvalidAction, match="search"):
        s.act("lookup", "x")
    assert SHIPPED_CACHE.read_bytes() == shipped_before


def test_google_fallback_answers_a_miss_from_wikipedia(google_offline):
    s = google_offline(search_fallback="wikipedia").session()
    obs = s.act("search", "who directed the film Sinister 2012")
    assert obs.source == "fallback:wikipedia" and "Scott Derrickson" in obs.text
    assert s.act("search", "Canadian rock band Vices and Virtues").source == "cache"  # cache still first


def test_google_merges_fireact_search_json(google_offline, tmp_path):
    extra = tmp_path / "fireact_search.json"
    extra.write_text(json.dumps({"my own query": "my own answer", "empty query": None,
                                 "Canadian rock band Vices and Virtues": "overridden"}))
    s = google_offline(extra_caches=[str(extra)]).session()
    assert s.act("search", "my own query").text == "my own answer"
    assert s.act("search", "empty query").text.startswith("No results found")
    assert s.act("search", "Canadian rock band Vices and Virtues").text == "overridden"


def test_google_setup_errors_are_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    with pytest.raises(ToolSetupError, match="SERPAPI_API_KEY.*--offline"):
        get_tool("google", ToolConfig(cache_path=str(tmp_path / "s.json"))).check()
    bad = tmp_path / "broken.json"
    bad.write_text('{"q": "a", ')
    with pytest.raises(ToolSetupError, match="broken.json is not valid JSON"):
        get_tool("google", ToolConfig(offline=True, cache_path=str(tmp_path / "s.json"),
                                      extra_caches=[str(bad)])).check()


# --- the debugging CLI (the "Done when" commands) --------------------------------------------
def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tools", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def test_cli_done_when_commands(index_dir, tmp_path):
    out = run_cli("wikipedia", "search", "Scott Derrickson", "lookup", "Los Angeles", "--offline",
                  "--index-dir", index_dir)
    assert out.returncode == 0, out.stderr
    assert "American director" in out.stdout and "(Result 1 / 1) He lives in Los Angeles" in out.stdout
    out = run_cli("wikipedia", "search", "Scot Derickson", "--offline", "--index-dir", index_dir)
    assert "Similar: [" in out.stdout
    cache = ["--cache-path", str(tmp_path / "search.json")]
    out = run_cli("google", "search", "Canadian rock band Vices and Virtues", "--offline", *cache)
    assert out.returncode == 0 and "Art of Dying" in out.stdout and "source=cache" in out.stderr
    out = run_cli("google", "search", "an uncached question 7731", "--offline", *cache)
    assert out.returncode == 0 and "No cached Google result" in out.stdout
    out = run_cli("google", "search", "x", *cache, env={"SERPAPI_API_KEY": ""})
    assert out.returncode == 2 and "SERPAPI_API_KEY" in out.stderr
