"""Live backends against a real HTTP server on localhost (tests/servers.py) playing SerpAPI and
MediaWiki with saved responses (tests/data/live, reconstructed from the documented shapes) and faults;
and the Google cache under concurrent writers and SIGKILL."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from fireharness.paths import ROOT
from servers import FakeAPI, Reply, closed_port_url, json_reply
from tools import ToolConfig, get_tool
from tools.google import extract_answer
from tools.search_cache import SearchCache

LIVE = Path(__file__).parent / "data" / "live"
KEY = "sk-test-0123456789abcdef"  # must never show up anywhere


def fixture(name):
    return json.loads((LIVE / name).read_text())


FAST = dict(timeout_s=0.5, retries=2, backoff_s=0.01, max_wait_s=1.5)


# --- SerpAPI ---------------------------------------------------------------------------------------
def test_extract_answer_follows_fireact_order():
    assert extract_answer(fixture("serpapi_answer_box_answer.json")) == "American"
    assert extract_answer(fixture("serpapi_answer_box_snippet.json")).startswith("Vices and Virtues is the second")
    assert extract_answer(fixture("serpapi_highlighted_words.json")) == "October 10, 1924"
    assert extract_answer(fixture("serpapi_organic_only.json")).startswith("It was finally in '05")
    assert extract_answer({"organic_results": []}) is None


SERP_BY_QUERY = {fixture(n)["search_parameters"]["q"]: n for n in
                 ["serpapi_answer_box_answer.json", "serpapi_organic_only.json", "serpapi_empty.json"]}


def serpapi(path, params):
    if path != "/search" or params.get("api_key") != KEY or params.get("engine") != "google":
        return json_reply(fixture("serpapi_invalid_key.json"), 401)
    return json_reply(fixture(SERP_BY_QUERY[params["q"]]))


@pytest.fixture
def google(tmp_path, monkeypatch):
    server = FakeAPI(serpapi).__enter__()
    monkeypatch.setenv("SERPAPI_BASE_URL", server.url)
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    tool = get_tool("google", ToolConfig(cache_path=str(tmp_path / "search.json"), **FAST))
    tool.check()
    yield server, tool
    server.__exit__()


def test_live_google_caches_answers_durably_without_the_key(google, tmp_path):
    server, tool = google
    s = tool.session()
    q = "which show has Wendy Schaal as the voice of Francine"
    obs = s.act("search", q)
    assert obs.source == "live" and "Seth MacFarlane" in obs.text
    assert server.requests[-1][1]["q"] == q and server.requests[-1][1]["gl"] == "us"
    on_disk = (tmp_path / "search.json").read_text()
    assert json.loads(on_disk)[q] == obs.text and KEY not in on_disk
    n = len(server.requests)
    assert s.act("search", q).source == "cache" and len(server.requests) == n  # no second request
    empty = s.act("search", "zxqv wplk ntrr qqqj")  # SerpAPI's HTTP 200 "no results" is an answer
    assert empty.error is None and empty.text.startswith("No results found") and len(server.requests) == n + 1
    assert json.loads((tmp_path / "search.json").read_text())["zxqv wplk ntrr qqqj"] is None


def test_429_with_retry_after_then_200(google):
    server, tool = google
    server.faults.append(Reply(429, {"error": "Your searches per hour are exhausted."}, {"Retry-After": "1"}))
    t0 = time.monotonic()
    obs = tool.session().act("search", "Scott Derrickson nationality")
    assert obs.error is None and obs.text == "American" and len(server.requests) == 2
    assert time.monotonic() - t0 >= 0.9  # the server's Retry-After was honoured, not the 10 ms backoff


@pytest.mark.parametrize("fault", [
    Reply(503, "<html>Service Unavailable</html>"),
    Reply(500, {"error": "Internal server error"}),
    Reply(200, '{"search_metadata": {"status": "Succ'),  # truncated JSON
    Reply(200, "[1, 2]"),  # JSON, but not an object
    Reply(200, None, drop=True),  # connection closed without an answer
    Reply(200, {"organic_results": []}, delay_s=1.0),  # slower than timeout_s
], ids=["503", "500", "truncated-json", "not-an-object", "dropped", "timeout"])
def test_transient_faults_are_retried_then_recorded_as_errors(google, fault):
    server, tool = google
    server.faults.extend([fault, fault])
    obs = tool.session().act("search", "Scott Derrickson nationality")
    assert obs.error is None and obs.text == "American" and len(server.requests) == 3  # 2 faults, then 200
    server.faults.extend([fault] * 3)
    obs = tool.session().act("search", "which show has Wendy Schaal as the voice of Francine")
    assert obs.text is None and obs.source == "live" and "after 3 attempts" in obs.error
    assert KEY not in obs.error and len(server.requests) == 6


def test_final_errors_are_not_retried_and_key_is_redacted(google, monkeypatch, tmp_path):
    server, tool = google
    monkeypatch.setenv("SERPAPI_API_KEY", "wrong-" + KEY)
    obs = tool.session().act("search", "Scott Derrickson nationality")
    assert obs.text is None and "HTTP 401" in obs.error and "Invalid API key" in obs.error
    assert len(server.requests) == 1 and KEY not in obs.error
    monkeypatch.setenv("SERPAPI_BASE_URL", closed_port_url())  # connection refused, every attempt
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    refused = get_tool("google", ToolConfig(cache_path=str(tmp_path / "s2.json"), **FAST))
    obs = refused.session().act("search", "Scott Derrickson nationality")
    assert "connection failed" in obs.error and KEY not in obs.error  # requests' message has the URL
    assert not (tmp_path / "s2.json").exists()  # a fault is never cached


# --- MediaWiki -------------------------------------------------------------------------------------
def mediawiki(path, params):
    if params.get("action") != "query" or params.get("formatversion") != "2":
        return json_reply(fixture("mediawiki_error.json"))
    if params.get("list") == "search":
        name = {"Scot Derickson": "mediawiki_search_scot_derickson.json",
                "Mercury": "mediawiki_search_mercury.json"}[params["srsearch"]]
        return json_reply(fixture(name))
    name = {"Scott Derrickson": "mediawiki_extract_scott_derrickson.json",
            "scott Derrickson": "mediawiki_extract_scott_derrickson.json",
            "Mercury": "mediawiki_disambiguation_mercury.json"}.get(params["titles"], "mediawiki_missing.json")
    return json_reply(fixture(name))


@pytest.fixture
def live_wiki(monkeypatch):
    with FakeAPI(mediawiki) as server:
        monkeypatch.setenv("WIKIPEDIA_API_URL", server.url + "/w/api.php")
        yield server, get_tool("wikipedia", ToolConfig(**FAST))


def test_live_wikipedia_search_lookup_and_similar(live_wiki):
    server, tool = live_wiki
    s = tool.session()
    obs = s.act("search", "scott Derrickson")
    assert obs.source == "live" and obs.text.startswith("Scott Derrickson (born July 16, 1966) is an American director")
    assert obs.text.count(". ") == 4  # ReAct shows 5 sentences
    assert s.act("lookup", "Sinister").text == ("(Result 1 / 2) He is best known for directing horror films such as "
                                               "Sinister, The Exorcism of Emily Rose, and Deliver Us From Evil, as "
                                               "well as the 2016 Marvel Cinematic Universe installment, Doctor Strange.")
    assert s.act("lookup", "Sinister").text == "(Result 2 / 2) In 2012 he directed the horror film Sinister, starring Ethan Hawke."
    miss = s.act("search", "Scot Derickson")
    assert miss.text == ("Could not find Scot Derickson. Similar: ['Scott Derrickson', 'Doctor Strange (2016 film)', "
                         "'Sinister (film)', 'The Black Phone', 'C. Robert Cargill'].")
    disamb = s.act("search", "Mercury")  # a disambiguation page is a miss with the search results
    assert disamb.text.startswith("Could not find Mercury. Similar: ['Mercury (planet)'")
    assert all(p["action"] == "query" and p["format"] == "json" for _, p in server.requests)


def test_live_wikipedia_retries_429_then_records_errors(live_wiki):
    server, tool = live_wiki
    server.faults.append(Reply(429, {"error": {"code": "ratelimited", "info": "slow down"}}, {"Retry-After": "0"}))
    assert tool.session().act("search", "Scott Derrickson").text.startswith("Scott Derrickson (born")
    server.faults.extend([Reply(502, "Bad Gateway")] * 3)
    obs = tool.session().act("search", "Scott Derrickson")
    assert obs.text is None and "HTTP 502" in obs.error and "after 3 attempts" in obs.error


# --- the cache under concurrency and SIGKILL ----------------------------------------------------------
def test_cache_keeps_every_entry_under_concurrent_threads_and_processes(tmp_path):
    path = tmp_path / "search.json"
    writer = textwrap.dedent(f"""
        import sys
        from tools.search_cache import SearchCache
        cache = SearchCache({str(path)!r}, read_only=[])
        for i in range(40):
            cache.put(f"proc{{sys.argv[1]}}-{{i}}", f"answer {{i}}")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(p)], cwd=ROOT) for p in range(2)]
    cache = SearchCache(path, read_only=[])
    threads = [threading.Thread(target=lambda t=t: [cache.put(f"thread{t}-{i}", None if i % 7 == 0 else f"a{i}")
                                                    for i in range(25)]) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.wait(timeout=120) == 0 for p in procs)
    data = json.loads(path.read_text())
    expected = {f"thread{t}-{i}" for t in range(6) for i in range(25)} | {f"proc{p}-{i}" for p in range(2) for i in range(40)}
    assert expected <= data.keys()
    assert data["thread3-7"] is None and data["proc1-39"] == "answer 39"


def test_cache_survives_sigkill_mid_write(tmp_path):
    path = tmp_path / "search.json"
    writer = textwrap.dedent(f"""
        import sys
        from tools.search_cache import SearchCache
        cache = SearchCache({str(path)!r}, read_only=[])
        i = 0
        while True:
            key = f"run{{sys.argv[1]}}-{{i}}-" + "x" * 200  # long entries: writes take a while
            cache.put(key, "answer " * 50)
            print(key, flush=True)  # only after put returned
            i += 1
    """)
    rng = random.Random(1234)
    returned: list[str] = []
    for run in range(6):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout))
        reader.start()
        time.sleep(0.4 + rng.random() * 0.8)  # import time plus a random moment of writing
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join()
        returned += [line.strip() for line in lines if line.strip()]
        data = json.loads(path.read_text())  # valid JSON after every kill
        missing = [k for k in returned if k not in data]
        assert not missing, f"run {run}: {len(missing)} returned entries lost"
    assert len(returned) > 20  # the kills landed while writing, not before the first write
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) <= 6  # at most one orphaned temp file per kill, never the cache itself
